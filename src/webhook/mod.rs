//! The pod-identity mutating admission webhook, served by the controller over TLS at
//! `/mutate-pods` when `--webhook-address` is set. The mutation itself is the pure
//! [`mutate::mutate`]; this module decodes the AdmissionReview (v1), answers it and serves it.
//!
//! `failurePolicy` (in the chart's MutatingWebhookConfiguration) is `Fail`: only pods that carry
//! the opt-in label are sent here (an `objectSelector`), and such a pod created without the
//! injection would start without credentials and fail later, far from the cause. With `Fail` the
//! create is refused while the webhook is down and the workload controller retries. Pods without
//! the label never depend on the webhook.

pub mod mutate;

use std::net::SocketAddr;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use k8s_openapi::api::core::v1::Pod;
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use tracing::{info, warn};

pub use self::mutate::Injection;

/// The webhook's path.
pub const PATH: &str = "/mutate-pods";
/// Largest AdmissionReview accepted: a Pod is at most ~1.5 MiB in etcd, and the review wraps it
/// with little more.
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

#[derive(Clone, Debug, clap::Args)]
pub struct WebhookArgs {
    /// Address of the pod-identity mutating webhook (HTTPS, path `/mutate-pods`; served by every
    /// replica). Empty: off.
    #[arg(long, env = "TCRED_WEBHOOK_ADDRESS")]
    pub webhook_address: Option<SocketAddr>,
    /// Audience of the ServiceAccount token the webhook projects into pods (must equal the
    /// credentials endpoint's --pod-identity-audience).
    #[arg(long, default_value = "tcred.dev", env = "TCRED_WEBHOOK_TOKEN_AUDIENCE")]
    pub webhook_token_audience: String,
    /// Port of the node agent the injected URI points at.
    #[arg(long, default_value_t = 8182, env = "TCRED_WEBHOOK_AGENT_PORT")]
    pub webhook_agent_port: u16,
}

impl WebhookArgs {
    pub fn injection(&self) -> Injection {
        Injection {
            audience: self.webhook_token_audience.clone(),
            agent_port: self.webhook_agent_port,
            ..Injection::default()
        }
    }
}

/// The answer to one admission request: pods being created that opted in get the patch; an
/// opted-in pod with an invalid label value is refused with the reason; anything else is allowed
/// unchanged.
pub fn review(req: &AdmissionRequest<Pod>, injection: &Injection) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    let (Operation::Create, Some(pod)) = (&req.operation, req.object.as_ref()) else {
        return resp;
    };
    let namespace = req.namespace.as_deref().unwrap_or_default();
    let pod_name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or_default();
    match mutate::mutate(pod, namespace, injection) {
        Ok(None) => resp,
        Ok(Some(patch)) => {
            info!(
                namespace,
                pod = pod_name,
                credential = mutate::opted_in(pod).unwrap_or_default(),
                "injecting pod identity"
            );
            resp.with_patch(patch)
                .unwrap_or_else(|e| AdmissionResponse::invalid(format!("encoding the patch: {e}")))
        }
        Err(invalid) => {
            warn!(namespace, pod = pod_name, reason = %invalid, "refusing an opted-in pod");
            resp.deny(invalid.to_string())
        }
    }
}

/// Decodes an AdmissionReview body and answers it; garbage is a `400` with a short reason.
pub fn answer(body: &[u8], injection: &Injection) -> Result<AdmissionReview<DynamicObject>, String> {
    let review: AdmissionReview<Pod> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview of a Pod: {e}"))?;
    let req: AdmissionRequest<Pod> = review
        .try_into()
        .map_err(|_| "the AdmissionReview carries no request".to_owned())?;
    Ok(self::review(&req, injection).into_review())
}

async fn mutate_pods(State(injection): State<Injection>, body: Bytes) -> Response {
    match answer(&body, &injection) {
        Ok(review) => Json(review).into_response(),
        Err(reason) => {
            warn!(%reason, bytes = body.len(), "refusing a malformed admission review");
            (StatusCode::BAD_REQUEST, reason).into_response()
        }
    }
}

/// The webhook's routes (serve them over TLS). Bodies over [`MAX_REVIEW_BYTES`] are `413`.
pub fn router(injection: Injection) -> Router {
    Router::new()
        .route(PATH, post(mutate_pods))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(injection)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn review_json(operation: &str, labels: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0b5c9a4e-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "team-a",
                "operation": operation,
                "userInfo": {"username": "alice"},
                "object": {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"generateName": "app-", "labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "app"}]}
                },
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn response(body: &[u8]) -> Value {
        serde_json::to_value(answer(body, &Injection::default()).unwrap()).unwrap()["response"].clone()
    }

    #[test]
    fn an_opted_in_pod_gets_a_json_patch() {
        let r = response(&review_json("CREATE", json!({mutate::LABEL: "creds"})));
        assert_eq!(r["uid"], "0b5c9a4e-1");
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        // kube encodes the patch bytes as a JSON array of numbers, which the API server's
        // decoder accepts for a []byte field like base64 (the cluster test proves it).
        let patch: Vec<u8> = serde_json::from_value(r["patch"].clone()).unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        assert!(
            patch.to_string().contains("/v1/credentials/team-a/creds"),
            "{patch}"
        );
    }

    #[test]
    fn other_pods_and_other_operations_pass_unchanged() {
        for body in [
            review_json("CREATE", json!({"app": "x"})),
            review_json("UPDATE", json!({mutate::LABEL: "creds"})),
        ] {
            let r = response(&body);
            assert_eq!(r["allowed"], true);
            assert!(r.get("patch").is_none(), "{r}");
        }
    }

    #[test]
    fn an_invalid_label_value_is_denied_with_the_reason() {
        let r = response(&review_json("CREATE", json!({mutate::LABEL: "Not_A_Name"})));
        assert_eq!(r["allowed"], false);
        assert!(
            r["status"]["message"].as_str().unwrap().contains(mutate::LABEL),
            "{r}"
        );
        assert!(r.get("patch").is_none());
    }

    #[test]
    fn garbage_is_refused_without_a_panic() {
        let deep = "[".repeat(100_000);
        for body in [
            &b""[..],
            b"null",
            b"{}",
            b"{\"request\": 5}",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            deep.as_bytes(),
            &[0xff, 0xfe, 0x00],
        ] {
            assert!(answer(body, &Injection::default()).is_err());
        }
    }
}
