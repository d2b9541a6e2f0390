//! Sources on the real control plane with the simulator: the Identity Center device flow through
//! `tcred login`, session expiry and refresh, web identity with real ServiceAccount tokens
//! verified against the apiserver's JWKS, and the status/rotate commands.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, PostParams},
};
use serde_json::json;
use support::*;
use tcred::api::{
    CredentialSource, annotations,
    condition::{find, reasons, types},
};

const IC_AGENCY: &str = "IdentityCenter-ReadOnlyAccess";

fn permission_set_credential(ns: &str, name: &str, source: &str, permission_set: &str) -> serde_json::Value {
    json!({
        "apiVersion": "tcred.dev/v1alpha1", "kind": "TemporaryCredential",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"sourceRef": {"name": source}, "permissionSet": {"accountId": ACCOUNT, "name": permission_set}},
    })
}

async fn source_condition(
    client: &kube::Client,
    ns: &str,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let src = Api::<CredentialSource>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    let s = src.status?;
    find(&s.conditions, type_).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_source(
    client: &kube::Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
    timeout: Duration,
) -> String {
    wait_for(
        timeout,
        &format!("source {ns}/{name} {type_}={status}"),
        || async {
            source_condition(client, ns, name, type_)
                .await
                .filter(|(s, _, _)| s == status)
                .map(|(_, _, m)| m)
        },
    )
    .await
}

#[tokio::test]
async fn a_source_uses_only_the_secrets_labelled_for_it() {
    with_namespace("secret-binding", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        // where a borrowing source would send another source's key or tokens
        let thief = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "official", &sim).await;
        identity_center_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("secret-binding", &ns).await;
        let out = login(
            &["--source", "corp", "-n", &ns, "--start-url", START_URL],
            &sim,
            "alice",
        )
        .await;
        assert!(out.contains("Logged in"), "{out}");

        // Second sources naming the same Secrets, without limits and with their own endpoints;
        // and an access key Secret nobody labelled.
        credential_source(
            &client,
            &ns,
            "borrow-ak",
            json!({
                "accessKey": {"region": "ap-southeast-1", "secretRef": {"name": "official-ak"}},
                "endpoints": {"sts": thief.url},
            }),
        )
        .await;
        credential_source(
            &client,
            &ns,
            "borrow-session",
            json!({
                "identityCenter": {"region": "ap-southeast-1", "sessionSecretRef": {"name": "corp-session"}},
                "endpoints": {"oidc": thief.url, "portal": thief.url},
            }),
        )
        .await;
        create_secret(
            &client,
            &ns,
            "loose-ak",
            &[
                ("accessKeyId", "AKLOOSEKEY0123456789"),
                ("secretAccessKey", CI_BOT_SK),
            ],
        )
        .await;
        credential_source(
            &client,
            &ns,
            "loose",
            json!({
                "accessKey": {"region": "ap-southeast-1", "secretRef": {"name": "loose-ak"}},
                "endpoints": {"sts": thief.url},
            }),
        )
        .await;

        for (source, secret) in [
            ("borrow-ak", "official-ak"),
            ("borrow-session", "corp-session"),
            ("loose", "loose-ak"),
        ] {
            let msg = wait_source(
                &client,
                &ns,
                source,
                types::READY,
                "False",
                Duration::from_secs(30),
            )
            .await;
            assert!(
                msg.contains(&format!(
                    "Secret {ns}/{secret} is not bound to CredentialSource {source}"
                )) && msg.contains(&format!(
                    "tcred.dev/source-kind=CredentialSource and tcred.dev/source-name={source}"
                )),
                "{source}: {msg}"
            );
            let src = Api::<CredentialSource>::namespaced(client.clone(), &ns)
                .get(source)
                .await
                .unwrap();
            let status = src.status.unwrap();
            assert_eq!(
                find(&status.conditions, types::READY).unwrap().reason,
                reasons::SECRET_NOT_BOUND
            );
            assert_eq!(
                status.access_key_id, None,
                "{source}: nothing is read from an unbound Secret"
            );
        }

        apply(&client, agency_credential(&ns, "via-ak", "borrow-ak", json!({}))).await;
        apply(
            &client,
            permission_set_credential(&ns, "via-session", "borrow-session", "ReadOnlyAccess"),
        )
        .await;
        apply(&client, agency_credential(&ns, "via-loose", "loose", json!({}))).await;
        apply(&client, agency_credential(&ns, "legit", "official", json!({}))).await;
        for name in ["via-ak", "via-session", "via-loose"] {
            let tc = wait_ready_reason(
                &client,
                &ns,
                name,
                reasons::SECRET_NOT_BOUND,
                Duration::from_secs(30),
            )
            .await;
            assert!(
                ready_message(&tc).contains("is not bound to CredentialSource"),
                "{name}: {}",
                ready_message(&tc)
            );
            assert!(
                get_secret(&client, &ns, name).await.is_none(),
                "{name}: no Secret"
            );
        }
        // the sources the Secrets belong to keep working
        wait_ready_reason(&client, &ns, "legit", reasons::ISSUED, Duration::from_secs(30)).await;
        wait_source(
            &client,
            &ns,
            "corp",
            types::READY,
            "True",
            Duration::from_secs(30),
        )
        .await;
        let heard = thief.stats().await;
        assert_eq!(
            heard["requestsByOperation"].as_object().map(|o| o.len()),
            Some(0),
            "{heard}"
        );
    })
    .await;
}

