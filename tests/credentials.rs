//! TemporaryCredential behaviour on the real control plane with the Huawei simulator: issue,
//! rotation ahead of expiry, restarts that mint nothing, drift repair, failure handling, schema
//! validation, and the rule that secret material never leaks.

mod support;

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use support::*;
use tcred::{
    api::{TemporaryCredential, annotations, condition::reasons},
    cloud::{HttpClient, endpoints::parse_endpoint, http::Timeouts, signer::AccessKey, sts},
    sensitive::SecretString,
};

const SECRET_KEYS: [&str; 5] = [
    "HUAWEICLOUD_SDK_AK",
    "HUAWEICLOUD_SDK_SK",
    "HUAWEICLOUD_SDK_SECURITY_TOKEN",
    "HUAWEICLOUD_SDK_EXPIRES_AT",
    "credentials",
];

fn key_from(secret: &Secret) -> AccessKey {
    AccessKey {
        id: secret_text(secret, "HUAWEICLOUD_SDK_AK"),
        secret: SecretString::new(secret_text(secret, "HUAWEICLOUD_SDK_SK")),
        security_token: Some(SecretString::new(secret_text(
            secret,
            "HUAWEICLOUD_SDK_SECURITY_TOKEN",
        ))),
    }
}

#[tokio::test]
async fn creating_a_credential_writes_the_simulator_issued_credential_into_the_secret() {
    with_namespace("create-issue", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("create-issue", &ns).await;
        apply(&client, agency_credential(&ns, "billing", "corp", json!({}))).await;

        let tc = wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        let status = tc.status.clone().expect("status");
        assert_eq!(status.observed_generation, tc.metadata.generation);
        assert_eq!(status.rotations, 1);
        assert_eq!(status.target.as_deref(), Some(agency_urn(AGENCY).as_str()));
        let expires = status.expires_at.expect("expiresAt").0;
        let renewal = status.renewal_time.expect("renewalTime").0;
        assert!(
            renewal < expires,
            "renewal {renewal} must come before expiry {expires}"
        );

        let secret = get_secret(&client, &ns, "billing")
            .await
            .expect("the Secret exists");
        for key in SECRET_KEYS {
            assert!(!secret_text(&secret, key).is_empty(), "key {key} is empty");
        }
        assert_eq!(
            Some(secret_text(&secret, "HUAWEICLOUD_SDK_AK")),
            status.access_key_id
        );
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert_eq!(
            secret
                .labels()
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("tcred")
        );
        assert_eq!(
            secret.labels().get("tcred.dev/credential").map(String::as_str),
            Some("billing")
        );
        assert_eq!(
            secret.annotations().get(annotations::EXPIRES_AT),
            Some(&tcred::controller::secret::rfc3339(expires))
        );
        assert_eq!(secret.owner_references()[0].name, "billing");

        // The credential is real: the simulator accepts a call signed with it.
        let http = HttpClient::new(Timeouts::default()).expect("http");
        let who = sts::caller_identity(&http, &parse_endpoint(&sim.url).expect("url"), &key_from(&secret))
            .await
            .expect("caller identity with the minted credential");
        assert!(
            who.principal_urn.contains("assumed-agency:ops/"),
            "{}",
            who.principal_urn
        );
        assert_eq!(sim.mints(&agency_urn(AGENCY)).await, 1);
        wait_event(&client, &ns, "billing", reasons::ISSUED).await;
    })
    .await;
}

#[tokio::test]
async fn rotates_before_each_expiry_when_huawei_issues_shorter_lifetimes_than_asked() {
    with_namespace("short-lifetimes", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        sim.set_lifetime(Some(30)).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("short-lifetimes", &ns).await;
        apply(
            &client,
            agency_credential(&ns, "billing", "corp", json!({"duration": "1h"})),
        )
        .await;
        let tc = wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        let adjusted =
            tcred::api::condition::find(&tc.status.as_ref().unwrap().conditions, "DurationAdjusted")
                .expect("DurationAdjusted condition");
        assert_eq!(adjusted.reason, reasons::LIFETIME_SHORTENED);

        // Watch the Secret for ~75 s: it must rotate before each 30 s credential expires.
        let mut seen = BTreeSet::new();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(75) {
            let secret = get_secret(&client, &ns, "billing").await.expect("Secret");
            let expires: jiff::Timestamp = secret.annotations()[annotations::EXPIRES_AT]
                .parse()
                .expect("expires-at annotation");
            assert!(
                expires > jiff::Timestamp::now(),
                "the Secret held an expired credential (expired {expires})"
            );
            seen.insert(secret_text(&secret, "HUAWEICLOUD_SDK_AK"));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            seen.len() >= 3,
            "expected at least 3 credentials in 75 s of 30 s lifetimes, saw {}",
            seen.len()
        );

        // A rotation may be in flight right now (minted, status not yet written): compare once
        // the two agree; a mint without its rotation would never agree.
        wait_for(
            Duration::from_secs(10),
            "one simulator mint per rotation",
            || async {
                let rotations = get_tc(&client, &ns, "billing").await.status.unwrap().rotations;
                let mints = sim.mints(&agency_urn(AGENCY)).await;
                (mints as i64 == rotations).then_some(())
            },
        )
        .await;
        wait_event(&client, &ns, "billing", reasons::ROTATED).await;
    })
    .await;
}

