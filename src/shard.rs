//! Sharding (docs/sharding.md): the label selector of the TemporaryCredentials one controller
//! process serves, the shard labels a managed Secret copies from its TemporaryCredential (so the
//! Secret watch is filtered by the same selector), and the name of a shard's Lease.
//!
//! The selector is parsed here, not only handed to the API server, so a typo stops the controller
//! at start with a usage error instead of a watch that fails forever, and so the keys it names are
//! known (the Secret watch is filtered only by shard label keys, which Secrets carry).

use std::{collections::BTreeMap, fmt};

/// The shard label the chart's static shards use (`tcred.dev/shard=<name>`).
pub const SHARD_LABEL: &str = "tcred.dev/shard";
/// The prefix of the labels a dynamic sharder sets (`shard.alpha.sharding.timebertt.dev/<ring>`).
pub const SHARDER_LABEL_PREFIX: &str = "shard.alpha.sharding.timebertt.dev/";

/// Whether `key` is a shard label: copied from a TemporaryCredential to its Secret.
pub fn is_shard_label(key: &str) -> bool {
    key == SHARD_LABEL
        || key
            .strip_prefix(SHARDER_LABEL_PREFIX)
            .is_some_and(|r| !r.is_empty())
}

/// The shard labels among `labels`.
pub fn shard_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| is_shard_label(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The label that puts a shard's Lease in a dynamic sharder's ring.
pub const RING_LEASE_LABEL: &str = "alpha.sharding.timebertt.dev/controllerring";
/// The prefix of the label by which a dynamic sharder asks a shard to let an object go.
pub const DRAIN_LABEL_PREFIX: &str = "drain.alpha.sharding.timebertt.dev/";

/// Checks a dynamic sharder's ring name: it becomes the name part of label keys.
pub fn check_ring_name(ring: &str) -> Result<(), String> {
    if is_label_name(ring) {
        Ok(())
    } else {
        Err(format!(
            "ring name {ring:?}: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends"
        ))
    }
}

/// Whether `labels` hold a dynamic sharder's drain label (of any ring).
pub fn has_drain_label(labels: &BTreeMap<String, String>) -> bool {
    labels.keys().any(|k| k.starts_with(DRAIN_LABEL_PREFIX))
}

/// The metadata patch that acknowledges a drain of ring `ring` — both the drain and the shard
/// label removed, so the sharder may assign the object to its new shard — when `labels` hold that
/// ring's drain label.
pub fn drain_acknowledgement(labels: &BTreeMap<String, String>, ring: &str) -> Option<serde_json::Value> {
    let drain = format!("{DRAIN_LABEL_PREFIX}{ring}");
    let shard = format!("{SHARDER_LABEL_PREFIX}{ring}");
    labels
        .contains_key(&drain)
        .then(|| serde_json::json!({"metadata": {"labels": {drain: null, shard: null}}}))
}

/// The merge patch removing the shard labels `live` has and `want` lacks, if any.
pub fn stale_label_removal(
    live: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> Option<serde_json::Value> {
    let stale: serde_json::Map<String, serde_json::Value> = live
        .keys()
        .filter(|k| is_shard_label(k) && !want.contains_key(*k))
        .map(|k| (k.clone(), serde_json::Value::Null))
        .collect();
    (!stale.is_empty()).then(|| serde_json::json!({"metadata": {"labels": stale}}))
}

/// The Lease of a shard: `<id>` for the unnamed (or default) shard, so an unsharded installation
/// and the default shard replacing it never run at once; `<id>-<shard>` for a named shard.
pub fn lease_name(id: &str, shard: Option<&str>) -> String {
    match shard
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != DEFAULT_SHARD)
    {
        Some(s) => format!("{id}-{s}"),
        None => id.to_owned(),
    }
}

/// The name of the shard that serves what no other shard selects.
pub const DEFAULT_SHARD: &str = "default";

/// Checks a shard name: a DNS label (it becomes part of a Lease and a Deployment name).
pub fn check_shard_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "shard name {name:?}: lowercase letters, digits and '-', at most 40, starting and ending alphanumeric"
        ))
    }
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    Absent(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn key(&self) -> &str {
        match self {
            Self::Exists(k) | Self::Absent(k) | Self::In(k, _) | Self::NotIn(k, _) => k,
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Exists(k) => labels.contains_key(k),
            Self::Absent(k) => !labels.contains_key(k),
            Self::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exists(k) => write!(f, "{k}"),
            Self::Absent(k) => write!(f, "!{k}"),
            Self::In(k, vs) if vs.len() == 1 => write!(f, "{k}={}", vs[0]),
            Self::NotIn(k, vs) if vs.len() == 1 => write!(f, "{k}!={}", vs[0]),
            Self::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Self::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
        }
    }
}

