//! Writes to Kubernetes, all with server-side apply under one field manager: the Secret, the
//! status (skipped when unchanged), and Events.

use k8s_openapi::{
    api::{core::v1::Secret, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
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
/// (schema, quota, admission) without making it. A real write is recorded so that its own watch
/// event wakes no reconcile ([`super::own_writes`]); `Ok(true)` says another change of the Secret
/// was seen while the write was in flight (the caller reconciles again).
pub async fn write_secret(
    ctx: &Context,
    secret: &Secret,
    create: bool,
    dry_run: bool,
) -> Result<bool, kube::Error> {
    let ns = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    if dry_run {
        return send_secret(&api, secret, create, true).await.map(|_| false);
    }
    ctx.own_secret_writes.start(&ns, &name);
    let result = send_secret(&api, secret, create, false).await;
    let written = result.as_ref().ok().and_then(|s| s.resource_version());
    let touched = ctx.own_secret_writes.finish(&ns, &name, written.as_deref());
    result.map(|_| touched)
}

async fn send_secret(
    api: &Api<Secret>,
    secret: &Secret,
    create: bool,
    dry_run: bool,
) -> Result<Secret, kube::Error> {
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

/// Applies the whole Secret in one request: every key changes at once. As [`write_secret`].
pub async fn apply_secret(ctx: &Context, secret: &Secret) -> Result<bool, kube::Error> {
    write_secret(ctx, secret, false, false).await
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
///
/// Every Event is created on its own: kube's `Recorder` would keep a copy of the last Event of
/// each object and reason for six minutes to count repeats in a series (a burst of 10,000 issues
/// kept 10,000 Events in memory), and a series keeps the note of its first Event, so `kubectl
/// describe` would show the key of the first rotation for all of them. tcred publishes only on a
/// transition or a rotation, so there is nothing to aggregate.
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) {
    let regarding = obj.object_ref(&());
    let ns = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let now = jiff::Timestamp::now();
    let event = Event {
        action: Some(action.to_owned()),
        reason: Some(reason.to_owned()),
        note: Some(truncate_note(note)),
        type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
        event_time: Some(MicroTime(now)),
        reporting_controller: Some(ctx.reporter.controller.clone()),
        reporting_instance: Some(
            ctx.reporter
                .instance
                .clone()
                .unwrap_or_else(|| ctx.reporter.controller.clone()),
        ),
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                regarding.name.as_deref().unwrap_or(&ctx.reporter.controller),
                now.as_nanosecond()
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        regarding: Some(regarding),
        ..Default::default()
    };
    let api = Api::<Event>::namespaced(ctx.client.clone(), &ns);
    if let Err(error) = api.create(&PostParams::default(), &event).await {
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
