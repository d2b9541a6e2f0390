//! The TemporaryCredential status for each outcome of a reconcile, as pure functions of the
//! previous status and what happened. Conditions walk Ready → RenewalFailing → Expired.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::plan::MintReason;
use crate::controller::authorize::Problem;
use crate::{
    api::{
        TemporaryCredentialStatus,
        condition::{ConditionUpdate, find, reasons, remove_condition, set_condition, types},
        credential::IssuedCredentialRecord,
    },
    cloud::ErrorClass,
    schedule::Renewal,
};

/// What every outcome shares.
#[derive(Clone, Debug)]
pub struct Base<'a> {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub prev: &'a TemporaryCredentialStatus,
    /// `None` when the spec names no valid target.
    pub target: Option<String>,
    pub secret_name: String,
}

impl Base<'_> {
    fn start(&self) -> TemporaryCredentialStatus {
        TemporaryCredentialStatus {
            observed_generation: self.generation,
            target: self.target.clone(),
            secret_name: Some(self.secret_name.clone()),
            ..self.prev.clone()
        }
    }

    fn ready(&self, s: &mut TemporaryCredentialStatus, status: bool, reason: &str, message: String) {
        set_condition(
            &mut s.conditions,
            ConditionUpdate {
                type_: types::READY,
                status,
                reason,
                message,
            },
            self.generation,
            self.now,
        );
    }
}

/// A credential was just minted and written.
#[derive(Clone, Debug)]
pub struct Minted<'a> {
    pub access_key_id: &'a str,
    /// When the mint started: the Secret's `tcred.dev/issued-at`, and the rotation time.
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub renewal: Renewal,
    /// Requested lifetime when Huawei issued noticeably less (STS sources).
    pub shortened_from: Option<std::time::Duration>,
    pub rotate_request: Option<&'a str>,
}

/// How many issued credentials the status remembers (`status.issuedCredentials`).
pub const ISSUED_HISTORY: usize = 5;

