//! May this TemporaryCredential mint through this source? Pure checks: the namespace is allowed
//! (cluster sources), the spec fits the source's mode, and the source's limits hold.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

use crate::api::{
    AllowedNamespaces, SecretSpec, SourceKind, SourceLimits, SourceMode, SourceView, TemporaryCredentialSpec,
    condition::reasons,
};

/// Requested lifetime when a TemporaryCredential sets none (STS default).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(3600);

/// Why nothing is minted: a condition reason and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// What to mint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    PermissionSet {
        account_id: String,
        name: String,
    },
    Agency {
        urn: String,
        account_id: String,
        name: String,
    },
}

impl Target {
    /// Shown in status and the Target column.
    pub fn display(&self) -> String {
        match self {
            Self::PermissionSet { account_id, name } => format!("{account_id}/{name}"),
            Self::Agency { urn, .. } => urn.clone(),
        }
    }
}

/// The target named by the spec, before any source is consulted.
pub fn target_of(spec: &TemporaryCredentialSpec) -> Result<Target, Problem> {
    match (&spec.permission_set, &spec.agency_urn) {
        (Some(ps), None) => Ok(Target::PermissionSet {
            account_id: ps.account_id.clone(),
            name: ps.name.clone(),
        }),
        (None, Some(urn)) => {
            let (account_id, name) = parse_agency_urn(urn).ok_or_else(|| {
                Problem::new(
                    reasons::INVALID_SPEC,
                    format!(
                        "agencyUrn {urn:?} is not iam::<account id: 32 lower-case hex digits>:agency:<name: 1-64 of A-Za-z0-9_.->"
                    ),
                )
            })?;
            Ok(Target::Agency {
                urn: urn.clone(),
                account_id,
                name,
            })
        }
        _ => Err(Problem::new(
            reasons::INVALID_SPEC,
            "exactly one of permissionSet or agencyUrn must be set",
        )),
    }
}

/// `iam::<account>:agency:<name>` → (account, name), strictly as Huawei IAM issues agency URNs
/// (the CRD's rule is the same): the account id is 32 lower-case hex digits, the name 1–64 of
/// `[A-Za-z0-9_.-]`. Huawei receives the whole string, so nothing outside the checked parts may
/// ride along.
pub fn parse_agency_urn(urn: &str) -> Option<(String, String)> {
    let rest = urn.strip_prefix("iam::")?;
    let (account, name) = rest.split_once(":agency:")?;
    let account_ok = account.len() == 32
        && account
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let name_ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    (account_ok && name_ok).then(|| (account.to_owned(), name.to_owned()))
}

/// The schema's rules on `spec.secret`, checked again here for objects stored before the rules
/// existed: a Secret the API server would refuse must be refused before anything is minted.
pub fn check_secret_spec(secret: &SecretSpec) -> Result<(), Problem> {
    let invalid = |what: String| Problem::new(reasons::INVALID_SPEC, what);
    if let Some(name) = &secret.name
        && !is_dns_subdomain(name)
    {
        return Err(invalid(format!(
            "spec.secret.name {name:?} is not a DNS subdomain"
        )));
    }
    if secret.labels.len() > MAX_LABELS {
        return Err(invalid(format!(
            "spec.secret.labels has more than {MAX_LABELS} entries"
        )));
    }
    if secret.annotations.len() > MAX_ANNOTATIONS {
        return Err(invalid(format!(
            "spec.secret.annotations has more than {MAX_ANNOTATIONS} entries"
        )));
    }
    for (k, v) in &secret.labels {
        if !is_metadata_key(k) {
            return Err(invalid(format!(
                "spec.secret.labels key {k:?} is not a valid label key"
            )));
        }
        if !(v.is_empty() || is_qualified_name(v)) {
            return Err(invalid(format!(
                "spec.secret.labels value of {k:?} is not a valid label value"
            )));
        }
    }
    for (k, v) in &secret.annotations {
        if !is_metadata_key(k) {
            return Err(invalid(format!(
                "spec.secret.annotations key {k:?} is not a valid annotation key"
            )));
        }
        if v.chars().count() > MAX_ANNOTATION_VALUE {
            return Err(invalid(format!(
                "spec.secret.annotations value of {k:?} is longer than {MAX_ANNOTATION_VALUE} characters"
            )));
        }
    }
    Ok(())
}

