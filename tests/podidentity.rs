//! The credentials endpoint (pod identity) on the real API server with the Huawei simulator:
//! a listed ServiceAccount's TokenRequest token gets the credential in the SDK format; every
//! other token is refused with the contract's status and body; floods and oversized requests
//! are bounded; a standby replica serves too.

mod support;

use std::time::Duration;

use k8s_openapi::api::{authentication::v1::BoundObjectReference, core::v1::Secret};
use kube::{Api, Client, api::DeleteParams};
use serde_json::json;
use support::{podidentity::*, *};
use tcred::api::condition::reasons;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A source, ServiceAccounts `app` and `other`, and credential `billing` served to `app`,
/// issued; returns the managed Secret.
async fn served_credential(client: &Client, ns: &str, sim: &Simulator) -> Secret {
    access_key_source(client, ns, "corp", sim).await;
    service_account(client, ns, "app").await;
    service_account(client, ns, "other").await;
    let extra = json!({"duration": "2h", "podIdentity": {"serviceAccounts": ["app"]}});
    apply(client, agency_credential(ns, "billing", "corp", extra)).await;
    wait_ready_reason(client, ns, "billing", reasons::ISSUED, TIMEOUT).await;
    get_secret(client, ns, "billing").await.expect("managed Secret")
}

/// Polls until the endpoint answers `status` for `token` (the watches catch up asynchronously).
async fn wait_status(ep: &Endpoint, ns: &str, name: &str, token: &str, status: u16) -> Answer {
    wait_for(TIMEOUT, &format!("{ns}/{name} answers {status}"), || async {
        let a = ep.fetch(ns, name, Some(token)).await;
        (a.status == status).then_some(a)
    })
    .await
}

fn scoped(ns: &str) -> OperatorOptions<'_> {
    OperatorOptions {
        namespace: Some(ns),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_listed_service_account_gets_the_credential_in_the_sdk_format() {
    with_namespace("pid-serve", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        let tls = TlsPair::generate("pid-serve");
        let op = start_operator("pid-serve", &tls, scoped(&ns)).await;
        let secret = served_credential(&client, &ns, &sim).await;
        let token = token(&client, &ns, "app", &[AUDIENCE], None).await;

        let a = wait_status(&op.endpoint, &ns, "billing", &token, 200).await;
        assert_eq!(a.cache_control.as_deref(), Some("no-store"));
        let c = &a.body["credentials"];
        assert_eq!(c["accessKeyId"], secret_text(&secret, "HUAWEICLOUD_SDK_AK"));
        assert_eq!(c["secretAccessKey"], secret_text(&secret, "HUAWEICLOUD_SDK_SK"));
        assert_eq!(
            c["securityToken"],
            secret_text(&secret, "HUAWEICLOUD_SDK_SECURITY_TOKEN")
        );
        let exp = c["expiration"].as_str().expect("expiration is a string");
        assert_eq!(exp.len(), "2026-11-24T13:21:02.123Z".len(), "{exp}");
        assert_eq!(&exp[19..20], ".", "{exp}");
        assert!(exp.ends_with('Z'));
        let at: jiff::Timestamp = exp.parse().expect("RFC 3339");
        let stored: jiff::Timestamp = secret_text(&secret, "HUAWEICLOUD_SDK_EXPIRES_AT")
            .parse()
            .unwrap();
        // A whole second is served as .999 of the second before (Huawei's Java SDK cannot parse .000).
        assert!(!exp.ends_with(".000Z"), "{exp}");
        assert_eq!(at.as_millisecond(), stored.as_millisecond() - 1, "{exp}");

        let bearer = op
            .endpoint
            .fetch(&ns, "billing", Some(&format!("Bearer {token}")))
            .await;
        assert_eq!(bearer.status, 200, "a Bearer prefix is accepted");
        let metrics = op.operator.metrics().await;
        assert!(sample(&metrics, "tcred_pod_identity_requests_total{code=\"200\"}").unwrap_or(0.0) >= 2.0);
        assert!(
            !metrics.contains(&token) && !op.operator.logs().contains(&token),
            "no token leaks"
        );
        assert!(
            !op.operator
                .logs()
                .contains(&secret_text(&secret, "HUAWEICLOUD_SDK_SK"))
        );
    })
    .await;
}

