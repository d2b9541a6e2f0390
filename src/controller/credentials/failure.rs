//! What a failed mint or Secret write means, as pure functions: whether retrying can help, when
//! the next attempt is, what the status says, and which reason it shows (docs/controller.md
//! §Failures and backoff).

use std::{fmt, time::Duration};

use jiff::{SignedDuration, Timestamp};

use super::status::{self, Base};
use crate::{
    api::{
        TemporaryCredentialStatus,
        condition::{reasons, types},
    },
    cloud::{CloudError, ErrorClass, IssuedCredential},
    controller::{
        authorize::Problem,
        error::{error_class, kube_message},
    },
    schedule::{RetryInput, retry_delay, until},
};

/// A failed mint, classified. Its message never carries secret material.
#[derive(Debug)]
pub struct MintError {
    pub class: ErrorClass,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// A condition reason more specific than the class, when one applies: `EndpointNotAllowed`
    /// (nothing was sent, and retrying cannot help until the spec or the operator's flags
    /// change), or a refusal of tcred's own such as `TokenNotAllowed` or `SecretNotBound`.
    pub reason: Option<&'static str>,
    /// Huawei Cloud's clock skew measured from the failing call's own response (trusted hosts only).
    pub clock_skew_seconds: Option<i64>,
}

impl fmt::Display for MintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<CloudError> for MintError {
    fn from(e: CloudError) -> Self {
        Self {
            class: e.class(),
            retry_after: e.retry_after(),
            reason: matches!(e, CloudError::EndpointNotAllowed { .. })
                .then_some(reasons::ENDPOINT_NOT_ALLOWED),
            clock_skew_seconds: e.clock_skew_seconds(),
            message: e.to_string(),
        }
    }
}

impl MintError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            retry_after: None,
            reason: None,
            clock_skew_seconds: None,
        }
    }

    /// A refusal tcred makes itself: nothing was sent anywhere. Class Auth, so the failure path
    /// backs off (at least a minute) instead of trying again at once.
    pub fn refused(problem: Problem) -> Self {
        Self {
            class: ErrorClass::Auth,
            message: problem.message,
            retry_after: None,
            reason: Some(problem.reason),
            clock_skew_seconds: None,
        }
    }

    pub fn kube(what: &str, e: &kube::Error) -> Self {
        Self::new(error_class(e), format!("{what}: {}", kube_message(e)))
    }
}

/// What a failure leads to.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing was sent and retrying cannot help until the source (or the operator's flags)
    /// changes: the status says why and the next reconcile waits for a change.
    Blocked(Problem),
    /// Try again after `delay`, with this status meanwhile.
    Retry {
        delay: Duration,
        status: Box<TemporaryCredentialStatus>,
    },
}

/// What every failure is judged against: the reconcile's base status and the object.
pub struct Context<'a> {
    pub base: &'a Base<'a>,
    /// The object's UID: the jitter key of its backoff.
    pub uid: &'a str,
    /// The expiry of the credential the Secret still holds, if any.
    pub held_expiry: Option<Timestamp>,
    pub source_version: Option<&'a str>,
}

/// What a failed mint means. An endpoint that is not allowed blocks; anything else is retried
/// with a backoff that grows with each failure and never waits past a quarter of what the Secret
/// still holds. An authentication failure with a large clock difference says so; a refusal of
/// tcred's own shows its own reason.
pub fn mint_failed(cx: &Context<'_>, e: &MintError) -> Decision {
    if e.reason == Some(reasons::ENDPOINT_NOT_ALLOWED) {
        return Decision::Blocked(Problem::new(reasons::ENDPOINT_NOT_ALLOWED, e.message.clone()));
    }
    let mut message = e.message.clone();
    if let Some(hint) = clock_hint(e.class, e.clock_skew_seconds) {
        message.push_str(&hint);
    }
    retry(cx, e.class, e.retry_after, &message, e.reason)
}

