//! Image pull Secrets for SWR (docs/registry.md) on the real control plane with the simulator:
//! the Secret is a `kubernetes.io/dockerconfigjson` the API server accepts, holding a login the
//! simulator issued for `swr.<region>.myhuaweicloud.com` and nothing else; it rotates ahead of
//! the login's expiry; a restart re-mints nothing; a mode switch and absurd validities are
//! refused by the schema; a Secret of another type is reported, never clobbered; and a tenant
//! whose registry calls fail is reported with backoff while a victim namespace keeps working.

mod support;

use std::{collections::BTreeSet, time::Duration};

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use support::*;
use tcred::api::condition::reasons;

const REGION: &str = "cn-north-4";
const REGISTRY: &str = "swr.cn-north-4.myhuaweicloud.com";
const PULL_TYPE: &str = "kubernetes.io/dockerconfigjson";

/// An accessKey CredentialSource `name` whose STS and SWR endpoints are the simulator.
async fn registry_source(client: &kube::Client, ns: &str, name: &str, sim: &Simulator) {
    create_labelled_secret(
        client,
        ns,
        &format!("{name}-ak"),
        &bound_to("CredentialSource", name),
        &[("accessKeyId", CI_BOT_AK), ("secretAccessKey", CI_BOT_SK)],
    )
    .await;
    let spec = json!({
        "accessKey": {"region": "ap-southeast-1", "secretRef": {"name": format!("{name}-ak")}},
        "endpoints": {"sts": sim.url, "swr": sim.url},
    });
    credential_source(client, ns, name, spec).await;
}

const SHARD_LABEL: &str = "tcred.dev/shard";
const ABUSE_SHARD: &str = "swr-abuse";

/// `credential` labelled into the abuse test's shard.
fn in_abuse_shard(mut credential: Value) -> Value {
    credential["metadata"]["labels"] = json!({SHARD_LABEL: ABUSE_SHARD});
    credential
}

fn pull_credential(ns: &str, name: &str, pull: Value) -> Value {
    agency_credential(ns, name, "corp", json!({"imagePullSecret": pull}))
}

/// The one login of a `.dockerconfigjson`: (registry host, user, password), after checking that
/// `auth` is base64 of `user:password`.
fn login_of(secret: &Secret) -> (String, String, String) {
    let config: Value =
        serde_json::from_str(&secret_text(secret, ".dockerconfigjson")).expect(".dockerconfigjson is JSON");
    let auths = config["auths"].as_object().expect("auths");
    assert_eq!(auths.len(), 1, "exactly one registry: {:?}", auths.keys());
    let (host, entry) = auths.iter().next().expect("one registry");
    let auth = base64::engine::general_purpose::STANDARD
        .decode(entry["auth"].as_str().expect("auth"))
        .expect("auth is base64");
    let auth = String::from_utf8(auth).expect("auth is text");
    let (user, password) = auth.split_once(':').expect("auth is user:password");
    assert_eq!(entry["username"], user);
    assert_eq!(entry["password"], password);
    (host.clone(), user.to_owned(), password.to_owned())
}

/// Whether the simulator issued this login and still honours it.
async fn sim_honours(sim: &Simulator, user: &str, password: &str) -> bool {
    let resp: Value = reqwest::Client::new()
        .post(format!("{}/control/swr/verify", sim.url))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .expect("verify call")
        .json()
        .await
        .expect("verify answer");
    resp["valid"] == true
}

async fn create_secret_calls(sim: &Simulator) -> u64 {
    sim.stats().await["requestsByOperation"]["CreateSecret"]
        .as_u64()
        .unwrap_or(0)
}

fn expires_at(secret: &Secret) -> jiff::Timestamp {
    secret_text(secret, "expiresAt")
        .parse()
        .expect("expiresAt is RFC 3339")
}

