//! Operating tcred: leader election between real controller processes (one mints; a SIGKILLed
//! leader is replaced within the lease duration and nothing is minted twice; SIGTERM steps down
//! at once), and the Prometheus metrics after a mint.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use support::*;
use tcred::api::{TemporaryCredential, annotations, condition::reasons};

const LEASE: &str = "tcred-controller";

async fn holder(client: &kube::Client, ns: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(LEASE)
        .await
        .ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

fn elected<'a>(ns: &'a str, identity: &'a str) -> OperatorOptions<'a> {
    OperatorOptions {
        namespace: Some(ns),
        leader_elect: true,
        lease_namespace: Some(ns),
        identity,
        extra: vec![
            "--lease-duration-seconds=6".into(),
            "--lease-grace-seconds=2".into(),
        ],
        ..Default::default()
    }
}

fn minted_lines(op: &Operator) -> usize {
    op.logs()
        .lines()
        .filter(|l| l.contains("credential minted"))
        .count()
}

#[tokio::test]
async fn only_the_leader_mints_and_a_standby_takes_over_without_minting_twice() {
    with_namespace("leader-election", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let mut ops = [
            Operator::start_with("leader-election", elected(&ns, "op-1")).await,
            Operator::start_with("leader-election", elected(&ns, "op-2")).await,
        ];
        for name in ["one", "two", "three"] {
            apply(&client, agency_credential(&ns, name, "corp", json!({}))).await;
        }
        for name in ["one", "two", "three"] {
            wait_ready_reason(&client, &ns, name, reasons::ISSUED, Duration::from_secs(30)).await;
        }
        let leader = wait_for(Duration::from_secs(30), "a lease holder", || holder(&client, &ns)).await;
        let (li, si) = if leader == "op-1" { (0, 1) } else { (1, 0) };
        assert_eq!(sim.mints_total().await, 3, "each credential minted once");
        assert_eq!(minted_lines(&ops[li]), 3, "the leader minted");
        assert_eq!(minted_lines(&ops[si]), 0, "the standby minted nothing");
        assert!(ops[si].metrics().await.lines().any(|l| l == "tcred_leader 0"));
        assert!(ops[li].metrics().await.lines().any(|l| l == "tcred_leader 1"));

        // Crash the leader.
        ops[li].kill();
        let killed = Instant::now();
        let standby = if leader == "op-1" { "op-2" } else { "op-1" };
        wait_for(Duration::from_secs(30), "the standby holds the lease", || async {
            (holder(&client, &ns).await.as_deref() == Some(standby)).then_some(())
        })
        .await;
        let failover = killed.elapsed();
        wait_for(Duration::from_secs(30), "the new leader reports itself", || async {
            ops[si].metrics().await.lines().any(|l| l == "tcred_leader 1").then_some(())
        })
        .await;
        let serving = killed.elapsed();
        println!("failover: lease taken over {failover:.1?} after SIGKILL (lease duration 6 s); controller running after {serving:.1?}");
        write_measurement("leader-failover", json!({
            "leaseDurationSeconds": 6, "leaseTakenOverSeconds": failover.as_secs_f64(), "controllerRunningSeconds": serving.as_secs_f64(),
        }));

        // The new leader resyncs everything and mints nothing that is still valid ...
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(sim.mints_total().await, 3, "nothing minted twice after the failover");
        // ... and does mint when asked.
        rotate(&client, &ns, "one", "after-failover").await;
        wait_ready_reason(&client, &ns, "one", reasons::ROTATED, Duration::from_secs(30)).await;
        assert_eq!(sim.mints_total().await, 4);

        // SIGTERM steps down at once: the lease is released, not left to lapse.
        let status = ops[si].stop().expect("stopped");
        assert!(status.success(), "graceful exit: {status:?}");
        let released = holder(&client, &ns).await;
        assert!(released.is_none(), "the lease was released on SIGTERM, holder {released:?}");
        let op3 = Operator::start_with("leader-election", elected(&ns, "op-3")).await;
        let started = Instant::now();
        wait_for(Duration::from_secs(30), "op-3 holds the lease", || async {
            (holder(&client, &ns).await.as_deref() == Some("op-3")).then_some(())
        })
        .await;
        println!("after a graceful step-down the next replica led within {:.1?}", started.elapsed());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(sim.mints_total().await, 4, "nothing minted by the new leader");
        drop(op3);
    })
    .await;
}

fn write_measurement(name: &str, value: serde_json::Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&value).unwrap_or_default(),
    );
}

