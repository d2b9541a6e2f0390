//! When to renew a credential and when to retry a failed mint. Pure functions of their inputs:
//! the same object, credential and failure count always give the same times, so a restarted or
//! newly elected controller reaches the same schedule without any memory of its own.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use crate::{cloud::ErrorClass, podidentity::freshness::served_renew_before};

/// Default share of the issued lifetime left when renewing: a third.
pub const DEFAULT_RENEW_BEFORE_PERCENTAGE: i32 = 33;
/// Spread renewals over up to this share of the lifetime, so objects created together do not
/// renew together.
const SPREAD_FRACTION: f64 = 0.10;
/// A lifetime this much shorter than requested counts as shortened by Huawei Cloud.
const SHORTENED_TOLERANCE: Duration = Duration::from_secs(60);

/// How early to renew, from the spec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenewPolicy {
    pub renew_before: Option<Duration>,
    pub renew_before_percentage: Option<i32>,
    /// `Some(--min-mint-interval)` when the credential is served to pods (`spec.podIdentity`):
    /// it is then renewed early enough to stay above the SDKs' refresh threshold
    /// ([`crate::podidentity::freshness`]).
    pub served_min_interval: Option<Duration>,
}

/// A planned renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    pub at: Timestamp,
    /// `renewBefore` did not fit the issued lifetime and was clamped to the default share.
    pub clamped: bool,
    /// A credential served to pods whose lifetime cannot keep it above the SDKs' refresh
    /// threshold plus margin (`LifetimeBelowSdkThreshold`); it is renewed as the spec says.
    pub below_sdk_threshold: bool,
}

/// When to mint the next credential, given one issued at `issued_at` that expires at `expires_at`.
///
/// Renewal = expiry − renewBefore − spread, where the spread is a stable fraction (hash of
/// `spread_key`, the object's UID) of up to 10% of the lifetime, never more than half of the time
/// between issue and the renew-before point. A renewBefore as long as the lifetime is clamped to
/// the default third: renewing immediately would loop.
pub fn renewal_time(
    issued_at: Timestamp,
    expires_at: Timestamp,
    policy: RenewPolicy,
    spread_key: &str,
) -> Renewal {
    let lifetime = positive(expires_at.duration_since(issued_at));
    let default_before = lifetime.mul_f64(f64::from(DEFAULT_RENEW_BEFORE_PERCENTAGE) / 100.0);
    let (before, clamped) = match (policy.renew_before, policy.renew_before_percentage) {
        (Some(b), _) if b >= lifetime => (default_before, true),
        (Some(b), _) => (b, false),
        (None, Some(p)) => (lifetime.mul_f64(f64::from(p.clamp(1, 90)) / 100.0), false),
        (None, None) => (default_before, false),
    };
    let (before, below_sdk_threshold) = match policy.served_min_interval {
        Some(interval) => {
            let f = served_renew_before(before, lifetime, interval);
            (f.renew_before, f.lifetime_too_short)
        }
        None => (before, false),
    };
    // A served renew-before may take the whole lifetime when the minimum mint interval is zero:
    // renewing at issue would loop, so it is clamped like a spec's.
    let (before, clamped) = if before >= lifetime && lifetime > Duration::ZERO {
        (default_before, true)
    } else {
        (before, clamped)
    };
    let room = lifetime.saturating_sub(before);
    let spread = lifetime
        .mul_f64(SPREAD_FRACTION)
        .min(room / 2)
        .mul_f64(unit_hash(spread_key, 0));
    // `before + spread` never exceeds the lifetime, so this cannot leave [issued, expires]; the
    // checked form only keeps a nonsensical pair of times from panicking.
    let at = expires_at
        .checked_sub(signed(before.saturating_add(spread)))
        .unwrap_or(issued_at.min(expires_at));
    // Whole seconds: the time is written to annotations and status at that precision, and a
    // schedule read back from them must equal the one computed here.
    let at = whole_second(at);
    Renewal {
        at,
        clamped,
        below_sdk_threshold,
    }
}

