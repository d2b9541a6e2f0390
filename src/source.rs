//! A credential source, of either kind (CredentialSource, ClusterCredentialSource): what both
//! controllers ask of one, the Secrets it references (their namespace, their binding labels,
//! their keys) and the one strict reader of a Secret key. A leaf: it knows the API types, not
//! the controllers (docs/controller.md §Sources, docs/api.md §`CredentialSource` / `ClusterCredentialSource`).

use std::{collections::BTreeMap, fmt, fmt::Debug, sync::Arc};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Resource, ResourceExt, core::DeserializeGuard};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    api::{
        ClusterCredentialSource, CredentialSource, SecretReference, SourceKind, SourceStatus, SourceView,
        condition::reasons,
    },
    cloud::endpoints::{EndpointPolicy, Overrides},
    controller::authorize::Problem,
    metrics::source_label,
};

/// Key of an accessKey source's Secret holding the access key id.
pub const ACCESS_KEY_ID: &str = "accessKeyId";
/// Key of an accessKey source's Secret holding the secret access key.
pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";

/// Keys of an Identity Center session Secret (written by `tcred login`, refreshed by the source
/// controller).
pub mod session_keys {
    pub const REGION: &str = "region";
    pub const START_URL: &str = "startUrl";
    pub const CLIENT_ID: &str = "clientId";
    pub const CLIENT_SECRET: &str = "clientSecret";
    pub const CLIENT_SECRET_EXPIRES_AT: &str = "clientSecretExpiresAt";
    pub const ACCESS_TOKEN: &str = "accessToken";
    pub const ACCESS_TOKEN_EXPIRES_AT: &str = "accessTokenExpiresAt";
    pub const REFRESH_TOKEN: &str = "refreshToken";
    /// Additive to the contract: when the access token was issued, so a refresh can happen at a
    /// fixed share of its lifetime.
    pub const ACCESS_TOKEN_ISSUED_AT: &str = "accessTokenIssuedAt";
}

/// Labels binding a Secret to the one source that may use it.
pub mod binding_labels {
    pub const SOURCE_KIND: &str = "tcred.dev/source-kind";
    pub const SOURCE_NAME: &str = "tcred.dev/source-name";
}

/// Why a Secret key cannot be used. Names the key, never a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    Missing,
    NotUtf8,
    Empty,
}

impl KeyError {
    /// `key K is missing` and so on.
    pub fn describe(self, key: &str) -> String {
        match self {
            Self::Missing => format!("key {key} is missing"),
            Self::NotUtf8 => format!("key {key} is not UTF-8"),
            Self::Empty => format!("key {key} is empty"),
        }
    }
}

/// Reads a text key of a Secret: present, UTF-8, and not blank; surrounding whitespace (a
/// newline left by `kubectl create secret --from-file`) is trimmed. The one way tcred reads a
/// key, so a source is never Ready on a key that every mint then refuses.
pub fn read_key(secret: &Secret, key: &str) -> Result<String, KeyError> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or(KeyError::Missing)?;
    let text = std::str::from_utf8(&bytes.0)
        .map_err(|_| KeyError::NotUtf8)?
        .trim();
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    Ok(text.to_owned())
}

/// The name of a source kind, as the API and the binding labels spell it.
pub fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::CredentialSource => "CredentialSource",
        SourceKind::ClusterCredentialSource => "ClusterCredentialSource",
    }
}

/// Where a Secret referenced by a source of `kind` in `source_namespace` lives: a
/// CredentialSource references only Secrets of its own namespace (the schema forbids naming
/// another; this holds for objects stored around it too), a ClusterCredentialSource names the
/// namespace of each.
pub fn secret_namespace(
    kind: SourceKind,
    source_namespace: Option<&str>,
    r: &SecretReference,
) -> Result<String, Problem> {
    match (kind, &r.namespace) {
        (SourceKind::CredentialSource, None) => Ok(source_namespace.unwrap_or_default().to_owned()),
        (SourceKind::CredentialSource, Some(_)) => Err(Problem::new(
            reasons::SOURCE_NOT_READY,
            "a CredentialSource may only reference Secrets in its own namespace",
        )),
        (SourceKind::ClusterCredentialSource, Some(ns)) => Ok(ns.clone()),
        (SourceKind::ClusterCredentialSource, None) => Err(Problem::new(
            reasons::SOURCE_NOT_READY,
            "a ClusterCredentialSource must name the namespace of each Secret",
        )),
    }
}

/// How a source's endpoint overrides are checked: a namespaced source is written by a tenant,
/// so its endpoints must be allowed by the administrator; a cluster source's are the
/// administrator's.
pub fn overrides(kind: SourceKind, policy: &EndpointPolicy) -> Overrides<'_> {
    match kind {
        SourceKind::CredentialSource => Overrides::Namespaced(policy),
        SourceKind::ClusterCredentialSource => Overrides::Admin,
    }
}

