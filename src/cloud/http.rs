//! The HTTP client every Huawei Cloud call goes through: TLS (rustls with ring), in-process DNS
//! (no libc name service), timeouts, bounded bodies, the error envelope, Retry-After, Huawei
//! Cloud's clock (from the `Date` of each trusted response), and scrubbing of secrets from
//! anything that becomes an error message.
//!
//! Responses from hosts that are not trusted (neither Huawei Cloud's domains nor allowed by the
//! administrator) tell the caller as little as possible: no clock measurement, no transport
//! detail, no non-JSON body text. The full detail goes to the operator log at `debug` only.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::debug;
use url::Url;

use super::{endpoints::EndpointPolicy, error::CloudError};
use crate::sensitive::{REDACTED, SecretString};

/// Longest error text kept from a response body.
const MAX_ERROR_TEXT: usize = 512;
/// Longest error code kept from a response body.
const MAX_ERROR_CODE: usize = 64;
/// Largest response body read from any endpoint; Huawei's answers are a few KiB.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

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
    /// Which hosts are trusted (and allowed for namespaced sources).
    policy: Arc<EndpointPolicy>,
    /// The last clock skew each trusted host showed.
    pub clocks: Arc<Clocks>,
}

/// The last clock skew each trusted host's `Date` showed, by `host:port`: what the
/// `tcred_huawei_clock_skew_seconds{host}` gauge reports. Only trusted hosts are recorded, and
/// at most [`Clocks::MAX_HOSTS`] of them, so the series cannot be multiplied by tenants.
#[derive(Debug, Default)]
pub struct Clocks(std::sync::Mutex<std::collections::BTreeMap<String, i64>>);

impl Clocks {
    pub const MAX_HOSTS: usize = 256;

    pub fn observe(&self, host: String, skew_seconds: i64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= Self::MAX_HOSTS && !m.contains_key(&host) {
            return;
        }
        m.insert(host, skew_seconds);
    }

    /// Every host's last skew.
    pub fn snapshot(&self) -> Vec<(String, i64)> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().map(|(h, s)| (h.clone(), *s)).collect()
    }
}

/// A decoded response and what its `Date` said about Huawei Cloud's clock.
#[derive(Clone, Debug)]
pub struct Received<T> {
    pub value: T,
    /// Seconds Huawei's clock ran ahead of this host's (negative: behind), from this response's
    /// `Date`; `None` without a usable `Date` or when the host is not trusted.
    pub clock_skew_seconds: Option<i64>,
}

/// The skew a response's `Date` shows, when the host is trusted. `Date` has one-second
/// resolution and is stamped before the response travels, so the estimate is within about a
/// second (plus latency) below the true offset.
fn clock_skew(trusted: bool, date: Option<&str>, local: Timestamp) -> Option<i64> {
    if !trusted {
        return None;
    }
    let server = jiff::fmt::rfc2822::parse(date?).ok()?.timestamp();
    // Both are within jiff's range (±10^4 years), so the difference cannot overflow.
    server.as_second().checked_sub(local.as_second())
}

impl HttpClient {
    /// A client that trusts Huawei Cloud's own domains only.
    pub fn new(timeouts: Timeouts) -> Result<Self, CloudError> {
        Self::with_policy(timeouts, EndpointPolicy::default())
    }

