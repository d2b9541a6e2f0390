//! Limits the reconciles of one namespace running at once, and admits the most urgent first.
//!
//! A reconcile that finds its namespace at the limit does not wait for a place (waiting would
//! hold one of the runtime's slots, which is what a tenant with slow endpoints must not be able
//! to take from the others): it is requeued a moment later and remembered as waiting, with its
//! urgency (when its credential is due). A free place goes to the most urgent waiter: a
//! reconcile is admitted only when fewer waiters are more urgent than it than there are free
//! places, and each place that frees up wakes the most urgent waiter at once (through
//! [`NamespaceGate::take_wakes`], which the controller turns into reconciles). Without the
//! order, the waiters of a full namespace came back in a random order every second or two, and
//! a credential close to its expiry could lose to ones due much later.
//!
//! What the gate remembers is bounded by the objects a namespace has, and forgets a waiter that
//! stopped coming back (deleted, or moved to another shard) after [`FORGET_AFTER`].

use std::{
    collections::{BTreeSet, HashMap, hash_map::Entry},
    sync::Mutex,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use tokio::sync::mpsc;

use super::guard::spread;

/// A waiter that has not come back for this long no longer holds back others. Waiters come
/// back every one to two seconds ([`busy_retry`]); this leaves room for a loaded runtime.
pub const FORGET_AFTER: Duration = Duration::from_secs(5);

/// A woken waiter that has not arrived after this long is woken again (or another in its place).
const WAKE_GRACE: Duration = Duration::from_secs(2);

/// How long a reconcile that found its namespace busy waits before trying again: a second or two,
/// spread per object so the waiting ones do not come back together. The wake on a freed place
/// usually brings the most urgent one back sooner.
pub fn busy_retry(key: &str) -> Duration {
    Duration::from_millis(1000 + spread(key, 0) % 1000)
}

/// A waiting object of a namespace, by name.
#[derive(Debug)]
struct Waiter {
    urgency: Timestamp,
    seen: Instant,
    woken: Option<Instant>,
}

#[derive(Debug, Default)]
struct Namespace {
    running: usize,
    waiters: HashMap<String, Waiter>,
    /// The waiters, most urgent first (ties by name).
    order: BTreeSet<(Timestamp, String)>,
}

impl Namespace {
    fn forget(&mut self, name: &str) {
        if let Some(w) = self.waiters.remove(name) {
            self.order.remove(&(w.urgency, name.to_owned()));
        }
    }

    fn wait(&mut self, name: &str, urgency: Timestamp, now: Instant) {
        match self.waiters.entry(name.to_owned()) {
            Entry::Occupied(mut e) => {
                let w = e.get_mut();
                if w.urgency != urgency {
                    self.order.remove(&(w.urgency, name.to_owned()));
                    self.order.insert((urgency, name.to_owned()));
                    w.urgency = urgency;
                }
                w.seen = now;
                w.woken = None;
            }
            Entry::Vacant(e) => {
                e.insert(Waiter {
                    urgency,
                    seen: now,
                    woken: None,
                });
                self.order.insert((urgency, name.to_owned()));
            }
        }
    }

    /// Walks the waiters most urgent first, forgetting the ones that stopped coming back, until
    /// `stop` (given each live waiter and how many were passed before it) says so; returns how
    /// many live waiters it passed.
    fn walk(
        &mut self,
        now: Instant,
        mut stop: impl FnMut(&(Timestamp, String), &mut Waiter, usize) -> bool,
    ) -> usize {
        let mut gone = Vec::new();
        let mut passed = 0;
        for key in &self.order {
            let Some(w) = self.waiters.get_mut(&key.1) else {
                continue;
            };
            if now.saturating_duration_since(w.seen) > FORGET_AFTER {
                gone.push(key.1.clone());
                continue;
            }
            if stop(key, w, passed) {
                break;
            }
            passed += 1;
        }
        for name in gone {
            self.forget(&name);
        }
        passed
    }

    fn is_idle(&self) -> bool {
        self.running == 0 && self.waiters.is_empty()
    }
}

/// See the module documentation.
pub struct NamespaceGate {
    limit: usize,
    namespaces: Mutex<HashMap<String, Namespace>>,
    wake: mpsc::UnboundedSender<(String, String)>,
    wakes: Mutex<Option<mpsc::UnboundedReceiver<(String, String)>>>,
}

/// A running reconcile of a namespace; gives its place back (and wakes the next) when dropped.
pub struct NamespacePermit<'a> {
    gate: &'a NamespaceGate,
    namespace: String,
}

