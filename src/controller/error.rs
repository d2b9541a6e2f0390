//! What can fail a reconcile, and how a failed Kubernetes call is named and classified.

use crate::cloud::ErrorClass;

/// Reconcile failures the runtime retries (minting failures are not errors: they are handled,
/// scheduled and reported inside reconcile).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error(
        "the tcred CRDs are not installed: apply them with `kubectl apply -f crds/` or the Helm chart ({0})"
    )]
    CrdsMissing(#[source] kube::Error),
    #[error("{0}")]
    Setup(String),
    /// A bug: the reconcile panicked. Contained to the object, retried with backoff.
    #[error("internal error (a bug in tcred; see the operator log): {0}")]
    Panicked(String),
}

impl Error {
    /// Label of `tcred_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::CrdsMissing(_) => "crds_missing",
            Self::Setup(_) => "setup",
            Self::Panicked(_) => "panic",
        }
    }
}

/// What a person reads about a failed Kubernetes call: the API server's own message for an API
/// error (it names the object and the reason), else the error.
pub fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// The class of a failed Kubernetes call, for backoff and metrics.
pub fn error_class(e: &kube::Error) -> ErrorClass {
    match e {
        kube::Error::Api(s) if s.code == 404 => ErrorClass::NotFound,
        kube::Error::Api(s) if s.code == 403 || s.code == 401 => ErrorClass::Auth,
        kube::Error::Api(s) if s.code == 429 => ErrorClass::Throttled,
        kube::Error::Api(s) if s.code >= 500 => ErrorClass::Server,
        kube::Error::Api(_) => ErrorClass::InvalidRequest,
        _ => ErrorClass::Network,
    }
}