#[tokio::test]
async fn the_pull_secret_holds_a_valid_swr_login_for_the_region_and_rotates_ahead_of_its_expiry() {
    with_namespace("swr-rotate", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        // Every credential and login lasts 30 s: rotations come every ~20 s.
        sim.set_lifetime(Some(30)).await;
        registry_source(&client, &ns, "corp", &sim).await;
        let op = Operator::start("swr-rotate", &ns).await;
        apply(
            &client,
            pull_credential(&ns, "pull", json!({"region": REGION, "validity": "6h"})),
        )
        .await;
        let tc = wait_ready_reason(&client, &ns, "pull", reasons::ISSUED, Duration::from_secs(30)).await;

        let secret = get_secret(&client, &ns, "pull").await.expect("the Secret");
        // The API server validated it as a docker config of this type (it refuses a malformed one).
        assert_eq!(secret.type_.as_deref(), Some(PULL_TYPE));
        let keys: BTreeSet<_> = secret.data.as_ref().expect("data").keys().cloned().collect();
        assert_eq!(
            keys,
            BTreeSet::from([".dockerconfigjson".to_owned(), "expiresAt".to_owned()]),
            "only the login and its expiry: never the AK/SK/token"
        );
        let (host, user, password) = login_of(&secret);
        assert_eq!(host, REGISTRY);
        assert!(user.starts_with(&format!("{REGION}@")), "{user}");
        assert!(
            sim_honours(&sim, &user, &password).await,
            "a login the simulator issued"
        );
        let status = tc.status.clone().expect("status");
        assert_eq!(status.expires_at.as_ref().map(|t| t.0), Some(expires_at(&secret)));
        // No secret material on the status or in Events.
        let status_text = serde_json::to_string(&status).expect("status JSON");
        assert!(!status_text.contains(&password));
        for e in events_for(&client, &ns, "pull").await {
            assert!(!e.note.unwrap_or_default().contains(&password));
        }

        // Watch for ~50 s: always a login that has not expired and that the simulator honours,
        // replaced ahead of each expiry.
        let mut users = BTreeSet::from([user]);
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(50) {
            let secret = get_secret(&client, &ns, "pull").await.expect("Secret");
            assert!(
                expires_at(&secret) > jiff::Timestamp::now(),
                "the Secret held an expired login"
            );
            let (host, user, password) = login_of(&secret);
            assert_eq!(host, REGISTRY);
            if users.insert(user.clone()) {
                assert!(sim_honours(&sim, &user, &password).await, "rotated login {user}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(users.len() >= 3, "rotated ahead of expiry: {users:?}");
        // Each login is counted as one, under its source.
        let metrics = op.metrics().await;
        let logins = sample(
            &metrics,
            &format!("tcred_registry_login_total{{source=\"{ns}/corp\",result=\"success\"}}"),
        )
        .unwrap_or(0.0);
        assert!(
            logins >= users.len() as f64,
            "{logins} logins counted for {users:?}"
        );
        let tc = get_tc(&client, &ns, "pull").await;
        assert_eq!(ready_of(&tc).map(|(s, _)| s).as_deref(), Some("True"));
    })
    .await;
}

#[tokio::test]
async fn a_restarted_controller_reads_the_schedule_back_and_mints_nothing() {
    with_namespace("swr-restart", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        registry_source(&client, &ns, "corp", &sim).await;
        let mut op = Operator::start("swr-restart", &ns).await;
        apply(&client, pull_credential(&ns, "pull", json!({"region": REGION}))).await;
        wait_ready_reason(&client, &ns, "pull", reasons::ISSUED, Duration::from_secs(30)).await;
        let before = get_secret(&client, &ns, "pull").await.expect("Secret");
        let (calls, mints) = (create_secret_calls(&sim).await, sim.mints_total().await);
        assert_eq!((calls, mints), (1, 1));
        // The login lasts as long as the 1 h credential that obtained it (validity unset).
        let left = expires_at(&before).duration_since(jiff::Timestamp::now());
        assert!(left > jiff::SignedDuration::from_mins(55), "{left}");

        op.stop();
        let _op = Operator::start("swr-restart-2", &ns).await;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let after = get_secret(&client, &ns, "pull").await.expect("Secret");
        assert_eq!(login_of(&after), login_of(&before), "the same login is kept");
        assert_eq!(create_secret_calls(&sim).await, calls);
        assert_eq!(sim.mints_total().await, mints);
    })
    .await;
}

#[tokio::test]
async fn mode_switches_absurd_validities_and_secrets_of_another_type_are_refused_or_reported() {
    with_namespace("swr-refuse", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        registry_source(&client, &ns, "corp", &sim).await;

        // The schema refuses what can never work.
        for (pull, expected) in [
            (json!({"validity": "25h"}), "between 15m and 24h"),
            (json!({"validity": "1m"}), "between 15m and 24h"),
            (json!({"region": "../../evil"}), "region"),
        ] {
            let e = try_apply(&client, &pull_credential(&ns, "absurd", pull))
                .await
                .expect_err("refused");
            assert!(e.contains(expected), "{e}");
        }
        let mut served = pull_credential(&ns, "served", json!({}));
        served["spec"]["podIdentity"] = json!({"serviceAccounts": ["default"]});
        let e = try_apply(&client, &served).await.expect_err("refused");
        assert!(e.contains("podIdentity"), "{e}");
        // Consumer formats shape an SDK credential's Secret; a pull Secret holds only the login.
        let mut formatted = pull_credential(&ns, "formatted", json!({}));
        formatted["spec"]["secret"] = json!({"formats": ["aws"]});
        let e = try_apply(&client, &formatted).await.expect_err("refused");
        assert!(e.contains("secret.formats"), "{e}");

        let _op = Operator::start("swr-refuse", &ns).await;
        // A credential cannot switch modes: a Secret's type is immutable.
        apply(&client, agency_credential(&ns, "plain", "corp", json!({}))).await;
        wait_ready_reason(&client, &ns, "plain", reasons::ISSUED, Duration::from_secs(30)).await;
        let e = try_apply(&client, &pull_credential(&ns, "plain", json!({})))
            .await
            .expect_err("adding imagePullSecret is refused");
        assert!(e.contains("cannot be added or removed"), "{e}");
        apply(&client, pull_credential(&ns, "pulling", json!({}))).await;
        wait_ready_reason(&client, &ns, "pulling", reasons::ISSUED, Duration::from_secs(30)).await;
        let e = try_apply(&client, &agency_credential(&ns, "pulling", "corp", json!({})))
            .await
            .expect_err("removing imagePullSecret is refused");
        assert!(e.contains("cannot be added or removed"), "{e}");

        // A tcred-labelled Opaque Secret (say, retained from a deleted credential of the same
        // name) is reported, not replaced, and costs no mint.
        create_labelled_secret(
            &client,
            &ns,
            "left-over",
            &[
                ("app.kubernetes.io/managed-by", "tcred"),
                ("tcred.dev/credential", "left-over"),
            ],
            &[("HUAWEICLOUD_SDK_AK", "OLD")],
        )
        .await;
        let calls = create_secret_calls(&sim).await;
        apply(&client, pull_credential(&ns, "left-over", json!({}))).await;
        let tc = wait_ready_reason(
            &client,
            &ns,
            "left-over",
            reasons::SECRET_CONFLICT,
            Duration::from_secs(30),
        )
        .await;
        let message = ready_message(&tc);
        assert!(
            message.contains("type Opaque") && message.contains(PULL_TYPE),
            "{message}"
        );
        wait_event(&client, &ns, "left-over", reasons::SECRET_CONFLICT).await;
        let kept = get_secret(&client, &ns, "left-over").await.expect("Secret");
        assert_eq!(kept.type_.as_deref(), Some("Opaque"));
        assert_eq!(secret_text(&kept, "HUAWEICLOUD_SDK_AK"), "OLD");
        assert_eq!(create_secret_calls(&sim).await, calls);
    })
    .await;
}

