//! Image pull Secrets (docs/registry.md), pure: what an `imagePullSecret` credential's Secret
//! holds (a `.dockerconfigjson` for one SWR registry, and the expiry tcred schedules from), how
//! long a login is asked for, and when it counts as expired. The Secret's metadata, hashes and
//! trust rules are `secret.rs`'s, shared with the SDK layout.

use std::{collections::BTreeMap, time::Duration};

use base64::Engine;
use jiff::Timestamp;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use serde_json::json;

use crate::{cloud::swr::RegistryLogin, time::rfc3339};

/// The Secret type kubelet reads image pull credentials from.
pub const SECRET_TYPE: &str = "kubernetes.io/dockerconfigjson";

/// Keys of an image pull Secret (contract: docs/api.md, "Image pull Secrets").
pub mod keys {
    /// The docker config: `{"auths": {"swr.<region>.myhuaweicloud.com": {username, password, auth}}}`.
    pub const DOCKER_CONFIG_JSON: &str = ".dockerconfigjson";
    /// When the login stops working, RFC 3339 UTC: the schedule is read from here (hashed data,
    /// like `HUAWEICLOUD_SDK_EXPIRES_AT`), so a restarted controller re-mints nothing.
    pub const EXPIRES_AT: &str = "expiresAt";
    pub const ALL: [&str; 2] = [DOCKER_CONFIG_JSON, EXPIRES_AT];
}

/// The `duration_seconds` asked of SWR: the spec's validity (default: all the credential that
/// obtains the login has left), never more than that credential has left, within SWR's range
/// (15 minutes to 24 hours). Huawei does not document whether a temporary login outlives the
/// credential that obtained it, so tcred never counts on it (docs/registry.md).
pub fn requested_seconds(validity: Option<Duration>, credential_left: Duration) -> u32 {
    use crate::cloud::swr::{MAX_SECONDS, MIN_SECONDS};
    let wanted = validity.unwrap_or(credential_left).min(credential_left);
    u32::try_from(wanted.as_secs())
        .unwrap_or(MAX_SECONDS)
        .clamp(MIN_SECONDS, MAX_SECONDS)
}

/// When the Secret's login counts as expired: the earlier of the login's own expiry and the
/// expiry of the credential that obtained it (both in cluster time).
pub fn effective_expiry(login_expires_at: Timestamp, credential_expires_at: Timestamp) -> Timestamp {
    login_expires_at.min(credential_expires_at)
}

/// The data of the image pull Secret for `login`, expiring (for tcred's schedule) at `expires_at`.
pub fn data(login: &RegistryLogin, expires_at: Timestamp) -> BTreeMap<String, ByteString> {
    let password = login.password.expose();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", login.username));
    let config = json!({
        "auths": {
            login.host.as_str(): {"username": login.username, "password": password, "auth": auth},
        }
    });
    BTreeMap::from([
        (
            keys::DOCKER_CONFIG_JSON.to_owned(),
            ByteString(config.to_string().into_bytes()),
        ),
        (
            keys::EXPIRES_AT.to_owned(),
            ByteString(rfc3339(expires_at).into_bytes()),
        ),
    ])
}

/// A login of the same shape as SWR's, for the dry run of a Secret write (no real login exists
/// before the mint that the dry run protects).
pub fn placeholder(host: String, expires_at: Timestamp) -> RegistryLogin {
    RegistryLogin {
        host,
        username: format!("region@{}", "X".repeat(20)),
        password: "x".repeat(64).into(),
        expires_at,
        clock_skew_seconds: None,
    }
}

/// Why a live Secret of the credential's name cannot hold what this credential writes, when its
/// type differs (a Secret's type is immutable: tcred never replaces one).
pub fn type_mismatch(live: &Secret, wanted: &str) -> Option<String> {
    let found = live.type_.as_deref().unwrap_or("Opaque");
    (found != wanted).then(|| {
        format!("it has type {found} and this TemporaryCredential writes type {wanted}, which cannot be changed in place")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn login() -> RegistryLogin {
        RegistryLogin {
            host: "swr.cn-north-4.myhuaweicloud.com".into(),
            username: "cn-north-4@ABCDEFGHIJ0123456789".into(),
            password: "6f0779072863d1ae".into(),
            expires_at: t(7_200),
            clock_skew_seconds: None,
        }
    }

    #[test]
    fn the_docker_config_holds_the_login_for_its_registry_only() {
        let d = data(&login(), t(3_600));
        let config: serde_json::Value = serde_json::from_slice(&d[keys::DOCKER_CONFIG_JSON].0).unwrap();
        let auths = config["auths"].as_object().unwrap();
        assert_eq!(auths.len(), 1);
        let entry = &auths["swr.cn-north-4.myhuaweicloud.com"];
        assert_eq!(entry["username"], "cn-north-4@ABCDEFGHIJ0123456789");
        assert_eq!(entry["password"], "6f0779072863d1ae");
        let auth = base64::engine::general_purpose::STANDARD
            .decode(entry["auth"].as_str().unwrap())
            .unwrap();
        assert_eq!(auth, b"cn-north-4@ABCDEFGHIJ0123456789:6f0779072863d1ae");
        assert_eq!(d[keys::EXPIRES_AT].0, b"1970-01-01T01:00:00Z");
        assert_eq!(d.len(), keys::ALL.len());
    }

    #[test]
    fn a_login_is_never_asked_for_longer_than_its_credential_has_left() {
        let h = |n: u64| Duration::from_secs(n * 3_600);
        assert_eq!(requested_seconds(None, h(1)), 3_600);
        assert_eq!(requested_seconds(Some(h(6)), h(1)), 3_600);
        assert_eq!(requested_seconds(Some(h(1)), h(6)), 3_600);
        // SWR's range: at least 15 minutes, at most 24 hours.
        assert_eq!(requested_seconds(None, Duration::from_secs(600)), 900);
        assert_eq!(requested_seconds(None, h(48)), 86_400);
        assert_eq!(requested_seconds(Some(Duration::MAX), Duration::MAX), 86_400);
    }

    #[test]
    fn the_earlier_expiry_counts() {
        assert_eq!(effective_expiry(t(10), t(20)), t(10));
        assert_eq!(effective_expiry(t(30), t(20)), t(20));
    }

    #[test]
    fn a_secret_of_another_type_is_reported_not_replaced() {
        let mut s = Secret::default();
        assert!(type_mismatch(&s, SECRET_TYPE).unwrap().contains("type Opaque"));
        assert!(type_mismatch(&s, "Opaque").is_none());
        s.type_ = Some(SECRET_TYPE.into());
        assert!(type_mismatch(&s, SECRET_TYPE).is_none());
    }
}
