//! Real pods on the test node (hack/node.sh, docs/rig.md): a pod that mounts a tcred Secret sees
//! every rotation in its file and signs calls the simulator accepts with each; an `envFrom`
//! Deployment is replaced after a rotation; the operator runs as pods from its own image, with
//! the chart's security context, and a standby takes over when the leader's pod is killed.
//!
//! A node that did not start fails these tests with the reason `hack/node.sh up` gave.

mod support;

use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::{apps::v1::ReplicaSet, coordination::v1::Lease, core::v1::Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use support::{node::*, *};
use tcred::api::{annotations, condition::reasons};

/// The restricted Pod Security profile's container settings.
fn restricted_container(name: &str, image: &str, args: &[&str], env: Value) -> Value {
    json!({
        "name": name, "image": image, "imagePullPolicy": "Never", "args": args, "env": env,
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}},
    })
}

fn restricted_pod_spec(containers: Value, volumes: Value) -> Value {
    json!({
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 2,
        "containers": containers,
        "volumes": volumes,
    })
}

fn principal(session: &str) -> String {
    format!("sts::{ACCOUNT}::assumed-agency:{AGENCY}/{session}")
}

#[tokio::test]
async fn a_pod_mounting_the_secret_sees_every_rotation_in_its_file_and_signs_with_each() {
    let node = Node::get();
    with_namespace("node-file-mount", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        // 45 s credentials: a rotation about every 30 s
        sim.set_lifetime(Some(45)).await;
        let sts = node.forward(sim.url.trim_start_matches("http://").trim_end_matches('/'));
        access_key_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("node-file-mount", &ns).await;
        let spec = json!({"duration": "1h", "sessionName": "file-app"});
        apply(&client, agency_credential(&ns, "billing", "corp", spec)).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;

        let env = json!([
            {"name": "HUAWEICLOUD_SDK_CREDENTIALS_FILE", "value": "/creds/credentials"},
            {"name": "TCRED_STS_URL", "value": sts.url()},
            {"name": "CONSUMER_INTERVAL", "value": "1s"},
        ]);
        let mounts = json!([{"name": "creds", "mountPath": "/creds", "readOnly": true}]);
        let mut containers = vec![restricted_container(
            "app",
            node.consumer_image(),
            &["file"],
            env.clone(),
        )];
        // Huawei's Go SDK reading the same file, when this checkout has conformance/consumer-go
        let sdk = node.consumer_go_image();
        if let Some(image) = &sdk {
            let url = sts.url();
            let args = [
                "--mode=file",
                "--interval=1s",
                "--max-failures=100000",
                &format!("--endpoint={url}"),
            ];
            containers.push(restricted_container("sdk", image, &args, env));
        }
        for c in &mut containers {
            c["volumeMounts"] = mounts.clone();
        }
        let volumes = json!([{"name": "creds", "secret": {"secretName": "billing"}}]);
        apply(
            &client,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader", "namespace": ns},
                   "spec": restricted_pod_spec(json!(containers), volumes)}),
        )
        .await;
        wait_pod_ready(&client, &ns, "reader", Duration::from_secs(60)).await;

        // Every access key the Secret holds for ~100 s, in order.
        let mut written: Vec<String> = vec![];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(100) {
            let secret = get_secret(&client, &ns, "billing").await.expect("Secret");
            let ak = secret_text(&secret, "HUAWEICLOUD_SDK_AK");
            if written.last() != Some(&ak) {
                written.push(ak);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            written.len() >= 3,
            "expected at least two rotations in 100 s of 45 s credentials, saw {written:?}"
        );
        // The kubelet updates the file within its sync period; the consumer re-reads it every
        // second and signs a GetCallerIdentity call with whatever the file holds.
        let who = principal("file-app");
        let what = format!("the consumer signing with each of {written:?}");
        let containers: &[&str] = if sdk.is_some() { &["app", "sdk"] } else { &["app"] };
        for container in containers {
            let seen = wait_for(
                Duration::from_secs(45),
                &format!("{what} ({container})"),
                || async {
                    let seen = node.accepted_keys(&ns, "reader", container, &who);
                    written.iter().all(|ak| seen.contains(ak)).then_some(seen)
                },
            )
            .await;
            assert!(seen.len() >= 3, "{container}: {seen:?}");
        }
    })
    .await;
}

