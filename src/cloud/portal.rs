//! IAM Identity Center portal client (header `access-token`, not signed): resolve a permission
//! set to its agency URN, fetch credentials for it, log out.

use serde::Deserialize;
use url::Url;

use super::{
    credential::{IssuedCredential, expiry_from_epoch},
    endpoints::join,
    error::CloudError,
    http::HttpClient,
};
use crate::sensitive::SecretString;

/// Largest page the portal serves.
const PAGE_LIMIT: &str = "2000";
/// Safety stop for a server that never ends a listing.
const MAX_PAGES: usize = 100;

/// One permission set assigned to the user in an account.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct AssignedAgency {
    pub account_id: String,
    #[serde(default)]
    pub agency_name: String,
    pub permission_set_name: String,
    pub agency_urn: String,
}

#[derive(Deserialize)]
struct AgenciesPage {
    #[serde(default)]
    agency_list: Vec<AssignedAgency>,
    #[serde(default)]
    page_info: Option<PageInfo>,
}

#[derive(Deserialize)]
struct PageInfo {
    #[serde(default)]
    next_marker: Option<String>,
}

#[derive(Deserialize)]
struct CredentialsResponse {
    agency_credentials: PortalCredentials,
}

#[derive(Deserialize)]
struct PortalCredentials {
    access_key_id: String,
    secret_access_key: SecretString,
    session_token: SecretString,
    expiration: i64,
}

fn get(http: &HttpClient, url: Url, access_token: &SecretString) -> reqwest::RequestBuilder {
    http.request(reqwest::Method::GET, url)
        .header("access-token", access_token.expose())
        .header("Content-Type", "application/json")
}

/// Every permission set the session's user is assigned in `account_id` (all pages).
#[tracing::instrument(level = "debug", skip_all, fields(operation = "ListAssignedAgencies", host = endpoint.host_str().unwrap_or_default()))]
pub async fn list_assigned_agencies(
    http: &HttpClient,
    endpoint: &Url,
    access_token: &SecretString,
    account_id: &str,
) -> Result<Vec<AssignedAgency>, CloudError> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut url = join(endpoint, "/v1/assigned-agencies");
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("account_id", account_id)
                .append_pair("limit", PAGE_LIMIT);
            if let Some(m) = &marker {
                q.append_pair("marker", m);
            }
        }
        let page: AgenciesPage = http
            .send_json(
                "ListAccountAgencies",
                get(http, url, access_token),
                &[access_token],
            )
            .await?;
        out.extend(page.agency_list);
        marker = page
            .page_info
            .and_then(|p| p.next_marker)
            .filter(|m| !m.is_empty());
        if marker.is_none() {
            return Ok(out);
        }
    }
    Err(CloudError::Decode {
        operation: "ListAccountAgencies",
        message: format!("more than {MAX_PAGES} pages"),
    })
}

/// The agency URN of `permission_set` in `account_id`, or a NotFound-class error that says which
/// permission sets the user does have there.
pub async fn resolve_permission_set(
    http: &HttpClient,
    endpoint: &Url,
    access_token: &SecretString,
    account_id: &str,
    permission_set: &str,
) -> Result<String, CloudError> {
    let agencies = list_assigned_agencies(http, endpoint, access_token, account_id).await?;
    if let Some(a) = agencies.iter().find(|a| a.permission_set_name == permission_set) {
        return Ok(a.agency_urn.clone());
    }
    let mut names: Vec<&str> = agencies.iter().map(|a| a.permission_set_name.as_str()).collect();
    names.sort_unstable();
    Err(CloudError::Api {
        operation: "ListAccountAgencies",
        status: 404,
        code: None,
        message: format!(
            "permission set {permission_set:?} is not assigned to the session's user in account {account_id} (assigned: {})",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ),
        request_id: None,
        retry_after: None,
        clock_skew_seconds: None,
    })
}

/// `GET /v1/credentials` for one agency.
#[tracing::instrument(level = "debug", skip_all, fields(operation = "GetAgencyCredentials", host = endpoint.host_str().unwrap_or_default()))]
pub async fn get_credentials(
    http: &HttpClient,
    endpoint: &Url,
    access_token: &SecretString,
    account_id: &str,
    agency_urn: &str,
) -> Result<IssuedCredential, CloudError> {
    const OP: &str = "GetAgencyCredentials";
    let mut url = join(endpoint, "/v1/credentials");
    url.query_pairs_mut()
        .append_pair("target_account_id", account_id)
        .append_pair("agency_urn", agency_urn);
    let resp = http
        .send_json_measured::<CredentialsResponse>(OP, get(http, url, access_token), &[access_token])
        .await?;
    let c = resp.value.agency_credentials;
    let expires_at = expiry_from_epoch(
        OP,
        "agency_credentials.expiration",
        c.expiration,
        jiff::Timestamp::now(),
    )?;
    super::credential::check_parts(
        OP,
        &c.access_key_id,
        c.secret_access_key.expose(),
        c.session_token.expose(),
    )?;
    Ok(IssuedCredential {
        access_key_id: c.access_key_id,
        secret_access_key: c.secret_access_key,
        security_token: c.session_token,
        expires_at,
        clock_skew_seconds: resp.clock_skew_seconds,
    })
}

/// `POST /v1/logout`: ends the portal session.
#[tracing::instrument(level = "debug", skip_all, fields(operation = "Logout", host = endpoint.host_str().unwrap_or_default()))]
pub async fn logout(
    http: &HttpClient,
    endpoint: &Url,
    access_token: &SecretString,
) -> Result<(), CloudError> {
    let url = join(endpoint, "/v1/logout");
    let req = http
        .request(reqwest::Method::POST, url)
        .header("access-token", access_token.expose());
    http.send("Logout", req, &[access_token]).await.map(|_| ())
}
