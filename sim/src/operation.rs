//! The API operations the simulator serves, named as Huawei's SDKs name them: what the fault
//! layer scopes, the counters count and hostile mode rewrites. A leaf: it imports no other module.

use axum::http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    RegisterClient,
    StartDeviceAuthorization,
    CreateToken,
    ListAccounts,
    ListAccountAgencies,
    GetAgencyCredentials,
    Logout,
    AssumeAgency,
    AssumeAgencyWithOidc,
    GetCallerIdentity,
    KeystoneListProjects,
    KeystoneListAuthDomains,
    CreateSecret,
    Unknown,
}

impl Operation {
    pub fn of(method: &Method, path: &str) -> Self {
        match (method.as_str(), path) {
            ("POST", "/v1/clients") => Self::RegisterClient,
            ("POST", "/v1/device/authorize") => Self::StartDeviceAuthorization,
            ("POST", "/v1/tokens") => Self::CreateToken,
            ("GET", "/v1/assigned-accounts") => Self::ListAccounts,
            ("GET", "/v1/assigned-agencies") => Self::ListAccountAgencies,
            ("GET", "/v1/credentials") => Self::GetAgencyCredentials,
            ("POST", "/v1/logout") => Self::Logout,
            ("POST", "/v5/agencies/assume") => Self::AssumeAgency,
            ("POST", "/v5/agencies/assume-with-oidc") => Self::AssumeAgencyWithOidc,
            ("GET", "/v5/caller-identity") => Self::GetCallerIdentity,
            ("GET", "/v3/projects") => Self::KeystoneListProjects,
            ("GET", "/v3/auth/domains") => Self::KeystoneListAuthDomains,
            ("POST", "/v2/manage/utils/secret") => Self::CreateSecret,
            _ => Self::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::RegisterClient => "RegisterClient",
            Self::StartDeviceAuthorization => "StartDeviceAuthorization",
            Self::CreateToken => "CreateToken",
            Self::ListAccounts => "ListAccounts",
            Self::ListAccountAgencies => "ListAccountAgencies",
            Self::GetAgencyCredentials => "GetAgencyCredentials",
            Self::Logout => "Logout",
            Self::AssumeAgency => "AssumeAgency",
            Self::AssumeAgencyWithOidc => "AssumeAgencyWithOIDC",
            Self::GetCallerIdentity => "GetCallerIdentity",
            Self::KeystoneListProjects => "KeystoneListProjects",
            Self::KeystoneListAuthDomains => "KeystoneListAuthDomains",
            Self::CreateSecret => "CreateSecret",
            Self::Unknown => "Unknown",
        }
    }

    /// What an SDK client calls to find a project or domain id it was not given.
    pub const DISCOVERY: [Operation; 3] = [
        Self::KeystoneListProjects,
        Self::KeystoneListAuthDomains,
        Self::GetCallerIdentity,
    ];

    pub fn is_mint(self) -> bool {
        matches!(
            self,
            Self::AssumeAgency | Self::AssumeAgencyWithOidc | Self::GetAgencyCredentials | Self::CreateSecret
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_by_route() {
        assert_eq!(
            Operation::of(&Method::POST, "/v5/agencies/assume"),
            Operation::AssumeAgency
        );
        assert_eq!(
            Operation::of(&Method::GET, "/v5/agencies/assume"),
            Operation::Unknown
        );
        assert!(Operation::GetAgencyCredentials.is_mint());
        assert!(!Operation::CreateToken.is_mint());
        assert_eq!(
            Operation::of(&Method::GET, "/v3/projects"),
            Operation::KeystoneListProjects
        );
        assert_eq!(
            Operation::of(&Method::GET, "/v3/auth/domains"),
            Operation::KeystoneListAuthDomains
        );
    }
}
