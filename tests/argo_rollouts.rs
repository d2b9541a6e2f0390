//! Argo Rollouts `Rollout`s as restart targets (docs/api.md#rollout-restarts). No Argo controller
//! runs on the rig: a minimal `rollouts.argoproj.io` CRD is installed as a fixture, and the tests
//! show what tcred owes Argo: `spec.restartAt` set once per rotation, the way `kubectl argo
//! rollouts restart` sets it. Argo's controller then recreates every pod created before that
//! time (argo-rollouts `rollout/restart.go`); that part is Argo's and is not exercised here.
//! When the Rollout API is absent or tcred's RBAC leaves it out, the target is reported once
//! per rotation (`RestartUnavailable` Event), is not retried in a loop, and the credential
//! keeps rotating.
//!
//! The tests install and delete a cluster-wide CRD, so they take turns.

mod support;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams},
    discovery::ApiResource,
};
use serde_json::{Value, json};
use support::*;
use tcred::api::{TemporaryCredential, annotations, condition::reasons};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CRD: &str = "rollouts.argoproj.io";
const UNAVAILABLE: &str = "RestartUnavailable";

/// The smallest Rollout CRD that behaves like Argo's for tcred: namespaced, `v1alpha1`, with
/// `spec.restartAt` a date-time as in Argo's schema.
fn rollout_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD},
        "spec": {
            "group": "argoproj.io", "scope": "Namespaced",
            "names": {"kind": "Rollout", "listKind": "RolloutList", "plural": "rollouts", "singular": "rollout"},
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                                 "properties": {"restartAt": {"type": "string", "format": "date-time"}}},
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    },
                }},
            }],
        },
    })
}

async fn install_crd(client: &kube::Client) {
    apply(client, rollout_crd()).await;
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    wait_for(
        Duration::from_secs(30),
        "the Rollout CRD is established",
        || async {
            let crd = api.get_opt(CRD).await.ok()??;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        },
    )
    .await;
    wait_for(Duration::from_secs(30), "the Rollout API is served", || async {
        let list = client
            .list_api_group_resources("argoproj.io/v1alpha1")
            .await
            .ok()?;
        list.resources.iter().any(|r| r.name == "rollouts").then_some(())
    })
    .await;
}

async fn remove_crd(client: &kube::Client) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let _ = api.delete(CRD, &Default::default()).await;
    wait_for(Duration::from_secs(60), "the Rollout CRD is gone", || async {
        let gone = matches!(api.get_opt(CRD).await, Ok(None));
        let unserved = client
            .list_api_group_resources("argoproj.io/v1alpha1")
            .await
            .is_err();
        (gone && unserved).then_some(())
    })
    .await;
}

fn rollouts(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// A Rollout `name` labelled `team`, opted in for credential `opt_in` (when given).
fn rollout(ns: &str, name: &str, team: &str, opt_in: Option<&str>) -> Value {
    let mut r = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": ns, "labels": {"team": team}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1",
                                         "envFrom": [{"secretRef": {"name": "billing"}}]}]},
            },
            "strategy": {"canary": {}},
        },
    });
    if let Some(c) = opt_in {
        r["metadata"]["annotations"] = json!({annotations::RESTART_ON_ROTATION: c});
    }
    r
}

async fn restart_at(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    let r = rollouts(client, ns).get(name).await.ok()?;
    r.data["spec"]["restartAt"].as_str().map(str::to_owned)
}

