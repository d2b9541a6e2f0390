//! How the runtime enters a reconcile, the same for every kind: a span naming the object, panic
//! containment, the error policy, and the report of an object that cannot be read
//! (docs/controller.md §Reconcile flow).

use std::{fmt::Debug, future::Future, sync::Arc};

use kube::{
    Resource, ResourceExt,
    core::{DeserializeGuard, error_boundary::InvalidObject},
    runtime::controller::Action,
};
use serde::de::DeserializeOwned;
use tracing::{Instrument, Span, warn};

use super::{apply, context::Context, error::Error, guard};
use crate::api::condition::reasons;

/// `Kind/namespace/name`: how the error backoff and the busy retry key an object.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// The span of one reconcile: every line logged inside names the object (`kind`, `namespace`,
/// `object`: the field names log queries already use).
pub fn span<K: Resource<DynamicType = ()>>(obj: &K) -> Span {
    let namespace = obj.namespace();
    tracing::info_span!(
        "reconcile",
        kind = %K::kind(&()),
        namespace = namespace.as_deref(),
        object = %obj.name_any(),
    )
}

/// Runs `reconcile` in the object's span with a panic contained to the object: a success resets
/// its error backoff, a panic is logged and counted and becomes [`Error::Panicked`] (the caller
/// reports it on the object).
pub async fn contained<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    reconcile: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let span = span(obj);
    match guard::contained(reconcile.instrument(span.clone())).await {
        Ok(Ok(action)) => {
            ctx.error_backoff.succeeded(&object_key(obj));
            Ok(action)
        }
        Ok(Err(e)) => Err(e),
        Err(panic) => {
            ctx.metrics.record_panic();
            span.in_scope(|| tracing::error!(panic, "reconcile panicked; contained, retrying with backoff"));
            Err(Error::Panicked(panic))
        }
    }
}

/// Requeue policy for reconcile errors of every kind (Kubernetes API failures, contained
/// panics): retry with a per-object backoff; the object's own schedule is reached again on the
/// next successful reconcile.
pub fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.record_reconcile_error(error.metric_label());
    let delay = ctx.error_backoff.failed(&object_key(obj.as_ref()));
    span(obj.as_ref()).in_scope(|| warn!(%error, retry_in_seconds = delay.as_secs(), "reconcile failed"));
    Action::requeue(delay)
}

/// An object that does not deserialize (stored before a schema rule existed, or written around
/// validation): counted, logged and reported in an Event; it is left alone until it changes.
pub async fn report_invalid<K>(ctx: &Context, obj: &DeserializeGuard<K>, invalid: &InvalidObject)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    ctx.metrics.record_invalid_object();
    let kind = K::kind(&());
    warn!(error = %invalid.error, "skipping a {kind} that cannot be read");
    let message = invalid_message::<K>(invalid);
    apply::publish(ctx, obj, true, reasons::INVALID_SPEC, "Validate", message).await;
}

/// `the <Kind> cannot be read: <why>`.
pub fn invalid_message<K: Resource<DynamicType = ()>>(invalid: &InvalidObject) -> String {
    format!("the {} cannot be read: {}", K::kind(&()), invalid.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TemporaryCredential;

    #[test]
    fn objects_are_keyed_by_kind_namespace_and_name() {
        let tc = crate::controller::fixtures::tc("billing");
        assert_eq!(object_key(&tc), "TemporaryCredential/team-a/billing");
        let guard = DeserializeGuard::<TemporaryCredential>(Ok(tc));
        assert_eq!(object_key(&guard), "TemporaryCredential/team-a/billing");
    }
}
