//! STS v5 client: AssumeAgency (signed with an access key), AssumeAgencyWithOIDC (a JWT instead
//! of a key) and GetCallerIdentity.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{
    audit::{SessionAudit, SessionTag},
    credential::{IssuedCredential, check_parts, expiry_from_iso},
    endpoints::{host_header, join},
    error::CloudError,
    http::{HttpClient, Received},
    signer::{self, AccessKey},
};
use crate::sensitive::SecretString;

/// What to assume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumeRequest<'a> {
    pub agency_urn: &'a str,
    pub session_name: &'a str,
    pub duration_seconds: Option<u32>,
    pub policy: Option<&'a str>,
    /// Attribution for Huawei's trace service. Only AssumeAgency takes it: AssumeAgencyWithOIDC
    /// has no such fields (its session tags come from the ID token), so it is not sent there.
    pub audit: &'a SessionAudit,
}

#[derive(Serialize)]
struct AssumeBody<'a> {
    agency_urn: &'a str,
    agency_session_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_identity: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tags: &'a [SessionTag],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    transitive_tag_keys: &'a [String],
}

#[derive(Serialize)]
struct AssumeWithOidcBody<'a> {
    provider_urn: &'a str,
    agency_urn: &'a str,
    agency_session_name: &'a str,
    id_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
}

#[derive(Deserialize)]
struct AssumeResponse {
    credentials: StsCredentials,
}

#[derive(Deserialize)]
struct StsCredentials {
    access_key_id: String,
    secret_access_key: SecretString,
    security_token: SecretString,
    expiration: String,
}

impl StsCredentials {
    fn into_issued(
        self,
        operation: &'static str,
        clock_skew_seconds: Option<i64>,
        now: Timestamp,
    ) -> Result<IssuedCredential, CloudError> {
        let expires_at = expiry_from_iso(operation, "credentials.expiration", &self.expiration, now)?;
        check_parts(
            operation,
            &self.access_key_id,
            self.secret_access_key.expose(),
            self.security_token.expose(),
        )?;
        Ok(IssuedCredential {
            access_key_id: self.access_key_id,
            secret_access_key: self.secret_access_key,
            security_token: self.security_token,
            expires_at,
            clock_skew_seconds,
        })
    }
}

fn issued(operation: &'static str, resp: Received<AssumeResponse>) -> Result<IssuedCredential, CloudError> {
    resp.value
        .credentials
        .into_issued(operation, resp.clock_skew_seconds, Timestamp::now())
}

/// Who a key belongs to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct CallerIdentity {
    pub account_id: String,
    pub principal_urn: String,
    pub principal_id: String,
}

/// Builds a signed JSON request to STS.
fn signed(
    http: &HttpClient,
    method: reqwest::Method,
    url: Url,
    key: &AccessKey,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let host = host_header(&url);
    let headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    let signed = signer::sign(
        key,
        &signer::Request {
            method: method.as_str(),
            host: &host,
            path: url.path(),
            query: &[],
            headers: &headers,
            body: &body,
        },
        Timestamp::now(),
    );
    let mut req = http.request(method, url);
    for (name, value) in signed.headers {
        // reqwest sets Host from the URL, identical to what was signed.
        if !name.eq_ignore_ascii_case("host") {
            req = req.header(name, value);
        }
    }
    req.body(body)
}

/// `POST /v5/agencies/assume`, signed with `key`.
#[tracing::instrument(level = "debug", skip_all, fields(operation = "AssumeAgency", host = endpoint.host_str().unwrap_or_default()))]
pub async fn assume_agency(
    http: &HttpClient,
    endpoint: &Url,
    key: &AccessKey,
    req: &AssumeRequest<'_>,
) -> Result<IssuedCredential, CloudError> {
    const OP: &str = "AssumeAgency";
    let body = serde_json::to_vec(&AssumeBody {
        agency_urn: req.agency_urn,
        agency_session_name: req.session_name,
        duration_seconds: req.duration_seconds,
        policy: req.policy,
        source_identity: req.audit.source_identity.as_deref(),
        tags: &req.audit.tags,
        transitive_tag_keys: &req.audit.transitive_tag_keys,
    })
    .map_err(|e| CloudError::Config(format!("encoding {OP}: {e}")))?;
    let url = join(endpoint, "/v5/agencies/assume");
    let mut secrets = vec![&key.secret];
    if let Some(t) = &key.security_token {
        secrets.push(t);
    }
    let resp = http
        .send_json_measured(OP, signed(http, reqwest::Method::POST, url, key, body), &secrets)
        .await?;
    issued(OP, resp)
}

/// `POST /v5/agencies/assume-with-oidc`: exchanges `id_token` (no Huawei key involved).
#[tracing::instrument(level = "debug", skip_all, fields(operation = "AssumeAgencyWithOIDC", host = endpoint.host_str().unwrap_or_default()))]
pub async fn assume_agency_with_oidc(
    http: &HttpClient,
    endpoint: &Url,
    provider_urn: &str,
    id_token: &SecretString,
    req: &AssumeRequest<'_>,
) -> Result<IssuedCredential, CloudError> {
    const OP: &str = "AssumeAgencyWithOIDC";
    let body = AssumeWithOidcBody {
        provider_urn,
        agency_urn: req.agency_urn,
        agency_session_name: req.session_name,
        id_token: id_token.expose(),
        duration_seconds: req.duration_seconds,
        policy: req.policy,
    };
    let url = join(endpoint, "/v5/agencies/assume-with-oidc");
    let resp = http
        .send_json_measured(
            OP,
            http.request(reqwest::Method::POST, url).json(&body),
            &[id_token],
        )
        .await?;
    issued(OP, resp)
}

/// `GET /v5/caller-identity`, signed with `key`.
#[tracing::instrument(level = "debug", skip_all, fields(operation = "GetCallerIdentity", host = endpoint.host_str().unwrap_or_default()))]
pub async fn caller_identity(
    http: &HttpClient,
    endpoint: &Url,
    key: &AccessKey,
) -> Result<CallerIdentity, CloudError> {
    let url = join(endpoint, "/v5/caller-identity");
    let mut secrets = vec![&key.secret];
    if let Some(t) = &key.security_token {
        secrets.push(t);
    }
    http.send_json(
        "GetCallerIdentity",
        signed(http, reqwest::Method::GET, url, key, Vec::new()),
        &secrets,
    )
    .await
}