/// Why a source may not use a Secret, or `None` when the Secret is labelled for it: a source
/// uses a Secret only when its labels `tcred.dev/source-kind` and `tcred.dev/source-name` name
/// that source (`tcred login` writes them), so a second source cannot borrow another's session or
/// access key (and bypass its limits, or send its tokens to another endpoint).
pub fn binding_problem(
    secret_labels: &BTreeMap<String, String>,
    kind: SourceKind,
    source: &str,
    namespace: &str,
    secret: &str,
) -> Option<Problem> {
    let kind_name = kind_name(kind);
    let bound = secret_labels.get(binding_labels::SOURCE_KIND).map(String::as_str) == Some(kind_name)
        && secret_labels.get(binding_labels::SOURCE_NAME).map(String::as_str) == Some(source);
    (!bound).then(|| {
        Problem::new(
            reasons::SECRET_NOT_BOUND,
            format!(
                "Secret {namespace}/{secret} is not bound to {kind_name} {source}: label it {k}={kind_name} and {n}={source} \
                 (kubectl label secret -n {namespace} {secret} {k}={kind_name} {n}={source})",
                k = binding_labels::SOURCE_KIND,
                n = binding_labels::SOURCE_NAME,
            ),
        )
    })
}

/// What the controllers need from either source kind.
pub trait SourceResource:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    const KIND: SourceKind;
    fn view(&self) -> SourceView<'_>;
    fn source_status(&self) -> Option<&SourceStatus>;
    /// How `tcred login` names this source.
    fn login_hint(&self) -> String;
    /// The API for objects of this kind where this one lives (namespaced or cluster-scoped).
    fn api(&self, client: kube::Client) -> Api<Self>;

    /// Where a Secret this source references lives (see [`secret_namespace`]).
    fn secret_namespace(&self, r: &SecretReference) -> Result<String, Problem> {
        secret_namespace(Self::KIND, self.meta().namespace.as_deref(), r)
    }

    /// Refuses a Secret not labelled for this source, before anything else is read from it.
    fn check_bound(&self, secret: &Secret) -> Result<(), Problem> {
        let namespace = secret.namespace().unwrap_or_default();
        binding_problem(
            secret.labels(),
            Self::KIND,
            &self.name_any(),
            &namespace,
            &secret.name_any(),
        )
        .map_or(Ok(()), Err)
    }
}

impl SourceResource for CredentialSource {
    const KIND: SourceKind = SourceKind::CredentialSource;

    fn view(&self) -> SourceView<'_> {
        self.spec.view()
    }

    fn source_status(&self) -> Option<&SourceStatus> {
        self.status.as_ref()
    }

    fn login_hint(&self) -> String {
        format!(
            "tcred login --source {} -n {}",
            self.name_any(),
            self.namespace().unwrap_or_default()
        )
    }

    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}

impl SourceResource for ClusterCredentialSource {
    const KIND: SourceKind = SourceKind::ClusterCredentialSource;

    fn view(&self) -> SourceView<'_> {
        self.spec.view()
    }

    fn source_status(&self) -> Option<&SourceStatus> {
        self.status.as_ref()
    }

    fn login_hint(&self) -> String {
        format!("tcred login --cluster-source {}", self.name_any())
    }

    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::all(client)
    }
}

/// A TemporaryCredential's source as the cache holds it (possibly unreadable), for the duration
/// of a reconcile.
#[derive(Clone)]
pub enum Source {
    Namespaced(Arc<DeserializeGuard<CredentialSource>>),
    Cluster(Arc<DeserializeGuard<ClusterCredentialSource>>),
}

/// Applies `$f` to the source object of either kind, or gives `$invalid` for an unreadable one.
macro_rules! either {
    ($self:expr, $s:ident => $f:expr, $e:ident => $invalid:expr) => {
        match $self {
            Source::Namespaced(g) => match &g.0 {
                Ok($s) => $f,
                Err($e) => $invalid,
            },
            Source::Cluster(g) => match &g.0 {
                Ok($s) => $f,
                Err($e) => $invalid,
            },
        }
    };
}

impl Source {
    pub fn kind(&self) -> SourceKind {
        match self {
            Self::Namespaced(_) => SourceKind::CredentialSource,
            Self::Cluster(_) => SourceKind::ClusterCredentialSource,
        }
    }

