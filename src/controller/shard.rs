//! The controller's side of sharding (docs/sharding.md) that writes: a dynamic sharder's drain
//! acknowledged, and a managed Secret's shard labels kept equal to its credential's.
//!
//! A TemporaryCredential of this shard that carries the drain label of this process's ring
//! (`--controller-ring`) loses that label and its shard label and is not reconciled here any
//! more; the sharder then assigns it to its new shard, which resumes its schedule.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use tracing::info;

use super::{context::Context, error::Error};
use crate::{api::TemporaryCredential, shard};

/// Whether `tc` is being drained from this shard; if so, it is let go (its labels removed).
pub async fn let_go(ctx: &Context, tc: &TemporaryCredential) -> Result<bool, Error> {
    let Some(ring) = ctx.config.controller_ring.as_deref() else {
        return Ok(false);
    };
    let Some(patch) = shard::drain_acknowledgement(tc.labels(), ring) else {
        return Ok(false);
    };
    let api = Api::<TemporaryCredential>::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default());
    match api
        .patch(&tc.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(Error::Kube(e)),
    }
    info!(ring, "drained: the object is handed back to the sharder");
    Ok(true)
}

/// Removes the shard labels the live Secret (labels `live`) has and `written` (the Secret just
/// applied for the credential) has not. The apply alone does not remove them when they were set
/// by the Secret's creation, which server-side apply counts as another owner's; a Secret left
/// with a shard label its credential lost would drop out of its new shard's Secret watch.
pub async fn drop_stale_shard_labels(
    ctx: &Context,
    written: &Secret,
    live: Option<&BTreeMap<String, String>>,
) -> Result<(), kube::Error> {
    let empty = BTreeMap::new();
    let want = written.metadata.labels.as_ref().unwrap_or(&empty);
    let Some(patch) = shard::stale_label_removal(live.unwrap_or(&empty), want) else {
        return Ok(());
    };
    Api::<Secret>::namespaced(ctx.client.clone(), &written.namespace().unwrap_or_default())
        .patch(
            &written.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(|_| ())
}
