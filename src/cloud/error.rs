//! Errors from Huawei Cloud calls, and their classification (throttled, auth, not found, invalid
//! request, server, network), which drives retries, conditions and metric labels.

use std::time::Duration;

/// The controller flag that lists the endpoint hosts namespaced sources may use.
pub const ALLOWED_HOSTS_FLAG: &str = "--allowed-endpoint-hosts";

/// What kind of failure a Huawei Cloud call hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// 429: back off, honour Retry-After.
    Throttled,
    /// 401/403: bad or expired key, token or session; not allowed by the trust policy.
    Auth,
    /// 404: agency, permission set or account unknown.
    NotFound,
    /// 400 and friends: the request itself is wrong (duration, session name, policy).
    InvalidRequest,
    /// 5xx, 409 conflicts.
    Server,
    /// A 2xx answer tcred cannot use: malformed, oversized, or a credential that is expired or
    /// implausible. Not Huawei Cloud being briefly unwell, so retried like a failure that needs
    /// someone to change something (an endpoint fixed), never in quick succession.
    InvalidResponse,
    /// Connect failures, timeouts, TLS errors.
    Network,
}

impl ErrorClass {
    /// Stable lower-case label for metrics and status.
    pub fn label(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::Auth => "auth",
            Self::NotFound => "not_found",
            Self::InvalidRequest => "invalid_request",
            Self::Server => "server",
            Self::InvalidResponse => "invalid_response",
            Self::Network => "network",
        }
    }

    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Throttled | Self::Server | Self::Network)
    }

    /// Classifies an HTTP status.
    pub fn from_status(status: u16) -> Self {
        match status {
            429 => Self::Throttled,
            401 | 403 => Self::Auth,
            404 => Self::NotFound,
            408 => Self::Network,
            // Identity Center answers 409 for concurrency conflicts and asks callers to retry.
            409 => Self::Server,
            400..=499 => Self::InvalidRequest,
            _ => Self::Server,
        }
    }
}

/// A failed Huawei Cloud call. Messages never contain secret material: response texts are
/// scrubbed of the secrets the request carried, and URLs are dropped from transport errors.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("{operation} failed: HTTP {status}{}: {message}{}", code_part(.code), request_id_part(.request_id))]
    Api {
        operation: &'static str,
        status: u16,
        code: Option<String>,
        message: String,
        request_id: Option<String>,
        retry_after: Option<Duration>,
        /// Seconds Huawei Cloud's clock ran ahead of this host's (negative: behind), from this
        /// response's `Date`; only measured for a trusted host.
        clock_skew_seconds: Option<i64>,
    },
    #[error("{operation} failed: {message}")]
    Network {
        operation: &'static str,
        message: String,
    },
    #[error("{operation} returned an unexpected response: {message}")]
    Decode {
        operation: &'static str,
        message: String,
    },
    #[error("{0}")]
    Config(String),
    /// A namespaced source names an endpoint host the administrator has not allowed.
    #[error(
        "endpoint {endpoint} is not allowed by the administrator: a CredentialSource may only use Huawei Cloud's own domains or hosts allowed with {flag}",
        flag = ALLOWED_HOSTS_FLAG
    )]
    EndpointNotAllowed {
        /// `scheme://host` only.
        endpoint: String,
    },
}

fn code_part(code: &Option<String>) -> String {
    code.as_deref().map(|c| format!(" {c}")).unwrap_or_default()
}

fn request_id_part(id: &Option<String>) -> String {
    id.as_deref()
        .map(|r| format!(" (request id {r})"))
        .unwrap_or_default()
}

impl CloudError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Api { status, .. } => ErrorClass::from_status(*status),
            Self::Network { .. } => ErrorClass::Network,
            Self::Decode { .. } => ErrorClass::InvalidResponse,
            Self::Config(_) | Self::EndpointNotAllowed { .. } => ErrorClass::InvalidRequest,
        }
    }

    /// The clock skew measured from the (trusted) response that failed, if any.
    pub fn clock_skew_seconds(&self) -> Option<i64> {
        match self {
            Self::Api {
                clock_skew_seconds, ..
            } => *clock_skew_seconds,
            _ => None,
        }
    }

    /// The server's Retry-After, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The Huawei error code (`APIGW.0301`, `STS5.1106`, `authorization_pending`, ...), if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_classes() {
        assert_eq!(ErrorClass::from_status(429), ErrorClass::Throttled);
        assert_eq!(ErrorClass::from_status(401), ErrorClass::Auth);
        assert_eq!(ErrorClass::from_status(403), ErrorClass::Auth);
        assert_eq!(ErrorClass::from_status(404), ErrorClass::NotFound);
        assert_eq!(ErrorClass::from_status(400), ErrorClass::InvalidRequest);
        assert_eq!(ErrorClass::from_status(409), ErrorClass::Server);
        assert_eq!(ErrorClass::from_status(500), ErrorClass::Server);
        assert_eq!(ErrorClass::from_status(503), ErrorClass::Server);
        assert!(ErrorClass::Throttled.is_transient());
        assert!(!ErrorClass::Auth.is_transient());
        assert!(!ErrorClass::InvalidRequest.is_transient());
    }

    #[test]
    fn api_errors_read_well() {
        let e = CloudError::Api {
            operation: "AssumeAgency",
            status: 404,
            code: Some("STS5.1106".into()),
            message: "the agency cannot be found".into(),
            request_id: Some("abc".into()),
            retry_after: None,
            clock_skew_seconds: None,
        };
        assert_eq!(
            e.to_string(),
            "AssumeAgency failed: HTTP 404 STS5.1106: the agency cannot be found (request id abc)"
        );
        assert_eq!(e.class(), ErrorClass::NotFound);
    }

    #[test]
    fn a_refused_endpoint_names_the_host_and_the_flag_and_is_not_retried() {
        let e = CloudError::EndpointNotAllowed {
            endpoint: "https://collector.example".into(),
        };
        let text = e.to_string();
        assert!(text.contains("https://collector.example"), "{text}");
        assert!(text.contains("not allowed by the administrator"), "{text}");
        assert!(text.contains("--allowed-endpoint-hosts"), "{text}");
        assert_eq!(e.class(), ErrorClass::InvalidRequest);
        assert!(!e.class().is_transient());
    }
}
