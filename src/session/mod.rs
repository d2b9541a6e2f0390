//! The Identity Center session Secret (contract: docs/api.md): written by `tcred login`, read by
//! the controller to mint, and updated by it when a refresh token yields a new access token.

pub mod store;

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{ByteString, api::core::v1::Secret};

use crate::{
    schedule,
    sensitive::SecretString,
    source::{KeyError, read_key},
    time::rfc3339,
};

/// Session Secret keys and the labels binding it to its source (kept at their former paths).
pub use crate::source::{binding_labels as labels, session_keys as keys};

/// A portal session. Minting needs only the region and the access token (with its expiry); the
/// registered client is needed only to refresh the access token, and the start URL only by the
/// next `tcred login`, so a session Secret made by hand from a token obtained elsewhere works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub region: String,
    pub start_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub client_secret_expires_at: Option<Timestamp>,
    pub access_token: SecretString,
    pub access_token_expires_at: Timestamp,
    pub access_token_issued_at: Option<Timestamp>,
    pub refresh_token: Option<SecretString>,
}

/// The earliest time a session Secret may name: anything before is a forged or broken value.
const EARLIEST: Timestamp = Timestamp::constant(946_684_800, 0); // 2000-01-01T00:00:00Z
/// How far after now a session Secret may name a time (token and client-secret lifetimes are
/// hours to months).
const LATEST_AHEAD: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

impl Session {
    /// Reads a session Secret; the error names the missing or malformed key, never a value.
    pub fn from_secret(secret: &Secret) -> Result<Self, String> {
        Self::from_secret_at(secret, Timestamp::now())
    }

    /// [`Session::from_secret`] at a given time: every time key must lie between 2000-01-01 and
    /// ten years after `now`, so no later arithmetic on it can overflow (docs/security.md C1).
    pub fn from_secret_at(secret: &Secret, now: Timestamp) -> Result<Self, String> {
        let latest = schedule::add_saturating(now, LATEST_AHEAD);
        let text = |k: &str| read_key(secret, k).map_err(|e| e.describe(k));
        let time = |k: &str| -> Result<Timestamp, String> {
            let t = text(k)?
                .parse::<Timestamp>()
                .map_err(|_| format!("key {k} is not an RFC 3339 time"))?;
            if t < EARLIEST || t > latest {
                return Err(format!(
                    "key {k} is not a plausible time (before 2000 or more than ten years ahead)"
                ));
            }
            Ok(t)
        };
        // Optional, but when present it is checked like the others.
        let absent = |k: &str| matches!(read_key(secret, k), Err(KeyError::Missing | KeyError::Empty));
        let optional_time = |k: &str| -> Result<Option<Timestamp>, String> {
            if absent(k) { Ok(None) } else { time(k).map(Some) }
        };
        let optional_text = |k: &str| -> Result<Option<String>, String> {
            if absent(k) { Ok(None) } else { text(k).map(Some) }
        };
        Ok(Self {
            region: text(keys::REGION)?,
            start_url: optional_text(keys::START_URL)?,
            client_id: optional_text(keys::CLIENT_ID)?,
            client_secret: optional_text(keys::CLIENT_SECRET)?.map(Into::into),
            client_secret_expires_at: optional_time(keys::CLIENT_SECRET_EXPIRES_AT)?,
            access_token: text(keys::ACCESS_TOKEN)?.into(),
            access_token_expires_at: time(keys::ACCESS_TOKEN_EXPIRES_AT)?,
            access_token_issued_at: optional_time(keys::ACCESS_TOKEN_ISSUED_AT)?,
            refresh_token: text(keys::REFRESH_TOKEN).ok().map(Into::into),
        })
    }

