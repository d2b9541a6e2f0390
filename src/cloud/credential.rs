//! An issued temporary credential, the parsing of each API's expiration format, and the plausible
//! window every parsed expiry must fall in before anything computes with it.

use jiff::{SignedDuration, Timestamp};

use super::error::CloudError;
use crate::sensitive::SecretString;

/// A temporary AK/SK/security token as Huawei Cloud issued it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCredential {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub security_token: SecretString,
    /// Expiry as Huawei returned it; schedules are computed from this, never from the request.
    pub expires_at: Timestamp,
    /// Seconds Huawei Cloud's clock ran ahead of this host's (negative: behind), measured from
    /// the `Date` of the response that issued this credential; `None` when the response had no
    /// usable `Date` or came from a host that is not trusted.
    pub clock_skew_seconds: Option<i64>,
}

/// Earliest plausible time in any Huawei response: 2000-01-01T00:00:00Z.
pub const EARLIEST_PLAUSIBLE_SECOND: i64 = 946_684_800;
/// Latest plausible expiry, counted from now.
pub const MAX_PLAUSIBLE_AHEAD: SignedDuration = SignedDuration::from_hours(400 * 24);

/// Parses an ISO-8601 / RFC 3339 timestamp (STS: `2022-09-07T03:27:51.158Z`; IAM: microseconds).
pub fn parse_iso(s: &str) -> Option<Timestamp> {
    s.trim().parse::<Timestamp>().ok()
}

/// Epoch seconds, or milliseconds when the value is too large to be seconds (the portal documents
/// an int64 without a unit; its example is seconds).
pub fn parse_epoch(value: i64) -> Option<Timestamp> {
    const MILLIS_THRESHOLD: u64 = 100_000_000_000; // year 5138 in seconds, 1973 in millis
    if value.unsigned_abs() >= MILLIS_THRESHOLD {
        Timestamp::from_millisecond(value).ok()
    } else {
        Timestamp::from_second(value).ok()
    }
}

/// OIDC `expires_in`: documented as seconds from now, but the spec example is an epoch; values
/// past 10^9 are read as absolute epoch seconds. Zero and negative values are refused.
pub fn parse_expires_in(value: i64, now: Timestamp) -> Option<Timestamp> {
    if value <= 0 {
        None
    } else if value > 1_000_000_000 {
        parse_epoch(value)
    } else {
        now.checked_add(SignedDuration::from_secs(value)).ok()
    }
}

/// Longest access key id, secret key and security token accepted from a response. Huawei's are
/// 20, 40 and a few KB; anything far beyond is not a credential.
const MAX_KEY_ID: usize = 128;
const MAX_SECRET: usize = 1024;
const MAX_TOKEN: usize = 32 * 1024;

/// Checks the three parts of an issued credential before anything is written from them: each
/// non-empty, within its length, and printable ASCII with no space. tcred writes them into
/// line-based files (the INI and AWS credentials files, properties): a newline or `[` smuggled
/// in by a hostile endpoint must not add lines or sections there. The message names the field,
/// never its value.
pub fn check_parts(
    operation: &'static str,
    access_key_id: &str,
    secret_access_key: &str,
    security_token: &str,
) -> Result<(), CloudError> {
    let field_ok =
        |v: &str, max: usize| !v.is_empty() && v.len() <= max && v.bytes().all(|b| b.is_ascii_graphic());
    for (field, value, max) in [
        ("access key id", access_key_id, MAX_KEY_ID),
        ("secret access key", secret_access_key, MAX_SECRET),
        ("security token", security_token, MAX_TOKEN),
    ] {
        if !field_ok(value, max) {
            return Err(CloudError::Decode {
                operation,
                message: format!(
                    "the {field} is empty, longer than {max} characters or not printable ASCII without spaces"
                ),
            });
        }
    }
    // Only letters and digits in the public half, which is also shown in status and logs.
    if !access_key_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(CloudError::Decode {
            operation,
            message: "the access key id is not letters and digits".into(),
        });
    }
    Ok(())
}

