//! The HTTP client every Huawei Cloud call goes through: TLS (rustls with ring), in-process DNS
//! (no libc name service), timeouts, the error envelope, Retry-After, Huawei Cloud's clock (from
//! `Date`), and scrubbing of secrets from anything that becomes an error message.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::CloudError;
use crate::sensitive::{REDACTED, SecretString};

/// Longest error text kept from a response body.
const MAX_ERROR_TEXT: usize = 512;

/// Installs ring as the process-wide rustls crypto provider. Every binary calls this first; it is
/// idempotent.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Timeouts for Huawei Cloud calls.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(20),
        }
    }
}

/// A cheap-to-clone client for Huawei Cloud endpoints.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
    /// How far Huawei Cloud's clock is from this host's, from the `Date` of its responses.
    pub clock: Arc<ClockSkew>,
}

/// The last observed offset of Huawei Cloud's clock from this host's: positive when Huawei's
/// runs ahead. `Date` has one-second resolution and is stamped before the response travels, so
/// the estimate is within about a second (plus latency) below the true offset.
#[derive(Debug, Default)]
pub struct ClockSkew {
    seconds: AtomicI64,
    observed: AtomicBool,
}

impl ClockSkew {
    pub fn observe(&self, server: Timestamp, local: Timestamp) {
        let skew = server.as_second() - local.as_second();
        self.seconds.store(skew, Ordering::Relaxed);
        self.observed.store(true, Ordering::Relaxed);
    }

    /// Seconds Huawei's clock is ahead (negative: behind), once a response has been seen.
    pub fn seconds(&self) -> Option<i64> {
        self.observed
            .load(Ordering::Relaxed)
            .then(|| self.seconds.load(Ordering::Relaxed))
    }
}

impl HttpClient {
    pub fn new(timeouts: Timeouts) -> Result<Self, CloudError> {
        install_crypto_provider();
        let inner = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .user_agent(concat!("tcred/", env!("CARGO_PKG_VERSION")))
            .hickory_dns(true)
            .https_only(false) // endpoints are validated: https, or http to loopback only
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| CloudError::Config(format!("building the HTTP client: {}", e.without_url())))?;
        Ok(Self {
            inner,
            clock: Arc::default(),
        })
    }

    pub fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        self.inner.request(method, url)
    }

    /// Sends `req` and decodes a 2xx JSON body as `T`; anything else becomes a classified
    /// `CloudError` whose text is scrubbed of `secrets`.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        req: reqwest::RequestBuilder,
        secrets: &[&SecretString],
    ) -> Result<T, CloudError> {
        let body = self.send(operation, req, secrets).await?;
        serde_json::from_slice(&body).map_err(|e| CloudError::Decode {
            operation,
            // serde's message names the field and position, never the value of a string.
            message: e.to_string(),
        })
    }

    /// Sends `req`, returning the body of a 2xx response.
    pub async fn send(
        &self,
        operation: &'static str,
        req: reqwest::RequestBuilder,
        secrets: &[&SecretString],
    ) -> Result<bytes::Bytes, CloudError> {
        let resp = req.send().await.map_err(|e| network_error(operation, e))?;
        if let Some(server) = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| jiff::fmt::rfc2822::parse(v).ok())
        {
            self.clock.observe(server.timestamp(), Timestamp::now());
        }
        let status = resp.status().as_u16();
        let request_id = header(resp.headers(), "x-request-id");
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = resp.bytes().await.map_err(|e| network_error(operation, e))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let envelope = parse_error_envelope(&body);
        Err(CloudError::Api {
            operation,
            status,
            code: envelope.code.map(|c| scrub(&c, secrets)),
            message: scrub(
                &envelope.message.unwrap_or_else(|| default_message(status)),
                secrets,
            ),
            request_id: envelope.request_id.or(request_id),
            retry_after,
        })
    }
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn network_error(operation: &'static str, e: reqwest::Error) -> CloudError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    // without_url: a URL's query could carry identifiers we'd rather not repeat in every Event.
    let e = e.without_url();
    let mut message = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    CloudError::Network {
        operation,
        message: truncate(&message),
    }
}