    /// A client that trusts Huawei Cloud's domains and the hosts `policy` allows.
    pub fn with_policy(timeouts: Timeouts, policy: EndpointPolicy) -> Result<Self, CloudError> {
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
            policy: Arc::new(policy),
            clocks: Arc::default(),
        })
    }

    /// The hosts this client trusts, which are also the hosts namespaced sources may use.
    pub fn policy(&self) -> &EndpointPolicy {
        &self.policy
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
        self.send_json_measured(operation, req, secrets)
            .await
            .map(|r| r.value)
    }

    /// [`send_json`](Self::send_json), also returning the clock skew the response showed.
    pub async fn send_json_measured<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        req: reqwest::RequestBuilder,
        secrets: &[&SecretString],
    ) -> Result<Received<T>, CloudError> {
        let r = self.exchange(operation, req, secrets).await?;
        let value = serde_json::from_slice(&r.value.0).map_err(|e| CloudError::Decode {
            operation,
            // serde's message names the field and position, and for a wrongly typed value quotes
            // it: an endpoint could put what we sent it there, so it is scrubbed like any text.
            message: sanitize(&e.to_string(), secrets, MAX_ERROR_TEXT),
        })?;
        Ok(Received {
            value,
            clock_skew_seconds: r.clock_skew_seconds,
        })
    }

    /// Sends `req`, returning the body of a 2xx response.
    pub async fn send(
        &self,
        operation: &'static str,
        req: reqwest::RequestBuilder,
        secrets: &[&SecretString],
    ) -> Result<bytes::Bytes, CloudError> {
        self.exchange(operation, req, secrets).await.map(|r| r.value.0)
    }

    /// [`send`](Self::send) for an API that also answers in headers (SWR's `X-Swr-Expireat`):
    /// the 2xx body with the response's headers, and the clock skew the response showed.
    pub async fn send_with_headers(
        &self,
        operation: &'static str,
        req: reqwest::RequestBuilder,
        secrets: &[&SecretString],
    ) -> Result<Received<(bytes::Bytes, reqwest::header::HeaderMap)>, CloudError> {
        self.exchange(operation, req, secrets).await
    }

    async fn exchange(
        &self,
        operation: &'static str,
        req: reqwest::RequestBuilder,
        secrets: &[&SecretString],
    ) -> Result<Received<(bytes::Bytes, reqwest::header::HeaderMap)>, CloudError> {
        let (client, request) = req.build_split();
        let request = request.map_err(|e| {
            CloudError::Config(format!("building the {operation} request: {}", e.without_url()))
        })?;
        let url = request.url().clone();
        let trusted = self.policy.allows(&url);
        let mut resp = client
            .execute(request)
            .await
            .map_err(|e| network_error(operation, &url, trusted, e))?;
        let clock_skew_seconds = clock_skew(
            trusted,
            resp.headers()
                .get(reqwest::header::DATE)
                .and_then(|v| v.to_str().ok()),
            Timestamp::now(),
        );
        if let Some(skew) = clock_skew_seconds {
            self.clocks.observe(crate::ratelimit::host_key(&url), skew);
        }
        let status = resp.status().as_u16();
        let request_id =
            header(resp.headers(), "x-request-id").map(|r| sanitize(&r, secrets, MAX_ERROR_CODE));
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_body(operation, &url, trusted, status, &mut resp).await?;
        if (200..300).contains(&status) {
            return Ok(Received {
                value: (body, std::mem::take(resp.headers_mut())),
                clock_skew_seconds,
            });
        }
        let envelope = parse_error_envelope(&body);
        if !trusted && !envelope.json && envelope.message.is_some() {
            debug!(
                operation,
                host = url.host_str().unwrap_or_default(),
                status,
                "dropped the non-JSON error body of an endpoint that is not trusted"
            );
        }
        let message = envelope
            .message
            .filter(|_| trusted || envelope.json)
            .unwrap_or_else(|| default_message(status));
        Err(CloudError::Api {
            operation,
            status,
            code: envelope.code.map(|c| sanitize(&c, secrets, MAX_ERROR_CODE)),
            message: sanitize(&message, secrets, MAX_ERROR_TEXT),
            request_id: envelope
                .request_id
                .map(|r| sanitize(&r, secrets, MAX_ERROR_CODE))
                .or(request_id),
            retry_after,
            clock_skew_seconds,
        })
    }
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of a body, chunk by chunk; a larger body is an error
/// (class Server: retried with backoff), refused before reading when `Content-Length` says so.
async fn read_body(
    operation: &'static str,
    url: &Url,
    trusted: bool,
    status: u16,
    resp: &mut reqwest::Response,
) -> Result<bytes::Bytes, CloudError> {
    let too_large = || CloudError::Decode {
        operation,
        message: format!(
            "the response (HTTP {status}) exceeded {} KiB",
            MAX_RESPONSE_BYTES / 1024
        ),
    };
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| network_error(operation, url, trusted, e))?
    {
        if body.len().saturating_add(chunk.len()) > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Which service an operation calls, for generic messages.
fn service_of(operation: &str) -> &'static str {
    match operation {
        "AssumeAgency" | "AssumeAgencyWithOIDC" | "GetCallerIdentity" => "sts",
        "ListAccountAgencies" | "GetAgencyCredentials" | "Logout" => "portal",
        "CreateSecret" => "swr",
        _ => "oidc",
    }
}

/// What a transport failure looked like, coarsely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Timeout,
    Connect,
    Transport,
}

