//! An issued temporary credential, and the parsing of each API's expiration format.

use jiff::Timestamp;

use crate::sensitive::SecretString;

/// A temporary AK/SK/security token as Huawei Cloud issued it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCredential {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub security_token: SecretString,
    /// Expiry as Huawei returned it; schedules are computed from this, never from the request.
    pub expires_at: Timestamp,
}

/// Parses an ISO-8601 / RFC 3339 timestamp (STS: `2022-09-07T03:27:51.158Z`; IAM: microseconds).
pub fn parse_iso(s: &str) -> Option<Timestamp> {
    s.trim().parse::<Timestamp>().ok()
}

/// Epoch seconds, or milliseconds when the value is too large to be seconds (the portal documents
/// an int64 without a unit; its example is seconds).
pub fn parse_epoch(value: i64) -> Option<Timestamp> {
    const MILLIS_THRESHOLD: i64 = 100_000_000_000; // year 5138 in seconds, 1973 in millis
    if value.abs() >= MILLIS_THRESHOLD {
        Timestamp::from_millisecond(value).ok()
    } else {
        Timestamp::from_second(value).ok()
    }
}

/// OIDC `expires_in`: documented as seconds from now, but the spec example is an epoch; values
/// past 10^9 are read as absolute epoch seconds.
pub fn parse_expires_in(value: i64, now: Timestamp) -> Option<Timestamp> {
    if value > 1_000_000_000 {
        parse_epoch(value)
    } else {
        now.checked_add(jiff::SignedDuration::from_secs(value)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_and_iam_iso_formats_parse() {
        assert_eq!(
            parse_iso("2022-09-07T03:27:51.158Z").unwrap().as_millisecond(),
            1_662_521_271_158
        );
        assert_eq!(
            parse_iso("2020-01-08T03:50:07.574000Z").unwrap().as_millisecond(),
            1_578_455_407_574
        );
        assert_eq!(
            parse_iso("2020-01-08T03:50:07Z").unwrap().as_second(),
            1_578_455_407
        );
        assert!(parse_iso("yesterday").is_none());
    }

    #[test]
    fn portal_epochs_are_seconds_or_milliseconds() {
        assert_eq!(parse_epoch(1_684_955_360).unwrap().as_second(), 1_684_955_360);
        assert_eq!(
            parse_epoch(1_684_955_360_123).unwrap().as_millisecond(),
            1_684_955_360_123
        );
    }

    #[test]
    fn expires_in_is_a_duration_unless_it_looks_like_an_epoch() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        assert_eq!(parse_expires_in(3600, now).unwrap().as_second(), 1_700_003_600);
        assert_eq!(
            parse_expires_in(1_684_955_360, now).unwrap().as_second(),
            1_684_955_360
        );
    }
}