/// What a failed Secret write means (in the dry run before a mint, or of a minted credential):
/// retried like a mint, with the reason `SecretWriteFailed`.
pub fn write_failed(cx: &Context<'_>, e: &kube::Error, message: &str) -> Decision {
    retry(
        cx,
        error_class(e),
        None,
        message,
        Some(reasons::SECRET_WRITE_FAILED),
    )
}

/// Why a Secret write failed, for the status: the dry run before a mint, or the write of a
/// minted credential (where a Secret that appeared meanwhile is named as such).
pub fn write_failure_message(e: &kube::Error, minted: bool, appeared: bool, secret_name: &str) -> String {
    match (minted, appeared) {
        (false, _) => format!(
            "the Secret cannot be written, so nothing was minted: {}",
            kube_message(e)
        ),
        (true, true) => format!(
            "a Secret named {secret_name} was created by someone else while tcred minted; tcred does not adopt it"
        ),
        (true, false) => format!(
            "a credential was minted but the Secret write failed: {}; tcred keeps the credential and retries only the write",
            kube_message(e)
        ),
    }
}

fn retry(
    cx: &Context<'_>,
    class: ErrorClass,
    retry_after: Option<Duration>,
    message: &str,
    reason: Option<&'static str>,
) -> Decision {
    let (delay, retry_at) = next_attempt(cx, class, retry_after);
    let mut status = status::after_failure(
        cx.base,
        class,
        message,
        retry_at,
        cx.held_expiry,
        cx.source_version,
    );
    with_reason(&mut status, reason);
    Decision::Retry {
        delay,
        status: Box::new(status),
    }
}

/// When the next attempt after a failure of `class` is due: the delay and the time.
pub fn next_attempt(
    cx: &Context<'_>,
    class: ErrorClass,
    retry_after: Option<Duration>,
) -> (Duration, Timestamp) {
    let now = cx.base.now;
    let remaining = cx.held_expiry.filter(|x| *x > now).map(|x| until(now, x));
    let delay = retry_delay(RetryInput {
        attempt: u32::try_from(cx.base.prev.failed_attempts)
            .unwrap_or(0)
            .saturating_add(1),
        class,
        retry_after,
        remaining_validity: remaining,
        held_expired: cx.held_expiry.is_some_and(|x| x <= now),
        jitter_key: cx.uid,
    });
    let retry_at = SignedDuration::try_from(delay)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX);
    (delay, retry_at)
}

/// Sets the Ready condition's reason to a more specific one (`TokenNotAllowed`, `SecretNotBound`,
/// `SecretWriteFailed`) on a status the failure path built; message and times stay.
pub fn with_reason(status: &mut TemporaryCredentialStatus, reason: Option<&'static str>) {
    let Some(reason) = reason else {
        return;
    };
    if let Some(c) = status.conditions.iter_mut().find(|c| c.type_ == types::READY) {
        c.reason = reason.to_owned();
    }
}

/// A credential issued with less than `min_left` of validity is a failed mint (retried with
/// backoff), never written: writing it would make the next renewal due at once.
pub fn usable(
    issued_at: Timestamp,
    cred: IssuedCredential,
    min_left: Duration,
) -> Result<IssuedCredential, MintError> {
    match crate::schedule::check_issued(issued_at, cred.expires_at, min_left) {
        Ok(()) => Ok(cred),
        Err(message) => Err(MintError {
            class: ErrorClass::InvalidResponse,
            message: format!("{message} (--min-credential-lifetime)"),
            retry_after: None,
            reason: None,
            clock_skew_seconds: cred.clock_skew_seconds,
        }),
    }
}