fn network_error(operation: &'static str, url: &Url, trusted: bool, e: reqwest::Error) -> CloudError {
    // without_url: a URL's query could carry identifiers we'd rather not repeat in every Event.
    let e = e.without_url();
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let lower = chain.to_ascii_lowercase();
    let failure = if e.is_timeout() {
        Failure::Timeout
    } else if e.is_connect() && !(lower.contains("tls") || lower.contains("certificate")) {
        Failure::Connect
    } else {
        Failure::Transport
    };
    CloudError::Network {
        operation,
        message: if trusted {
            let kind = match failure {
                Failure::Timeout => "timed out",
                Failure::Connect => "could not connect",
                Failure::Transport => "transport error",
            };
            truncate(&format!("{kind}: {chain}"), MAX_ERROR_TEXT)
        } else {
            debug!(operation, host = url.host_str().unwrap_or_default(), error = %chain, "a call to an endpoint that is not trusted failed");
            generic_network_message(operation, failure)
        },
    }
}

/// The whole message a caller gets about a transport failure with a host that is not trusted:
/// no error chain, no port or certificate detail.
fn generic_network_message(operation: &str, failure: Failure) -> String {
    match failure {
        Failure::Timeout => "timed out".to_owned(),
        Failure::Connect => format!("could not connect to the {} endpoint", service_of(operation)),
        Failure::Transport => "TLS or transport failure".to_owned(),
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
    /// From the JSON envelope, or the whole body when it is not JSON (see `json`). Not truncated
    /// or scrubbed: the caller scrubs, then truncates.
    pub message: Option<String>,
    pub request_id: Option<String>,
    /// Whether the body was JSON (a non-JSON body's text is only shown for trusted hosts).
    pub json: bool,
}

/// Reads Huawei's error envelopes tolerantly, in the order the SDK does: `error_code`/`error_msg`,
/// `errorCode`/`errorMsg`, `code`/`message`, OAuth's `error`/`error_description`, recursing into
/// nested objects (`{"error": {"code": .., "message": ..}}`).
pub fn parse_error_envelope(body: &[u8]) -> ErrorEnvelope {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => ErrorEnvelope {
            json: true,
            ..envelope_from(&v, 0)
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            ErrorEnvelope {
                message: (!text.is_empty()).then_some(text),
                ..Default::default()
            }
        }
    }
}

/// Envelopes nest one or two levels; anything deeper is not Huawei's.
const MAX_ENVELOPE_DEPTH: usize = 4;

fn envelope_from(v: &Value, depth: usize) -> ErrorEnvelope {
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
                message: s(m),
                request_id,
                json: true,
            };
        }
    }
    if depth < MAX_ENVELOPE_DEPTH {
        for nested in obj.values().filter(|v| v.is_object()) {
            let mut e = envelope_from(nested, depth + 1);
            if e.code.is_some() || e.message.is_some() {
                e.request_id = e.request_id.or(request_id);
                return e;
            }
        }
    }
    ErrorEnvelope {
        request_id,
        json: true,
        ..Default::default()
    }
}

/// Shortest run of a secret that is redacted wherever it appears; shorter values would blank out
/// ordinary words, and real secrets are long.
const MIN_SECRET_FRAGMENT: usize = 8;

/// Replaces every run of 8 or more bytes of any secret in `text` (a whole secret, or a fragment
/// such as a prefix an endpoint cut off) with a placeholder.
pub fn scrub(text: &str, secrets: &[&SecretString]) -> String {
    let bytes = text.as_bytes();
    let mut covered = vec![false; bytes.len()];
    let mut any = false;
    for secret in secrets {
        let s = secret.expose();
        if s.len() < MIN_SECRET_FRAGMENT {
            continue;
        }
        let windows: std::collections::HashSet<&[u8]> = (0..=s.len() - MIN_SECRET_FRAGMENT)
            .filter(|&i| s.is_char_boundary(i))
            .map(|i| &s.as_bytes()[i..i + MIN_SECRET_FRAGMENT])
            .collect();
        for i in 0..bytes.len().saturating_sub(MIN_SECRET_FRAGMENT - 1) {
            if text.is_char_boundary(i) && windows.contains(&bytes[i..i + MIN_SECRET_FRAGMENT]) {
                covered[i..i + MIN_SECRET_FRAGMENT].fill(true);
                any = true;
            }
        }
    }
    if !any {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if covered[i] {
            let mut end = i;
            while end < bytes.len() && (covered[end] || !text.is_char_boundary(end)) {
                end += 1;
            }
            out.push_str(REDACTED);
            i = end;
        } else {
            let mut end = i;
            while end < bytes.len() && !covered[end] {
                end += 1;
            }
            // A covered run always starts on a char boundary, so this slice is one too.
            out.push_str(&text[i..end]);
            i = end;
        }
    }
    out
}

