//! The credentials endpoint for the pod identity provider of Huawei's SDKs (contract:
//! docs/api.md, "Pod identity"). Every replica, leader or not, serves
//! `POST /v1/credentials/{namespace}/{name}` over TLS from memory: a ServiceAccount token is
//! authenticated by TokenReview (cached, [`auth`]), authorized against the credential's
//! `spec.podIdentity.serviceAccounts` and answered from watches of TemporaryCredentials and
//! managed Secrets ([`store`]). [`freshness`] says how early such a credential must be renewed.

pub mod auth;
pub mod freshness;
pub mod handler;
pub mod limits;
pub mod metrics;
pub mod store;
pub mod wire;

use std::{future::Future, net::SocketAddr, sync::Arc};

use kube::Client;

pub use self::{
    auth::AuthLimits,
    handler::Endpoint,
    limits::Rate,
    store::{CredentialStore, Scope},
};
use crate::tls::{self, TlsFiles};

/// Default audience of the tokens the endpoint accepts.
pub const DEFAULT_AUDIENCE: &str = "tcred.dev";

/// How to run the endpoint.
#[derive(Clone, Debug)]
pub struct Options {
    pub address: SocketAddr,
    pub tls: TlsFiles,
    pub audience: String,
    pub scope: Scope,
    /// Requests per second of one token (after it is authenticated).
    pub per_token: Rate,
    pub auth: AuthLimits,
    pub server: tls::Limits,
}

impl Options {
    pub fn new(address: SocketAddr, tls: TlsFiles, audience: String, scope: Scope) -> Self {
        Self {
            address,
            tls,
            audience,
            scope,
            per_token: Rate::new(10.0, 20),
            auth: AuthLimits::default(),
            server: tls::Limits::default(),
        }
    }
}

/// Why the endpoint did not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error("--pod-identity-audience: {0}")]
    Audience(String),
}

/// Refuses an audience the Kubernetes API server accepts (its issuer, `kubernetes…`): a token
/// that opens the endpoint must never open the cluster. Fails closed when the issuer cannot be
/// read.
pub async fn check_audience(client: &Client, audience: &str) -> Result<(), Error> {
    if audience.trim().is_empty() {
        return Err(Error::Audience("must not be empty".into()));
    }
    let issuer = cluster_issuer(client).await.map_err(|e| {
        Error::Audience(format!(
            "cannot read the cluster's ServiceAccount issuer to check the audience against it: {e}"
        ))
    })?;
    match crate::controller::mint::api_server_audience(audience, Some(&issuer)) {
        Some(problem) => Err(Error::Audience(problem.message)),
        None => Ok(()),
    }
}

async fn cluster_issuer(client: &Client) -> Result<String, String> {
    let req = http::Request::get("/.well-known/openid-configuration")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let doc: serde_json::Value = client
        .request(req)
        .await
        .map_err(|e| crate::controller::kube_message(&e))?;
    doc.get("issuer")
        .and_then(|i| i.as_str())
        .map(str::to_owned)
        .ok_or_else(|| "the discovery document names no issuer".into())
}

/// Starts the watches and binds the TLS endpoint; returns the bound address, the shared state
/// (for tests and benchmarks) and the serving future, which ends after `shutdown`.
pub async fn start(
    client: Client,
    metrics: Arc<metrics::EndpointMetrics>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<
    (
        SocketAddr,
        Arc<Endpoint>,
        impl Future<Output = ()> + Send + 'static,
    ),
    Error,
> {
    let endpoint = Arc::new(Endpoint {
        store: CredentialStore::start(&client, &options.scope),
        auth: auth::Authenticator::new(client, options.audience, options.auth, metrics.clone()),
        per_token: limits::Keyed::new(options.per_token),
        metrics,
    });
    let app = handler::router(endpoint.clone());
    let (addr, serve) = tls::bind(options.address, options.tls, app, options.server, shutdown).await?;
    Ok((addr, endpoint, serve))
}