/// `at` when it lies in the plausible window (from 2000-01-01 to 400 days after `now`).
pub fn plausible(at: Timestamp, now: Timestamp) -> Option<Timestamp> {
    let latest = now.checked_add(MAX_PLAUSIBLE_AHEAD).unwrap_or(Timestamp::MAX);
    (at.as_second() >= EARLIEST_PLAUSIBLE_SECOND && at <= latest).then_some(at)
}

fn implausible(operation: &'static str, field: &str, shown: &str) -> CloudError {
    CloudError::Decode {
        operation,
        message: format!(
            "{field} {shown} is not a plausible time (expected between 2000-01-01 and 400 days from now)"
        ),
    }
}

/// An ISO-8601 expiry from `field` of an `operation` response, checked against the window.
pub fn expiry_from_iso(
    operation: &'static str,
    field: &str,
    raw: &str,
    now: Timestamp,
) -> Result<Timestamp, CloudError> {
    let shown = || {
        // The raw text comes from the endpoint: keep it short in messages.
        let short: String = raw.chars().take(40).collect();
        format!("{short:?}")
    };
    let at = parse_iso(raw).ok_or_else(|| CloudError::Decode {
        operation,
        message: format!("{field} {} is not an ISO-8601 time", shown()),
    })?;
    plausible(at, now).ok_or_else(|| implausible(operation, field, &shown()))
}

/// An epoch (seconds or milliseconds) expiry from `field`, checked against the window.
pub fn expiry_from_epoch(
    operation: &'static str,
    field: &str,
    value: i64,
    now: Timestamp,
) -> Result<Timestamp, CloudError> {
    parse_epoch(value)
        .and_then(|at| plausible(at, now))
        .ok_or_else(|| implausible(operation, field, &value.to_string()))
}