/// Whether Huawei issued noticeably less than was requested.
pub fn lifetime_shortened(issued_at: Timestamp, expires_at: Timestamp, requested: Duration) -> bool {
    let lifetime = positive(expires_at.duration_since(issued_at));
    lifetime.saturating_add(SHORTENED_TOLERANCE) < requested
}

/// Whether a credential issued at `issued_at` and expiring at `expires_at` is worth writing: one
/// with less than `min_lifetime` of validity would be due for renewal at once, so it counts as a
/// failed mint (and is retried with backoff) instead of being written and re-minted in a loop.
/// The message is for the status and Events.
pub fn check_issued(
    issued_at: Timestamp,
    expires_at: Timestamp,
    min_lifetime: Duration,
) -> Result<(), String> {
    // Both ends lie within jiff's range, so their difference fits a SignedDuration.
    let lifetime = expires_at.duration_since(issued_at);
    if lifetime >= signed(min_lifetime) {
        return Ok(());
    }
    let required = min_lifetime.as_secs();
    Err(if !lifetime.is_negative() {
        format!(
            "the endpoint issued a credential that expires in {} s; at least {required} s is required",
            lifetime.as_secs()
        )
    } else {
        format!(
            "the endpoint issued a credential that had already expired {} s before it was issued; \
             at least {required} s of validity is required",
            lifetime.as_secs().unsigned_abs()
        )
    })
}

/// Clock differences smaller than this are measurement noise (`Date` has one-second resolution).
pub const CLOCK_SKEW_TOLERANCE_SECONDS: i64 = 2;

/// The expiry in this cluster's time of a credential Huawei says expires at `expires_at` (in
/// Huawei's clock), given how far Huawei's clock runs ahead (`skew_seconds`, measured from the
/// `Date` of its responses). A clock running ahead makes the credential die that much earlier in
/// cluster time. A clock running behind is not trusted to give time back, and a measurement that
/// would leave less than a minute after `issued_at` is not plausible (Huawei issues at least 15
/// minutes): it is ignored rather than followed into a renewal loop.
pub fn expiry_in_cluster_time(
    issued_at: Timestamp,
    expires_at: Timestamp,
    skew_seconds: Option<i64>,
) -> Timestamp {
    let Some(ahead) = skew_seconds.filter(|s| *s >= CLOCK_SKEW_TOLERANCE_SECONDS) else {
        return whole_second(expires_at);
    };
    match expires_at.checked_sub(SignedDuration::from_secs(ahead)) {
        Ok(adjusted) if adjusted.as_second().saturating_sub(issued_at.as_second()) >= 60 => {
            whole_second(adjusted)
        }
        // Either implausible or out of range: the expiry as issued (a credential that short or
        // that old is then refused by `check_issued`).
        _ => whole_second(expires_at),
    }
}

/// `t` without its fraction of a second (never later than `t` after the epoch). Expiries are
/// written to the Secret and status at this precision; a schedule computed from the precise time
/// at the mint and recomputed from the written one after a restart would differ by a second, and
/// that difference alone rewrote the status of about a third of the credentials on every restart.
pub fn whole_second(t: Timestamp) -> Timestamp {
    // `as_second` truncates toward zero; before the epoch that is later, so step back one.
    let second = t.as_second() - i64::from(t.subsec_nanosecond() < 0);
    Timestamp::from_second(second).unwrap_or(t)
}

/// Inputs to a retry decision after a failed mint.
#[derive(Clone, Copy, Debug)]
pub struct RetryInput<'a> {
    /// Consecutive failures including this one (1 for the first).
    pub attempt: u32,
    pub class: ErrorClass,
    pub retry_after: Option<Duration>,
    /// Validity left on the credential the Secret holds; `None` when it holds none or an
    /// expired one.
    pub remaining_validity: Option<Duration>,
    /// The Secret holds a credential that has expired: its consumers are failing now.
    pub held_expired: bool,
    /// Stable per-object key for the jitter (the UID).
    pub jitter_key: &'a str,
}