/// The label selector of the objects a shard serves (`--shard-selector`). Empty: everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardSelector(Vec<Requirement>);

impl ShardSelector {
    /// Parses a label selector in the API server's syntax: comma-separated `key`, `!key`,
    /// `key=value`, `key==value`, `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::default());
        }
        split_top_level(text)?
            .into_iter()
            .map(|part| requirement(part.trim()).map_err(|e| format!("label selector {text:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether it selects every object.
    pub fn is_everything(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }

    /// Whether every key it names is a shard label, which managed Secrets copy from their
    /// TemporaryCredential: then a Secret is selected exactly when its credential is.
    pub fn applies_to_secrets(&self) -> bool {
        self.0.iter().all(|r| is_shard_label(r.key()))
    }

    /// The selector as the API server reads it (`None` for everything).
    pub fn to_query(&self) -> Option<String> {
        (!self.is_everything()).then(|| self.to_string())
    }
}

impl fmt::Display for ShardSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Splits at the commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0u32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err(format!("label selector {text:?}: nested parentheses")),
            ')' if depth == 1 => depth = 0,
            ')' => return Err(format!("label selector {text:?}: unbalanced ')'")),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("label selector {text:?}: unclosed '('"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn requirement(part: &str) -> Result<Requirement, String> {
    if part.is_empty() {
        return Err("empty requirement".into());
    }
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::Absent(label_key(key.trim())?));
    }
    let end = part
        .find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '(' | ')'))
        .unwrap_or(part.len());
    let key = label_key(&part[..end])?;
    let rest = part[end..].trim_start();
    if rest.is_empty() {
        return Ok(Requirement::Exists(key));
    }
    let single = |v: &str| label_value(v.trim()).map(|v| vec![v]);
    if let Some(v) = rest.strip_prefix("==") {
        Ok(Requirement::In(key, single(v)?))
    } else if let Some(v) = rest.strip_prefix("!=") {
        Ok(Requirement::NotIn(key, single(v)?))
    } else if let Some(v) = rest.strip_prefix('=') {
        Ok(Requirement::In(key, single(v)?))
    } else if let Some(set) = keyword(rest, "notin") {
        Ok(Requirement::NotIn(key, value_set(set)?))
    } else if let Some(set) = keyword(rest, "in") {
        Ok(Requirement::In(key, value_set(set)?))
    } else {
        Err(format!("{part:?}: expected =, ==, !=, in or notin after the key"))
    }
}

/// `rest` after the operator word `word`, when `rest` starts with it as a whole word.
fn keyword<'a>(rest: &'a str, word: &str) -> Option<&'a str> {
    let after = rest.strip_prefix(word)?;
    (after.starts_with(char::is_whitespace) || after.starts_with('(')).then(|| after.trim_start())
}

