//! IAM Identity Center OIDC client (unsigned): client registration, the device authorization
//! flow, and refreshing an access token when Huawei issued a refresh token.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{
    credential::{expiry_from_epoch, expiry_from_expires_in},
    endpoints::join,
    error::{CloudError, ErrorClass},
    http::HttpClient,
};
use crate::sensitive::SecretString;

pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";

/// A registered public client; reused until its secret expires.
#[derive(Clone, Debug)]
pub struct RegisteredClient {
    pub client_id: String,
    pub client_secret: SecretString,
    pub client_secret_expires_at: Timestamp,
}

/// A started device authorization: show `user_code` and `verification_uri` to a person.
#[derive(Clone, Debug)]
pub struct DeviceAuthorization {
    pub device_code: SecretString,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_at: Timestamp,
    pub interval: Duration,
}

/// An access token (and refresh token, when Huawei issued one).
#[derive(Clone, Debug)]
pub struct TokenSet {
    pub access_token: SecretString,
    pub expires_at: Timestamp,
    pub refresh_token: Option<SecretString>,
}

/// One poll of CreateToken during the device flow.
#[derive(Clone, Debug)]
pub enum DevicePoll {
    /// The person has not approved yet; poll again after the interval.
    Pending,
    /// Polling too fast; add 5 seconds to the interval (RFC 8628 §3.5).
    SlowDown,
    Issued(TokenSet),
}

