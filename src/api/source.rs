//! `CredentialSource` (namespaced) and `ClusterCredentialSource` (cluster-scoped): how tcred
//! authenticates to Huawei Cloud, and the guardrails for the credentials minted through it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::conditions_schema;

const ONE_MODE: &str =
    "[has(self.identityCenter), has(self.accessKey), has(self.webIdentity)].filter(x, x).size() == 1";
const ONE_MODE_MESSAGE: &str = "exactly one of identityCenter, accessKey or webIdentity must be set";
const AUDIT_ACCESS_KEY_ONLY: &str = "!has(self.audit) || has(self.accessKey)";
const AUDIT_ACCESS_KEY_ONLY_MESSAGE: &str = "audit applies to accessKey sources only: AssumeAgencyWithOIDC and Identity Center credentials take no source_identity or session tags";

/// The most `audit.tags` a source may add: Huawei takes 20 session tags per call, and tcred's own
/// three (`sessionTags`) come first.
pub const MAX_EXTRA_TAGS: usize = 17;
/// The characters tcred keeps tag keys and values to (`cloud::audit`): IAM's tag characters
/// without spaces and `/`.
const TAG_PATTERN: &str = r"^[A-Za-z0-9_.:=+@-]*$";
const EXTRA_TAG_KEYS_RULE: &str = r"self.all(k, size(k) >= 1 && size(k) <= 128 && k.matches('^[A-Za-z0-9_.:=+@-]+$') && !k.lowerAscii().startsWith('tcred.') && !k.lowerAscii().startsWith('_sys_'))";
const EXTRA_TAG_KEYS_MESSAGE: &str = "tag keys are 1-128 characters of letters, digits and _.:=+@-, and may not start with tcred. (tcred's own tags) or _sys_ (Huawei's)";
const EXTRA_TAG_CASE_RULE: &str = "self.all(k, self.filter(j, j.lowerAscii() == k.lowerAscii()).size() == 1)";
const EXTRA_TAG_CASE_MESSAGE: &str = "two tag keys differ only in case";

fn extra_tags_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_EXTRA_TAGS,
        "additionalProperties": {"type": "string", "maxLength": 255, "pattern": TAG_PATTERN},
        "x-kubernetes-validations": [
            {"rule": EXTRA_TAG_KEYS_RULE, "message": EXTRA_TAG_KEYS_MESSAGE},
            {"rule": EXTRA_TAG_CASE_RULE, "message": EXTRA_TAG_CASE_MESSAGE},
        ],
    })
}

/// How tcred authenticates to Huawei Cloud for TemporaryCredentials in this namespace.
// Each `printcolumn(...)` repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tcred.dev",
    version = "v1alpha1",
    kind = "CredentialSource",
    namespaced,
    category = "tcred-all",
    status = "SourceStatus",
    derive = "PartialEq",
    doc = "How tcred authenticates to Huawei Cloud for TemporaryCredentials in this namespace.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.mode"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Session Expires",
        type_ = "string",
        json_path = ".status.sessionExpiresAt"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(ONE_MODE).message(ONE_MODE_MESSAGE),
    validation = Rule::new(AUDIT_ACCESS_KEY_ONLY).message(AUDIT_ACCESS_KEY_ONLY_MESSAGE),
    validation = Rule::new("!has(self.accessKey) || !has(self.accessKey.secretRef.__namespace__)")
        .message("a CredentialSource may only reference Secrets in its own namespace: remove secretRef.namespace"),
    validation = Rule::new("!has(self.identityCenter) || !has(self.identityCenter.sessionSecretRef.__namespace__)")
        .message("a CredentialSource may only reference Secrets in its own namespace: remove sessionSecretRef.namespace"),
)]
pub struct CredentialSourceSpec {
    /// Mint through an IAM Identity Center user session (set up with `tcred login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_center: Option<IdentityCenterSource>,
    /// Mint with STS AssumeAgency, signed with an IAM user's permanent access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<AccessKeySource>,
    /// Mint with STS AssumeAgencyWithOIDC, exchanging a Kubernetes ServiceAccount token; nothing
    /// secret is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_identity: Option<WebIdentitySource>,
    /// Endpoint overrides; by default derived from the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// Guardrails for every TemporaryCredential using this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<SourceLimits>,
    /// What AssumeAgency tells Huawei's trace service (CTS) about each session (accessKey sources
    /// only). Absent: nothing beyond the session name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSettings>,
}

