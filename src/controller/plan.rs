//! The decision at the heart of reconcile, as a pure function: mint now, keep the Secret until its
//! renewal time, wait out a backoff, or refuse to touch a Secret that is not ours.

use std::fmt;

use jiff::Timestamp;

use super::secret::Observed;
use crate::{
    api::TemporaryCredentialStatus,
    schedule::{RenewPolicy, Renewal, renewal_time},
};

/// Why a credential is minted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MintReason {
    /// Never minted before.
    Initial,
    /// The Secret was deleted.
    SecretMissing,
    /// The Secret's data or tcred's annotations were changed by someone else.
    SecretEdited,
    /// The spec now asks for a different credential.
    SpecChanged,
    /// The renewal time has come.
    RenewalDue,
    /// The credential in the Secret has already expired.
    Expired,
    /// The `tcred.dev/rotate` annotation has a new value.
    RotateRequested,
}

impl fmt::Display for MintReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Initial => "first issue",
            Self::SecretMissing => "the Secret was deleted",
            Self::SecretEdited => "the Secret was edited",
            Self::SpecChanged => "the spec changed",
            Self::RenewalDue => "renewal is due",
            Self::Expired => "the credential expired",
            Self::RotateRequested => "rotation was requested",
        })
    }
}

/// What reconcile does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Mint(MintReason),
    /// The Secret is good until `renewal.at`; re-apply its metadata when the template changed.
    Keep {
        renewal: Renewal,
        issued_at: Timestamp,
        expires_at: Timestamp,
        refresh_metadata: bool,
    },
    /// A mint is needed but the last attempt failed; try again at `retry_at`.
    Backoff {
        retry_at: Timestamp,
        reason: MintReason,
    },
    /// The Secret name is taken by a Secret tcred does not manage for this object.
    Conflict,
}

#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub status: &'a TemporaryCredentialStatus,
    pub observed: &'a Observed,
    /// Current value of the `tcred.dev/rotate` annotation.
    pub rotate_request: Option<&'a str>,
    pub policy: RenewPolicy,
    /// The object's UID: the key of its renewal spread.
    pub uid: &'a str,
    /// The source's resourceVersion now.
    pub source_version: Option<&'a str>,
}

pub fn plan(input: PlanInput<'_>) -> Plan {
    let needed = match input.observed {
        Observed::Foreign => return Plan::Conflict,
        Observed::Missing if input.status.rotations == 0 => MintReason::Initial,
        Observed::Missing => MintReason::SecretMissing,
        Observed::Managed(m) => {
            let (Some(issued_at), Some(expires_at), true) = (m.issued_at, m.expires_at, m.intact) else {
                return gate(input, MintReason::SecretEdited);
            };
            let renewal = renewal_time(issued_at, expires_at, input.policy, input.uid);
            let rotate_pending = input
                .rotate_request
                .is_some_and(|r| input.status.last_rotate_request.as_deref() != Some(r));
            if !m.spec_hash_matches {
                MintReason::SpecChanged
            } else if rotate_pending {
                MintReason::RotateRequested
            } else if expires_at <= input.now {
                MintReason::Expired
            } else if renewal.at <= input.now {
                MintReason::RenewalDue
            } else {
                return Plan::Keep {
                    renewal,
                    issued_at,
                    expires_at,
                    refresh_metadata: !m.metadata_current,
                };
            }
        }
    };
    gate(input, needed)
}

