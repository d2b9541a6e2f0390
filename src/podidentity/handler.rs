//! The HTTP side of the credentials endpoint: `POST /v1/credentials/{namespace}/{name}`, with the
//! status codes and JSON bodies of the contract (docs/api.md, "Pod identity").

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Request, State, rejection::PathRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::post,
};
use jiff::Timestamp;

use super::{
    auth::{Authenticator, Refusal, token_key},
    limits::Keyed,
    metrics::EndpointMetrics,
    store::{CredentialStore, Decision},
    wire::{Credentials, CredentialsBody, ErrorBody, expiration},
};

/// Largest request body read (Huawei's SDKs send `{}`).
pub const MAX_BODY: usize = 1024;
/// Longest token accepted (a projected ServiceAccount token is about 1 KiB).
pub const MAX_TOKEN: usize = 8 * 1024;

/// Everything a request needs.
pub struct Endpoint {
    pub store: CredentialStore,
    pub auth: Authenticator,
    pub per_token: Keyed,
    pub metrics: Arc<EndpointMetrics>,
}

/// The endpoint's routes; anything else is `404`, another method `405`, both with a JSON body.
pub fn router(endpoint: Arc<Endpoint>) -> Router {
    let credentials = post(credentials).fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED) });
    Router::new()
        .route("/v1/credentials/{namespace}/{name}", credentials)
        .fallback(|| async { error(StatusCode::NOT_FOUND) })
        .layer(middleware::from_fn_with_state(endpoint.clone(), record))
        .with_state(endpoint)
}

async fn record(State(ep): State<Arc<Endpoint>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let resp = next.run(req).await;
    ep.metrics
        .request(resp.status().as_u16(), started.elapsed().as_secs_f64());
    resp
}

async fn credentials(
    State(ep): State<Arc<Endpoint>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(Path((namespace, name))) = path else {
        return error(StatusCode::BAD_REQUEST);
    };
    if !dns_label(&namespace) || !dns_subdomain(&name) {
        return error(StatusCode::BAD_REQUEST);
    }
    if axum::body::to_bytes(body, MAX_BODY).await.is_err() {
        return error(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let Some(token) = token(&headers) else {
        return error(StatusCode::UNAUTHORIZED);
    };
    let key = token_key(token);
    let identity = match ep.auth.authenticate(&key, token).await {
        Ok(id) => id,
        Err(Refusal::Unauthenticated) => return error(StatusCode::UNAUTHORIZED),
        Err(Refusal::Throttled) => return error(StatusCode::TOO_MANY_REQUESTS),
        Err(Refusal::Unavailable) => return error(StatusCode::SERVICE_UNAVAILABLE),
    };
    // Counted per authenticated token only: garbage never takes a place in the map.
    if !ep.per_token.try_take(&key) {
        return error(StatusCode::TOO_MANY_REQUESTS);
    }
    if identity.namespace != namespace {
        return error(StatusCode::FORBIDDEN);
    }
    match ep
        .store
        .decide(&namespace, &name, &identity.service_account, Timestamp::now())
    {
        Decision::Forbidden => error(StatusCode::FORBIDDEN),
        Decision::Unavailable => error(StatusCode::SERVICE_UNAVAILABLE),
        Decision::Serve(held) => {
            let body = CredentialsBody {
                credentials: Credentials {
                    access_key_id: &held.access_key_id,
                    secret_access_key: &held.secret_access_key,
                    security_token: &held.security_token,
                    expiration: expiration(held.expires_at),
                },
            };
            let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
            (StatusCode::OK, no_store, Json(body)).into_response()
        }
    }
}

/// The token of `Authorization: <token>` or `Authorization: Bearer <token>`.
fn token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let token = match value.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ if value.eq_ignore_ascii_case("bearer") => "",
        _ => value,
    };
    (!token.is_empty() && token.len() <= MAX_TOKEN).then_some(token)
}

/// The JSON error answer of `status`. Messages are fixed: nothing about other objects or why a
/// token was refused.
pub fn error(status: StatusCode) -> Response {
    let (error, message) = match status {
        StatusCode::BAD_REQUEST => (
            "BadRequest",
            "the namespace or name is not a valid Kubernetes name",
        ),
        StatusCode::UNAUTHORIZED => (
            "Unauthorized",
            "a valid ServiceAccount token for this endpoint's audience is required",
        ),
        StatusCode::FORBIDDEN => ("Forbidden", "this ServiceAccount may not fetch this credential"),
        StatusCode::NOT_FOUND => ("NotFound", "use POST /v1/credentials/{namespace}/{name}"),
        StatusCode::METHOD_NOT_ALLOWED => ("MethodNotAllowed", "use POST"),
        StatusCode::PAYLOAD_TOO_LARGE => ("PayloadTooLarge", "the body must be at most 1 KiB"),
        StatusCode::TOO_MANY_REQUESTS => ("TooManyRequests", "too many requests; retry later"),
        _ => ("Unavailable", "no usable credential is held yet; retry later"),
    };
    let mut resp = (status, Json(ErrorBody { error, message })).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_taken_with_or_without_bearer() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("eyJ.a.b"));
        assert_eq!(token(&h), Some("eyJ.a.b"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  eyJ.a.b "),
        );
        assert_eq!(token(&h), Some("eyJ.a.b"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer "));
        assert_eq!(token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&"x".repeat(MAX_TOKEN + 1)).unwrap(),
        );
        assert_eq!(token(&h), None);
        assert_eq!(token(&HeaderMap::new()), None);
    }

    #[test]
    fn names_are_kubernetes_names() {
        assert!(dns_label("team-a") && dns_subdomain("billing.v2"));
        for bad in ["", "-a", "a-", "A", "a_b", "a/b", &"a".repeat(64)] {
            assert!(!dns_label(bad), "{bad}");
        }
        assert!(!dns_subdomain("a..b") && !dns_subdomain(&"a.".repeat(127)));
    }

    #[tokio::test]
    async fn a_forbidden_answer_says_nothing_more_than_forbidden() {
        let resp = error(StatusCode::FORBIDDEN);
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "Forbidden");
        assert_eq!(v.as_object().unwrap().len(), 2);
    }
}
