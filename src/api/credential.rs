//! `TemporaryCredential`: what to mint (a permission set in an account, or an agency), where to put
//! it (a Secret) and when to renew it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::conditions_schema;

/// Agency URNs as Huawei IAM issues them: `iam::<32 hex digit account id>:agency:<name>` (the
/// controller checks the same in `authorize::parse_agency_urn`).
const AGENCY_URN_RULE: &str = r"self.matches('^iam::[0-9a-f]{32}:agency:[A-Za-z0-9_.-]{1,64}$')";
const AGENCY_URN_MESSAGE: &str =
    "agencyUrn must be iam::<account id: 32 lower-case hex digits>:agency:<name: 1-64 of A-Za-z0-9_.->";

const NON_EMPTY_SELECTOR_RULE: &str = "!has(self.selector) \
    || (has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) \
    || (has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)";

/// Label and annotation keys: an optional DNS-subdomain prefix (at most 253) and `/`, then a name
/// of at most 63, as the API server requires (a Secret it would refuse must be refused here, or
/// every write after a mint fails).
const METADATA_KEYS_RULE: &str = r"self.all(k, size(k) <= 317 && k.indexOf('/') <= 253 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))";
const METADATA_KEYS_MESSAGE: &str = "keys must be [prefix/]name: prefix a DNS subdomain (at most 253 characters), name at most 63 of A-Za-z0-9_.- starting and ending alphanumeric";
const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

fn labels_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN},
        "x-kubernetes-validations": [{"rule": METADATA_KEYS_RULE, "message": METADATA_KEYS_MESSAGE}],
    })
}

fn annotations_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": {"type": "string", "maxLength": 4096},
        "x-kubernetes-validations": [{"rule": METADATA_KEYS_RULE, "message": METADATA_KEYS_MESSAGE}],
    })
}

/// A short-lived Huawei Cloud credential (AK, SK, security token) that tcred mints from a
/// credential source and keeps fresh in a Secret, renewing it ahead of expiry.
// Each `printcolumn(...)` repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tcred.dev",
    version = "v1alpha1",
    kind = "TemporaryCredential",
    namespaced,
    shortname = "tcred",
    category = "tcred-all",
    status = "TemporaryCredentialStatus",
    derive = "PartialEq",
    doc = "A short-lived Huawei Cloud credential that tcred mints and keeps fresh in a Secret.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.sourceRef.name"),
    printcolumn(name = "Target", type_ = "string", json_path = ".status.target"),
    // Future times as `date` columns print "<invalid>" in kubectl; show them as they are.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Renewal", type_ = "string", json_path = ".status.renewalTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = "1",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        priority = "1",
        json_path = ".status.secretName"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.permissionSet) != has(self.agencyUrn)")
        .message("exactly one of permissionSet (identityCenter sources) or agencyUrn (accessKey and webIdentity sources) must be set"),
    validation = Rule::new("!has(self.duration) || has(self.agencyUrn)")
        .message("duration applies to agencyUrn credentials only; Identity Center credentials last the permission set's session duration"),
    validation = Rule::new("!(has(self.renewBefore) && has(self.renewBeforePercentage))")
        .message("set renewBefore or renewBeforePercentage, not both"),
    validation = Rule::new("!has(self.renewBefore) || !has(self.duration) || duration(self.renewBefore) < duration(self.duration)")
        .message("renewBefore must be shorter than duration"),
    validation = Rule::new("!has(self.serviceAccountName) || has(self.agencyUrn)")
        .message("serviceAccountName applies to webIdentity sources, which mint agencyUrn credentials"),
    validation = Rule::new("!has(self.imagePullSecret) || !has(self.podIdentity)")
        .message("an imagePullSecret credential holds only a registry login: it cannot be served with podIdentity"),
    validation = Rule::new("!has(self.imagePullSecret) || !has(self.secret) || ((!has(self.secret.formats) || size(self.secret.formats) == 0) && (!has(self.secret.keys) || size(self.secret.keys) == 0) && !has(self.secret.projectId) && !has(self.secret.region))")
        .message("an imagePullSecret credential holds only a registry login: secret.formats, secret.keys, secret.projectId and secret.region do not apply"),
    validation = Rule::new("has(self.imagePullSecret) == has(oldSelf.imagePullSecret)")
        .message("imagePullSecret cannot be added or removed (a Secret's type is immutable): create another TemporaryCredential"),
)]
pub struct TemporaryCredentialSpec {
    /// The CredentialSource (same namespace) or ClusterCredentialSource that tcred authenticates to
    /// Huawei Cloud with.
    pub source_ref: SourceRef,

    /// The Identity Center permission set to mint credentials for (identityCenter sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_set: Option<PermissionSetRef>,

    /// URN of the agency to assume, `iam::<account id>:agency:<agency name>` (accessKey and
    /// webIdentity sources): the account id is 32 lower-case hex digits, the agency name 1–64 of
    /// `[A-Za-z0-9_.-]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(AGENCY_URN_RULE).message(AGENCY_URN_MESSAGE))]
    #[schemars(length(max = 128))]
    pub agency_urn: Option<String>,

