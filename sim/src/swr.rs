//! SWR `CreateSecret` (docs/simulator.md#swr): a temporary `docker login` for a region's
//! registry, `POST /v2/manage/utils/secret?projectname=<region>&duration_seconds=<n>`, signed
//! with SDK-HMAC-SHA256 like STS calls. The body is `{"auths": {"swr.<region>.myhuaweicloud.com":
//! {"auth": base64(user:password)}}}`; the headers `X-Swr-Dockerlogin` and `X-Swr-Expireat` carry
//! the login command and its expiry. Issued logins are kept until they expire, so a test can ask
//! whether what a Secret holds is a login this simulator issued and still honours.

use axum::{
    body::Bytes,
    extract::{Json, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, Received};
use crate::error::ApiError;
use crate::lock::lock;
use crate::state::{SharedSim, Sim, SwrLogin, constant_time_eq, random_upper_alnum};
use tcred::cloud::signer;
use tcred::sensitive::SecretString;

/// SWR's `duration_seconds` range (15 minutes to 24 hours) and its default without one: a
/// temporary login command is valid for 6 hours (Huawei's SWR FAQ).
pub const MIN_SECONDS: i64 = 900;
pub const MAX_SECONDS: i64 = 86_400;
pub const DEFAULT_SECONDS: i64 = 6 * 3_600;

/// Error codes: `SVCSTG.SWR.4010000` and `SVCSTG.SWR.4030170` are Huawei's; the 400 is the
/// simulator's choice.
pub const BAD_REQUEST: &str = "SVCSTG.SWR.4000001";

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(BAD_REQUEST, message)
}

/// A region name as Huawei writes them (`cn-north-4`, `ap-southeast-1`).
fn valid_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    r.len() <= 32
        && parts.len() >= 3
        && parts[0].len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// `projectname` (required here: the simulator has no region of its own) and `duration_seconds`.
fn parse_query(query: &str) -> Result<(String, i64), ApiError> {
    let pairs = signer::parse_query(query);
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let region = get("projectname")
        .ok_or_else(|| bad("projectname is required (the simulator has no default region)"))?;
    if !valid_region(region) {
        return Err(bad("projectname is not a region name"));
    }
    let seconds = match get("duration_seconds") {
        None => DEFAULT_SECONDS,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|s| (MIN_SECONDS..=MAX_SECONDS).contains(s))
            .ok_or_else(|| {
                bad("duration_seconds must be an integer from 900 (15 minutes) to 86400 (24 hours)")
            })?,
    };
    Ok((region.to_owned(), seconds))
}

/// `2025-11-01T12:18:44.382000Z`: UTC with microseconds, as SWR's documentation shows it.
pub fn format_expire_at(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub async fn create_secret(
    State(sim): State<SharedSim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let now = sim.now();
    let received = Received::of(&method, &uri, &headers, &body);
    auth::verify(&sim, &received, now)?;
    let (region, seconds) = parse_query(uri.query().unwrap_or(""))?;
    let lifetime = sim.effective_lifetime(seconds.unsigned_abs());
    let expires_at = now + SignedDuration::from_secs(i64::try_from(lifetime).unwrap_or(MAX_SECONDS));
    let (username, password) = issue(&sim, &region, expires_at);
    let host = format!("swr.{region}.myhuaweicloud.com");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()));
    let mut resp = Json(json!({"auths": {host.as_str(): {"auth": auth}}})).into_response();
    let login = format!("docker login -u {username} -p {} {host}", password.expose());
    for (name, value) in [
        ("X-Swr-Dockerlogin", login),
        ("X-Swr-Expireat", format_expire_at(expires_at)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    Ok(resp)
}

/// A new login: user `<region>@<20 upper-case alphanumerics>`, password 64 hex digits.
fn issue(sim: &Sim, region: &str, expires_at: Timestamp) -> (String, SecretString) {
    let username = format!("{region}@{}", random_upper_alnum(20));
    let bytes: [u8; 32] = rand::rng().random();
    let password = SecretString::new(hex::encode(bytes));
    lock(&sim.swr_logins).insert(
        username.clone(),
        SwrLogin {
            password: password.clone(),
            expires_at,
        },
    );
    (username, password)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Check {
    username: String,
    password: String,
}

/// `POST /control/swr/verify {"username", "password"}`: whether this is a login the simulator
/// issued and that has not expired, and when it expires.
pub async fn verify_login(State(sim): State<SharedSim>, Json(check): Json<Check>) -> Response {
    let now = sim.now();
    let logins = lock(&sim.swr_logins);
    let found = logins.get(&check.username).filter(|l| {
        constant_time_eq(l.password.expose().as_bytes(), check.password.as_bytes()) && l.expires_at > now
    });
    let body = match found {
        Some(l) => json!({"valid": true, "expiresAt": format_expire_at(l.expires_at)}),
        None => json!({"valid": false}),
    };
    (StatusCode::OK, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_rules() {
        assert_eq!(
            parse_query("projectname=cn-north-4").unwrap(),
            ("cn-north-4".into(), DEFAULT_SECONDS)
        );
        assert_eq!(
            parse_query("duration_seconds=900&projectname=ap-southeast-1")
                .unwrap()
                .1,
            900
        );
        for bad in [
            "",
            "duration_seconds=900",
            "projectname=cn-north-4&duration_seconds=899",
            "projectname=cn-north-4&duration_seconds=86401",
            "projectname=cn-north-4&duration_seconds=6h",
            "projectname=../evil",
            "projectname=cn",
        ] {
            let e = parse_query(bad).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, BAD_REQUEST), "{bad}");
        }
    }

    #[test]
    fn expiry_has_microseconds_and_z() {
        let at: Timestamp = "2025-11-01T12:18:44.382Z".parse().unwrap();
        assert_eq!(format_expire_at(at), "2025-11-01T12:18:44.382000Z");
    }
}