#[derive(Serialize)]
struct RegisterBody<'a> {
    client_name: &'a str,
    client_type: &'a str,
    token_endpoint_auth_method: &'a str,
    grant_types: [&'a str; 1],
    response_types: [&'a str; 1],
    scopes: [&'a str; 1],
}

#[derive(Deserialize)]
struct RegisterResponse {
    client_info: ClientInfo,
}

#[derive(Deserialize)]
struct ClientInfo {
    client_id: String,
    client_secret: SecretString,
    client_secret_expires_at: i64,
}

/// `POST /v1/clients`.
#[tracing::instrument(level = "debug", skip_all, fields(operation = "RegisterClient", host = endpoint.host_str().unwrap_or_default()))]
pub async fn register_client(
    http: &HttpClient,
    endpoint: &Url,
    client_name: &str,
) -> Result<RegisteredClient, CloudError> {
    const OP: &str = "RegisterClient";
    let body = RegisterBody {
        client_name,
        client_type: "public",
        token_endpoint_auth_method: "client_secret_post",
        grant_types: [GRANT_DEVICE_CODE],
        response_types: ["code"],
        scopes: ["openid"],
    };
    let resp: RegisterResponse = http
        .send_json(
            OP,
            http.request(reqwest::Method::POST, join(endpoint, "/v1/clients"))
                .json(&body),
            &[],
        )
        .await?;
    let c = resp.client_info;
    let client_secret_expires_at = expiry_from_epoch(
        OP,
        "client_info.client_secret_expires_at",
        c.client_secret_expires_at,
        Timestamp::now(),
    )?;
    Ok(RegisteredClient {
        client_id: c.client_id,
        client_secret: c.client_secret,
        client_secret_expires_at,
    })
}

#[derive(Serialize)]
struct StartBody<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    start_url: &'a str,
}

#[derive(Deserialize)]
struct StartResponse {
    device_code: SecretString,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    expires_in: i64,
    #[serde(default)]
    interval: Option<u64>,
}

/// `POST /v1/device/authorize`.
#[tracing::instrument(level = "debug", skip_all, fields(operation = "StartDeviceAuthorization", host = endpoint.host_str().unwrap_or_default()))]
pub async fn start_device_authorization(
    http: &HttpClient,
    endpoint: &Url,
    client: &RegisteredClient,
    start_url: &str,
) -> Result<DeviceAuthorization, CloudError> {
    const OP: &str = "StartDeviceAuthorization";
    let body = StartBody {
        client_id: &client.client_id,
        client_secret: client.client_secret.expose(),
        start_url,
    };
    let req = http
        .request(reqwest::Method::POST, join(endpoint, "/v1/device/authorize"))
        .json(&body);
    let r: StartResponse = http.send_json(OP, req, &[&client.client_secret]).await?;
    let expires_at = expiry_from_expires_in(OP, "expires_in", r.expires_in, Timestamp::now())?;
    Ok(DeviceAuthorization {
        device_code: r.device_code,
        user_code: r.user_code,
        verification_uri: r.verification_uri,
        verification_uri_complete: r.verification_uri_complete,
        expires_at,
        interval: Duration::from_secs(r.interval.unwrap_or(5).max(1)),
    })
}

#[derive(Serialize)]
struct TokenBody<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    grant_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

#[derive(Deserialize)]
struct TokenResponse {
    token_info: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    access_token: SecretString,
    expires_in: i64,
    #[serde(default)]
    refresh_token: Option<SecretString>,
}

impl TokenInfo {
    fn into_set(self, operation: &'static str) -> Result<TokenSet, CloudError> {
        let expires_at = expiry_from_expires_in(
            operation,
            "token_info.expires_in",
            self.expires_in,
            Timestamp::now(),
        )?;
        Ok(TokenSet {
            access_token: self.access_token,
            expires_at,
            refresh_token: self.refresh_token.filter(|t| !t.is_empty()),
        })
    }
}

/// One CreateToken poll with the device code.
#[tracing::instrument(level = "debug", skip_all, fields(operation = "CreateToken", host = endpoint.host_str().unwrap_or_default()))]
pub async fn poll_device_token(
    http: &HttpClient,
    endpoint: &Url,
    client: &RegisteredClient,
    device: &DeviceAuthorization,
) -> Result<DevicePoll, CloudError> {
    const OP: &str = "CreateToken";
    let body = TokenBody {
        client_id: &client.client_id,
        client_secret: client.client_secret.expose(),
        grant_type: GRANT_DEVICE_CODE,
        device_code: Some(device.device_code.expose()),
        refresh_token: None,
    };
    let req = http
        .request(reqwest::Method::POST, join(endpoint, "/v1/tokens"))
        .json(&body);
    match http
        .send_json::<TokenResponse>(OP, req, &[&client.client_secret, &device.device_code])
        .await
    {
        Ok(r) => Ok(DevicePoll::Issued(r.token_info.into_set(OP)?)),
        Err(e) => match e.code() {
            Some("authorization_pending") => Ok(DevicePoll::Pending),
            Some("slow_down") => Ok(DevicePoll::SlowDown),
            // Huawei does not document its polling errors; a 4xx without a known code while the
            // device code is still valid is read as "not approved yet".
            None if e.class() == ErrorClass::InvalidRequest => Ok(DevicePoll::Pending),
            _ => Err(e),
        },
    }
}

/// CreateToken with a refresh token. Huawei may rotate the refresh token: persist the new one.
#[tracing::instrument(level = "debug", skip_all, fields(operation = "CreateToken(refresh)", host = endpoint.host_str().unwrap_or_default()))]
pub async fn refresh(
    http: &HttpClient,
    endpoint: &Url,
    client_id: &str,
    client_secret: &SecretString,
    refresh_token: &SecretString,
) -> Result<TokenSet, CloudError> {
    const OP: &str = "CreateToken(refresh)";
    let body = TokenBody {
        client_id,
        client_secret: client_secret.expose(),
        grant_type: GRANT_REFRESH_TOKEN,
        device_code: None,
        refresh_token: Some(refresh_token.expose()),
    };
    let req = http
        .request(reqwest::Method::POST, join(endpoint, "/v1/tokens"))
        .json(&body);
    let r: TokenResponse = http.send_json(OP, req, &[client_secret, refresh_token]).await?;
    r.token_info.into_set(OP)
}