/// Signed requests fail when the clocks differ by more than Huawei's 15-minute window; well before
/// that, an authentication failure says what the clocks look like.
pub fn clock_hint(class: ErrorClass, skew: Option<i64>) -> Option<String> {
    const NOTABLE_SECONDS: i64 = 300;
    let s = skew?;
    (class == ErrorClass::Auth && s.abs() >= NOTABLE_SECONDS).then(|| {
        let (by, way) = (s.abs(), if s > 0 { "ahead of" } else { "behind" });
        format!(
            " (Huawei Cloud's clock runs {by}s {way} this host's; signed requests are only accepted within 15 minutes of Huawei's time: check the node's NTP)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::find;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn judged<T>(
        prev: &TemporaryCredentialStatus,
        held: Option<Timestamp>,
        f: impl FnOnce(&Context<'_>) -> T,
    ) -> T {
        let base = Base {
            now: t(1_000_000),
            generation: Some(3),
            prev,
            target: Some("iam::0123:agency:ops".into()),
            secret_name: "billing".into(),
        };
        f(&Context {
            base: &base,
            uid: "uid-billing",
            held_expiry: held,
            source_version: Some("42"),
        })
    }

    fn retry(d: Decision) -> (Duration, TemporaryCredentialStatus) {
        match d {
            Decision::Retry { delay, status } => (delay, *status),
            other => panic!("not a retry: {other:?}"),
        }
    }

    #[test]
    fn a_refused_endpoint_becomes_the_endpoint_not_allowed_reason() {
        let e = MintError::from(CloudError::EndpointNotAllowed {
            endpoint: "https://collector.example".into(),
        });
        assert_eq!(e.reason, Some(reasons::ENDPOINT_NOT_ALLOWED));
        assert_eq!(e.class, ErrorClass::InvalidRequest);
        assert!(e.message.contains("--allowed-endpoint-hosts"), "{}", e.message);
    }

    #[test]
    fn a_failed_call_carries_its_own_clock_measurement() {
        let e = MintError::from(CloudError::Api {
            operation: "AssumeAgency",
            status: 401,
            code: Some("APIGW.0301".into()),
            message: "verify aksk signature fail".into(),
            request_id: None,
            retry_after: None,
            clock_skew_seconds: Some(1200),
        });
        assert_eq!(e.clock_skew_seconds, Some(1200));
        assert_eq!(e.reason, None);
        assert_eq!(e.class, ErrorClass::Auth);
    }

    #[test]
    fn an_endpoint_that_is_not_allowed_blocks_instead_of_retrying() {
        let e = MintError::from(CloudError::EndpointNotAllowed {
            endpoint: "https://collector.example".into(),
        });
        let d = judged(&Default::default(), None, |cx| mint_failed(cx, &e));
        assert_eq!(
            d,
            Decision::Blocked(Problem::new(reasons::ENDPOINT_NOT_ALLOWED, e.message.clone()))
        );
    }

    #[test]
    fn a_failed_mint_is_retried_with_a_status_that_says_when_and_why() {
        let e = MintError::new(ErrorClass::Server, "STS answered 503");
        let (delay, status) = retry(judged(&Default::default(), None, |cx| mint_failed(cx, &e)));
        assert!(delay > Duration::ZERO);
        assert_eq!(status.failed_attempts, 1);
        assert_eq!(status.last_failure_source_version.as_deref(), Some("42"));
        let ready = find(&status.conditions, types::READY).expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reasons::MINT_FAILED)
        );
        assert!(ready.message.contains("STS answered 503"), "{}", ready.message);
        let retry_at = status.renewal_time.expect("next attempt").0;
        assert_eq!(
            retry_at,
            t(1_000_000)
                .checked_add(SignedDuration::try_from(delay).unwrap())
                .unwrap()
        );
    }

    #[test]
    fn a_retry_never_waits_past_a_quarter_of_what_the_secret_still_holds() {
        let e = MintError::new(ErrorClass::Auth, "denied");
        let prev = TemporaryCredentialStatus {
            failed_attempts: 12,
            ..Default::default()
        };
        let held = t(1_000_400);
        let (delay, status) = retry(judged(&prev, Some(held), |cx| mint_failed(cx, &e)));
        assert!(delay <= Duration::from_secs(100), "{delay:?}");
        let ready = find(&status.conditions, types::READY).expect("Ready");
        assert_eq!(ready.reason, reasons::RENEWAL_FAILING);
    }

    #[test]
    fn an_authentication_failure_with_a_skewed_clock_says_so_in_the_status() {
        let mut e = MintError::new(ErrorClass::Auth, "verify aksk signature fail");
        e.clock_skew_seconds = Some(1200);
        let (_, status) = retry(judged(&Default::default(), None, |cx| mint_failed(cx, &e)));
        let ready = find(&status.conditions, types::READY).expect("Ready");
        assert!(
            ready.message.contains("1200s ahead of this host's"),
            "{}",
            ready.message
        );
    }

    #[test]
    fn a_refusal_of_tcreds_own_shows_its_reason() {
        let e = MintError::refused(Problem::new(reasons::SECRET_NOT_BOUND, "not bound"));
        let (_, status) = retry(judged(&Default::default(), None, |cx| mint_failed(cx, &e)));
        let ready = find(&status.conditions, types::READY).expect("Ready");
        assert_eq!(ready.reason, reasons::SECRET_NOT_BOUND);
    }

    #[test]
    fn a_failed_secret_write_is_retried_as_secret_write_failed() {
        let e = kube::Error::Api(
            kube::core::Status::failure("exceeded quota: secrets", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        let message = write_failure_message(&e, false, false, "billing");
        assert_eq!(
            message,
            "the Secret cannot be written, so nothing was minted: exceeded quota: secrets"
        );
        let (delay, status) = retry(judged(&Default::default(), None, |cx| {
            write_failed(cx, &e, &message)
        }));
        assert!(
            delay >= Duration::from_secs(60),
            "auth-class failures wait: {delay:?}"
        );
        let ready = find(&status.conditions, types::READY).expect("Ready");
        assert_eq!(ready.reason, reasons::SECRET_WRITE_FAILED);
        assert!(ready.message.contains("exceeded quota"), "{}", ready.message);
        let appeared = write_failure_message(&e, true, true, "billing");
        assert!(
            appeared.starts_with("a Secret named billing was created by someone else"),
            "{appeared}"
        );
    }

    #[test]
    fn a_credential_with_too_little_validity_is_a_failed_mint() {
        let cred = IssuedCredential {
            access_key_id: "AK".into(),
            secret_access_key: "sk".to_owned().into(),
            security_token: "token".to_owned().into(),
            expires_at: t(1_000_030),
            clock_skew_seconds: Some(7),
        };
        let e = usable(t(1_000_000), cred, Duration::from_secs(60)).unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidResponse);
        assert_eq!(e.clock_skew_seconds, Some(7));
        assert!(
            e.message.ends_with("(--min-credential-lifetime)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn authentication_failures_name_a_large_clock_difference() {
        let hint = clock_hint(ErrorClass::Auth, Some(1200)).expect("a hint");
        assert!(
            hint.contains("1200s ahead of this host's") && hint.contains("NTP"),
            "{hint}"
        );
        let behind = clock_hint(ErrorClass::Auth, Some(-900)).expect("a hint");
        assert!(behind.contains("900s behind"), "{behind}");
    }

    #[test]
    fn small_differences_and_other_failures_get_no_hint() {
        assert_eq!(clock_hint(ErrorClass::Auth, Some(30)), None);
        assert_eq!(clock_hint(ErrorClass::Auth, None), None);
        assert_eq!(clock_hint(ErrorClass::Server, Some(1200)), None);
    }

    #[test]
    fn a_refusal_backs_off_and_names_its_own_reason() {
        let e = MintError::refused(Problem::new(reasons::TOKEN_NOT_ALLOWED, "no"));
        // Auth failures wait at least a minute: a refusal never turns into a mint loop.
        assert_eq!(e.class, ErrorClass::Auth);
        let mut status = TemporaryCredentialStatus::default();
        crate::api::condition::set_condition(
            &mut status.conditions,
            crate::api::condition::ConditionUpdate {
                type_: types::READY,
                status: false,
                reason: reasons::MINT_FAILED,
                message: "minting failed (auth, attempt 1): no".into(),
            },
            Some(1),
            Timestamp::UNIX_EPOCH,
        );
        with_reason(&mut status, e.reason);
        assert_eq!(status.conditions[0].reason, reasons::TOKEN_NOT_ALLOWED);
        with_reason(&mut status, None);
        assert_eq!(status.conditions[0].reason, reasons::TOKEN_NOT_ALLOWED);
    }
}
