//! Status conditions: the types and reasons tcred reports, and a helper that sets a condition
//! while keeping its transition time stable when nothing changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// Condition types.
pub mod types {
    /// TemporaryCredential: the Secret holds a valid credential and renewal is on track.
    /// Sources: the source is usable for minting.
    pub const READY: &str = "Ready";
    /// TemporaryCredential: Huawei issued a shorter lifetime than requested, or renewBefore had
    /// to be clamped to fit the lifetime.
    pub const DURATION_ADJUSTED: &str = "DurationAdjusted";
    /// Identity Center sources: the portal session ends within the warning threshold.
    pub const SESSION_EXPIRING_SOON: &str = "SessionExpiringSoon";
    /// Identity Center sources: the portal session has ended; run `tcred login`.
    pub const SESSION_EXPIRED: &str = "SessionExpired";
}

/// Condition reasons (CamelCase, stable: alerts and tests match on them).
pub mod reasons {
    pub const ISSUED: &str = "Issued";
    pub const ROTATED: &str = "Rotated";
    pub const RENEWAL_FAILING: &str = "RenewalFailing";
    pub const EXPIRED: &str = "Expired";
    pub const MINT_FAILED: &str = "MintFailed";
    pub const DENIED: &str = "Denied";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SOURCE_NOT_FOUND: &str = "SourceNotFound";
    pub const SOURCE_NOT_READY: &str = "SourceNotReady";
    pub const LIFETIME_SHORTENED: &str = "LifetimeShortened";
    pub const RENEW_BEFORE_CLAMPED: &str = "RenewBeforeClamped";
    pub const AS_REQUESTED: &str = "AsRequested";
    pub const SESSION_VALID: &str = "SessionValid";
    pub const SESSION_ENDING: &str = "SessionEnding";
    pub const SESSION_ENDED: &str = "SessionEnded";
    pub const LOGIN_REQUIRED: &str = "LoginRequired";
    pub const CONFIGURED: &str = "Configured";
    pub const SECRET_INVALID: &str = "SecretInvalid";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    /// A credential was minted but its Secret could not be written; only the write is retried.
    pub const SECRET_WRITE_FAILED: &str = "SecretWriteFailed";
    /// A source's Secret is not labelled for that source (`tcred.dev/source-kind`/`-name`).
    pub const SECRET_NOT_BOUND: &str = "SecretNotBound";
    /// An endpoint host is not allowed by the administrator (`--allowed-endpoint-hosts`).
    pub const ENDPOINT_NOT_ALLOWED: &str = "EndpointNotAllowed";
    /// The ServiceAccount has not opted in to tokens for this credential, or the audience is one
    /// the API server itself accepts.
    pub const TOKEN_NOT_ALLOWED: &str = "TokenNotAllowed";
    /// The namespace is not in the cache yet: authorization waits rather than guess.
    pub const NAMESPACE_UNKNOWN: &str = "NamespaceUnknown";
    /// A mint is due but the last one was too recent (`--min-mint-interval`).
    pub const MINT_DEFERRED: &str = "MintDeferred";
    /// A reconcile failed on a bug in tcred (contained: the object is retried with backoff).
    pub const INTERNAL_ERROR: &str = "InternalError";
    /// A restart target has not opted in to restarts by this credential.
    pub const RESTART_NOT_ALLOWED: &str = "RestartNotAllowed";
    /// A restart target's API (Argo Rollouts) is not installed, or tcred's RBAC leaves it out.
    pub const RESTART_UNAVAILABLE: &str = "RestartUnavailable";
    /// A credential served to pods (`spec.podIdentity`) is issued with too short a lifetime to
    /// keep more than the SDKs' 40-minute refresh threshold plus margin at every moment (e.g. a
    /// permission set with a 1-hour session): it is served anyway, and SDKs fetch it again more
    /// often near its end. Reported on the `DurationAdjusted` condition.
    pub const LIFETIME_BELOW_SDK_THRESHOLD: &str = "LifetimeBelowSdkThreshold";
}

/// Schema for `conditions`: a list map keyed by `type`, as Kubernetes' own types declare it.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = Vec::<Condition>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

/// The desired state of one condition; `set_condition` turns it into a `Condition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: String,
}

/// Sets (or replaces) the condition of `update.type_`. The transition time only moves when the
/// status flips, so status writes stay idempotent and `kubectl` shows how long a state has held.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate<'_>,
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let status = if update.status { "True" } else { "False" };
    let existing = conditions.iter_mut().find(|c| c.type_ == update.type_);
    match existing {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status.into();
            c.reason = update.reason.into();
            c.message = update.message;
            c.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: update.type_.into(),
            status: status.into(),
            reason: update.reason.into(),
            message: update.message,
            observed_generation,
            last_transition_time: Time(now),
        }),
    }
}

/// Removes the condition of `type_`, if present.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The condition of `type_`, if present.
pub fn find<'c>(conditions: &'c [Condition], type_: &str) -> Option<&'c Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    fn ready(status: bool, reason: &str) -> ConditionUpdate<'_> {
        ConditionUpdate {
            type_: types::READY,
            status,
            reason,
            message: format!("{reason} message"),
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conds = Vec::new();
        set_condition(&mut conds, ready(true, reasons::ISSUED), Some(1), at(100));
        set_condition(&mut conds, ready(true, reasons::ROTATED), Some(2), at(200));
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, Time(at(100)));
        assert_eq!(conds[0].reason, reasons::ROTATED);
        assert_eq!(conds[0].observed_generation, Some(2));

        set_condition(
            &mut conds,
            ready(false, reasons::RENEWAL_FAILING),
            Some(2),
            at(300),
        );
        assert_eq!(conds[0].last_transition_time, Time(at(300)));
        assert_eq!(conds[0].status, "False");
    }

    #[test]
    fn conditions_are_kept_per_type() {
        let mut conds = Vec::new();
        set_condition(&mut conds, ready(true, reasons::ISSUED), None, at(1));
        set_condition(
            &mut conds,
            ConditionUpdate {
                type_: types::DURATION_ADJUSTED,
                status: true,
                reason: reasons::LIFETIME_SHORTENED,
                message: String::new(),
            },
            None,
            at(1),
        );
        assert_eq!(conds.len(), 2);
        remove_condition(&mut conds, types::DURATION_ADJUSTED);
        assert_eq!(conds.len(), 1);
        assert!(find(&conds, types::READY).is_some());
    }
}
