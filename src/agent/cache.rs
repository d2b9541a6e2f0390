//! The agent's cache of answers: a bounded map from SHA-256(token, path) to a `200` body and the
//! instant it stops being served. The token itself is never stored. When full, expired entries
//! go first, then the entry closest to expiry, so a flood of distinct tokens costs at most
//! `capacity` entries of at most [`MAX_ENTRY_BYTES`] each.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::sensitive::SecretString;

/// Largest answer the cache keeps (the credentials JSON is well under 4 KiB).
pub const MAX_ENTRY_BYTES: usize = 16 * 1024;
/// The SDKs fetch again below 40 minutes of validity; an answer is not served from the cache
/// within this margin of its expiration (40 min + 2 min), so what a pod gets from the cache never
/// triggers a re-fetch on every call.
pub const SDK_REFRESH_MARGIN: SignedDuration = SignedDuration::from_secs(42 * 60);

pub type Key = [u8; 32];

/// The cache key of `token` asking for `path`. The path is length-prefixed so no token/path
/// split can collide with another.
pub fn key(token: &SecretString, path: &str) -> Key {
    let mut h = Sha256::new();
    h.update((path.len() as u64).to_be_bytes());
    h.update(path.as_bytes());
    h.update(token.expose().as_bytes());
    h.finalize().into()
}

#[derive(Deserialize)]
struct Answer {
    credentials: Expiring,
}

#[derive(Deserialize)]
struct Expiring {
    expiration: String,
}