#[tokio::test]
async fn a_huawei_clock_running_ahead_moves_expiry_earlier_and_a_large_one_is_named_on_failure() {
    with_namespace("clock-skew", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        sim.set_faults(json!({"clockOffsetSeconds": 120})).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let op = Operator::start("clock-skew", &ns).await;
        apply(
            &client,
            agency_credential(&ns, "billing", "corp", json!({"duration": "1h"})),
        )
        .await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;

        // Huawei said "1 h from my now", and its now is 2 minutes ahead of the cluster's: in
        // cluster time the credential lives 1 h, not 1 h 2 min.
        let secret = get_secret(&client, &ns, "billing").await.expect("Secret");
        let at = |key: &str| secret.annotations()[key].parse::<jiff::Timestamp>().expect(key);
        let lifetime = at(annotations::EXPIRES_AT).as_second() - at(annotations::ISSUED_AT).as_second();
        assert!(
            (3595..=3605).contains(&lifetime),
            "lifetime in cluster time: {lifetime}s"
        );
        let tc = get_tc(&client, &ns, "billing").await;
        assert!(
            tcred::api::condition::find(&tc.status.unwrap().conditions, "DurationAdjusted").is_none(),
            "a clock difference is not a shortened lifetime"
        );
        let skew = sample(&op.metrics().await, "tcred_huawei_clock_skew_seconds").expect("skew metric");
        assert!((118.0..=121.0).contains(&skew), "skew {skew}");

        // 20 minutes: outside Huawei's 15-minute signing window; the failure says why.
        sim.set_faults(json!({"clockOffsetSeconds": 1200})).await;
        rotate(&client, &ns, "billing", "now").await;
        let failing = wait_ready_reason(
            &client,
            &ns,
            "billing",
            reasons::RENEWAL_FAILING,
            Duration::from_secs(30),
        )
        .await;
        let message = ready_message(&failing);
        assert!(
            message.contains("ahead of this host's") && message.contains("NTP"),
            "{message}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_restarted_controller_mints_nothing_and_repairs_a_deleted_or_edited_secret() {
    with_namespace("restart-drift", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let mut op = Operator::start("restart-drift", &ns).await;
        apply(&client, agency_credential(&ns, "billing", "corp", json!({}))).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        let first = get_secret(&client, &ns, "billing").await.expect("Secret");
        assert_eq!(sim.mints_total().await, 1);

        // Restart: graceful stop, new process, full resync. Nothing is minted.
        let status = op.stop().expect("stopped");
        assert!(status.success(), "graceful exit, got {status:?}");
        let op2 = Operator::start("restart-drift", &ns).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(sim.mints_total().await, 1, "a restart must not mint");
        let same = get_secret(&client, &ns, "billing").await.expect("Secret");
        assert_eq!(
            same.resource_version(),
            first.resource_version(),
            "a restart must not rewrite the Secret"
        );

        // Delete the Secret: re-minted.
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
        secrets
            .delete("billing", &DeleteParams::default())
            .await
            .expect("delete");
        let recreated = wait_for(Duration::from_secs(30), "re-minted Secret", || async {
            get_secret(&client, &ns, "billing")
                .await
                .filter(|s| s.uid() != first.uid())
        })
        .await;
        assert_ne!(
            secret_text(&recreated, "HUAWEICLOUD_SDK_AK"),
            secret_text(&first, "HUAWEICLOUD_SDK_AK")
        );
        assert_eq!(sim.mints_total().await, 2);

        // Edit the Secret: restored with a fresh, consistent credential.
        let tampered = json!({"data": {"HUAWEICLOUD_SDK_SK": base64_of("not-the-secret-key")}});
        secrets
            .patch("billing", &PatchParams::default(), &Patch::Merge(&tampered))
            .await
            .expect("edit");
        let restored = wait_for(Duration::from_secs(30), "restored Secret", || async {
            let s = get_secret(&client, &ns, "billing").await?;
            (secret_text(&s, "HUAWEICLOUD_SDK_SK") != "not-the-secret-key").then_some(s)
        })
        .await;
        let http = HttpClient::new(Timeouts::default()).expect("http");
        sts::caller_identity(&http, &parse_endpoint(&sim.url).unwrap(), &key_from(&restored))
            .await
            .expect("the restored credential works");
        let ini = secret_text(&restored, "credentials");
        assert!(ini.contains(&format!("sk = {}", secret_text(&restored, "HUAWEICLOUD_SDK_SK"))));
        assert_eq!(sim.mints_total().await, 3);
        drop(op2);
    })
    .await;
}

/// A restart of a controller that holds many valid credentials writes nothing to the API server
/// for them: no Secret, no status, no Event (quiet when nothing is due). Two causes broke this:
/// expiries with sub-second parts (judged different from the status's whole seconds), and
/// reconciles that ran before the sources' cache had its first listing (a false SourceNotFound,
/// then Ready again: a new lastTransitionTime and the "kept" wording).
#[tokio::test]
async fn a_restart_with_many_valid_credentials_writes_no_status() {
    const N: usize = 40;
    with_namespace("restart-quiet", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let mut op = Operator::start("restart-quiet", &ns).await;
        for i in 0..N {
            apply(
                &client,
                agency_credential(&ns, &format!("c{i:02}"), "corp", json!({})),
            )
            .await;
        }
        let tcs = Api::<TemporaryCredential>::namespaced(client.clone(), &ns);
        wait_all_issued(&tcs, N, Duration::from_secs(60)).await;
        // Let the writes that follow an issue (the Secret's own watch event) settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before: Vec<TemporaryCredential> = tcs.list(&Default::default()).await.expect("list").items;
        let mints = sim.mints_total().await;
        let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns);
        let events_before: std::collections::BTreeSet<String> = events
            .list(&Default::default())
            .await
            .expect("events")
            .items
            .iter()
            .map(|e| e.name_any())
            .collect();

        let status = op.stop().expect("stopped");
        assert!(status.success(), "graceful exit, got {status:?}");
        let op2 = Operator::start("restart-quiet", &ns).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(sim.mints_total().await, mints, "a restart must not mint");
        let after = tcs.list(&Default::default()).await.expect("list").items;
        let changed: Vec<String> = before
            .iter()
            .filter_map(|b| {
                let a = after.iter().find(|a| a.name_any() == b.name_any())?;
                (a.resource_version() != b.resource_version()).then(|| {
                    format!(
                        "{}: {} -> {}",
                        b.name_any(),
                        serde_json::to_string(&b.status).unwrap_or_default(),
                        serde_json::to_string(&a.status).unwrap_or_default()
                    )
                })
            })
            .collect();
        assert!(
            changed.is_empty(),
            "a restart rewrote {} statuses:\n{}",
            changed.len(),
            changed.join("\n")
        );
        let new_events: Vec<String> = events
            .list(&Default::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| !events_before.contains(&e.name_any()))
            .map(|e| {
                format!(
                    "{:?} {:?}: {:?}",
                    e.reason,
                    e.regarding.and_then(|r| r.name),
                    e.note
                )
            })
            .collect();
        assert!(
            new_events.is_empty(),
            "a restart published Events: {new_events:#?}"
        );
        drop(op2);
    })
    .await;
}