/// A Deployment whose consumer loads `secret` with `envFrom` and that lets the credential of the
/// same name restart it.
fn env_deployment(ns: &str, image: &str, secret: &str, sts: &str) -> Value {
    let env = json!([{"name": "TCRED_STS_URL", "value": sts}, {"name": "CONSUMER_INTERVAL", "value": "1s"}]);
    let mut container = restricted_container("app", image, &["env"], env);
    container["envFrom"] = json!([{"secretRef": {"name": secret}}]);
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns,
                     "annotations": {annotations::RESTART_ON_ROTATION: secret}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": restricted_pod_spec(json!([container]), json!([]))},
        },
    })
}

/// The one Ready pod of Deployment `web` whose consumer signed an accepted call with `ak`.
async fn web_pod_signing_with(client: &Client, node: &Node, ns: &str, ak: &str, who: &str) -> String {
    wait_for(
        Duration::from_secs(90),
        &format!("a Ready pod of web signing with {ak}"),
        || async {
            let pods = ready_pods(client, ns, "app=web").await;
            pods.into_iter()
                .find(|p| node.accepted_keys(ns, p, "app", who).contains(ak))
        },
    )
    .await
}

#[tokio::test]
async fn an_env_from_deployment_is_replaced_once_by_a_pod_running_with_the_new_credential() {
    let node = Node::get();
    with_namespace("node-env-restart", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        let sts = node.forward(sim.url.trim_start_matches("http://").trim_end_matches('/'));
        access_key_source(&client, &ns, "corp", &sim).await;
        let op = Operator::start("node-env-restart", &ns).await;
        let spec = json!({"sessionName": "env-app",
                          "rolloutRestartTargets": [{"kind": "Deployment", "name": "web"}]});
        apply(&client, agency_credential(&ns, "billing", "corp", spec)).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        let first = secret_text(
            &get_secret(&client, &ns, "billing").await.expect("Secret"),
            "HUAWEICLOUD_SDK_AK",
        );
        apply(
            &client,
            env_deployment(&ns, node.consumer_image(), "billing", &sts.url()),
        )
        .await;
        let who = principal("env-app");
        let old_pod = web_pod_signing_with(&client, &node, &ns, &first, &who).await;

        rotate(&client, &ns, "billing", "1").await;
        wait_ready_reason(&client, &ns, "billing", reasons::ROTATED, Duration::from_secs(30)).await;
        let second = secret_text(
            &get_secret(&client, &ns, "billing").await.expect("Secret"),
            "HUAWEICLOUD_SDK_AK",
        );
        assert_ne!(first, second, "the rotation wrote a new access key");
        let new_pod = web_pod_signing_with(&client, &node, &ns, &second, &who).await;
        assert_ne!(
            new_pod, old_pod,
            "a new pod, not the old one, runs with the new credential"
        );
        // the old pod is gone: replaced, not kept alongside
        let pods = Api::<Pod>::namespaced(client.clone(), &ns);
        wait_for(
            Duration::from_secs(60),
            &format!("old pod {old_pod} gone"),
            || async { pods.get_opt(&old_pod).await.ok()?.is_none().then_some(()) },
        )
        .await;

        // once: no further restart for the same rotation
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rs = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels("app=web"))
            .await
            .expect("ReplicaSets");
        assert_eq!(
            rs.items.len(),
            2,
            "one restart: the first ReplicaSet and one more"
        );
        assert_eq!(
            get_tc(&client, &ns, "billing")
                .await
                .status
                .unwrap()
                .restarted_rotation,
            Some(2)
        );
        let m = op.metrics().await;
        assert_eq!(
            sample(&m, &format!("tcred_rollout_restarts_total{{namespace=\"{ns}\"}}")),
            Some(1.0),
            "{m}"
        );
        assert_eq!(ready_pods(&client, &ns, "app=web").await, vec![new_pod]);
    })
    .await;
}

