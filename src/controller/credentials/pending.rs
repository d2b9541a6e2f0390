//! Credentials minted but not yet written. When the Secret write fails after a mint (a quota, a
//! policy webhook, an immutable Secret, the API server going away), the credential is kept here
//! and only the write is retried: a failed write never costs another mint. One entry per object
//! at most; an entry goes when it is written, when the object's spec changes, or when it is too
//! close to its expiry to be worth writing.

use std::{collections::HashMap, sync::Mutex};

use jiff::Timestamp;

use crate::cloud::{IssuedCredential, swr::RegistryLogin};

/// A minted credential waiting for its Secret write.
#[derive(Clone, Debug)]
pub struct PendingWrite {
    /// The spec it was minted for (`tcred.dev/spec-hash`).
    pub spec_hash: String,
    pub credential: IssuedCredential,
    /// When the mint started (the Secret's issued-at).
    pub issued_at: Timestamp,
    /// The expiry as the endpoint returned it, before the clock-skew adjustment.
    pub issued_expiry: Timestamp,
    /// The rotate request the mint honoured, if any.
    pub rotate_request: Option<String>,
    /// For an `imagePullSecret` credential, the SWR login obtained with `credential` (whose
    /// `expires_at` is then the earlier of the two expiries): only the login is written.
    pub login: Option<RegistryLogin>,
}

#[derive(Default)]
pub struct PendingWrites(Mutex<HashMap<String, PendingWrite>>);

impl PendingWrites {
    /// Keeps `write` for the object `uid`, replacing any older one, and forgets entries of other
    /// objects whose credentials have expired (their objects may be gone).
    pub fn keep(&self, uid: &str, write: PendingWrite, now: Timestamp) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, w| w.credential.expires_at > now);
        m.insert(uid.to_owned(), write);
    }

    /// The credential waiting for `uid`, if it was minted for `spec_hash` and still has at least
    /// `min_left` of validity at `now`; anything else waiting for `uid` is dropped.
    pub fn take(
        &self,
        uid: &str,
        spec_hash: &str,
        now: Timestamp,
        min_left: std::time::Duration,
    ) -> Option<PendingWrite> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let w = m.remove(uid)?;
        let usable = now
            .checked_add(min_left)
            .is_ok_and(|enough| w.credential.expires_at > enough);
        (w.spec_hash == spec_hash && usable).then_some(w)
    }

    /// Forgets what waits for `uid` (the credential was written).
    pub fn forget(&self, uid: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(uid);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sensitive::SecretString;

    fn write(expires_at: Timestamp) -> PendingWrite {
        PendingWrite {
            spec_hash: "h1".into(),
            credential: IssuedCredential {
                access_key_id: "AK".into(),
                secret_access_key: SecretString::new("sk"),
                security_token: SecretString::new("tok"),
                expires_at,
                clock_skew_seconds: None,
            },
            issued_at: expires_at,
            issued_expiry: expires_at,
            rotate_request: None,
            login: None,
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("in range")
    }

    #[test]
    fn a_kept_credential_is_taken_once_for_the_same_spec() {
        let p = PendingWrites::default();
        p.keep("u1", write(at(3600)), at(0));
        let got = p.take("u1", "h1", at(10), Duration::from_secs(60));
        assert_eq!(got.map(|w| w.credential.access_key_id), Some("AK".into()));
        assert!(p.take("u1", "h1", at(10), Duration::from_secs(60)).is_none());
    }

    #[test]
    fn a_credential_for_another_spec_or_nearly_expired_is_dropped() {
        let p = PendingWrites::default();
        p.keep("u1", write(at(3600)), at(0));
        assert!(p.take("u1", "h2", at(10), Duration::from_secs(60)).is_none());
        assert_eq!(p.len(), 0);
        p.keep("u1", write(at(3600)), at(0));
        assert!(p.take("u1", "h1", at(3590), Duration::from_secs(60)).is_none());
    }

    #[test]
    fn expired_entries_of_other_objects_are_forgotten() {
        let p = PendingWrites::default();
        p.keep("gone", write(at(100)), at(0));
        p.keep("u1", write(at(3600)), at(200));
        assert_eq!(p.len(), 1);
        p.forget("u1");
        assert_eq!(p.len(), 0);
    }
}