/// A namespace at its limit of concurrent reconciles works off its waiting credentials most
/// urgent first — new ones in the order they were created — and a freed place wakes the next
/// waiter at once (docs/controller.md, `namespace_gate`). Before, waiters came back after 1–2 s
/// in an order set by a hash of their names. The first one admitted is whichever reconcile the
/// runtime starts first; every one after it must follow the order.
#[tokio::test]
async fn a_full_namespace_issues_its_waiting_credentials_in_order_of_urgency() {
    const N: usize = 8;
    with_namespace("gate-order", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        // Every mint takes a second, so the others are all waiting while one runs: at the start
        // every reconcile reaches the gate within a quarter second of the caches' first listing.
        sim.set_faults(json!({"latencyMs": 1000})).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        for i in 0..N {
            let spec = json!({"sessionName": format!("order-c{i}")});
            apply(&client, agency_credential(&ns, &format!("c{i}"), "corp", spec)).await;
        }
        let _op = Operator::start_with(
            "gate-order",
            OperatorOptions {
                namespace: Some(&ns),
                extra: vec!["--namespace-concurrency=1".into()],
                ..Default::default()
            },
        )
        .await;
        let tcs = Api::<TemporaryCredential>::namespaced(client.clone(), &ns);
        wait_all_issued(&tcs, N, Duration::from_secs(90)).await;
        let order: Vec<String> = sim.received().await["assumeRequests"]
            .as_array()
            .expect("assumeRequests")
            .iter()
            .filter_map(|r| r["sessionName"].as_str())
            .filter(|s| s.starts_with("order-"))
            .map(str::to_owned)
            .collect();
        assert_eq!(order.len(), N, "one mint each: {order:?}");
        let after_first = &order[1..];
        assert!(
            after_first.is_sorted(),
            "the waiting credentials were issued out of order: {order:?}"
        );
    })
    .await;
}

