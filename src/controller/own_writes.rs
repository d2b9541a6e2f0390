//! The Secret writes tcred itself makes, so that their watch events do not wake a reconcile of
//! their credential (docs/controller.md §Watches). Such a reconcile would find what the write left
//! and do nothing but reads; at a burst it is half the reconciles.
//!
//! A write is known by the resourceVersion the API server answered. The watch event of a write
//! may arrive before that answer: an event for a Secret whose write is still in flight is held
//! back, and the write's end says whether one of them was somebody else's change (then the
//! reconcile comes back at once). Anything that is not exactly tcred's last write — an edit, a
//! deletion, a write of another party — wakes the reconcile as before.

use std::{collections::HashMap, sync::Mutex};

/// What is known of the last write of one Secret.
#[derive(Debug)]
enum Write {
    /// Sent, not answered yet: the resourceVersions of the events seen meanwhile.
    InFlight(Vec<String>),
    /// Answered with this resourceVersion; its event has not been seen yet.
    Done(String),
}

/// The Secret writes of this process whose watch events are still to come, by namespace and
/// name. At most one entry per Secret; an entry goes when its event arrives (or any other event
/// of that Secret does).
#[derive(Debug, Default)]
pub struct OwnSecretWrites(Mutex<HashMap<(String, String), Write>>);

impl OwnSecretWrites {
    /// A write of `namespace/name` is about to be sent.
    pub fn start(&self, namespace: &str, name: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(key(namespace, name), Write::InFlight(Vec::new()));
    }

    /// The write of `namespace/name` ended: `Some(resourceVersion)` when it was made. True when a
    /// change of that Secret other than this write was seen while it was in flight (its event was
    /// held back: the caller reconciles again).
    pub fn finish(&self, namespace: &str, name: &str, written: Option<&str>) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(namespace, name);
        let seen = match m.remove(&k) {
            Some(Write::InFlight(seen)) => seen,
            // Nothing in flight (a bug elsewhere, or a write made twice): nothing held back.
            _ => Vec::new(),
        };
        let Some(rv) = written else {
            return !seen.is_empty();
        };
        if !seen.iter().any(|s| s == rv) {
            m.insert(k, Write::Done(rv.to_owned()));
        }
        seen.iter().any(|s| s != rv)
    }

    /// Whether a watch event of `namespace/name` at `resource_version` is tcred's own write (or
    /// held back while one is in flight): then it wakes no reconcile.
    pub fn is_own(&self, namespace: &str, name: &str, resource_version: Option<&str>) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(namespace, name);
        match (m.get_mut(&k), resource_version) {
            (Some(Write::InFlight(seen)), Some(rv)) => {
                seen.push(rv.to_owned());
                true
            }
            (Some(Write::Done(done)), Some(rv)) => {
                let own = done == rv;
                m.remove(&k);
                own
            }
            (Some(_), None) => {
                m.remove(&k);
                false
            }
            (None, _) => false,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or_default()
    }
}

fn key(namespace: &str, name: &str) -> (String, String) {
    (namespace.to_owned(), name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_of_an_own_write_wakes_nothing_and_the_next_one_does() {
        let w = OwnSecretWrites::default();
        w.start("ns", "a");
        assert!(!w.finish("ns", "a", Some("10")));
        assert!(w.is_own("ns", "a", Some("10")));
        assert_eq!(w.len(), 0);
        assert!(!w.is_own("ns", "a", Some("11")), "somebody else's later edit");
    }

    #[test]
    fn an_event_that_arrives_before_the_answer_is_held_back_and_matched() {
        let w = OwnSecretWrites::default();
        w.start("ns", "a");
        assert!(w.is_own("ns", "a", Some("10")));
        assert!(!w.finish("ns", "a", Some("10")));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn another_change_seen_while_a_write_was_in_flight_is_reported() {
        let w = OwnSecretWrites::default();
        w.start("ns", "a");
        assert!(w.is_own("ns", "a", Some("9")));
        assert!(w.finish("ns", "a", Some("10")), "the event at 9 was not ours");
        assert!(w.is_own("ns", "a", Some("10")));
    }

    #[test]
    fn a_failed_write_reports_what_was_held_back() {
        let w = OwnSecretWrites::default();
        w.start("ns", "a");
        assert!(!w.finish("ns", "a", None));
        w.start("ns", "a");
        assert!(w.is_own("ns", "a", Some("9")));
        assert!(w.finish("ns", "a", None));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_different_version_after_an_own_write_wakes_the_reconcile() {
        let w = OwnSecretWrites::default();
        w.start("ns", "a");
        w.finish("ns", "a", Some("10"));
        assert!(
            !w.is_own("ns", "a", Some("12")),
            "an edit (or a deletion) after tcred's write"
        );
        assert!(!w.is_own("ns", "b", Some("10")), "another Secret");
        assert_eq!(w.len(), 0);
    }
}