/// How tcred authenticates to Huawei Cloud, usable from the namespaces it allows.
// Each `printcolumn(...)` repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tcred.dev",
    version = "v1alpha1",
    kind = "ClusterCredentialSource",
    category = "tcred-all",
    status = "SourceStatus",
    derive = "PartialEq",
    doc = "How tcred authenticates to Huawei Cloud, usable from the namespaces it allows.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.mode"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Session Expires",
        type_ = "string",
        json_path = ".status.sessionExpiresAt"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(ONE_MODE).message(ONE_MODE_MESSAGE),
    validation = Rule::new(AUDIT_ACCESS_KEY_ONLY).message(AUDIT_ACCESS_KEY_ONLY_MESSAGE),
    validation = Rule::new("!has(self.accessKey) || has(self.accessKey.secretRef.__namespace__)")
        .message("a ClusterCredentialSource must name the namespace of accessKey.secretRef"),
    validation = Rule::new("!has(self.identityCenter) || has(self.identityCenter.sessionSecretRef.__namespace__)")
        .message("a ClusterCredentialSource must name the namespace of identityCenter.sessionSecretRef"),
)]
pub struct ClusterCredentialSourceSpec {
    /// Mint through an IAM Identity Center user session (set up with `tcred login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_center: Option<IdentityCenterSource>,
    /// Mint with STS AssumeAgency, signed with an IAM user's permanent access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<AccessKeySource>,
    /// Mint with STS AssumeAgencyWithOIDC, exchanging a Kubernetes ServiceAccount token; nothing
    /// secret is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_identity: Option<WebIdentitySource>,
    /// Endpoint overrides; by default derived from the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// Namespaces whose TemporaryCredentials may use this source. Nobody may, unless listed by
    /// name or matched by the selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
    /// Guardrails for every TemporaryCredential using this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<SourceLimits>,
    /// What AssumeAgency tells Huawei's trace service (CTS) about each session (accessKey sources
    /// only). Absent: nothing beyond the session name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSettings>,
}

/// An IAM Identity Center user session, kept in a Secret written by `tcred login`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityCenterSource {
    /// Region where the Identity Center instance is enabled, e.g. `ap-southeast-1`.
    #[schemars(regex(pattern = r"^[a-z]{2,}-[a-z]+-[0-9]{1,3}$"))]
    pub region: String,
    /// The Secret holding the session (keys `accessToken`, `accessTokenExpiresAt`, `clientId`, ...).
    /// `namespace` is required on a ClusterCredentialSource and not allowed on a CredentialSource.
    pub session_secret_ref: SecretReference,
}

/// An IAM user's permanent access key, kept in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeySource {
    /// Region of the STS endpoint, e.g. `ap-southeast-1`.
    #[schemars(regex(pattern = r"^[a-z]{2,}-[a-z]+-[0-9]{1,3}$"))]
    pub region: String,
    /// The Secret holding keys `accessKeyId` and `secretAccessKey`. `namespace` is required on a
    /// ClusterCredentialSource and not allowed on a CredentialSource.
    pub secret_ref: SecretReference,
}