fn helm() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("TCRED_HELM") {
        return p.into();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join("hack/cluster.sh"))
        .args(["bin-dir", "helm"])
        .output()
        .expect("hack/cluster.sh bin-dir helm");
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("helm")
}

fn run_helm(args: &[&str]) -> String {
    let out = std::process::Command::new(helm())
        .args(args)
        .env("KUBECONFIG", admin_kubeconfig())
        .output()
        .expect("run helm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm {args:?}: {text}");
    text
}

/// The holder of the only Lease in `ns`.
async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
    let leases = Api::<Lease>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .ok()?;
    leases.items.first()?.spec.as_ref()?.holder_identity.clone()
}

#[tokio::test]
async fn the_operator_runs_as_two_restricted_pods_and_another_replica_takes_over_when_the_leader_is_killed() {
    let node = Node::get();
    let image = node.operator_image();
    with_namespace("node-operator-pods", |client, ns| async move {
        let restricted = json!({"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted"}}});
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .patch(&ns, &PatchParams::default(), &Patch::Merge(&restricted))
            .await
            .expect("label the namespace restricted");
        let (repository, tag) = image.rsplit_once(':').expect("image tag");
        let release = ns.clone();
        let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/tcred");
        let values = format!(
            "image.repository={repository},image.tag={tag},image.pullPolicy=Never,replicaCount=2,\
             crds.enabled=false,watchNamespace={ns}"
        );
        run_helm(&[
            "install",
            &release,
            chart.to_str().expect("path"),
            "-n",
            &ns,
            "--set",
            &values,
            "--wait=false",
        ]);
        let outcome = std::panic::AssertUnwindSafe(leader_takeover(&node, &client, &ns, &release))
            .catch_unwind()
            .await;
        run_helm(&["uninstall", &release, "-n", &ns]);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    })
    .await;
}

async fn leader_takeover(node: &Node, client: &Client, ns: &str, release: &str) {
    let selector = format!("app.kubernetes.io/instance={release}");
    let pods = wait_for(
        Duration::from_secs(120),
        "two operator pods Running and Ready",
        || async {
            let pods = ready_pods(client, ns, &selector).await;
            (pods.len() == 2).then_some(pods)
        },
    )
    .await;
    let leader = wait_for(Duration::from_secs(60), "a leader among the two pods", || async {
        lease_holder(client, ns).await.filter(|h| pods.contains(h))
    })
    .await;
    let standby = pods.iter().find(|p| **p != leader).expect("standby").clone();

    // A crash, not a graceful stop: SIGKILL through containerd (the leader cannot hand the lease
    // over), then the pod is removed so that it does not come back under the same identity.
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let container_id = api
        .get(&leader)
        .await
        .expect("leader pod")
        .status
        .and_then(|s| s.container_statuses?.first()?.container_id.clone())
        .expect("leader container id");
    node.kill_container(&container_id);
    api.delete(
        &leader,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .expect("delete the leader's pod");
    // The lease lapses after 15 s; the standby, or the Deployment's replacement for the killed
    // pod, whichever asks first, takes it. Never the dead leader.
    let new_leader = wait_for(
        Duration::from_secs(90),
        &format!("another replica holding the lease after {leader} was killed"),
        || async {
            let holder = lease_holder(client, ns).await.filter(|h| *h != leader)?;
            ready_pods(client, ns, &selector)
                .await
                .contains(&holder)
                .then_some(holder)
        },
    )
    .await;
    // the Deployment replaces the killed pod; the standby kept running
    wait_for(
        Duration::from_secs(120),
        "two Ready operator pods again",
        || async {
            let now = ready_pods(client, ns, &selector).await;
            (now.len() == 2 && now.contains(&standby) && !now.contains(&leader)).then_some(())
        },
    )
    .await;
    assert_eq!(
        lease_holder(client, ns).await.as_deref(),
        Some(new_leader.as_str())
    );
}