const MAX_LABELS: usize = 64;
const MAX_ANNOTATIONS: usize = 32;
const MAX_ANNOTATION_VALUE: usize = 4096;

/// `[prefix/]name`: prefix a DNS subdomain of at most 253, name a qualified name.
pub fn is_metadata_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_qualified_name(name),
        None => is_qualified_name(key),
    }
}

/// At most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// At most 253, dot-separated labels of `[a-z0-9-]`, alphanumeric at both ends.
fn is_dns_subdomain(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.first()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && b.last()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Everything authorization looks at.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub namespace: &'a str,
    /// Labels of the TemporaryCredential's namespace (`None` when not known yet).
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    pub spec: &'a TemporaryCredentialSpec,
    pub source_kind: SourceKind,
    pub source_name: &'a str,
    pub source: SourceView<'a>,
}

/// An allowed request: how to mint, and what.
#[derive(Clone, Debug)]
pub struct Authorized<'a> {
    pub mode: SourceMode<'a>,
    pub target: Target,
    /// Requested lifetime for STS sources.
    pub duration: Option<Duration>,
}

pub fn authorize<'a>(req: Request<'a>) -> Result<Authorized<'a>, Problem> {
    let source_desc = match req.source_kind {
        SourceKind::CredentialSource => format!("CredentialSource {}/{}", req.namespace, req.source_name),
        SourceKind::ClusterCredentialSource => format!("ClusterCredentialSource {}", req.source_name),
    };
    let mode = req.source.mode.ok_or_else(|| {
        Problem::new(
            reasons::SOURCE_NOT_READY,
            format!("{source_desc} must set exactly one of identityCenter, accessKey or webIdentity"),
        )
    })?;
    if let Some(allowed) = req.source.allowed_namespaces {
        namespace_allowed(&req, allowed, &source_desc)?;
    }
    let target = target_of(req.spec)?;
    check_secret_spec(&req.spec.secret)?;
    let duration = duration_for(&mode, &target, req.spec, &source_desc)?;
    if let Some(limits) = req.source.limits {
        within_limits(limits, &target, duration, &source_desc)?;
    }
    Ok(Authorized {
        mode,
        target,
        duration,
    })
}

/// The namespace of the request is one `allowed` names or selects.
fn namespace_allowed(
    req: &Request<'_>,
    allowed: &AllowedNamespaces,
    source_desc: &str,
) -> Result<(), Problem> {
    // Fail closed: a selector evaluated against no labels would let `NotIn`/`DoesNotExist`
    // through while the namespace cache fills. The namespace's arrival re-triggers this.
    let Some(namespace_labels) = req.namespace_labels else {
        return Err(Problem::new(
            reasons::NAMESPACE_UNKNOWN,
            format!("waiting for namespace {} to be known", req.namespace),
        ));
    };
    let by_name = allowed.names.iter().any(|n| n == req.namespace);
    let by_selector = match &allowed.selector {
        Some(sel) => selector_matches(sel, namespace_labels).map_err(|e| {
            Problem::new(
                reasons::DENIED,
                format!("{source_desc} has an invalid namespace selector: {e}"),
            )
        })?,
        None => false,
    };
    if !by_name && !by_selector {
        return Err(Problem::new(
            reasons::DENIED,
            format!(
                "namespace {} is not allowed to use {source_desc} (see its spec.allowedNamespaces)",
                req.namespace
            ),
        ));
    }
    Ok(())
}

