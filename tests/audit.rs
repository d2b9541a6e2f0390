//! Audit attribution (docs/security.md#audit-attribution): with a source's `audit` settings on,
//! every AssumeAgency call (the first mint, a rotation, a mint retried after a failure) carries
//! `source_identity` `<namespace>.<name>` and the `tcred.*` session tags, which the simulator
//! validates like Huawei and records; `status.issuedCredentials` maps each issued key back to the
//! credential. Through a ClusterCredentialSource a tenant cannot be attributed as another.
//!
//! The two tests share one lock: the second runs an operator over every namespace, which must
//! not meet the first test's objects.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tcred::api::condition::reasons;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const AUDIT_ALL: &str = r#"{"sourceIdentity": true, "sessionTags": true, "transitiveTags": true}"#;

fn audit_all() -> Value {
    serde_json::from_str(AUDIT_ALL).expect("JSON")
}

async fn control_get(sim: &Simulator, path: &str) -> Value {
    reqwest::get(format!("{}/control/{path}", sim.url))
        .await
        .expect("control call")
        .json()
        .await
        .expect("JSON")
}

/// What every AssumeAgency request carried, as the simulator received it (injected failures too).
async fn assume_requests(sim: &Simulator) -> Vec<Value> {
    control_get(sim, "received").await["assumeRequests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The sessions the simulator issued, with the attribution it accepted.
async fn sessions(sim: &Simulator) -> Vec<Value> {
    control_get(sim, "sessions")
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn tags(ns: &str, name: &str, source: &str) -> Value {
    json!([
        {"key": "tcred.namespace", "value": ns},
        {"key": "tcred.credential", "value": name},
        {"key": "tcred.source", "value": source},
    ])
}

#[tokio::test]
async fn every_assume_agency_call_names_the_namespace_and_credential_and_status_keeps_the_keys() {
    let _one = ONE_AT_A_TIME.lock().await;
    with_namespace("audit-every-call", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        // the same source, with attribution on and the owner's own tags
        let mut audit = audit_all();
        audit["tags"] = json!({"cluster": "rig", "cost-center": "4711"});
        let spec = json!({
            "accessKey": {"region": "ap-southeast-1", "secretRef": {"name": "corp-ak"}},
            "endpoints": {"sts": sim.url},
            "audit": audit,
        });
        credential_source(&client, &ns, "corp", spec).await;
        let _op = Operator::start("audit-every-call", &ns).await;
        apply(&client, agency_credential(&ns, "billing", "corp", json!({}))).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;

        // a rotation (past the 5 s minimum interval between mints)
        tokio::time::sleep(Duration::from_secs(6)).await;
        rotate(&client, &ns, "billing", "1").await;
        wait_for(Duration::from_secs(30), "the rotation", || async {
            let s = get_tc(&client, &ns, "billing").await.status?;
            (s.rotations == 2).then_some(())
        })
        .await;

        // a rotation whose first attempt fails (every mint answered 500/503), then is retried
        tokio::time::sleep(Duration::from_secs(6)).await;
        sim.set_faults(json!({"errorRate": 1.0})).await;
        rotate(&client, &ns, "billing", "2").await;
        wait_for(Duration::from_secs(30), "a failed attempt", || async {
            let s = get_tc(&client, &ns, "billing").await.status?;
            (s.failed_attempts >= 1).then_some(())
        })
        .await;
        sim.set_faults(json!({"errorRate": 0.0})).await;
        let status = wait_for(Duration::from_secs(60), "the retried mint", || async {
            let s = get_tc(&client, &ns, "billing").await.status?;
            (s.rotations == 3).then_some(s)
        })
        .await;

        let mut expected_tags = tags(&ns, "billing", "CredentialSource:corp");
        if let Some(t) = expected_tags.as_array_mut() {
            // the source's own tags follow tcred's (sorted by key)
            t.push(json!({"key": "cluster", "value": "rig"}));
            t.push(json!({"key": "cost-center", "value": "4711"}));
        }
        let requests = assume_requests(&sim).await;
        assert!(
            requests.len() >= 4,
            "3 mints and at least 1 failed attempt: {requests:#?}"
        );
        for r in &requests {
            assert_eq!(r["sourceIdentity"], json!(format!("{ns}.billing")), "{r}");
            assert_eq!(r["tags"], expected_tags, "{r}");
            assert_eq!(
                r["transitiveTagKeys"],
                json!([
                    "tcred.namespace",
                    "tcred.credential",
                    "tcred.source",
                    "cluster",
                    "cost-center"
                ]),
                "{r}"
            );
            assert_eq!(r["sessionName"], json!(format!("{ns}-billing")), "{r}");
        }

        // every key in status.issuedCredentials is one the simulator issued for this credential
        let issued = &status.issued_credentials;
        assert_eq!(issued.len(), 3, "{issued:?}");
        assert_eq!(
            issued[0].access_key_id,
            status.access_key_id.clone().unwrap_or_default()
        );
        assert!(
            issued[0].issued_at.0 > issued[1].issued_at.0,
            "newest first: {issued:?}"
        );
        assert_eq!(Some(&issued[0].expires_at), status.expires_at.as_ref());
        let sessions = sessions(&sim).await;
        assert_eq!(sessions.len(), 3, "{sessions:#?}");
        for record in issued {
            let s = sessions
                .iter()
                .find(|s| s["accessKeyId"] == json!(record.access_key_id))
                .unwrap_or_else(|| panic!("{} was not issued by the simulator", record.access_key_id));
            assert_eq!(s["sourceIdentity"], json!(format!("{ns}.billing")), "{s}");
            assert_eq!(s["tags"]["tcred.namespace"], json!(ns), "{s}");
            assert_eq!(s["tags"]["cluster"], json!("rig"), "{s}");
        }
        // the public half only
        let raw = serde_json::to_string(&status).unwrap_or_default();
        assert!(!raw.to_lowercase().contains("secret_access_key") && !raw.contains("securityToken"));
    })
    .await;
}

fn cluster_credential(ns: &str, name: &str, source: &str, extra: Value) -> Value {
    let mut m = agency_credential(ns, name, source, extra);
    m["spec"]["sourceRef"]["kind"] = json!("ClusterCredentialSource");
    m
}

#[tokio::test]
async fn through_a_cluster_source_a_tenant_cannot_be_attributed_as_another_and_long_names_still_mint() {
    let _one = ONE_AT_A_TIME.lock().await;
    let admin = admin().await;
    let suffix = rand::random::<u32>() % 100_000;
    let system = create_namespace(&admin, "audit-system", &[]).await;
    let attacker = create_namespace(&admin, "audit-attacker", &[]).await;
    let victim = create_namespace(&admin, "audit-victim", &[]).await;
    let all = [system.clone(), attacker.clone(), victim.clone()];
    let source = format!("audit-{suffix}");
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let sim = Simulator::start(&default_sim_config()).await;
        create_labelled_secret(
            &admin,
            &system,
            "corp-ak",
            &bound_to("ClusterCredentialSource", &source),
            &[("accessKeyId", CI_BOT_AK), ("secretAccessKey", CI_BOT_SK)],
        )
        .await;
        apply(
            &admin,
            json!({
                "apiVersion": "tcred.dev/v1alpha1", "kind": "ClusterCredentialSource",
                "metadata": {"name": source},
                "spec": {
                    "accessKey": {"region": "ap-southeast-1", "secretRef": {"name": "corp-ak", "namespace": system}},
                    "endpoints": {"sts": sim.url},
                    "allowedNamespaces": {"names": [attacker, victim]},
                    "audit": audit_all(),
                },
            }),
        )
        .await;
        let _op = Operator::start_with(
            "audit-cluster-source",
            OperatorOptions {
                namespace: None,
                ..Default::default()
            },
        )
        .await;
        // The attacker names its credential and session after the victim's; a name that, with
        // its namespace, is far beyond Huawei's 64 characters must not make the call fail either
        // (61 characters: the Secret's `tcred.dev/credential` label keeps names within 63).
        let long = format!("{}.{}", "a".repeat(40), "b".repeat(20));
        let posing = json!({"sessionName": format!("{victim}-billing")});
        apply(&admin, cluster_credential(&attacker, "billing", &source, posing)).await;
        apply(&admin, cluster_credential(&attacker, &long, &source, json!({}))).await;
        apply(&admin, cluster_credential(&victim, "billing", &source, json!({}))).await;
        // Its own source's tags cannot pass for tcred's: the schema refuses the attempts.
        let forged = [
            json!({"tcred.namespace": victim}),
            json!({"TCRED.Credential": "billing"}),
            json!({"_sys_owner": "x"}),
            json!({"team": "a", "TEAM": "b"}),
            json!({"bad key": "v"}),
            json!({"k": "v w"}),
            json!({"k": "v".repeat(256)}),
            json!((0..18).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()),
        ];
        for tags in forged {
            let manifest = json!({
                "apiVersion": "tcred.dev/v1alpha1", "kind": "CredentialSource",
                "metadata": {"name": "forged", "namespace": attacker},
                "spec": {
                    "accessKey": {"region": "ap-southeast-1", "secretRef": {"name": "corp-ak"}},
                    "endpoints": {"sts": sim.url},
                    "audit": {"sessionTags": true, "tags": tags},
                },
            });
            let err = try_apply(&admin, &manifest)
                .await
                .expect_err("a forged or oversized tag is refused");
            assert!(err.contains("spec.audit.tags"), "{tags}: the refusal names the field: {err}");
        }
        for (ns, name) in [(&attacker, "billing"), (&attacker, long.as_str()), (&victim, "billing")] {
            wait_ready_reason(&admin, ns, name, reasons::ISSUED, Duration::from_secs(60)).await;
        }

        let sessions = sessions(&sim).await;
        assert_eq!(sessions.len(), 3, "{sessions:#?}");
        let of = |ns: &str, name: &str| {
            sessions
                .iter()
                .filter(|s| s["tags"]["tcred.namespace"] == json!(ns) && s["tags"]["tcred.credential"] == json!(name))
                .cloned()
                .collect::<Vec<_>>()
        };
        let attackers = of(&attacker, "billing");
        assert_eq!(attackers.len(), 1, "{sessions:#?}");
        assert_eq!(attackers[0]["sourceIdentity"], json!(format!("{attacker}.billing")));
        assert_eq!(
            attackers[0]["tags"]["tcred.source"],
            json!(format!("ClusterCredentialSource:{source}"))
        );
        // the session name still starts with the attacker's namespace
        let session_name = attackers[0]["sessionName"].as_str().unwrap_or_default();
        assert!(session_name.starts_with(&format!("{attacker}-")), "{session_name}");
        let victims = of(&victim, "billing");
        assert_eq!(victims.len(), 1, "the victim's credential works: {sessions:#?}");
        assert_eq!(victims[0]["sourceIdentity"], json!(format!("{victim}.billing")));
        // no session of the attacker's namespace claims the victim's
        assert!(
            sessions
                .iter()
                .filter(|s| s["sourceIdentity"].as_str().is_some_and(|i| i.starts_with(&format!("{victim}."))))
                .all(|s| s["tags"]["tcred.namespace"] == json!(victim)),
            "{sessions:#?}"
        );
        // `<namespace>.<name>` of 83 characters: cut to Huawei's 64, ending in a hash of the whole
        let long_tags: Vec<&Value> = sessions
            .iter()
            .filter(|s| s["tags"]["tcred.namespace"] == json!(attacker) && s["tags"]["tcred.credential"] != json!("billing"))
            .collect();
        assert_eq!(long_tags.len(), 1, "{sessions:#?}");
        let si = long_tags[0]["sourceIdentity"].as_str().unwrap_or_default();
        assert_eq!(si.len(), 64, "{si}");
        assert!(si.starts_with(&format!("{attacker}.aaaa")), "{si}");
        assert_eq!(long_tags[0]["tags"]["tcred.credential"], json!(long));
    }))
    .await;
    for ns in &all {
        delete_namespace(&admin, ns).await;
    }
    let _ = kube::Api::<tcred::api::ClusterCredentialSource>::all(admin.clone())
        .delete(&source, &Default::default())
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
