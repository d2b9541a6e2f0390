//! Writes to Kubernetes, all with server-side apply under one field manager: the Secret, the
//! status (skipped when unchanged), and Events.

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::events::{Event, EventType},
};
use std::fmt::Debug;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::context::{Context, Written};
use crate::api::{TemporaryCredential, TemporaryCredentialStatus};

/// The field manager of every tcred write.
pub const FIELD_MANAGER: &str = "tcred";

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Writes the whole Secret in one request, so every key changes at once: created when `create`
/// (the reconcile found no Secret: if one appeared meanwhile the create fails with 409 and the
/// Secret is not adopted), applied otherwise. With `dry_run` the API server checks the write
/// (schema, quota, admission) without making it.
pub async fn write_secret(
    ctx: &Context,
    secret: &Secret,
    create: bool,
    dry_run: bool,
) -> Result<Secret, kube::Error> {
    let ns = secret.namespace().unwrap_or_default();
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    if create {
        let params = PostParams {
            dry_run,
            field_manager: Some(FIELD_MANAGER.to_owned()),
        };
        return api.create(&params, secret).await;
    }
    let mut params = apply_params();
    params.dry_run = dry_run;
    api.patch(&secret.name_any(), &params, &Patch::Apply(secret))
        .await
}

/// Applies the whole Secret in one request: every key changes at once.
pub async fn apply_secret(ctx: &Context, secret: &Secret) -> Result<Secret, kube::Error> {
    let ns = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &apply_params(), &Patch::Apply(secret))
        .await
}

/// Writes a status by server-side apply under tcred's field manager: the one way every status
/// (TemporaryCredential, either source kind, an object that cannot be read) is written.
pub async fn write_status<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(body)).await
}

/// Writes a TemporaryCredential's `status` unless it equals what the object already has, and
/// records the write so the next reconcile does not trust a cache that has not seen it yet.
pub async fn patch_status(
    ctx: &Context,
    tc: &TemporaryCredential,
    status: &TemporaryCredentialStatus,
) -> Result<(), kube::Error> {
    if tc.status.as_ref() == Some(status) {
        return Ok(());
    }
    let ns = tc.namespace().unwrap_or_default();
    let name = tc.name_any();
    let api = Api::<TemporaryCredential>::namespaced(ctx.client.clone(), &ns);
    let written = write_status(&api, &name, status).await?;
    if let (Some(uid), Some(resource_version)) = (written.uid(), written.resource_version()) {
        ctx.status_writes.record(
            &ns,
            &name,
            Written {
                uid,
                resource_version,
            },
        );
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let note = "é".repeat(700);
        let cut = truncate_note(note);
        assert!(cut.len() <= 1000);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