/// Error text fit for status, Events and logs: scrubbed of `secrets` first, then cut to `max`
/// bytes on a char boundary (so no cut can split a secret that scrubbing would have matched).
pub fn sanitize(text: &str, secrets: &[&SecretString], max: usize) -> String {
    truncate(&scrub(text, secrets), max)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use proptest::prelude::*;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

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
        assert!(!e.json);
        assert_eq!(parse_error_envelope(b""), ErrorEnvelope::default());
    }

    #[test]
    fn secrets_are_scrubbed_from_error_text() {
        let token = SecretString::new("tok-1234567890abcdef");
        let out = scrub("access-token tok-1234567890abcdef is expired", &[&token]);
        assert_eq!(out, "access-token <redacted> is expired");
        // short values are left alone: they would blank out ordinary words
        let short = SecretString::new("abc");
        assert_eq!(scrub("abc abc", &[&short]), "abc abc");
    }

    #[test]
    fn a_secret_straddling_the_cut_leaves_no_prefix_behind() {
        let secret = SecretString::new("SK-0123456789abcdefghijklmnopqrstuvwxyz");
        // The secret starts 10 bytes before the cut (L2: truncate-then-scrub kept its prefix).
        let text = format!("{}{}", "x".repeat(MAX_ERROR_TEXT - 10), secret.expose());
        let out = sanitize(&text, &[&secret], MAX_ERROR_TEXT);
        assert!(!out.contains("SK-0123"), "{out}");
        // An endpoint that cut the secret itself: the echoed prefix goes too.
        let out = sanitize("token SK-0123456789abc", &[&secret], MAX_ERROR_TEXT);
        assert_eq!(out, "token <redacted>");
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
        let t = truncate(&long, MAX_ERROR_TEXT);
        assert!(t.len() <= MAX_ERROR_TEXT + '…'.len_utf8());
        assert!(t.ends_with('…'));
    }

    #[test]
    fn clocks_are_kept_per_host_and_bounded() {
        let c = Clocks::default();
        c.observe("sts.a:443".into(), 5);
        c.observe("sts.a:443".into(), 7);
        c.observe("sts.b:443".into(), -3);
        assert_eq!(
            c.snapshot(),
            vec![("sts.a:443".into(), 7), ("sts.b:443".into(), -3)]
        );
        for i in 0..(Clocks::MAX_HOSTS * 2) {
            c.observe(format!("h{i}:443"), 1);
        }
        assert_eq!(c.snapshot().len(), Clocks::MAX_HOSTS);
    }

    #[test]
    fn clock_skew_is_measured_from_trusted_responses_only() {
        let local = Timestamp::from_second(1_700_000_000).unwrap();
        let date = "Tue, 14 Nov 2023 22:15:20 GMT"; // local + 120 s
        assert_eq!(clock_skew(true, Some(date), local), Some(120));
        assert_eq!(clock_skew(false, Some(date), local), None);
        assert_eq!(clock_skew(true, Some("not a date"), local), None);
        assert_eq!(clock_skew(true, None, local), None);
    }

    #[test]
    fn transport_failures_with_untrusted_hosts_are_generic() {
        assert_eq!(
            generic_network_message("AssumeAgency", Failure::Connect),
            "could not connect to the sts endpoint"
        );
        assert_eq!(
            generic_network_message("GetAgencyCredentials", Failure::Connect),
            "could not connect to the portal endpoint"
        );
        assert_eq!(
            generic_network_message("CreateToken(refresh)", Failure::Connect),
            "could not connect to the oidc endpoint"
        );
        assert_eq!(
            generic_network_message("AssumeAgency", Failure::Timeout),
            "timed out"
        );
        assert_eq!(
            generic_network_message("AssumeAgency", Failure::Transport),
            "TLS or transport failure"
        );
    }

    /// A one-connection HTTP server on loopback that answers with `head` and then `body` (called
    /// repeatedly until it returns `None` or the client goes away).
    async fn serve(head: String, mut body: impl FnMut() -> Option<Vec<u8>> + Send + 'static) -> Url {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 16 * 1024];
            let _ = sock.read(&mut buf).await;
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            while let Some(chunk) = body() {
                if sock.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        Url::parse(&format!("http://{addr}/")).unwrap()
    }

    fn client(trust_loopback: bool) -> HttpClient {
        let entries: &[&str] = if trust_loopback { &["127.0.0.1"] } else { &[] };
        HttpClient::with_policy(Timeouts::default(), EndpointPolicy::new(entries).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn an_endless_body_is_cut_at_64_kib_and_the_call_returns_promptly() {
        let url = serve(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".into(),
            || Some(vec![b' '; 8192]),
        )
        .await;
        let http = client(true);
        let started = Instant::now();
        let e = http
            .send("AssumeAgency", http.request(reqwest::Method::GET, url), &[])
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(e.to_string().contains("exceeded 64 KiB"), "{e}");
        assert_eq!(e.class(), crate::cloud::ErrorClass::InvalidResponse);
    }

    #[tokio::test]
    async fn a_declared_64_mib_body_is_refused_before_it_is_read() {
        let url = serve(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                64 * 1024 * 1024
            ),
            || Some(vec![b'x'; 64 * 1024]),
        )
        .await;
        let http = client(false);
        let started = Instant::now();
        let e = http
            .send("AssumeAgency", http.request(reqwest::Method::GET, url), &[])
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(e.to_string().contains("exceeded 64 KiB"), "{e}");
        assert_eq!(e.class(), crate::cloud::ErrorClass::InvalidResponse);
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_returned_whole() {
        let mut sent = false;
        let url = serve(
            format!("HTTP/1.1 200 OK\r\nContent-Length: {MAX_RESPONSE_BYTES}\r\nConnection: close\r\n\r\n"),
            move || (!std::mem::replace(&mut sent, true)).then(|| vec![b'a'; MAX_RESPONSE_BYTES]),
        )
        .await;
        let http = client(true);
        let body = http
            .send("AssumeAgency", http.request(reqwest::Method::GET, url), &[])
            .await
            .unwrap();
        assert_eq!(body.len(), MAX_RESPONSE_BYTES);
    }

    fn once(body: &'static str) -> impl FnMut() -> Option<Vec<u8>> + Send + 'static {
        let mut sent = false;
        move || (!std::mem::replace(&mut sent, true)).then(|| body.as_bytes().to_vec())
    }

    fn error_head(status: &str, len: usize) -> String {
        format!(
            "HTTP/1.1 {status}\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    }

    #[tokio::test]
    async fn an_untrusted_hosts_non_json_error_body_and_date_are_dropped() {
        let body = "<html>internal admin panel on 10.0.0.7:6443</html>";
        let url = serve(error_head("502 Bad Gateway", body.len()), once(body)).await;
        let http = client(false);
        let e = http
            .send("AssumeAgency", http.request(reqwest::Method::GET, url), &[])
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("admin panel"), "{text}");
        assert!(text.contains("HTTP status 502"), "{text}");
        assert_eq!(e.clock_skew_seconds(), None);
    }

    #[tokio::test]
    async fn a_malformed_success_body_does_not_echo_what_was_sent() {
        let body = r#"{"credentials":"tok-1234567890abcdef"}"#;
        let url = serve(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            once(body),
        )
        .await;
        let http = client(false);
        let token = SecretString::new("tok-1234567890abcdef");
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Shape {
            credentials: u64,
        }
        let e = http
            .send_json::<Shape>("AssumeAgency", http.request(reqwest::Method::GET, url), &[&token])
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("tok-1234"), "{text}");
        assert!(matches!(e, CloudError::Decode { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn an_untrusted_hosts_json_envelope_is_kept_scrubbed() {
        let body = r#"{"error_code":"X.1","error_msg":"bad token tok-1234567890abcdef"}"#;
        let url = serve(error_head("401 Unauthorized", body.len()), once(body)).await;
        let http = client(false);
        let token = SecretString::new("tok-1234567890abcdef");
        let e = http
            .send("AssumeAgency", http.request(reqwest::Method::GET, url), &[&token])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("X.1"));
        assert_eq!(
            e.to_string(),
            "AssumeAgency failed: HTTP 401 X.1: bad token <redacted>"
        );
    }

    #[tokio::test]
    async fn a_trusted_hosts_error_keeps_its_body_and_its_clock_measurement() {
        let body = "<html>bad gateway</html>";
        let url = serve(error_head("502 Bad Gateway", body.len()), once(body)).await;
        let http = client(true);
        let e = http
            .send("AssumeAgency", http.request(reqwest::Method::GET, url), &[])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("bad gateway"), "{e}");
        // the server's clock said 2024-01-01: far behind this host's
        assert!(e.clock_skew_seconds().is_some_and(|s| s < 0), "{e:?}");
    }

    #[tokio::test]
    async fn connection_failures_with_untrusted_hosts_say_nothing_about_the_port() {
        // A port nobody listens on: bind, note the port, close.
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let untrusted = client(false);
        let e = untrusted
            .send(
                "AssumeAgency",
                untrusted.request(reqwest::Method::GET, url.clone()),
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "AssumeAgency failed: could not connect to the sts endpoint"
        );
        let trusted = client(true);
        let e = trusted
            .send("AssumeAgency", trusted.request(reqwest::Method::GET, url), &[])
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("AssumeAgency failed: could not connect: "),
            "{e}"
        );
    }

    /// Filler that cannot contain secret material (secrets are drawn from `[A-Za-z0-9]`).
    fn filler() -> impl Strategy<Value = String> {
        "[ _.,;:!é€<>()-]{0,600}"
    }

    proptest! {
            #![proptest_config(ProptestConfig::with_cases(150))]

            #[test]
            fn no_run_of_8_chars_of_a_secret_survives_scrub_and_truncate(
                secrets in proptest::collection::vec("[A-Za-z0-9]{8,80}", 1..4),
                parts in proptest::collection::vec((filler(), 0usize..4, 0usize..80, 0usize..80), 0..6),
                max in 1usize..1200,
            ) {
                let secrets: Vec<SecretString> = secrets.into_iter().map(SecretString::new).collect();
                let refs: Vec<&SecretString> = secrets.iter().collect();
                // Bodies echo whole secrets and pieces of them (prefixes, suffixes, middles).
                let mut body = String::new();
                for (fill, which, from, len) in &parts {
                    body.push_str(fill);
                    if let Some(s) = secrets.get(*which) {
                        let s = s.expose();
                        let from = (*from).min(s.len());
                        let to = from.saturating_add(*len).min(s.len());
                        body.push_str(if *len % 3 == 0 { s } else { &s[from..to] });
                    }
                }
                let out = sanitize(&body, &refs, max);
                prop_assert!(out.len() <= max + '…'.len_utf8());
                for s in &secrets {
                    let s = s.expose();
                    for i in 0..=s.len() - MIN_SECRET_FRAGMENT {
                        let piece = &s[i..i + MIN_SECRET_FRAGMENT];
                        prop_assert!(!out.contains(piece), "{:?} survived in {:?}", piece, out);
                    }
                }
            }

            #[test]
            fn error_envelopes_never_panic_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
                let e = parse_error_envelope(&body);
                prop_assert!(!e.json || serde_json::from_slice::<Value>(&body).is_ok());
            }

            #[test]
            fn error_envelopes_never_panic_on_arbitrary_json(
    v in json_value()) {
                let body = serde_json::to_vec(&v).unwrap_or_default();
                let e = parse_error_envelope(&body);
                prop_assert!(e.json);
            }

            #[test]
            fn retry_after_never_panics(v in "\\PC{0,40}", n in any::<u64>(), date_secs in any::<i64>()) {
                let _ = parse_retry_after(&v);
                prop_assert_eq!(parse_retry_after(&n.to_string()), Some(Duration::from_secs(n)));
                if let Ok(t) = Timestamp::from_second(date_secs % 253_402_300_799) {
                    let _ = parse_retry_after(&jiff::fmt::rfc2822::to_string(&t.to_zoned(jiff::tz::TimeZone::UTC)).unwrap_or_default());
                }
            }
        }

    /// Arbitrary JSON, nested a few levels, with the envelope's keys likely.
    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("error_code".to_owned()),
            Just("error_msg".to_owned()),
            Just("code".to_owned()),
            Just("message".to_owned()),
            Just("error".to_owned()),
            Just("request_id".to_owned()),
            "\\PC{0,6}"
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
