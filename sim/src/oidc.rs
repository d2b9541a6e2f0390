//! The Identity Center OIDC service (docs/simulator.md#identity-center-oidc): RegisterClient,
//! StartDeviceAuthorization and CreateToken with the device-code grant (RFC 8628 polling errors)
//! and, when enabled, a rotating refresh-token grant.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiError, code};
use crate::lock::lock;
use crate::state::{
    Device, DeviceStatus, IcState, OidcClient, RefreshGrant, Session, SharedSim, constant_time_eq,
    new_bearer_token, new_user_code, random_lower_alnum,
};
use crate::sts::parse_body;
use tcred::sensitive::SecretString;

pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
/// RFC 8628 §3.5: a client told to slow down adds 5 seconds to its interval.
const SLOW_DOWN_STEP: u64 = 5;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code::INVALID_REQUEST, message)
}

fn secs(n: u64) -> SignedDuration {
    SignedDuration::from_secs(i64::try_from(n).unwrap_or(i64::MAX / 2))
}

/// `http://<Host>` as the client addressed us, for the URLs we hand back.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

#[derive(Deserialize)]
struct RegisterBody {
    client_name: Option<String>,
    client_type: Option<String>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
}

pub async fn register_client(
    State(sim): State<SharedSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let metadata = |m: String| ApiError::bad_request(code::INVALID_CLIENT_METADATA, m);
    let req: RegisterBody = parse_body(&body, metadata)?;
    let name = req.client_name.unwrap_or_default();
    if !(1..=1024).contains(&name.chars().count()) {
        return Err(metadata("client_name must be 1..1024 characters".into()));
    }
    if req.client_type.as_deref() != Some("public") {
        return Err(metadata("client_type must be \"public\"".into()));
    }
    if req.token_endpoint_auth_method.as_deref() != Some("client_secret_post") {
        return Err(metadata(
            "token_endpoint_auth_method must be \"client_secret_post\"".into(),
        ));
    }
    let grants = req.grant_types.unwrap_or_default();
    let refresh_ok = sim.catalog.ic.issue_refresh_tokens;
    if grants.is_empty()
        || !grants.iter().all(|g| {
            g == GRANT_DEVICE_CODE
                || g == GRANT_AUTHORIZATION_CODE
                || (refresh_ok && g == GRANT_REFRESH_TOKEN)
        })
    {
        return Err(metadata(format!(
            "grant_types must be a non-empty subset of [{GRANT_DEVICE_CODE}, {GRANT_AUTHORIZATION_CODE}]"
        )));
    }
    if req.response_types.as_deref() != Some(&["code".to_owned()][..]) {
        return Err(metadata("response_types must be [\"code\"]".into()));
    }
    let scopes = req.scopes.unwrap_or_default();
    if let Some(bad) = scopes.iter().find(|s| {
        s.len() > 64
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }) {
        return Err(metadata(format!(
            "scope {bad:?} does not match ^[a-zA-Z0-9_-]{{0,64}}$"
        )));
    }

    let now = sim.now();
    let client_id = format!("client-{}", random_lower_alnum(24));
    let secret = SecretString::new(new_bearer_token("cs"));
    let expires_at = now + secs(sim.catalog.ic.client_secret_seconds);
    lock(&sim.ic).clients.insert(
        client_id.clone(),
        OidcClient {
            secret: secret.clone(),
            secret_expires_at: expires_at,
        },
    );
    let base = base_url(&headers);
    Ok(Json(json!({"client_info": {
        "authorization_endpoint": format!("{base}/v1/authorize"),
        "token_endpoint": format!("{base}/v1/tokens"),
        "client_id": client_id,
        "client_secret": secret.expose(),
        "client_id_issued_at": now.as_second(),
        "client_secret_expires_at": expires_at.as_second(),
        "scopes": scopes,
    }}))
    .into_response())
}