/// The lifetime to request (STS sources only), once the target fits the source's mode.
fn duration_for(
    mode: &SourceMode<'_>,
    target: &Target,
    spec: &TemporaryCredentialSpec,
    source_desc: &str,
) -> Result<Option<Duration>, Problem> {
    let duration = match (mode, target) {
        (SourceMode::IdentityCenter(_), Target::PermissionSet { .. }) => None,
        (SourceMode::IdentityCenter(_), Target::Agency { .. }) => {
            return Err(Problem::new(
                reasons::INVALID_SPEC,
                format!("{source_desc} is an identityCenter source: set permissionSet, not agencyUrn"),
            ));
        }
        (_, Target::PermissionSet { .. }) => {
            return Err(Problem::new(
                reasons::INVALID_SPEC,
                format!(
                    "{source_desc} is a {} source: set agencyUrn, not permissionSet",
                    mode.name()
                ),
            ));
        }
        (_, Target::Agency { .. }) => Some(spec.duration.map(Duration::from).unwrap_or(DEFAULT_DURATION)),
    };
    if matches!(mode, SourceMode::WebIdentity(_)) && spec.service_account_name.is_none() {
        return Err(Problem::new(
            reasons::INVALID_SPEC,
            format!(
                "{source_desc} is a webIdentity source: set serviceAccountName to the ServiceAccount whose token is exchanged"
            ),
        ));
    }
    Ok(duration)
}

/// The duration, account, permission set and agency are within the source's limits.
fn within_limits(
    limits: &SourceLimits,
    target: &Target,
    duration: Option<Duration>,
    source_desc: &str,
) -> Result<(), Problem> {
    let denied = |message: String| Err(Problem::new(reasons::DENIED, message));
    if let (Some(max), Some(d)) = (limits.max_duration, duration)
        && d > Duration::from(max)
    {
        return denied(format!(
            "duration {}s exceeds the {}s allowed by {source_desc}",
            d.as_secs(),
            Duration::from(max).as_secs()
        ));
    }
    let (account, ps, agency) = match target {
        Target::PermissionSet { account_id, name } => (account_id, Some(name), None),
        Target::Agency { account_id, name, .. } => (account_id, None, Some(name)),
    };
    if !limits.allowed_accounts.is_empty() && !limits.allowed_accounts.contains(account) {
        return denied(format!("account {account} is not allowed by {source_desc}"));
    }
    if let Some(ps) = ps
        && !limits.allowed_permission_sets.is_empty()
        && !limits.allowed_permission_sets.contains(ps)
    {
        return denied(format!("permission set {ps} is not allowed by {source_desc}"));
    }
    if let Some(agency) = agency
        && !limits.allowed_agencies.is_empty()
        && !limits.allowed_agencies.contains(agency)
    {
        return denied(format!("agency {agency} is not allowed by {source_desc}"));
    }
    Ok(())
}

