//! SDK-HMAC-SHA256 verification of a received request (docs/simulator.md#signatures): recompute the
//! canonical request from what arrived on the wire (method, raw path, query, the declared signed
//! headers including the received `Host`, body hash) with the signer in `tcred::cloud::signer`, and
//! compare.

use axum::http::{HeaderMap, Method, Uri};
use jiff::{SignedDuration, Timestamp};

use crate::error::{ApiError, code};
use crate::lock::lock;
use crate::state::{Sim, constant_time_eq};
use tcred::cloud::signer;
use tcred::sensitive::SecretString;

/// How far `X-Sdk-Date` may be from the simulator's clock (the API gateway's rule,
/// docs/simulator.md#signatures).
pub const MAX_CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(15 * 60);

/// Who signed the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An IAM user with a permanent key from the configuration.
    User { name: String, account_id: String },
    /// A temporary key this simulator issued.
    Session {
        account_id: String,
        agency_name: String,
        session_name: String,
    },
}

impl Caller {
    pub fn is_temporary(&self) -> bool {
        matches!(self, Caller::Session { .. })
    }
}

/// The request as received.
pub struct Received<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl<'a> Received<'a> {
    /// The parts of a request a handler was given, as the verifier reads them.
    pub fn of(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap, body: &'a [u8]) -> Self {
        Self {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query(),
            headers,
            body,
        }
    }
}

