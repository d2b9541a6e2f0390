//! The Identity Center portal API (docs/simulator.md#identity-center-portal): `access-token`
//! authentication, assigned accounts and agencies with marker paging, GetAgencyCredentials (a mint)
//! and Logout.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::config::ExpirationUnit;
use crate::error::{ApiError, code};
use crate::lock::lock;
use crate::middleware::Minted;
use crate::state::{SharedSim, Sim};
use tcred::cloud::signer::parse_query;

pub const DEFAULT_LIMIT: usize = 200;
pub const MAX_LIMIT: usize = 2000;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code::IC_BAD_REQUEST, message)
}

/// The Identity Center user behind the `access-token` header.
fn session_user(sim: &Sim, headers: &HeaderMap, now: Timestamp) -> Result<String, ApiError> {
    let unauthorized = |m: &str| ApiError::unauthorized(code::IC_UNAUTHORIZED, m);
    let token = headers
        .get("access-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("the access-token header is missing"))?;
    let ic = lock(&sim.ic);
    let session = ic
        .sessions
        .get(token)
        .ok_or_else(|| unauthorized("the access token is invalid or was logged out"))?;
    if session.expires_at <= now {
        return Err(unauthorized("the access token has expired; sign in again"));
    }
    Ok(session.user.clone())
}

struct Params(Vec<(String, String)>);

impl Params {
    fn new(raw: Option<String>) -> Self {
        Self(parse_query(raw.as_deref().unwrap_or("")))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad(format!("{name} is required")))
    }
}

/// Markers are opaque to clients: base64 of the next offset.
fn encode_marker(offset: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("offset:{offset}"))
}

fn decode_marker(marker: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::STANDARD.decode(marker).ok()?;
    String::from_utf8(raw).ok()?.strip_prefix("offset:")?.parse().ok()
}

/// One page of `items` and the marker of the next page, if any.
pub fn paginate<T: Clone>(
    items: &[T],
    limit: Option<&str>,
    marker: Option<&str>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad(format!("limit must be an integer in 1..{MAX_LIMIT}")))?,
    };
    let start = match marker {
        None => 0,
        Some(m) => decode_marker(m)
            .filter(|&o| o <= items.len())
            .ok_or_else(|| bad("marker is invalid"))?,
    };
    let end = (start + limit).min(items.len());
    let next = (end < items.len()).then(|| encode_marker(end));
    Ok((items[start..end].to_vec(), next))
}

fn page(list_key: &str, items: Vec<Value>, next: Option<String>) -> Response {
    let count = items.len();
    Json(json!({ list_key: items, "page_info": { "next_marker": next, "current_count": count } }))
        .into_response()
}

pub async fn list_accounts(
    State(sim): State<SharedSim>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let user = session_user(&sim, &headers, sim.now())?;
    let params = Params::new(query);
    let assigned = sim.catalog.ic_users.get(&user);
    let accounts: Vec<Value> = sim
        .catalog
        .accounts
        .iter()
        .filter(|a| assigned.is_some_and(|list| list.iter().any(|(acct, _)| acct == &a.id)))
        .map(|a| json!({"account_id": a.id, "account_name": a.name, "email_address": format!("{}@example.com", a.name)}))
        .collect();
    let (items, next) = paginate(&accounts, params.get("limit"), params.get("marker"))?;
    Ok(page("account_list", items, next))
}

pub async fn list_account_agencies(
    State(sim): State<SharedSim>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let user = session_user(&sim, &headers, sim.now())?;
    let params = Params::new(query);
    let account_id = params.required("account_id")?;
    let agencies: Vec<Value> = sim
        .catalog
        .assigned_sets(&user, account_id)
        .into_iter()
        .map(|ps| {
            json!({
                "account_id": ps.account_id,
                "agency_name": ps.agency_name,
                "permission_set_name": ps.name,
                "agency_urn": ps.agency_urn,
                "description": format!("Provisioned by IAM Identity Center for permission set {}", ps.name),
            })
        })
        .collect();
    let (items, next) = paginate(&agencies, params.get("limit"), params.get("marker"))?;
    Ok(page("agency_list", items, next))
}

pub async fn get_agency_credentials(
    State(sim): State<SharedSim>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let now = sim.now();
    let user = session_user(&sim, &headers, now)?;
    let params = Params::new(query);
    let account_id = params.required("target_account_id")?;
    let agency_urn = params.required("agency_urn")?;
    let ps = sim
        .catalog
        .permission_sets
        .get(&(account_id.to_owned(), agency_urn.to_owned()))
        .ok_or_else(|| {
            ApiError::not_found(
                code::IC_NOT_FOUND,
                format!("account {account_id} has no Identity Center agency {agency_urn}"),
            )
        })?;
    if !sim
        .catalog
        .assigned_sets(&user, account_id)
        .iter()
        .any(|a| a.name == ps.name)
    {
        return Err(ApiError::forbidden(
            code::IC_FORBIDDEN,
            format!(
                "user {user} is not assigned permission set {} in account {account_id}",
                ps.name
            ),
        ));
    }
    let lifetime = sim.effective_lifetime(u64::from(ps.session_seconds));
    let issued = sim.issue_key(account_id, &ps.agency_name, &user, lifetime, now);
    let expiration = match sim.catalog.ic.portal_expiration_unit {
        ExpirationUnit::Seconds => issued.expires_at.as_second(),
        ExpirationUnit::Milliseconds => issued.expires_at.as_millisecond(),
    };
    let mut resp = Json(json!({"agency_credentials": {
        "access_key_id": issued.access_key_id,
        "secret_access_key": issued.secret_access_key.expose(),
        "session_token": issued.security_token.expose(),
        "expiration": expiration,
    }}))
    .into_response();
    resp.extensions_mut().insert(Minted(ps.agency_urn.clone()));
    Ok(resp)
}

pub async fn logout(State(sim): State<SharedSim>, headers: HeaderMap) -> Result<Response, ApiError> {
    session_user(&sim, &headers, sim.now())?;
    if let Some(token) = headers.get("access-token").and_then(|v| v.to_str().ok()) {
        lock(&sim.ic).sessions.remove(token);
    }
    Ok(axum::http::StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_walks_every_item_once() {
        let items: Vec<u32> = (0..5).collect();
        let (p1, m1) = paginate(&items, Some("2"), None).unwrap();
        assert_eq!(p1, vec![0, 1]);
        let m1 = m1.unwrap();
        assert!(
            m1.len() >= 4
                && m1
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+/=-_".contains(c))
        );
        let (p2, m2) = paginate(&items, Some("2"), Some(&m1)).unwrap();
        assert_eq!(p2, vec![2, 3]);
        let (p3, m3) = paginate(&items, Some("2"), m2.as_deref()).unwrap();
        assert_eq!((p3, m3), (vec![4], None));
        let (all, none) = paginate(&items, None, None).unwrap();
        assert_eq!((all.len(), none), (5, None));
        let (empty, none) = paginate::<u32>(&[], None, None).unwrap();
        assert!(empty.is_empty() && none.is_none());
    }

    #[test]
    fn pagination_rejects_bad_limit_and_marker() {
        let items = [1, 2, 3];
        for limit in ["0", "2001", "x", "-1"] {
            assert_eq!(
                paginate(&items, Some(limit), None).unwrap_err().status.as_u16(),
                400,
                "{limit}"
            );
        }
        assert!(paginate(&items, Some("2000"), None).is_ok());
        assert!(paginate(&items, None, Some("garbage")).is_err());
        assert!(paginate(&items, None, Some(&encode_marker(4))).is_err());
    }
}