/// Holds a needed mint back while the backoff of a previous failure runs, unless the spec or the
/// source changed since (either deserves a prompt attempt).
fn gate(input: PlanInput<'_>, reason: MintReason) -> Plan {
    let s = input.status;
    let same_generation = s.observed_generation.is_some() && s.observed_generation == input.generation;
    let source_changed = match (s.last_failure_source_version.as_deref(), input.source_version) {
        (Some(then), Some(now)) => then != now,
        _ => false,
    };
    if s.failed_attempts > 0
        && same_generation
        && !source_changed
        && let Some(retry_at) = s.renewal_time.as_ref().map(|t| t.0)
        && retry_at > input.now
    {
        return Plan::Backoff { retry_at, reason };
    }
    Plan::Mint(reason)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::controller::secret::ManagedSecret;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn managed(issued: i64, expires: i64) -> Observed {
        Observed::Managed(ManagedSecret {
            intact: true,
            spec_hash_matches: true,
            metadata_current: true,
            access_key_id: Some("AK".into()),
            issued_at: Some(t(issued)),
            expires_at: Some(t(expires)),
        })
    }

    fn with(observed: &Observed, f: impl FnOnce(&mut ManagedSecret)) -> Observed {
        let mut o = observed.clone();
        if let Observed::Managed(m) = &mut o {
            f(m);
        }
        o
    }

    fn run(now: i64, status: &TemporaryCredentialStatus, observed: &Observed, rotate: Option<&str>) -> Plan {
        plan(PlanInput {
            now: t(now),
            generation: Some(1),
            status,
            observed,
            rotate_request: rotate,
            policy: RenewPolicy::default(),
            uid: "uid-a",
            source_version: Some("7"),
        })
    }

    fn minted_once() -> TemporaryCredentialStatus {
        TemporaryCredentialStatus {
            rotations: 1,
            observed_generation: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn first_reconcile_mints() {
        assert_eq!(
            run(0, &Default::default(), &Observed::Missing, None),
            Plan::Mint(MintReason::Initial)
        );
    }

    #[test]
    fn a_restart_mints_nothing_while_the_secret_is_inside_its_window() {
        let p = run(100, &minted_once(), &managed(0, 3600), None);
        let Plan::Keep {
            renewal,
            refresh_metadata,
            ..
        } = p
        else {
            panic!("{p:?}")
        };
        assert!(renewal.at > t(100));
        assert!(!refresh_metadata);
        // The status may be lost entirely (say, restored from a backup): the Secret alone decides.
        assert!(matches!(
            run(100, &Default::default(), &managed(0, 3600), None),
            Plan::Keep { .. }
        ));
    }

    #[test]
    fn renewal_comes_due_before_expiry() {
        let Plan::Keep { renewal, .. } = run(100, &minted_once(), &managed(0, 3600), None) else {
            panic!()
        };
        let at = renewal.at.as_second();
        assert_eq!(
            run(at - 1, &minted_once(), &managed(0, 3600), None),
            Plan::Keep {
                renewal,
                issued_at: t(0),
                expires_at: t(3600),
                refresh_metadata: false
            }
        );
        assert_eq!(
            run(at, &minted_once(), &managed(0, 3600), None),
            Plan::Mint(MintReason::RenewalDue)
        );
        assert_eq!(
            run(3600, &minted_once(), &managed(0, 3600), None),
            Plan::Mint(MintReason::Expired)
        );
    }

    #[test]
    fn a_deleted_or_edited_secret_is_reminted() {
        assert_eq!(
            run(100, &minted_once(), &Observed::Missing, None),
            Plan::Mint(MintReason::SecretMissing)
        );
        let edited = with(&managed(0, 3600), |m| m.intact = false);
        assert_eq!(
            run(100, &minted_once(), &edited, None),
            Plan::Mint(MintReason::SecretEdited)
        );
        let no_times = with(&managed(0, 3600), |m| m.issued_at = None);
        assert_eq!(
            run(100, &minted_once(), &no_times, None),
            Plan::Mint(MintReason::SecretEdited)
        );
    }

    #[test]
    fn a_spec_change_remints_and_a_template_change_only_relabels() {
        let changed = with(&managed(0, 3600), |m| m.spec_hash_matches = false);
        assert_eq!(
            run(100, &minted_once(), &changed, None),
            Plan::Mint(MintReason::SpecChanged)
        );
        let relabel = with(&managed(0, 3600), |m| m.metadata_current = false);
        assert!(matches!(
            run(100, &minted_once(), &relabel, None),
            Plan::Keep {
                refresh_metadata: true,
                ..
            }
        ));
    }

    #[test]
    fn the_rotate_annotation_forces_exactly_one_rotation() {
        assert_eq!(
            run(100, &minted_once(), &managed(0, 3600), Some("1")),
            Plan::Mint(MintReason::RotateRequested)
        );
        let honoured = TemporaryCredentialStatus {
            last_rotate_request: Some("1".into()),
            ..minted_once()
        };
        assert!(matches!(
            run(100, &honoured, &managed(0, 3600), Some("1")),
            Plan::Keep { .. }
        ));
        assert_eq!(
            run(100, &honoured, &managed(0, 3600), Some("2")),
            Plan::Mint(MintReason::RotateRequested)
        );
    }

    #[test]
    fn failures_wait_out_their_backoff_unless_the_spec_changed() {
        let failing = TemporaryCredentialStatus {
            failed_attempts: 2,
            renewal_time: Some(Time(t(500))),
            ..minted_once()
        };
        let due = with(&managed(0, 3600), |m| m.expires_at = Some(t(400)));
        assert_eq!(
            run(300, &failing, &due, None),
            Plan::Backoff {
                retry_at: t(500),
                reason: MintReason::RenewalDue
            }
        );
        assert_eq!(run(500, &failing, &due, None), Plan::Mint(MintReason::Expired));

        let source_fixed = TemporaryCredentialStatus {
            last_failure_source_version: Some("6".into()),
            ..failing.clone()
        };
        assert_eq!(
            run(300, &source_fixed, &due, None),
            Plan::Mint(MintReason::RenewalDue),
            "a changed source retries at once"
        );
        let same_source = TemporaryCredentialStatus {
            last_failure_source_version: Some("7".into()),
            ..failing.clone()
        };
        assert!(matches!(run(300, &same_source, &due, None), Plan::Backoff { .. }));

        let new_generation = TemporaryCredentialStatus {
            observed_generation: Some(0),
            ..failing.clone()
        };
        assert_eq!(
            run(300, &new_generation, &due, None),
            Plan::Mint(MintReason::RenewalDue)
        );
        // A deleted Secret does not bypass the backoff: the mint would fail the same way.
        assert_eq!(
            run(300, &failing, &Observed::Missing, None),
            Plan::Backoff {
                retry_at: t(500),
                reason: MintReason::SecretMissing
            }
        );
    }

    #[test]
    fn a_secret_tcred_does_not_own_is_never_overwritten() {
        assert_eq!(
            run(0, &Default::default(), &Observed::Foreign, None),
            Plan::Conflict
        );
    }
}
