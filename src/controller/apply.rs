//! Writes to Kubernetes, all with server-side apply under one field manager: the Secret, the
//! status (skipped when unchanged), Events, and rollout restarts.

use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, StatefulSet},
    core::v1::Secret,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType},
};
use serde_json::json;

use super::{context::Context, secret::rfc3339};
use crate::{
    api::{RestartKind, RolloutRestartTarget, TemporaryCredential, TemporaryCredentialStatus, annotations},
    metrics::NamespaceLabels,
};

/// The field manager of every tcred write.
pub const FIELD_MANAGER: &str = "tcred";

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies the whole Secret in one request: every key changes at once.
pub async fn apply_secret(ctx: &Context, secret: &Secret) -> Result<Secret, kube::Error> {
    let ns = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &apply_params(), &Patch::Apply(secret))
        .await
}

/// Writes `status` unless it equals what the object already has.
pub async fn patch_status(
    ctx: &Context,
    tc: &TemporaryCredential,
    status: &TemporaryCredentialStatus,
) -> Result<(), kube::Error> {
    if tc.status.as_ref() == Some(status) {
        return Ok(());
    }
    let ns = tc.namespace().unwrap_or_default();
    let body = json!({
        "apiVersion": TemporaryCredential::api_version(&()),
        "kind": TemporaryCredential::kind(&()),
        "status": status,
    });
    Api::<TemporaryCredential>::namespaced(ctx.client.clone(), &ns)
        .patch_status(&tc.name_any(), &apply_params(), &Patch::Apply(body))
        .await
        .map(|_| ())
}

/// Publishes an Event about `obj`. Failing to record an Event never fails a reconcile.
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(truncate_note(note)),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not record an Event");
    }
}

/// Events carry at most 1 kB of note.
fn truncate_note(mut note: String) -> String {
    const MAX: usize = 1000;
    if note.len() > MAX {
        let mut end = MAX;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    note
}

/// Restarts each target by stamping its pod template, as `kubectl rollout restart` does (with
/// tcred's own annotation). Returns the targets that could not be restarted, with the error.
pub async fn restart_targets(
    ctx: &Context,
    tc: &TemporaryCredential,
    targets: &[RolloutRestartTarget],
    now: Timestamp,
) -> Vec<(String, String)> {
    let ns = tc.namespace().unwrap_or_default();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {annotations::RESTARTED_AT: rfc3339(now)}}}}});
    let params = PatchParams::default();
    let mut failed = Vec::new();
    for t in targets {
        let c = ctx.client.clone();
        let res = match t.kind {
            RestartKind::Deployment => Api::<Deployment>::namespaced(c, &ns)
                .patch(&t.name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            RestartKind::StatefulSet => Api::<StatefulSet>::namespaced(c, &ns)
                .patch(&t.name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            RestartKind::DaemonSet => Api::<DaemonSet>::namespaced(c, &ns)
                .patch(&t.name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        };
        let what = format!("{:?}/{}", t.kind, t.name);
        match res {
            Ok(()) => {
                ctx.metrics
                    .rollout_restarts
                    .get_or_create(&NamespaceLabels {
                        namespace: ns.clone(),
                    })
                    .inc();
                publish(
                    ctx,
                    tc,
                    false,
                    "RolloutRestartTriggered",
                    "RolloutRestart",
                    format!("restarted {what} after the credential rotated"),
                )
                .await;
            }
            Err(e) => {
                let detail = match &e {
                    kube::Error::Api(s) => s.message.clone(),
                    other => other.to_string(),
                };
                publish(
                    ctx,
                    tc,
                    true,
                    "RolloutRestartFailed",
                    "RolloutRestart",
                    format!("could not restart {what}: {detail}"),
                )
                .await;
                failed.push((what, detail));
            }
        }
    }
    failed
}
