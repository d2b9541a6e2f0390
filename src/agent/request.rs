//! What the agent accepts from a pod: the path `/v1/credentials/{namespace}/{name}`, `POST`, a
//! small body and a token in `Authorization`. Everything else is refused here, before any
//! upstream call, with the same JSON error shape the controller's endpoint uses.

use axum::{
    Json,
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::sensitive::SecretString;

/// The path prefix of the credentials endpoint.
pub const PREFIX: &str = "/v1/credentials/";
/// Largest request body accepted (the SDKs send `{}`).
pub const MAX_BODY_BYTES: usize = 1024;
/// Longest `Authorization` value accepted. Projected ServiceAccount tokens are 1–2 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A request the agent refuses, with the status it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    BadPath,
    Method,
    TooLarge,
    NoToken,
    BadToken,
    Busy,
    Unavailable,
    UpstreamTimeout,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadPath | Self::BadToken => StatusCode::BAD_REQUEST,
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoToken => StatusCode::UNAUTHORIZED,
            Self::Busy => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn body(self) -> ErrorBody {
        let (error, message) = match self {
            Self::NotFound => ("NotFound", "no such endpoint"),
            Self::BadPath => (
                "BadRequest",
                "the path must be /v1/credentials/<namespace>/<name>",
            ),
            Self::Method => ("MethodNotAllowed", "only POST is allowed"),
            Self::TooLarge => ("PayloadTooLarge", "the request body is too large"),
            Self::NoToken => ("Unauthorized", "no token in the Authorization header"),
            Self::BadToken => ("BadRequest", "the Authorization header is malformed or too large"),
            Self::Busy => ("TooManyRequests", "the agent is busy; retry"),
            Self::Unavailable => ("Unavailable", "the credentials service cannot be reached"),
            Self::UpstreamTimeout => ("Unavailable", "the credentials service did not answer in time"),
        };
        ErrorBody { error, message }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    message: &'static str,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), Json(self.body())).into_response();
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        if self == Self::Method {
            resp.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        }
        resp
    }
}

/// The credential a pod asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub name: String,
}

impl Target {
    /// The path forwarded upstream, rebuilt from the validated parts (never the raw request path).
    pub fn path(&self) -> String {
        format!("{PREFIX}{}/{}", self.namespace, self.name)
    }
}

/// Parses the request path. Paths outside the prefix are 404; malformed names under it are 400.
pub fn parse_path(path: &str, query: Option<&str>) -> Result<Target, Refusal> {
    let rest = path.strip_prefix(PREFIX).ok_or(Refusal::NotFound)?;
    if query.is_some() {
        return Err(Refusal::BadPath);
    }
    let mut parts = rest.split('/');
    let (Some(namespace), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Refusal::BadPath);
    };
    if !is_dns_label(namespace) || !is_dns_subdomain(name) {
        return Err(Refusal::BadPath);
    }
    Ok(Target {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// Checks the method, the declared body size and the token; returns the token.
pub fn check(method: &Method, headers: &HeaderMap) -> Result<SecretString, Refusal> {
    if method != Method::POST {
        return Err(Refusal::Method);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(Refusal::TooLarge);
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(if headers.contains_key(header::AUTHORIZATION) {
            Refusal::BadToken
        } else {
            Refusal::NoToken
        });
    };
    if value.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::BadToken);
    }
    let token = value.to_str().map_err(|_| Refusal::BadToken)?.trim();
    if token.is_empty() {
        return Err(Refusal::NoToken);
    }
    Ok(SecretString::new(token))
}

/// RFC 1123 label: a namespace name.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: an object name.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn parses_a_credential_path() {
        let t = parse_path("/v1/credentials/team-a/app.creds", None).unwrap();
        assert_eq!(t.namespace, "team-a");
        assert_eq!(t.name, "app.creds");
        assert_eq!(t.path(), "/v1/credentials/team-a/app.creds");
    }

    #[test]
    fn refuses_paths_outside_or_malformed() {
        assert_eq!(parse_path("/", None), Err(Refusal::NotFound));
        assert_eq!(parse_path("/v1/credentials", None), Err(Refusal::NotFound));
        assert_eq!(parse_path("/v2/credentials/a/b", None), Err(Refusal::NotFound));
        for bad in [
            "/v1/credentials/a",
            "/v1/credentials/a/",
            "/v1/credentials//b",
            "/v1/credentials/a/b/c",
            "/v1/credentials/A/b",
            "/v1/credentials/a/B",
            "/v1/credentials/../b",
            "/v1/credentials/a/..",
            "/v1/credentials/a/%2e%2e",
            "/v1/credentials/a.b/c",
            "/v1/credentials/-a/c",
        ] {
            assert_eq!(parse_path(bad, None), Err(Refusal::BadPath), "{bad}");
        }
        let long = format!("/v1/credentials/{}/b", "a".repeat(64));
        assert_eq!(parse_path(&long, None), Err(Refusal::BadPath));
        assert_eq!(
            parse_path("/v1/credentials/a/b", Some("x=1")),
            Err(Refusal::BadPath)
        );
    }

    #[test]
    fn only_post_with_one_small_token() {
        let ok = headers(&[("authorization", "  eyJ.tok.en  ")]);
        assert_eq!(check(&Method::POST, &ok).unwrap().expose(), "eyJ.tok.en");
        assert_eq!(check(&Method::GET, &ok), Err(Refusal::Method));
        assert_eq!(check(&Method::POST, &HeaderMap::new()), Err(Refusal::NoToken));
        assert_eq!(
            check(&Method::POST, &headers(&[("authorization", " ")])),
            Err(Refusal::NoToken)
        );
        let two = headers(&[("authorization", "a"), ("authorization", "b")]);
        assert_eq!(check(&Method::POST, &two), Err(Refusal::BadToken));
        let huge = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            check(&Method::POST, &headers(&[("authorization", &huge)])),
            Err(Refusal::BadToken)
        );
        let big = headers(&[("authorization", "t"), ("content-length", "1025")]);
        assert_eq!(check(&Method::POST, &big), Err(Refusal::TooLarge));
    }

    #[test]
    fn refusals_are_json_without_store() {
        let r = Refusal::Method.into_response();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(r.headers()[header::ALLOW], "POST");
    }
}