/// `history` with `ak` (issued at `issued_at`, expiring at `expires_at`) first, once, and at most
/// [`ISSUED_HISTORY`] entries: part of the status patch a rotation writes anyway.
fn remember_issued(
    history: &[IssuedCredentialRecord],
    ak: &str,
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> Vec<IssuedCredentialRecord> {
    let newest = IssuedCredentialRecord {
        access_key_id: ak.to_owned(),
        issued_at: Time(issued_at),
        expires_at: Time(expires_at),
    };
    std::iter::once(newest)
        .chain(history.iter().filter(|r| r.access_key_id != ak).cloned())
        .take(ISSUED_HISTORY)
        .collect()
}

pub fn after_mint(base: &Base<'_>, m: &Minted<'_>) -> TemporaryCredentialStatus {
    let mut s = base.start();
    s.issued_credentials = remember_issued(&s.issued_credentials, m.access_key_id, m.issued_at, m.expires_at);
    s.access_key_id = Some(m.access_key_id.to_owned());
    s.expires_at = Some(Time(m.expires_at));
    s.renewal_time = Some(Time(m.renewal.at));
    s.last_rotation_time = Some(Time(m.issued_at));
    s.rotations = base.prev.rotations + 1;
    s.failed_attempts = 0;
    s.last_failure_time = None;
    s.last_failure_source_version = None;
    if m.rotate_request.is_some() {
        s.last_rotate_request = m.rotate_request.map(str::to_owned);
    }
    let (reason, verb) = if base.prev.rotations == 0 {
        (reasons::ISSUED, "issued")
    } else {
        (reasons::ROTATED, "rotated")
    };
    base.ready(
        &mut s,
        true,
        reason,
        format!(
            "credential {} {verb}; valid until {}, renewal at {}",
            m.access_key_id,
            fmt(m.expires_at),
            fmt(m.renewal.at)
        ),
    );
    duration_adjusted(base, &mut s, m.shortened_from, m.renewal, m.expires_at);
    s
}

fn duration_adjusted(
    base: &Base<'_>,
    s: &mut TemporaryCredentialStatus,
    shortened_from: Option<std::time::Duration>,
    renewal: Renewal,
    expires_at: Timestamp,
) {
    const BELOW_SDK: &str = "too short to keep the credential served to pods above Huawei SDKs' \
        40-minute refresh threshold plus a 10-minute margin: it is served anyway, and SDKs fetch it \
        again more often near its end";
    let update = match (shortened_from, renewal.below_sdk_threshold, renewal.clamped) {
        (Some(requested), below, _) => Some(ConditionUpdate {
            type_: types::DURATION_ADJUSTED,
            status: true,
            reason: reasons::LIFETIME_SHORTENED,
            message: format!(
                "requested {}s, Huawei Cloud issued a credential valid until {} (the agency's maximum session may be shorter); renewals follow the issued expiry{}",
                requested.as_secs(),
                fmt(expires_at),
                if below {
                    format!("; the lifetime is {BELOW_SDK}")
                } else {
                    String::new()
                }
            ),
        }),
        (None, true, _) => Some(ConditionUpdate {
            type_: types::DURATION_ADJUSTED,
            status: true,
            reason: reasons::LIFETIME_BELOW_SDK_THRESHOLD,
            message: format!(
                "the issued lifetime (valid until {}) is {BELOW_SDK}",
                fmt(expires_at)
            ),
        }),
        (None, false, true) => Some(ConditionUpdate {
            type_: types::DURATION_ADJUSTED,
            status: true,
            reason: reasons::RENEW_BEFORE_CLAMPED,
            message:
                "renewBefore is not shorter than the issued lifetime; renewing when a third of it remains"
                    .into(),
        }),
        (None, false, false) => None,
    };
    match update {
        Some(u) => set_condition(&mut s.conditions, u, base.generation, base.now),
        None => remove_condition(&mut s.conditions, types::DURATION_ADJUSTED),
    }
}

/// The Secret is good and nothing is due.
pub fn after_keep(
    base: &Base<'_>,
    access_key_id: Option<&str>,
    issued_at: Timestamp,
    expires_at: Timestamp,
    renewal: Renewal,
) -> TemporaryCredentialStatus {
    let mut s = base.start();
    s.access_key_id = access_key_id.map(str::to_owned).or(s.access_key_id);
    s.expires_at = Some(Time(expires_at));
    s.renewal_time = Some(Time(renewal.at));
    let missed_rotation = record_held(&mut s, access_key_id, issued_at, expires_at);
    s.failed_attempts = 0;
    s.last_failure_time = None;
    s.last_failure_source_version = None;
    // Keep the Issued/Rotated reason a mint set; a status rebuilt from the Secret says Issued.
    let reason = match find(&s.conditions, types::READY) {
        _ if missed_rotation => reasons::ROTATED,
        Some(c) if c.status == "True" => {
            if c.reason == reasons::ROTATED {
                reasons::ROTATED
            } else {
                reasons::ISSUED
            }
        }
        _ if s.rotations > 1 => reasons::ROTATED,
        _ => reasons::ISSUED,
    };
    let ak = access_key_id.unwrap_or("in the Secret");
    // The message of the mint that wrote this very credential says the same (key, expiry,
    // renewal) and more: keep it, so a reconcile that finds nothing to do writes nothing.
    let message = match find(&base.prev.conditions, types::READY) {
        Some(c)
            if c.status == "True"
                && c.reason == reason
                && !missed_rotation
                && same_credential(base.prev, &s) =>
        {
            c.message.clone()
        }
        _ => format!(
            "credential {ak} valid until {}, renewal at {}",
            fmt(expires_at),
            fmt(renewal.at)
        ),
    };
    base.ready(&mut s, true, reason, message);
    // A shortened lifetime is judged by the mint that issued the credential: keep it.
    let adjusted = find(&s.conditions, types::DURATION_ADJUSTED).map(|c| c.reason.clone());
    match adjusted.as_deref() {
        Some(reasons::LIFETIME_SHORTENED) => {}
        _ if renewal.clamped || renewal.below_sdk_threshold => {
            duration_adjusted(base, &mut s, None, renewal, expires_at);
        }
        Some(reasons::RENEW_BEFORE_CLAMPED | reasons::LIFETIME_BELOW_SDK_THRESHOLD) => {
            remove_condition(&mut s.conditions, types::DURATION_ADJUSTED);
        }
        _ => {}
    }
    s
}

/// Counts the credential the Secret holds into `s` (rotations, last rotation time, the issued
/// history) when the status does not know it yet. True when that is a rotation whose status write
/// was lost (so the restarts it owes are still made).
fn record_held(
    s: &mut TemporaryCredentialStatus,
    access_key_id: Option<&str>,
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> bool {
    let mut missed_rotation = false;
    match s.last_rotation_time.as_ref().map(|t| t.0) {
        // The Secret holds a credential minted after the last rotation the status knows: the
        // controller stopped between the Secret write and the status write. Count that rotation,
        // so the restarts it owes are made.
        Some(last) if issued_at > last => {
            s.rotations += 1;
            s.last_rotation_time = Some(Time(issued_at));
            missed_rotation = s.rotations > 1;
        }
        Some(_) => {}
        // A status rebuilt from the Secret (the object restored, or its status lost).
        None => {
            s.rotations = s.rotations.max(1);
            s.last_rotation_time = Some(Time(issued_at));
        }
    }
    // The credential the Secret holds is in the history, also when the mint's status write was lost.
    if let Some(ak) = access_key_id
        && s.issued_credentials.first().is_none_or(|r| r.access_key_id != ak)
    {
        s.issued_credentials = remember_issued(&s.issued_credentials, ak, issued_at, expires_at);
    }
    missed_rotation
}

/// Whether `next` describes the credential `prev` described: same key, expiry and renewal.
fn same_credential(prev: &TemporaryCredentialStatus, next: &TemporaryCredentialStatus) -> bool {
    prev.access_key_id == next.access_key_id
        && prev.expires_at == next.expires_at
        && prev.renewal_time == next.renewal_time
}

/// A mint attempt failed; the next one is at `retry_at`. `secret_expires_at` is the expiry of the
/// credential the Secret still holds, if any.
pub fn after_failure(
    base: &Base<'_>,
    class: ErrorClass,
    error: &str,
    retry_at: Timestamp,
    secret_expires_at: Option<Timestamp>,
    source_version: Option<&str>,
) -> TemporaryCredentialStatus {
    let mut s = base.start();
    s.last_failure_source_version = source_version.map(str::to_owned);
    s.failed_attempts = base.prev.failed_attempts.saturating_add(1);
    s.last_failure_time = Some(Time(base.now));
    s.renewal_time = Some(Time(retry_at));
    s.expires_at = secret_expires_at.map(Time);
    let attempt = s.failed_attempts;
    let class = class.label();
    let (reason, message) = match secret_expires_at {
        Some(exp) if exp > base.now => (
            reasons::RENEWAL_FAILING,
            format!(
                "renewal failing ({class}, attempt {attempt}): {error}; the Secret keeps the current credential, valid until {}; next attempt at {}",
                fmt(exp),
                fmt(retry_at)
            ),
        ),
        Some(exp) => (
            reasons::EXPIRED,
            format!(
                "the credential in the Secret expired at {}; renewal failing ({class}, attempt {attempt}): {error}; next attempt at {}",
                fmt(exp),
                fmt(retry_at)
            ),
        ),
        None => (
            reasons::MINT_FAILED,
            format!(
                "minting failed ({class}, attempt {attempt}): {error}; next attempt at {}",
                fmt(retry_at)
            ),
        ),
    };
    base.ready(&mut s, false, reason, message);
    s
}

/// A mint is due but held back by the backoff of an earlier failure. Moves the condition to
/// Expired once the held credential runs out.
pub fn during_backoff(base: &Base<'_>, secret_expires_at: Option<Timestamp>) -> TemporaryCredentialStatus {
    let mut s = base.start();
    if let Some(exp) = secret_expires_at
        && exp <= base.now
        && find(&s.conditions, types::READY).is_some_and(|c| c.reason == reasons::RENEWAL_FAILING)
    {
        let retry = s.renewal_time.as_ref().map(|t| fmt(t.0)).unwrap_or_default();
        let attempts = s.failed_attempts;
        base.ready(
            &mut s,
            false,
            reasons::EXPIRED,
            format!(
                "the credential in the Secret expired at {}; renewal still failing after {} attempts; next attempt at {retry}",
                fmt(exp),
                attempts
            ),
        );
    }
    s
}

/// A mint is due but held back until `until`, the least interval after the last one. Ready stays
/// True while the Secret holds a credential that is still valid (reason MintDeferred says what is
/// waiting), and is False when it holds none.
pub fn during_defer(
    base: &Base<'_>,
    reason: MintReason,
    until: Timestamp,
    secret_expires_at: Option<Timestamp>,
) -> TemporaryCredentialStatus {
    let mut s = base.start();
    s.renewal_time = Some(Time(until));
    s.expires_at = secret_expires_at.map(Time);
    let waiting = format!(
        "{reason}; the next mint waits until {}, the least interval after the last one",
        fmt(until)
    );
    match secret_expires_at.filter(|e| *e > base.now) {
        Some(exp) => base.ready(
            &mut s,
            true,
            reasons::MINT_DEFERRED,
            format!(
                "{waiting}; the Secret keeps the current credential, valid until {}",
                fmt(exp)
            ),
        ),
        None => base.ready(&mut s, false, reasons::MINT_DEFERRED, waiting),
    }
    s
}

/// Nothing can be minted until someone fixes the spec, the source or a policy.
pub fn after_problem(
    base: &Base<'_>,
    problem: &Problem,
    secret_expires_at: Option<Timestamp>,
) -> TemporaryCredentialStatus {
    let mut s = base.start();
    s.renewal_time = None;
    s.expires_at = secret_expires_at.map(Time);
    let mut message = problem.message.clone();
    if let Some(exp) = secret_expires_at.filter(|e| *e > base.now) {
        message.push_str(&format!(
            "; the Secret keeps the current credential, valid until {}",
            fmt(exp)
        ));
    }
    base.ready(&mut s, false, problem.reason, message);
    s
}

/// The Ready condition's reason, for deciding when a transition deserves an Event.
pub fn ready_reason(s: &TemporaryCredentialStatus) -> Option<&str> {
    find(&s.conditions, types::READY).map(|c| c.reason.as_str())
}

fn fmt(t: Timestamp) -> String {
    crate::time::rfc3339(t)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn base(now: i64, prev: &TemporaryCredentialStatus) -> Base<'_> {
        Base {
            now: t(now),
            generation: Some(3),
            prev,
            target: Some("iam::acct:agency:ops".into()),
            secret_name: "billing".into(),
        }
    }

    fn ready(s: &TemporaryCredentialStatus) -> (&str, &str) {
        let c = find(&s.conditions, types::READY).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    const SERVER: ErrorClass = ErrorClass::Server;
    const UNAVAILABLE: &str = "AssumeAgency failed: HTTP 503: unavailable";

    fn minted(prev: &TemporaryCredentialStatus, now: i64) -> TemporaryCredentialStatus {
        after_mint(
            &base(now, prev),
            &Minted {
                access_key_id: "AK1",
                issued_at: t(now),
                expires_at: t(now + 3600),
                renewal: Renewal {
                    at: t(now + 2400),
                    clamped: false,
                    below_sdk_threshold: false,
                },
                shortened_from: None,
                rotate_request: None,
            },
        )
    }

    #[test]
    fn a_first_mint_is_issued_and_the_next_ones_rotated() {
        let s1 = minted(&Default::default(), 0);
        assert_eq!(ready(&s1), ("True", reasons::ISSUED));
        assert_eq!(s1.rotations, 1);
        assert_eq!(s1.observed_generation, Some(3));
        assert_eq!(s1.access_key_id.as_deref(), Some("AK1"));
        let s2 = minted(&s1, 2400);
        assert_eq!(ready(&s2), ("True", reasons::ROTATED));
        assert_eq!(s2.rotations, 2);
        assert_eq!(s2.last_rotation_time, Some(Time(t(2400))));
    }

    #[test]
    fn failures_walk_from_renewal_failing_to_expired_and_recover() {
        let ok = minted(&Default::default(), 0);
        let f1 = after_failure(
            &base(2400, &ok),
            SERVER,
            UNAVAILABLE,
            t(2405),
            Some(t(3600)),
            None,
        );
        assert_eq!(ready(&f1), ("False", reasons::RENEWAL_FAILING));
        assert_eq!(f1.failed_attempts, 1);
        assert_eq!(f1.renewal_time, Some(Time(t(2405))));
        assert_eq!(
            f1.expires_at,
            Some(Time(t(3600))),
            "status keeps the expiry of what the Secret holds"
        );
        let msg = &find(&f1.conditions, types::READY).unwrap().message;
        assert!(
            msg.contains("server") && msg.contains("attempt 1") && msg.contains("valid until"),
            "{msg}"
        );

        let waiting = during_backoff(&base(3700, &f1), Some(t(3600)));
        assert_eq!(ready(&waiting), ("False", reasons::EXPIRED));

        let f2 = after_failure(
            &base(3700, &waiting),
            SERVER,
            UNAVAILABLE,
            t(3710),
            Some(t(3600)),
            None,
        );
        assert_eq!(ready(&f2), ("False", reasons::EXPIRED));
        assert_eq!(f2.failed_attempts, 2);

        let back = minted(&f2, 3710);
        assert_eq!(ready(&back), ("True", reasons::ROTATED));
        assert_eq!(back.failed_attempts, 0);
        assert_eq!(back.last_failure_time, None);
    }

    #[test]
    fn a_credential_that_never_minted_reports_mint_failed() {
        let f = after_failure(
            &base(0, &Default::default()),
            SERVER,
            UNAVAILABLE,
            t(5),
            None,
            None,
        );
        assert_eq!(ready(&f), ("False", reasons::MINT_FAILED));
    }

    #[test]
    fn shortened_lifetimes_and_clamped_renew_before_are_reported_and_cleared() {
        let s = after_mint(
            &base(0, &Default::default()),
            &Minted {
                access_key_id: "AK1",
                issued_at: t(0),
                expires_at: t(30),
                renewal: Renewal {
                    at: t(20),
                    clamped: false,
                    below_sdk_threshold: false,
                },
                shortened_from: Some(Duration::from_secs(3600)),
                rotate_request: Some("r1"),
            },
        );
        let c = find(&s.conditions, types::DURATION_ADJUSTED).unwrap();
        assert_eq!(c.reason, reasons::LIFETIME_SHORTENED);
        assert_eq!(s.last_rotate_request.as_deref(), Some("r1"));
        let s2 = minted(&s, 20);
        assert!(find(&s2.conditions, types::DURATION_ADJUSTED).is_none());
    }

    #[test]
    fn keeping_a_good_secret_is_idempotent() {
        let ok = minted(&Default::default(), 0);
        let k1 = after_keep(
            &base(100, &ok),
            Some("AK1"),
            t(0),
            t(3600),
            Renewal {
                at: t(2400),
                clamped: false,
                below_sdk_threshold: false,
            },
        );
        let k2 = after_keep(
            &base(200, &k1),
            Some("AK1"),
            t(0),
            t(3600),
            Renewal {
                at: t(2400),
                clamped: false,
                below_sdk_threshold: false,
            },
        );
        assert_eq!(
            k1, k2,
            "an unchanged world yields an unchanged status, so no write"
        );
        assert_eq!(ready(&k1), ("True", reasons::ISSUED));
    }

    #[test]
    fn keeping_the_credential_a_mint_just_wrote_changes_nothing() {
        // The reconcile after a rotation finds the Secret the rotation wrote: its status is the
        // rotation's, message included, so it writes nothing (docs/benchmarks.md, writes per
        // rotation).
        let s1 = minted(&Default::default(), 0);
        let s2 = minted(&s1, 2400);
        let k = after_keep(
            &base(2401, &s2),
            Some("AK1"),
            t(2400),
            t(6000),
            Renewal {
                at: t(4800),
                clamped: false,
                below_sdk_threshold: false,
            },
        );
        assert_eq!(k, s2);
        assert!(
            find(&k.conditions, types::READY)
                .unwrap()
                .message
                .contains("rotated")
        );
        // Another credential in the Secret is described anew.
        let other = after_keep(
            &base(2401, &s2),
            Some("AK9"),
            t(2400),
            t(6000),
            Renewal {
                at: t(4800),
                clamped: false,
                below_sdk_threshold: false,
            },
        );
        let msg = &find(&other.conditions, types::READY).unwrap().message;
        assert!(msg.contains("AK9") && !msg.contains("rotated"), "{msg}");
    }

    fn keep(prev: &TemporaryCredentialStatus, now: i64, issued_at: i64) -> TemporaryCredentialStatus {
        after_keep(
            &base(now, prev),
            Some("AK2"),
            t(issued_at),
            t(issued_at + 3600),
            Renewal {
                at: t(issued_at + 2400),
                clamped: false,
                below_sdk_threshold: false,
            },
        )
    }

    #[test]
    fn a_rotation_whose_status_write_was_lost_is_counted_from_the_secret() {
        let s1 = minted(&Default::default(), 0);
        // the controller rotated at 2400, wrote the Secret and stopped before writing the status
        let k = keep(&s1, 2500, 2400);
        assert_eq!(k.rotations, 2);
        assert_eq!(k.last_rotation_time, Some(Time(t(2400))));
        assert_eq!(ready(&k), ("True", reasons::ROTATED));
        assert_eq!(keep(&k, 2600, 2400), k, "counted once");
    }

    #[test]
    fn the_last_five_issued_keys_are_remembered_newest_first() {
        let mut s = TemporaryCredentialStatus::default();
        for i in 0..7 {
            let now = i * 2400;
            s = after_mint(
                &base(now, &s),
                &Minted {
                    access_key_id: &format!("AK{i}"),
                    issued_at: t(now),
                    expires_at: t(now + 3600),
                    renewal: Renewal {
                        at: t(now + 2400),
                        clamped: false,
                        below_sdk_threshold: false,
                    },
                    shortened_from: None,
                    rotate_request: None,
                },
            );
        }
        let ids: Vec<&str> = s
            .issued_credentials
            .iter()
            .map(|r| r.access_key_id.as_str())
            .collect();
        assert_eq!(ids, ["AK6", "AK5", "AK4", "AK3", "AK2"]);
        assert_eq!(s.issued_credentials[0].issued_at, Time(t(6 * 2400)));
        assert_eq!(s.issued_credentials[0].expires_at, Time(t(6 * 2400 + 3600)));
        assert_eq!(s.access_key_id.as_deref(), Some("AK6"));
        // keeping the Secret's credential adds nothing
        let kept = after_keep(
            &base(6 * 2400 + 10, &s),
            Some("AK6"),
            t(6 * 2400),
            t(6 * 2400 + 3600),
            Renewal {
                at: t(6 * 2400 + 2400),
                clamped: false,
                below_sdk_threshold: false,
            },
        );
        assert_eq!(kept.issued_credentials, s.issued_credentials);
    }

    #[test]
    fn a_rotation_whose_status_write_was_lost_is_still_in_the_history() {
        let s1 = minted(&Default::default(), 0);
        let k = keep(&s1, 2500, 2400);
        let ids: Vec<&str> = k
            .issued_credentials
            .iter()
            .map(|r| r.access_key_id.as_str())
            .collect();
        assert_eq!(ids, ["AK2", "AK1"]);
        assert_eq!(keep(&k, 2600, 2400).issued_credentials, k.issued_credentials);
    }

    #[test]
    fn a_status_rebuilt_from_the_secret_counts_one_issue() {
        let k = keep(&Default::default(), 100, 0);
        assert_eq!(k.rotations, 1);
        assert_eq!(k.last_rotation_time, Some(Time(t(0))));
        assert_eq!(ready(&k), ("True", reasons::ISSUED));
    }

    #[test]
    fn problems_keep_the_expiry_of_the_credential_still_held() {
        let ok = minted(&Default::default(), 0);
        let p = after_problem(
            &base(100, &ok),
            &Problem::new(reasons::DENIED, "namespace team-a is not allowed"),
            Some(t(3600)),
        );
        assert_eq!(ready(&p), ("False", reasons::DENIED));
        assert_eq!(p.renewal_time, None);
        assert!(
            find(&p.conditions, types::READY)
                .unwrap()
                .message
                .contains("valid until 1970-01-01T01:00:00Z")
        );
    }
    #[test]
    fn a_deferred_mint_says_what_waits_and_until_when() {
        let ok = minted(&Default::default(), 0);
        let kept = during_defer(&base(10, &ok), MintReason::RotateRequested, t(30), Some(t(3600)));
        assert_eq!(ready(&kept), ("True", reasons::MINT_DEFERRED));
        assert_eq!(kept.renewal_time, Some(Time(t(30))));
        assert_eq!(kept.rotations, 1, "deferring is no rotation");
        assert_eq!(kept.last_rotate_request, None, "the request stays pending");
        let msg = &find(&kept.conditions, types::READY).unwrap().message;
        assert!(
            msg.contains("rotation was requested") && msg.contains("1970-01-01T00:00:30Z"),
            "{msg}"
        );
        let gone = during_defer(&base(10, &ok), MintReason::SecretMissing, t(30), None);
        assert_eq!(ready(&gone), ("False", reasons::MINT_DEFERRED));
        assert_eq!(gone.expires_at, None);
    }

    #[test]
    fn a_failed_mint_counts_the_attempt_and_schedules_the_retry_in_the_future() {
        // A credential refused as nearly expired (docs/security.md M1) is a failure like any other: the
        // attempt counter rises and the retry time is the backoff's, so the plan waits for it.
        let ok = minted(&Default::default(), 0);
        let f = after_failure(
            &base(2400, &ok),
            SERVER,
            "the endpoint issued a credential that expires in 3 s; at least 60 s is required",
            t(2405),
            Some(t(3600)),
            Some("7"),
        );
        assert_eq!(f.failed_attempts, 1);
        assert_eq!(f.renewal_time, Some(Time(t(2405))));
        assert_eq!(f.last_failure_source_version.as_deref(), Some("7"));
        assert_eq!(f.observed_generation, Some(3));
        assert_eq!(f.rotations, ok.rotations, "a refused credential is no rotation");
    }
}