/// How often an Event with `reason` was recorded about `name` (a repeated Event is one object
/// with a series count).
async fn occurrences(client: &kube::Client, ns: &str, name: &str, reason: &str) -> i32 {
    events_for(client, ns, name)
        .await
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

async fn rotate_and_wait(
    client: &kube::Client,
    ns: &str,
    value: &str,
    rotations: i64,
) -> TemporaryCredential {
    // past the test operator's 5 s minimum interval between mints
    tokio::time::sleep(Duration::from_secs(6)).await;
    rotate(client, ns, "billing", value).await;
    wait_for(
        Duration::from_secs(30),
        &format!("rotation {rotations}"),
        || async {
            let tc = get_tc(client, ns, "billing").await;
            let s = tc.status.as_ref()?;
            (s.rotations == rotations && s.restarted_rotation == Some(rotations)).then_some(tc)
        },
    )
    .await
}

fn targets() -> Value {
    json!({"rolloutRestartTargets": [
        {"kind": "Rollout", "name": "web"},
        {"kind": "Rollout", "selector": {"matchLabels": {"team": "pay"}}},
    ]})
}

#[tokio::test]
async fn without_the_rollout_api_the_target_is_reported_once_then_rollouts_restart_once_per_rotation() {
    let _turn = ONE_AT_A_TIME.lock().await;
    with_namespace("argo-rollouts", |client, ns| async move {
        remove_crd(&client).await;
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let mut op = Operator::start("argo-rollouts", &ns).await;
        apply(&client, agency_credential(&ns, "billing", "corp", targets())).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;

        // No Rollout API: reported, settled for this rotation, not retried.
        rotate_and_wait(&client, &ns, "1", 2).await;
        wait_for(
            Duration::from_secs(10),
            "the RestartUnavailable Event",
            || async { (occurrences(&client, &ns, "billing", UNAVAILABLE).await > 0).then_some(()) },
        )
        .await;
        let reported = occurrences(&client, &ns, "billing", UNAVAILABLE).await;
        let mints = sim.mints_total().await;
        // longer than the 20 s after which a failed restart would be retried
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(
            occurrences(&client, &ns, "billing", UNAVAILABLE).await,
            reported,
            "reported once per rotation, not in a loop"
        );
        assert_eq!(sim.mints_total().await, mints, "nothing minted meanwhile");
        let events = events_for(&client, &ns, "billing").await;
        let note = events
            .iter()
            .find(|e| e.reason.as_deref() == Some(UNAVAILABLE))
            .and_then(|e| e.note.clone())
            .unwrap_or_default();
        assert!(
            note.contains("argoproj.io/v1alpha1") && note.contains("not installed"),
            "{note}"
        );
        // ... and the credential keeps rotating
        let tc = rotate_and_wait(&client, &ns, "2", 3).await;
        assert_eq!(ready_of(&tc).map(|(s, _)| s).as_deref(), Some("True"));

        // Argo Rollouts installed: Rollouts that opted in get spec.restartAt, once per rotation.
        install_crd(&client).await;
        for r in [
            rollout(&ns, "web", "ops", Some("billing")),
            rollout(&ns, "worker", "pay", Some("billing")),
            rollout(&ns, "stranger", "pay", None),
        ] {
            apply(&client, r).await;
        }
        let tc = rotate_and_wait(&client, &ns, "3", 4).await;
        let rotated_at = tc
            .status
            .and_then(|s| s.last_rotation_time)
            .map(|t| t.0)
            .expect("rotation time");
        let web = restart_at(&client, &ns, "web").await.expect("web was restarted");
        let worker = restart_at(&client, &ns, "worker")
            .await
            .expect("worker was restarted");
        assert_eq!(restart_at(&client, &ns, "stranger").await, None, "not opted in");
        let at: jiff::Timestamp = web.parse().expect("RFC 3339");
        assert!(
            at >= rotated_at,
            "restartAt {web} is not before the rotation {rotated_at}"
        );
        assert!(
            at <= jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1),
            "{web}"
        );
        assert!(has_event(
            &events_for(&client, &ns, "billing").await,
            reasons::RESTART_NOT_ALLOWED
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            restart_at(&client, &ns, "web").await,
            Some(web.clone()),
            "one restart per rotation"
        );
        assert_eq!(restart_at(&client, &ns, "worker").await, Some(worker));
        let m = op.metrics().await;
        assert_eq!(
            sample(&m, &format!("tcred_rollout_restarts_total{{namespace=\"{ns}\"}}")),
            Some(2.0),
            "{m}"
        );

        // A restart lost to a crash before the status write is made by the next leader, without
        // a mint: the status says rotation 4 is still owed and the Rollout was not restarted.
        op.stop();
        let mints = sim.mints_total().await;
        Api::<TemporaryCredential>::namespaced(client.clone(), &ns)
            .patch_status(
                "billing",
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"restartedRotation": 3}})),
            )
            .await
            .expect("rewind restartedRotation");
        rollouts(&client, &ns)
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"restartAt": null}})),
            )
            .await
            .expect("unset restartAt");
        let _op = Operator::start("argo-rollouts", &ns).await;
        let again = wait_for(Duration::from_secs(30), "the owed restart", || async {
            restart_at(&client, &ns, "web").await
        })
        .await;
        assert!(
            again.parse::<jiff::Timestamp>().is_ok_and(|t| t >= rotated_at),
            "{again}"
        );
        wait_for(Duration::from_secs(30), "restartedRotation 4", || async {
            let s = get_tc(&client, &ns, "billing").await.status?;
            (s.restarted_rotation == Some(4)).then_some(())
        })
        .await;
        assert_eq!(sim.mints_total().await, mints, "nothing is minted again");
        remove_crd(&client).await;
    })
    .await;
}

