//! The pod-identity webhook on the real API server: a MutatingWebhookConfiguration points at the
//! operator process (`--webhook-address`, TLS with certificates tcred's own code generated and
//! wrote, caBundle included); pods created with the opt-in label come back mutated as documented,
//! others are left alone, and what a pod sets itself is kept. Also: the certificate writes and a
//! rotation reach the Secrets and the caBundle, and garbage sent to the webhook is refused while
//! it keeps serving.

mod support;
#[path = "support/webhook.rs"]
mod webhook_support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use serde_json::json;
use support::*;
use tcred::{
    certs,
    webhook::mutate::{AGENT_HOST_ENV, FULL_URI_ENV, LABEL, MOUNT_PATH, TOKEN_FILE_ENV, VOLUME},
};
use webhook_support::*;

struct Webhook {
    _operator: Operator,
    _dir: tempfile::TempDir,
    url: String,
    https: reqwest::Client,
}

/// Certificates, the configuration and an operator serving the webhook for `ns`.
async fn start(test: &str, client: &Client, ns: &str, configuration: &str) -> Webhook {
    let port = free_port();
    install_configuration(client, configuration, ns, port).await;
    certs::reconcile(client, &cert_config(ns, configuration), Timestamp::now())
        .await
        .expect("write the certificates");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = write_tls_files(client, ns, dir.path()).await;
    let operator = Operator::start_with(
        test,
        OperatorOptions {
            namespace: Some(ns),
            extra: vec![
                format!("--webhook-address=127.0.0.1:{port}"),
                format!("--webhook-tls-cert-file={}", cert.display()),
                format!("--webhook-tls-key-file={}", key.display()),
            ],
            ..Default::default()
        },
    )
    .await;
    // No pooled connections: a refused oversized body may leave the server closing a connection
    // the client would otherwise reuse for the next request (seen once as IncompleteMessage).
    let https = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.as_bytes()).unwrap())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/mutate-pods");
    wait_for(Duration::from_secs(30), "the webhook to listen", || {
        let (https, url) = (https.clone(), url.clone());
        async move { https.post(&url).body("{}").send().await.ok().map(|_| ()) }
    })
    .await;
    wait_webhook_effective(client, ns).await;
    Webhook {
        _operator: operator,
        _dir: dir,
        url,
        https,
    }
}

fn configuration_name(ns: &str) -> String {
    format!("tcred-test-{ns}")
}

#[tokio::test]
async fn opted_in_pods_are_mutated_others_left_alone_and_pod_values_kept() {
    with_namespace("webhook-mutates", |client, ns| async move {
        let name = configuration_name(&ns);
        let _hook = start("webhook-mutates", &client, &ns, &name).await;

        let mutated = create_pod(
            &client,
            &ns,
            &pod("opted-in", json!({LABEL: "app-creds"}), json!([])),
        )
        .await
        .expect("an opted-in pod is admitted");
        let uri = format!("http://$({AGENT_HOST_ENV}):8182/v1/credentials/{ns}/app-creds");
        for c in containers(&mutated) {
            let host = env(c, AGENT_HOST_ENV)
                .and_then(|e| e.value_from.as_ref())
                .expect("agent host");
            assert_eq!(
                host.field_ref.as_ref().unwrap().field_path,
                "status.hostIP",
                "{}",
                c.name
            );
            assert_eq!(
                env(c, FULL_URI_ENV).and_then(|e| e.value.as_deref()),
                Some(uri.as_str()),
                "{}",
                c.name
            );
            assert_eq!(
                env(c, TOKEN_FILE_ENV).and_then(|e| e.value.as_deref()),
                Some("/var/run/secrets/tcred.dev/serviceaccount/token")
            );
            let mount = c
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == VOLUME)
                .expect("mount");
            assert_eq!(
                (mount.mount_path.as_str(), mount.read_only),
                (MOUNT_PATH, Some(true))
            );
        }
        let volume = mutated
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == VOLUME);
        let projection = volume
            .and_then(|v| v.projected.as_ref())
            .and_then(|p| p.sources.as_ref())
            .unwrap();
        let token = projection[0].service_account_token.as_ref().unwrap();
        assert_eq!(token.audience.as_deref(), Some("tcred.dev"));
        assert_eq!(token.expiration_seconds, Some(3600));
        assert_eq!(token.path, "token");

        let plain = create_pod(&client, &ns, &pod("plain", json!({"app": "x"}), json!([])))
            .await
            .unwrap();
        for c in containers(&plain) {
            assert!(
                env(c, FULL_URI_ENV).is_none() && env(c, AGENT_HOST_ENV).is_none(),
                "{}",
                c.name
            );
            assert!(c.volume_mounts.iter().flatten().all(|m| m.name != VOLUME));
        }
        assert!(
            plain
                .spec
                .unwrap()
                .volumes
                .iter()
                .flatten()
                .all(|v| v.name != VOLUME)
        );

        let own = json!([{"name": FULL_URI_ENV, "value": "http://my-own-endpoint/creds"}]);
        let kept = create_pod(&client, &ns, &pod("own-uri", json!({LABEL: "app-creds"}), own))
            .await
            .unwrap();
        let app = containers(&kept).into_iter().find(|c| c.name == "app").unwrap();
        assert_eq!(
            app.env
                .iter()
                .flatten()
                .filter(|e| e.name == FULL_URI_ENV)
                .count(),
            1
        );
        assert_eq!(
            env(app, FULL_URI_ENV).unwrap().value.as_deref(),
            Some("http://my-own-endpoint/creds")
        );
        assert!(env(app, TOKEN_FILE_ENV).is_some(), "the rest is still added");
        let sidecar = containers(&kept)
            .into_iter()
            .find(|c| c.name == "sidecar")
            .unwrap();
        assert_eq!(
            env(sidecar, FULL_URI_ENV).unwrap().value.as_deref(),
            Some(uri.as_str())
        );

        delete_configuration(&client, &name).await;
    })
    .await;
}