/// An `expires_in` expiry from `field`, checked against the window.
pub fn expiry_from_expires_in(
    operation: &'static str,
    field: &str,
    value: i64,
    now: Timestamp,
) -> Result<Timestamp, CloudError> {
    parse_expires_in(value, now)
        .and_then(|at| plausible(at, now))
        .ok_or_else(|| implausible(operation, field, &value.to_string()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn in_window(at: Timestamp, now: Timestamp) -> bool {
        at.as_second() >= EARLIEST_PLAUSIBLE_SECOND && at.as_second() <= now.as_second() + 400 * 86_400
    }

    #[test]
    fn issued_parts_with_line_breaks_spaces_or_absurd_lengths_are_refused_without_echoing_them() {
        assert!(check_parts("Op", "AKID123", "secret/+=", "tok+/=").is_ok());
        let bad = [
            ("", "s", "t"),
            ("AK\nID", "s", "t"),
            ("AK-ID", "s", "t"),
            ("AKID", "s\n[basic]\nak = x", "t"),
            ("AKID", "s", "t t"),
            ("AKID", "s", ""),
            ("AKID", "s\u{e9}", "t"),
        ];
        for (ak, sk, tok) in bad {
            let e = check_parts("Op", ak, sk, tok).unwrap_err().to_string();
            assert!(!e.contains("[basic]") && !e.contains("s\u{e9}"), "{e}");
        }
        let long = "a".repeat(MAX_TOKEN + 1);
        assert!(check_parts("Op", "AKID", "s", &long).is_err());
    }

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
        let now = now();
        assert_eq!(parse_expires_in(3600, now).unwrap().as_second(), 1_700_003_600);
        assert_eq!(
            parse_expires_in(1_684_955_360, now).unwrap().as_second(),
            1_684_955_360
        );
    }

    #[test]
    fn the_extreme_epochs_do_not_overflow() {
        // i64::MIN has no absolute value in i64 (I1).
        assert_eq!(parse_epoch(i64::MIN), None);
        assert_eq!(parse_epoch(i64::MAX), None);
        assert_eq!(parse_expires_in(i64::MAX, Timestamp::MAX), None);
    }

    #[test]
    fn negative_zero_and_absurd_expires_in_are_refused() {
        for v in [-1, 0, i64::MIN, -377_705_116_800_000] {
            assert!(parse_expires_in(v, now()).is_none(), "{v}");
            assert!(expiry_from_expires_in("CreateToken", "expires_in", v, now()).is_err());
        }
        let e =
            expiry_from_expires_in("CreateToken", "token_info.expires_in", 40_000_000, now()).unwrap_err();
        assert!(e.to_string().contains("token_info.expires_in 40000000"), "{e}");
        assert_eq!(e.class(), super::super::ErrorClass::InvalidResponse);
        assert!(expiry_from_expires_in("CreateToken", "expires_in", 3600, now()).is_ok());
    }

    #[test]
    fn expiries_before_2000_or_over_400_days_ahead_are_refused_naming_the_field() {
        let e = expiry_from_iso(
            "AssumeAgency",
            "credentials.expiration",
            "-009999-01-02T01:59:59Z",
            now(),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("credentials.expiration"), "{text}");
        assert!(text.contains("not a plausible time"), "{text}");
        assert!(expiry_from_iso("AssumeAgency", "x", "1999-12-31T23:59:59Z", now()).is_err());
        assert!(expiry_from_iso("AssumeAgency", "x", "2000-01-01T00:00:00Z", now()).is_ok());
        assert!(expiry_from_iso("AssumeAgency", "x", "9999-01-01T00:00:00Z", now()).is_err());
        // the portal's Timestamp::MIN in milliseconds (C1 trigger B)
        let e = expiry_from_epoch(
            "GetAgencyCredentials",
            "agency_credentials.expiration",
            -377_705_116_800_000,
            now(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("agency_credentials.expiration"), "{e}");
        let ahead_401_days = now().as_second() + 401 * 86_400;
        assert!(expiry_from_epoch("GetAgencyCredentials", "x", ahead_401_days, now()).is_err());
        let ahead_399_days = now().as_second() + 399 * 86_400;
        assert!(expiry_from_epoch("GetAgencyCredentials", "x", ahead_399_days, now()).is_ok());
    }

    fn any_now() -> impl Strategy<Value = Timestamp> {
        (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second())
            .prop_map(|s| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn epochs_never_panic_and_accepted_ones_are_plausible(v in any::<i64>(), now in any_now()) {
            let _ = parse_epoch(v);
            if let Ok(at) = expiry_from_epoch("op", "f", v, now) {
                prop_assert!(in_window(at, now));
            }
        }

        #[test]
        fn expires_in_never_panics_and_accepted_ones_are_plausible(v in any::<i64>(), now in any_now()) {
            let _ = parse_expires_in(v, now);
            if let Ok(at) = expiry_from_expires_in("op", "f", v, now) {
                prop_assert!(in_window(at, now));
                prop_assert!(v > 0);
            }
        }

        #[test]
        fn iso_times_never_panic_and_accepted_ones_are_plausible(
            year in -9999i32..=9999, month in 0u8..14, day in 0u8..33, hour in 0u8..25,
            frac in proptest::option::of(0u32..1_000_000), junk in "\\PC{0,12}", now in any_now(),
        ) {
            let frac = frac.map(|f| format!(".{f:06}")).unwrap_or_default();
            let candidates = [
                format!("{year:04}-{month:02}-{day:02}T{hour:02}:00:00{frac}Z"),
                format!("{year:+07}-{month:02}-{day:02}T{hour:02}:00:00Z"),
                junk.clone(),
            ];
            for raw in &candidates {
                let _ = parse_iso(raw);
                if let Ok(at) = expiry_from_iso("op", "f", raw, now) {
                    prop_assert!(in_window(at, now));
                }
            }
        }
    }
}
