//! The Identity Center session Secret (contract: DESIGN §2.2): written by `tcred login`, read by
//! the controller to mint, and updated by it when a refresh token yields a new access token.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::{ByteString, api::core::v1::Secret};

use crate::{controller::secret::rfc3339, sensitive::SecretString};

/// Session Secret keys.
pub mod keys {
    pub const REGION: &str = "region";
    pub const START_URL: &str = "startUrl";
    pub const CLIENT_ID: &str = "clientId";
    pub const CLIENT_SECRET: &str = "clientSecret";
    pub const CLIENT_SECRET_EXPIRES_AT: &str = "clientSecretExpiresAt";
    pub const ACCESS_TOKEN: &str = "accessToken";
    pub const ACCESS_TOKEN_EXPIRES_AT: &str = "accessTokenExpiresAt";
    pub const REFRESH_TOKEN: &str = "refreshToken";
    /// Additive to the contract: when the access token was issued, so a refresh can happen at a
    /// fixed share of its lifetime.
    pub const ACCESS_TOKEN_ISSUED_AT: &str = "accessTokenIssuedAt";
}

/// Labels on a session Secret written by `tcred login`, naming the source it belongs to.
pub mod labels {
    pub const SOURCE_KIND: &str = "tcred.dev/source-kind";
    pub const SOURCE_NAME: &str = "tcred.dev/source-name";
}

/// A portal session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub region: String,
    pub start_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub client_secret_expires_at: Timestamp,
    pub access_token: SecretString,
    pub access_token_expires_at: Timestamp,
    pub access_token_issued_at: Option<Timestamp>,
    pub refresh_token: Option<SecretString>,
}

impl Session {
    /// Reads a session Secret; the error names the missing or malformed key, never a value.
    pub fn from_secret(secret: &Secret) -> Result<Self, String> {
        let empty = BTreeMap::new();
        let data = secret.data.as_ref().unwrap_or(&empty);
        let text = |k: &str| -> Result<String, String> {
            let v = data.get(k).ok_or_else(|| format!("key {k} is missing"))?;
            let s = String::from_utf8(v.0.clone()).map_err(|_| format!("key {k} is not UTF-8"))?;
            let s = s.trim().to_owned();
            if s.is_empty() {
                Err(format!("key {k} is empty"))
            } else {
                Ok(s)
            }
        };
        let time = |k: &str| -> Result<Timestamp, String> {
            text(k)?
                .parse::<Timestamp>()
                .map_err(|_| format!("key {k} is not an RFC 3339 time"))
        };
        Ok(Self {
            region: text(keys::REGION)?,
            start_url: text(keys::START_URL)?,
            client_id: text(keys::CLIENT_ID)?,
            client_secret: text(keys::CLIENT_SECRET)?.into(),
            client_secret_expires_at: time(keys::CLIENT_SECRET_EXPIRES_AT)?,
            access_token: text(keys::ACCESS_TOKEN)?.into(),
            access_token_expires_at: time(keys::ACCESS_TOKEN_EXPIRES_AT)?,
            access_token_issued_at: time(keys::ACCESS_TOKEN_ISSUED_AT).ok(),
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
        put(keys::START_URL, &self.start_url);
        put(keys::CLIENT_ID, &self.client_id);
        put(keys::CLIENT_SECRET, self.client_secret.expose());
        put(
            keys::CLIENT_SECRET_EXPIRES_AT,
            &rfc3339(self.client_secret_expires_at),
        );
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

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.access_token_expires_at <= now
    }

    /// When to refresh the access token (with a refresh token): at two thirds of its lifetime,
    /// or ten minutes before expiry when the issue time is unknown.
    pub fn refresh_at(&self) -> Timestamp {
        let exp = self.access_token_expires_at;
        match self.access_token_issued_at.filter(|i| *i < exp) {
            Some(issued) => {
                let lifetime = exp.duration_since(issued);
                issued + lifetime * 2 / 3
            }
            None => exp - jiff::SignedDuration::from_mins(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            region: "ap-southeast-1".into(),
            start_url: "https://idcenter.example.com/d-1234567890/portal".into(),
            client_id: "client-1".into(),
            client_secret: "client-secret-value".into(),
            client_secret_expires_at: Timestamp::from_second(2_000_000_000).unwrap(),
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
}
