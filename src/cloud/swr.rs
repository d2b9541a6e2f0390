//! SWR (SoftWare Repository for Container) client: `CreateSecret`, a temporary `docker login` for
//! one region's registry (docs/registry.md). The request is signed like an STS call; every byte
//! of the answer is checked before anything is built from it: the body is bounded (64 KiB, by
//! [`HttpClient`]), must name exactly the expected registry host, its `auth` must decode to a
//! bounded `user:password`, and the `X-Swr-Expireat` header must be a plausible time at most 24
//! hours (SWR's maximum) ahead.

use std::collections::BTreeMap;

use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use url::Url;

use super::{
    credential::expiry_from_iso,
    endpoints::{host_header, join},
    error::CloudError,
    http::HttpClient,
    signer::{self, AccessKey},
};
use crate::sensitive::SecretString;

/// Huawei's operation name (the SDKs' `CreateSecret`, "Generating a Temporary Login Command").
pub const OPERATION: &str = "CreateSecret";
/// `POST /v2/manage/utils/secret?projectname=<region>&duration_seconds=<n>`.
pub const PATH: &str = "/v2/manage/utils/secret";
/// SWR's range for `duration_seconds`: 15 minutes to 24 hours.
pub const MIN_SECONDS: u32 = 15 * 60;
pub const MAX_SECONDS: u32 = 24 * 60 * 60;
/// The response header that carries the login's expiry, e.g. `2025-11-01T12:18:44.382000Z`.
pub const EXPIRE_AT_HEADER: &str = "x-swr-expireat";

/// Longest `auth` value read (base64 of `user:password`), and the longest parts it may decode to.
const MAX_AUTH_CHARS: usize = 4096;
const MAX_USERNAME: usize = 256;
const MAX_PASSWORD: usize = 1024;
/// How far past SWR's 24-hour maximum an expiry may lie (clock differences).
const EXPIRY_SLACK: SignedDuration = SignedDuration::from_mins(5);

/// The registry host of a region: `swr.<region>.myhuaweicloud.com`.
pub fn registry_host(region: &str) -> String {
    format!("swr.{region}.myhuaweicloud.com")
}

/// A temporary registry login as SWR issued it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryLogin {
    /// The registry host it is for (always the one asked for).
    pub host: String,
    pub username: String,
    pub password: SecretString,
    /// Expiry as SWR returned it in `X-Swr-Expireat`.
    pub expires_at: Timestamp,
    /// Seconds SWR's clock ran ahead of this host's (negative: behind), from the response's
    /// `Date`; `None` without one or when the host is not trusted.
    pub clock_skew_seconds: Option<i64>,
}

#[derive(Deserialize)]
struct Answer {
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: String,
}

/// `POST /v2/manage/utils/secret`, signed with `key` (the credential just minted), for the
/// registry of `region`, valid `duration_seconds` (clamped to SWR's range).
#[tracing::instrument(level = "debug", skip_all, fields(operation = OPERATION, host = endpoint.host_str().unwrap_or_default()))]
pub async fn create_secret(
    http: &HttpClient,
    endpoint: &Url,
    key: &AccessKey,
    region: &str,
    duration_seconds: u32,
) -> Result<RegistryLogin, CloudError> {
    let seconds = duration_seconds.clamp(MIN_SECONDS, MAX_SECONDS);
    let query = vec![
        ("projectname".to_owned(), region.to_owned()),
        ("duration_seconds".to_owned(), seconds.to_string()),
    ];
    let mut url = join(endpoint, PATH);
    let host = host_header(&url);
    let headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    let signed = signer::sign(
        key,
        &signer::Request {
            method: "POST",
            host: &host,
            path: url.path(),
            query: &query,
            headers: &headers,
            body: &[],
        },
        Timestamp::now(),
    );
    url.set_query(Some(&signed.query_string));
    let mut req = http.request(reqwest::Method::POST, url);
    for (name, value) in signed.headers {
        // reqwest sets Host from the URL, identical to what was signed.
        if !name.eq_ignore_ascii_case("host") {
            req = req.header(name, value);
        }
    }
    let mut secrets = vec![&key.secret];
    if let Some(t) = &key.security_token {
        secrets.push(t);
    }
    let resp = http.send_with_headers(OPERATION, req, &secrets).await?;
    let (body, headers) = &resp.value;
    let expire_at = headers
        .get(EXPIRE_AT_HEADER)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let (username, password, expires_at) =
        parse_login(body, expire_at, &registry_host(region), Timestamp::now())?;
    Ok(RegistryLogin {
        host: registry_host(region),
        username,
        password,
        expires_at,
        clock_skew_seconds: resp.clock_skew_seconds,
    })
}

fn invalid(message: impl Into<String>) -> CloudError {
    CloudError::Decode {
        operation: OPERATION,
        message: message.into(),
    }
}