#[tokio::test]
async fn metrics_after_a_mint_match_the_status_and_vanish_with_the_credential() {
    with_namespace("metrics", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let op = Operator::start_with(
            "metrics",
            OperatorOptions {
                namespace: Some(&ns),
                extra: vec!["--log-format=json".into()],
                ..Default::default()
            },
        )
        .await;
        apply(&client, agency_credential(&ns, "billing", "corp", json!({}))).await;
        let tc = wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        let status = tc.status.unwrap();
        let labels = format!("{{namespace=\"{ns}\",name=\"billing\"}}");

        // The gauges are read from the operator's cache, which may not hold the status yet.
        let m = wait_for(Duration::from_secs(30), "the credential's gauges", || async {
            let m = op.metrics().await;
            (sample(&m, &format!("tcred_credential_ready{labels}")) == Some(1.0)).then_some(m)
        })
        .await;
        let expiry = sample(
            &m,
            &format!("tcred_credential_expiration_timestamp_seconds{labels}"),
        )
        .expect("expiry series");
        assert_eq!(expiry, status.expires_at.unwrap().0.as_second() as f64);
        let renewal = sample(&m, &format!("tcred_credential_renewal_timestamp_seconds{labels}"))
            .expect("renewal series");
        assert_eq!(renewal, status.renewal_time.unwrap().0.as_second() as f64);
        assert_eq!(sample(&m, &format!("tcred_credential_ready{labels}")), Some(1.0));
        assert_eq!(
            sample(
                &m,
                &format!("tcred_mint_total{{source=\"{ns}/corp\",result=\"success\"}}")
            ),
            Some(1.0)
        );
        assert!(sample(&m, "tcred_mint_duration_seconds_count").unwrap_or(0.0) >= 1.0);
        assert!(sample(&m, "tcred_reconcile_total").unwrap_or(0.0) >= 1.0);
        assert_eq!(
            sample(
                &m,
                &format!("tcred_source_ready{{source=\"{ns}/corp\",kind=\"CredentialSource\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(sample(&m, "tcred_leader"), Some(1.0));

        // A failure is counted by class.
        sim.set_faults(json!({"errorRate": 1.0})).await;
        rotate(&client, &ns, "billing", "1").await;
        wait_ready_reason(
            &client,
            &ns,
            "billing",
            reasons::RENEWAL_FAILING,
            Duration::from_secs(30),
        )
        .await;
        let m = wait_for(Duration::from_secs(30), "the ready gauge at 0", || async {
            let m = op.metrics().await;
            (sample(&m, &format!("tcred_credential_ready{labels}")) == Some(0.0)).then_some(m)
        })
        .await;
        assert!(
            sample(
                &m,
                &format!("tcred_mint_total{{source=\"{ns}/corp\",result=\"server\"}}")
            )
            .unwrap_or(0.0)
                >= 1.0,
            "{m}"
        );
        assert_eq!(sample(&m, &format!("tcred_credential_ready{labels}")), Some(0.0));

        // JSON logs on request: every line is an object; fields such as the object name are keys.
        let logs = op.logs();
        let lines: Vec<serde_json::Value> = logs
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let minted = lines
            .iter()
            .find(|l| l["message"] == "credential minted")
            .expect("a mint log line");
        assert_eq!(minted["object"], "billing");
        assert_eq!(minted["level"], "INFO");

        // Deleting the credential removes its series.
        Api::<TemporaryCredential>::namespaced(client.clone(), &ns)
            .delete("billing", &DeleteParams::default())
            .await
            .unwrap();
        wait_for(
            Duration::from_secs(30),
            "the credential's series disappear",
            || async {
                let m = op.metrics().await;
                (!m.contains(&labels)).then_some(())
            },
        )
        .await;
    })
    .await;
}

/// A Deployment labelled `team: <team>` whose container loads `secret` as environment variables,
/// and which lets the TemporaryCredential `secret` restart it (`tcred.dev/restart-on-rotation`).
fn deployment(ns: &str, name: &str, team: &str, secret: &str) -> serde_json::Value {
    let mut d = deployment_without_opt_in(ns, name, team, secret);
    d["metadata"]["annotations"] = json!({annotations::RESTART_ON_ROTATION: secret});
    d
}

/// The same Deployment, without the restart opt-in annotation.
fn deployment_without_opt_in(ns: &str, name: &str, team: &str, secret: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"team": team}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1",
                                         "envFrom": [{"secretRef": {"name": secret}}]}]},
            },
        },
    })
}

/// The `tcred.dev/restartedAt` stamp on a Deployment's pod template.
async fn restart_stamp(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    use k8s_openapi::api::apps::v1::Deployment;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
        .spec?
        .template
        .metadata?
        .annotations?
        .get(annotations::RESTARTED_AT)
        .cloned()
}

/// Waits until the Deployment `name` has `n` ReplicaSets (one per pod template it has had).
async fn wait_replica_sets(client: &kube::Client, ns: &str, name: &str, n: usize) {
    let what = format!("{n} ReplicaSet(s) of Deployment {name}");
    wait_for(Duration::from_secs(30), &what, || async {
        (replica_sets_of(client, ns, name).await == n).then_some(())
    })
    .await;
}