    /// The spec as a view, or the problem if the object could not be read.
    pub fn view(&self) -> Result<SourceView<'_>, Problem> {
        either!(self, s => Ok(s.view()), e => Err(unreadable(e)))
    }

    /// `<namespace>/<name>` or `<name>`: the metric label and how messages name the source.
    pub fn label(&self) -> String {
        either!(self, s => source_label(s), _e => String::new())
    }

    /// The `tcred login` command for this source.
    pub fn login_hint(&self) -> String {
        either!(self, s => s.login_hint(), _e => String::new())
    }

    /// The source object's resourceVersion (changes with its spec and its status).
    pub fn resource_version(&self) -> Option<String> {
        match self {
            Self::Namespaced(g) => g.resource_version(),
            Self::Cluster(g) => g.resource_version(),
        }
    }

    pub fn uid(&self) -> String {
        either!(self, s => s.uid().unwrap_or_default(), _e => String::new())
    }

    /// Where a Secret referenced by the source lives (see [`secret_namespace`]).
    pub fn secret_namespace(&self, r: &SecretReference) -> Result<String, Problem> {
        either!(self, s => s.secret_namespace(r), e => Err(unreadable(e)))
    }

    /// Refuses a Secret not labelled for this source, before anything else is read from it.
    pub fn check_bound(&self, secret: &Secret) -> Result<(), Problem> {
        either!(self, s => s.check_bound(secret), e => Err(unreadable(e)))
    }

    /// How this source's endpoint overrides are checked (see [`overrides`]).
    pub fn overrides<'p>(&self, policy: &'p EndpointPolicy) -> Overrides<'p> {
        overrides(self.kind(), policy)
    }
}

fn unreadable(e: &kube::core::error_boundary::InvalidObject) -> Problem {
    Problem::new(
        reasons::SOURCE_NOT_READY,
        format!("the source cannot be read: {}", e.error),
    )
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", kind_name(self.kind()), self.label())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    use super::*;

    fn secret(data: &[(&str, &[u8])]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("corp-ak".into()),
                namespace: Some("team-a".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn a_key_is_read_trimmed_and_must_be_present_utf8_and_not_blank() {
        let s = secret(&[("id", b"AK1\n"), ("latin1", b"\xe9t\xe9"), ("blank", b" \n")]);
        assert_eq!(read_key(&s, "id"), Ok("AK1".into()));
        assert_eq!(read_key(&s, "latin1"), Err(KeyError::NotUtf8));
        assert_eq!(read_key(&s, "blank"), Err(KeyError::Empty));
        assert_eq!(read_key(&s, "none"), Err(KeyError::Missing));
        assert_eq!(read_key(&Secret::default(), "id"), Err(KeyError::Missing));
        assert_eq!(
            KeyError::NotUtf8.describe(SECRET_ACCESS_KEY),
            "key secretAccessKey is not UTF-8"
        );
    }

    fn reference(namespace: Option<&str>) -> SecretReference {
        SecretReference {
            name: "s".into(),
            namespace: namespace.map(str::to_owned),
        }
    }

    #[test]
    fn a_credential_source_references_only_secrets_of_its_own_namespace() {
        let kind = SourceKind::CredentialSource;
        assert_eq!(
            secret_namespace(kind, Some("team-a"), &reference(None)),
            Ok("team-a".into())
        );
        for other in ["team-b", "team-a"] {
            let p = secret_namespace(kind, Some("team-a"), &reference(Some(other))).unwrap_err();
            assert_eq!(
                p.message,
                "a CredentialSource may only reference Secrets in its own namespace"
            );
        }
    }

    #[test]
    fn a_cluster_source_names_the_namespace_of_each_secret() {
        let kind = SourceKind::ClusterCredentialSource;
        assert_eq!(
            secret_namespace(kind, None, &reference(Some("tcred-system"))),
            Ok("tcred-system".into())
        );
        assert!(secret_namespace(kind, None, &reference(None)).is_err());
    }

    fn bound_to(kind: &str, name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (binding_labels::SOURCE_KIND.to_owned(), kind.to_owned()),
            (binding_labels::SOURCE_NAME.to_owned(), name.to_owned()),
        ])
    }

    #[test]
    fn a_source_uses_only_secrets_labelled_for_it() {
        let ns = SourceKind::CredentialSource;
        let cluster = SourceKind::ClusterCredentialSource;
        assert_eq!(
            binding_problem(
                &bound_to("CredentialSource", "corp"),
                ns,
                "corp",
                "team-a",
                "corp-ak"
            ),
            None
        );
        assert_eq!(
            binding_problem(
                &bound_to("ClusterCredentialSource", "corp"),
                cluster,
                "corp",
                "tcred-system",
                "corp-ak"
            ),
            None
        );
        // another source's Secret, the other kind's, half a binding, or none at all
        for labels in [
            bound_to("CredentialSource", "official"),
            bound_to("ClusterCredentialSource", "corp"),
            BTreeMap::from([(binding_labels::SOURCE_NAME.to_owned(), "corp".to_owned())]),
            BTreeMap::new(),
        ] {
            let p = binding_problem(&labels, ns, "corp", "team-a", "corp-ak").expect("refused");
            assert_eq!(p.reason, reasons::SECRET_NOT_BOUND);
            assert!(
                p.message
                    .starts_with("Secret team-a/corp-ak is not bound to CredentialSource corp")
                    && p.message.contains("tcred.dev/source-kind=CredentialSource")
                    && p.message.contains("tcred.dev/source-name=corp"),
                "{}",
                p.message
            );
        }
    }
}