/// A secret access key that is not UTF-8 used to pass the source check (read lossily) while every
/// mint refused it: the source showed Ready and nothing could be minted. Both now read a key one
/// way, so the source says what is wrong and the credential fails without a call to Huawei.
#[tokio::test]
async fn an_access_key_that_is_not_text_makes_the_source_not_ready() {
    with_namespace("binary-ak", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("binary-ak".into()),
                labels: Some(
                    bound_to("CredentialSource", "binary")
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            data: Some(
                [
                    ("accessKeyId", CI_BOT_AK.as_bytes().to_vec()),
                    ("secretAccessKey", b"\xff\xfe\x00not-text".to_vec()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), k8s_openapi::ByteString(v)))
                .collect(),
            ),
            ..Default::default()
        };
        Api::<Secret>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the Secret");
        credential_source(
            &client,
            &ns,
            "binary",
            json!({
                "accessKey": {"region": "ap-southeast-1", "secretRef": {"name": "binary-ak"}},
                "endpoints": {"sts": sim.url},
            }),
        )
        .await;
        let _op = Operator::start("binary-ak", &ns).await;
        let msg = wait_source(
            &client,
            &ns,
            "binary",
            types::READY,
            "False",
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(
            msg,
            format!("Secret {ns}/binary-ak: key secretAccessKey is not UTF-8")
        );
        let (_, reason, _) = source_condition(&client, &ns, "binary", types::READY)
            .await
            .expect("a Ready condition");
        assert_eq!(reason, reasons::SECRET_INVALID);

        apply(&client, agency_credential(&ns, "via-binary", "binary", json!({}))).await;
        let tc = wait_ready_reason(
            &client,
            &ns,
            "via-binary",
            reasons::MINT_FAILED,
            Duration::from_secs(30),
        )
        .await;
        assert!(
            ready_message(&tc).contains("key secretAccessKey is not UTF-8"),
            "{}",
            ready_message(&tc)
        );
        assert!(get_secret(&client, &ns, "via-binary").await.is_none());
        let heard = sim.stats().await;
        assert_eq!(
            heard["requestsByOperation"].as_object().map(|o| o.len()),
            Some(0),
            "{heard}"
        );
    })
    .await;
}