/// How long a `200` body may be served from the cache: at most `ttl`, and never past its
/// `credentials.expiration` minus [`SDK_REFRESH_MARGIN`]. `None`: not cacheable (unreadable,
/// too large, or already within the margin).
pub fn lifetime(body: &[u8], now: Timestamp, ttl: Duration) -> Option<Duration> {
    if body.len() > MAX_ENTRY_BYTES || ttl.is_zero() {
        return None;
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    let expiration: Timestamp = answer.credentials.expiration.parse().ok()?;
    let usable_until = expiration.checked_sub(SDK_REFRESH_MARGIN).ok()?;
    let left = usable_until.duration_since(now);
    if left <= SignedDuration::ZERO {
        return None;
    }
    let left = Duration::try_from(left).ok()?;
    Some(left.min(ttl))
}

struct Entry {
    body: Bytes,
    until: Instant,
}

/// A bounded cache of answers. Not synchronized: the agent holds it behind a mutex.
pub struct Cache {
    capacity: usize,
    entries: HashMap<Key, Entry>,
    by_expiry: BTreeSet<(Instant, Key)>,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The body cached under `key`, if it is still within its lifetime at `now`.
    pub fn get(&mut self, key: &Key, now: Instant) -> Option<Bytes> {
        let entry = self.entries.get(key)?;
        if entry.until > now {
            return Some(entry.body.clone());
        }
        self.remove(key);
        None
    }

    /// Keeps `body` under `key` until `until`, evicting to stay within capacity.
    pub fn insert(&mut self, key: Key, body: Bytes, until: Instant, now: Instant) {
        if self.capacity == 0 || until <= now {
            return;
        }
        self.remove(&key);
        self.purge(now);
        while self.entries.len() >= self.capacity {
            let Some(&(_, oldest)) = self.by_expiry.iter().next() else {
                break;
            };
            self.remove(&oldest);
        }
        self.by_expiry.insert((until, key));
        self.entries.insert(key, Entry { body, until });
    }

    /// Drops every entry whose lifetime ended by `now`.
    pub fn purge(&mut self, now: Instant) {
        while let Some(&(until, key)) = self.by_expiry.iter().next() {
            if until > now {
                break;
            }
            self.remove(&key);
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.entries.remove(key) {
            self.by_expiry.remove(&(old.until, *key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(expiration: &str) -> Vec<u8> {
        format!(
            r#"{{"credentials":{{"accessKeyId":"AK","secretAccessKey":"SK","securityToken":"T","expiration":"{expiration}"}}}}"#
        )
        .into_bytes()
    }

    fn now() -> Timestamp {
        "2026-12-02T06:00:00Z".parse().unwrap()
    }

    #[test]
    fn keys_differ_by_token_and_by_path() {
        let a = SecretString::new("token-a");
        let b = SecretString::new("token-b");
        assert_ne!(key(&a, "/v1/credentials/n/x"), key(&b, "/v1/credentials/n/x"));
        assert_ne!(key(&a, "/v1/credentials/n/x"), key(&a, "/v1/credentials/n/y"));
        assert_eq!(key(&a, "/p"), key(&a, "/p"));
        // No split of the same bytes between path and token collides.
        assert_ne!(
            key(&SecretString::new("b"), "/pa"),
            key(&SecretString::new("ab"), "/p")
        );
    }

    #[test]
    fn lifetime_is_the_ttl_when_the_credential_has_long_left() {
        let l = lifetime(&body("2026-12-02T08:00:00.000Z"), now(), Duration::from_secs(30));
        assert_eq!(l, Some(Duration::from_secs(30)));
    }

    #[test]
    fn lifetime_stops_42_minutes_before_expiration() {
        let l = lifetime(&body("2026-12-02T06:42:10.000Z"), now(), Duration::from_secs(30));
        assert_eq!(l, Some(Duration::from_secs(10)));
        assert_eq!(
            lifetime(&body("2026-12-02T06:42:00.000Z"), now(), Duration::from_secs(30)),
            None
        );
        assert_eq!(
            lifetime(&body("2026-12-02T06:10:00.000Z"), now(), Duration::from_secs(30)),
            None
        );
    }

    #[test]
    fn unreadable_or_extreme_answers_are_not_cached() {
        let ttl = Duration::from_secs(30);
        assert_eq!(lifetime(b"not json", now(), ttl), None);
        assert_eq!(lifetime(br#"{"credentials":{}}"#, now(), ttl), None);
        assert_eq!(lifetime(&body("garbage"), now(), ttl), None);
        assert_eq!(lifetime(&body("-009999-01-01T00:00:00Z"), now(), ttl), None);
        // Beyond jiff's range: unreadable, so not cached.
        assert_eq!(lifetime(&body("9999-12-31T23:59:59.999Z"), now(), ttl), None);
        assert_eq!(lifetime(&body("9000-01-01T00:00:00.000Z"), now(), ttl), Some(ttl));
        assert_eq!(
            lifetime(&body("2026-12-02T08:00:00.000Z"), now(), Duration::ZERO),
            None
        );
        let mut big = body("2026-12-02T08:00:00.000Z");
        big.extend(std::iter::repeat_n(b' ', MAX_ENTRY_BYTES));
        assert_eq!(lifetime(&big, now(), ttl), None);
    }

    #[test]
    fn entries_expire() {
        let t0 = Instant::now();
        let mut c = Cache::new(4);
        c.insert([1; 32], Bytes::from_static(b"a"), t0 + Duration::from_secs(5), t0);
        assert_eq!(
            c.get(&[1; 32], t0 + Duration::from_secs(4)).as_deref(),
            Some(&b"a"[..])
        );
        assert_eq!(c.get(&[1; 32], t0 + Duration::from_secs(5)), None);
        assert!(c.is_empty());
    }

    #[test]
    fn capacity_holds_under_a_flood_and_the_closest_to_expiry_goes_first() {
        let t0 = Instant::now();
        let mut c = Cache::new(3);
        for i in 0..1000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            c.insert(
                k,
                Bytes::from_static(b"x"),
                t0 + Duration::from_secs(u64::from(i) + 1),
                t0,
            );
            assert!(c.len() <= 3);
            assert_eq!(c.entries.len(), c.by_expiry.len());
        }
        let mut last = [0u8; 32];
        last[..4].copy_from_slice(&999u32.to_be_bytes());
        assert!(c.get(&last, t0).is_some());
    }

    #[test]
    fn reinserting_a_key_replaces_it() {
        let t0 = Instant::now();
        let mut c = Cache::new(2);
        c.insert([1; 32], Bytes::from_static(b"a"), t0 + Duration::from_secs(5), t0);
        c.insert([1; 32], Bytes::from_static(b"b"), t0 + Duration::from_secs(9), t0);
        assert_eq!(c.len(), 1);
        assert_eq!(c.by_expiry.len(), 1);
        assert_eq!(
            c.get(&[1; 32], t0 + Duration::from_secs(6)).as_deref(),
            Some(&b"b"[..])
        );
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let t0 = Instant::now();
        let mut c = Cache::new(0);
        c.insert([1; 32], Bytes::from_static(b"a"), t0 + Duration::from_secs(5), t0);
        assert!(c.is_empty());
    }
}
