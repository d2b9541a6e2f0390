//! Rollout restarts after a rotation, for consumers that read the credential once at start-up:
//! the targets a TemporaryCredential names or selects get their pod template stamped, as
//! `kubectl rollout restart` does (an Argo Rollouts `Rollout` gets `spec.restartAt`, as `kubectl
//! argo rollouts restart` does), unless their pods already started after the rotation. A
//! workload opts in with the annotation `tcred.dev/restart-on-rotation` listing the
//! TemporaryCredential (or `*`): whoever may edit a TemporaryCredential may not restart every
//! workload in the namespace through it.

use std::{collections::BTreeMap, fmt::Debug};

use jiff::{RoundMode, Timestamp, TimestampRound, Unit};
use k8s_openapi::{
    NamespaceResourceScope, Resource as _,
    api::apps::v1::{DaemonSet, Deployment, StatefulSet},
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    core::Selector,
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{apply::publish, context::Context, error::kube_message};
use crate::api::{
    RestartKind, RolloutRestartTarget, TemporaryCredential, TemporaryCredentialStatus, annotations,
    condition::reasons, opted_in,
};

/// The annotation `kubectl rollout restart` stamps on a pod template.
const KUBECTL_RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// The value of a restart stamp: milliseconds, so two restarts within one second still differ
/// (an unchanged pod template would roll nothing).
fn restart_stamp(now: Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Whether a workload created at `created`, whose pod template carries these annotations, started
/// its pods after a rotation made at `rotated_at` (created after it, or restarted after it by
/// tcred or `kubectl rollout restart`): its pods then already read the new Secret, and restarting
/// them again only churns. The rotation time is rounded up to the next second, because status
/// times and the stamps have second precision: an ambiguous case restarts rather than skips.
pub fn restarted_since(
    annotations: Option<&BTreeMap<String, String>>,
    created: Option<Timestamp>,
    rotated_at: Timestamp,
) -> bool {
    let Ok(after) = rotated_at.round(TimestampRound::new().smallest(Unit::Second).mode(RoundMode::Ceil))
    else {
        return false;
    };
    let stamps = [annotations::RESTARTED_AT, KUBECTL_RESTARTED_AT]
        .iter()
        .filter_map(|key| annotations?.get(*key))
        .filter_map(|v| v.parse::<Timestamp>().ok());
    created.into_iter().chain(stamps).any(|t| t >= after)
}

/// What a status owes the restart targets of its last rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owed {
    /// Nothing to restart now; the outcome to fold in.
    Settled(Outcome),
    /// The rotation made at `rotated_at` has not been followed by its restarts yet.
    Due { rotated_at: Timestamp },
}

/// How the restarts of the last rotation stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// None are owed any more (none to make, or all made): the rotation is recorded as restarted.
    Done,
    /// Recorded already; nothing changes.
    Recorded,
    /// Some failed: still owed, retried soon.
    Failed,
}

impl Outcome {
    /// The outcome of a restart run that could not restart `failed`.
    pub fn of_failures<T>(failed: &[T]) -> Self {
        if failed.is_empty() {
            Self::Done
        } else {
            Self::Failed
        }
    }
}

/// What `status` (as just built for this reconcile) owes: restarts follow every rotation but the
/// first issue, once, and only when the object names restart targets.
pub fn owed(status: &TemporaryCredentialStatus, has_targets: bool, now: Timestamp) -> Owed {
    if !has_targets || status.rotations < 2 {
        return Owed::Settled(Outcome::Done);
    }
    if status.restarted_rotation.unwrap_or(0) >= status.rotations {
        return Owed::Settled(Outcome::Recorded);
    }
    Owed::Due {
        rotated_at: status.last_rotation_time.as_ref().map_or(now, |t| t.0),
    }
}

/// Folds a restart outcome into the status, and says whether restarts remain owed.
pub fn fold(mut status: TemporaryCredentialStatus, outcome: Outcome) -> (TemporaryCredentialStatus, bool) {
    match outcome {
        Outcome::Done => {
            status.restarted_rotation = Some(status.rotations);
            (status, false)
        }
        Outcome::Recorded => (status, false),
        Outcome::Failed => (status, true),
    }
}

