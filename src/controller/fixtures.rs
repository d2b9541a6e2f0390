//! Test fixtures: builders that read like the objects they stand for.

use jiff::Timestamp;
use kube::api::ObjectMeta;

use crate::{
    api::{SourceRef, TemporaryCredential, TemporaryCredentialSpec},
    cloud::IssuedCredential,
};

/// A TemporaryCredential `name` in namespace `team-a`, assuming an agency through source `corp`.
pub fn tc(name: &str) -> TemporaryCredential {
    TemporaryCredential {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            uid: Some(format!("uid-{name}")),
            generation: Some(1),
            ..Default::default()
        },
        spec: TemporaryCredentialSpec {
            source_ref: SourceRef {
                kind: Default::default(),
                name: "corp".into(),
            },
            permission_set: None,
            agency_urn: Some("iam::0123456789abcdef0123456789abcdef:agency:ops".into()),
            duration: None,
            renew_before: None,
            renew_before_percentage: None,
            session_name: None,
            policy: None,
            service_account_name: None,
            secret: Default::default(),
            rollout_restart_targets: vec![],
            pod_identity: None,
            image_pull_secret: None,
        },
        status: None,
    }
}

/// A credential with access key `ak` that expires `expires_at_second` seconds after the epoch.
pub fn credential(ak: &str, expires_at_second: i64) -> IssuedCredential {
    IssuedCredential {
        access_key_id: ak.into(),
        secret_access_key: format!("SK-for-{ak}").into(),
        security_token: format!("token-for-{ak}").into(),
        expires_at: Timestamp::from_second(expires_at_second).unwrap(),
        clock_skew_seconds: None,
    }
}