#[tokio::test]
async fn tokens_that_are_not_allowed_are_refused_with_the_contract_answers() {
    with_namespace("pid-refuse", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        let tls = TlsPair::generate("pid-refuse");
        let op = start_operator("pid-refuse", &tls, scoped(&ns)).await;
        served_credential(&client, &ns, &sim).await;
        let ep = &op.endpoint;
        let app = token(&client, &ns, "app", &[AUDIENCE], None).await;
        wait_status(ep, &ns, "billing", &app, 200).await;

        let missing = ep.fetch(&ns, "no-such-credential", Some(&app)).await;
        assert_eq!(missing.status, 403);
        assert_eq!(missing.body["error"], "Forbidden");

        let other = token(&client, &ns, "other", &[AUDIENCE], None).await;
        let a = ep.fetch(&ns, "billing", Some(&other)).await;
        assert_eq!(
            (a.status, &a.body),
            (403, &missing.body),
            "an unlisted ServiceAccount"
        );

        let elsewhere = create_namespace(&client, "pid-refuse-other", &[]).await;
        service_account(&client, &elsewhere, "app").await;
        let foreign = token(&client, &elsewhere, "app", &[AUDIENCE], None).await;
        let a = ep.fetch(&ns, "billing", Some(&foreign)).await;
        assert_eq!(
            (a.status, &a.body),
            (403, &missing.body),
            "same SA name, another namespace"
        );
        delete_namespace(&client, &elsewhere).await;

        let wrong = token(&client, &ns, "app", &["sts.huaweicloud"], None).await;
        let apiserver = token(&client, &ns, "app", &[], None).await;
        for (what, t) in [
            ("wrong audience", wrong.as_str()),
            ("API server audience", &apiserver),
            ("garbage", "x.y.z"),
        ] {
            let a = ep.fetch(&ns, "billing", Some(t)).await;
            assert_eq!(a.status, 401, "{what}");
            assert_eq!(a.body["error"], "Unauthorized", "{what}");
        }
        assert_eq!(ep.fetch(&ns, "billing", None).await.status, 401, "no token");

        Api::<tcred::api::TemporaryCredential>::namespaced(client.clone(), &ns)
            .delete("billing", &DeleteParams::default())
            .await
            .expect("delete");
        let gone = wait_status(ep, &ns, "billing", &app, 403).await;
        assert_eq!(
            gone.body, missing.body,
            "a deleted credential looks like any refusal"
        );
    })
    .await;
}

#[tokio::test]
async fn an_invalidated_token_is_refused() {
    with_namespace("pid-expired", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        let tls = TlsPair::generate("pid-expired");
        let op = start_operator("pid-expired", &tls, scoped(&ns)).await;
        served_credential(&client, &ns, &sim).await;
        let fresh = token(&client, &ns, "app", &[AUDIENCE], None).await;
        wait_status(&op.endpoint, &ns, "billing", &fresh, 200).await;

        // A token bound to an object is invalid once the object is gone (the minimum TokenRequest
        // lifetime is 10 minutes, too long to wait for `exp`; the local `exp` check is unit-tested).
        create_secret(&client, &ns, "binding", &[("k", "v")]).await;
        let binding = get_secret(&client, &ns, "binding").await.expect("binding");
        let bound = BoundObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            name: Some("binding".into()),
            uid: binding.metadata.uid.clone(),
        };
        let t = token(&client, &ns, "app", &[AUDIENCE], Some(bound)).await;
        Api::<Secret>::namespaced(client.clone(), &ns)
            .delete("binding", &DeleteParams::default())
            .await
            .expect("delete the bound object");
        wait_for(TIMEOUT, "the bound object is gone", || async {
            get_secret(&client, &ns, "binding").await.is_none().then_some(())
        })
        .await;
        // The API server checks the bound object in its own cache, which may not have seen the
        // deletion yet: the token is refused once it has.
        let a = wait_for(TIMEOUT, "the bound token refused", || async {
            let a = op.endpoint.fetch(&ns, "billing", Some(&t)).await;
            (a.status != 200).then_some(a)
        })
        .await;
        assert_eq!(a.status, 401, "{:?}", a.body);
        assert_eq!(a.body["error"], "Unauthorized");
    })
    .await;
}