/// Workloads tcred restarts: by stamping the pod template, or as their own controller documents.
trait Workload:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug
{
    /// Whether the API is an add-on (a CRD): its absence, or RBAC that leaves it out, is reported
    /// once per rotation instead of being retried (docs/api.md#rollout-restarts).
    const OPTIONAL_API: bool = false;

    fn template_annotations(&self) -> Option<&BTreeMap<String, String>>;

    /// Whether its pods started after the rotation made at `rotated_at`.
    fn restarted_since(&self, rotated_at: Timestamp) -> bool {
        let created = self.meta().creation_timestamp.as_ref().map(|t| t.0);
        restarted_since(self.template_annotations(), created, rotated_at)
    }

    /// The `spec` part of the merge patch that restarts it at `now`.
    fn restart_spec(now: Timestamp) -> Value {
        json!({"template": {"metadata": {"annotations": {annotations::RESTARTED_AT: restart_stamp(now)}}}})
    }
}

macro_rules! workload {
    ($($kind:ty),*) => {$(
        impl Workload for $kind {
            fn template_annotations(&self) -> Option<&BTreeMap<String, String>> {
                self.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()
            }
        }
    )*};
}
workload!(Deployment, StatefulSet, DaemonSet);

/// The part of an Argo Rollouts `Rollout` (`argoproj.io/v1alpha1`) tcred reads; the rest of the
/// object is left alone (merge patches touch `spec.restartAt` only).
#[derive(Clone, Debug, Deserialize)]
pub struct Rollout {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<RolloutSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RolloutSpec {
    #[serde(default)]
    restart_at: Option<String>,
    #[serde(default)]
    template: Option<RolloutTemplate>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct RolloutTemplate {
    #[serde(default)]
    metadata: Option<ObjectMeta>,
}

impl k8s_openapi::Resource for Rollout {
    const API_VERSION: &'static str = "argoproj.io/v1alpha1";
    const GROUP: &'static str = "argoproj.io";
    const KIND: &'static str = "Rollout";
    const VERSION: &'static str = "v1alpha1";
    const URL_PATH_SEGMENT: &'static str = "rollouts";
    type Scope = NamespaceResourceScope;
}

impl k8s_openapi::Metadata for Rollout {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Argo's `restartAt` for a restart at `now`: RFC 3339 in whole seconds (what `kubectl argo
/// rollouts restart` writes), rounded up, so every pod created up to `now` is older than it and
/// is recreated by Argo's controller (which waits for a `restartAt` still in the future).
fn rollout_restart_at(now: Timestamp) -> String {
    let up = now
        .round(TimestampRound::new().smallest(Unit::Second).mode(RoundMode::Ceil))
        .unwrap_or(now);
    up.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Workload for Rollout {
    const OPTIONAL_API: bool = true;

    fn template_annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.spec
            .as_ref()?
            .template
            .as_ref()?
            .metadata
            .as_ref()?
            .annotations
            .as_ref()
    }

    /// Created after the rotation, or asked to restart at or after it (`spec.restartAt`, by tcred
    /// or `kubectl argo rollouts restart`).
    fn restarted_since(&self, rotated_at: Timestamp) -> bool {
        let restart_at = self.spec.as_ref().and_then(|s| s.restart_at.as_deref());
        let stamps =
            restart_at.map(|v| BTreeMap::from([(annotations::RESTARTED_AT.to_owned(), v.to_owned())]));
        let created = self.meta().creation_timestamp.as_ref().map(|t| t.0);
        restarted_since(stamps.as_ref(), created, rotated_at)
    }

    fn restart_spec(now: Timestamp) -> Value {
        json!({"restartAt": rollout_restart_at(now)})
    }
}

/// What became of one workload named or selected by a restart target.
#[derive(Debug, PartialEq)]
enum Restart {
    Restarted,
    AlreadyRestarted,
    /// The workload does not list this TemporaryCredential in `tcred.dev/restart-on-rotation`.
    NotAllowed,
    /// An add-on API (Argo Rollouts) is not installed, or tcred may not use it: reported once
    /// per rotation, not retried (a new rotation, or a change to the object, tries again).
    Unavailable(String),
}

/// Whether a workload with these annotations lets TemporaryCredential `credential` restart it.
pub fn restart_allowed(workload_annotations: &BTreeMap<String, String>, credential: &str) -> bool {
    opted_in(workload_annotations, annotations::RESTART_ON_ROTATION, credential)
}

/// An empty selector selects every workload: refused (the schema refuses it too).
pub fn selects_everything(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && selector.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Restarts the workloads of each target by stamping their pod template, as `kubectl rollout
/// restart` does (with tcred's own annotation), unless they were already restarted after the
/// rotation made at `rotated_at`. Returns what could not be restarted, with the reason.
pub async fn restart_targets(
    ctx: &Context,
    tc: &TemporaryCredential,
    targets: &[RolloutRestartTarget],
    rotated_at: Timestamp,
    now: Timestamp,
) -> Vec<(String, String)> {
    let ns = tc.namespace().unwrap_or_default();
    let credential = tc.name_any();
    let mut failed = Vec::new();
    for t in targets {
        let c = ctx.client.clone();
        let at = When { rotated_at, now };
        let outcomes = match t.kind {
            RestartKind::Deployment => {
                restart_target(Api::<Deployment>::namespaced(c, &ns), t, &credential, at).await
            }
            RestartKind::StatefulSet => {
                restart_target(Api::<StatefulSet>::namespaced(c, &ns), t, &credential, at).await
            }
            RestartKind::DaemonSet => {
                restart_target(Api::<DaemonSet>::namespaced(c, &ns), t, &credential, at).await
            }
            RestartKind::Rollout => {
                let api = Api::<Rollout>::namespaced(c.clone(), &ns);
                let outcomes = restart_target(api, t, &credential, at).await;
                unavailable_api(&c, outcomes).await
            }
        };
        if outcomes.is_empty() {
            let note = format!(
                "no {:?} in {ns} matches the rolloutRestartTarget selector",
                t.kind
            );
            publish(ctx, tc, true, "RolloutRestartNoMatch", "RolloutRestart", note).await;
        }
        for (what, outcome) in outcomes {
            if let Err(detail) = &outcome {
                failed.push((what.clone(), detail.clone()));
            }
            announce(ctx, tc, &what, outcome).await;
        }
    }
    failed
}

/// The Event (and metric) for one workload's restart outcome.
async fn announce(ctx: &Context, tc: &TemporaryCredential, what: &str, outcome: Result<Restart, String>) {
    let credential = tc.name_any();
    let (warning, reason, note) = match outcome {
        Ok(Restart::Restarted) => {
            ctx.metrics.record_restart(&tc.namespace().unwrap_or_default());
            (
                false,
                "RolloutRestartTriggered",
                format!("restarted {what} after the credential rotated"),
            )
        }
        Ok(Restart::AlreadyRestarted) => (
            false,
            "RolloutRestartCoalesced",
            format!(
                "{what} started its pods after the credential rotated (created or restarted since); not restarting it again"
            ),
        ),
        // Not a failure: retrying would not change the workload's mind. Restarts run once per
        // rotation, so this warns once per rotation.
        Ok(Restart::NotAllowed) => (
            true,
            reasons::RESTART_NOT_ALLOWED,
            format!(
                "not restarting {what}: it has not opted in; annotate it `{}={credential}` (a comma-separated list, or `*`)",
                annotations::RESTART_ON_ROTATION
            ),
        ),
        Ok(Restart::Unavailable(detail)) => (
            true,
            reasons::RESTART_UNAVAILABLE,
            format!("not restarting {what}: {detail}; not retried until the next rotation"),
        ),
        Err(detail) => (
            true,
            "RolloutRestartFailed",
            format!("could not restart {what}: {detail}"),
        ),
    };
    publish(ctx, tc, warning, reason, "RolloutRestart", note).await;
}

/// The rotation a restart follows, and the time now.
#[derive(Clone, Copy, Debug)]
struct When {
    rotated_at: Timestamp,
    now: Timestamp,
}

/// The workloads one target names or selects, each with its outcome. Empty when a selector
/// matches nothing.
async fn restart_target<K: Workload>(
    api: Api<K>,
    t: &RolloutRestartTarget,
    credential: &str,
    at: When,
) -> Vec<(String, Result<Restart, String>)> {
    let kind = format!("{:?}", t.kind);
    let found = match (&t.name, &t.selector) {
        (None, Some(selector)) if selects_everything(selector) => Err((
            format!("{kind} selector"),
            Err(
                "an empty selector would select every workload; set matchLabels or matchExpressions"
                    .to_string(),
            ),
        )),
        (Some(name), _) => match api.get_opt(name).await {
            Ok(Some(w)) => Ok(vec![w]),
            Ok(None) => Err((format!("{kind}/{name}"), Err("not found".to_string()))),
            Err(e) => Err((format!("{kind}/{name}"), kube_failure::<K>(&e))),
        },
        (None, Some(selector)) => match Selector::try_from(selector.clone()) {
            Ok(sel) => api
                .list(&ListParams::default().labels_from(&sel))
                .await
                .map(|l| l.items)
                .map_err(|e| (format!("{kind} selected by {sel}"), kube_failure::<K>(&e))),
            Err(e) => Err((format!("{kind} selector"), Err(format!("invalid selector: {e}")))),
        },
        (None, None) => Err((kind.clone(), Err("neither name nor selector is set".into()))),
    };
    let workloads = match found {
        Ok(w) => w,
        Err((what, outcome)) => return vec![(what, outcome)],
    };
    let mut outcomes = Vec::with_capacity(workloads.len());
    for w in workloads {
        let what = format!("{kind}/{}", w.name_any());
        if !restart_allowed(w.annotations(), credential) {
            outcomes.push((what, Ok(Restart::NotAllowed)));
            continue;
        }
        outcomes.push((what, restart_one(&api, w, at.rotated_at, at.now).await));
    }
    outcomes
}

/// What a refused API call means: for an add-on API, a 403 (tcred's RBAC leaves it out) is
/// [`Restart::Unavailable`]; anything else is a failure, retried.
fn kube_failure<K: Workload>(e: &kube::Error) -> Result<Restart, String> {
    match e {
        kube::Error::Api(s) if K::OPTIONAL_API && s.code == 403 => Ok(Restart::Unavailable(format!(
            "tcred may not use {}s ({}): enable the chart value rbac.rolloutRestarts.argoRollouts",
            K::kind(&()),
            K::api_version(&())
        ))),
        _ => Err(kube_message(e)),
    }
}

/// Failures of a Rollout target when the Rollout API is not installed (a 404 for every name and
/// list) become [`Restart::Unavailable`]: retrying every few seconds would change nothing.
async fn unavailable_api(
    client: &kube::Client,
    outcomes: Vec<(String, Result<Restart, String>)>,
) -> Vec<(String, Result<Restart, String>)> {
    if outcomes.iter().all(|(_, o)| o.is_ok()) {
        return outcomes;
    }
    let installed = match client.list_api_group_resources(Rollout::API_VERSION).await {
        Ok(list) => list.resources.iter().any(|r| r.name == Rollout::URL_PATH_SEGMENT),
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        // Discovery failed for another reason: keep the failures, retried as usual.
        Err(_) => return outcomes,
    };
    if installed {
        return outcomes;
    }
    let detail = format!(
        "the Rollout API ({}) is not installed in this cluster",
        Rollout::API_VERSION
    );
    outcomes
        .into_iter()
        .map(|(what, o)| (what, o.or_else(|_| Ok(Restart::Unavailable(detail.clone())))))
        .collect()
}

/// Restarts one workload, conditional on the version read: when another writer (tcred
/// restarting it for another credential, or a person) changed it meanwhile, it is read again and
/// the decision made again.
async fn restart_one<K: Workload>(
    api: &Api<K>,
    mut w: K,
    rotated_at: Timestamp,
    now: Timestamp,
) -> Result<Restart, String> {
    let name = w.name_any();
    for _ in 0..3 {
        if w.restarted_since(rotated_at) {
            return Ok(Restart::AlreadyRestarted);
        }
        let patch = json!({
            "metadata": {"resourceVersion": w.resource_version()},
            "spec": K::restart_spec(now),
        });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(Restart::Restarted),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                w = match api.get_opt(&name).await {
                    Ok(Some(w)) => w,
                    Ok(None) => return Err("deleted while restarting it".into()),
                    Err(e) => return kube_failure::<K>(&e),
                };
            }
            Err(e) => return kube_failure::<K>(&e),
        }
    }
    Err("it kept changing while restarting it; retrying after the next change".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotated(rotations: i64, restarted: Option<i64>) -> TemporaryCredentialStatus {
        TemporaryCredentialStatus {
            rotations,
            restarted_rotation: restarted,
            last_rotation_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(1_000).unwrap(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn the_first_issue_and_objects_without_targets_owe_no_restarts() {
        let now = Timestamp::from_second(2_000).unwrap();
        assert_eq!(owed(&rotated(1, None), true, now), Owed::Settled(Outcome::Done));
        assert_eq!(
            owed(&rotated(5, Some(2)), false, now),
            Owed::Settled(Outcome::Done)
        );
        let (status, still_owed) = fold(rotated(5, Some(2)), Outcome::Done);
        assert_eq!((status.restarted_rotation, still_owed), (Some(5), false));
    }

    #[test]
    fn a_rotation_is_restarted_once_and_a_failed_restart_stays_owed() {
        let now = Timestamp::from_second(2_000).unwrap();
        let due = rotated(3, Some(2));
        assert_eq!(
            owed(&due, true, now),
            Owed::Due {
                rotated_at: Timestamp::from_second(1_000).unwrap()
            }
        );
        let (failed, still_owed) = fold(due.clone(), Outcome::of_failures(&["deployment/web"]));
        assert_eq!((failed.restarted_rotation, still_owed), (Some(2), true));
        let (done, still_owed) = fold(due, Outcome::of_failures::<&str>(&[]));
        assert_eq!((done.restarted_rotation, still_owed), (Some(3), false));
        // recorded already: nothing changes and nothing is restarted again
        assert_eq!(owed(&done, true, now), Owed::Settled(Outcome::Recorded));
        let (same, still_owed) = fold(done.clone(), Outcome::Recorded);
        assert_eq!((same, still_owed), (done, false));
    }

    fn stamped(key: &str, value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(key.to_string(), value.to_string())])
    }

    #[test]
    fn a_workload_is_restarted_only_when_it_lists_the_credential() {
        let opt = |v: &str| stamped(annotations::RESTART_ON_ROTATION, v);
        assert!(restart_allowed(&opt("billing"), "billing"));
        assert!(restart_allowed(&opt("payments, billing"), "billing"));
        assert!(restart_allowed(&opt("*"), "billing"));
        assert!(!restart_allowed(&opt("billing-old"), "billing"));
        assert!(!restart_allowed(&BTreeMap::new(), "billing"));
        // the pod template's restart stamp is not an opt-in
        assert!(!restart_allowed(
            &stamped(annotations::RESTARTED_AT, "billing"),
            "billing"
        ));
    }

    #[test]
    fn an_empty_selector_is_refused() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        assert!(selects_everything(&LabelSelector::default()));
        assert!(selects_everything(&LabelSelector {
            match_labels: Some(BTreeMap::new()),
            match_expressions: Some(vec![]),
        }));
        assert!(!selects_everything(&LabelSelector {
            match_labels: Some(stamped("app", "web")),
            match_expressions: None,
        }));
        assert!(!selects_everything(&LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: "Exists".into(),
                values: None,
            }]),
        }));
    }

