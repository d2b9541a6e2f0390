//! Pod identity on the real node (hack/node.sh, docs/rig.md "Pod identity on the node"): the
//! real API server calls tcred's webhook for a pod labelled `tcred.dev/pod-identity`, the kubelet
//! projects the injected ServiceAccount token into it, and a long-lived consumer on Huawei's Go
//! SDK (`conformance/consumer-go --mode=pod-identity`, ONE client for its whole life, the SDK's own
//! pod identity provider reading `HC_CONTAINER_CREDENTIALS_FULL_URI` and
//! `HC_CONTAINER_AUTHORIZATION_TOKEN_FILE` from the injected environment) fetches through
//! `tcred agent` on the node's IP from the operator's credentials endpoint and signs calls the
//! simulator accepts across rotations, without a restart.
//!
//! The operator and the agent run as host processes on the rig's bridge address (the node IP),
//! where pods reach a host-network DaemonSet's agent and the API server reaches the webhook:
//! docs/rig.md says why they are not pods here. Everything else is the real path: the webhook
//! registered with the API server (caBundle written by tcred's certificate code), the kubelet's
//! TokenRequest for audience `tcred.dev`, TokenReview by the endpoint, the SDK's own provider.
//!
//! Abuse: a pod of the same namespace running as another ServiceAccount that puts the same label
//! on itself gets the same injection, but the endpoint refuses its token: it never signs a call.

mod support;
#[path = "support/webhook.rs"]
mod webhook_support;

use std::{
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use serde_json::{Value, json};
use support::{node::*, podidentity::service_account, *};
use tcred::{
    certs::{self, CertConfig, Policy},
    webhook::mutate::{AGENT_HOST_ENV, FULL_URI_ENV, LABEL, MOUNT_PATH, TOKEN_FILE_ENV, VOLUME},
};
use webhook_support::{
    CA_SECRET, TLS_SECRET, delete_configuration, install_configuration_at, wait_webhook_effective,
    write_tls_files,
};

/// Issued lifetime at the simulator: a rotation about every 30 s. Far below the SDK's 40-minute
/// refresh threshold, so the SDK fetches from the agent before every call.
const LIFETIME_SECONDS: u64 = 45;
/// Two rotations at least: three distinct access keys signed with.
const KEYS_WANTED: usize = 3;
const CREDENTIAL: &str = "app-creds";
const SESSION: &str = "pod-app";

/// `tcred agent` listening on the node's IP, as the chart's host-network DaemonSet does; killed
/// on drop.
struct Agent {
    child: Child,
    url: String,
}

impl Agent {
    fn start(test: &str, ip: &str, port: u16, upstream: &str, ca: &Path) -> Self {
        let log = log_dir(test).join(format!("agent-{port}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tcred"))
            .args([
                "agent",
                &format!("--listen={ip}"),
                &format!("--port={port}"),
                &format!("--upstream={upstream}"),
                &format!("--ca-file={}", ca.display()),
            ])
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start tcred agent");
        Self {
            child,
            url: format!("http://{ip}:{port}"),
        }
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("agent metrics")
            .text()
            .await
            .expect("agent metrics text")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A restricted pod running the Go SDK consumer as `service_account`, labelled for pod identity.
/// It sets none of the pod identity environment itself: that is the webhook's job.
fn sdk_pod(ns: &str, name: &str, service_account: &str, image: &str, sts: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {LABEL: CREDENTIAL}},
        "spec": {
            "serviceAccountName": service_account,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 2,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "sdk", "image": image, "imagePullPolicy": "Never",
                "args": ["--mode=pod-identity", "--interval=1s", "--max-failures=1000000",
                         format!("--endpoint={sts}")],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    })
}

fn env_var<'a>(c: &'a Container, name: &str) -> Option<&'a k8s_openapi::api::core::v1::EnvVar> {
    c.env.iter().flatten().find(|e| e.name == name)
}