#[tokio::test]
async fn an_invalid_label_value_is_refused_and_garbage_reviews_do_not_stop_the_webhook() {
    with_namespace("webhook-abuse", |client, ns| async move {
        let name = configuration_name(&ns);
        let hook = start("webhook-abuse", &client, &ns, &name).await;

        let refused = create_pod(&client, &ns, &pod("bad", json!({LABEL: "Not_A_Name"}), json!([]))).await;
        let err = refused
            .expect_err("an invalid credential name is refused")
            .to_string();
        assert!(err.contains(LABEL), "{err}");

        let huge = vec![b'{'; 4 * 1024 * 1024];
        // Refused with 413 as soon as the size is known; the server may close the connection
        // before the client has finished sending, which the client sees as a broken request.
        match hook.https.post(&hook.url).body(huge).send().await {
            Ok(r) => assert_eq!(r.status().as_u16(), 413),
            Err(e) => assert!(e.is_request(), "{e}"),
        }
        for garbage in [&b"not json"[..], b"{}", b"{\"request\":{\"uid\":1}}", &[0xff; 64]] {
            let r = hook
                .https
                .post(&hook.url)
                .body(garbage.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 400);
        }
        let deep = "[".repeat(200_000);
        let r = hook.https.post(&hook.url).body(deep).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400);

        // The victim: a well-formed pod is still mutated.
        let ok = create_pod(
            &client,
            &ns,
            &pod("after", json!({LABEL: "app-creds"}), json!([])),
        )
        .await
        .unwrap();
        assert!(containers(&ok).iter().all(|c| env(c, FULL_URI_ENV).is_some()));
        delete_configuration(&client, &name).await;
    })
    .await;
}

#[tokio::test]
async fn generated_certificates_reach_the_secrets_and_the_ca_bundle_through_a_rotation() {
    with_namespace("webhook-certs", |client, ns| async move {
        let name = configuration_name(&ns);
        install_configuration(&client, &name, &ns, free_port()).await;
        let cfg = cert_config(&ns, &name);
        let now = Timestamp::now();
        let first = certs::reconcile(&client, &cfg, now).await.unwrap();
        assert_eq!(
            ca_bundle(&client, &name).await,
            certs::bundle(&first).into_bytes()
        );
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
        let tls = secrets.get(TLS_SECRET).await.unwrap();
        assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(secret_text(&tls, "tls.crt"), first.leaf.as_ref().unwrap().cert);
        let ca_key = &first.current.as_ref().unwrap().key;
        let mounted: Vec<String> = ["tls.crt", "tls.key", "ca.crt"]
            .iter()
            .map(|k| secret_text(&tls, k))
            .collect();
        assert!(
            mounted.iter().all(|v| !v.contains(ca_key.trim())),
            "the CA key stays in its own Secret"
        );
        assert_eq!(tls.data.as_ref().unwrap().len(), 3);

        // Nothing due: the same state, nothing rewritten.
        let again = certs::reconcile(&client, &cfg, now).await.unwrap();
        assert_eq!(again, first);
        let version = secrets.get(TLS_SECRET).await.unwrap().metadata.resource_version;
        assert_eq!(version, tls.metadata.resource_version);

        // Years later the CA is due: a successor is staged in the bundle, then promoted.
        let day = SignedDuration::from_hours(24);
        let late = now.checked_add(day * (365 * 5 - 170)).unwrap();
        let staged = certs::reconcile(&client, &cfg, late).await.unwrap();
        let next = staged.next.clone().expect("a staged CA");
        let bundle = String::from_utf8(ca_bundle(&client, &name).await).unwrap();
        assert!(bundle.contains(&next.cert) && bundle.contains(&first.current.as_ref().unwrap().cert));
        let promoted = certs::reconcile(&client, &cfg, late.checked_add(day * 2).unwrap())
            .await
            .unwrap();
        assert_eq!(promoted.current.as_ref().unwrap().cert, next.cert);
        let tls = secrets.get(TLS_SECRET).await.unwrap();
        assert_eq!(secret_text(&tls, "tls.crt"), promoted.leaf.as_ref().unwrap().cert);
        assert_eq!(secret_text(&tls, "ca.crt"), certs::bundle(&promoted));
        assert_eq!(
            ca_bundle(&client, &name).await,
            certs::bundle(&promoted).into_bytes()
        );
        delete_configuration(&client, &name).await;
    })
    .await;
}
