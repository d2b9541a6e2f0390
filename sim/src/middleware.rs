//! The layer around every OIDC, portal and STS route: names the operation, injects faults
//! (latency with optional jitter, 429 throttling, 500/503 errors), stamps `X-Request-Id`, and feeds the counters and
//! the event log; applies hostile mode (see `hostile.rs`) and records what clients sent. The
//! operations it names are `operation.rs`'s.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, X_REQUEST_ID, code, new_request_id};
use crate::hostile::{Hostile, Received, drip, huge_body};
use crate::lock::lock;
use crate::operation::Operation;
use crate::state::{FaultScope, Knobs, SharedSim};

/// Response extension a handler attaches when it issued credentials for an agency URN.
#[derive(Debug, Clone)]
pub struct Minted(pub String);

/// What the fault knobs decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Throttle { retry_after: u64 },
    Error(StatusCode),
}

/// Decides the fault for an eligible request and advances the accumulators (see [`Knobs`]).
pub fn decide(knobs: &mut Knobs) -> Fault {
    let f = &knobs.faults;
    let (throttle_rate, error_rate, retry_after) = (f.throttle_rate, f.error_rate, f.retry_after_seconds);
    if throttle_rate > 0.0 {
        knobs.throttle_acc += throttle_rate;
        if knobs.throttle_acc >= 1.0 - 1e-9 {
            knobs.throttle_acc -= 1.0;
            return Fault::Throttle { retry_after };
        }
    }
    if error_rate > 0.0 {
        knobs.error_acc += error_rate;
        if knobs.error_acc >= 1.0 - 1e-9 {
            knobs.error_acc -= 1.0;
            knobs.errors_injected += 1;
            let status = if knobs.errors_injected % 2 == 1 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return Fault::Error(status);
        }
    }
    Fault::None
}

fn fault_response(fault: Fault) -> Option<Response> {
    let err = match fault {
        Fault::None => return None,
        Fault::Throttle { retry_after } => ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                code::THROTTLED,
                "The throttling threshold has been reached (injected by the simulator)",
            )
        },
        Fault::Error(StatusCode::SERVICE_UNAVAILABLE) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::UNAVAILABLE,
            "Backend unavailable (injected by the simulator)",
        ),
        Fault::Error(status) => ApiError::new(
            status,
            code::INTERNAL,
            "Internal error (injected by the simulator)",
        ),
    };
    Some(err.into_response())
}

/// Counts a request as in flight until dropped: answered, or abandoned by its client.
struct InFlight {
    sim: SharedSim,
    operation: &'static str,
}

impl InFlight {
    fn enter(sim: &SharedSim, operation: &'static str) -> Self {
        lock(&sim.stats).enter(operation);
        Self {
            sim: sim.clone(),
            operation,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.sim.stats).leave(self.operation);
    }
}