    #[test]
    fn a_restart_after_the_rotation_counts_for_it() {
        let rotated: Timestamp = "2026-11-24T10:00:00.4Z".parse().unwrap();
        let later = stamped(annotations::RESTARTED_AT, "2026-11-24T10:00:05Z");
        assert!(restarted_since(Some(&later), None, rotated));
        let by_kubectl = stamped(KUBECTL_RESTARTED_AT, "2026-11-24T10:00:01+00:00");
        assert!(restarted_since(Some(&by_kubectl), None, rotated));
    }

    #[test]
    fn a_workload_created_after_the_rotation_already_reads_it() {
        let rotated: Timestamp = "2026-11-24T10:00:00.4Z".parse().unwrap();
        let created: Timestamp = "2026-11-24T10:00:01Z".parse().unwrap();
        assert!(restarted_since(None, Some(created), rotated));
        let old: Timestamp = "2026-11-24T09:00:00Z".parse().unwrap();
        assert!(!restarted_since(None, Some(old), rotated));
    }

    #[test]
    fn a_restart_before_or_maybe_before_the_rotation_does_not() {
        let rotated: Timestamp = "2026-11-24T10:00:00.4Z".parse().unwrap();
        let before = stamped(annotations::RESTARTED_AT, "2026-11-24T09:59:59Z");
        assert!(!restarted_since(Some(&before), None, rotated));
        // the same second: the stamp may have been written before the Secret was
        let same_second = stamped(annotations::RESTARTED_AT, "2026-11-24T10:00:00Z");
        assert!(!restarted_since(Some(&same_second), None, rotated));
        let exact: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        assert!(restarted_since(Some(&same_second), None, exact));
    }