/// First retry after a transient failure (throttled, server, network).
const TRANSIENT_BASE: Duration = Duration::from_secs(5);
/// First retry after a failure that needs someone to change something (auth, not found, invalid).
const PERMANENT_BASE: Duration = Duration::from_secs(30);
/// Longest wait between attempts after a transient failure: Huawei Cloud coming back is noticed
/// within a minute, also when the credential already expired. The per-endpoint rate limit, not
/// the backoff, bounds the load many failing credentials put on it.
const TRANSIENT_MAX: Duration = Duration::from_secs(60);
/// Longest wait between attempts after a transient failure once the credential in the Secret has
/// expired: its consumers fail until the next success, so the retry comes within seconds of
/// Huawei Cloud recovering (found by the chaos soak, docs/benchmarks.md: expired credentials
/// waited up to a minute). The per-endpoint mint rate limit and Retry-After still bound the load.
const EXPIRED_TRANSIENT_MAX: Duration = Duration::from_secs(10);
/// Longest wait after a failure that needs a person (bad key, missing agency, denied trust).
const MAX_DELAY: Duration = Duration::from_secs(600);
/// Five bad signatures in a row lock a Huawei access key for five minutes: never retry auth
/// failures faster than this, whatever else applies.
const AUTH_FLOOR: Duration = Duration::from_secs(60);
/// While a credential is still valid, wait at most this share of its remaining validity, so a
/// recovering Huawei Cloud gets several attempts before expiry.
const VALIDITY_FRACTION: f64 = 0.25;
const MIN_DELAY: Duration = Duration::from_secs(1);

/// How long to wait before the next mint attempt: exponential backoff with equal jitter, capped by
/// a quarter of the remaining validity, and never sooner than the server's Retry-After.
pub fn retry_delay(input: RetryInput<'_>) -> Duration {
    let (base, max) = if input.class.is_transient() && input.held_expired {
        (TRANSIENT_BASE, EXPIRED_TRANSIENT_MAX)
    } else if input.class.is_transient() {
        (TRANSIENT_BASE, TRANSIENT_MAX)
    } else {
        (PERMANENT_BASE, MAX_DELAY)
    };
    let exp = input.attempt.saturating_sub(1).min(16);
    let ceiling = base.saturating_mul(1 << exp).min(max);
    // Equal jitter: half fixed, half random (stable per object and attempt).
    let mut delay =
        ceiling / 2 + (ceiling / 2).mul_f64(unit_hash(input.jitter_key, u64::from(input.attempt)));
    if let Some(remaining) = input.remaining_validity {
        delay = delay.min(remaining.mul_f64(VALIDITY_FRACTION));
    }
    if input.class == ErrorClass::Auth {
        delay = delay.max(AUTH_FLOOR);
    }
    if let Some(after) = input.retry_after {
        delay = delay.max(after.min(MAX_DELAY));
    }
    delay.max(MIN_DELAY)
}