/// A trust agency that trusts this cluster's ServiceAccount token issuer, registered in Huawei
/// IAM as an OIDC identity provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebIdentitySource {
    /// Region of the STS endpoint, e.g. `ap-southeast-1`.
    #[schemars(regex(pattern = r"^[a-z]{2,}-[a-z]+-[0-9]{1,3}$"))]
    pub region: String,
    /// URN of the IAM OIDC identity provider, `iam::<account id>:oidcProvider:<name>`.
    #[schemars(
        length(max = 1500),
        regex(
            pattern = r"^[A-Za-z0-9+/=_-]+:[A-Za-z0-9+/=_*-]{0,255}:[A-Za-z0-9+/=_-]{1,64}:[A-Za-z0-9+/=_-]{1,64}:.+$"
        )
    )]
    pub provider_urn: String,
    /// Audience of the ServiceAccount token tcred requests (the provider's client id).
    /// Default `sts.huaweicloud`.
    #[serde(default = "default_audience")]
    #[schemars(length(min = 1, max = 256))]
    pub audience: String,
    /// Lifetime of the ServiceAccount token tcred requests for each exchange (10m to 1h, default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10m') && duration(self) <= duration('1h')")
        .message("tokenExpiration must be between 10m and 1h"))]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub token_expiration: Option<Duration>,
}

fn default_audience() -> String {
    "sts.huaweicloud".into()
}

/// A Secret by name; `namespace` only on ClusterCredentialSources.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Secret (ClusterCredentialSource only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// Endpoint overrides. `https` always; `http` only for loopback hosts (local simulators).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// Identity Center OIDC, default `https://oidc.<region>.myhuaweicloud.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(ENDPOINT_RULE).message(ENDPOINT_MESSAGE))]
    #[schemars(length(max = 512))]
    pub oidc: Option<String>,
    /// Identity Center portal, default `https://portal-identitycenter.myhuaweicloud.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(ENDPOINT_RULE).message(ENDPOINT_MESSAGE))]
    #[schemars(length(max = 512))]
    pub portal: Option<String>,
    /// STS, default `https://sts.<region>.myhuaweicloud.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(ENDPOINT_RULE).message(ENDPOINT_MESSAGE))]
    #[schemars(length(max = 512))]
    pub sts: Option<String>,
    /// SWR (image pull Secrets), default `https://swr-api.<region>.myhuaweicloud.com`, where
    /// `<region>` is the credential's `imagePullSecret.region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(ENDPOINT_RULE).message(ENDPOINT_MESSAGE))]
    #[schemars(length(max = 512))]
    pub swr: Option<String>,
}

const ENDPOINT_RULE: &str = r"self.matches('^https://[^/?#@]+(/[^?#]*)?$') || self.matches('^http://(127\\.0\\.0\\.1|localhost|\\[::1\\])(:[0-9]+)?(/[^?#]*)?$')";
const ENDPOINT_MESSAGE: &str = "endpoints must use https (http is allowed only for loopback hosts), with no user:password@, query or fragment";

/// Guardrails applied to every TemporaryCredential that uses a source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceLimits {
    /// Longest `duration` a TemporaryCredential may request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub max_duration: Option<Duration>,
    /// Accounts credentials may be minted in (permission set account, or the agency URN's account).
    /// Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_accounts: Vec<String>,
    /// Permission sets that may be minted (identityCenter sources). Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_permission_sets: Vec<String>,
    /// Agency names that may be assumed (accessKey and webIdentity sources). Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_agencies: Vec<String>,
}

/// What tcred sends with each AssumeAgency call so that Huawei's trace service (CTS) names the
/// Kubernetes namespace and TemporaryCredential behind a session (docs/security.md#audit-attribution).
/// tcred derives every value from the TemporaryCredential's namespace and name; a tenant cannot set
/// or replace them. Huawei requires `sts::setSourceIdentity` (source identity) and `sts::tagSession`
/// (tags) in the key owner's identity policy and the agency's trust policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditSettings {
    /// Send `source_identity` = `<namespace>.<name>` of the TemporaryCredential (cut to 64
    /// characters, ending in a hash of the whole when cut). CTS records it on every call made
    /// with the credential, and it cannot be changed further down an agency chain.
    #[serde(default)]
    pub source_identity: bool,
    /// Send session tags `tcred.namespace`, `tcred.credential` and `tcred.source`
    /// (`<kind>:<name>` of this source), usable as `g:PrincipalTag/...` in policy conditions.
    #[serde(default)]
    pub session_tags: bool,
    /// Mark the session tags (tcred's and `tags`) transitive, so they follow the session down an
    /// agency chain.
    #[serde(default)]
    pub transitive_tags: bool,
    /// Fixed session tags the source's owner adds to every AssumeAgency call made through this
    /// source, whatever `sessionTags` says: for example the cluster's name, so CTS tells clusters
    /// apart. At most 17 (Huawei takes 20 per call, tcred's own three included); keys 1–128 and
    /// values up to 255 characters of letters, digits and `_.:=+@-`; keys may not start with
    /// `tcred.` (tcred's own, which no source can forge) or `_sys_` (Huawei's), nor differ from
    /// another only in case.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "extra_tags_schema")]
    pub tags: BTreeMap<String, String>,
}