/// ReplicaSets of the Deployment `name` (kube-controller-manager makes one per pod template).
async fn replica_sets_of(client: &kube::Client, ns: &str, name: &str) -> usize {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&kube::api::ListParams::default().labels(&format!("app={name}")))
        .await
        .unwrap()
        .items
        .len()
}

#[tokio::test]
async fn selector_targets_restart_what_they_match_and_a_retry_restarts_only_what_is_still_owed() {
    with_namespace("restart-selector", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        for (name, team) in [("web", "pay"), ("worker", "pay"), ("other", "ops")] {
            apply(&client, deployment(&ns, name, team, "billing")).await;
        }
        // web opts in to both credentials that name or select it
        let mut web = deployment(&ns, "web", "pay", "billing");
        web["metadata"]["annotations"][annotations::RESTART_ON_ROTATION] = json!("billing, reports");
        apply(&client, web).await;
        // selected by billing, but it never opted in
        apply(
            &client,
            deployment_without_opt_in(&ns, "stranger", "pay", "billing"),
        )
        .await;
        for name in ["web", "worker", "other", "stranger"] {
            wait_replica_sets(&client, &ns, name, 1).await;
        }
        let op = Operator::start("restart-selector", &ns).await;
        let by_selector = json!({"rolloutRestartTargets": [
            {"kind": "Deployment", "selector": {"matchLabels": {"team": "pay"}}}]});
        apply(&client, agency_credential(&ns, "billing", "corp", by_selector)).await;
        // `batch` does not exist yet: its restart fails and stays owed
        let by_name = json!({"rolloutRestartTargets": [
            {"kind": "Deployment", "name": "batch"}, {"kind": "Deployment", "name": "web"}]});
        apply(&client, agency_credential(&ns, "reports", "corp", by_name)).await;
        for name in ["billing", "reports"] {
            wait_ready_reason(&client, &ns, name, reasons::ISSUED, Duration::from_secs(30)).await;
        }

        rotate(&client, &ns, "reports", "1").await;
        wait_ready_reason(&client, &ns, "reports", reasons::ROTATED, Duration::from_secs(30)).await;
        wait_for(Duration::from_secs(30), "reports restarted web", || async {
            restart_stamp(&client, &ns, "web").await
        })
        .await;
        let failed = wait_for(
            Duration::from_secs(30),
            "a RolloutRestartFailed Event",
            || async {
                let events = events_for(&client, &ns, "reports").await;
                has_event(&events, "RolloutRestartFailed").then_some(events)
            },
        )
        .await;
        let note = failed
            .iter()
            .find(|e| e.reason.as_deref() == Some("RolloutRestartFailed"))
            .and_then(|e| e.note.clone())
            .unwrap_or_default();
        assert!(
            note.contains("Deployment/batch") && note.contains("not found"),
            "{note}"
        );
        let tc = get_tc(&client, &ns, "reports").await;
        assert_eq!(
            tc.status.unwrap().restarted_rotation,
            Some(1),
            "the restart is still owed"
        );

        // the retry finds web already restarted after the rotation: it is not restarted again
        wait_for(
            Duration::from_secs(60),
            "a RolloutRestartCoalesced Event",
            || async {
                has_event(
                    &events_for(&client, &ns, "reports").await,
                    "RolloutRestartCoalesced",
                )
                .then_some(())
            },
        )
        .await;
        // a workload created after the rotation already reads the new Secret: nothing to restart
        apply(&client, deployment(&ns, "batch", "batch", "reports")).await;
        wait_for(Duration::from_secs(60), "the owed restart is settled", || async {
            let s = get_tc(&client, &ns, "reports").await.status.unwrap();
            (s.restarted_rotation == Some(s.rotations)).then_some(())
        })
        .await;
        assert_eq!(
            restart_stamp(&client, &ns, "batch").await,
            None,
            "batch started after the rotation"
        );
        assert_eq!(
            replica_sets_of(&client, &ns, "web").await,
            2,
            "web restarted once for reports"
        );

        rotate(&client, &ns, "billing", "1").await;
        wait_ready_reason(&client, &ns, "billing", reasons::ROTATED, Duration::from_secs(30)).await;
        for name in ["web", "worker"] {
            // billing restarts the team: pay Deployments
            wait_replica_sets(&client, &ns, name, if name == "web" { 3 } else { 2 }).await;
        }
        assert_eq!(
            restart_stamp(&client, &ns, "other").await,
            None,
            "other is not selected"
        );
        assert_eq!(replica_sets_of(&client, &ns, "other").await, 1);
        let refused = wait_for(Duration::from_secs(30), "a RestartNotAllowed Event", || async {
            let events = events_for(&client, &ns, "billing").await;
            events
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reasons::RESTART_NOT_ALLOWED))
                .collect::<Vec<_>>()
                .into_iter()
                .next()
        })
        .await;
        let note = refused.note.unwrap_or_default();
        assert!(
            note.contains("Deployment/stranger") && note.contains("tcred.dev/restart-on-rotation=billing"),
            "{note}"
        );
        assert_eq!(refused.type_.as_deref(), Some("Warning"));
        assert_eq!(
            restart_stamp(&client, &ns, "stranger").await,
            None,
            "stranger never opted in"
        );
        assert_eq!(replica_sets_of(&client, &ns, "stranger").await, 1);
        let m = op.metrics().await;
        assert_eq!(
            sample(&m, &format!("tcred_rollout_restarts_total{{namespace=\"{ns}\"}}")),
            Some(3.0),
            "{m}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_rotation_restarts_the_listed_workloads_once_and_the_first_issue_does_not() {
    with_namespace("rollout-restart", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        apply(&client, deployment(&ns, "web", "pay", "billing")).await;
        wait_replica_sets(&client, &ns, "web", 1).await;
        let op = Operator::start("rollout-restart", &ns).await;
        let targets = json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "web"}]});
        apply(&client, agency_credential(&ns, "billing", "corp", targets)).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            restart_stamp(&client, &ns, "web").await,
            None,
            "the first issue restarts nothing"
        );

        rotate(&client, &ns, "billing", "1").await;
        wait_ready_reason(&client, &ns, "billing", reasons::ROTATED, Duration::from_secs(30)).await;
        wait_for(
            Duration::from_secs(30),
            "the Deployment was restarted",
            || async { restart_stamp(&client, &ns, "web").await },
        )
        .await;
        // a new ReplicaSet rolls the pods
        wait_replica_sets(&client, &ns, "web", 2).await;
        let tc = get_tc(&client, &ns, "billing").await;
        assert_eq!(tc.status.unwrap().restarted_rotation, Some(2));
        let m = op.metrics().await;
        assert_eq!(
            sample(&m, &format!("tcred_rollout_restarts_total{{namespace=\"{ns}\"}}")),
            Some(1.0),
            "{m}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            replica_sets_of(&client, &ns, "web").await,
            2,
            "one restart per rotation"
        );
    })
    .await;
}

