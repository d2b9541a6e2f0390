//! IAM's discovery calls that Huawei's SDKs make when a client has no project or domain id
//! (KeystoneListProjects `GET /v3/projects?name=<region>`, KeystoneListAuthDomains
//! `GET /v3/auth/domains`), signed and verified like every other call. They are counted
//! (`discoveryCalls` in `/control/stats`), so a test can prove a consumer made none.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::{self, Caller, Received};
use crate::error::ApiError;
use crate::state::{SharedSim, stable_id};

fn caller_account(
    sim: &SharedSim,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<String, ApiError> {
    let received = Received::of(method, uri, headers, body);
    Ok(match auth::verify(sim, &received, sim.now())? {
        Caller::User { account_id, .. } | Caller::Session { account_id, .. } => account_id,
    })
}

/// The caller's account's project in the region `name` (one per region, a stable id).
pub async fn list_projects(
    State(sim): State<SharedSim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let account = caller_account(&sim, &method, &uri, &headers, &body)?;
    let region = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("name="))
        .unwrap_or("")
        .to_owned();
    let projects = match region.is_empty() {
        true => json!([]),
        false => json!([{
            "id": stable_id(&format!("{account}:project:{region}")),
            "name": region,
            "domain_id": account,
            "enabled": true,
        }]),
    };
    Ok(Json(json!({"projects": projects})).into_response())
}

/// The caller's account.
pub async fn list_auth_domains(
    State(sim): State<SharedSim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let account = caller_account(&sim, &method, &uri, &headers, &body)?;
    Ok(
        Json(json!({"domains": [{"id": account, "name": format!("account-{account}"), "enabled": true}]}))
            .into_response(),
    )
}
