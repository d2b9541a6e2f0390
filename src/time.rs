//! How tcred writes a time: RFC 3339 in UTC at whole seconds, the form of every time in the
//! Secrets, annotations and messages it writes (docs/api.md).

use jiff::Timestamp;

/// `2026-01-02T03:04:05Z`.
pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_utc_at_whole_seconds() {
        let t = Timestamp::from_second(1_767_323_045).unwrap();
        assert_eq!(rfc3339(t), "2026-01-02T03:04:05Z");
        let fraction = t.checked_add(jiff::SignedDuration::from_millis(999)).unwrap();
        assert_eq!(rfc3339(fraction), "2026-01-02T03:04:05Z");
    }
}