/// Waits until all `n` TemporaryCredentials of `tcs` are Ready with reason Issued.
async fn wait_all_issued(tcs: &Api<TemporaryCredential>, n: usize, timeout: Duration) {
    wait_for(timeout, "every credential issued", || async {
        let list = tcs.list(&Default::default()).await.ok()?;
        let issued = list
            .items
            .iter()
            .filter(|tc| ready_of(tc).is_some_and(|(_, reason)| reason == reasons::ISSUED))
            .count();
        (issued == n).then_some(())
    })
    .await;
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn keeps_the_last_good_secret_while_huawei_fails_and_walks_renewal_failing_to_expired() {
    with_namespace("huawei-outage", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        sim.set_lifetime(Some(30)).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("huawei-outage", &ns).await;
        apply(&client, agency_credential(&ns, "billing", "corp", json!({}))).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        let good = get_secret(&client, &ns, "billing").await.expect("Secret");

        // Huawei answers 5xx for a minute.
        sim.set_faults(json!({"errorRate": 1.0})).await;
        let outage = std::time::Instant::now();
        let failing = wait_ready_reason(
            &client,
            &ns,
            "billing",
            reasons::RENEWAL_FAILING,
            Duration::from_secs(40),
        )
        .await;
        assert!(failing.status.as_ref().unwrap().failed_attempts >= 1);
        wait_ready_reason(&client, &ns, "billing", reasons::EXPIRED, Duration::from_secs(40)).await;
        while outage.elapsed() < Duration::from_secs(60) {
            let s = get_secret(&client, &ns, "billing")
                .await
                .expect("the Secret is kept during the outage");
            assert_eq!(s.data, good.data, "the Secret must keep the last good credential");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let tc = get_tc(&client, &ns, "billing").await;
        let st = tc.status.unwrap();
        assert!(
            st.failed_attempts >= 2,
            "retried during the outage: {}",
            st.failed_attempts
        );
        assert!(st.last_failure_time.is_some());

        // Recovery.
        sim.set_faults(json!({"errorRate": 0.0})).await;
        let back =
            wait_ready_reason(&client, &ns, "billing", reasons::ROTATED, Duration::from_secs(90)).await;
        assert_eq!(back.status.as_ref().unwrap().failed_attempts, 0);
        let fresh = get_secret(&client, &ns, "billing").await.expect("Secret");
        assert_ne!(
            secret_text(&fresh, "HUAWEICLOUD_SDK_AK"),
            secret_text(&good, "HUAWEICLOUD_SDK_AK")
        );

        let events = wait_event(&client, &ns, "billing", reasons::ROTATED).await;
        for reason in [
            reasons::ISSUED,
            reasons::RENEWAL_FAILING,
            reasons::EXPIRED,
            reasons::ROTATED,
        ] {
            assert!(has_event(&events, reason), "missing a {reason} Event");
        }
    })
    .await;
}

#[tokio::test]
async fn invalid_manifests_are_refused_by_kubectl_apply_with_a_readable_message() {
    with_namespace("invalid-manifests", |_client, ns| async move {
        let cases = [
            (json!({"sourceRef": {"name": "corp"}}), "exactly one of permissionSet"),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY), "duration": "5m"}),
                "duration must be between 15m and 12h",
            ),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY), "duration": "1h", "renewBefore": "2h"}),
                "renewBefore must be shorter than duration",
            ),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY), "renewBeforePercentage": 95}),
                "less than or equal to 90",
            ),
            (json!({"sourceRef": {"name": "corp"}, "agencyUrn": "not-a-urn"}), "spec.agencyUrn"),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY),
                       "rolloutRestartTargets": [{"kind": "Deployment", "name": "web", "selector": {}}]}),
                "set exactly one of name or selector",
            ),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY),
                       "rolloutRestartTargets": [{"kind": "Deployment", "selector": {}}]}),
                "an empty selector would select every workload",
            ),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": "iam::0123456789:agency:ops"}),
                "agencyUrn must be iam::<account id: 32 lower-case hex digits>",
            ),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY), "secret": {"labels": {"bad key!": "x"}}}),
                "keys must be [prefix/]name",
            ),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY),
                       "secret": {"labels": {format!("{}.example.com/team", "a".repeat(250)): "x"}}}),
                "keys must be [prefix/]name",
            ),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY), "secret": {"labels": {"team": "not a value"}}}),
                "spec.secret.labels.team",
            ),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY), "secret": {"labels": {"team": "x".repeat(64)}}}),
                "spec.secret.labels.team",
            ),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY), "secret": {"annotations": {"-bad": "x"}}}),
                "keys must be [prefix/]name",
            ),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY), "secret": {"annotations": {"note": "x".repeat(4097)}}}),
                "spec.secret.annotations.note",
            ),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY),
                       "secret": {"annotations": (0..33).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}}),
                "spec.secret.annotations",
            ),
            (
                json!({"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY), "secret": {"name": "a..b"}}),
                "spec.secret.name",
            ),
        ];
        for (spec, expected) in cases {
            let manifest = json!({
                "apiVersion": "tcred.dev/v1alpha1", "kind": "TemporaryCredential",
                "metadata": {"name": "bad", "namespace": ns}, "spec": spec,
            });
            let (ok, output) = kubectl_with_input(&["apply", "-f", "-"], &manifest.to_string());
            assert!(!ok, "kubectl apply accepted {spec}");
            assert!(output.contains(expected), "message for {spec} should mention {expected:?}: {output}");
        }
        // Everything Kubernetes accepts on a Secret, the schema accepts too.
        let valid = json!({
            "apiVersion": "tcred.dev/v1alpha1", "kind": "TemporaryCredential",
            "metadata": {"name": "good", "namespace": ns},
            "spec": {"sourceRef": {"name": "corp"}, "agencyUrn": agency_urn(AGENCY), "secret": {
                "name": "billing.creds-1",
                "labels": {"app.kubernetes.io/part-of": "billing", "a": "", "X_y.z-1": "V_1.2-3",
                           format!("{}.example.com/{}", "a".repeat(63), "n".repeat(63)): "v".repeat(63)},
                "annotations": {"example.com/note": "x".repeat(4096), "plain": "any text: at all"},
            }},
        });
        let (ok, output) = kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], &valid.to_string());
        assert!(ok, "valid labels and annotations refused: {output}");
        let source = json!({
            "apiVersion": "tcred.dev/v1alpha1", "kind": "CredentialSource",
            "metadata": {"name": "bad", "namespace": ns},
            "spec": {"accessKey": {"region": "ap-southeast-1", "secretRef": {"name": "x"}}, "endpoints": {"sts": "http://sts.example.com"}},
        });
        let (ok, output) = kubectl_with_input(&["apply", "-f", "-"], &source.to_string());
        assert!(!ok);
        assert!(output.contains("endpoints must use https"), "{output}");
    })
    .await;
}