/// The pod as stored: the webhook's environment, projected token volume and mount are in it.
fn assert_injected(pod: &Pod, ns: &str, agent_port: u16) {
    let spec = pod.spec.as_ref().expect("pod spec");
    let c = spec
        .containers
        .iter()
        .find(|c| c.name == "sdk")
        .expect("container sdk");
    let host = env_var(c, AGENT_HOST_ENV)
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(host, Some("status.hostIP"), "{AGENT_HOST_ENV} in {c:?}");
    let uri = format!("http://$({AGENT_HOST_ENV}):{agent_port}/v1/credentials/{ns}/{CREDENTIAL}");
    assert_eq!(
        env_var(c, FULL_URI_ENV).and_then(|e| e.value.as_deref()),
        Some(uri.as_str())
    );
    assert_eq!(
        env_var(c, TOKEN_FILE_ENV).and_then(|e| e.value.as_deref()),
        Some(format!("{MOUNT_PATH}/token").as_str())
    );
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == VOLUME)
        .expect("the token mount");
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        (MOUNT_PATH, Some(true))
    );
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == VOLUME)
        .expect("the token volume");
    let token = volume
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .and_then(|s| s.iter().find_map(|s| s.service_account_token.as_ref()))
        .expect("a projected ServiceAccount token");
    assert_eq!(token.audience.as_deref(), Some("tcred.dev"));
    assert_eq!(token.path, "token");
}

fn restart_count(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == "sdk")
        .map(|s| s.restart_count)
}