#[tokio::test]
async fn a_flood_of_forged_tokens_stays_bounded_and_a_victim_keeps_being_served() {
    with_namespace("pid-flood", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        let tls = TlsPair::generate("pid-flood");
        let op = start_operator("pid-flood", &tls, scoped(&ns)).await;
        served_credential(&client, &ns, &sim).await;
        let victim = token(&client, &ns, "app", &[AUDIENCE], None).await;
        wait_status(&op.endpoint, &ns, "billing", &victim, 200).await;
        let pid = op.operator.pid().expect("pid");
        let before = rss_kib(pid).expect("rss");

        let flood = flood(op.endpoint.clone(), ns.clone(), 5_000);
        let served = async {
            let mut codes = Vec::new();
            for _ in 0..20 {
                let path = format!("/v1/credentials/{ns}/billing");
                let a = op.endpoint.send(&path, Some(&victim), "{}".into(), None).await;
                codes.push(a.map(|a| a.status).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            codes
        };
        let (counts, victim_codes) = tokio::join!(flood, served);
        assert!(
            victim_codes.iter().all(|c| *c == 200),
            "victim answers {victim_codes:?}"
        );
        assert_eq!(counts.get(&200), None, "no forged token is served: {counts:?}");
        assert!(
            counts.contains_key(&429),
            "the review limit was reached: {counts:?}"
        );
        let after = rss_kib(pid).expect("rss");
        let metrics = op.operator.metrics().await;
        let cached = sample(&metrics, "tcred_pod_identity_cached_tokens").unwrap_or(0.0);
        println!("flood: {counts:?}; RSS {before} KiB -> {after} KiB; cached tokens {cached}");
        assert!(cached <= 2.0, "refused tokens are never cached: {cached}");
        assert!(
            after < before + 64 * 1024,
            "RSS grew from {before} KiB to {after} KiB"
        );
    })
    .await;
}

/// Sends `n` distinct forged tokens from 32 concurrent clients; counts the answers by status
/// (0: no answer).
async fn flood(ep: Endpoint, ns: String, n: u64) -> std::collections::BTreeMap<u16, u64> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..32u64 {
        let (ep, ns) = (ep.clone(), ns.clone());
        tasks.spawn(async move {
            let mut counts = std::collections::BTreeMap::new();
            for i in (w..n).step_by(32) {
                let t = forged_token(i);
                let path = format!("/v1/credentials/{ns}/billing");
                let code = ep
                    .send(&path, Some(&t), "{}".into(), None)
                    .await
                    .map(|a| a.status)
                    .unwrap_or(0);
                *counts.entry(code).or_insert(0u64) += 1;
            }
            counts
        });
    }
    let mut all = std::collections::BTreeMap::new();
    while let Some(Ok(counts)) = tasks.join_next().await {
        for (k, v) in counts {
            *all.entry(k).or_insert(0) += v;
        }
    }
    all
}