#[tokio::test]
async fn one_misconfigured_credential_is_reported_and_the_others_keep_being_served() {
    with_namespace("bad-neighbour", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("bad-neighbour", &ns).await;
        // Valid for the schema, wrong for an accessKey source.
        apply(
            &client,
            json!({
                "apiVersion": "tcred.dev/v1alpha1", "kind": "TemporaryCredential",
                "metadata": {"name": "wrong-mode", "namespace": ns},
                "spec": {"sourceRef": {"name": "corp"}, "permissionSet": {"accountId": ACCOUNT, "name": "ReadOnlyAccess"}},
            }),
        )
        .await;
        apply(&client, agency_credential(&ns, "missing-source", "nope", json!({}))).await;
        apply(&client, agency_credential(&ns, "good", "corp", json!({}))).await;

        wait_ready_reason(&client, &ns, "good", reasons::ISSUED, Duration::from_secs(30)).await;
        let bad = wait_ready_reason(&client, &ns, "wrong-mode", reasons::INVALID_SPEC, Duration::from_secs(30)).await;
        let msg = ready_message(&bad);
        assert!(msg.contains("set agencyUrn, not permissionSet"), "{msg}");
        wait_ready_reason(&client, &ns, "missing-source", reasons::SOURCE_NOT_FOUND, Duration::from_secs(30)).await;
        assert!(get_secret(&client, &ns, "wrong-mode").await.is_none());
        wait_event(&client, &ns, "wrong-mode", reasons::INVALID_SPEC).await;
        assert_eq!(sim.mints_total().await, 1, "only the good credential mints");

        // Fixing the source reference makes the other one work without a restart.
        access_key_source(&client, &ns, "nope", &sim).await;
        wait_ready_reason(&client, &ns, "missing-source", reasons::ISSUED, Duration::from_secs(30)).await;
    })
    .await;
}

#[tokio::test]
async fn the_rotate_annotation_forces_exactly_one_rotation() {
    with_namespace("rotate-annotation", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("rotate-annotation", &ns).await;
        apply(&client, agency_credential(&ns, "billing", "corp", json!({}))).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        rotate(&client, &ns, "billing", "2026-11-24T12:00:00Z").await;
        wait_ready_reason(&client, &ns, "billing", reasons::ROTATED, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(sim.mints_total().await, 2, "one forced rotation, no more");
        let tc = get_tc(&client, &ns, "billing").await;
        assert_eq!(
            tc.status.unwrap().last_rotate_request.as_deref(),
            Some("2026-11-24T12:00:00Z")
        );
    })
    .await;
}

#[tokio::test]
async fn rotating_many_credentials_at_once_mints_each_exactly_once() {
    const N: usize = 40;
    with_namespace("rotate-many", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("rotate-many", &ns).await;
        for i in 0..N {
            apply(
                &client,
                agency_credential(&ns, &format!("c{i}"), "corp", json!({})),
            )
            .await;
        }
        for i in 0..N {
            wait_ready_reason(
                &client,
                &ns,
                &format!("c{i}"),
                reasons::ISSUED,
                Duration::from_secs(60),
            )
            .await;
        }
        let api = Api::<TemporaryCredential>::namespaced(client.clone(), &ns);
        for round in 1..=3 {
            for i in 0..N {
                rotate(&client, &ns, &format!("c{i}"), &format!("round-{round}")).await;
            }
            wait_for(Duration::from_secs(60), "every credential rotated", || async {
                let list = api.list(&Default::default()).await.unwrap();
                list.items
                    .iter()
                    .all(|tc| {
                        tc.status.as_ref().and_then(|s| s.last_rotate_request.as_deref())
                            == Some(&format!("round-{round}"))
                    })
                    .then_some(())
            })
            .await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let list = api.list(&Default::default()).await.unwrap();
        for tc in &list.items {
            assert_eq!(tc.status.as_ref().unwrap().rotations, 4, "{}", tc.name_any());
        }
        assert_eq!(
            sim.mints_total().await,
            4 * N as u64,
            "one mint per credential per rotate request"
        );
    })
    .await;
}