    #[test]
    fn stamps_differ_within_a_second_and_read_back() {
        let a: Timestamp = "2026-11-24T10:00:00.100Z".parse().unwrap();
        let b: Timestamp = "2026-11-24T10:00:00.900Z".parse().unwrap();
        assert_eq!(restart_stamp(a), "2026-11-24T10:00:00.100Z");
        assert_ne!(restart_stamp(a), restart_stamp(b));
        let stamped = stamped(annotations::RESTARTED_AT, &restart_stamp(b));
        assert!(restarted_since(
            Some(&stamped),
            None,
            "2026-11-24T09:59:59.5Z".parse().unwrap()
        ));
    }

    fn rollout(restart_at: Option<&str>, created: &str) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web", "creationTimestamp": created},
            "spec": {"replicas": 2, "restartAt": restart_at, "strategy": {"canary": {}}},
        }))
        .unwrap()
    }

    #[test]
    fn a_rollout_restarts_at_the_next_whole_second_as_argo_reads_it() {
        let now: Timestamp = "2026-11-24T10:00:00.400Z".parse().unwrap();
        assert_eq!(rollout_restart_at(now), "2026-11-24T10:00:01Z");
        let whole: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        assert_eq!(rollout_restart_at(whole), "2026-11-24T10:00:00Z");
        assert_eq!(
            Rollout::restart_spec(now),
            json!({"restartAt": "2026-11-24T10:00:01Z"})
        );
    }

    #[test]
    fn a_rollout_asked_to_restart_after_the_rotation_is_not_asked_again() {
        let rotated: Timestamp = "2026-11-24T10:00:00.4Z".parse().unwrap();
        let old = "2026-11-01T00:00:00Z";
        assert!(!rollout(None, old).restarted_since(rotated));
        assert!(!rollout(Some("2026-11-24T09:00:00Z"), old).restarted_since(rotated));
        // what tcred wrote for this rotation (a new leader retrying sees it)
        let ours = rollout_restart_at(rotated);
        assert!(rollout(Some(&ours), old).restarted_since(rotated));
        assert!(rollout(None, "2026-11-24T10:00:02Z").restarted_since(rotated));
        // garbage in restartAt means restart
        assert!(!rollout(Some("soon"), old).restarted_since(rotated));
    }

    #[test]
    fn no_or_unreadable_stamps_mean_restart() {
        let rotated: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        assert!(!restarted_since(None, None, rotated));
        let garbage = stamped(annotations::RESTARTED_AT, "yesterday");
        assert!(!restarted_since(Some(&garbage), None, rotated));
        let other = stamped("example.com/restartedAt", "2030-01-01T00:00:00Z");
        assert!(!restarted_since(Some(&other), None, rotated));
    }
}