/// The admin kubeconfig, impersonating `user` (who has only the RBAC the test grants).
fn impersonating_kubeconfig(user: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(admin_kubeconfig()).expect("admin kubeconfig");
    let mut kc: Value = serde_saphyr::from_str(&text).expect("kubeconfig YAML");
    for u in kc["users"].as_array_mut().expect("users") {
        u["user"]["as"] = json!(user);
    }
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_string(&kc).expect("JSON")).expect("write kubeconfig");
    path
}

#[tokio::test]
async fn a_rollout_target_tcred_may_not_patch_is_reported_once_and_the_credential_keeps_rotating() {
    let _turn = ONE_AT_A_TIME.lock().await;
    with_namespace("argo-forbidden", |client, ns| async move {
        install_crd(&client).await;
        // What the chart grants with rbac.rolloutRestarts.enabled but not .argoRollouts, roughly:
        // everything tcred uses, and nothing of argoproj.io.
        let user = format!("tcred-{ns}");
        apply(
            &client,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": user},
                "rules": [{"apiGroups": ["", "apps", "tcred.dev", "events.k8s.io", "coordination.k8s.io"],
                           "resources": ["*"], "verbs": ["*"]}],
            }),
        )
        .await;
        apply(
            &client,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": user},
                "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
                "roleRef": {"kind": "ClusterRole", "name": user, "apiGroup": "rbac.authorization.k8s.io"},
            }),
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = impersonating_kubeconfig(&user, dir.path());

        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        apply(&client, rollout(&ns, "web", "ops", Some("billing"))).await;
        let op = Operator::start_with(
            "argo-rollouts-forbidden",
            OperatorOptions {
                namespace: Some(&ns),
                identity: "limited",
                kubeconfig: Some(&kubeconfig),
                ..Default::default()
            },
        )
        .await;
        apply(&client, agency_credential(&ns, "billing", "corp", targets())).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;

        rotate_and_wait(&client, &ns, "1", 2).await;
        wait_for(
            Duration::from_secs(10),
            "the RestartUnavailable Event",
            || async { (occurrences(&client, &ns, "billing", UNAVAILABLE).await > 0).then_some(()) },
        )
        .await;
        let events = events_for(&client, &ns, "billing").await;
        let notes: Vec<String> = events
            .iter()
            .filter(|e| e.reason.as_deref() == Some(UNAVAILABLE))
            .filter_map(|e| e.note.clone())
            .collect();
        assert!(
            notes
                .iter()
                .all(|n| n.contains("rbac.rolloutRestarts.argoRollouts")),
            "{notes:#?}"
        );
        let reported = occurrences(&client, &ns, "billing", UNAVAILABLE).await;
        let mints = sim.mints_total().await;
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(
            occurrences(&client, &ns, "billing", UNAVAILABLE).await,
            reported,
            "no loop"
        );
        assert_eq!(sim.mints_total().await, mints);
        assert_eq!(restart_at(&client, &ns, "web").await, None);
        let tc = rotate_and_wait(&client, &ns, "2", 3).await;
        assert_eq!(ready_of(&tc).map(|(s, _)| s).as_deref(), Some("True"));
        drop(op);
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
        let _ = Api::<ClusterRoleBinding>::all(client.clone())
            .delete(&user, &Default::default())
            .await;
        let _ = Api::<ClusterRole>::all(client.clone())
            .delete(&user, &Default::default())
            .await;
        remove_crd(&client).await;
    })
    .await;
}