#[tokio::test]
async fn no_secret_material_reaches_logs_events_or_status_even_at_trace_level() {
    with_namespace("no-leaks", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        sim.set_lifetime(Some(30)).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let op = Operator::start_with(
            "no-leaks",
            OperatorOptions {
                namespace: Some(&ns),
                rust_log: "trace",
                ..Default::default()
            },
        )
        .await;
        apply(&client, agency_credential(&ns, "billing", "corp", json!({}))).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        // a rotation and a failure, so every code path that writes messages runs
        wait_ready_reason(&client, &ns, "billing", reasons::ROTATED, Duration::from_secs(40)).await;
        sim.set_faults(json!({"errorRate": 1.0})).await;
        wait_ready_reason(
            &client,
            &ns,
            "billing",
            reasons::RENEWAL_FAILING,
            Duration::from_secs(40),
        )
        .await;
        sim.set_faults(json!({"errorRate": 0.0})).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ROTATED, Duration::from_secs(60)).await;

        let mut secrets: Vec<String> = vec![CI_BOT_SK.to_owned()];
        let s = get_secret(&client, &ns, "billing").await.expect("Secret");
        secrets.push(secret_text(&s, "HUAWEICLOUD_SDK_SK"));
        secrets.push(secret_text(&s, "HUAWEICLOUD_SDK_SECURITY_TOKEN"));

        let logs = op.logs();
        assert!(
            logs.len() > 10_000,
            "trace logging produced output ({} bytes)",
            logs.len()
        );
        let events = serde_json::to_string(&events_for(&client, &ns, "billing").await).unwrap();
        let status = serde_json::to_string(&get_tc(&client, &ns, "billing").await.status).unwrap();
        let metrics = op.metrics().await;
        for secret in &secrets {
            assert!(
                !logs.contains(secret.as_str()),
                "secret material in the operator log ({})",
                op.log.display()
            );
            assert!(!events.contains(secret.as_str()), "secret material in Events");
            assert!(!status.contains(secret.as_str()), "secret material in status");
            assert!(!metrics.contains(secret.as_str()), "secret material in metrics");
            // base64 of it, as a Secret body would carry it
            let b64 = base64_of(secret);
            assert!(
                !logs.contains(&b64),
                "base64 secret material in the operator log ({})",
                op.log.display()
            );
        }
    })
    .await;
}

fn python() -> std::path::PathBuf {
    std::env::var_os("TCRED_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// Runs conformance/load_secret.py with `envs`; returns its JSON answer.
fn load_with_huawei_sdk(mode: &str, sim: &Simulator, envs: &[(&str, String)]) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/load_secret.py");
    let mut cmd = std::process::Command::new(python());
    cmd.arg(script).args([mode, &sim.url]);
    for k in [
        "HUAWEICLOUD_SDK_AK",
        "HUAWEICLOUD_SDK_SK",
        "HUAWEICLOUD_SDK_SECURITY_TOKEN",
        "HUAWEICLOUD_SDK_CREDENTIALS_FILE",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("HOME", std::env::temp_dir());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e} (make venv)", python().display()));
    assert!(
        out.status.success(),
        "Huawei SDK ({mode}) failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json line")
}

#[tokio::test]
async fn huaweis_python_sdk_loads_the_secret_as_environment_and_as_credentials_file() {
    with_namespace("python-sdk", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("python-sdk", &ns).await;
        apply(
            &client,
            agency_credential(&ns, "billing", "corp", json!({"sessionName": "python-app"})),
        )
        .await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        let secret = get_secret(&client, &ns, "billing").await.expect("Secret");
        let ak = secret_text(&secret, "HUAWEICLOUD_SDK_AK");
        let principal = format!("sts::{ACCOUNT}::assumed-agency:{AGENCY}/python-app");

        // envFrom: secretRef — every key becomes an environment variable.
        let env: Vec<(&str, String)> = SECRET_KEYS[..4]
            .iter()
            .map(|k| (*k, secret_text(&secret, k)))
            .collect();
        let got = load_with_huawei_sdk("env", &sim, &env);
        assert_eq!(got["ak"], ak.as_str());
        assert_eq!(got["principal_urn"], principal.as_str());

        // a Secret volume: the `credentials` key as the SDK's INI file
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("credentials");
        std::fs::write(&file, secret_text(&secret, "credentials")).expect("write file");
        let file_env = [("HUAWEICLOUD_SDK_CREDENTIALS_FILE", file.display().to_string())];
        for mode in ["file", "profile"] {
            let got = load_with_huawei_sdk(mode, &sim, &file_env);
            assert_eq!(got["ak"], ak.as_str(), "{mode}");
            assert_eq!(got["principal_urn"], principal.as_str(), "{mode}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_secret_write_the_api_server_refuses_costs_no_mint() {
    with_namespace("write-refused", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        // The namespace may hold no more Secrets than the access key Secret it has: the
        // credential's Secret is refused by the quota, in the dry run as in the real write.
        let quotas = secret_quota(&client, &ns, 1).await;
        let _op = Operator::start("write-refused", &ns).await;
        apply(&client, agency_credential(&ns, "billing", "corp", json!({}))).await;
        let tc = wait_ready_reason(
            &client,
            &ns,
            "billing",
            reasons::SECRET_WRITE_FAILED,
            Duration::from_secs(30),
        )
        .await;
        assert!(
            ready_message(&tc).contains("nothing was minted") && ready_message(&tc).contains("quota"),
            "{}",
            ready_message(&tc)
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            sim.mints_total().await,
            0,
            "a Secret that cannot be written costs no mint"
        );
        assert!(has_event(
            &events_for(&client, &ns, "billing").await,
            reasons::SECRET_WRITE_FAILED
        ));

        // Room again: one mint, written (a spec edit retries at once rather than after backoff).
        quotas
            .delete("secrets", &DeleteParams::default())
            .await
            .expect("delete quota");
        let edit = json!({"spec": {"secret": {"labels": {"team": "billing"}}}});
        Api::<TemporaryCredential>::namespaced(client.clone(), &ns)
            .patch("billing", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .expect("edit");
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(90)).await;
        assert_eq!(sim.mints_total().await, 1);
    })
    .await;
}

#[tokio::test]
async fn a_secret_created_while_tcred_mints_is_not_adopted() {
    with_namespace("no-adoption", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        // Minting takes 4 s: time enough for someone else to create a Secret of that name.
        sim.set_faults(json!({"latencyMs": 4000, "scope": "mint"})).await;
        let _op = Operator::start("no-adoption", &ns).await;
        apply(&client, agency_credential(&ns, "billing", "corp", json!({}))).await;
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
        sim.wait_mint_in_flight().await;
        create_secret(&client, &ns, "billing", &[("owner", "someone-else")]).await;

        let tc = wait_for(Duration::from_secs(40), "a SecretConflict", || async {
            let tc = get_tc(&client, &ns, "billing").await;
            (ready_of(&tc).map(|(_, r)| r).as_deref() == Some(reasons::SECRET_CONFLICT)).then_some(tc)
        })
        .await;
        let theirs = secrets.get("billing").await.expect("their Secret");
        assert_eq!(secret_text(&theirs, "owner"), "someone-else");
        assert!(
            theirs
                .data
                .as_ref()
                .is_some_and(|d| !d.contains_key("HUAWEICLOUD_SDK_AK")),
            "tcred wrote into a Secret it did not create"
        );
        assert!(
            theirs.owner_references().is_empty() && !theirs.labels().contains_key("tcred.dev/credential"),
            "tcred adopted a Secret it did not create"
        );
        assert!(
            ready_message(&tc).contains("not managed by tcred"),
            "{}",
            ready_message(&tc)
        );
    })
    .await;
}

#[tokio::test]
async fn a_secret_write_that_fails_after_the_mint_is_retried_without_minting_again() {
    with_namespace("write-after-mint", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        // Room for one more Secret: the dry run before the mint passes. Minting takes 4 s, and in
        // that time another Secret takes the room, so the real write is refused after the mint.
        secret_quota(&client, &ns, 2).await;
        sim.set_faults(json!({"latencyMs": 4000, "scope": "mint"})).await;
        let _op = Operator::start("write-after-mint", &ns).await;
        apply(&client, agency_credential(&ns, "billing", "corp", json!({}))).await;
        // (the dry run passed: the mint is under way)
        sim.wait_mint_in_flight().await;
        create_secret(&client, &ns, "filler", &[("k", "v")]).await;
        let tc = wait_ready_reason(
            &client,
            &ns,
            "billing",
            reasons::SECRET_WRITE_FAILED,
            Duration::from_secs(30),
        )
        .await;
        assert!(
            ready_message(&tc).contains("retries only the write"),
            "{}",
            ready_message(&tc)
        );
        assert_eq!(sim.mints_total().await, 1);

        // Room again: the credential minted before is written, nothing is minted again.
        sim.set_faults(json!({"latencyMs": 0})).await;
        Api::<Secret>::namespaced(client.clone(), &ns)
            .delete("filler", &DeleteParams::default())
            .await
            .expect("delete filler");
        let tc = wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(150)).await;
        let secret = get_secret(&client, &ns, "billing").await.expect("Secret");
        assert_eq!(
            Some(secret_text(&secret, "HUAWEICLOUD_SDK_AK")),
            tc.status.and_then(|s| s.access_key_id)
        );
        assert_eq!(sim.mints_total().await, 1, "the write was retried, not the mint");
    })
    .await;
}