#[tokio::test]
async fn an_opted_in_pod_gets_env_and_token_from_the_webhook_and_its_go_sdk_client_survives_rotations() {
    let node = Node::get();
    let image = node
        .consumer_go_image()
        .expect("conformance/consumer-go is part of this checkout");
    let test = "node-pod-identity";
    with_namespace(test, |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        sim.set_lifetime(Some(LIFETIME_SECONDS)).await;
        let sts = node.forward(sim.url.trim_start_matches("http://").trim_end_matches('/'));
        access_key_source(&client, &ns, "corp", &sim).await;
        for sa in ["app", "intruder"] {
            service_account(&client, &ns, sa).await;
        }
        let spec = json!({"duration": "1h", "sessionName": SESSION,
                          "podIdentity": {"serviceAccounts": ["app"]}});
        apply(&client, agency_credential(&ns, CREDENTIAL, "corp", spec)).await;

        // The webhook's configuration, then certificates for the node IP written by tcred's own
        // certificate code (Secrets, and the caBundle of that configuration).
        let ip = node.ip().to_owned();
        let (webhook_port, endpoint_port, agent_port) = (free_port(), free_port(), free_port());
        let configuration = format!("tcred-node-{ns}");
        let webhook_url = format!("https://{ip}:{webhook_port}/mutate-pods");
        install_configuration_at(&client, &configuration, &ns, &webhook_url).await;
        let config = CertConfig {
            namespace: ns.clone(),
            ca_secret: CA_SECRET.into(),
            tls_secret: TLS_SECRET.into(),
            dns_names: vec![ip.clone()],
            webhook_configuration: Some(configuration.clone()),
            policy: Policy::default(),
        };
        certs::reconcile(&client, &config, Timestamp::now())
            .await
            .expect("write the certificates");
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key, ca) = write_tls_files(&client, &ns, dir.path()).await;
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, &ca).expect("write ca.crt");

        let operator = Operator::start_with(
            test,
            OperatorOptions {
                namespace: Some(&ns),
                extra: vec![
                    format!("--credentials-endpoint-address={ip}:{endpoint_port}"),
                    format!("--tls-cert-file={}", cert.display()),
                    format!("--tls-key-file={}", key.display()),
                    format!("--webhook-address={ip}:{webhook_port}"),
                    format!("--webhook-tls-cert-file={}", cert.display()),
                    format!("--webhook-tls-key-file={}", key.display()),
                    format!("--webhook-agent-port={agent_port}"),
                ],
                ..Default::default()
            },
        )
        .await;
        let agent = Agent::start(
            test,
            &ip,
            agent_port,
            &format!("https://{ip}:{endpoint_port}"),
            &ca_file,
        );
        wait_ready_reason(
            &client,
            &ns,
            CREDENTIAL,
            tcred::api::condition::reasons::ISSUED,
            Duration::from_secs(30),
        )
        .await;
        let https = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.as_bytes()).expect("CA"))
            .build()
            .expect("client");
        wait_for(Duration::from_secs(30), "the webhook to listen", || {
            let (https, url) = (https.clone(), webhook_url.clone());
            async move { https.post(&url).body("{}").send().await.ok().map(|_| ()) }
        })
        .await;
        wait_webhook_effective(&client, &ns).await;
        let readyz = format!("{}/readyz", agent.url);
        wait_for(Duration::from_secs(30), "the agent ready", || {
            let url = readyz.clone();
            async move {
                let resp = reqwest::get(&url).await.ok()?;
                resp.status().is_success().then_some(())
            }
        })
        .await;

        // The application pod and an intruder: same label, another ServiceAccount.
        apply(&client, sdk_pod(&ns, "app", "app", &image, &sts.url())).await;
        apply(&client, sdk_pod(&ns, "intruder", "intruder", &image, &sts.url())).await;
        let pods = Api::<Pod>::namespaced(client.clone(), &ns);
        for name in ["app", "intruder"] {
            let stored = pods.get(name).await.expect("the pod as stored");
            assert_injected(&stored, &ns, agent_port);
        }
        let first = wait_pod_ready(&client, &ns, "app", Duration::from_secs(90)).await;
        assert_eq!(
            first.status.as_ref().and_then(|s| s.host_ip.as_deref()),
            Some(ip.as_str()),
            "the agent host the pod was given is the node's IP"
        );
        let uid = first.metadata.uid.clone();

        // One client for the container's life; the SDK fetches again before each call.
        let who = format!("sts::{ACCOUNT}::assumed-agency:{AGENCY}/{SESSION}");
        let start = Instant::now();
        let keys = loop {
            let reports = node.consumer_reports(&ns, "app", "sdk");
            let failed: Vec<&Value> = reports.iter().filter(|r| r["ok"] != true).collect();
            assert!(failed.is_empty(), "the SDK client failed calls: {failed:?}");
            let keys = node.accepted_keys(&ns, "app", "sdk", &who);
            if keys.len() >= KEYS_WANTED {
                break keys;
            }
            assert!(
                start.elapsed() < Duration::from_secs(240),
                "fewer than {KEYS_WANTED} access keys in 4 min: {keys:?} ({} reports); operator log {}",
                reports.len(),
                operator.log.display()
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        };

        let now = pods.get("app").await.expect("pod app");
        assert_eq!(now.metadata.uid, uid, "the same pod throughout");
        assert_eq!(restart_count(&now), Some(0), "no restart: {:?}", now.status);
        // Every call the SDK signed went through the agent on the node IP.
        let metrics = agent.metrics().await;
        let served = sample(&metrics, "tcred_agent_requests_total{code=\"200\"}").unwrap_or(0.0);
        assert!(served >= 3.0, "the agent served {served} answers:\n{metrics}");

        // The intruder's SDK asked (it has the injected environment and a real token) and was
        // refused every time: it signed nothing with the victim's credential.
        let intruder = wait_for(Duration::from_secs(60), "the intruder's SDK to try", || async {
            let r = node.consumer_reports(&ns, "intruder", "sdk");
            (r.len() >= 3).then_some(r)
        })
        .await;
        assert!(
            intruder
                .iter()
                .all(|r| r["ok"] == false && r["accessKeyId"].is_null()),
            "the intruder got credentials: {intruder:?}"
        );
        assert!(
            sample(&metrics, "tcred_agent_requests_total{code=\"403\"}").is_some()
                || sample(&agent.metrics().await, "tcred_agent_requests_total{code=\"403\"}").is_some(),
            "the endpoint refused the intruder with 403 (through the agent)"
        );
        // The app still works after the intruder's attempts.
        let more = node.accepted_keys(&ns, "app", "sdk", &who);
        assert!(more.is_superset(&keys), "{more:?} ⊇ {keys:?}");
        eprintln!(
            "pod identity on the node: access keys signed with {more:?} in {:?}, agent answered 200 \
             {served} times, the intruder was refused {} times",
            start.elapsed(),
            intruder.len()
        );

        delete_configuration(&client, &configuration).await;
        drop(agent);
        drop(operator);
    })
    .await;
}