    /// The Secret data for this session.
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        let mut d = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            d.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
        };
        put(keys::REGION, &self.region);
        if let Some(u) = &self.start_url {
            put(keys::START_URL, u);
        }
        if let Some(id) = &self.client_id {
            put(keys::CLIENT_ID, id);
        }
        if let Some(cs) = &self.client_secret {
            put(keys::CLIENT_SECRET, cs.expose());
        }
        if let Some(t) = self.client_secret_expires_at {
            put(keys::CLIENT_SECRET_EXPIRES_AT, &rfc3339(t));
        }
        put(keys::ACCESS_TOKEN, self.access_token.expose());
        put(
            keys::ACCESS_TOKEN_EXPIRES_AT,
            &rfc3339(self.access_token_expires_at),
        );
        if let Some(t) = self.access_token_issued_at {
            put(keys::ACCESS_TOKEN_ISSUED_AT, &rfc3339(t));
        }
        if let Some(r) = &self.refresh_token {
            put(keys::REFRESH_TOKEN, r.expose());
        }
        d
    }

    /// The registered client a refresh authenticates with, or which keys it lacks (named, never
    /// a value).
    pub fn refresh_client(&self) -> Result<(&str, &SecretString), String> {
        match (&self.client_id, &self.client_secret) {
            (Some(id), Some(secret)) => Ok((id, secret)),
            (id, secret) => {
                let missing: Vec<&str> = [
                    (id.is_none(), keys::CLIENT_ID),
                    (secret.is_none(), keys::CLIENT_SECRET),
                ]
                .into_iter()
                .filter_map(|(m, k)| m.then_some(k))
                .collect();
                Err(format!(
                    "the session Secret has no {} (needed to refresh the access token)",
                    missing.join(" and ")
                ))
            }
        }
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.access_token_expires_at <= now
    }

    /// When to refresh the access token (with a refresh token): at two thirds of its lifetime,
    /// or ten minutes before expiry when the issue time is unknown. Never later than the expiry;
    /// a time out of range means the expiry itself (already past: refresh now).
    pub fn refresh_at(&self) -> Timestamp {
        let exp = self.access_token_expires_at;
        match self.access_token_issued_at.filter(|i| *i < exp) {
            Some(issued) => {
                let lifetime = schedule::until(issued, exp);
                issued.checked_add(lifetime / 3 * 2).map_or(exp, |t| t.min(exp))
            }
            None => exp
                .checked_sub(jiff::SignedDuration::from_mins(10))
                .unwrap_or(exp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            region: "ap-southeast-1".into(),
            start_url: Some("https://idcenter.example.com/d-1234567890/portal".into()),
            client_id: Some("client-1".into()),
            client_secret: Some("client-secret-value".into()),
            client_secret_expires_at: Some(Timestamp::from_second(2_000_000_000).unwrap()),
            access_token: "access-token-value".into(),
            access_token_expires_at: Timestamp::from_second(1_800_000_000).unwrap(),
            access_token_issued_at: Some(Timestamp::from_second(1_799_971_200).unwrap()),
            refresh_token: None,
        }
    }

    #[test]
    fn a_session_round_trips_through_its_secret() {
        let s = session();
        let secret = Secret {
            data: Some(s.to_data()),
            ..Default::default()
        };
        assert_eq!(Session::from_secret(&secret).unwrap(), s);
        let with_refresh = Session {
            refresh_token: Some("refresh-value".into()),
            ..s
        };
        let secret = Secret {
            data: Some(with_refresh.to_data()),
            ..Default::default()
        };
        assert_eq!(Session::from_secret(&secret).unwrap(), with_refresh);
    }

    #[test]
    fn missing_keys_are_named_without_revealing_values() {
        let mut data = session().to_data();
        data.remove(keys::ACCESS_TOKEN);
        let err = Session::from_secret(&Secret {
            data: Some(data),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err, "key accessToken is missing");
        let mut data = session().to_data();
        data.insert(
            keys::ACCESS_TOKEN_EXPIRES_AT.into(),
            ByteString(b"tomorrow".to_vec()),
        );
        let err = Session::from_secret(&Secret {
            data: Some(data),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.contains("accessTokenExpiresAt") && !err.contains("tomorrow"),
            "{err}"
        );
    }

    #[test]
    fn a_hand_made_session_with_only_region_and_access_token_reads_and_names_what_refresh_lacks() {
        let data: BTreeMap<String, ByteString> = [
            (keys::REGION, "ap-southeast-1"),
            (keys::ACCESS_TOKEN, "access-token-value"),
            (keys::ACCESS_TOKEN_EXPIRES_AT, "2027-01-15T08:00:00Z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
        let s = Session::from_secret_at(&secret_of(data.clone()), now()).unwrap();
        assert_eq!(s.region, "ap-southeast-1");
        assert_eq!((s.start_url.as_deref(), s.client_id.as_deref()), (None, None));
        assert_eq!(s.to_data(), data, "round-trips without inventing keys");
        let err = s.refresh_client().unwrap_err();
        assert_eq!(
            err,
            "the session Secret has no clientId and clientSecret (needed to refresh the access token)"
        );
        let with_id = Session {
            client_id: Some("client-1".into()),
            ..s
        };
        assert!(
            with_id
                .refresh_client()
                .unwrap_err()
                .contains("no clientSecret (")
        );

        // Present but broken optional keys are still refused, naming the key.
        let mut bad = data;
        bad.insert(keys::CLIENT_ID.into(), ByteString(vec![0xff]));
        let err = Session::from_secret_at(&secret_of(bad), now()).unwrap_err();
        assert!(err.contains(keys::CLIENT_ID), "{err}");
    }

    #[test]
    fn refresh_happens_at_two_thirds_of_the_token_lifetime() {
        let s = session();
        // 8 h token: refresh 5 h 20 min after issue
        assert_eq!(s.refresh_at().as_second(), 1_799_971_200 + 19_200);
        let unknown = Session {
            access_token_issued_at: None,
            ..session()
        };
        assert_eq!(unknown.refresh_at().as_second(), 1_800_000_000 - 600);
    }

    #[test]
    fn debug_output_redacts_tokens_and_client_secret() {
        let out = format!(
            "{:?}",
            Session {
                refresh_token: Some("refresh-value".into()),
                ..session()
            }
        );
        for secret in ["client-secret-value", "access-token-value", "refresh-value"] {
            assert!(!out.contains(secret), "{out}");
        }
    }
    fn secret_of(data: BTreeMap<String, ByteString>) -> Secret {
        Secret {
            data: Some(data),
            ..Default::default()
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_799_980_000).unwrap()
    }

    #[test]
    fn times_outside_a_plausible_window_are_refused_naming_the_key_not_the_value() {
        for key in [
            keys::ACCESS_TOKEN_EXPIRES_AT,
            keys::ACCESS_TOKEN_ISSUED_AT,
            keys::CLIENT_SECRET_EXPIRES_AT,
        ] {
            for bad in [
                "-009999-01-02T01:59:59Z",
                "1999-12-31T23:59:59Z",
                "2040-01-01T00:00:00Z",
            ] {
                let mut data = session().to_data();
                data.insert(key.into(), ByteString(bad.as_bytes().to_vec()));
                let err = Session::from_secret_at(&secret_of(data), now()).unwrap_err();
                assert!(err.contains(key) && !err.contains(bad), "{key}={bad}: {err}");
            }
        }
    }

    #[test]
    fn a_malformed_issue_time_is_refused_and_a_missing_one_is_unknown() {
        let mut data = session().to_data();
        data.insert(
            keys::ACCESS_TOKEN_ISSUED_AT.into(),
            ByteString(b"yesterday".to_vec()),
        );
        let err = Session::from_secret_at(&secret_of(data), now()).unwrap_err();
        assert!(err.contains(keys::ACCESS_TOKEN_ISSUED_AT), "{err}");
        let mut data = session().to_data();
        data.remove(keys::ACCESS_TOKEN_ISSUED_AT);
        let s = Session::from_secret_at(&secret_of(data), now()).unwrap();
        assert_eq!(s.access_token_issued_at, None);
    }

    #[test]
    fn the_earliest_and_latest_times_do_not_panic_the_refresh_schedule() {
        // docs/security.md C1, trigger A: `accessTokenExpiresAt - 10 min` at Timestamp::MIN panicked.
        let at_min = Session {
            access_token_expires_at: Timestamp::MIN,
            access_token_issued_at: None,
            refresh_token: Some("refresh-value".into()),
            ..session()
        };
        assert_eq!(at_min.refresh_at(), Timestamp::MIN, "refresh now");
        assert!(at_min.is_expired(now()));
        let wide = Session {
            access_token_expires_at: Timestamp::MAX,
            access_token_issued_at: Some(Timestamp::MIN),
            ..session()
        };
        let at = wide.refresh_at();
        assert!(at > Timestamp::MIN && at <= Timestamp::MAX);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn any_value() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                "[-+0-9TZ:. ]{0,30}".prop_map(String::into_bytes),
                (-377_705_116_800i64..253_402_207_200)
                    .prop_map(|s| Timestamp::from_second(s).unwrap().to_string().into_bytes()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            #[test]
            fn parsing_any_session_secret_never_panics_and_valid_times_schedule_safely(
                overrides in proptest::collection::btree_map(
                    prop_oneof![
                        Just(keys::ACCESS_TOKEN_EXPIRES_AT.to_owned()),
                        Just(keys::ACCESS_TOKEN_ISSUED_AT.to_owned()),
                        Just(keys::CLIENT_SECRET_EXPIRES_AT.to_owned()),
                        Just(keys::REFRESH_TOKEN.to_owned()),
                        Just(keys::ACCESS_TOKEN.to_owned()),
                        ".{0,12}",
                    ],
                    any_value(),
                    0..6,
                ),
                drop_all in any::<bool>(),
            ) {
                let mut data = if drop_all { BTreeMap::new() } else { session().to_data() };
                for (k, v) in overrides {
                    data.insert(k, ByteString(v));
                }
                if let Ok(s) = Session::from_secret_at(&secret_of(data), now()) {
                    prop_assert!(s.access_token_expires_at >= EARLIEST);
                    prop_assert!(s.refresh_at() <= s.access_token_expires_at);
                    let _ = s.is_expired(now());
                }
            }
        }
    }
}