/// A ResourceQuota `secrets` allowing `hard` Secrets in `ns`, once the quota controller has
/// counted the one Secret the namespace holds.
async fn secret_quota(
    client: &kube::Client,
    ns: &str,
    hard: u32,
) -> Api<k8s_openapi::api::core::v1::ResourceQuota> {
    apply(
        client,
        json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "secrets", "namespace": ns},
            "spec": {"hard": {"count/secrets": hard.to_string()}},
        }),
    )
    .await;
    let quotas = Api::<k8s_openapi::api::core::v1::ResourceQuota>::namespaced(client.clone(), ns);
    wait_for(Duration::from_secs(30), "the quota counts the Secret", || async {
        let q = quotas.get("secrets").await.ok()?.status?;
        (q.used?.get("count/secrets")?.0 == "1" && q.hard?.contains_key("count/secrets")).then_some(())
    })
    .await;
    quotas
}

/// A credential served to pods (`spec.podIdentity`) is renewed at least 50 minutes before it
/// expires, so Huawei's SDKs (which fetch again under 40 minutes) never see one that near its
/// end; one whose lifetime cannot allow that says so and is still issued and renewed.
#[tokio::test]
async fn credentials_served_to_pods_renew_ahead_of_the_sdk_threshold_or_say_why_not() {
    with_namespace("served-freshness", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("served-freshness", &ns).await;
        let served =
            |duration: &str| json!({"duration": duration, "podIdentity": {"serviceAccounts": ["app"]}});
        // Both ask to renew 10 minutes ahead; only the served one is moved to 50.
        let mut two_hours = served("2h");
        two_hours["renewBefore"] = json!("10m");
        apply(&client, agency_credential(&ns, "two-hours", "corp", two_hours)).await;
        apply(
            &client,
            agency_credential(
                &ns,
                "plain",
                "corp",
                json!({"duration": "2h", "renewBefore": "10m"}),
            ),
        )
        .await;
        let tc = wait_ready_reason(
            &client,
            &ns,
            "two-hours",
            reasons::ISSUED,
            Duration::from_secs(30),
        )
        .await;
        let status = tc.status.expect("status");
        let (expires, renewal) = (status.expires_at.unwrap().0, status.renewal_time.unwrap().0);
        assert!(
            expires.duration_since(renewal) >= jiff::SignedDuration::from_mins(50),
            "served: renewal {renewal} is less than 50 min before expiry {expires}"
        );
        assert!(tcred::api::condition::find(&status.conditions, "DurationAdjusted").is_none());
        // The same credential not served keeps its 10 minutes (plus a spread of at most 12).
        let plain = wait_ready_reason(&client, &ns, "plain", reasons::ISSUED, Duration::from_secs(30)).await;
        let plain = plain.status.expect("status");
        let plain_before = plain
            .expires_at
            .unwrap()
            .0
            .duration_since(plain.renewal_time.unwrap().0);
        assert!(
            plain_before <= jiff::SignedDuration::from_mins(22),
            "{plain_before:?}"
        );

        // Simulated sessions of 30 s cannot keep 50 minutes: reported, issued and served anyway.
        sim.set_lifetime(Some(30)).await;
        apply(&client, agency_credential(&ns, "short", "corp", served("1h"))).await;
        let tc = wait_ready_reason(&client, &ns, "short", reasons::ISSUED, Duration::from_secs(30)).await;
        let adjusted =
            tcred::api::condition::find(&tc.status.as_ref().unwrap().conditions, "DurationAdjusted")
                .expect("DurationAdjusted condition");
        // Huawei also shortened the requested hour: that reason wins, and names the SDK shortfall.
        assert_eq!(adjusted.reason, reasons::LIFETIME_SHORTENED);
        assert!(
            adjusted.message.contains("40-minute refresh threshold"),
            "{}",
            adjusted.message
        );
        // A 15-minute session, issued as asked: below the threshold, and only that is reported.
        sim.set_lifetime(None).await;
        apply(
            &client,
            agency_credential(&ns, "short-asked", "corp", served("15m")),
        )
        .await;
        let tc = wait_ready_reason(
            &client,
            &ns,
            "short-asked",
            reasons::ISSUED,
            Duration::from_secs(30),
        )
        .await;
        let conditions = &tc.status.as_ref().unwrap().conditions;
        let adjusted = tcred::api::condition::find(conditions, "DurationAdjusted").expect("DurationAdjusted");
        assert_eq!(adjusted.reason, reasons::LIFETIME_BELOW_SDK_THRESHOLD);
        assert!(
            adjusted.message.contains("40-minute refresh threshold"),
            "{}",
            adjusted.message
        );
    })
    .await;
}

