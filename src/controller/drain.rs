//! Acknowledging a dynamic sharder's drain (docs/sharding.md §A dynamic sharder): a
//! TemporaryCredential of this shard that carries the drain label of this process's ring
//! (`--controller-ring`) loses that label and its shard label and is not reconciled here any
//! more; the sharder then assigns it to its new shard, which resumes its schedule.

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
