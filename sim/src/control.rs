//! The unauthenticated test-harness API under `/control/` (health, counters, events, fault and
//! lifetime knobs, device approval, session expiry) and the `/device` page.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::hostile::{Hostile, Received};
use crate::lock::lock;
use crate::state::{DeviceStatus, FaultScope, Faults, SharedSim};

/// Control errors are plain `{"error": "..."}`; they are for test code, not for SDKs.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// An empty body counts as `{}`.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}" as &[u8]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("invalid body: {e}"))
}

pub async fn health() -> Json<Value> {
    Json(json!({"ok": true}))
}

pub async fn stats(State(sim): State<SharedSim>) -> Json<Value> {
    let active = sim.active_temporary_keys(sim.now());
    let s = lock(&sim.stats);
    let requests: serde_json::Map<String, Value> = s
        .requests
        .iter()
        .map(|(code, n)| (code.to_string(), json!(n)))
        .collect();
    let discovery: u64 = crate::operation::Operation::DISCOVERY
        .iter()
        .filter_map(|op| s.by_operation.get(op.name()))
        .sum();
    Json(json!({
        "discoveryCalls": discovery,
        "mintsTotal": s.mints_total,
        "mints": s.mints,
        "requests": requests,
        "requestsByOperation": s.by_operation,
        "inFlightByOperation": s.in_flight,
        "activeTemporaryKeys": active,
    }))
}

/// Every STS session issued (newest last), with its source identity and session tags.
pub async fn sessions(State(sim): State<SharedSim>) -> Json<Value> {
    Json(json!(lock(&sim.stats).sessions))
}

pub async fn reset_stats(State(sim): State<SharedSim>) -> Json<Value> {
    lock(&sim.stats).reset_counters();
    Json(json!({"ok": true}))
}

#[derive(Deserialize)]
pub struct Since {
    since: Option<u64>,
}

pub async fn events(State(sim): State<SharedSim>, Query(q): Query<Since>) -> Json<Value> {
    let since = q.since.unwrap_or(0);
    let s = lock(&sim.stats);
    let list: Vec<_> = s.events.iter().filter(|e| e.seq > since).cloned().collect();
    Json(json!(list))
}

