//! What a source's status says, as pure functions of what checking it found: the Ready
//! condition, and for an Identity Center session SessionExpiringSoon / SessionExpired, and when
//! to look again (docs/controller.md §Sources).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    api::{
        SourceStatus,
        condition::{ConditionUpdate, reasons, remove_condition, set_condition, types},
    },
    time::rfc3339,
};

/// Re-check sources at least this often (Secrets referenced by sources are not watched).
pub const RECHECK: Duration = Duration::from_secs(300);

/// What checking a source found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The spec names no single mode.
    NoMode,
    /// accessKey: the key's id, or what is wrong with its Secret.
    AccessKey(Result<String, String>),
    /// identityCenter: the session's expiry, or why there is no usable session.
    Session(Result<Timestamp, SessionProblem>),
    /// identityCenter: a usable session whose refresh is due but cannot be tried: the session
    /// Secret lacks keys only a refresh needs (`missing` names them).
    SessionRefreshBlocked {
        expires: Timestamp,
        missing: String,
    },
    WebIdentity,
    /// The access key or session Secret is not labelled for this source: nothing else was read
    /// from it.
    SecretNotBound(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionProblem {
    pub reason: &'static str,
    pub message: String,
}

/// The status for a check, as a pure function (the transition time of an unchanged condition
/// stays put, so an unchanged world writes nothing).
pub fn status_for(
    prev: &SourceStatus,
    generation: Option<i64>,
    mode: Option<&str>,
    check: &Check,
    now: Timestamp,
    warning: Duration,
    login_hint: &str,
) -> SourceStatus {
    let mut s = SourceStatus {
        observed_generation: generation,
        mode: mode.map(str::to_owned),
        session_expires_at: match check {
            Check::Session(Ok(expires)) | Check::SessionRefreshBlocked { expires, .. } => {
                Some(Time(*expires))
            }
            _ => None,
        },
        access_key_id: match check {
            Check::AccessKey(Ok(id)) => Some(id.clone()),
            _ => None,
        },
        ..prev.clone()
    };
    for c in conditions_for(check, now, warning, login_hint) {
        set_condition(&mut s.conditions, c, generation, now);
    }
    match check {
        Check::Session(Ok(_)) | Check::SessionRefreshBlocked { .. } => {}
        Check::Session(Err(_)) => remove_condition(&mut s.conditions, types::SESSION_EXPIRING_SOON),
        _ => {
            remove_condition(&mut s.conditions, types::SESSION_EXPIRING_SOON);
            remove_condition(&mut s.conditions, types::SESSION_EXPIRED);
        }
    }
    s
}

fn condition(
    type_: &'static str,
    status: bool,
    reason: &'static str,
    message: String,
) -> ConditionUpdate<'static> {
    ConditionUpdate {
        type_,
        status,
        reason,
        message,
    }
}

/// The conditions a check sets, in order.
fn conditions_for(
    check: &Check,
    now: Timestamp,
    warning: Duration,
    login_hint: &str,
) -> Vec<ConditionUpdate<'static>> {
    let ready = |status, reason, message| vec![condition(types::READY, status, reason, message)];
    match check {
        Check::NoMode => ready(
            false,
            reasons::INVALID_SPEC,
            "exactly one of identityCenter, accessKey or webIdentity must be set".into(),
        ),
        Check::AccessKey(Ok(id)) => ready(true, reasons::CONFIGURED, format!("signing with access key {id}")),
        Check::AccessKey(Err(problem)) => ready(false, reasons::SECRET_INVALID, problem.clone()),
        Check::WebIdentity => ready(
            true,
            reasons::CONFIGURED,
            "exchanging ServiceAccount tokens with STS AssumeAgencyWithOIDC".into(),
        ),
        Check::SecretNotBound(message) => ready(false, reasons::SECRET_NOT_BOUND, message.clone()),
        Check::Session(Err(p)) => ready(false, p.reason, p.message.clone()),
        Check::Session(Ok(expires)) => session_conditions(*expires, now, warning, login_hint),
        Check::SessionRefreshBlocked { expires, missing } => {
            let mut cs = session_conditions(*expires, now, warning, login_hint);
            if *expires > now {
                let at = rfc3339(*expires);
                cs.retain(|c| c.type_ != types::SESSION_EXPIRING_SOON);
                cs.push(condition(
                    types::SESSION_EXPIRING_SOON,
                    true,
                    reasons::SESSION_ENDING,
                    format!(
                        "the access token is due for a refresh but {missing}; the session ends at {at}: add them or run `{login_hint}` before then"
                    ),
                ));
            }
            cs
        }
    }
}