/// Kubernetes label selector semantics (kube's own `Selector`): every matchLabels pair and every
/// expression must hold; `In`/`NotIn` without values and unknown operators are errors. An empty
/// selector matches everything, as in Kubernetes.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    let selector = Selector::try_from(sel.clone()).map_err(|e| e.to_string())?;
    Ok(selector.matches(labels))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use kube::core::Duration as KubeDuration;

    use super::*;
    use crate::{
        api::{
            AccessKeySource, AllowedNamespaces, IdentityCenterSource, PermissionSetRef, SecretReference,
            SourceLimits, WebIdentitySource,
        },
        controller::fixtures::tc,
    };

    fn access_key() -> AccessKeySource {
        AccessKeySource {
            region: "ap-southeast-1".into(),
            secret_ref: SecretReference {
                name: "ak".into(),
                namespace: None,
            },
        }
    }

    fn view<'a>(
        mode: SourceMode<'a>,
        allowed: Option<&'a AllowedNamespaces>,
        limits: Option<&'a SourceLimits>,
    ) -> SourceView<'a> {
        SourceView {
            mode: Some(mode),
            endpoints: None,
            limits,
            allowed_namespaces: allowed,
            audit: None,
        }
    }

    fn request<'a>(
        spec: &'a TemporaryCredentialSpec,
        source: SourceView<'a>,
        labels: Option<&'a BTreeMap<String, String>>,
    ) -> Request<'a> {
        Request {
            namespace: "team-a",
            namespace_labels: labels,
            spec,
            source_kind: if source.allowed_namespaces.is_some() {
                SourceKind::ClusterCredentialSource
            } else {
                SourceKind::CredentialSource
            },
            source_name: "corp",
            source,
        }
    }

    #[test]
    fn a_namespaced_source_serves_its_own_namespace() {
        let ak = access_key();
        let t = tc("billing");
        let a = authorize(request(
            &t.spec,
            view(SourceMode::AccessKey(&ak), None, None),
            None,
        ))
        .unwrap();
        assert_eq!(a.duration, Some(DEFAULT_DURATION));
        assert!(
            matches!(a.target, Target::Agency { ref account_id, ref name, .. } if account_id == "0123456789abcdef0123456789abcdef" && name == "ops")
        );
    }

    #[test]
    fn a_cluster_source_allows_nobody_unless_listed_or_selected() {
        let ak = access_key();
        let t = tc("billing");
        let nobody = AllowedNamespaces::default();
        let unlabelled = BTreeMap::new();
        let err = authorize(request(
            &t.spec,
            view(SourceMode::AccessKey(&ak), Some(&nobody), None),
            Some(&unlabelled),
        ))
        .unwrap_err();
        assert_eq!(err.reason, reasons::DENIED);
        assert!(
            err.message.contains("namespace team-a is not allowed"),
            "{}",
            err.message
        );

        let by_name = AllowedNamespaces {
            names: vec!["team-a".into()],
            selector: None,
        };
        assert!(
            authorize(request(
                &t.spec,
                view(SourceMode::AccessKey(&ak), Some(&by_name), None),
                Some(&unlabelled)
            ))
            .is_ok()
        );

        let by_label = AllowedNamespaces {
            names: vec![],
            selector: Some(LabelSelector {
                match_labels: Some([("tcred.dev/tenant".to_owned(), "true".to_owned())].into()),
                match_expressions: None,
            }),
        };
        let tenant: BTreeMap<String, String> = [("tcred.dev/tenant".to_owned(), "true".to_owned())].into();
        let other: BTreeMap<String, String> = [("tcred.dev/tenant".to_owned(), "false".to_owned())].into();
        assert!(
            authorize(request(
                &t.spec,
                view(SourceMode::AccessKey(&ak), Some(&by_label), None),
                Some(&tenant)
            ))
            .is_ok()
        );
        assert!(
            authorize(request(
                &t.spec,
                view(SourceMode::AccessKey(&ak), Some(&by_label), None),
                Some(&other)
            ))
            .is_err()
        );
        assert!(
            authorize(request(
                &t.spec,
                view(SourceMode::AccessKey(&ak), Some(&by_label), None),
                None
            ))
            .is_err()
        );
    }

    #[test]
    fn limits_deny_long_durations_and_foreign_accounts_agencies_and_permission_sets() {
        let ak = access_key();
        let mut t = tc("billing");
        t.spec.duration = Some(KubeDuration::from(Duration::from_secs(7200)));
        let limits = SourceLimits {
            max_duration: Some(Duration::from_secs(3600).into()),
            ..Default::default()
        };
        let e = authorize(request(
            &t.spec,
            view(SourceMode::AccessKey(&ak), None, Some(&limits)),
            None,
        ))
        .unwrap_err();
        assert_eq!(e.reason, reasons::DENIED);
        assert!(
            e.message.contains("duration 7200s exceeds the 3600s"),
            "{}",
            e.message
        );

        let t = tc("billing");
        let limits = SourceLimits {
            allowed_accounts: vec!["another".into()],
            ..Default::default()
        };
        let e = authorize(request(
            &t.spec,
            view(SourceMode::AccessKey(&ak), None, Some(&limits)),
            None,
        ))
        .unwrap_err();
        assert!(
            e.message
                .contains("account 0123456789abcdef0123456789abcdef is not allowed"),
            "{}",
            e.message
        );

        let limits = SourceLimits {
            allowed_agencies: vec!["readonly".into()],
            ..Default::default()
        };
        assert!(
            authorize(request(
                &t.spec,
                view(SourceMode::AccessKey(&ak), None, Some(&limits)),
                None
            ))
            .is_err()
        );

        let ic = IdentityCenterSource {
            region: "ap-southeast-1".into(),
            session_secret_ref: SecretReference {
                name: "s".into(),
                namespace: None,
            },
        };
        let mut t = tc("billing");
        t.spec.agency_urn = None;
        t.spec.permission_set = Some(PermissionSetRef {
            account_id: "acct".into(),
            name: "Admin".into(),
        });
        let limits = SourceLimits {
            allowed_permission_sets: vec!["ReadOnlyAccess".into()],
            ..Default::default()
        };
        let e = authorize(request(
            &t.spec,
            view(SourceMode::IdentityCenter(&ic), None, Some(&limits)),
            None,
        ))
        .unwrap_err();
        assert!(
            e.message.contains("permission set Admin is not allowed"),
            "{}",
            e.message
        );
        let limits = SourceLimits {
            allowed_permission_sets: vec!["Admin".into()],
            ..Default::default()
        };
        let a = authorize(request(
            &t.spec,
            view(SourceMode::IdentityCenter(&ic), None, Some(&limits)),
            None,
        ))
        .unwrap();
        assert_eq!(a.duration, None);
        assert_eq!(a.target.display(), "acct/Admin");
    }

    #[test]
    fn the_spec_must_fit_the_source_mode() {
        let ic = IdentityCenterSource {
            region: "ap-southeast-1".into(),
            session_secret_ref: SecretReference {
                name: "s".into(),
                namespace: None,
            },
        };
        let t = tc("billing");
        let e = authorize(request(
            &t.spec,
            view(SourceMode::IdentityCenter(&ic), None, None),
            None,
        ))
        .unwrap_err();
        assert_eq!(e.reason, reasons::INVALID_SPEC);

        let wi = WebIdentitySource {
            region: "ap-southeast-1".into(),
            provider_urn: "iam::0123:oidcProvider:k8s".into(),
            audience: "sts.huaweicloud".into(),
            token_expiration: None,
        };
        let e = authorize(request(
            &t.spec,
            view(SourceMode::WebIdentity(&wi), None, None),
            None,
        ))
        .unwrap_err();
        assert!(e.message.contains("serviceAccountName"), "{}", e.message);
        let mut t = tc("billing");
        t.spec.service_account_name = Some("billing".into());
        assert!(
            authorize(request(
                &t.spec,
                view(SourceMode::WebIdentity(&wi), None, None),
                None
            ))
            .is_ok()
        );
    }

    #[test]
    fn selector_expressions_follow_kubernetes_semantics() {
        let labels: BTreeMap<String, String> = [("env".to_owned(), "prod".to_owned())].into();
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
            }]),
        };
        assert_eq!(
            selector_matches(&expr("In", &["prod", "stage"]), &labels),
            Ok(true)
        );
        assert_eq!(selector_matches(&expr("NotIn", &["prod"]), &labels), Ok(false));
        assert_eq!(selector_matches(&expr("Exists", &[]), &labels), Ok(true));
        assert_eq!(selector_matches(&expr("DoesNotExist", &[]), &labels), Ok(false));
        assert!(selector_matches(&expr("Near", &[]), &labels).is_err());
        assert_eq!(selector_matches(&LabelSelector::default(), &labels), Ok(true));
        // `In` without values is refused by Kubernetes; so it is here, rather than matching nothing.
        let no_values = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "In".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(selector_matches(&no_values, &labels).is_err());
    }

    const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn agency_urns_split_into_account_and_name() {
        assert_eq!(
            parse_agency_urn(&format!("iam::{ACCOUNT}:agency:ops-admin_1.x")),
            Some((ACCOUNT.into(), "ops-admin_1.x".into()))
        );
        assert_eq!(parse_agency_urn(&format!("iam::{ACCOUNT}:user:ops")), None);
        assert_eq!(parse_agency_urn("iam::acct"), None);
    }

    #[test]
    fn agency_urns_are_checked_strictly() {
        let name64 = "a".repeat(64);
        assert!(parse_agency_urn(&format!("iam::{ACCOUNT}:agency:{name64}")).is_some());
        for bad in [
            "iam::acct:agency:ops".to_owned(),                     // short account
            format!("iam::{}:agency:ops", ACCOUNT.to_uppercase()), // upper-case hex
            format!("iam::{ACCOUNT}0:agency:ops"),                 // 33 digits
            format!("iam:ap-southeast-1:{ACCOUNT}:agency:ops"),    // a region segment
            format!("sts::{ACCOUNT}:agency:ops"),                  // another service
            format!("iam::{ACCOUNT}:agency:"),                     // no name
            format!("iam::{ACCOUNT}:agency:{name64}a"),            // 65 characters
            format!("iam::{ACCOUNT}:agency:ops:extra"),            // a trailing segment
            format!("iam::{ACCOUNT}:agency:ops/../admin"),         // path characters
            format!("iam::{ACCOUNT}:agency:ops\n"),                // control characters
        ] {
            assert_eq!(parse_agency_urn(&bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever a tenant writes, parsing never panics, and an accepted URN is exactly
        /// `iam::<account>:agency:<name>` of its parts, with the parts' strict alphabets.
        #[test]
        fn an_accepted_agency_urn_is_exactly_its_checked_parts(urn in "(iam::)?[0-9a-fA-F:]{0,40}(:agency:)?[A-Za-z0-9_.:/ -]{0,70}") {
            if let Some((account, name)) = parse_agency_urn(&urn) {
                proptest::prop_assert_eq!(format!("iam::{account}:agency:{name}"), urn);
                proptest::prop_assert!(account.len() == 32 && account.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
                proptest::prop_assert!(!name.is_empty() && name.len() <= 64);
                proptest::prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
            }
        }
    }

    #[test]
    fn secret_labels_annotations_and_names_the_api_server_would_refuse_are_refused() {
        let ok = |f: &dyn Fn(&mut SecretSpec)| {
            let mut s = SecretSpec::default();
            f(&mut s);
            check_secret_spec(&s)
        };
        assert!(
            ok(&|s| {
                s.name = Some("billing.creds-1".into());
                s.labels = [
                    ("app.kubernetes.io/part-of".to_owned(), "billing".to_owned()),
                    ("a".to_owned(), String::new()),
                    ("X_y.z-1".to_owned(), "V_1.2-3".to_owned()),
                    (
                        format!("{}.example.com/{}", "a".repeat(63), "n".repeat(63)),
                        "v".repeat(63),
                    ),
                ]
                .into();
                s.annotations = [("example.com/note".to_owned(), "x".repeat(4096))].into();
            })
            .is_ok()
        );
        let refused: [&dyn Fn(&mut SecretSpec); 9] = [
            &|s| s.name = Some("a..b".into()),
            &|s| s.name = Some("Billing".into()),
            &|s| s.labels = [("bad key!".to_owned(), "x".to_owned())].into(),
            &|s| s.labels = [(format!("{}/x", "a".repeat(254)), "x".to_owned())].into(),
            &|s| s.labels = [("team".to_owned(), "not a value".to_owned())].into(),
            &|s| s.labels = [("team".to_owned(), "x".repeat(64))].into(),
            &|s| s.annotations = [("-bad".to_owned(), "x".to_owned())].into(),
            &|s| s.annotations = [("note".to_owned(), "x".repeat(4097))].into(),
            &|s| s.annotations = (0..33).map(|i| (format!("k{i}"), "v".to_owned())).collect(),
        ];
        for (i, f) in refused.iter().enumerate() {
            let e = ok(*f).expect_err(&format!("case {i} accepted"));
            assert_eq!(e.reason, reasons::INVALID_SPEC);
        }
        // and authorization refuses before anything is minted
        let ak = access_key();
        let mut t = tc("billing");
        t.spec.secret.labels = [("bad key!".to_owned(), "x".to_owned())].into();
        let e = authorize(request(
            &t.spec,
            view(SourceMode::AccessKey(&ak), None, None),
            None,
        ))
        .unwrap_err();
        assert!(e.message.contains("spec.secret.labels key"), "{}", e.message);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Keys built by Kubernetes' grammar are accepted; anything else never panics, and an
        /// accepted key never holds a character outside the grammar.
        #[test]
        fn metadata_keys_follow_the_kubernetes_grammar(
            prefix in proptest::option::of("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?){0,3}"),
            name in "[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?",
            noise in "\\PC{0,80}",
        ) {
            let key = match &prefix { Some(p) => format!("{p}/{name}"), None => name.clone() };
            proptest::prop_assert!(is_metadata_key(&key), "{} refused", key);
            if is_metadata_key(&noise) {
                proptest::prop_assert!(noise.len() <= 317);
                proptest::prop_assert!(noise.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_./".contains(&c)));
            }
        }
    }

    #[test]
    fn an_unknown_namespace_waits_rather_than_matching_an_empty_label_set() {
        let ak = access_key();
        let t = tc("billing");
        // `NotIn` and `DoesNotExist` match a namespace without labels: they must not be evaluated
        // before its labels are known.
        let excluding = AllowedNamespaces {
            names: vec![],
            selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "tcred.dev/excluded".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                }]),
            }),
        };
        let e = authorize(request(
            &t.spec,
            view(SourceMode::AccessKey(&ak), Some(&excluding), None),
            None,
        ))
        .unwrap_err();
        assert_eq!(e.reason, reasons::NAMESPACE_UNKNOWN);
        assert_eq!(e.message, "waiting for namespace team-a to be known");
        // even a namespace allowed by name waits: nothing is decided on a cache that is not filled
        let by_name = AllowedNamespaces {
            names: vec!["team-a".into()],
            selector: None,
        };
        let e = authorize(request(
            &t.spec,
            view(SourceMode::AccessKey(&ak), Some(&by_name), None),
            None,
        ))
        .unwrap_err();
        assert_eq!(e.reason, reasons::NAMESPACE_UNKNOWN);
        // once known, the selector decides
        let excluded: BTreeMap<String, String> = [("tcred.dev/excluded".to_owned(), "yes".to_owned())].into();
        let e = authorize(request(
            &t.spec,
            view(SourceMode::AccessKey(&ak), Some(&excluding), None),
            Some(&excluded),
        ))
        .unwrap_err();
        assert_eq!(e.reason, reasons::DENIED);
        let plain = BTreeMap::new();
        assert!(
            authorize(request(
                &t.spec,
                view(SourceMode::AccessKey(&ak), Some(&excluding), None),
                Some(&plain),
            ))
            .is_ok()
        );
        // a namespaced source needs no namespace labels
        assert!(
            authorize(request(
                &t.spec,
                view(SourceMode::AccessKey(&ak), None, None),
                None
            ))
            .is_ok()
        );
    }
}