    /// Requested lifetime of each credential, 15m to 12h (agencyUrn credentials only; default 1h).
    /// Huawei Cloud may issue a shorter one (the agency's maximum session); tcred schedules from
    /// the expiry it returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('15m') && duration(self) <= duration('12h')")
        .message("duration must be between 15m and 12h"))]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub duration: Option<Duration>,

    /// Renew this long before expiry (at least 1m). Default: a third of the issued lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m')").message("renewBefore must be at least 1m"))]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub renew_before: Option<Duration>,

    /// Renew when this percentage of the issued lifetime remains (1 to 90). Default 33.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 90))]
    pub renew_before_percentage: Option<i32>,

    /// Session name recorded in Huawei Cloud audit logs. Default `<namespace>-<name>`, trimmed to
    /// Huawei's rules. Through a ClusterCredentialSource the name is always prefixed with
    /// `<namespace>-` (so one tenant cannot pose as another in the audit log), then cut to 64
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_+=,.@-]{2,64}$"))]
    pub session_name: Option<String>,

    /// Optional session policy (JSON, `{"Version":"5.0","Statement":[...]}`) that narrows what the
    /// credential may do (agencyUrn credentials only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 4096))]
    pub policy: Option<String>,

    /// ServiceAccount (in this namespace) whose token tcred exchanges for credentials (webIdentity
    /// sources only). Huawei's trust policy can pin `system:serviceaccount:<namespace>:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub service_account_name: Option<String>,

    /// The Secret tcred writes.
    #[serde(default)]
    pub secret: SecretSpec,

    /// Workloads (in this namespace) to restart when the credential rotates, for consumers that
    /// read it once at start-up (environment variables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,

    /// Serve this credential to pods of this namespace through tcred's credentials endpoint (the
    /// pod identity provider of Huawei's SDKs), so they pick up every rotation with no restart.
    /// Absent: not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<PodIdentity>,

    /// Write an image pull Secret for Huawei's SoftWare Repository for Container (SWR) instead of
    /// the credential: tcred mints the credential as usual, uses it once to obtain a temporary SWR
    /// login, and writes only that login, as a Secret of type `kubernetes.io/dockerconfigjson`
    /// for `swr.<region>.myhuaweicloud.com` (the credential itself is never written). Cannot be
    /// added or removed once the TemporaryCredential exists, nor combined with podIdentity.
    /// The source's principal needs the IAM action `swr::createLoginSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<ImagePullSecret>,
}

/// The SWR login an image pull Secret holds (docs/registry.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullSecret {
    /// The SWR region, e.g. `cn-north-4`: the registry is `swr.<region>.myhuaweicloud.com`.
    /// Default: the source's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2,}-[a-z]+-[0-9]{1,3}$"), length(max = 32))]
    pub region: Option<String>,
    /// How long each login is valid, 15m to 24h (SWR's range). It is never asked for longer than
    /// the credential that obtains it has left; default: that remaining lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('15m') && duration(self) <= duration('24h')")
        .message("imagePullSecret.validity must be between 15m and 24h"))]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub validity: Option<Duration>,
}

/// A DNS-1123 subdomain, as ServiceAccount names are.
const DNS_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

fn service_accounts_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 32,
        "x-kubernetes-list-type": "set",
        "items": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": DNS_SUBDOMAIN_PATTERN},
    })
}

/// Which pods may fetch the credential from the credentials endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodIdentity {
    /// ServiceAccounts of this namespace (1 to 32 names) whose tokens, issued for tcred's audience
    /// (`tcred.dev`), may fetch this credential. A pod opts in with the label
    /// `tcred.dev/pod-identity: <this credential's name>`.
    #[schemars(schema_with = "service_accounts_schema")]
    pub service_accounts: Vec<String>,
}

/// Reference to a credential source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// `CredentialSource` (default, same namespace) or `ClusterCredentialSource`.
    #[serde(default)]
    pub kind: SourceKind,
    /// Name of the source.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Which kind of source a `sourceRef` names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema, Hash)]
pub enum SourceKind {
    #[default]
    CredentialSource,
    ClusterCredentialSource,
}

/// An Identity Center permission set in an account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionSetRef {
    /// The account (domain) id the permission set is assigned in.
    #[schemars(regex(pattern = r"^[a-zA-Z0-9-]{1,64}$"))]
    pub account_id: String,
    /// The permission set's name, as listed in the user portal.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_+=,.@-]{1,32}$"))]
    pub name: String,
}