pub async fn get_faults(State(sim): State<SharedSim>) -> Json<Faults> {
    Json(lock(&sim.knobs).faults.clone())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultsPatch {
    latency_ms: Option<u64>,
    latency_jitter_ms: Option<u64>,
    error_rate: Option<f64>,
    throttle_rate: Option<f64>,
    retry_after_seconds: Option<u64>,
    scope: Option<FaultScope>,
    clock_offset_seconds: Option<i64>,
}

pub async fn put_faults(State(sim): State<SharedSim>, body: axum::body::Bytes) -> Response {
    let patch: FaultsPatch = match parse(&body) {
        Ok(p) => p,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    for (name, rate) in [
        ("errorRate", patch.error_rate),
        ("throttleRate", patch.throttle_rate),
    ] {
        if let Some(r) = rate
            && !(0.0..=1.0).contains(&r)
        {
            return error(StatusCode::BAD_REQUEST, format!("{name} must be within 0..1"));
        }
    }
    if patch.latency_ms.is_some_and(|l| l > 600_000) {
        return error(StatusCode::BAD_REQUEST, "latencyMs must be at most 600000");
    }
    if patch.latency_jitter_ms.is_some_and(|l| l > 600_000) {
        return error(StatusCode::BAD_REQUEST, "latencyJitterMs must be at most 600000");
    }
    if patch.clock_offset_seconds.is_some_and(|o| o.abs() > 86_400) {
        return error(
            StatusCode::BAD_REQUEST,
            "clockOffsetSeconds must be within ±86400",
        );
    }
    let mut knobs = lock(&sim.knobs);
    let f = &mut knobs.faults;
    if let Some(v) = patch.latency_ms {
        f.latency_ms = v;
    }
    if let Some(v) = patch.latency_jitter_ms {
        f.latency_jitter_ms = v;
    }
    if let Some(v) = patch.error_rate {
        f.error_rate = v;
    }
    if let Some(v) = patch.throttle_rate {
        f.throttle_rate = v;
    }
    if let Some(v) = patch.retry_after_seconds {
        f.retry_after_seconds = v;
    }
    if let Some(v) = patch.scope {
        f.scope = v;
    }
    if let Some(v) = patch.clock_offset_seconds {
        f.clock_offset_seconds = v;
    }
    let current = f.clone();
    // A new setting starts a fresh, predictable sequence.
    knobs.throttle_acc = 0.0;
    knobs.error_acc = 0.0;
    knobs.errors_injected = 0;
    knobs.latency_seq = 0;
    Json(current).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lifetime {
    credential_seconds: Option<u64>,
}

pub async fn get_lifetime(State(sim): State<SharedSim>) -> Json<Value> {
    Json(json!({"credentialSeconds": lock(&sim.knobs).credential_seconds}))
}

pub async fn put_lifetime(State(sim): State<SharedSim>, body: axum::body::Bytes) -> Response {
    let l: Lifetime = match parse(&body) {
        Ok(l) => l,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    if l.credential_seconds == Some(0) {
        return error(
            StatusCode::BAD_REQUEST,
            "credentialSeconds must be positive (or null to clear)",
        );
    }
    lock(&sim.knobs).credential_seconds = l.credential_seconds;
    Json(json!({"credentialSeconds": l.credential_seconds})).into_response()
}

pub async fn get_hostile(State(sim): State<SharedSim>) -> Json<Hostile> {
    Json(lock(&sim.knobs).hostile.clone())
}

/// Replaces the whole hostile setting (`{}` turns hostile mode off).
pub async fn put_hostile(State(sim): State<SharedSim>, body: axum::body::Bytes) -> Response {
    let hostile: Hostile = match parse(&body) {
        Ok(h) => h,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    if let Err(m) = hostile.validate() {
        return error(StatusCode::BAD_REQUEST, m);
    }
    lock(&sim.knobs).hostile = hostile.clone();
    Json(hostile).into_response()
}

pub async fn received(State(sim): State<SharedSim>) -> Json<Received> {
    Json(lock(&sim.received).clone())
}

pub async fn clear_received(State(sim): State<SharedSim>) -> Json<Value> {
    *lock(&sim.received) = Received::default();
    Json(json!({"ok": true}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Decision {
    user_code: String,
    user: Option<String>,
}

pub async fn approve(State(sim): State<SharedSim>, body: axum::body::Bytes) -> Response {
    decide(&sim, &body, true)
}

pub async fn deny(State(sim): State<SharedSim>, body: axum::body::Bytes) -> Response {
    decide(&sim, &body, false)
}

fn decide(sim: &SharedSim, body: &[u8], approve: bool) -> Response {
    let d: Decision = match parse(body) {
        Ok(d) => d,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let new_status = if approve {
        let Some(user) = d.user else {
            return error(
                StatusCode::BAD_REQUEST,
                "approve needs \"user\" (an identityCenter user name)",
            );
        };
        if !sim.catalog.ic_users.contains_key(&user) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown identityCenter user {user}"),
            );
        }
        DeviceStatus::Approved(user)
    } else {
        DeviceStatus::Denied
    };
    let now = sim.now();
    let mut ic = lock(&sim.ic);
    let Some(device_code) = ic.user_codes.get(&d.user_code).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown user code {}", d.user_code),
        );
    };
    let Some(device) = ic.devices.get_mut(&device_code) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown user code {}", d.user_code),
        );
    };
    if device.expires_at <= now {
        return error(StatusCode::GONE, format!("user code {} has expired", d.user_code));
    }
    if device.status != DeviceStatus::Pending {
        return error(
            StatusCode::CONFLICT,
            format!("user code {} was already decided", d.user_code),
        );
    }
    device.status = new_status;
    Json(json!({"ok": true})).into_response()
}

pub async fn pending(State(sim): State<SharedSim>) -> Json<Value> {
    let now = sim.now();
    let ic = lock(&sim.ic);
    let mut list: Vec<(Timestamp, Value)> = ic
        .devices
        .values()
        .filter(|d| d.status == DeviceStatus::Pending && d.expires_at > now)
        .map(|d| {
            (
                d.expires_at,
                json!({"userCode": d.user_code, "startUrl": d.start_url}),
            )
        })
        .collect();
    // Oldest first, so "approve the first pending code" is deterministic.
    list.sort_by_key(|(at, _)| *at);
    Json(Value::Array(list.into_iter().map(|(_, v)| v).collect()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expire {
    user: Option<String>,
    #[serde(default)]
    keep_refresh_tokens: bool,
}

pub async fn expire_sessions(State(sim): State<SharedSim>, body: axum::body::Bytes) -> Response {
    let e: Expire = match parse(&body) {
        Ok(e) => e,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let now = sim.now();
    let mut ic = lock(&sim.ic);
    let matches = |user: &str| e.user.as_deref().is_none_or(|u| u == user);
    let mut expired = 0;
    for s in ic
        .sessions
        .values_mut()
        .filter(|s| matches(&s.user) && s.expires_at > now)
    {
        s.expires_at = now;
        expired += 1;
    }
    if !e.keep_refresh_tokens {
        ic.refresh.retain(|_, g| !matches(&g.user));
    }
    Json(json!({"expired": expired})).into_response()
}

pub async fn device_page() -> Html<&'static str> {
    Html(
        "<!doctype html><html><head><title>tcred Huawei Cloud simulator</title></head><body>\
         <h1>Device authorization</h1><p>This is a simulator. Approve a user code with \
         <code>POST /control/device/approve {\"userCode\": \"ABCD-EFGH\", \"user\": \"alice\"}</code>; \
         list pending codes with <code>GET /control/device/pending</code>.</p></body></html>",
    )
}
