//! What an STS session says about who it is for, in Huawei Cloud's trace service (CTS):
//! `source_identity` and session tags, cut to Huawei's rules (docs/security.md#audit-attribution).
//! Whatever the inputs (a 253-character name, odd characters), the values built here are ones
//! AssumeAgency accepts; a value too long to fit keeps its start and ends with a short hash of
//! the whole, so two long names never collapse into one attribution.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// `source_identity`: 2–64 of `[A-Za-z0-9_+=,.@-]` (huawei-cloud-api.md §6.1).
pub const SOURCE_IDENTITY_MAX: usize = 64;
const SOURCE_IDENTITY_MIN: usize = 2;
/// At most 20 session tags and 20 transitive tag keys per call.
pub const MAX_TAGS: usize = 20;
/// Tag keys are 1–128 characters and must not start with `_sys_`; values 0–255.
pub const TAG_KEY_MAX: usize = 128;
pub const TAG_VALUE_MAX: usize = 255;
pub const RESERVED_TAG_PREFIX: &str = "_sys_";
/// The suffix a value too long to fit ends with: `=` and 8 hex digits of the whole value's SHA-256.
const HASH_SUFFIX_LEN: usize = 9;

/// One session tag as AssumeAgency takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionTag {
    pub key: String,
    pub value: String,
}

/// The attribution sent with one AssumeAgency call. Empty: nothing is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionAudit {
    pub source_identity: Option<String>,
    pub tags: Vec<SessionTag>,
    pub transitive_tag_keys: Vec<String>,
}

fn source_identity_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

/// The tag character set tcred keeps to: IAM's tag characters without spaces and `/`, so a
/// value is the same in every console and condition key.
fn tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.:=+@-".contains(c)
}

/// `raw` with every character outside `allowed` replaced by `-`, cut to `max` characters; when
/// it had to be cut, the end is replaced by `=` and a hash of the whole of `raw`.
fn fit(raw: &str, max: usize, allowed: fn(char) -> bool) -> String {
    let clean: String = raw.chars().map(|c| if allowed(c) { c } else { '-' }).collect();
    if clean.chars().count() <= max {
        return clean;
    }
    let digest = Sha256::digest(raw.as_bytes());
    let hash = hex::encode(&digest[..4]);
    let keep: String = clean.chars().take(max.saturating_sub(HASH_SUFFIX_LEN)).collect();
    format!("{keep}={hash}")
}

/// `source_identity` for `parts` joined with `.`, within Huawei's rules. A Kubernetes namespace
/// has no `.`, so `<namespace>.<name>` reads back unambiguously (up to the first dot).
pub fn source_identity(parts: &[&str]) -> String {
    let mut s = fit(&parts.join("."), SOURCE_IDENTITY_MAX, source_identity_char);
    while s.len() < SOURCE_IDENTITY_MIN {
        s.push('-');
    }
    s
}

/// A session tag within Huawei's rules: the key cleaned, cut to 128 and never `_sys_`-prefixed
/// (the prefix is Huawei's); the value cleaned and cut to 255 (empty is allowed).
pub fn tag(key: &str, value: &str) -> SessionTag {
    let mut key = fit(key, TAG_KEY_MAX, tag_char);
    if key.starts_with(RESERVED_TAG_PREFIX) {
        key = fit(&format!("tag{key}"), TAG_KEY_MAX, tag_char);
    }
    if key.is_empty() {
        key.push('-');
    }
    SessionTag {
        key,
        value: fit(value, TAG_VALUE_MAX, tag_char),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_source_identity(s: &str) -> bool {
        (SOURCE_IDENTITY_MIN..=SOURCE_IDENTITY_MAX).contains(&s.len()) && s.chars().all(source_identity_char)
    }

    #[test]
    fn short_names_are_kept_as_they_are() {
        assert_eq!(source_identity(&["team-a", "billing"]), "team-a.billing");
        assert_eq!(source_identity(&["team-a", "billing.v2"]), "team-a.billing.v2");
        assert_eq!(source_identity(&["x"]), "x-");
        assert_eq!(
            tag("tcred.namespace", "team-a"),
            SessionTag {
                key: "tcred.namespace".into(),
                value: "team-a".into()
            }
        );
        assert_eq!(tag("k", "").value, "");
    }

    #[test]
    fn long_names_keep_their_start_and_end_in_a_hash_of_the_whole() {
        let ns = "n".repeat(63);
        let a = source_identity(&[&ns, &format!("{}a", "x".repeat(252))]);
        let b = source_identity(&[&ns, &format!("{}b", "x".repeat(252))]);
        assert!(valid_source_identity(&a), "{a}");
        assert_eq!(a.len(), 64);
        assert!(a.starts_with(&"n".repeat(55)), "{a}");
        assert_ne!(a, b, "two long names must not share one attribution");
        let v = tag("k", &"v".repeat(300)).value;
        assert_eq!(v.len(), TAG_VALUE_MAX);
    }

    #[test]
    fn odd_characters_and_reserved_prefixes_are_made_harmless() {
        let s = source_identity(&["team a", "bill/ing\u{e9}"]);
        assert!(valid_source_identity(&s), "{s}");
        let t = tag("_sys_owner", "a b/c");
        assert!(!t.key.starts_with(RESERVED_TAG_PREFIX), "{t:?}");
        assert_eq!(t.value, "a-b-c");
        assert_eq!(tag("", "v").key, "-");
    }

    proptest::proptest! {
        #[test]
        fn anything_fits_huaweis_rules(a in "\\PC{0,80}", b in "\\PC{0,300}") {
            let s = source_identity(&[&a, &b]);
            proptest::prop_assert!(valid_source_identity(&s), "{}", s);
            let t = tag(&a, &b);
            proptest::prop_assert!((1..=TAG_KEY_MAX).contains(&t.key.chars().count()));
            proptest::prop_assert!(!t.key.starts_with(RESERVED_TAG_PREFIX));
            proptest::prop_assert!(t.value.chars().count() <= TAG_VALUE_MAX);
            proptest::prop_assert!(t.key.chars().chain(t.value.chars()).all(tag_char));
        }
    }
}