fn reject(message: &str) -> ApiError {
    ApiError::unauthorized(
        code::SIGNATURE,
        format!("Incorrect IAM authentication information: {message}"),
    )
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

enum KeyOwner {
    User {
        name: String,
        account_id: String,
    },
    Temp {
        token: SecretString,
        expires_at: Timestamp,
        account_id: String,
        agency_name: String,
        session_name: String,
    },
}

pub fn verify(sim: &Sim, req: &Received<'_>, now: Timestamp) -> Result<Caller, ApiError> {
    let auth_value =
        header(req.headers, "authorization").ok_or_else(|| reject("Authorization header is missing"))?;
    let auth = signer::parse_authorization(auth_value).ok_or_else(|| {
        reject("Authorization header is not SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...")
    })?;

    let date = header(req.headers, signer::HEADER_SDK_DATE).ok_or_else(|| reject("x-sdk-date is missing"))?;
    let signed_at =
        signer::parse_sdk_date(date).ok_or_else(|| reject("x-sdk-date is not YYYYMMDDTHHMMSSZ"))?;
    if now.duration_since(signed_at).abs() > MAX_CLOCK_SKEW {
        return Err(reject(
            "x-sdk-date is more than 15 minutes away from the server time",
        ));
    }
    // Only the date must be signed: APIG verifies whatever list is declared, and Huawei's Go SDK
    // (v0.1.207) signs `x-sdk-date;x-security-token` without `host`.
    if !auth.signed_headers.iter().any(|h| h == signer::HEADER_SDK_DATE) {
        return Err(reject("SignedHeaders must include x-sdk-date"));
    }

    let (secret, owner) =
        lookup(sim, &auth.access).ok_or_else(|| reject(&format!("ak {} not exist", auth.access)))?;

    let pairs: Vec<(String, String)> = auth
        .signed_headers
        .iter()
        .map(|name| {
            let value = req
                .headers
                .get(name.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            (name.clone(), value)
        })
        .collect();
    let payload_hash = match header(req.headers, signer::HEADER_CONTENT_SHA256) {
        Some(v) => v.to_owned(),
        None => signer::hex_sha256(req.body),
    };
    let canonical = signer::canonical_request(
        req.method,
        req.path,
        &signer::canonical_query(&signer::parse_query(req.query.unwrap_or(""))),
        &signer::canonical_headers(&pairs, &auth.signed_headers),
        &auth.signed_headers.join(";"),
        &payload_hash,
    );
    let expected = signer::signature(&secret, &signer::string_to_sign(date, &canonical));
    if !constant_time_eq(
        expected.as_bytes(),
        auth.signature.to_ascii_lowercase().as_bytes(),
    ) {
        return Err(reject("verify aksk signature fail"));
    }

    match owner {
        KeyOwner::User { name, account_id } => Ok(Caller::User { name, account_id }),
        KeyOwner::Temp {
            token,
            expires_at,
            account_id,
            agency_name,
            session_name,
        } => {
            let sent = header(req.headers, signer::HEADER_SECURITY_TOKEN)
                .ok_or_else(|| reject("a temporary access key needs the X-Security-Token header"))?;
            if !constant_time_eq(sent.as_bytes(), token.expose().as_bytes()) {
                return Err(reject("the security token does not belong to this access key"));
            }
            if expires_at <= now {
                return Err(reject("the security token has expired"));
            }
            Ok(Caller::Session {
                account_id,
                agency_name,
                session_name,
            })
        }
    }
}

fn lookup(sim: &Sim, access_key_id: &str) -> Option<(SecretString, KeyOwner)> {
    if let Some(u) = sim.catalog.users_by_ak.get(access_key_id) {
        let owner = KeyOwner::User {
            name: u.name.clone(),
            account_id: u.account_id.clone(),
        };
        return Some((u.secret.clone(), owner));
    }
    let keys = lock(&sim.keys);
    let k = keys.get(access_key_id)?;
    let owner = KeyOwner::Temp {
        token: k.token.clone(),
        expires_at: k.expires_at,
        account_id: k.account_id.clone(),
        agency_name: k.agency_name.clone(),
        session_name: k.session_name.clone(),
    };
    Some((k.secret.clone(), owner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ACCOUNT, CI_BOT_AK as AK, CI_BOT_SK as SK, ci_bot, world};
    use axum::http::{HeaderName, HeaderValue};
    use tcred::cloud::signer::{AccessKey, Request, sign};

    const HOST: &str = "127.0.0.1:8443";
    const BODY: &[u8] = br#"{"agency_urn": "iam::0123456789abcdef0123456789abcdef:agency:ops-admin", "agency_session_name": "s1"}"#;

    fn sim() -> Sim {
        crate::testing::sim(world())
    }

    /// Signs a POST with the operator's signer, returning (query string, headers) as sent.
    fn signed(key: &AccessKey, query: &[(String, String)], at: Timestamp) -> (String, HeaderMap) {
        let headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        let req = Request {
            method: "POST",
            host: HOST,
            path: "/v5/agencies/assume",
            query,
            headers: &headers,
            body: BODY,
        };
        let s = sign(key, &req, at);
        let mut map = HeaderMap::new();
        for (k, v) in s.headers {
            map.insert(
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
        (s.query_string, map)
    }

    fn received<'a>(query: &'a str, headers: &'a HeaderMap, body: &'a [u8]) -> Received<'a> {
        Received {
            method: "POST",
            path: "/v5/agencies/assume",
            query: (!query.is_empty()).then_some(query),
            headers,
            body,
        }
    }

    fn user_key() -> AccessKey {
        ci_bot()
    }

    #[test]
    fn accepts_a_request_signed_by_our_signer() {
        let sim = sim();
        let now = Timestamp::now();
        let query = vec![
            ("b".to_owned(), "x y".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ];
        let (qs, headers) = signed(&user_key(), &query, now);
        let caller = verify(&sim, &received(&qs, &headers, BODY), now).unwrap();
        assert_eq!(
            caller,
            Caller::User {
                name: "ci-bot".into(),
                account_id: ACCOUNT.into()
            }
        );
    }

    /// Huawei's Go SDK signs neither `host` nor `content-type`: such a request is accepted, and one
    /// whose signed headers lack the date is not.
    #[test]
    fn accepts_a_signature_without_host_as_the_go_sdk_signs() {
        let sim = sim();
        let now = Timestamp::now();
        let date = signer::format_sdk_date(now);
        let sign_with = |names: &[&str]| {
            let pairs: Vec<(String, String)> =
                names.iter().map(|n| ((*n).to_owned(), date.clone())).collect();
            let list: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let canonical = signer::canonical_request(
                "POST",
                "/v5/agencies/assume",
                "",
                &signer::canonical_headers(&pairs, &list),
                &list.join(";"),
                &signer::hex_sha256(BODY),
            );
            let sig = signer::signature(&SecretString::new(SK), &signer::string_to_sign(&date, &canonical));
            let mut map = HeaderMap::new();
            map.insert("x-sdk-date", HeaderValue::from_str(&date).unwrap());
            let auth = format!(
                "SDK-HMAC-SHA256 Access={AK}, SignedHeaders={}, Signature={sig}",
                list.join(";")
            );
            map.insert("authorization", HeaderValue::from_str(&auth).unwrap());
            map
        };
        assert!(verify(&sim, &received("", &sign_with(&["x-sdk-date"]), BODY), now).is_ok());
        let err = verify(&sim, &received("", &sign_with(&["x-other"]), BODY), now).unwrap_err();
        assert!(err.message.contains("SignedHeaders must include x-sdk-date"));
    }

    #[test]
    fn rejects_tampering_with_body_query_host_or_signature() {
        let sim = sim();
        let now = Timestamp::now();
        let (qs, headers) = signed(&user_key(), &[], now);

        let err = verify(&sim, &received(&qs, &headers, b"{}"), now).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (401, "APIGW.0301"));
        assert!(err.message.ends_with("verify aksk signature fail"));

        assert!(verify(&sim, &received("a=1", &headers, BODY), now).is_err());

        let mut other_host = headers.clone();
        other_host.insert("host", HeaderValue::from_static("127.0.0.1:9999"));
        assert!(verify(&sim, &received(&qs, &other_host, BODY), now).is_err());

        let mut bad_sig = headers.clone();
        let auth = bad_sig["authorization"].to_str().unwrap().to_owned();
        let last = auth.chars().last().unwrap();
        let flipped = format!(
            "{}{}",
            &auth[..auth.len() - 1],
            if last == '0' { '1' } else { '0' }
        );
        bad_sig.insert("authorization", HeaderValue::from_str(&flipped).unwrap());
        let err = verify(&sim, &received(&qs, &bad_sig, BODY), now).unwrap_err();
        assert_eq!(err.code, "APIGW.0301");
    }

    #[test]
    fn rejects_missing_authorization_unknown_key_and_skewed_date() {
        let sim = sim();
        let now = Timestamp::now();
        let empty = HeaderMap::new();
        let err = verify(&sim, &received("", &empty, BODY), now).unwrap_err();
        assert!(err.message.contains("Authorization header is missing"));

        let unknown = AccessKey {
            id: "NOPE0000000000000000".into(),
            secret: SK.into(),
            security_token: None,
        };
        let (qs, headers) = signed(&unknown, &[], now);
        assert!(
            verify(&sim, &received(&qs, &headers, BODY), now)
                .unwrap_err()
                .message
                .contains("not exist")
        );

        let stale = now - SignedDuration::from_mins(20);
        let (qs, headers) = signed(&user_key(), &[], stale);
        let err = verify(&sim, &received(&qs, &headers, BODY), now).unwrap_err();
        assert_eq!(err.status.as_u16(), 401);
        assert!(err.message.contains("15 minutes"));

        let near = now - SignedDuration::from_mins(14);
        let (qs, headers) = signed(&user_key(), &[], near);
        assert!(verify(&sim, &received(&qs, &headers, BODY), now).is_ok());
    }

    #[test]
    fn temporary_keys_need_their_token_and_must_not_be_expired() {
        let sim = sim();
        let now = Timestamp::now();
        let issued = sim.issue_key(ACCOUNT, "ops-admin", "s1", 900, now);
        let key = AccessKey {
            id: issued.access_key_id.clone(),
            secret: issued.secret_access_key.clone(),
            security_token: Some(issued.security_token.clone()),
        };
        let (qs, headers) = signed(&key, &[], now);
        let caller = verify(&sim, &received(&qs, &headers, BODY), now).unwrap();
        assert!(caller.is_temporary());

        let mut no_token = headers.clone();
        no_token.remove("x-security-token");
        // The token was signed, so removing it breaks the signature first; either way: 401.
        assert_eq!(
            verify(&sim, &received(&qs, &no_token, BODY), now)
                .unwrap_err()
                .status
                .as_u16(),
            401
        );

        let wrong = AccessKey {
            security_token: Some("other-token".into()),
            ..key.clone()
        };
        let (qs2, headers2) = signed(&wrong, &[], now);
        assert!(
            verify(&sim, &received(&qs2, &headers2, BODY), now)
                .unwrap_err()
                .message
                .contains("does not belong")
        );

        let later = now + SignedDuration::from_secs(901);
        let (qs3, headers3) = signed(&key, &[], later);
        assert!(
            verify(&sim, &received(&qs3, &headers3, BODY), later)
                .unwrap_err()
                .message
                .contains("expired")
        );
    }
}
