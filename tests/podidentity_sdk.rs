//! Proof with Huawei's own code (issue 12): long-lived programs on Huawei's Python SDK and Go SDK
//! (`conformance/consumer_podidentity.py`, `conformance/consumer-go`), each with ONE client for its
//! whole life, make signed STS calls to the simulator with credentials fetched by the SDKs' own pod
//! identity providers through `tcred agent` from the operator's credentials endpoint, authenticated
//! with real TokenRequest tokens (audience `tcred.dev`) that the test rotates as the kubelet does.
//! Across at least three rotations: no failed call, no signature failure, no restart. And the
//! refusals hold through the agent: another ServiceAccount, a wrong audience, an expired token, a
//! deleted credential.

#[path = "support/sdk.rs"]
mod sdk;
mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube::{Api, Client, api::DeleteParams};
use sdk::*;
use serde_json::{Value, json};
use support::{
    podidentity::{service_account, token_for},
    *,
};

/// Issued lifetime at the simulator: short, so that rotations come every few tens of seconds. Far
/// below the SDKs' 40-minute refresh threshold, so every signed call fetches from the agent (which
/// caches nothing that close to expiry) — the endpoint is exercised on every call.
const LIFETIME_SECONDS: u64 = 60;
/// At least three rotations: four distinct access keys seen by each SDK.
const KEYS_WANTED: usize = 4;
const CALL_INTERVAL: Duration = Duration::from_secs(1);
/// How often the test hands the consumers a fresh token, as the kubelet rotates a projected one.
const TOKEN_ROTATION: Duration = Duration::from_secs(20);

/// The operator with its credentials endpoint, the agent in front, the simulator, and credential
/// `app-creds` that ServiceAccount `app` may fetch.
struct Rig {
    sim: Simulator,
    _tls: Tls,
    operator: Operator,
    agent: Agent,
}

async fn rig(test: &str, client: &Client, ns: &str) -> Rig {
    let sim = Simulator::start(&default_sim_config()).await;
    sim.set_lifetime(Some(LIFETIME_SECONDS)).await;
    access_key_source(client, ns, "ci", &sim).await;
    for sa in ["app", "other"] {
        service_account(client, ns, sa).await;
    }
    let pod_identity = json!({"podIdentity": {"serviceAccounts": ["app"]}});
    apply(client, agency_credential(ns, "app-creds", "ci", pod_identity)).await;

    let tls = tls_for_loopback();
    let port = free_port();
    let operator = Operator::start_with(
        test,
        OperatorOptions {
            namespace: Some(ns),
            extra: vec![
                format!("--credentials-endpoint-address=127.0.0.1:{port}"),
                format!("--tls-cert-file={}", tls.cert.display()),
                format!("--tls-key-file={}", tls.key.display()),
            ],
            ..Default::default()
        },
    )
    .await;
    let agent = Agent::start(test, &format!("https://127.0.0.1:{port}"), &tls.ca).await;
    Rig {
        sim,
        _tls: tls,
        operator,
        agent,
    }
}

/// Waits until `uri` serves a credential to `token` (the first mint, the endpoint's caches).
async fn wait_served(uri: &str, token: &str) -> Value {
    wait_for(
        Duration::from_secs(60),
        "the credential served through the agent",
        || async {
            let (status, body) = fetch_credentials(uri, token).await;
            (status == 200).then_some(body)
        },
    )
    .await
}

async fn sim_events(sim: &Simulator, since: u64) -> Vec<Value> {
    reqwest::get(format!("{}/control/events?since={since}", sim.url))
        .await
        .expect("events")
        .json::<Vec<Value>>()
        .await
        .expect("events json")
}

async fn last_seq(sim: &Simulator) -> u64 {
    sim_events(sim, 0)
        .await
        .last()
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or(0)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs both consumers until each has seen `KEYS_WANTED` access keys, rotating the token file on
/// the way; panics as soon as one fails or exits. Returns how many token rotations happened.
async fn run_until_rotated(
    client: &Client,
    ns: &str,
    token_file: &std::path::Path,
    consumers: &mut [Consumer],
) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(360);
    let mut last_token = Instant::now();
    let mut token_rotations = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        for c in consumers.iter_mut() {
            let lines = c.lines();
            assert!(
                failures(&lines).is_empty(),
                "{:?} failed a call: {:?}",
                c.sdk,
                failures(&lines)
            );
            assert!(c.running(), "{:?} consumer exited: {}", c.sdk, c.stderr());
        }
        if consumers
            .iter()
            .all(|c| access_keys(&c.lines()).len() >= KEYS_WANTED)
        {
            return token_rotations;
        }
        assert!(
            Instant::now() < deadline,
            "no {KEYS_WANTED} access keys within 6 min: {:?}",
            consumers
                .iter()
                .map(|c| (c.sdk, access_keys(&c.lines()).len()))
                .collect::<Vec<_>>()
        );
        if last_token.elapsed() >= TOKEN_ROTATION {
            write_token_file(
                token_file,
                &token_for(client, ns, "app", &[AUDIENCE], None, 600).await,
            );
            last_token = Instant::now();
            token_rotations += 1;
        }
    }
}