/// The distinct resourceVersions `ns/name` of kind `K` goes through while watched (each is one
/// write to it), collected until the returned task is aborted.
fn versions_of<K>(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> std::sync::Arc<std::sync::Mutex<BTreeSet<String>>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    use futures::TryStreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let seen = std::sync::Arc::<std::sync::Mutex<BTreeSet<String>>>::default();
    let api = Api::<K>::namespaced(client.clone(), ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let out = seen.clone();
    tokio::spawn(async move {
        let stream = watcher(api, config).default_backoff().touched_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(o)) = stream.try_next().await {
            if let Some(rv) = o.resource_version() {
                out.lock().unwrap().insert(rv);
            }
        }
    });
    seen
}

#[tokio::test]
async fn a_rotation_writes_the_secret_once_its_status_once_and_one_event() {
    // docs/benchmarks.md, writes per rotation: tcred's own Secret write wakes no second reconcile,
    // and a reconcile that finds the credential it just wrote writes nothing.
    with_namespace("rotation-writes", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        sim.set_lifetime(Some(30)).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("rotation-writes", &ns).await;
        apply(&client, agency_credential(&ns, "billing", "corp", json!({}))).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let first = get_tc(&client, &ns, "billing").await.status.unwrap().rotations;
        let tc_versions = versions_of::<TemporaryCredential>(&client, &ns, "billing");
        let secret_versions = versions_of::<Secret>(&client, &ns, "billing");
        let events_before = events_for(&client, &ns, "billing").await.len();
        tokio::time::sleep(Duration::from_secs(1)).await;
        wait_for(Duration::from_secs(90), "two rotations", || async {
            let r = get_tc(&client, &ns, "billing").await.status.unwrap().rotations;
            (r >= first + 2).then_some(())
        })
        .await;
        // Anything a rotation still wrote after its status would show up here (the next rotation
        // is ~20 s away).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rotations = (get_tc(&client, &ns, "billing").await.status.unwrap().rotations - first) as usize;
        // The first version seen of each is the one before the window.
        let status_writes = tc_versions.lock().unwrap().len() - 1;
        let secret_writes = secret_versions.lock().unwrap().len() - 1;
        let events = events_for(&client, &ns, "billing").await.len() - events_before;
        assert_eq!(
            (secret_writes, status_writes, events),
            (rotations, rotations, rotations),
            "(Secret writes, status writes, Events) for {rotations} rotations"
        );
    })
    .await;
}