pub async fn track(State(sim): State<SharedSim>, req: Request, next: Next) -> Response {
    let op = Operation::of(req.method(), req.uri().path());
    let _in_flight = InFlight::enter(&sim, op.name());
    let req = match record_received(&sim, op, req).await {
        Ok(req) => req,
        Err(resp) => return resp,
    };
    let (latency_ms, fault, hostile) = {
        let mut knobs = lock(&sim.knobs);
        let eligible = op != Operation::Unknown
            && match knobs.faults.scope {
                FaultScope::Mint => op.is_mint(),
                FaultScope::All => true,
                FaultScope::Swr => op == Operation::CreateSecret,
            };
        let hostile = knobs.hostile.applies_to(op).then(|| knobs.hostile.clone());
        if eligible {
            (knobs.next_latency_ms(), decide(&mut knobs), hostile)
        } else {
            (0, Fault::None, hostile)
        }
    };
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
    // Hostile mode changes real answers only; an injected fault is sent as it is.
    let (mut resp, hostile) = match fault_response(fault) {
        Some(r) => (r, None),
        None => {
            let resp = next.run(req).await;
            match hostile {
                Some(h) => (hostile_body(&h, op, resp).await, Some(h)),
                None => (resp, None),
            }
        }
    };

    let minted = resp.extensions_mut().remove::<Minted>().map(|m| m.0);
    if !resp.headers().contains_key(X_REQUEST_ID)
        && let Ok(v) = HeaderValue::from_str(&new_request_id())
    {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    // Huawei Cloud's clock, as a client sees it (the server would add the host's otherwise); a
    // hostile `dateOffsetSeconds` moves this header only.
    let offset = hostile.and_then(|h| h.date_offset_seconds).unwrap_or(0);
    let date = sim
        .now()
        .checked_add(jiff::SignedDuration::from_secs(offset))
        .unwrap_or_else(|_| sim.now());
    if let Ok(v) = HeaderValue::from_str(&http_date(date)) {
        resp.headers_mut().insert(axum::http::header::DATE, v);
    }
    let status = resp.status().as_u16();
    tracing::debug!(operation = op.name(), status, "request");
    lock(&sim.stats).record(op.name(), status, minted.filter(|_| status == 200));
    resp
}

/// Request bodies read for recording are capped like axum's own `Bytes` extractor.
const MAX_REQUEST_BODY: usize = 2 * 1024 * 1024;

/// Records the tokens and secrets a request carries (see [`Received`]) and hands the request on
/// unchanged (its body re-assembled when it had to be read).
async fn record_received(sim: &SharedSim, op: Operation, req: Request) -> Result<Request, Response> {
    if Received::wants_access_token(op)
        && let Some(token) = req.headers().get("access-token").and_then(|v| v.to_str().ok())
    {
        lock(&sim.received).record_access_token(token);
    }
    if !Received::wants_body(op) {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_REQUEST_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::INVALID_REQUEST,
            "request body too large",
        )
        .into_response()
    })?;
    lock(&sim.received).record_body(op, &bytes);
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The handler's answer as hostile mode sends it: a huge 200 (streamed), or the rewritten body
/// (malformed, expiry override), dripped when `slowBodySeconds` is set.
async fn hostile_body(h: &Hostile, op: Operation, resp: Response) -> Response {
    if !h.touches_body() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    // SWR's expiry is a header: a string replaces it, anything else removes it.
    if let (Operation::CreateSecret, Some(value)) = (op, &h.expiration) {
        parts.headers.remove("x-swr-expireat");
        if let Some(v) = value.as_str().and_then(|s| HeaderValue::from_str(s).ok()) {
            parts.headers.insert("x-swr-expireat", v);
        }
    }
    if let Some(total) = h.huge_body_bytes {
        parts.status = StatusCode::OK;
        parts
            .headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Response::from_parts(parts, Body::from_stream(huge_body(total)));
    }
    // The handlers' own answers are small JSON documents.
    let bytes = axum::body::to_bytes(body, MAX_REQUEST_BODY)
        .await
        .unwrap_or_default();
    let bytes = h.rewrite(op, bytes);
    let body = match h.slow_body_seconds {
        Some(seconds) => Body::from_stream(drip(bytes, seconds)),
        None => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// RFC 9110 `IMF-fixdate`: `Tue, 24 Nov 2026 15:53:37 GMT`.
pub fn http_date(t: jiff::Timestamp) -> String {
    t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Faults;

    #[test]
    fn http_dates_are_imf_fixdate() {
        let t: jiff::Timestamp = "2026-11-24T15:53:37.9Z".parse().unwrap();
        assert_eq!(http_date(t), "Tue, 24 Nov 2026 15:53:37 GMT");
    }

    fn knobs(error_rate: f64, throttle_rate: f64) -> Knobs {
        Knobs {
            faults: Faults {
                error_rate,
                throttle_rate,
                ..Faults::default()
            },
            ..Knobs::default()
        }
    }

    #[test]
    fn rates_are_exact_over_a_window() {
        let mut k = knobs(0.25, 0.0);
        let faults: Vec<Fault> = (0..8).map(|_| decide(&mut k)).collect();
        let errors: Vec<usize> = faults
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f, Fault::Error(_)))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(errors, vec![3, 7]);
        assert_eq!(faults[3], Fault::Error(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(faults[7], Fault::Error(StatusCode::SERVICE_UNAVAILABLE));

        let mut k = knobs(0.0, 1.0);
        assert!((0..5).all(|_| decide(&mut k) == Fault::Throttle { retry_after: 1 }));
        let mut k = knobs(0.0, 0.0);
        assert!((0..5).all(|_| decide(&mut k) == Fault::None));
        let mut k = knobs(0.1, 0.0);
        assert_eq!((0..100).filter(|_| decide(&mut k) != Fault::None).count(), 10);
    }

    #[test]
    fn latency_jitter_varies_within_its_bounds_and_repeats_after_a_reset() {
        let mut k = Knobs {
            faults: Faults {
                latency_ms: 100,
                latency_jitter_ms: 50,
                ..Faults::default()
            },
            ..Knobs::default()
        };
        let first: Vec<u64> = (0..1000).map(|_| k.next_latency_ms()).collect();
        assert!(first.iter().all(|l| (100..=150).contains(l)), "{first:?}");
        // Spread over the whole range, not stuck at one value.
        let distinct: std::collections::BTreeSet<u64> = first.iter().copied().collect();
        assert!(distinct.len() > 40, "only {} distinct latencies", distinct.len());
        assert!(distinct.contains(&100) && distinct.contains(&150), "{distinct:?}");
        let mean = first.iter().sum::<u64>() as f64 / first.len() as f64;
        assert!((120.0..130.0).contains(&mean), "mean {mean}");
        // The sequence restarts where `PUT /control/faults` puts it.
        k.latency_seq = 0;
        let again: Vec<u64> = (0..1000).map(|_| k.next_latency_ms()).collect();
        assert_eq!(first, again);

        // No jitter: exactly latencyMs; a huge base saturates instead of wrapping.
        k.faults.latency_jitter_ms = 0;
        assert!((0..10).all(|_| k.next_latency_ms() == 100));
        k.faults.latency_ms = u64::MAX;
        k.faults.latency_jitter_ms = 10;
        assert_eq!(k.next_latency_ms(), u64::MAX);
    }
}
