//! The decision at the heart of reconcile, as a pure function: mint now, keep the Secret until its
//! renewal time, wait out a backoff or the least interval between two mints, or refuse to touch a
//! Secret that is not ours.
//!
//! Two mints of one object are always at least `min_interval` apart (its first issue aside),
//! whatever asks for the second one: a deleted or edited Secret, a rotate request, a spec change,
//! a credential that expired early. Nothing another party can edit can therefore make tcred mint
//! in a loop (docs/security.md H4, H5, M1, M5).

use std::{fmt, time::Duration};

use jiff::Timestamp;

use super::secret::Observed;
use crate::{
    api::TemporaryCredentialStatus,
    schedule::{RenewPolicy, Renewal, add_saturating, renewal_time},
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
    /// A mint is needed but the last one was less than the least interval between mints ago;
    /// mint at `until` (the plan then asks again: a rotate request still pending is honoured
    /// then, once).
    Defer {
        until: Timestamp,
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
    /// When a credential was last minted for this object, `None` when never: see [`last_mint`].
    pub last_mint: Option<Timestamp>,
    /// Least time between two mints of this object (Config `min_mint_interval`).
    pub min_interval: Duration,
}

/// When a credential was last minted for this object, as far as tcred can tell: the status'
/// `lastRotationTime` (only tcred writes status; the time the mint started), or the issue time of
/// the credential in the Secret when that is later (the controller stopped between the Secret
/// write and the status write). The Secret's issue time counts only while the Secret is intact
/// (the data hash covers it) and not in the future, so an edited Secret cannot postpone its own
/// re-mint for ever.
pub fn last_mint(
    status: &TemporaryCredentialStatus,
    observed: &Observed,
    now: Timestamp,
) -> Option<Timestamp> {
    let from_status = status.last_rotation_time.as_ref().map(|t| t.0);
    let from_secret = match observed {
        Observed::Managed(m) if m.intact => m.issued_at.filter(|t| *t <= now),
        _ => None,
    };
    from_status.max(from_secret)
}

pub fn plan(input: PlanInput<'_>) -> Plan {
    let needed = match input.observed {
        Observed::Foreign => return Plan::Conflict,
        Observed::Missing if input.status.rotations == 0 => MintReason::Initial,
        Observed::Missing => MintReason::SecretMissing,
        Observed::Managed(m) => {
            let (Some(issued_at), Some(expires_at), true) = (m.issued_at, m.expires_at, m.intact) else {
                return space(input, gate(input, MintReason::SecretEdited));
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
    space(input, gate(input, needed))
}

/// Holds a needed mint back until `min_interval` after the last one. Only the very first issue
/// (nothing ever minted) goes through at once.
fn space(input: PlanInput<'_>, plan: Plan) -> Plan {
    let Plan::Mint(reason) = plan else {
        return plan;
    };
    match input.last_mint {
        Some(last) => {
            let until = add_saturating(last, input.min_interval);
            if until > input.now {
                Plan::Defer { until, reason }
            } else {
                plan
            }
        }
        None => plan,
    }
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
    use crate::controller::credentials::secret::ManagedSecret;

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

    const INTERVAL: Duration = Duration::from_secs(30);

    fn input<'a>(
        now: i64,
        status: &'a TemporaryCredentialStatus,
        observed: &'a Observed,
        rotate: Option<&'a str>,
    ) -> PlanInput<'a> {
        PlanInput {
            now: t(now),
            generation: Some(1),
            status,
            observed,
            rotate_request: rotate,
            policy: RenewPolicy::default(),
            uid: "uid-a",
            source_version: Some("7"),
            last_mint: last_mint(status, observed, t(now)),
            min_interval: INTERVAL,
        }
    }

    fn run(now: i64, status: &TemporaryCredentialStatus, observed: &Observed, rotate: Option<&str>) -> Plan {
        plan(input(now, status, observed, rotate))
    }

    /// Minted at `at`, as the status records it.
    fn minted_at(at: i64) -> TemporaryCredentialStatus {
        TemporaryCredentialStatus {
            last_rotation_time: Some(Time(t(at))),
            ..minted_once()
        }
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
    #[test]
    fn every_reason_to_mint_waits_out_the_least_interval_after_the_last_mint() {
        let status = minted_at(1000);
        let fresh = managed(1000, 4600);
        let cases = [
            (Observed::Missing, None, MintReason::SecretMissing),
            (with(&fresh, |m| m.intact = false), None, MintReason::SecretEdited),
            (
                with(&fresh, |m| m.spec_hash_matches = false),
                None,
                MintReason::SpecChanged,
            ),
            (fresh.clone(), Some("r1"), MintReason::RotateRequested),
            (managed(1000, 1005), None, MintReason::Expired),
            // 35 s issued: renewal falls due about 12 s before expiry, inside the interval.
            (managed(1000, 1035), None, MintReason::RenewalDue),
        ];
        for (observed, rotate, reason) in cases {
            assert_eq!(
                run(1025, &status, &observed, rotate),
                Plan::Defer {
                    until: t(1030),
                    reason
                },
                "{reason}"
            );
            assert_eq!(
                run(1030, &status, &observed, rotate),
                Plan::Mint(reason),
                "{reason} once the interval is over"
            );
        }
    }

    #[test]
    fn the_first_issue_is_never_deferred() {
        assert_eq!(
            plan(PlanInput {
                min_interval: Duration::from_secs(3600),
                ..input(0, &Default::default(), &Observed::Missing, Some("r1"))
            }),
            Plan::Mint(MintReason::Initial)
        );
    }

    #[test]
    fn an_intact_secret_minted_after_the_status_was_written_counts_as_the_last_mint() {
        // The controller stopped between the Secret write (at 2000) and the status write.
        let status = minted_at(1000);
        let newer = managed(2000, 2001);
        assert_eq!(last_mint(&status, &newer, t(2010)), Some(t(2000)));
        assert_eq!(
            run(2010, &status, &newer, None),
            Plan::Defer {
                until: t(2030),
                reason: MintReason::Expired
            }
        );
        // An edited Secret's issue time, or one in the future, is not believed.
        let edited = with(&newer, |m| m.intact = false);
        assert_eq!(last_mint(&status, &edited, t(2010)), Some(t(1000)));
        let future = managed(9_000_000, 9_000_600);
        assert_eq!(last_mint(&status, &future, t(2010)), Some(t(1000)));
        assert_eq!(last_mint(&Default::default(), &Observed::Missing, t(0)), None);
    }

    #[test]
    fn a_deferred_rotate_request_is_honoured_once_later() {
        let status = minted_at(1000);
        let fresh = managed(1000, 4600);
        assert!(matches!(
            run(1010, &status, &fresh, Some("r1")),
            Plan::Defer {
                reason: MintReason::RotateRequested,
                ..
            }
        ));
        // Deferring records nothing, so the request is still pending after the interval ...
        assert_eq!(
            run(1031, &status, &fresh, Some("r1")),
            Plan::Mint(MintReason::RotateRequested)
        );
        // ... and once that mint is recorded, it is not honoured again.
        let honoured = TemporaryCredentialStatus {
            last_rotate_request: Some("r1".into()),
            ..minted_at(1031)
        };
        assert!(matches!(
            run(5000, &honoured, &managed(1031, 9000), Some("r1")),
            Plan::Keep { .. }
        ));
    }

    #[test]
    fn a_failed_mint_recorded_in_the_status_is_followed_by_backoff_not_a_retry() {
        use crate::{
            cloud::ErrorClass,
            controller::status::{Base, after_failure},
        };
        let prev = minted_at(1000);
        let base = Base {
            now: t(2000),
            generation: Some(1),
            prev: &prev,
            target: None,
            secret_name: "billing".into(),
        };
        let failed = after_failure(
            &base,
            ErrorClass::Server,
            "the endpoint issued a credential that expires in 3 s; at least 60 s is required",
            t(2005),
            Some(t(1900)),
            Some("7"),
        );
        let expired = managed(1000, 1900);
        assert_eq!(
            run(2000, &failed, &expired, None),
            Plan::Backoff {
                retry_at: t(2005),
                reason: MintReason::Expired
            }
        );
        assert_eq!(
            run(2005, &failed, &expired, None),
            Plan::Mint(MintReason::Expired)
        );
    }

    /// A Secret tcred wrote for a credential issued at 0 that expires at 3600, with one
    /// annotation edited, observed by a credential whose status recorded that mint.
    fn edited_annotation(key: &str, value: &str) -> (TemporaryCredentialStatus, Observed) {
        use crate::controller::{
            credentials::secret::{Times, build, observe},
            fixtures::{credential, tc},
        };
        let status = minted_at(0);
        let mut object = tc("billing");
        object.status = Some(status.clone());
        let times = Times {
            issued_at: t(0),
            renewal_at: t(2400),
        };
        let mut s = build(&object, &credential("AKID1", 3_600), times);
        s.metadata
            .annotations
            .get_or_insert_default()
            .insert(key.into(), value.into());
        (status, observe(&object, Some(&s)))
    }

    #[test]
    fn an_edited_expiry_annotation_neither_keeps_the_credential_past_its_expiry_nor_mints() {
        let (status, observed) =
            edited_annotation(crate::api::annotations::EXPIRES_AT, "9999-01-01T00:00:00Z");
        let Plan::Keep {
            expires_at,
            refresh_metadata,
            renewal,
            ..
        } = run(100, &status, &observed, None)
        else {
            panic!("expected Keep")
        };
        assert_eq!(expires_at, t(3600));
        assert!(refresh_metadata, "the mirror is rewritten from the data");
        assert!(renewal.at < t(3600));
        assert_eq!(
            run(3600, &status, &observed, None),
            Plan::Mint(MintReason::Expired)
        );
    }

    #[test]
    fn an_edited_issue_time_is_no_rotation() {
        use crate::controller::credentials::status::{Base, after_keep};
        let (status, observed) =
            edited_annotation(crate::api::annotations::ISSUED_AT, "1970-01-01T00:30:00Z");
        let Plan::Keep {
            issued_at,
            expires_at,
            renewal,
            refresh_metadata,
        } = run(100, &status, &observed, None)
        else {
            panic!("expected Keep")
        };
        assert_eq!(issued_at, t(0), "the issue time the hash vouches for");
        assert!(refresh_metadata);
        let base = Base {
            now: t(100),
            generation: Some(1),
            prev: &status,
            target: None,
            secret_name: "billing".into(),
        };
        let next = after_keep(&base, Some("AKID1"), issued_at, expires_at, renewal);
        assert_eq!(next.rotations, status.rotations);
        assert_eq!(next.last_rotation_time, status.last_rotation_time);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn any_observed() -> impl Strategy<Value = Observed> {
            let managed = (
                any::<[bool; 3]>(),
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<i64>()),
            )
                .prop_map(|([intact, spec, meta], issued, expires)| {
                    let time = |s: Option<i64>| {
                        s.map(|s| {
                            Timestamp::from_second(s.rem_euclid(400_000_000_000) - 200_000_000_000)
                                .unwrap_or(Timestamp::MAX)
                        })
                    };
                    Observed::Managed(ManagedSecret {
                        intact,
                        spec_hash_matches: spec,
                        metadata_current: meta,
                        access_key_id: None,
                        issued_at: time(issued),
                        expires_at: time(expires),
                    })
                });
            prop_oneof![Just(Observed::Missing), Just(Observed::Foreign), managed]
        }

        fn any_time() -> impl Strategy<Value = Timestamp> {
            prop_oneof![
                Just(Timestamp::MIN),
                Just(Timestamp::MAX),
                (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second())
                    .prop_map(|s| Timestamp::from_second(s).unwrap()),
                (0i64..10_000).prop_map(|s| Timestamp::from_second(s).unwrap()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn the_plan_never_panics_and_never_mints_within_the_interval_after_a_mint(
                now in any_time(),
                last in proptest::option::of(any_time()),
                interval in prop_oneof![Just(0u64), 1u64..100_000, Just(u64::MAX)],
                observed in any_observed(),
                rotations in 0i64..3,
                failed in 0i32..3,
                retry_at in proptest::option::of(any_time()),
                generation in proptest::option::of(0i64..3),
                rotate in proptest::option::of("[a-c]"),
                last_rotate in proptest::option::of("[a-c]"),
                renew_before in proptest::option::of(any::<u64>()),
                pct in proptest::option::of(any::<i32>()),
            ) {
                let status = TemporaryCredentialStatus {
                    rotations,
                    failed_attempts: failed,
                    renewal_time: retry_at.map(Time),
                    observed_generation: Some(1),
                    last_rotate_request: last_rotate,
                    last_rotation_time: last.map(Time),
                    ..Default::default()
                };
                let p = plan(PlanInput {
                    now,
                    generation,
                    status: &status,
                    observed: &observed,
                    rotate_request: rotate.as_deref(),
                    policy: RenewPolicy {
                        renew_before: renew_before.map(Duration::from_secs),
                        renew_before_percentage: pct,
                        served_min_interval: None,
                    },
                    uid: "uid-a",
                    source_version: Some("7"),
                    last_mint: last,
                    min_interval: Duration::from_secs(interval),
                });
                if let (Plan::Mint(reason), Some(last)) = (&p, last) {
                    prop_assert!(
                        add_saturating(last, Duration::from_secs(interval)) <= now,
                        "{reason} at {now}, last mint {last}, interval {interval}"
                    );
                }
                if let Plan::Defer { until, .. } = p {
                    prop_assert!(until > now);
                }
            }
        }
    }
}
