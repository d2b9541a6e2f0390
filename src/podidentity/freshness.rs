//! How early a credential served to pods (`spec.podIdentity`) must be renewed. Huawei's SDKs fetch
//! again before every call once less than [`SDK_THRESHOLD`] of validity remain, so what the
//! endpoint serves must always keep more than that plus [`MARGIN`]: the successor is minted at
//! least [`MIN_RENEW_BEFORE`] before the current one expires. A lifetime that leaves no room for
//! that (less than [`MIN_RENEW_BEFORE`] plus the minimum mint interval) is reported
//! (`LifetimeBelowSdkThreshold`) and served anyway, renewed as the spec says.

use std::time::Duration;

/// The SDKs' refresh threshold (`_DEFAULT_EXPIRATION_THRESHOLD_SECONDS`, 40 minutes).
pub const SDK_THRESHOLD: Duration = Duration::from_secs(40 * 60);
/// Room for the agent's cache, clock skew and a slow mint.
pub const MARGIN: Duration = Duration::from_secs(10 * 60);
/// The least renew-before of a served credential: threshold plus margin.
pub const MIN_RENEW_BEFORE: Duration = Duration::from_secs(50 * 60);

/// What the schedule of a served credential should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Renew this long before expiry.
    pub renew_before: Duration,
    /// The lifetime cannot keep [`MIN_RENEW_BEFORE`]: report `LifetimeBelowSdkThreshold`.
    pub lifetime_too_short: bool,
}

/// The effective renew-before of a credential served to pods, from the renew-before the spec
/// asks for (already resolved: `renewBefore`, or the percentage of the lifetime), the issued
/// lifetime and `--min-mint-interval`. When the lifetime allows it, the result is at least
/// [`MIN_RENEW_BEFORE`] and at least the spec's, and leaves at least the minimum mint interval
/// between two mints; otherwise the spec's renew-before is kept and the lifetime is flagged.
pub fn served_renew_before(spec: Duration, lifetime: Duration, min_mint_interval: Duration) -> Freshness {
    let room = lifetime.saturating_sub(min_mint_interval);
    if room < MIN_RENEW_BEFORE {
        return Freshness {
            renew_before: spec,
            lifetime_too_short: true,
        };
    }
    Freshness {
        renew_before: spec.max(MIN_RENEW_BEFORE).min(room),
        lifetime_too_short: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_two_hour_credential_is_renewed_fifty_minutes_ahead_instead_of_forty() {
        let f = served_renew_before(40 * MIN, 120 * MIN, Duration::from_secs(30));
        assert_eq!(
            f,
            Freshness {
                renew_before: 50 * MIN,
                lifetime_too_short: false
            }
        );
    }

    #[test]
    fn a_longer_renew_before_of_the_spec_is_kept() {
        let f = served_renew_before(90 * MIN, 12 * 60 * MIN, Duration::from_secs(30));
        assert_eq!(f.renew_before, 90 * MIN);
    }

    #[test]
    fn a_forty_five_minute_session_is_flagged_and_keeps_the_spec() {
        let f = served_renew_before(15 * MIN, 45 * MIN, Duration::from_secs(30));
        assert_eq!(
            f,
            Freshness {
                renew_before: 15 * MIN,
                lifetime_too_short: true
            }
        );
    }

    #[test]
    fn one_hour_is_too_short_only_when_the_mint_interval_leaves_no_room() {
        assert!(!served_renew_before(20 * MIN, 60 * MIN, Duration::from_secs(30)).lifetime_too_short);
        assert!(served_renew_before(20 * MIN, 60 * MIN, 11 * MIN).lifetime_too_short);
    }

    proptest! {
        #[test]
        fn served_credentials_keep_the_threshold_and_the_mint_spacing(
            spec in 0u64..86_400, lifetime in 0u64..86_400, interval in 0u64..7_200
        ) {
            let (spec, lifetime, interval) =
                (Duration::from_secs(spec), Duration::from_secs(lifetime), Duration::from_secs(interval));
            let f = served_renew_before(spec, lifetime, interval);
            prop_assert_eq!(f.lifetime_too_short, lifetime < MIN_RENEW_BEFORE + interval);
            if f.lifetime_too_short {
                prop_assert_eq!(f.renew_before, spec);
            } else {
                prop_assert!(f.renew_before >= MIN_RENEW_BEFORE);
                prop_assert!(f.renew_before > SDK_THRESHOLD + MARGIN - Duration::from_secs(1));
                prop_assert!(lifetime - f.renew_before >= interval, "mints stay spaced");
                prop_assert!(f.renew_before >= spec.min(lifetime - interval));
            }
        }
    }
}
