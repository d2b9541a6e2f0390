//! The simulator's YAML configuration: schema (camelCase, unknown keys rejected), defaults and the
//! cross-reference checks that turn a typo into a startup error instead of a confusing 404 later.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;

use tcred::sensitive::SecretString;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub accounts: Vec<Account>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub oidc_providers: Vec<OidcProvider>,
    #[serde(default)]
    pub identity_center: IdentityCenter,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Account {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub agencies: Vec<Agency>,
    #[serde(default)]
    pub permission_sets: Vec<PermissionSet>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Agency {
    pub name: String,
    #[serde(default = "default_max_session")]
    pub max_session_seconds: u32,
    #[serde(default)]
    pub trusted_users: Vec<String>,
    #[serde(default)]
    pub trusted_oidc: Vec<OidcTrust>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcTrust {
    pub provider: String,
    pub subjects: Vec<String>,
    pub audiences: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PermissionSet {
    pub name: String,
    pub agency_name: String,
    #[serde(default = "default_max_session")]
    pub session_seconds: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub account_id: String,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcProvider {
    pub urn: String,
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub jwks: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityCenter {
    #[serde(default)]
    pub start_urls: Vec<String>,
    #[serde(default)]
    pub users: Vec<IcUser>,
    #[serde(default = "default_access_token_seconds")]
    pub access_token_seconds: u64,
    #[serde(default = "default_client_secret_seconds")]
    pub client_secret_seconds: u64,
    #[serde(default)]
    pub issue_refresh_tokens: bool,
    #[serde(default = "default_device_code_seconds")]
    pub device_code_seconds: u64,
    #[serde(default = "default_poll_interval")]
    pub poll_interval_seconds: u64,
    #[serde(default)]
    pub portal_expiration_unit: ExpirationUnit,
}

impl Default for IdentityCenter {
    fn default() -> Self {
        Self {
            start_urls: Vec::new(),
            users: Vec::new(),
            access_token_seconds: default_access_token_seconds(),
            client_secret_seconds: default_client_secret_seconds(),
            issue_refresh_tokens: false,
            device_code_seconds: default_device_code_seconds(),
            poll_interval_seconds: default_poll_interval(),
            portal_expiration_unit: ExpirationUnit::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcUser {
    pub name: String,
    #[serde(default)]
    pub assignments: Vec<Assignment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Assignment {
    pub account_id: String,
    pub permission_set: String,
}

/// Unit of the portal's `agency_credentials.expiration` (Huawei documents no unit,
/// docs/simulator.md#time-fields).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpirationUnit {
    #[default]
    Seconds,
    Milliseconds,
}

fn default_max_session() -> u32 {
    3600
}
fn default_access_token_seconds() -> u64 {
    28_800
}
fn default_client_secret_seconds() -> u64 {
    90 * 86_400
}
fn default_device_code_seconds() -> u64 {
    600
}
fn default_poll_interval() -> u64 {
    5
}

/// Agency and permission-set session limits (STS: 1 h .. 12 h; permission sets: 15 min .. 12 h).
pub const AGENCY_MAX_SESSION: std::ops::RangeInclusive<u32> = 3600..=43_200;
pub const PERMISSION_SET_SESSION: std::ops::RangeInclusive<u32> = 900..=43_200;

impl Config {
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        // An empty file is a valid, empty configuration.
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let cfg: Config = serde_saphyr::from_str(text).map_err(|e| format!("invalid configuration: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut account_ids = HashSet::new();
        for a in &self.accounts {
            if !is_account_id(&a.id) {
                return Err(format!(
                    "accounts[{}].id {:?}: expected 32 hex characters",
                    a.name, a.id
                ));
            }
            if !account_ids.insert(a.id.as_str()) {
                return Err(format!("duplicate account id {}", a.id));
            }
            let mut names = HashSet::new();
            for ag in &a.agencies {
                if !is_agency_name(&ag.name) {
                    return Err(format!("account {}: invalid agency name {:?}", a.id, ag.name));
                }
                if !names.insert(ag.name.as_str()) {
                    return Err(format!("account {}: duplicate agency {}", a.id, ag.name));
                }
                if !AGENCY_MAX_SESSION.contains(&ag.max_session_seconds) {
                    return Err(format!(
                        "agency {}: maxSessionSeconds {} is outside 3600..43200",
                        ag.name, ag.max_session_seconds
                    ));
                }
                for t in &ag.trusted_oidc {
                    if !self.oidc_providers.iter().any(|p| p.urn == t.provider) {
                        return Err(format!(
                            "agency {}: trustedOidc provider {} is not in oidcProviders",
                            ag.name, t.provider
                        ));
                    }
                    if t.subjects.is_empty() || t.audiences.is_empty() {
                        return Err(format!(
                            "agency {}: trustedOidc entries need at least one subject and one audience",
                            ag.name
                        ));
                    }
                }
            }
            let mut sets = HashSet::new();
            for ps in &a.permission_sets {
                if !sets.insert(ps.name.as_str()) {
                    return Err(format!("account {}: duplicate permission set {}", a.id, ps.name));
                }
                if !is_agency_name(&ps.agency_name) {
                    return Err(format!(
                        "permission set {}: invalid agencyName {:?}",
                        ps.name, ps.agency_name
                    ));
                }
                if !PERMISSION_SET_SESSION.contains(&ps.session_seconds) {
                    return Err(format!(
                        "permission set {}: sessionSeconds {} is outside 900..43200",
                        ps.name, ps.session_seconds
                    ));
                }
            }
        }

        let mut user_names = HashSet::new();
        let mut access_keys = HashSet::new();
        for u in &self.users {
            if !user_names.insert(u.name.as_str()) {
                return Err(format!("duplicate user {}", u.name));
            }
            if !is_account_id(&u.account_id) {
                return Err(format!("user {}: accountId must be 32 hex characters", u.name));
            }
            if u.access_key_id.is_empty() || !u.access_key_id.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!(
                    "user {}: accessKeyId must be non-empty and alphanumeric",
                    u.name
                ));
            }
            if !access_keys.insert(u.access_key_id.as_str()) {
                return Err(format!("user {}: accessKeyId is used twice", u.name));
            }
            if u.secret_access_key.is_empty() {
                return Err(format!("user {}: secretAccessKey is empty", u.name));
            }
        }

        let mut urns = HashSet::new();
        for p in &self.oidc_providers {
            if !urns.insert(p.urn.as_str()) {
                return Err(format!("duplicate oidc provider {}", p.urn));
            }
            if p.issuer.is_empty() {
                return Err(format!("oidc provider {}: issuer is empty", p.urn));
            }
            match (&p.jwks_uri, &p.jwks) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(format!(
                        "oidc provider {}: set exactly one of jwksUri and jwks",
                        p.urn
                    ));
                }
            }
            if p.ca_file.is_some() && p.jwks_uri.is_none() {
                return Err(format!("oidc provider {}: caFile needs jwksUri", p.urn));
            }
        }

        let ic = &self.identity_center;
        let mut ic_names = HashSet::new();
        for u in &ic.users {
            if !ic_names.insert(u.name.as_str()) {
                return Err(format!("duplicate identityCenter user {}", u.name));
            }
            for asg in &u.assignments {
                let account = self
                    .accounts
                    .iter()
                    .find(|a| a.id == asg.account_id)
                    .ok_or_else(|| {
                        format!(
                            "user {}: assignment to unknown account {}",
                            u.name, asg.account_id
                        )
                    })?;
                if !account
                    .permission_sets
                    .iter()
                    .any(|ps| ps.name == asg.permission_set)
                {
                    return Err(format!(
                        "user {}: account {} has no permission set {}",
                        u.name, asg.account_id, asg.permission_set
                    ));
                }
            }
        }
        for (name, v) in [
            ("accessTokenSeconds", ic.access_token_seconds),
            ("clientSecretSeconds", ic.client_secret_seconds),
            ("deviceCodeSeconds", ic.device_code_seconds),
        ] {
            if v == 0 {
                return Err(format!("identityCenter.{name} must be positive"));
            }
        }
        if ic.poll_interval_seconds > 60 {
            return Err("identityCenter.pollIntervalSeconds must be 0..60".into());
        }
        Ok(())
    }
}

pub fn is_account_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// IAM agency names: 1..64 of letters, digits, space and `-_.` (loosely; enough to keep URNs sane).
fn is_agency_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::{WORLD, world_with};

    #[test]
    fn parses_the_test_world_with_defaults() {
        let cfg = Config::from_yaml(WORLD).unwrap();
        assert_eq!(cfg.accounts[0].agencies[0].max_session_seconds, 43_200);
        assert_eq!(cfg.accounts[0].permission_sets[0].session_seconds, 3600);
        assert_eq!(cfg.identity_center.access_token_seconds, 28_800);
        assert_eq!(cfg.identity_center.device_code_seconds, 600);
        assert_eq!(
            cfg.identity_center.portal_expiration_unit,
            ExpirationUnit::Seconds
        );
        assert!(!cfg.identity_center.issue_refresh_tokens);
        let minimal = "accounts: [{id: \"0123456789abcdef0123456789abcdef\", name: a,\n  \
                       agencies: [{name: x}], permissionSets: [{name: p, agencyName: y}]}]";
        let cfg = Config::from_yaml(minimal).unwrap();
        assert_eq!(cfg.accounts[0].agencies[0].max_session_seconds, 3600);
        assert_eq!(cfg.accounts[0].permission_sets[0].session_seconds, 3600);
        assert_eq!(cfg.identity_center.poll_interval_seconds, 5);
        let ms = world_with(
            "  pollIntervalSeconds: 1\n",
            "  portalExpirationUnit: milliseconds\n",
        );
        assert_eq!(
            Config::from_yaml(&ms)
                .unwrap()
                .identity_center
                .portal_expiration_unit,
            ExpirationUnit::Milliseconds
        );
    }

    #[test]
    fn empty_file_is_an_empty_config() {
        let cfg = Config::from_yaml("").unwrap();
        assert!(cfg.accounts.is_empty());
        let cfg = Config::from_yaml("{}").unwrap();
        assert!(cfg.users.is_empty());
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = Config::from_yaml("acounts: []").unwrap_err();
        assert!(err.contains("unknown field `acounts`"), "{err}");
        let err = Config::from_yaml(&world_with("maxSessionSeconds", "maxSession")).unwrap_err();
        assert!(err.contains("maxSession"), "{err}");
    }

    #[test]
    fn cross_references_and_ranges_are_checked() {
        let bad_ps = world_with("permissionSet: ReadOnlyAccess", "permissionSet: Nope");
        assert!(
            Config::from_yaml(&bad_ps)
                .unwrap_err()
                .contains("no permission set Nope")
        );
        let bad_provider = world_with(
            "oidcProvider:k8s\"\n            subjects",
            "oidcProvider:other\"\n            subjects",
        );
        assert!(
            Config::from_yaml(&bad_provider)
                .unwrap_err()
                .contains("not in oidcProviders")
        );
        let bad_max = world_with("maxSessionSeconds: 43200", "maxSessionSeconds: 60");
        assert!(Config::from_yaml(&bad_max).unwrap_err().contains("3600..43200"));
        let bad_id = world_with("- id: \"0123456789abcdef0123456789abcdef\"", "- id: \"xyz\"");
        assert!(Config::from_yaml(&bad_id).unwrap_err().contains("32 hex"));
        let both_jwks = world_with("    jwks:\n", "    jwksUri: https://x/jwks\n    jwks:\n");
        assert!(Config::from_yaml(&both_jwks).unwrap_err().contains("exactly one"));
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let cfg = Config::from_yaml(WORLD).unwrap();
        assert!(!format!("{cfg:?}").contains("CiBotSecretKey"));
    }
}