/// The Secret tcred writes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(super::secret_output::alias_source_rule())
        .message(super::secret_output::ALIAS_SOURCE_MESSAGE),
)]
pub struct SecretSpec {
    /// Name of the Secret (a DNS subdomain). Default: the TemporaryCredential's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: Option<String>,
    /// Extra labels on the Secret (at most 64): keys `[prefix/]name` (prefix a DNS subdomain of at
    /// most 253 characters, name at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends),
    /// values empty or at most 63 of the same characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "labels_schema")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the Secret (at most 32, each value at most 4096 characters, so they
    /// stay far below the API server's 256 KiB limit): keys as for labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "annotations_schema")]
    pub annotations: BTreeMap<String, String>,
    /// `Delete` (default): the Secret is owned by the TemporaryCredential and deleted with it.
    /// `Retain`: the Secret is kept when the TemporaryCredential is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Key sets for other consumers, written next to the Huawei SDK keys (which are always
    /// written): `obs` (OBS SDKs, obsutil), `terraform` (huaweicloud Terraform/Pulumi provider,
    /// `HW_*`), `aws` (S3-compatible clients on OBS: `AWS_*` and a shared-credentials file),
    /// `hadoop` (OBS connector `fs.obs.*`, as properties and as Hadoop XML). At most 8, no
    /// duplicates. Changing them rewrites the Secret without minting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::secret_output::formats_schema")]
    pub formats: Vec<String>,
    /// Extra names for keys tcred writes: `{<key tcred writes>: <additional key name>}` (at most
    /// 16). Each adds a copy under the new name; the original key stays (tcred reads its own keys
    /// back). The new name must be a valid Secret key (`[-._a-zA-Z0-9]`, at most 253) and must
    /// not be any key tcred can write, nor used twice. Changing them rewrites the Secret without
    /// minting.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::secret_output::key_aliases_schema")]
    pub keys: BTreeMap<String, String>,
    /// The project id to write (`HUAWEICLOUD_SDK_PROJECT_ID`, `project_id` in the INI file,
    /// `HW_PROJECT_ID`), so SDK clients for regional services do not look it up at IAM. Not
    /// looked up by tcred: without it, no project id is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9-]{1,64}$"))]
    pub project_id: Option<String>,
    /// The region to write for consumers that take one (`HW_REGION_NAME`), e.g. `ap-southeast-1`.
    /// It does not make tcred look a project id up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$"))]
    pub region: Option<String>,
}

/// What happens to the Secret when the TemporaryCredential is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

/// Workloads to restart after a rotation: one by `name`, or every one of `kind` whose labels match
/// `selector`. A workload whose pods were already restarted after the rotation (by tcred for
/// another credential, or by `kubectl rollout restart`) is not restarted again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.name) != has(self.selector)")
        .message("set exactly one of name or selector in a rolloutRestartTarget"),
    validation = Rule::new(NON_EMPTY_SELECTOR_RULE)
        .message("a rolloutRestartTarget selector must set matchLabels or matchExpressions: an empty selector would select every workload"),
)]
pub struct RolloutRestartTarget {
    /// Deployment, StatefulSet, DaemonSet or (Argo Rollouts) Rollout.
    pub kind: RestartKind,
    /// Name of the workload in the TemporaryCredential's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Label selector over the workloads of `kind` in the TemporaryCredential's namespace; it
    /// must set matchLabels or matchExpressions (an empty selector is refused). Only workloads
    /// whose annotation `tcred.dev/restart-on-rotation` lists this TemporaryCredential (or `*`)
    /// are restarted, named or selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Kinds of workload tcred can restart.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestartKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    /// An Argo Rollouts `Rollout` (`argoproj.io/v1alpha1`): restarted as `kubectl argo rollouts
    /// restart` does, by setting `spec.restartAt`. Needs the chart value
    /// `rbac.rolloutRestarts.argoRollouts`.
    Rollout,
}

/// Observed state of a TemporaryCredential. Never holds secret material.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemporaryCredentialStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (reasons Issued, Rotated, RenewalFailing, Expired, Denied, InvalidSpec,
    /// SourceNotReady, MintFailed) and `DurationAdjusted` when Huawei issued a shorter lifetime
    /// than requested.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// What is minted: `<account id>/<permission set>` or the agency URN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The Secret that holds the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Access key id of the current credential (the public half only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// When the current credential expires, as issued by Huawei Cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When tcred will mint the next credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    /// When the current credential was minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
    /// How many credentials tcred has minted for this object.
    #[serde(default)]
    pub rotations: i64,
    /// Consecutive failed mint attempts since the last success.
    #[serde(default)]
    pub failed_attempts: i32,
    /// When the last mint attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// The value of the `tcred.dev/rotate` annotation tcred last honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotate_request: Option<String>,
    /// The source's resourceVersion when the last mint failed: a change to the source (a new
    /// login, a fixed key) retries at once instead of waiting out the backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_source_version: Option<String>,
    /// The rotation after which tcred last restarted the rolloutRestartTargets; behind
    /// `rotations` means a restart is still owed (it is retried, also by a new leader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_rotation: Option<i64>,
    /// The last credentials tcred issued, newest first (at most 5; the public half only), so a key
    /// seen in Huawei's trace service (CTS) can be traced back to this object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub issued_credentials: Vec<IssuedCredentialRecord>,
}

/// One credential tcred issued: its access key id and lifetime (never its secret parts).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCredentialRecord {
    /// The access key id (the public half).
    pub access_key_id: String,
    /// When tcred minted it.
    pub issued_at: Time,
    /// When it expires, as issued by Huawei Cloud.
    pub expires_at: Time,
}
