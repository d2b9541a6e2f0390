//! The `tcred.dev/v1alpha1` API: the three kinds, their conditions, the label and annotation keys
//! tcred owns, and CRD generation (`tcred crd`).

pub mod condition;
pub mod credential;
pub mod secret_output;
pub mod source;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use credential::{
    DeletionPolicy, ImagePullSecret, PermissionSetRef, RestartKind, RolloutRestartTarget, SecretSpec,
    SourceKind, SourceRef, TemporaryCredential, TemporaryCredentialSpec, TemporaryCredentialStatus,
};
pub use source::{
    AccessKeySource, AllowedNamespaces, ClusterCredentialSource, ClusterCredentialSourceSpec,
    CredentialSource, CredentialSourceSpec, Endpoints, IdentityCenterSource, SecretReference, SourceLimits,
    SourceMode, SourceStatus, SourceView, WebIdentitySource,
};

/// API group of every tcred kind.
pub const GROUP: &str = "tcred.dev";

/// Labels tcred sets (contract: docs/api.md).
pub mod labels {
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_VALUE: &str = "tcred";
    /// On managed Secrets: the owning TemporaryCredential's name.
    pub const CREDENTIAL: &str = "tcred.dev/credential";
    /// Selector for the Secrets tcred manages (and watches).
    pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=tcred";
}

/// Annotations tcred reads and writes.
pub mod annotations {
    /// On a TemporaryCredential: any new value forces one rotation.
    pub const ROTATE: &str = "tcred.dev/rotate";
    /// On the Secret: expiry of the credential it holds (RFC 3339), mirrors status.
    pub const EXPIRES_AT: &str = "tcred.dev/expires-at";
    /// On the Secret: when tcred will replace it, mirrors status.
    pub const RENEWAL_TIME: &str = "tcred.dev/renewal-time";
    /// On the Secret: when the credential it holds was issued.
    pub const ISSUED_AT: &str = "tcred.dev/issued-at";
    /// On the Secret: hash of the spec fields that shape the credential; a change re-mints.
    pub const SPEC_HASH: &str = "tcred.dev/spec-hash";
    /// On the Secret: hash of its data as tcred wrote it; a mismatch means it was edited.
    pub const DATA_HASH: &str = "tcred.dev/data-hash";
    /// On restarted workloads' pod templates: when tcred restarted them.
    pub const RESTARTED_AT: &str = "tcred.dev/restartedAt";
    /// On a ServiceAccount: the TemporaryCredentials (in its namespace; comma-separated, or `*`)
    /// that may have tcred request a token for it (webIdentity sources).
    pub const ALLOWED_CREDENTIALS: &str = "tcred.dev/allowed-credentials";
    /// On a Deployment, StatefulSet or DaemonSet: the TemporaryCredentials (comma-separated, or
    /// `*`) whose rotation may restart it.
    pub const RESTART_ON_ROTATION: &str = "tcred.dev/restart-on-rotation";
}

/// Whether the opt-in annotation `key` lists `name` (comma-separated names, or `*` for all).
/// A missing or empty annotation opts in nobody.
pub fn opted_in(annotations: &std::collections::BTreeMap<String, String>, key: &str, name: &str) -> bool {
    annotations.get(key).is_some_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|n| n == "*" || (!n.is_empty() && n == name))
    })
}

/// All CRDs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        TemporaryCredential::crd(),
        CredentialSource::crd(),
        ClusterCredentialSource::crd(),
    ]
}

/// One CRD as the YAML committed in `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(crd)
}

/// The file name a CRD is committed under in `crds/`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opt_in_annotation_lists_names_or_everyone() {
        let with = |v: &str| {
            std::collections::BTreeMap::from([(annotations::RESTART_ON_ROTATION.to_owned(), v.to_owned())])
        };
        let key = annotations::RESTART_ON_ROTATION;
        assert!(opted_in(&with("billing"), key, "billing"));
        assert!(opted_in(&with("web, billing ,jobs"), key, "billing"));
        assert!(opted_in(&with("*"), key, "anything"));
        assert!(!opted_in(&with("billing-2"), key, "billing"));
        assert!(!opted_in(&with(""), key, "billing"));
        assert!(!opted_in(&with(",,"), key, ""));
        assert!(!opted_in(&Default::default(), key, "billing"));
        // another key opts in nobody
        assert!(!opted_in(
            &with("billing"),
            annotations::ALLOWED_CREDENTIALS,
            "billing"
        ));
    }

    #[test]
    fn every_kind_is_in_the_group_with_category_and_status() {
        for crd in crds() {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&["tcred-all".to_owned()][..])
            );
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, "v1alpha1");
            assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        }
    }

    #[test]
    fn temporary_credential_has_short_name_and_contract_columns() {
        let crd = TemporaryCredential::crd();
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["tcred".to_owned()][..])
        );
        let cols: Vec<_> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(cols, ["Ready", "Source", "Target", "Expires", "Renewal", "Age"]);
        assert_eq!(ClusterCredentialSource::crd().spec.scope, "Cluster");
    }

    #[test]
    fn every_field_is_documented_for_kubectl_explain() {
        fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
                for (name, prop) in props {
                    let p = format!("{path}.{name}");
                    let builtin = ["metadata", "apiVersion", "kind"].contains(&name.as_str())
                        || path.contains(".conditions")
                        || path.contains(".selector");
                    if prop.get("description").is_none() && !builtin {
                        missing.push(p.clone());
                    }
                    walk(&p, prop, missing);
                }
            }
            if let Some(items) = v.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        let mut missing = Vec::new();
        for crd in crds() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            walk(&crd.spec.names.kind, &schema["openAPIV3Schema"], &mut missing);
        }
        assert!(missing.is_empty(), "fields without a description: {missing:#?}");
    }
}