/// Namespaces allowed to use a ClusterCredentialSource: those listed by name, plus those whose
/// labels match the selector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// Namespace names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Label selector over namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Observed state of a source. Never holds secret material.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `identityCenter`, `accessKey` or `webIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `Ready`; for identityCenter sources also `SessionExpiringSoon` and `SessionExpired`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// When the Identity Center portal session ends (identityCenter sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_expires_at: Option<Time>,
    /// Access key id the source signs with (accessKey sources; the public half only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
}

/// One of the three ways to authenticate, borrowed from either source kind.
#[derive(Clone, Copy, Debug)]
pub enum SourceMode<'a> {
    IdentityCenter(&'a IdentityCenterSource),
    AccessKey(&'a AccessKeySource),
    WebIdentity(&'a WebIdentitySource),
}

impl SourceMode<'_> {
    /// The name used in status and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::IdentityCenter(_) => "identityCenter",
            Self::AccessKey(_) => "accessKey",
            Self::WebIdentity(_) => "webIdentity",
        }
    }

    pub fn region(&self) -> &str {
        match self {
            Self::IdentityCenter(s) => &s.region,
            Self::AccessKey(s) => &s.region,
            Self::WebIdentity(s) => &s.region,
        }
    }
}

/// The parts of a source the controller reads, whichever kind it is.
#[derive(Clone, Copy, Debug)]
pub struct SourceView<'a> {
    /// Exactly one mode when the spec passed validation; `None` for a spec the schema would
    /// reject (an object stored before the rules existed).
    pub mode: Option<SourceMode<'a>>,
    pub endpoints: Option<&'a Endpoints>,
    pub limits: Option<&'a SourceLimits>,
    /// `None` on a namespaced CredentialSource (usable from its own namespace only).
    pub allowed_namespaces: Option<&'a AllowedNamespaces>,
    pub audit: Option<&'a AuditSettings>,
}

fn mode_of<'a>(
    identity_center: &'a Option<IdentityCenterSource>,
    access_key: &'a Option<AccessKeySource>,
    web_identity: &'a Option<WebIdentitySource>,
) -> Option<SourceMode<'a>> {
    match (identity_center, access_key, web_identity) {
        (Some(s), None, None) => Some(SourceMode::IdentityCenter(s)),
        (None, Some(s), None) => Some(SourceMode::AccessKey(s)),
        (None, None, Some(s)) => Some(SourceMode::WebIdentity(s)),
        _ => None,
    }
}

impl CredentialSourceSpec {
    pub fn view(&self) -> SourceView<'_> {
        SourceView {
            mode: mode_of(&self.identity_center, &self.access_key, &self.web_identity),
            endpoints: self.endpoints.as_ref(),
            limits: self.limits.as_ref(),
            allowed_namespaces: None,
            audit: self.audit.as_ref(),
        }
    }
}

impl ClusterCredentialSourceSpec {
    pub fn view(&self) -> SourceView<'_> {
        SourceView {
            mode: mode_of(&self.identity_center, &self.access_key, &self.web_identity),
            endpoints: self.endpoints.as_ref(),
            limits: self.limits.as_ref(),
            allowed_namespaces: Some(self.allowed_namespaces.as_ref().unwrap_or(&NOBODY)),
            audit: self.audit.as_ref(),
        }
    }
}

static NOBODY: AllowedNamespaces = AllowedNamespaces {
    names: Vec::new(),
    selector: None,
};