/// A stable number in [0, 1) from `key` and `salt`.
fn unit_hash(key: &str, salt: u64) -> f64 {
    let digest = Sha256::new()
        .chain_update(key.as_bytes())
        .chain_update(salt.to_be_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits: exactly representable in an f64.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

fn positive(d: SignedDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// `later − earlier` as a std duration, zero when `later` is not later.
pub fn until(earlier: Timestamp, later: Timestamp) -> Duration {
    positive(later.duration_since(earlier))
}

/// `t + d`, or the latest representable time when that is out of range.
pub fn add_saturating(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(signed(d)).unwrap_or(Timestamp::MAX)
}

/// `t − d`, or the earliest representable time when that is out of range.
pub fn sub_saturating(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_sub(signed(d)).unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }
    const H: i64 = 3600;
    const UIDS: [&str; 4] = ["uid-a", "uid-b", "0f8e2c1a-7a4d-4f63-9c1e-5a1f6b7c8d9e", ""];

    #[test]
    fn a_huawei_clock_running_ahead_moves_the_expiry_earlier() {
        assert_eq!(expiry_in_cluster_time(t(0), t(H + 120), Some(120)), t(H));
        assert_eq!(expiry_in_cluster_time(t(0), t(H), Some(1)), t(H), "noise");
        assert_eq!(expiry_in_cluster_time(t(0), t(H), None), t(H));
    }

    #[test]
    fn a_clock_behind_or_an_implausible_measurement_changes_nothing() {
        assert_eq!(expiry_in_cluster_time(t(0), t(H), Some(-300)), t(H));
        assert_eq!(expiry_in_cluster_time(t(0), t(H), Some(H - 59)), t(H));
        assert_eq!(expiry_in_cluster_time(t(0), t(H), Some(H - 60)), t(60));
    }

    #[test]
    fn renews_a_third_of_the_lifetime_before_expiry_minus_a_bounded_spread() {
        for uid in UIDS {
            let r = renewal_time(t(0), t(H), RenewPolicy::default(), uid);
            assert!(!r.clamped);
            let before_expiry = H - r.at.as_second();
            // 33% of 3600 = 1188 s, plus up to 10% (360 s) spread.
            assert!(
                (1188..=1188 + 360).contains(&before_expiry),
                "{uid}: {before_expiry}"
            );
        }
    }

    #[test]
    fn the_spread_is_stable_per_object_and_differs_between_objects() {
        let a1 = renewal_time(t(0), t(H), RenewPolicy::default(), "uid-a");
        let a2 = renewal_time(t(0), t(H), RenewPolicy::default(), "uid-a");
        let b = renewal_time(t(0), t(H), RenewPolicy::default(), "uid-b");
        assert_eq!(a1, a2);
        assert_ne!(a1.at, b.at);
    }

    #[test]
    fn a_thousand_objects_created_together_spread_their_renewals() {
        let mut times: Vec<i64> = (0..1000)
            .map(|i| {
                renewal_time(t(0), t(H), RenewPolicy::default(), &format!("uid-{i}"))
                    .at
                    .as_second()
            })
            .collect();
        times.sort_unstable();
        times.dedup();
        // 360 s of spread, one-second resolution: nearly every second is used.
        assert!(times.len() > 300, "only {} distinct renewal seconds", times.len());
    }

    #[test]
    fn renews_before_expiry_when_lifetime_shorter_than_requested() {
        // 1h asked, 30 s issued: schedule from the 30 s actually issued.
        let r = renewal_time(t(1000), t(1030), RenewPolicy::default(), "uid-a");
        assert!(r.at > t(1000) && r.at < t(1030), "{}", r.at);
        assert!(lifetime_shortened(t(1000), t(1030), Duration::from_secs(3600)));
        assert!(!lifetime_shortened(
            t(1000),
            t(1000 + H - 2),
            Duration::from_secs(3600)
        ));
    }

    #[test]
    fn renew_before_longer_than_the_lifetime_is_clamped_instead_of_looping() {
        let policy = RenewPolicy {
            renew_before: Some(Duration::from_secs(2 * H as u64)),
            ..Default::default()
        };
        let r = renewal_time(t(0), t(H), policy, "uid-a");
        assert!(r.clamped);
        assert!(r.at > t(0) + SignedDuration::from_secs(H / 2), "{}", r.at);
    }

    #[test]
    fn credentials_served_to_pods_keep_more_than_the_sdk_threshold_plus_margin() {
        let served = |before: Option<u64>| RenewPolicy {
            renew_before: before.map(Duration::from_secs),
            served_min_interval: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        // Two hours: the default third (40 min) would let SDKs refetch on every call; 50 min.
        for uid in UIDS {
            let r = renewal_time(t(0), t(2 * H), served(None), uid);
            assert!(r.at <= t(2 * H - 50 * 60), "{uid}: {}", r.at);
            assert!(!r.below_sdk_threshold && !r.clamped);
        }
        // A one-hour session still fits: renewed within the first ten minutes.
        let r = renewal_time(t(0), t(H), served(None), "uid-a");
        assert!(r.at <= t(10 * 60) && r.at >= t(0), "{}", r.at);
        assert!(!r.below_sdk_threshold);
        // Forty-five minutes cannot: flagged, and renewed as the spec says (a third).
        let r = renewal_time(t(0), t(45 * 60), served(None), "uid-a");
        assert!(r.below_sdk_threshold);
        assert!(r.at >= t(30 * 60 - 270) && r.at <= t(30 * 60), "{}", r.at);
        // A longer renewBefore of the spec is kept; not served, nothing changes.
        let r = renewal_time(t(0), t(12 * H), served(Some(3 * H as u64)), "uid-a");
        assert!(r.at <= t(9 * H));
        let plain = RenewPolicy::default();
        assert!(!renewal_time(t(0), t(45 * 60), plain, "uid-a").below_sdk_threshold);
    }

    #[test]
    fn a_served_renew_before_that_takes_the_whole_lifetime_is_clamped_not_looped() {
        let policy = RenewPolicy {
            served_min_interval: Some(Duration::ZERO),
            ..Default::default()
        };
        let r = renewal_time(t(0), t(50 * 60), policy, "uid-a");
        assert!(r.clamped);
        assert!(r.at > t(0), "{}", r.at);
    }

    #[test]
    fn explicit_renew_before_and_percentage_are_honoured() {
        let policy = RenewPolicy {
            renew_before: Some(Duration::from_secs(600)),
            ..Default::default()
        };
        let r = renewal_time(t(0), t(H), policy, "uid-a");
        assert!((H - 600 - 360..=H - 600).contains(&r.at.as_second()));

        let policy = RenewPolicy {
            renew_before_percentage: Some(90),
            ..Default::default()
        };
        for uid in UIDS {
            let r = renewal_time(t(0), t(H), policy, uid);
            // 90% before expiry = 360 s after issue; the spread may take at most half of that.
            assert!((180..=360).contains(&r.at.as_second()), "{uid}: {}", r.at);
        }
    }

    #[test]
    fn a_schedule_recomputed_from_the_written_expiry_matches_the_one_made_at_the_mint() {
        // Huawei answers with fractions of a second; the Secret keeps whole seconds.
        let issued = t(1_000);
        let precise = t(1_000 + H)
            .checked_add(SignedDuration::from_millis(734))
            .unwrap();
        let at_mint = expiry_in_cluster_time(issued, precise, None);
        assert_eq!(at_mint, t(1_000 + H));
        let policy = RenewPolicy::default();
        for key in ["a", "b", "c", "uid-4", "uid-5", "uid-6", "uid-7"] {
            assert_eq!(
                renewal_time(issued, at_mint, policy, key),
                renewal_time(issued, t(at_mint.as_second()), policy, key)
            );
        }
        let skewed = expiry_in_cluster_time(issued, precise, Some(120));
        assert_eq!(skewed, t(1_000 + H - 120));
    }

    #[test]
    fn renewal_is_always_after_issue_and_before_expiry() {
        for lifetime in [1, 2, 30, 900, H, 12 * H] {
            for pct in [None, Some(1), Some(50), Some(90)] {
                for uid in UIDS {
                    let policy = RenewPolicy {
                        renew_before_percentage: pct,
                        ..Default::default()
                    };
                    let r = renewal_time(t(0), t(lifetime), policy, uid);
                    assert!(
                        r.at >= t(0) && r.at < t(lifetime),
                        "lifetime {lifetime} pct {pct:?}: {}",
                        r.at
                    );
                }
            }
        }
    }

    fn retry(attempt: u32, class: ErrorClass) -> RetryInput<'static> {
        RetryInput {
            attempt,
            class,
            retry_after: None,
            remaining_validity: None,
            held_expired: false,
            jitter_key: "uid-a",
        }
    }

    #[test]
    fn transient_retries_for_an_expired_credential_come_within_seconds_but_respect_retry_after() {
        for attempt in [1, 5, 30, u32::MAX] {
            let expired = RetryInput {
                held_expired: true,
                ..retry(attempt, ErrorClass::Server)
            };
            let d = retry_delay(expired);
            assert!(d >= MIN_DELAY && d <= EXPIRED_TRANSIENT_MAX, "{d:?}");
        }
        let throttled = RetryInput {
            held_expired: true,
            retry_after: Some(Duration::from_secs(30)),
            ..retry(9, ErrorClass::Throttled)
        };
        assert_eq!(retry_delay(throttled), Duration::from_secs(30));
        // A failure that needs a person is not retried faster because consumers are failing.
        let denied = RetryInput {
            held_expired: true,
            ..retry(9, ErrorClass::Auth)
        };
        assert!(retry_delay(denied) >= AUTH_FLOOR);
    }

    #[test]
    fn transient_failures_back_off_exponentially_with_jitter() {
        let d: Vec<Duration> = (1..=8)
            .map(|a| retry_delay(retry(a, ErrorClass::Server)))
            .collect();
        assert!(
            d[0] >= Duration::from_millis(2500) && d[0] <= Duration::from_secs(5),
            "{d:?}"
        );
        for w in d.windows(2) {
            // each ceiling doubles; with equal jitter the next delay is at least the previous floor
            assert!(w[1] * 2 >= w[0], "{d:?}");
        }
        assert!(d[7] <= TRANSIENT_MAX);
        assert!(retry_delay(retry(40, ErrorClass::Network)) <= TRANSIENT_MAX);
    }

    #[test]
    fn a_long_outage_is_retried_at_least_every_minute_but_human_errors_back_off_further() {
        assert!(retry_delay(retry(30, ErrorClass::Server)) <= Duration::from_secs(60));
        let permanent = retry_delay(retry(30, ErrorClass::NotFound));
        assert!(
            permanent > Duration::from_secs(60) && permanent <= MAX_DELAY,
            "{permanent:?}"
        );
    }

    #[test]
    fn backoff_never_exceeds_a_quarter_of_the_remaining_validity() {
        let input = RetryInput {
            remaining_validity: Some(Duration::from_secs(40)),
            ..retry(9, ErrorClass::Server)
        };
        assert!(retry_delay(input) <= Duration::from_secs(10));
        let input = RetryInput {
            remaining_validity: Some(Duration::ZERO),
            ..retry(9, ErrorClass::Server)
        };
        assert_eq!(retry_delay(input), MIN_DELAY);
    }

    #[test]
    fn retry_after_is_respected_even_when_validity_is_short() {
        let input = RetryInput {
            retry_after: Some(Duration::from_secs(20)),
            remaining_validity: Some(Duration::from_secs(40)),
            ..retry(1, ErrorClass::Throttled)
        };
        assert_eq!(retry_delay(input), Duration::from_secs(20));
        let absurd = RetryInput {
            retry_after: Some(Duration::from_secs(86_400)),
            ..retry(1, ErrorClass::Throttled)
        };
        assert_eq!(retry_delay(absurd), MAX_DELAY);
    }

    #[test]
    fn auth_failures_wait_at_least_a_minute_to_avoid_key_lockout() {
        let input = RetryInput {
            remaining_validity: Some(Duration::from_secs(30)),
            ..retry(1, ErrorClass::Auth)
        };
        assert_eq!(retry_delay(input), AUTH_FLOOR);
        assert!(retry_delay(retry(1, ErrorClass::NotFound)) >= Duration::from_secs(15));
    }

    #[test]
    fn an_unusable_answer_is_not_retried_in_quick_succession() {
        // An endpoint answering garbage, oversized bodies or expired credentials gets at most
        // three attempts a minute: 15–30 s, then 30–60 s.
        let first = retry_delay(retry(1, ErrorClass::InvalidResponse));
        let second = retry_delay(retry(2, ErrorClass::InvalidResponse));
        assert!(first >= Duration::from_secs(15), "{first:?}");
        assert!(first + second >= Duration::from_secs(45), "{first:?} {second:?}");
    }

    #[test]
    fn retry_delays_are_stable_for_the_same_object_and_attempt() {
        assert_eq!(
            retry_delay(retry(3, ErrorClass::Server)),
            retry_delay(retry(3, ErrorClass::Server))
        );
    }
    #[test]
    fn a_credential_with_less_than_the_least_lifetime_is_a_failed_mint() {
        let min = Duration::from_secs(60);
        assert_eq!(check_issued(t(0), t(60), min), Ok(()));
        assert_eq!(check_issued(t(0), t(H), min), Ok(()));
        let short = check_issued(t(0), t(3), min).unwrap_err();
        assert_eq!(
            short,
            "the endpoint issued a credential that expires in 3 s; at least 60 s is required"
        );
        let expired = check_issued(t(100), t(40), min).unwrap_err();
        assert!(
            expired.contains("already expired 60 s before it was issued"),
            "{expired}"
        );
        assert!(check_issued(Timestamp::MAX, Timestamp::MIN, min).is_err());
        assert!(check_issued(t(0), t(59), min).is_err());
        let just_short = check_issued(
            Timestamp::new(0, 500_000_000).unwrap(),
            Timestamp::new(60, 200_000_000).unwrap(),
            min,
        )
        .unwrap_err();
        assert!(just_short.contains("expires in 59 s"), "{just_short}");
        assert!(check_issued(t(0), t(H), Duration::MAX).is_err());
    }

    #[test]
    fn an_expiry_at_the_edge_of_time_does_not_panic_with_a_clock_skew() {
        // Found by fuzzing (docs/security.md C1): `expires_at - skew` overflowed.
        let min = Timestamp::MIN;
        assert_eq!(expiry_in_cluster_time(t(0), min, Some(120)), min);
        assert_eq!(
            expiry_in_cluster_time(t(0), min, Some(i64::MAX)),
            min,
            "an absurd skew changes nothing"
        );
        let issued: Timestamp = "-000004-01-28T00:00:00Z".parse().unwrap();
        let expires: Timestamp = "2208-05-19T00:00:00Z".parse().unwrap();
        let adjusted = expiry_in_cluster_time(issued, expires, Some(740_000_000_000));
        assert_eq!(adjusted, expires);
    }

    #[test]
    fn saturating_time_arithmetic_stays_in_range() {
        assert_eq!(
            add_saturating(Timestamp::MAX, Duration::from_secs(1)),
            Timestamp::MAX
        );
        assert_eq!(
            sub_saturating(Timestamp::MIN, Duration::from_secs(1)),
            Timestamp::MIN
        );
        assert_eq!(add_saturating(t(0), Duration::MAX), Timestamp::MAX);
        assert_eq!(add_saturating(t(5), Duration::from_secs(5)), t(10));
        assert_eq!(sub_saturating(t(5), Duration::from_secs(5)), t(0));
    }

    mod properties {
        use proptest::prelude::*;

        use super::{super::*, t};

        fn any_time() -> impl Strategy<Value = Timestamp> {
            prop_oneof![
                Just(Timestamp::MIN),
                Just(Timestamp::MAX),
                (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second())
                    .prop_map(|s| Timestamp::from_second(s).unwrap()),
                (0i64..4_000_000_000).prop_map(|s| Timestamp::from_second(s).unwrap()),
                (
                    Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
                    0i32..1_000_000_000
                )
                    .prop_map(|(s, n)| Timestamp::new(s, n).unwrap_or(Timestamp::MAX)),
            ]
        }

        fn any_duration() -> impl Strategy<Value = Duration> {
            prop_oneof![
                Just(Duration::ZERO),
                Just(Duration::MAX),
                any::<u64>().prop_map(Duration::from_secs),
                (0u64..100_000).prop_map(Duration::from_secs),
                (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            ]
        }

        fn any_class() -> impl Strategy<Value = ErrorClass> {
            prop_oneof![
                Just(ErrorClass::Throttled),
                Just(ErrorClass::Auth),
                Just(ErrorClass::NotFound),
                Just(ErrorClass::InvalidRequest),
                Just(ErrorClass::Server),
                Just(ErrorClass::Network),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn renewal_never_panics_and_whole_second_renewals_lie_between_issue_and_expiry(
                issued in any_time(),
                expires in any_time(),
                before in proptest::option::of(any_duration()),
                pct in proptest::option::of(any::<i32>()),
                served in proptest::option::of(0u64..7200),
                key in ".{0,40}",
            ) {
                let policy = RenewPolicy { renew_before: before, renew_before_percentage: pct, served_min_interval: served.map(Duration::from_secs) };
                let r = renewal_time(issued, expires, policy, &key);
                if issued.subsec_nanosecond() == 0 && expires.subsec_nanosecond() == 0 && issued <= expires {
                    prop_assert!(r.at >= issued && r.at <= expires, "{issued} {expires} {r:?}");
                }
                let _ = lifetime_shortened(issued, expires, before.unwrap_or_default());
            }

            #[test]
            fn whole_second_renewals_in_a_realistic_range_are_before_expiry(
                issued in 946_684_800i64..4_102_444_800,
                lifetime in 1i64..40 * 86_400,
                before in proptest::option::of(any_duration()),
                pct in proptest::option::of(any::<i32>()),
                served in proptest::option::of(0u64..7200),
                key in "[a-z0-9-]{0,36}",
            ) {
                let policy = RenewPolicy { renew_before: before, renew_before_percentage: pct, served_min_interval: served.map(Duration::from_secs) };
                let r = renewal_time(t(issued), t(issued + lifetime), policy, &key);
                prop_assert!(r.at >= t(issued) && r.at <= t(issued + lifetime));
                if lifetime >= 2 {
                    prop_assert!(r.at < t(issued + lifetime), "renewing at expiry would loop");
                }
            }

            #[test]
            fn the_cluster_expiry_never_panics_and_only_ever_moves_earlier(
                issued in any_time(),
                expires in any_time(),
                skew in proptest::option::of(any::<i64>()),
            ) {
                let adjusted = expiry_in_cluster_time(issued, expires, skew);
                prop_assert!(adjusted <= expires);
                prop_assert!(adjusted.subsec_nanosecond() == 0 || adjusted == expires);
                let _ = check_issued(issued, adjusted, Duration::from_secs(60));
            }

            #[test]
            fn retry_delays_are_bounded_for_any_input(
                attempt in any::<u32>(),
                class in any_class(),
                retry_after in proptest::option::of(any_duration()),
                remaining in proptest::option::of(any_duration()),
                key in ".{0,40}",
            ) {
                let d = retry_delay(RetryInput {
                    attempt,
                    class,
                    retry_after,
                    remaining_validity: remaining,
                    held_expired: attempt % 2 == 0,
                    jitter_key: &key,
                });
                prop_assert!(d >= MIN_DELAY && d <= MAX_DELAY, "{d:?}");
                if class == ErrorClass::Auth {
                    prop_assert!(d >= AUTH_FLOOR);
                }
            }

            #[test]
            fn saturating_arithmetic_never_panics(t0 in any_time(), d in any_duration()) {
                prop_assert!(add_saturating(t0, d) >= t0);
                prop_assert!(sub_saturating(t0, d) <= t0);
            }
        }
    }
}
