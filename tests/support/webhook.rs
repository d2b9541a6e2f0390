//! Helpers of the webhook cluster tests: certificates for 127.0.0.1 written by tcred's own
//! certificate code into the test namespace, a MutatingWebhookConfiguration that points the real
//! API server at the operator process, and pod builders.
#![allow(dead_code)]

use std::{path::PathBuf, time::Duration};

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    core::v1::{Container, Pod, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::{Value, json};
use tcred::certs::{CertConfig, Policy};

use super::support::{secret_text, wait_for};

pub const CA_SECRET: &str = "tcred-ca";
pub const TLS_SECRET: &str = "tcred-tls";

/// Certificates for a webhook on 127.0.0.1, kept in `ns`, bundle written into `configuration`.
pub fn cert_config(ns: &str, configuration: &str) -> CertConfig {
    CertConfig {
        namespace: ns.to_owned(),
        ca_secret: CA_SECRET.into(),
        tls_secret: TLS_SECRET.into(),
        dns_names: vec!["127.0.0.1".into(), "localhost".into()],
        webhook_configuration: Some(configuration.to_owned()),
        policy: Policy::default(),
    }
}

/// Writes the serving Secret's pair to files in `dir`, as a Secret volume would: (cert, key, CA).
pub async fn write_tls_files(client: &Client, ns: &str, dir: &std::path::Path) -> (PathBuf, PathBuf, String) {
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .get(TLS_SECRET)
        .await
        .expect("the serving Secret");
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, secret_text(&secret, "tls.crt")).unwrap();
    std::fs::write(&key, secret_text(&secret, "tls.key")).unwrap();
    (cert, key, secret_text(&secret, "ca.crt"))
}

/// A MutatingWebhookConfiguration like the chart's, but scoped to one namespace and pointing at
/// `https://127.0.0.1:<port>/mutate-pods` (no caBundle yet: tcred's certificate code writes it).
pub async fn install_configuration(client: &Client, name: &str, ns: &str, port: u16) {
    install_configuration_at(client, name, ns, &format!("https://127.0.0.1:{port}/mutate-pods")).await;
}

/// As [`install_configuration`], pointing the API server at `url`.
pub async fn install_configuration_at(client: &Client, name: &str, ns: &str, url: &str) {
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "pod-identity.tcred.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 5,
            "clientConfig": {"url": url},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": [ns]}]},
            "objectSelector": {"matchExpressions": [{"key": "tcred.dev/pod-identity", "operator": "Exists"}]},
        }],
    }))
    .unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &mwc)
        .await
        .expect("create the MutatingWebhookConfiguration");
}

pub async fn delete_configuration(client: &Client, name: &str) {
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

pub async fn ca_bundle(client: &Client, name: &str) -> Vec<u8> {
    let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(name)
        .await
        .unwrap();
    mwc.webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .map(|b| b.0)
        .unwrap_or_default()
}

/// Pods need the namespace's `default` ServiceAccount, which the controller-manager creates.
pub async fn wait_default_service_account(client: &Client, ns: &str) {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    wait_for(Duration::from_secs(30), "the default ServiceAccount", || {
        let api = api.clone();
        async move { api.get_opt("default").await.ok().flatten() }
    })
    .await;
}

/// A pod with `labels`, containers `app` and `sidecar` (with `env` each) and init container `init`.
pub fn pod(name: &str, labels: Value, env: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [
                {"name": "app", "image": "app", "env": env},
                {"name": "sidecar", "image": "sidecar"},
            ],
        },
    }))
    .unwrap()
}

pub async fn create_pod(client: &Client, ns: &str, pod: &Pod) -> Result<Pod, kube::Error> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), pod)
        .await
}

/// Every container and init container of `pod`.
pub fn containers(pod: &Pod) -> Vec<&Container> {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect()
}

pub fn env<'a>(c: &'a Container, name: &str) -> Option<&'a k8s_openapi::api::core::v1::EnvVar> {
    c.env.iter().flatten().find(|e| e.name == name)
}

/// Waits until the API server calls the webhook for `ns`: the server loads a new or edited
/// configuration (the URL, then the caBundle tcred writes) asynchronously, so the webhook
/// answering is not enough. A dry-run create of an opted-in pod comes back mutated then.
pub async fn wait_webhook_effective(client: &Client, ns: &str) {
    wait_default_service_account(client, ns).await;
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let probe = pod(
        "webhook-probe",
        json!({tcred::webhook::mutate::LABEL: "probe"}),
        json!([]),
    );
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for(
        Duration::from_secs(30),
        "the API server to call the webhook",
        || async {
            let stored = api.create(&dry_run, &probe).await.ok()?;
            let mutated = containers(&stored)
                .iter()
                .all(|c| env(c, tcred::webhook::mutate::FULL_URI_ENV).is_some());
            mutated.then_some(())
        },
    )
    .await;
}