/// Checks client credentials sent in the body (`client_secret_post`).
fn authenticate_client(
    ic: &IcState,
    client_id: Option<&str>,
    client_secret: Option<&str>,
    now: Timestamp,
) -> Result<(), ApiError> {
    let (Some(id), Some(secret)) = (client_id, client_secret) else {
        return Err(invalid("client_id and client_secret are required"));
    };
    let unauthorized = |m: &str| ApiError::unauthorized(code::INVALID_CLIENT, m);
    let client = ic
        .clients
        .get(id)
        .ok_or_else(|| unauthorized("unknown client_id"))?;
    if !constant_time_eq(client.secret.expose().as_bytes(), secret.as_bytes()) {
        return Err(unauthorized("client_secret does not match client_id"));
    }
    if client.secret_expires_at <= now {
        return Err(unauthorized(
            "the client secret has expired; register the client again",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct StartBody {
    client_id: Option<String>,
    client_secret: Option<String>,
    start_url: Option<String>,
}

pub async fn start_device_authorization(
    State(sim): State<SharedSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: StartBody = parse_body(&body, invalid)?;
    let now = sim.now();
    let start_url = req.start_url.unwrap_or_default();
    let settings = &sim.catalog.ic;
    let device_code = random_lower_alnum(40);
    let user_code = {
        let mut ic = lock(&sim.ic);
        authenticate_client(&ic, req.client_id.as_deref(), req.client_secret.as_deref(), now)?;
        if !settings.start_urls.contains(&start_url) {
            return Err(invalid(format!(
                "start_url {start_url:?} is not the user portal URL of this Identity Center instance"
            )));
        }
        let mut user_code = new_user_code();
        while ic.user_codes.contains_key(&user_code) {
            user_code = new_user_code();
        }
        ic.user_codes.insert(user_code.clone(), device_code.clone());
        ic.devices.insert(
            device_code.clone(),
            Device {
                client_id: req.client_id.unwrap_or_default(),
                user_code: user_code.clone(),
                start_url,
                expires_at: now + secs(settings.device_code_seconds),
                interval: settings.poll_interval_seconds,
                last_poll: None,
                status: DeviceStatus::Pending,
            },
        );
        user_code
    };
    let verification_uri = format!("{}/device", base_url(&headers));
    Ok(Json(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": format!("{verification_uri}?user_code={user_code}"),
        "expires_in": settings.device_code_seconds,
        "interval": settings.poll_interval_seconds,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct TokenBody {
    client_id: Option<String>,
    client_secret: Option<String>,
    grant_type: Option<String>,
    device_code: Option<String>,
    refresh_token: Option<String>,
}

pub async fn create_token(State(sim): State<SharedSim>, body: Bytes) -> Result<Response, ApiError> {
    let req: TokenBody = parse_body(&body, invalid)?;
    let now = sim.now();
    let settings = &sim.catalog.ic;
    let mut ic = lock(&sim.ic);
    authenticate_client(&ic, req.client_id.as_deref(), req.client_secret.as_deref(), now)?;
    let client_id = req.client_id.unwrap_or_default();

    let user = match req.grant_type.as_deref() {
        Some(GRANT_DEVICE_CODE) => {
            let dc = req
                .device_code
                .ok_or_else(|| invalid("device_code is required"))?;
            poll_device(&mut ic, &dc, &client_id, now)?
        }
        Some(GRANT_REFRESH_TOKEN) if settings.issue_refresh_tokens => {
            let rt = req
                .refresh_token
                .ok_or_else(|| invalid("refresh_token is required"))?;
            let grant_ok = ic.refresh.get(&rt).is_some_and(|g| g.client_id == client_id);
            if !grant_ok {
                return Err(ApiError::bad_request(
                    code::INVALID_GRANT,
                    "the refresh token is unknown, was already used, or belongs to another client",
                ));
            }
            // Rotation: a refresh token is good for exactly one exchange.
            ic.refresh.remove(&rt).map(|g| g.user).unwrap_or_default()
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                code::UNSUPPORTED_GRANT_TYPE,
                format!("grant_type {other:?} is not supported by this simulator"),
            ));
        }
        None => return Err(invalid("grant_type is required")),
    };

    let access_token = new_bearer_token("ic");
    ic.sessions.insert(
        access_token.clone(),
        Session {
            user: user.clone(),
            expires_at: now + secs(settings.access_token_seconds),
        },
    );
    let refresh_token = settings.issue_refresh_tokens.then(|| {
        let rt = random_lower_alnum(16);
        ic.refresh.insert(
            rt.clone(),
            RefreshGrant {
                client_id: client_id.clone(),
                user,
            },
        );
        rt
    });
    drop(ic);
    Ok(Json(json!({"token_info": {
        "access_token": access_token,
        "expires_in": settings.access_token_seconds,
        "id_token": new_bearer_token("id"),
        "refresh_token": refresh_token,
        "token_type": "Bearer",
    }}))
    .into_response())
}

/// One device-code poll; returns the approving user when the code can be exchanged.
fn poll_device(
    ic: &mut IcState,
    device_code: &str,
    client_id: &str,
    now: Timestamp,
) -> Result<String, ApiError> {
    let grant_err = |c: &'static str, m: &str| ApiError::bad_request(c, m);
    let device = ic
        .devices
        .get_mut(device_code)
        .filter(|d| d.client_id == client_id)
        .ok_or_else(|| grant_err(code::INVALID_GRANT, "unknown device_code for this client"))?;
    if device.expires_at <= now {
        return Err(grant_err(code::EXPIRED_TOKEN, "the device code has expired"));
    }
    let too_fast = device
        .last_poll
        .is_some_and(|last| now.duration_since(last) < secs(device.interval));
    device.last_poll = Some(now);
    if too_fast {
        device.interval += SLOW_DOWN_STEP;
        return Err(grant_err(
            code::SLOW_DOWN,
            &format!(
                "polling faster than the interval; wait {} seconds between polls",
                device.interval
            ),
        ));
    }
    match device.status.clone() {
        DeviceStatus::Pending => Err(grant_err(
            code::AUTHORIZATION_PENDING,
            "the user has not approved the request yet",
        )),
        DeviceStatus::Denied => Err(grant_err(code::ACCESS_DENIED, "the user denied the request")),
        DeviceStatus::Used => Err(grant_err(
            code::INVALID_GRANT,
            "the device code was already exchanged",
        )),
        DeviceStatus::Approved(user) => {
            device.status = DeviceStatus::Used;
            Ok(user)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_device(interval: u64, now: Timestamp) -> IcState {
        let mut ic = IcState::default();
        ic.devices.insert(
            "dc1".into(),
            Device {
                client_id: "c1".into(),
                user_code: "BCDF-GHJK".into(),
                start_url: "https://x/portal".into(),
                expires_at: now + SignedDuration::from_secs(600),
                interval,
                last_poll: None,
                status: DeviceStatus::Pending,
            },
        );
        ic
    }

    #[test]
    fn device_poll_lifecycle() {
        let t0 = Timestamp::now();
        let mut ic = state_with_device(5, t0);
        assert_eq!(
            poll_device(&mut ic, "dc1", "c1", t0).unwrap_err().code,
            "authorization_pending"
        );
        // Too soon: slow_down, and the interval grows by 5 s.
        let t1 = t0 + SignedDuration::from_secs(2);
        assert_eq!(
            poll_device(&mut ic, "dc1", "c1", t1).unwrap_err().code,
            "slow_down"
        );
        assert_eq!(ic.devices["dc1"].interval, 10);
        let t2 = t1 + SignedDuration::from_secs(10);
        ic.devices.get_mut("dc1").unwrap().status = DeviceStatus::Approved("alice".into());
        assert_eq!(poll_device(&mut ic, "dc1", "c1", t2).unwrap(), "alice");
        let t3 = t2 + SignedDuration::from_secs(10);
        assert_eq!(
            poll_device(&mut ic, "dc1", "c1", t3).unwrap_err().code,
            "invalid_grant"
        );
    }

    #[test]
    fn device_poll_errors() {
        let t0 = Timestamp::now();
        let mut ic = state_with_device(0, t0);
        assert_eq!(
            poll_device(&mut ic, "dc1", "other-client", t0).unwrap_err().code,
            "invalid_grant"
        );
        ic.devices.get_mut("dc1").unwrap().status = DeviceStatus::Denied;
        assert_eq!(
            poll_device(&mut ic, "dc1", "c1", t0).unwrap_err().code,
            "access_denied"
        );
        let late = t0 + SignedDuration::from_secs(601);
        assert_eq!(
            poll_device(&mut ic, "dc1", "c1", late).unwrap_err().code,
            "expired_token"
        );
    }
}