#[tokio::test]
async fn a_restart_lost_to_a_crash_before_the_status_write_is_made_on_the_next_start() {
    use k8s_openapi::api::apps::v1::Deployment;
    with_namespace("restart-after-crash", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        apply(&client, deployment(&ns, "web", "pay", "billing")).await;
        let mut op = Operator::start("restart-after-crash", &ns).await;
        let targets = json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "web"}]});
        apply(&client, agency_credential(&ns, "billing", "corp", targets)).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        let issued = get_tc(&client, &ns, "billing").await.status.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        rotate(&client, &ns, "billing", "1").await;
        wait_ready_reason(&client, &ns, "billing", reasons::ROTATED, Duration::from_secs(30)).await;
        wait_for(Duration::from_secs(30), "the restart", || async {
            restart_stamp(&client, &ns, "web").await
        })
        .await;
        op.stop();
        let mints = sim.mints_total().await;

        // Leave what a crash between the Secret write and the status write leaves: the Secret
        // holds the rotated credential, the status still describes the first issue, and the
        // workload was not restarted.
        let status = json!({"status": {
            "rotations": 1, "restartedRotation": 1, "lastRotateRequest": "1",
            "lastRotationTime": issued.last_rotation_time,
        }});
        Api::<TemporaryCredential>::namespaced(client.clone(), &ns)
            .patch_status("billing", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        let unstamp =
            json!({"spec": {"template": {"metadata": {"annotations": {annotations::RESTARTED_AT: null}}}}});
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .patch("web", &PatchParams::default(), &Patch::Merge(&unstamp))
            .await
            .unwrap();
        // (the unstamped template is the first one again: the Deployment goes back to its first
        // ReplicaSet)

        let _op = Operator::start("restart-after-crash", &ns).await;
        wait_for(Duration::from_secs(30), "the owed restart", || async {
            restart_stamp(&client, &ns, "web").await
        })
        .await;
        // The restart is made before the status records it: wait for the status write.
        let s = wait_for(
            Duration::from_secs(30),
            "the status after the owed restart",
            || async {
                let s = get_tc(&client, &ns, "billing").await.status?;
                (s.restarted_rotation != Some(1)).then_some(s)
            },
        )
        .await;
        assert_eq!(s.rotations, 2, "the lost rotation is counted from the Secret");
        assert_eq!(s.restarted_rotation, Some(2));
        assert_eq!(sim.mints_total().await, mints, "nothing is minted again");
        // the restart rolls the pods
        wait_replica_sets(&client, &ns, "web", 3).await;
    })
    .await;
}
