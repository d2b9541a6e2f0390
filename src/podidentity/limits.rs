//! Request limits of the credentials endpoint that need state: token buckets without waiting (a
//! request over the limit is answered `429` at once), one shared and one per key (a token's
//! SHA-256), the per-key map bounded so that many distinct keys cannot grow it.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use crate::ratelimit::Bucket;
pub use crate::ratelimit::Rate;

/// Per-key buckets kept at most; beyond it, full (idle) buckets go first, then the oldest.
pub const MAX_KEYS: usize = 16 * 1024;

/// One bucket shared by every caller.
#[derive(Debug)]
pub struct Shared {
    rate: Rate,
    bucket: Mutex<Option<Bucket>>,
}

impl Shared {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            bucket: Mutex::new(None),
        }
    }

    /// Takes one token; `false` means over the limit.
    pub fn try_take(&self) -> bool {
        if !self.rate.limited() {
            return true;
        }
        let now = Instant::now();
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.get_or_insert_with(|| Bucket::full(self.rate, now))
            .try_take(self.rate, now)
    }
}

/// A bucket per key, at most [`MAX_KEYS`] of them.
#[derive(Debug)]
pub struct Keyed {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

impl Keyed {
    pub fn new(rate: Rate) -> Self {
        Self::with_capacity(rate, MAX_KEYS)
    }

    fn with_capacity(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket; `false` means over the limit.
    pub fn try_take(&self, key: &[u8; 32]) -> bool {
        if !self.rate.limited() {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            self.evict(&mut buckets, now);
        }
        buckets
            .entry(*key)
            .or_insert_with(|| Bucket::full(self.rate, now))
            .try_take(self.rate, now)
    }

    /// Drops the full buckets (forgetting them changes nothing); if none is full, the oldest.
    fn evict(&self, buckets: &mut HashMap<[u8; 32], Bucket>, now: Instant) {
        buckets.retain(|_, b| !b.idle(self.rate, now));
        if buckets.len() >= self.max_keys {
            let oldest = buckets.iter().min_by_key(|(_, b)| b.last_used()).map(|(k, _)| *k);
            if let Some(k) = oldest {
                buckets.remove(&k);
            }
        }
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        k
    }

    #[test]
    fn a_key_gets_its_burst_then_is_refused_while_others_are_not() {
        let limits = Keyed::new(Rate::new(0.001, 3));
        assert!((0..3).all(|_| limits.try_take(&key(1))));
        assert!(!limits.try_take(&key(1)));
        assert!(limits.try_take(&key(2)), "another key has its own bucket");
    }

    #[test]
    fn many_distinct_keys_never_hold_more_than_the_bound() {
        let limits = Keyed::with_capacity(Rate::new(0.001, 2), 100);
        for i in 0..10_000 {
            let _ = limits.try_take(&key(i));
            assert!(limits.len() <= 100);
        }
    }

    #[test]
    fn the_shared_bucket_refuses_beyond_its_burst() {
        let shared = Shared::new(Rate::new(0.001, 5));
        assert_eq!((0..10).filter(|_| shared.try_take()).count(), 5);
        assert!(Shared::new(Rate::new(0.0, 0)).try_take(), "0 is unlimited");
    }
}