#[tokio::test]
async fn device_flow_login_writes_the_session_and_permission_sets_mint_through_the_portal() {
    with_namespace("ic-login", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        identity_center_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("ic-login", &ns).await;

        // Before any login the source says what to run.
        let msg = wait_source(
            &client,
            &ns,
            "corp",
            types::READY,
            "False",
            Duration::from_secs(30),
        )
        .await;
        assert!(
            msg.contains(&format!("tcred login --source corp -n {ns}")),
            "{msg}"
        );

        let out = login(
            &["--source", "corp", "-n", &ns, "--start-url", START_URL],
            &sim,
            "alice",
        )
        .await;
        assert!(out.contains("Logged in"), "{out}");
        let session = get_secret(&client, &ns, "corp-session")
            .await
            .expect("session Secret");
        for key in [
            "region",
            "startUrl",
            "clientId",
            "clientSecret",
            "clientSecretExpiresAt",
            "accessToken",
            "accessTokenExpiresAt",
        ] {
            assert!(!secret_text(&session, key).is_empty(), "session key {key}");
        }
        assert_eq!(secret_text(&session, "startUrl"), START_URL);
        assert_eq!(
            session.labels().get("tcred.dev/source-name").map(String::as_str),
            Some("corp")
        );
        wait_source(
            &client,
            &ns,
            "corp",
            types::READY,
            "True",
            Duration::from_secs(30),
        )
        .await;
        let src = Api::<CredentialSource>::namespaced(client.clone(), &ns)
            .get("corp")
            .await
            .unwrap();
        assert!(src.status.unwrap().session_expires_at.is_some());

        apply(
            &client,
            permission_set_credential(&ns, "readonly", "corp", "ReadOnlyAccess"),
        )
        .await;
        let tc = wait_ready_reason(&client, &ns, "readonly", reasons::ISSUED, Duration::from_secs(30)).await;
        assert_eq!(
            tc.status.unwrap().target.as_deref(),
            Some(format!("{ACCOUNT}/ReadOnlyAccess").as_str())
        );
        assert_eq!(sim.mints(&agency_urn(IC_AGENCY)).await, 1);
        let secret = get_secret(&client, &ns, "readonly")
            .await
            .expect("credential Secret");
        assert!(!secret_text(&secret, "HUAWEICLOUD_SDK_SECURITY_TOKEN").is_empty());

        // A permission set alice is not assigned fails with a message naming what she has.
        apply(
            &client,
            permission_set_credential(&ns, "admin", "corp", "AdminAccess"),
        )
        .await;
        let bad = wait_ready_reason(
            &client,
            &ns,
            "admin",
            reasons::MINT_FAILED,
            Duration::from_secs(30),
        )
        .await;
        let msg = ready_message(&bad);
        assert!(
            msg.contains("AdminAccess") && msg.contains("ReadOnlyAccess"),
            "{msg}"
        );

        // A second login reuses the registered client.
        let client_id = secret_text(&session, "clientId");
        login(&["--source", "corp", "-n", &ns], &sim, "alice").await;
        let again = get_secret(&client, &ns, "corp-session").await.unwrap();
        assert_eq!(secret_text(&again, "clientId"), client_id);
        assert_ne!(
            secret_text(&again, "accessToken"),
            secret_text(&session, "accessToken")
        );

        // tcred status and tcred rotate
        let (ok, table) = tcred_cli(&["status", "-n", &ns]);
        assert!(ok, "{table}");
        assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("readonly") && l.contains("Issued")),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("admin") && l.contains("MintFailed")),
            "{table}"
        );
        let (ok, out) = tcred_cli(&["rotate", &format!("{ns}/readonly"), "--timeout", "60s"]);
        assert!(ok, "{out}");
        assert!(out.contains("Rotated"), "{out}");
        assert_eq!(sim.mints(&agency_urn(IC_AGENCY)).await, 2);
    })
    .await;
}