#[tokio::test]
async fn huaweis_python_and_go_sdks_keep_one_client_across_rotations_through_the_agent() {
    let test = "podidentity-sdks-rotate";
    with_namespace(test, |client, ns| async move {
        let rig = rig(test, &client, &ns).await;
        let uri = rig.agent.credentials_uri(&ns, "app-creds");
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("token");
        let first_token = token_for(&client, &ns, "app", &[AUDIENCE], None, 600).await;
        write_token_file(&token_file, &first_token);
        let served = wait_served(&uri, &first_token).await;
        let java = java_sdk_check(&served);
        assert_eq!(java["ok"], true, "Huawei's Java SDK would not read the answer: {java}");

        let since = last_seq(&rig.sim).await;
        let mints_before = rig.sim.mints_total().await;
        let started = Instant::now();
        let mut consumers = vec![
            Consumer::start(test, Sdk::Python, &rig.sim.url, &uri, &token_file, CALL_INTERVAL),
            Consumer::start(test, Sdk::Go, &rig.sim.url, &uri, &token_file, CALL_INTERVAL),
        ];
        let token_rotations = run_until_rotated(&client, &ns, &token_file, &mut consumers).await;
        let elapsed = started.elapsed();
        let mints = rig.sim.mints_total().await - mints_before;

        let mut ok_calls = 0;
        for c in consumers.iter_mut() {
            assert!(c.running(), "{:?} is still the process that was started", c.sdk);
            c.stop();
            let lines = c.lines();
            let calls: Vec<u64> = lines.iter().filter_map(|l| l["call"].as_u64()).collect();
            let expected: Vec<u64> = (1..=calls.len() as u64).collect();
            assert_eq!(calls, expected, "{:?}: one process, calls numbered without a gap", c.sdk);
            assert!(failures(&lines).is_empty(), "{:?}: {:?}", c.sdk, failures(&lines));
            let keys = access_keys(&lines);
            assert!(keys.len() >= KEYS_WANTED, "{:?} saw {keys:?}", c.sdk);
            assert!(
                lines.iter().all(|l| l["principalUrn"].as_str().is_some_and(|u| u.contains(":assumed-agency:ops/"))),
                "{:?}: every call signed as the agency session",
                c.sdk
            );
            ok_calls += lines.len();
            eprintln!(
                "{:?}: {} calls, 0 failed, {} access keys ({} rotations)",
                c.sdk,
                lines.len(),
                keys.len(),
                keys.len() - 1
            );
        }
        let events = sim_events(&rig.sim, since).await;
        let identity: Vec<&Value> = events.iter().filter(|e| e["operation"] == "GetCallerIdentity").collect();
        let refused: Vec<&&Value> = identity.iter().filter(|e| e["status"] != 200).collect();
        assert!(refused.is_empty(), "signature failures or errors at the simulator: {refused:?}");
        assert!(identity.len() >= ok_calls, "the simulator saw every call");
        eprintln!(
            "{ok_calls} signed calls in {:.0} s, {} at the simulator all 200, {mints} mints, {token_rotations} token rotations",
            elapsed.as_secs_f64(),
            identity.len()
        );

        let (_, last) = fetch_credentials(&uri, &std::fs::read_to_string(&token_file).expect("token")).await;
        let java = java_sdk_check(&last);
        assert_eq!(java["ok"], true, "Huawei's Java SDK would not read the answer: {java}");
        assert_ne!(java["accessKeyId"], served["credentials"]["accessKeyId"], "a rotated credential");

        // Nothing secret in what the operator and the agent wrote.
        let (logs, sk) = (rig.operator.logs() + &rig.agent.logs(), &served["credentials"]["secretAccessKey"]);
        let secrets = [sk.as_str(), served["credentials"]["securityToken"].as_str(), Some(first_token.as_str())];
        for s in secrets.into_iter().flatten() {
            assert!(!s.is_empty() && !logs.contains(s), "secret material in the operator or agent log");
        }
    })
    .await;
}