fn default_message(status: u16) -> String {
    match status {
        429 => "throttled".into(),
        _ => format!("HTTP status {status}"),
    }
}

/// `Retry-After` in seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let delta = at.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(delta).unwrap_or(Duration::ZERO))
}

/// The parts of an error body tcred uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorEnvelope {
    pub code: Option<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
}

/// Reads Huawei's error envelopes tolerantly, in the order the SDK does: `error_code`/`error_msg`,
/// `errorCode`/`errorMsg`, `code`/`message`, OAuth's `error`/`error_description`, recursing into
/// nested objects (`{"error": {"code": .., "message": ..}}`).
pub fn parse_error_envelope(body: &[u8]) -> ErrorEnvelope {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => envelope_from(&v),
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            ErrorEnvelope {
                message: (!text.is_empty()).then(|| truncate(&text)),
                ..Default::default()
            }
        }
    }
}

fn envelope_from(v: &Value) -> ErrorEnvelope {
    let Some(obj) = v.as_object() else {
        return ErrorEnvelope::default();
    };
    let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
    let pairs = [
        ("error_code", "error_msg"),
        ("errorCode", "errorMsg"),
        ("code", "message"),
        ("error", "error_description"),
    ];
    let request_id = s("request_id").or_else(|| s("requestId"));
    for (c, m) in pairs {
        if s(c).is_some() || s(m).is_some() {
            return ErrorEnvelope {
                code: s(c),
                message: s(m).map(|m| truncate(&m)),
                request_id,
            };
        }
    }
    for nested in obj.values().filter(|v| v.is_object()) {
        let mut e = envelope_from(nested);
        if e.code.is_some() || e.message.is_some() {
            e.request_id = e.request_id.or(request_id);
            return e;
        }
    }
    ErrorEnvelope {
        request_id,
        ..Default::default()
    }
}

/// Replaces every occurrence of each secret in `text` with a placeholder.
pub fn scrub(text: &str, secrets: &[&SecretString]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        // Very short values would blank out ordinary words; real secrets are long.
        if s.expose().len() >= 8 {
            out = out.replace(s.expose(), REDACTED);
        }
    }
    out
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_ERROR_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_ERROR_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_read_in_sdk_order() {
        let e = parse_error_envelope(
            br#"{"error_code":"APIGW.0301","error_msg":"verify aksk signature fail","request_id":"r1"}"#,
        );
        assert_eq!(e.code.as_deref(), Some("APIGW.0301"));
        assert_eq!(e.message.as_deref(), Some("verify aksk signature fail"));
        assert_eq!(e.request_id.as_deref(), Some("r1"));

        let e = parse_error_envelope(br#"{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}"#);
        assert_eq!(
            e.message.as_deref(),
            Some("The request you have made requires authentication.")
        );

        let e = parse_error_envelope(br#"{"error":"authorization_pending","error_description":"not yet"}"#);
        assert_eq!(e.code.as_deref(), Some("authorization_pending"));

        let e = parse_error_envelope(b"<html>bad gateway</html>");
        assert_eq!(e.message.as_deref(), Some("<html>bad gateway</html>"));
        assert_eq!(parse_error_envelope(b""), ErrorEnvelope::default());
    }

    #[test]
    fn secrets_are_scrubbed_from_error_text() {
        let token = SecretString::new("tok-1234567890abcdef");
        let out = scrub("access-token tok-1234567890abcdef is expired", &[&token]);
        assert_eq!(out, "access-token <redacted> is expired");
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn long_bodies_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(600);
        let t = truncate(&long);
        assert!(t.len() <= MAX_ERROR_TEXT + '…'.len_utf8());
        assert!(t.ends_with('…'));
    }
}