fn value_set(set: &str) -> Result<Vec<String>, String> {
    let inner = set
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("{set:?}: expected a parenthesised list of values"))?;
    let values = inner
        .split(',')
        .map(|v| label_value(v.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(values)
}

/// A label name or value part: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn is_label_name(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && alnum(s.chars().next())
        && alnum(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn label_key(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    if prefix_ok && is_label_name(name) {
        Ok(key.to_owned())
    } else {
        Err(format!("{key:?} is not a label key"))
    }
}

fn label_value(value: &str) -> Result<String, String> {
    if value.is_empty() || is_label_name(value) {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} is not a label value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_named_shard_selects_its_label_and_the_default_shard_what_no_other_selects() {
        let a = ShardSelector::parse("tcred.dev/shard=a").unwrap();
        let default = ShardSelector::parse("tcred.dev/shard notin (a,b)").unwrap();
        let in_a = labels(&[("tcred.dev/shard", "a")]);
        let unlabelled = labels(&[("team", "x")]);
        let unknown = labels(&[("tcred.dev/shard", "zzz")]);
        assert!(a.matches(&in_a) && !default.matches(&in_a));
        assert!(!a.matches(&unlabelled) && default.matches(&unlabelled));
        assert!(!a.matches(&unknown) && default.matches(&unknown));
    }

    #[test]
    fn every_operator_parses_and_renders_as_the_api_server_reads_it() {
        let s = ShardSelector::parse(" a.io/x == 1 , !b ,c, d!=2, e in (p, q), f notin(r)").unwrap();
        assert_eq!(s.to_string(), "a.io/x=1,!b,c,d!=2,e in (p,q),f!=r");
        assert_eq!(ShardSelector::parse(&s.to_string()).unwrap(), s);
        assert!(s.matches(&labels(&[("a.io/x", "1"), ("c", ""), ("e", "q")])));
        assert!(!s.matches(&labels(&[("a.io/x", "1"), ("c", ""), ("e", "q"), ("b", "")])));
        assert_eq!(ShardSelector::parse("").unwrap().to_query(), None);
    }

    #[test]
    fn malformed_selectors_are_refused() {
        for bad in [
            ",",
            "a,",
            "a in b",
            "a in (b",
            "a in ((b))",
            "a > 1",
            "-a=b",
            "a=b c",
            "A_/b=c",
            "a=-b-",
            "a=b)",
            &format!("a={}", "x".repeat(64)),
        ] {
            assert!(ShardSelector::parse(bad).is_err(), "{bad:?} was accepted");
        }
        // an empty value is a value, as for the API server
        assert!(ShardSelector::parse("a=").unwrap().matches(&labels(&[("a", "")])));
    }

    #[test]
    fn only_selectors_of_shard_labels_filter_the_secret_watch() {
        assert!(
            ShardSelector::parse("tcred.dev/shard in (a)")
                .unwrap()
                .applies_to_secrets()
        );
        let sharder = "shard.alpha.sharding.timebertt.dev/tcred=tcred-0";
        assert!(ShardSelector::parse(sharder).unwrap().applies_to_secrets());
        assert!(
            !ShardSelector::parse("tcred.dev/shard=a,team=x")
                .unwrap()
                .applies_to_secrets()
        );
        assert!(!is_shard_label(SHARDER_LABEL_PREFIX));
        assert!(!is_shard_label("drain.alpha.sharding.timebertt.dev/tcred"));
    }

    #[test]
    fn a_drain_of_this_ring_is_acknowledged_by_removing_both_labels() {
        let drained = labels(&[
            ("shard.alpha.sharding.timebertt.dev/tcred", "tcred-0"),
            ("drain.alpha.sharding.timebertt.dev/tcred", "true"),
            ("team", "x"),
        ]);
        let patch = drain_acknowledgement(&drained, "tcred").unwrap();
        assert_eq!(
            patch,
            serde_json::json!({"metadata": {"labels": {
                "drain.alpha.sharding.timebertt.dev/tcred": null,
                "shard.alpha.sharding.timebertt.dev/tcred": null,
            }}})
        );
        assert!(has_drain_label(&drained));
        assert_eq!(drain_acknowledgement(&drained, "other-ring"), None);
        let assigned = labels(&[("shard.alpha.sharding.timebertt.dev/tcred", "tcred-0")]);
        assert_eq!(drain_acknowledgement(&assigned, "tcred"), None);
        assert!(!has_drain_label(&assigned));
        assert!(check_ring_name("tcred").is_ok() && check_ring_name("bad/ring").is_err());
    }

    #[test]
    fn only_shard_labels_the_credential_lost_are_removed_from_its_secret() {
        let live = labels(&[
            ("shard.alpha.sharding.timebertt.dev/tcred", "tcred-0"),
            ("tcred.dev/shard", "a"),
            ("team", "x"),
        ]);
        let want = labels(&[("tcred.dev/shard", "b")]);
        assert_eq!(
            stale_label_removal(&live, &want),
            Some(serde_json::json!({"metadata": {"labels": {
                "shard.alpha.sharding.timebertt.dev/tcred": null,
            }}}))
        );
        assert_eq!(stale_label_removal(&want, &want), None);
    }

    #[test]
    fn named_shards_have_their_own_lease_and_the_default_shard_keeps_the_unsharded_one() {
        assert_eq!(lease_name("tcred-controller", Some("a")), "tcred-controller-a");
        assert_eq!(
            lease_name("tcred-controller", Some("default")),
            "tcred-controller"
        );
        assert_eq!(lease_name("tcred-controller", None), "tcred-controller");
        assert!(check_shard_name("a-1").is_ok());
        for bad in ["", "A", "-a", "a-", "a_b", &"a".repeat(41)] {
            assert!(check_shard_name(bad).is_err(), "{bad:?}");
        }
    }
}