impl NamespaceGate {
    pub fn new(limit: u16) -> Self {
        let (wake, wakes) = mpsc::unbounded_channel();
        Self {
            limit: usize::from(limit.max(1)),
            namespaces: Mutex::default(),
            wake,
            wakes: Mutex::new(Some(wakes)),
        }
    }

    /// The (namespace, name) of each waiter woken because a place came free: the controller
    /// reconciles them at once. Only the first caller gets the stream.
    pub fn take_wakes(&self) -> Option<mpsc::UnboundedReceiver<(String, String)>> {
        self.wakes.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// A place for the reconcile of `name` in `namespace`, due at `urgency` (earlier is more
    /// urgent), unless the namespace's free places belong to more urgent waiters. Without a
    /// place the object is remembered as waiting: it should come back after [`busy_retry`].
    pub fn try_enter(&self, namespace: &str, name: &str, urgency: Timestamp) -> Option<NamespacePermit<'_>> {
        let now = Instant::now();
        let mut all = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        let ns = all.entry(namespace.to_owned()).or_default();
        let free = self.limit.saturating_sub(ns.running);
        // The live waiters more urgent than this one, counted up to the free places.
        let ahead = ns.walk(now, |(u, n), _, passed| {
            passed >= free || n == name || (*u, n.as_str()) > (urgency, name)
        });
        if ahead >= free {
            ns.wait(name, urgency, now);
            return None;
        }
        ns.forget(name);
        ns.running += 1;
        Some(NamespacePermit {
            gate: self,
            namespace: namespace.to_owned(),
        })
    }

    fn release(&self, namespace: &str) {
        let now = Instant::now();
        let mut all = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ns) = all.get_mut(namespace) else {
            return;
        };
        ns.running = ns.running.saturating_sub(1);
        // Wake the most urgent waiter not already on its way.
        let mut next = None;
        ns.walk(now, |key, w, _| {
            if w.woken
                .is_some_and(|at| now.saturating_duration_since(at) < WAKE_GRACE)
            {
                return false;
            }
            w.woken = Some(now);
            next = Some(key.1.clone());
            true
        });
        if let Some(name) = next {
            // The receiver is gone only when the controller stopped: nothing to wake then.
            let _ = self.wake.send((namespace.to_owned(), name));
        }
        if ns.is_idle() {
            all.remove(namespace);
        }
    }

    #[cfg(test)]
    fn namespaces(&self) -> usize {
        self.namespaces.lock().map(|m| m.len()).unwrap_or_default()
    }

    #[cfg(test)]
    fn waiting(&self, namespace: &str) -> usize {
        self.namespaces
            .lock()
            .map(|m| m.get(namespace).map_or(0, |n| n.waiters.len()))
            .unwrap_or_default()
    }
}