/// Reads a 2xx CreateSecret answer: the login for `host` (user, password) and its expiry. Never
/// quotes the body: it may carry a password.
pub fn parse_login(
    body: &[u8],
    expire_at: Option<&str>,
    host: &str,
    now: Timestamp,
) -> Result<(String, SecretString, Timestamp), CloudError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "the body is not {{\"auths\": {{<host>: {{\"auth\": <base64>}}}}}} JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let entry = answer.auths.get(host).ok_or_else(|| {
        invalid(format!(
            "auths has no login for {host} (it names {} other registries)",
            answer.auths.len()
        ))
    })?;
    let (username, password) = decode_auth(&entry.auth)?;
    let raw = expire_at.ok_or_else(|| invalid("the X-Swr-Expireat header is missing"))?;
    let expires_at = expiry_from_iso(OPERATION, "X-Swr-Expireat", raw, now)?;
    let latest = now
        .checked_add(SignedDuration::from_secs(i64::from(MAX_SECONDS)))
        .and_then(|t| t.checked_add(EXPIRY_SLACK))
        .unwrap_or(Timestamp::MAX);
    if expires_at > latest {
        return Err(invalid(
            "X-Swr-Expireat lies more than SWR's maximum of 24 hours ahead",
        ));
    }
    Ok((username, password, expires_at))
}

/// `auth` is base64 of `user:password`; both parts bounded, printable, and non-empty.
fn decode_auth(auth: &str) -> Result<(String, SecretString), CloudError> {
    if auth.len() > MAX_AUTH_CHARS {
        return Err(invalid(format!(
            "the login's auth is longer than {MAX_AUTH_CHARS} characters"
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| invalid("the login's auth is not base64"))?;
    let text = String::from_utf8(bytes).map_err(|_| invalid("the login's auth is not UTF-8"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| invalid("the login's auth is not user:password"))?;
    let printable = |s: &str| s.chars().all(|c| !c.is_control());
    if user.is_empty() || user.len() > MAX_USERNAME || !printable(user) {
        return Err(invalid(format!(
            "the login's user name is empty, over {MAX_USERNAME} bytes or not printable"
        )));
    }
    if password.is_empty() || password.len() > MAX_PASSWORD || !printable(password) {
        return Err(invalid(format!(
            "the login's password is empty, over {MAX_PASSWORD} bytes or not printable"
        )));
    }
    Ok((user.to_owned(), SecretString::new(password.to_owned())))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::cloud::ErrorClass;

    const HOST: &str = "swr.cn-north-4.myhuaweicloud.com";

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn body_for(host: &str, user_password: &str) -> Vec<u8> {
        let auth = base64::engine::general_purpose::STANDARD.encode(user_password);
        serde_json::to_vec(&serde_json::json!({"auths": {host: {"auth": auth}}})).unwrap()
    }

    fn refused(body: &[u8], expire_at: Option<&str>) -> String {
        let e = parse_login(body, expire_at, HOST, now()).unwrap_err();
        assert_eq!(e.class(), ErrorClass::InvalidResponse, "{e}");
        e.to_string()
    }

    #[test]
    fn a_login_for_the_expected_registry_reads_with_swrs_microsecond_expiry() {
        let body = body_for(HOST, "cn-north-4@ABCDEFGHIJ0123456789:6f07790721ab");
        let (user, password, exp) =
            parse_login(&body, Some("2026-01-01T06:00:00.382000Z"), HOST, now()).unwrap();
        assert_eq!(user, "cn-north-4@ABCDEFGHIJ0123456789");
        assert_eq!(password.expose(), "6f07790721ab");
        assert_eq!(exp, "2026-01-01T06:00:00.382Z".parse::<Timestamp>().unwrap());
    }

    #[test]
    fn a_login_for_another_registry_is_refused_without_naming_it() {
        let body = body_for("evil.example.com", "u:p");
        let text = refused(&body, Some("2026-01-01T06:00:00Z"));
        assert!(text.contains(HOST) && !text.contains("evil"), "{text}");
    }

    #[test]
    fn a_missing_or_implausible_expiry_is_refused() {
        let body = body_for(HOST, "u:p");
        assert!(refused(&body, None).contains("missing"));
        refused(&body, Some("tomorrow"));
        refused(&body, Some("1999-01-01T00:00:00Z"));
        assert!(refused(&body, Some("2026-01-02T01:00:00Z")).contains("24 hours"));
    }

    #[test]
    fn malformed_bodies_and_auths_are_refused_without_echoing_them() {
        let text = refused(
            br#"{"auths": {"swr.cn-north-4.myhuaweicloud.com": {"auth": "c2VjcmV0"#,
            None,
        );
        assert!(!text.contains("c2VjcmV0"), "{text}");
        refused(br#"{"auths": []}"#, Some("2026-01-01T06:00:00Z"));
        for auth in ["not base64!", "bm9jb2xvbg==", ""] {
            let body = serde_json::to_vec(&serde_json::json!({"auths": {HOST: {"auth": auth}}})).unwrap();
            refused(&body, Some("2026-01-01T06:00:00Z"));
        }
        refused(&body_for(HOST, ":password"), Some("2026-01-01T06:00:00Z"));
        refused(&body_for(HOST, "user:"), Some("2026-01-01T06:00:00Z"));
        refused(&body_for(HOST, "us\ner:pw"), Some("2026-01-01T06:00:00Z"));
        let long = format!("u:{}", "p".repeat(MAX_PASSWORD + 1));
        let text = refused(&body_for(HOST, &long), Some("2026-01-01T06:00:00Z"));
        assert!(!text.contains("ppp"), "{text}");
    }

    #[test]
    fn registry_hosts_follow_the_region() {
        assert_eq!(registry_host("cn-north-4"), HOST);
    }

    proptest! {
        #[test]
        fn any_answer_parses_or_is_refused_without_panicking(
            body in proptest::collection::vec(any::<u8>(), 0..200),
            header in proptest::option::of(".{0,40}"),
        ) {
            let _ = parse_login(&body, header.as_deref(), HOST, now());
        }
    }
}