#[tokio::test]
async fn an_ending_session_warns_then_expires_keeping_minted_credentials_and_login_recovers() {
    with_namespace("ic-expiry", |client, ns| async move {
        let mut config = default_sim_config();
        config["identityCenter"]["accessTokenSeconds"] = json!(45);
        let sim = Simulator::start(&config).await;
        identity_center_source(&client, &ns, "corp", &sim).await;
        let op = Operator::start_with(
            "ic-expiry",
            OperatorOptions {
                namespace: Some(&ns),
                extra: vec!["--session-warning=35s".into()],
                ..Default::default()
            },
        )
        .await;
        login(
            &["--source", "corp", "-n", &ns, "--start-url", START_URL],
            &sim,
            "alice",
        )
        .await;
        apply(
            &client,
            permission_set_credential(&ns, "readonly", "corp", "ReadOnlyAccess"),
        )
        .await;
        wait_ready_reason(&client, &ns, "readonly", reasons::ISSUED, Duration::from_secs(30)).await;
        let minted = get_secret(&client, &ns, "readonly").await.unwrap();

        let warning = wait_source(
            &client,
            &ns,
            "corp",
            types::SESSION_EXPIRING_SOON,
            "True",
            Duration::from_secs(30),
        )
        .await;
        assert!(warning.contains("tcred login --source corp"), "{warning}");
        // The gauge is read from the operator's cache of the source, which may lag its status.
        wait_for(Duration::from_secs(30), "the session expiry gauge", || async {
            let metrics = op.metrics().await;
            metrics
                .lines()
                .any(|l| {
                    l.starts_with("tcred_source_session_expiration_timestamp_seconds")
                        && l.contains(&format!("source=\"{ns}/corp\""))
                })
                .then_some(())
        })
        .await;
        wait_source(
            &client,
            &ns,
            "corp",
            types::SESSION_EXPIRED,
            "True",
            Duration::from_secs(60),
        )
        .await;

        // Already-minted credentials stay in place; new mints say what to run.
        let kept = get_secret(&client, &ns, "readonly").await.unwrap();
        assert_eq!(kept.data, minted.data);
        let (ok, _) = tcred_cli(&["rotate", &format!("{ns}/readonly"), "--timeout", "5s"]);
        assert!(!ok, "a rotation cannot succeed without a session");
        let failing = wait_ready_reason(
            &client,
            &ns,
            "readonly",
            reasons::RENEWAL_FAILING,
            Duration::from_secs(30),
        )
        .await;
        let msg = ready_message(&failing);
        assert!(msg.contains("tcred login --source corp"), "{msg}");

        let events = events_for(&client, &ns, "corp").await;
        for reason in [types::SESSION_EXPIRING_SOON, types::SESSION_EXPIRED] {
            assert!(has_event(&events, reason), "no {reason} Event");
        }

        // A new login brings it back at once (the source changed), not after the backoff.
        login(&["--source", "corp", "-n", &ns], &sim, "alice").await;
        wait_ready_reason(
            &client,
            &ns,
            "readonly",
            reasons::ROTATED,
            Duration::from_secs(20),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn refresh_tokens_keep_the_session_alive_past_the_access_token_lifetime() {
    with_namespace("ic-refresh", |client, ns| async move {
        let mut config = default_sim_config();
        config["identityCenter"]["accessTokenSeconds"] = json!(30);
        config["identityCenter"]["issueRefreshTokens"] = json!(true);
        let sim = Simulator::start(&config).await;
        identity_center_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("ic-refresh", &ns).await;
        login(
            &["--source", "corp", "-n", &ns, "--start-url", START_URL],
            &sim,
            "alice",
        )
        .await;
        // The source notices the new session (the Secret's watch event) before the checks start.
        wait_source(
            &client,
            &ns,
            "corp",
            types::READY,
            "True",
            Duration::from_secs(30),
        )
        .await;
        let first = get_secret(&client, &ns, "corp-session").await.unwrap();
        let first_refresh = secret_text(&first, "refreshToken");

        // Over 75 s (2.5 access-token lifetimes) the session must never lapse.
        let mut tokens = std::collections::BTreeSet::new();
        let mut refresh_tokens = std::collections::BTreeSet::new();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(75) {
            let s = get_secret(&client, &ns, "corp-session").await.unwrap();
            let expires: jiff::Timestamp = secret_text(&s, "accessTokenExpiresAt").parse().unwrap();
            assert!(
                expires > jiff::Timestamp::now(),
                "the session lapsed at {expires}"
            );
            tokens.insert(secret_text(&s, "accessToken"));
            refresh_tokens.insert(secret_text(&s, "refreshToken"));
            let ready = source_condition(&client, &ns, "corp", types::READY).await;
            assert_eq!(
                ready.map(|r| r.0).as_deref(),
                Some("True"),
                "the source stays ready"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(
            tokens.len() >= 3,
            "access token refreshed at least twice, saw {}",
            tokens.len()
        );
        assert!(
            refresh_tokens.len() >= 3,
            "rotated refresh tokens were persisted, saw {}",
            refresh_tokens.len()
        );
        assert!(
            !refresh_tokens.is_empty()
                && first_refresh
                    != secret_text(
                        &get_secret(&client, &ns, "corp-session").await.unwrap(),
                        "refreshToken"
                    )
        );

        // Minting works with the refreshed session, long after the first token expired.
        apply(
            &client,
            permission_set_credential(&ns, "readonly", "corp", "ReadOnlyAccess"),
        )
        .await;
        wait_ready_reason(&client, &ns, "readonly", reasons::ISSUED, Duration::from_secs(30)).await;
    })
    .await;
}

fn web_identity_config(ns: &str) -> serde_json::Value {
    let mut config = default_sim_config();
    let provider = format!("iam::{ACCOUNT}:oidcProvider:local-cluster");
    config["accounts"][0]["agencies"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "name": "billing-trust",
            "maxSessionSeconds": 43200,
            "trustedOidc": [{
                "provider": provider,
                "subjects": [format!("system:serviceaccount:{ns}:billing")],
                "audiences": ["sts.huaweicloud"],
            }],
        }));
    config["oidcProviders"]
        .as_array_mut()
        .expect("oidcProviders")
        .push(json!({
            "urn": provider,
            "issuer": apiserver_url(),
            "jwksUri": format!("{}/openid/v1/jwks", apiserver_url()),
            "caFile": cluster_dir().join("pki/ca.crt").display().to_string(),
        }));
    config
}

async fn web_identity_source(client: &kube::Client, ns: &str, name: &str, audience: &str, sim: &Simulator) {
    let spec = json!({
        "webIdentity": {
            "region": "ap-southeast-1",
            "providerUrn": format!("iam::{ACCOUNT}:oidcProvider:local-cluster"),
            "audience": audience,
        },
        "endpoints": {"sts": sim.url},
    });
    credential_source(client, ns, name, spec).await;
}

#[tokio::test]
async fn web_identity_exchanges_real_service_account_tokens_and_the_trust_policy_pins_the_subject() {
    with_namespace("web-identity", |client, ns| async move {
        let sim = Simulator::start(&web_identity_config(&ns)).await;
        // A second simulator that must never hear from tcred: tokens refused in the cluster.
        let quiet = Simulator::start(&web_identity_config(&ns)).await;
        let sas = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
        // Each ServiceAccount opts in to the credentials that may exchange its tokens; bystander
        // opts in to none.
        for (sa, allowed) in [("billing", Some("billing, wrong-aud, steal")), ("intruder", Some("intruder")), ("bystander", None)] {
            let annotations = allowed.map(|a| [(annotations::ALLOWED_CREDENTIALS.to_owned(), a.to_owned())].into());
            let obj = ServiceAccount {
                metadata: ObjectMeta { name: Some(sa.into()), annotations, ..Default::default() },
                ..Default::default()
            };
            sas.create(&PostParams::default(), &obj).await.expect("create ServiceAccount");
        }
        web_identity_source(&client, &ns, "cluster-oidc", "sts.huaweicloud", &sim).await;
        web_identity_source(&client, &ns, "wrong-audience", "someone-else", &sim).await;
        // the API server's own audience (its issuer): such a token is a key to the cluster
        web_identity_source(&client, &ns, "api-server", &apiserver_url(), &quiet).await;
        web_identity_source(&client, &ns, "quiet-oidc", "sts.huaweicloud", &quiet).await;
        let _op = Operator::start("web-identity", &ns).await;
        let urn = agency_urn("billing-trust");
        let credential = |name: &str, source: &str, sa: &str| {
            json!({
                "apiVersion": "tcred.dev/v1alpha1", "kind": "TemporaryCredential",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"sourceRef": {"name": source}, "agencyUrn": urn, "serviceAccountName": sa, "duration": "2h"},
            })
        };
        apply(&client, credential("billing", "cluster-oidc", "billing")).await;
        apply(&client, credential("intruder", "cluster-oidc", "intruder")).await;
        apply(&client, credential("wrong-aud", "wrong-audience", "billing")).await;
        apply(&client, credential("steal", "api-server", "billing")).await;
        apply(&client, credential("unasked", "quiet-oidc", "bystander")).await;

        let ok = wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        assert!(ok.status.unwrap().expires_at.is_some());
        let secret = get_secret(&client, &ns, "billing").await.expect("Secret");
        let http = tcred::cloud::HttpClient::new(Default::default()).unwrap();
        let key = tcred::cloud::signer::AccessKey {
            id: secret_text(&secret, "HUAWEICLOUD_SDK_AK"),
            secret: secret_text(&secret, "HUAWEICLOUD_SDK_SK").into(),
            security_token: Some(secret_text(&secret, "HUAWEICLOUD_SDK_SECURITY_TOKEN").into()),
        };
        let who = tcred::cloud::sts::caller_identity(&http, &tcred::cloud::endpoints::parse_endpoint(&sim.url).unwrap(), &key)
            .await
            .expect("the web identity credential works");
        assert!(who.principal_urn.contains("assumed-agency:billing-trust/"), "{}", who.principal_urn);

        for (name, expect) in [("intruder", "system:serviceaccount"), ("wrong-aud", "aud")] {
            let tc = wait_ready_reason(&client, &ns, name, reasons::MINT_FAILED, Duration::from_secs(30)).await;
            let c = ready_message(&tc);
            assert!(c.contains("auth") && c.contains("403"), "{name}: {c}");
            assert!(c.to_lowercase().contains(expect), "{name} should say why ({expect}): {c}");
            assert!(get_secret(&client, &ns, name).await.is_none(), "{name}: no Secret for a denied exchange");
        }
        assert_eq!(sim.mints(&urn).await, 1, "only the trusted ServiceAccount minted");

        // Refused in the cluster: nothing reaches the endpoint, the reason says why, and the
        // failure path backs off instead of looping.
        for (name, expect) in [
            ("steal", format!("the audience {} is accepted by the Kubernetes API server; tcred refuses to send such a token", apiserver_url())),
            ("unasked", format!("annotate it `{}=unasked`", annotations::ALLOWED_CREDENTIALS)),
        ] {
            let tc = wait_ready_reason(&client, &ns, name, reasons::TOKEN_NOT_ALLOWED, Duration::from_secs(30)).await;
            let c = ready_message(&tc);
            assert!(c.contains(&expect), "{name}: {c}");
            let status = tc.status.unwrap();
            let (failed_at, next) = (status.last_failure_time.unwrap().0, status.renewal_time.unwrap().0);
            assert!(next.duration_since(failed_at).as_secs() >= 50, "{name}: retried after {failed_at} at {next}");
            assert!(get_secret(&client, &ns, name).await.is_none(), "{name}: no Secret");
        }
        let heard = quiet.stats().await;
        assert_eq!(heard["requestsByOperation"].as_object().map(|o| o.len()), Some(0), "{heard}");
        // Nothing secret is stored for web identity sources.
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns).list(&Default::default()).await.unwrap();
        assert_eq!(secrets.items.iter().filter(|s| s.name_any() != "billing").count(), 0, "only the credential's Secret exists");
    })
    .await;
}