#[tokio::test]
async fn oversized_and_malformed_requests_are_refused() {
    with_namespace("pid-limits", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        let tls = TlsPair::generate("pid-limits");
        let op = start_operator("pid-limits", &tls, scoped(&ns)).await;
        served_credential(&client, &ns, &sim).await;
        let app = token(&client, &ns, "app", &[AUDIENCE], None).await;
        let ep = &op.endpoint;
        wait_status(ep, &ns, "billing", &app, 200).await;
        let path = format!("/v1/credentials/{ns}/billing");

        let big_body = ep
            .send(&path, Some(&app), "x".repeat(2048), None)
            .await
            .expect("answer");
        assert_eq!(
            (big_body.status, &big_body.body["error"]),
            (413, &json!("PayloadTooLarge"))
        );
        let big_header = ep
            .send(
                &path,
                Some(&app),
                "{}".into(),
                Some(("x-pad", "x".repeat(64 * 1024))),
            )
            .await;
        assert_eq!(big_header.map(|a| a.status).unwrap_or(431), 431);
        let big_token = ep
            .send(&path, Some(&"x".repeat(9000)), "{}".into(), None)
            .await
            .expect("answer");
        assert_eq!(big_token.status, 401);
        let bad_name = ep
            .send(
                &format!("/v1/credentials/{ns}/Bad_Name"),
                Some(&app),
                "{}".into(),
                None,
            )
            .await;
        assert_eq!(bad_name.expect("answer").status, 400);
        let unknown = ep
            .send("/v1/other", Some(&app), "{}".into(), None)
            .await
            .expect("answer");
        assert_eq!(
            (unknown.status, &unknown.body["error"]),
            (404, &json!("NotFound"))
        );
        let get = ep
            .client
            .get(format!("{}{path}", ep.base))
            .header("authorization", &app)
            .send()
            .await;
        assert_eq!(get.expect("answer").status().as_u16(), 405);
        assert_eq!(
            ep.fetch(&ns, "billing", Some(&app)).await.status,
            200,
            "still serving"
        );
        assert!(panic_lines(&op.operator.logs()).is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_standby_replica_serves_too() {
    with_namespace("pid-standby", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        let tls = TlsPair::generate("pid-standby");
        let replica = |identity| OperatorOptions {
            namespace: Some(&ns),
            leader_elect: true,
            lease_namespace: Some(&ns),
            identity,
            ..Default::default()
        };
        let leader = start_operator("pid-standby", &tls, replica("leader")).await;
        served_credential(&client, &ns, &sim).await;
        let standby = start_operator("pid-standby", &tls, replica("standby")).await;
        let app = token(&client, &ns, "app", &[AUDIENCE], None).await;

        let a = wait_status(&standby.endpoint, &ns, "billing", &app, 200).await;
        let b = wait_status(&leader.endpoint, &ns, "billing", &app, 200).await;
        assert_eq!(a.body, b.body, "both replicas serve the same credential");
        assert_eq!(
            sample(&standby.operator.metrics().await, "tcred_leader "),
            Some(0.0)
        );
        assert_eq!(
            sample(&leader.operator.metrics().await, "tcred_leader "),
            Some(1.0)
        );
    })
    .await;
}

/// A replica whose certificate files do not exist yet (tcred's own certificates are written by
/// the leader) keeps running and serves once they appear, instead of exiting.
#[tokio::test]
async fn the_endpoint_waits_for_certificate_files_that_appear_later() {
    with_namespace("pid-late-tls", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        let tls = TlsPair::generate("pid-late-tls");
        let hide =
            |p: &std::path::Path| p.with_file_name(format!("later-{}", p.file_name().unwrap().display()));
        std::fs::rename(&tls.cert, hide(&tls.cert)).expect("hide cert");
        std::fs::rename(&tls.key, hide(&tls.key)).expect("hide key");
        let op = start_operator("pid-late-tls", &tls, scoped(&ns)).await;
        served_credential(&client, &ns, &sim).await;
        let token = token(&client, &ns, "app", &[AUDIENCE], None).await;
        let url = format!("{}/v1/credentials/{ns}/billing", op.endpoint.base);
        let early = op.endpoint.client.post(&url).body("{}").send().await;
        assert!(
            early.is_err(),
            "nothing is served without a certificate: {early:?}"
        );

        std::fs::rename(hide(&tls.key), &tls.key).expect("key appears");
        std::fs::rename(hide(&tls.cert), &tls.cert).expect("cert appears");
        // The replica looks for the files every few seconds; until then the port is closed.
        wait_for(TIMEOUT, "the endpoint listens", || async {
            op.endpoint
                .client
                .post(&url)
                .body("{}")
                .send()
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        let a = wait_status(&op.endpoint, &ns, "billing", &token, 200).await;
        assert!(a.body["credentials"]["accessKeyId"].is_string());
        assert!(op.operator.logs().contains("waits for its certificate files"));
        assert!(
            op.operator.metrics().await.contains("tcred_leader"),
            "the replica kept running"
        );
    })
    .await;
}

#[tokio::test]
async fn the_controller_refuses_an_audience_the_api_server_accepts() {
    let client = admin().await;
    let issuer = apiserver_issuer(&client).await;
    let tls = TlsPair::generate("pid-audience");
    for audience in [issuer.as_str(), "kubernetes", "https://kubernetes.default.svc"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tcred"))
            .args([
                "controller",
                "--leader-elect=false",
                "--metrics-bind-address=127.0.0.1:0",
                &format!("--credentials-endpoint-address=127.0.0.1:{}", free_port()),
                &format!("--tls-cert-file={}", tls.cert.display()),
                &format!("--tls-key-file={}", tls.key.display()),
                &format!("--pod-identity-audience={audience}"),
                "--namespace=default",
            ])
            .env("KUBECONFIG", admin_kubeconfig())
            .output()
            .expect("run tcred");
        let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{audience}: started");
        assert!(text.contains("--pod-identity-audience"), "{audience}: {text}");
    }
}