/// Ready, SessionExpired and SessionExpiringSoon for a session ending at `expires`.
fn session_conditions(
    expires: Timestamp,
    now: Timestamp,
    warning: Duration,
    login_hint: &str,
) -> Vec<ConditionUpdate<'static>> {
    let at = rfc3339(expires);
    if expires <= now {
        let msg = format!(
            "the Identity Center session ended at {at}; credentials already minted stay valid until their own expiry; run `{login_hint}`"
        );
        return vec![
            condition(types::READY, false, reasons::SESSION_ENDED, msg.clone()),
            condition(types::SESSION_EXPIRED, true, reasons::SESSION_ENDED, msg),
            condition(
                types::SESSION_EXPIRING_SOON,
                false,
                reasons::SESSION_ENDED,
                format!("the session ended at {at}"),
            ),
        ];
    }
    let soon = expires.checked_sub(signed(warning)).ok().is_none_or(|t| t <= now);
    let valid = || format!("the session is valid until {at}");
    let expiring = if soon {
        condition(
            types::SESSION_EXPIRING_SOON,
            true,
            reasons::SESSION_ENDING,
            format!("the Identity Center session ends at {at}; run `{login_hint}` before then"),
        )
    } else {
        condition(
            types::SESSION_EXPIRING_SOON,
            false,
            reasons::SESSION_VALID,
            valid(),
        )
    };
    vec![
        condition(
            types::READY,
            true,
            reasons::SESSION_VALID,
            format!("the Identity Center session is valid until {at}"),
        ),
        condition(types::SESSION_EXPIRED, false, reasons::SESSION_VALID, valid()),
        expiring,
    ]
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// When to look at a source again.
pub fn next_check(
    check: &Check,
    refresh_at: Option<Timestamp>,
    now: Timestamp,
    warning: Duration,
) -> Duration {
    // Checked arithmetic: the expiry comes from a Secret anyone in the namespace may write.
    let mut wake = now.checked_add(signed(RECHECK)).unwrap_or(Timestamp::MAX);
    if let Check::Session(Ok(expires)) | Check::SessionRefreshBlocked { expires, .. } = check {
        for t in [
            expires.checked_sub(signed(warning)).ok(),
            Some(*expires),
            refresh_at,
        ]
        .into_iter()
        .flatten()
        {
            if t > now && t < wake {
                wake = t;
            }
        }
    }
    crate::schedule::until(now, wake).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::find;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }
    const DAY: u64 = 86_400;
    const HINT: &str = "tcred login --cluster-source corp";

    fn cond<'a>(s: &'a SourceStatus, type_: &str) -> (&'a str, &'a str) {
        let c = find(&s.conditions, type_).unwrap_or_else(|| panic!("no {type_}"));
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_fresh_session_is_ready_and_not_expiring() {
        let s = status_for(
            &Default::default(),
            Some(1),
            Some("identityCenter"),
            &Check::Session(Ok(t(10 * DAY as i64))),
            t(0),
            Duration::from_secs(DAY),
            HINT,
        );
        assert_eq!(cond(&s, types::READY), ("True", reasons::SESSION_VALID));
        assert_eq!(
            cond(&s, types::SESSION_EXPIRING_SOON),
            ("False", reasons::SESSION_VALID)
        );
        assert_eq!(
            cond(&s, types::SESSION_EXPIRED),
            ("False", reasons::SESSION_VALID)
        );
        assert_eq!(s.session_expires_at, Some(Time(t(10 * DAY as i64))));
    }

    #[test]
    fn a_session_ending_within_the_threshold_warns_then_expires() {
        let check = Check::Session(Ok(t(1000)));
        let soon = status_for(
            &Default::default(),
            Some(1),
            Some("identityCenter"),
            &check,
            t(500),
            Duration::from_secs(600),
            HINT,
        );
        assert_eq!(cond(&soon, types::READY), ("True", reasons::SESSION_VALID));
        assert_eq!(
            cond(&soon, types::SESSION_EXPIRING_SOON),
            ("True", reasons::SESSION_ENDING)
        );
        let msg = &find(&soon.conditions, types::SESSION_EXPIRING_SOON)
            .unwrap()
            .message;
        assert!(msg.contains(HINT), "{msg}");

        let ended = status_for(
            &soon,
            Some(1),
            Some("identityCenter"),
            &check,
            t(1000),
            Duration::from_secs(600),
            HINT,
        );
        assert_eq!(cond(&ended, types::READY), ("False", reasons::SESSION_ENDED));
        assert_eq!(
            cond(&ended, types::SESSION_EXPIRED),
            ("True", reasons::SESSION_ENDED)
        );
        assert_eq!(cond(&ended, types::SESSION_EXPIRING_SOON).0, "False");
    }

    #[test]
    fn an_unchanged_world_gives_an_unchanged_status() {
        let check = Check::Session(Ok(t(10 * DAY as i64)));
        let a = status_for(
            &Default::default(),
            Some(1),
            Some("identityCenter"),
            &check,
            t(0),
            Duration::from_secs(DAY),
            HINT,
        );
        let b = status_for(
            &a,
            Some(1),
            Some("identityCenter"),
            &check,
            t(60),
            Duration::from_secs(DAY),
            HINT,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn missing_sessions_and_bad_keys_are_not_ready() {
        let p = SessionProblem {
            reason: reasons::LOGIN_REQUIRED,
            message: format!("run `{HINT}`"),
        };
        let s = status_for(
            &Default::default(),
            Some(1),
            Some("identityCenter"),
            &Check::Session(Err(p)),
            t(0),
            Duration::from_secs(DAY),
            HINT,
        );
        assert_eq!(cond(&s, types::READY), ("False", reasons::LOGIN_REQUIRED));
        let s = status_for(
            &Default::default(),
            Some(1),
            Some("accessKey"),
            &Check::AccessKey(Err("no key".into())),
            t(0),
            Duration::from_secs(DAY),
            HINT,
        );
        assert_eq!(cond(&s, types::READY), ("False", reasons::SECRET_INVALID));
        assert!(find(&s.conditions, types::SESSION_EXPIRED).is_none());
        let s = status_for(
            &Default::default(),
            Some(1),
            Some("accessKey"),
            &Check::AccessKey(Ok("AK1".into())),
            t(0),
            Duration::from_secs(DAY),
            HINT,
        );
        assert_eq!(s.access_key_id.as_deref(), Some("AK1"));
    }

    #[test]
    fn an_unbound_secret_makes_the_source_not_ready_without_its_key_id() {
        let s = status_for(
            &SourceStatus {
                access_key_id: Some("AK-BEFORE".into()),
                ..Default::default()
            },
            Some(1),
            Some("accessKey"),
            &Check::SecretNotBound("label it".into()),
            t(0),
            Duration::from_secs(DAY),
            HINT,
        );
        assert_eq!(cond(&s, types::READY), ("False", reasons::SECRET_NOT_BOUND));
        assert_eq!(s.access_key_id, None);
        assert!(find(&s.conditions, types::SESSION_EXPIRED).is_none());
    }

    #[test]
    fn a_refresh_blocked_by_missing_keys_is_named_in_session_expiring_soon_and_ready_stays_true() {
        let check = Check::SessionRefreshBlocked {
            expires: t(10 * DAY as i64),
            missing: "the session Secret has no clientId (needed to refresh the access token)".into(),
        };
        let s = status_for(
            &SourceStatus::default(),
            Some(1),
            None,
            &check,
            t(0),
            Duration::from_secs(DAY),
            HINT,
        );
        let ready = find(&s.conditions, types::READY).unwrap();
        assert_eq!(ready.status, "True");
        let soon = find(&s.conditions, types::SESSION_EXPIRING_SOON).unwrap();
        assert_eq!(
            (soon.status.as_str(), soon.reason.as_str()),
            ("True", reasons::SESSION_ENDING)
        );
        assert!(soon.message.contains("no clientId"), "{}", soon.message);
        assert_eq!(s.session_expires_at, Some(Time(t(10 * DAY as i64))));
    }

    #[test]
    fn sessions_are_checked_again_at_the_warning_point_the_refresh_and_the_expiry() {
        let check = Check::Session(Ok(t(10_000)));
        let warning = Duration::from_secs(1_000);
        // far from everything: the periodic re-check
        assert_eq!(next_check(&check, None, t(0), warning), RECHECK);
        // the warning point (9000) comes first
        assert_eq!(
            next_check(&check, None, t(8_900), warning),
            Duration::from_secs(100)
        );
        // then the expiry
        assert_eq!(
            next_check(&check, None, t(9_950), warning),
            Duration::from_secs(50)
        );
        // a refresh before either
        assert_eq!(
            next_check(&check, Some(t(8_800)), t(8_700), warning),
            Duration::from_secs(100)
        );
    }
    #[test]
    fn next_check_does_not_panic_on_a_session_expiry_at_the_edge_of_time() {
        // docs/security.md C1: `expires - warning` overflowed for a session expiring at Timestamp::MIN.
        let warning = Duration::from_secs(DAY);
        for expires in [Timestamp::MIN, Timestamp::MAX] {
            let check = Check::Session(Ok(expires));
            for now in [t(0), Timestamp::MIN, Timestamp::MAX] {
                let d = next_check(&check, Some(Timestamp::MIN), now, warning);
                assert!(d >= Duration::from_secs(1) && d <= RECHECK, "{d:?}");
            }
        }
        let d = next_check(&Check::Session(Ok(t(100))), None, t(0), Duration::MAX);
        assert_eq!(
            d,
            Duration::from_secs(100),
            "the expiry itself, an absurd warning ignored"
        );
    }
}