#[tokio::test]
async fn a_tenant_whose_registry_logins_fail_is_reported_with_backoff_and_a_victim_keeps_working() {
    let admin = admin().await;
    let system = create_namespace(&admin, "swr-abuse-system", &[]).await;
    let tenant = create_namespace(&admin, "swr-abuse-tenant", &[]).await;
    let victim = create_namespace(&admin, "swr-abuse-victim", &[]).await;
    let sim = Simulator::start(&default_sim_config()).await;
    for ns in [&tenant, &victim] {
        registry_source(&admin, ns, "corp", &sim).await;
    }
    // Every SWR call fails (500 and 503 alternately); STS keeps working.
    sim.set_faults(json!({"errorRate": 1.0, "scope": "swr"})).await;
    // A cluster-wide operator, narrowed by a shard selector (docs/sharding.md) to this test's
    // credentials: the other tests of this file run at the same time with operators of their own.
    let op = Operator::start_with(
        "swr-abuse",
        OperatorOptions {
            namespace: None,
            lease_namespace: Some(&system),
            extra: vec![format!("--shard-selector={SHARD_LABEL}={ABUSE_SHARD}")],
            ..OperatorOptions::production()
        },
    )
    .await;
    for i in 0..4 {
        apply(
            &admin,
            in_abuse_shard(pull_credential(
                &tenant,
                &format!("pull-{i}"),
                json!({"region": REGION}),
            )),
        )
        .await;
    }
    apply(
        &admin,
        in_abuse_shard(agency_credential(&victim, "app", "corp", json!({}))),
    )
    .await;
    wait_ready_reason(&admin, &victim, "app", reasons::ISSUED, Duration::from_secs(30)).await;

    for i in 0..4 {
        let name = format!("pull-{i}");
        let tc = wait_ready_reason(
            &admin,
            &tenant,
            &name,
            reasons::MINT_FAILED,
            Duration::from_secs(30),
        )
        .await;
        let message = ready_message(&tc);
        assert!(
            message.contains("CreateSecret") && message.contains("server"),
            "{message}"
        );
        wait_event(&admin, &tenant, &name, reasons::MINT_FAILED).await;
        assert!(get_secret(&admin, &tenant, &name).await.is_none());
    }
    // No mint loop: backoff spaces the attempts out (transient: 5 s, doubling).
    let start = create_secret_calls(&sim).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = create_secret_calls(&sim).await - start;
    assert!(
        during <= 4 * 5,
        "{during} CreateSecret calls in 30 s for 4 credentials"
    );
    // The failures are counted as SWR logins failed by the server (and as failed mints), under
    // the tenant's source only.
    let metrics = op.metrics().await;
    let failed = sample(
        &metrics,
        &format!("tcred_registry_login_total{{source=\"{tenant}/corp\",result=\"server\"}}"),
    )
    .unwrap_or(0.0);
    assert!(failed >= 4.0, "{failed} failed logins counted:\n{metrics}");
    assert!(
        !metrics.contains(&format!("tcred_registry_login_total{{source=\"{victim}/corp\"")),
        "the victim's plain credential made no SWR login:\n{metrics}"
    );

    // Answers that cannot be trusted are refused the same way: malformed JSON, no expiry header.
    sim.set_faults(json!({"errorRate": 0.0})).await;
    for (name, hostile, expected) in [
        (
            "malformed",
            json!({"operations": ["CreateSecret"], "malformedJson": true}),
            "JSON",
        ),
        (
            "no-expiry",
            json!({"operations": ["CreateSecret"], "expiration": 12}),
            "X-Swr-Expireat",
        ),
    ] {
        sim.set_hostile(hostile).await;
        apply(
            &admin,
            in_abuse_shard(pull_credential(&tenant, name, json!({"region": REGION}))),
        )
        .await;
        let tc = wait_ready_reason(
            &admin,
            &tenant,
            name,
            reasons::MINT_FAILED,
            Duration::from_secs(30),
        )
        .await;
        let message = ready_message(&tc);
        assert!(
            message.contains("invalid_response") && message.contains(expected),
            "{message}"
        );
    }
    sim.set_hostile(json!({})).await;

    let victim_tc = get_tc(&admin, &victim, "app").await;
    assert_eq!(ready_of(&victim_tc).map(|(s, _)| s).as_deref(), Some("True"));
    let secret: Secret = Api::namespaced(admin.clone(), &victim)
        .get("app")
        .await
        .expect("victim Secret");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert!(secret.annotations().contains_key("tcred.dev/expires-at"));
    for ns in [&system, &tenant, &victim] {
        delete_namespace(&admin, ns).await;
    }
}
