//! The Huawei error envelope (`{"error_code","error_msg","request_id"}` + `X-Request-Id`,
//! docs/simulator.md#error-envelope) and the error codes the simulator answers with
//! (docs/simulator.md#error-codes).

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::json;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Codes the simulator uses. Huawei documents only some of them (`APIGW.0301`, `APIGW.0308`,
/// `STS5.1106`, the `IdentityCenter.*` family); the others are chosen here and listed in
/// docs/simulator.md.
pub mod code {
    pub const SIGNATURE: &str = "APIGW.0301";
    pub const THROTTLED: &str = "APIGW.0308";
    pub const UNAVAILABLE: &str = "APIGW.0201";
    pub const INTERNAL: &str = "SIM.0500";
    pub const NOT_FOUND: &str = "APIGW.0101";

    pub const STS_BAD_REQUEST: &str = "STS5.0400";
    pub const STS_DENIED: &str = "STS5.0403";
    pub const STS_NO_AGENCY: &str = "STS5.1106";
    pub const STS_NO_PROVIDER: &str = "STS5.1107";
    pub const STS_IDP_UNAVAILABLE: &str = "STS5.0503";

    pub const IC_BAD_REQUEST: &str = "IdentityCenter.400";
    pub const IC_UNAUTHORIZED: &str = "IdentityCenter.401";
    pub const IC_FORBIDDEN: &str = "IdentityCenter.1000";
    pub const IC_NOT_FOUND: &str = "IdentityCenter.404";

    // The OIDC service speaks OAuth (RFC 6749 / 8628 / 7591) error names.
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const INVALID_CLIENT: &str = "invalid_client";
    pub const INVALID_CLIENT_METADATA: &str = "invalid_client_metadata";
    pub const INVALID_GRANT: &str = "invalid_grant";
    pub const UNSUPPORTED_GRANT_TYPE: &str = "unsupported_grant_type";
    pub const AUTHORIZATION_PENDING: &str = "authorization_pending";
    pub const SLOW_DOWN: &str = "slow_down";
    pub const EXPIRED_TOKEN: &str = "expired_token";
    pub const ACCESS_DENIED: &str = "access_denied";
}

/// An error answered in the envelope. Messages never carry secret material: callers build them
/// from names, ids and URNs only.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub encoded_authorization_message: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            encoded_authorization_message: None,
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// STS-style 403: the denial reason is also carried, base64url-encoded, in
    /// `encoded_authorization_message` (the real one is encrypted; ours is readable on purpose).
    pub fn sts_denied(message: impl Into<String>) -> Self {
        use base64::Engine;
        let message = message.into();
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({ "allowed": false, "explicitDeny": false, "reason": message }).to_string());
        Self {
            encoded_authorization_message: Some(encoded),
            ..Self::forbidden(code::STS_DENIED, format!("access denied: {message}"))
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = new_request_id();
        let mut body = json!({
            "error_code": self.code,
            "error_msg": self.message,
            "request_id": request_id,
        });
        if let (Some(m), Some(obj)) = (self.encoded_authorization_message, body.as_object_mut()) {
            obj.insert("encoded_authorization_message".into(), m.into());
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(X_REQUEST_ID, v);
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// 32 lowercase hex characters, like Huawei's request ids.
pub fn new_request_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}