/// The expired token of the refusal test is a real token but for its times: the API server itself
/// accepts the same claims re-signed with current times and refuses them with past ones.
#[tokio::test]
async fn a_resigned_token_is_judged_by_the_api_server_only_on_its_times() {
    with_namespace("podidentity-resigned-token", |client, ns| async move {
        service_account(&client, &ns, "app").await;
        let token = token_for(&client, &ns, "app", &[AUDIENCE], None, 600).await;
        assert!(
            token_review(&client, &token, Some(AUDIENCE)).await,
            "the TokenRequest token"
        );
        assert!(
            !token_review(&client, &token, Some("sts.huaweicloud")).await,
            "only for its audience"
        );
        let now = now_unix();
        let current = resigned_with_times(&token, now - 60, now + 600);
        assert!(
            token_review(&client, &current, Some(AUDIENCE)).await,
            "re-signed with current times"
        );
        let expired = resigned_with_times(&token, now - 7200, now - 3600);
        assert!(
            !token_review(&client, &expired, Some(AUDIENCE)).await,
            "re-signed with past times"
        );
    })
    .await;
}

/// Every refusal is an error body, never a credential.
fn assert_refused(what: &str, (status, body): (u16, Value), want: u16, error: &str) {
    assert_eq!(status, want, "{what}: {body}");
    assert_eq!(body["error"], error, "{what}: {body}");
    assert!(body.get("credentials").is_none(), "{what}: {body}");
}

#[tokio::test]
async fn the_agent_refuses_another_account_a_wrong_audience_an_expired_token_and_a_deleted_credential() {
    let test = "podidentity-sdks-refuse";
    with_namespace(test, |client, ns| async move {
        let rig = rig(test, &client, &ns).await;
        apply(
            &client,
            agency_credential(
                &ns,
                "keep-creds",
                "ci",
                json!({"podIdentity": {"serviceAccounts": ["app"]}}),
            ),
        )
        .await;
        let uri = rig.agent.credentials_uri(&ns, "app-creds");
        let keep = rig.agent.credentials_uri(&ns, "keep-creds");
        let token = token_for(&client, &ns, "app", &[AUDIENCE], None, 600).await;
        wait_served(&uri, &token).await;
        wait_served(&keep, &token).await;

        let other = token_for(&client, &ns, "other", &[AUDIENCE], None, 600).await;
        assert_refused(
            "another ServiceAccount",
            fetch_credentials(&uri, &other).await,
            403,
            "Forbidden",
        );
        let wrong_audience = token_for(&client, &ns, "app", &["sts.huaweicloud"], None, 600).await;
        assert_refused(
            "wrong audience",
            fetch_credentials(&uri, &wrong_audience).await,
            401,
            "Unauthorized",
        );
        let other_ns = rig.agent.credentials_uri("kube-system", "app-creds");
        assert_refused(
            "another namespace",
            fetch_credentials(&other_ns, &token).await,
            403,
            "Forbidden",
        );

        // The same claims re-signed with the API server's key: valid times are served (so the
        // forgery is faithful), past ones are refused.
        let now = now_unix();
        let current = resigned_with_times(&token, now - 60, now + 600);
        assert_eq!(
            fetch_credentials(&uri, &current).await.0,
            200,
            "a re-signed current token is served"
        );
        let expired = resigned_with_times(&token, now - 7200, now - 3600);
        assert_refused(
            "expired token",
            fetch_credentials(&uri, &expired).await,
            401,
            "Unauthorized",
        );

        Api::<tcred::api::TemporaryCredential>::namespaced(client.clone(), &ns)
            .delete("app-creds", &DeleteParams::default())
            .await
            .expect("delete app-creds");
        let refused = wait_for(
            Duration::from_secs(30),
            "the deleted credential refused",
            || async {
                let answer = fetch_credentials(&uri, &token).await;
                (answer.0 != 200).then_some(answer)
            },
        )
        .await;
        assert_refused("deleted credential", refused, 403, "Forbidden");
        assert_eq!(
            fetch_credentials(&keep, &token).await.0,
            200,
            "the other credential is still served"
        );
    })
    .await;
}