impl Drop for NamespacePermit<'_> {
    fn drop(&mut self) {
        self.gate.release(&self.namespace);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("in range")
    }

    #[test]
    fn a_namespace_holds_at_most_its_limit_and_gets_places_back() {
        let gate = NamespaceGate::new(2);
        let a1 = gate.try_enter("a", "x1", at(0)).expect("first");
        let a2 = gate.try_enter("a", "x2", at(0)).expect("second");
        assert!(
            gate.try_enter("a", "x3", at(0)).is_none(),
            "a third place in a busy namespace"
        );
        let b = gate
            .try_enter("b", "y", at(0))
            .expect("another namespace is not held back");
        drop(a1);
        let a3 = gate.try_enter("a", "x3", at(0)).expect("a place came back");
        drop((a2, a3, b));
        assert_eq!(gate.namespaces(), 0, "no entries stay behind");
    }

    #[test]
    fn a_freed_place_goes_to_the_most_urgent_waiter_and_wakes_it() {
        let gate = NamespaceGate::new(1);
        let mut wakes = gate.take_wakes().expect("the wake stream");
        assert!(gate.take_wakes().is_none(), "only one caller gets it");
        let running = gate.try_enter("t", "now", at(0)).expect("free");
        assert!(gate.try_enter("t", "later", at(600)).is_none());
        assert!(gate.try_enter("t", "soon", at(10)).is_none());
        drop(running);
        assert_eq!(
            wakes.try_recv().ok(),
            Some(("t".into(), "soon".into())),
            "the most urgent is woken"
        );
        assert!(
            gate.try_enter("t", "later", at(600)).is_none(),
            "the place is kept for the more urgent waiter"
        );
        let soon = gate
            .try_enter("t", "soon", at(10))
            .expect("the woken waiter gets the place");
        assert_eq!(gate.waiting("t"), 1);
        drop(soon);
        assert_eq!(wakes.try_recv().ok(), Some(("t".into(), "later".into())));
        drop(gate.try_enter("t", "later", at(600)).expect("its turn"));
        assert_eq!(gate.namespaces(), 0);
    }

    #[test]
    fn more_urgent_newcomers_go_first_and_free_places_are_shared_in_order() {
        let gate = NamespaceGate::new(3);
        let held: Vec<_> = (0..3)
            .map(|i| gate.try_enter("t", &format!("r{i}"), at(0)).expect("free"))
            .collect();
        for (name, due) in [("d300", 300), ("d100", 100), ("d200", 200)] {
            assert!(gate.try_enter("t", name, at(due)).is_none());
        }
        drop(held);
        // Three places, three waiters: each is admitted, whatever order they come back in.
        let late = gate.try_enter("t", "d300", at(300)).expect("third of three");
        let first = gate.try_enter("t", "d100", at(100)).expect("first of three");
        // A newcomer more urgent than the last waiter takes the third place before it.
        let urgent = gate.try_enter("t", "new", at(50)).expect("more urgent than d200");
        assert!(gate.try_enter("t", "d200", at(200)).is_none(), "no place left");
        drop(late);
        assert!(
            gate.try_enter("t", "later", at(900)).is_none(),
            "d200 is owed the one free place"
        );
        let d200 = gate.try_enter("t", "d200", at(200)).expect("its turn");
        drop((first, urgent, d200));
        drop(gate.try_enter("t", "later", at(900)).expect("and then the last"));
        assert_eq!(gate.namespaces(), 0);
    }

    #[test]
    fn a_waiter_that_stops_coming_back_is_forgotten() {
        let gate = NamespaceGate::new(1);
        let running = gate.try_enter("t", "a", at(0)).expect("free");
        assert!(gate.try_enter("t", "deleted", at(1)).is_none());
        {
            let mut all = gate.namespaces.lock().unwrap();
            let w = all.get_mut("t").unwrap().waiters.get_mut("deleted").unwrap();
            w.seen = Instant::now()
                .checked_sub(FORGET_AFTER * 2)
                .expect("monotonic clock far from zero");
        }
        drop(running);
        let later = gate
            .try_enter("t", "later", at(900))
            .expect("a forgotten waiter holds no place");
        assert_eq!(gate.waiting("t"), 0);
        drop(later);
        assert_eq!(gate.namespaces(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn busy_retries_stay_within_two_seconds(key in ".{0,40}") {
            let d = busy_retry(&key);
            prop_assert!(d >= Duration::from_secs(1) && d < Duration::from_secs(2));
        }


        /// Whatever the order of arrivals and releases: never more than the limit run at once,
        /// a waiter is admitted only when no more urgent live waiter would have to give way,
        /// and nothing stays behind once every object got its turn.
        #[test]
        fn the_limit_holds_and_nothing_leaks(
            limit in 1u16..4,
            steps in proptest::collection::vec((0usize..8, any::<bool>()), 1..120),
        ) {
            let gate = NamespaceGate::new(limit);
            let mut running: HashMap<usize, NamespacePermit<'_>> = HashMap::new();
            for (obj, release) in steps {
                if release {
                    running.remove(&obj);
                } else if !running.contains_key(&obj)
                    && let Some(p) = gate.try_enter("t", &format!("o{obj}"), at(i64::try_from(obj).unwrap()))
                {
                    running.insert(obj, p);
                }
                prop_assert!(running.len() <= usize::from(limit));
            }
            running.clear();
            for obj in 0..8usize {
                let p = gate.try_enter("t", &format!("o{obj}"), at(i64::try_from(obj).unwrap()));
                prop_assert!(p.is_some(), "o{} admitted once the namespace drained", obj);
            }
            prop_assert_eq!(gate.namespaces(), 0);
        }
    }
}
