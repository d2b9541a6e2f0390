//! `tcred controller`: serve metrics and health, win the leader lease, run the controllers, and
//! step down cleanly on SIGTERM.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use kube::Client;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::error::Error;
use crate::{
    controller::{self, Config, Readiness},
    leader::{Election, LeaderConfig},
    metrics::Metrics,
    podidentity,
    server::{self, Health},
    shard::{self, ShardSelector},
    tls::TlsFiles,
};

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Watch only this namespace (TemporaryCredentials, CredentialSources, managed Secrets).
    /// Default: all namespaces.
    #[arg(long, env = "TCRED_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:8080", env = "TCRED_METRICS_BIND_ADDRESS")]
    pub metrics_bind_address: SocketAddr,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 16, env = "TCRED_CONCURRENCY")]
    pub concurrency: u16,
    /// Mints per second allowed per Huawei Cloud endpoint (0: unlimited).
    #[arg(long, default_value_t = 20.0, env = "TCRED_MINT_RATE")]
    pub mint_rate: f64,
    /// Mints allowed in a burst per endpoint.
    #[arg(long, default_value_t = 40, env = "TCRED_MINT_BURST")]
    pub mint_burst: u32,
    /// Mints per second allowed across all endpoints together (0: unlimited).
    #[arg(long, default_value_t = 50.0, env = "TCRED_MINT_RATE_TOTAL")]
    pub mint_rate_total: f64,
    /// Mints allowed in a burst across all endpoints together.
    #[arg(long, default_value_t = 100, env = "TCRED_MINT_BURST_TOTAL")]
    pub mint_burst_total: u32,
    /// Hosts a namespaced CredentialSource may name in `spec.endpoints`, besides Huawei Cloud's
    /// own domains (comma-separated): `host`, `host:port` or `*.domain`.
    #[arg(long, value_delimiter = ',', env = "TCRED_ALLOWED_ENDPOINT_HOSTS")]
    pub allowed_endpoint_hosts: Vec<String>,
    /// Namespaces this installation leaves to a namespace-scoped installation (comma-separated).
    #[arg(long, value_delimiter = ',', env = "TCRED_EXCLUDE_NAMESPACES")]
    pub exclude_namespaces: Vec<String>,
    /// Reconciles of one namespace running at once (of --concurrency).
    #[arg(long, default_value_t = 4, env = "TCRED_NAMESPACE_CONCURRENCY")]
    pub namespace_concurrency: u16,
    /// Least time between two mints of one credential (its first issue aside): edits, deletions
    /// and rotate requests within it wait.
    #[arg(long, default_value = "30s", env = "TCRED_MIN_MINT_INTERVAL")]
    pub min_mint_interval: kube::core::Duration,
    /// A credential issued with less validity left than this is a failed mint (retried with
    /// backoff), never written.
    #[arg(long, default_value = "60s", env = "TCRED_MIN_CREDENTIAL_LIFETIME")]
    pub min_credential_lifetime: kube::core::Duration,
    /// Warn (condition, Event) this long before an Identity Center session ends.
    #[arg(long, default_value = "24h", env = "TCRED_SESSION_WARNING")]
    pub session_warning: kube::core::Duration,
    /// Elect a leader among replicas; only the leader mints and writes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "TCRED_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: the pod's namespace, else --namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, default_value = "tcred-controller", env = "TCRED_LEADER_ELECTION_ID")]
    pub leader_election_id: String,
    /// Seconds a lease stays valid without renewal: how long a standby waits after the leader dies.
    #[arg(long, default_value_t = 15, env = "TCRED_LEASE_DURATION_SECONDS")]
    pub lease_duration_seconds: u64,
    /// The leader renews this many seconds before its lease would lapse.
    #[arg(long, default_value_t = 5, env = "TCRED_LEASE_GRACE_SECONDS")]
    pub lease_grace_seconds: u64,
    /// This replica's identity in the Lease and in Events (default: the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Label selector of the TemporaryCredentials this process serves, and of their managed
    /// Secrets (docs/sharding.md), e.g. `tcred.dev/shard=a`. Empty: all of them.
    #[arg(long, default_value = "", env = "TCRED_SHARD_SELECTOR")]
    pub shard_selector: String,
    /// This shard's name: its Lease is `<leader-election-id>-<shard>`; none or `default` keeps
    /// `<leader-election-id>` (docs/sharding.md).
    #[arg(long, env = "TCRED_SHARD")]
    pub shard: Option<String>,
    /// Run what is not sharded: the source controllers (source status, Identity Center session
    /// refresh) and tcred's own certificates. Exactly one shard of an installation does.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "TCRED_SERVE_SOURCES")]
    pub serve_sources: bool,
    /// Be a shard of this dynamic sharder's ring (timebertt/kubernetes-controller-sharding): the
    /// Lease is labelled for the ring and the ring's drain requests are acknowledged.
    #[arg(long, env = "TCRED_CONTROLLER_RING")]
    pub controller_ring: Option<String>,
    #[command(flatten)]
    pub webhook: crate::webhook::WebhookArgs,
    /// The credentials endpoint (pod identity).
    #[command(flatten)]
    pub endpoint: Box<EndpointArgs>,
}

/// Flags of the credentials endpoint for Huawei's SDKs.
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArgs {
    /// Address of the credentials endpoint for Huawei's SDKs (TLS, `POST
    /// /v1/credentials/{namespace}/{name}`), served by every replica. Empty: off.
    #[arg(long, default_value = "", env = "TCRED_CREDENTIALS_ENDPOINT_ADDRESS")]
    pub credentials_endpoint_address: String,
    /// PEM certificate chain of the TLS endpoints; re-read when it changes.
    #[arg(long, env = "TCRED_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the TLS endpoints; re-read when it changes.
    #[arg(long, env = "TCRED_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Audience of the ServiceAccount tokens the credentials endpoint accepts; refused when the
    /// API server itself accepts it.
    #[arg(long, default_value = podidentity::DEFAULT_AUDIENCE, env = "TCRED_POD_IDENTITY_AUDIENCE")]
    pub pod_identity_audience: String,
}

/// Why the controller stopped.
enum Stop {
    Signal,
    LostLease,
}

async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn identity(args: &ControllerArgs) -> String {
    args.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "tcred".into());
        format!("{host}-{}", std::process::id())
    })
}

/// The credentials endpoint's options, if it is on.
fn endpoint_options(args: &ControllerArgs) -> Result<Option<podidentity::Options>, Error> {
    let endpoint = &args.endpoint;
    let address = endpoint.credentials_endpoint_address.trim();
    if address.is_empty() {
        return Ok(None);
    }
    let address: SocketAddr = address
        .parse()
        .map_err(|e| Error::Usage(format!("--credentials-endpoint-address {address}: {e}")))?;
    let (Some(cert), Some(key)) = (endpoint.tls_cert_file.clone(), endpoint.tls_key_file.clone()) else {
        return Err(Error::Usage(
            "--credentials-endpoint-address needs --tls-cert-file and --tls-key-file".into(),
        ));
    };
    let scope = podidentity::Scope {
        namespace: args.namespace.clone(),
        exclude_namespaces: trimmed(&args.exclude_namespaces),
    };
    let audience = endpoint.pod_identity_audience.trim().to_owned();
    Ok(Some(podidentity::Options::new(
        address,
        TlsFiles { cert, key },
        audience,
        scope,
    )))
}

/// Starts the credentials endpoint (every replica, before and independent of the lease).
/// Starts the credentials endpoint when it is configured. A bad audience or flag stops the
/// controller; certificate files that do not exist yet (tcred's own certificates are written by
/// the leader, which this replica may be about to become) are waited for in the background.
async fn start_endpoint(args: &ControllerArgs, client: &Client, metrics: &Metrics) -> Result<(), Error> {
    let Some(options) = endpoint_options(args)? else {
        return Ok(());
    };
    podidentity::check_audience(client, &options.audience)
        .await
        .map_err(|e| Error::Usage(e.to_string()))?;
    let (client, metrics) = (client.clone(), metrics.pod_identity.clone());
    if options.tls.load().is_ok() {
        return serve_endpoint(client, metrics, options)
            .await
            .map_err(|e| Error::Usage(e.to_string()));
    }
    tokio::spawn(async move {
        while let Err(error) = options.tls.load() {
            warn!(%error, "the credentials endpoint waits for its certificate files");
            tokio::time::sleep(ENDPOINT_FILES_RETRY).await;
        }
        if let Err(error) = serve_endpoint(client, metrics, options).await {
            error!(%error, "the credentials endpoint cannot start");
        }
    });
    Ok(())
}

/// How often a replica whose certificate files are missing looks for them again.
const ENDPOINT_FILES_RETRY: Duration = Duration::from_secs(5);

async fn serve_endpoint(
    client: Client,
    metrics: Arc<podidentity::metrics::EndpointMetrics>,
    options: podidentity::Options,
) -> Result<(), podidentity::Error> {
    let audience = options.audience.clone();
    let (addr, _, serve) = podidentity::start(client, metrics, options, signalled()).await?;
    info!(%addr, %audience, "serving the credentials endpoint");
    tokio::spawn(serve);
    Ok(())
}

fn trimmed(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The controller's own namespace: where its Lease and its generated certificates live.
fn own_namespace(args: &ControllerArgs) -> String {
    args.leader_election_namespace
        .clone()
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| "default".into())
}

fn config(args: &ControllerArgs) -> Config {
    Config {
        namespace: args.namespace.clone(),
        concurrency: args.concurrency.max(1),
        mint_rate: args.mint_rate,
        mint_burst: args.mint_burst,
        session_warning: Duration::from(args.session_warning),
        mint_rate_total: args.mint_rate_total,
        mint_burst_total: args.mint_burst_total,
        allowed_endpoint_hosts: trimmed(&args.allowed_endpoint_hosts),
        exclude_namespaces: trimmed(&args.exclude_namespaces),
        namespace_concurrency: args.namespace_concurrency.max(1),
        min_mint_interval: Duration::from(args.min_mint_interval),
        min_credential_lifetime: Duration::from(args.min_credential_lifetime),
        shard_selector: ShardSelector::default(),
        serve_sources: args.serve_sources,
        controller_ring: args.controller_ring.clone(),
    }
}

/// The shard's selector, checked (a typo stops the controller at start, not a watch forever).
fn shard_selector(args: &ControllerArgs) -> Result<ShardSelector, Error> {
    if let Some(shard) = &args.shard {
        shard::check_shard_name(shard).map_err(|e| Error::Usage(format!("--shard: {e}")))?;
    }
    if let Some(ring) = &args.controller_ring {
        shard::check_ring_name(ring).map_err(|e| Error::Usage(format!("--controller-ring: {e}")))?;
    }
    ShardSelector::parse(&args.shard_selector).map_err(|e| Error::Usage(format!("--shard-selector: {e}")))
}

/// tcred's own certificates are written by the leader of the shard that serves sources.
fn spawn_certificates(args: &ControllerArgs, client: &Client, namespace: &str) {
    if args.serve_sources {
        crate::webhook::spawn_certificates(&args.webhook, client.clone(), namespace);
    }
}

/// Serves metrics and health, the credentials endpoint and the webhook (every replica), then
/// runs the controllers: at once without leader election, or once this replica leads.
pub async fn run(args: ControllerArgs) -> Result<(), Error> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (addr, serve) = server::bind(args.metrics_bind_address, metrics.clone(), health.clone()).await?;
    info!(%addr, "serving /metrics, /healthz and /readyz");
    tokio::spawn(serve);
    start_endpoint(&args, &client, &metrics).await?;
    crate::webhook::spawn(&args.webhook);
    let mut config = config(&args);
    config.shard_selector = shard_selector(&args)?;
    let id = identity(&args);
    if !args.leader_elect {
        spawn_certificates(&args, &client, &own_namespace(&args));
        metrics.leader.set(1);
        let stop = async {
            signalled().await;
            info!("shutting down");
        };
        controller::run(client, config, metrics, Some(id), health, stop).await?;
        return Ok(());
    }
    lead(&args, client, config, metrics, health, id).await
}

/// Waits for the leader lease, runs the controllers while it is held, and steps down on a
/// signal (releasing the lease) or exits when the lease is lost.
async fn lead(
    args: &ControllerArgs,
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    id: String,
) -> Result<(), Error> {
    let lease = LeaderConfig {
        namespace: own_namespace(args),
        lease_name: shard::lease_name(&args.leader_election_id, args.shard.as_deref()),
        identity: id.clone(),
        duration_seconds: args.lease_duration_seconds,
        grace_seconds: args.lease_grace_seconds,
        labels: args
            .controller_ring
            .iter()
            .map(|ring| (shard::RING_LEASE_LABEL.to_owned(), ring.clone()))
            .collect(),
    };
    let mut election = Election::start(client.clone(), &lease).await?;
    // A standby is healthy and ready to take over.
    health.set_ready(true);
    info!(identity = %id, lease = %lease.lease_name, namespace = %lease.namespace, "waiting for the leader lease");
    tokio::select! {
        _ = signalled() => {
            election.release().await;
            return Ok(());
        }
        acquired = election.acquired() => acquired?,
    }
    info!(identity = %id, "acquired the leader lease");
    spawn_certificates(args, &client, &lease.namespace);
    metrics.leader.set(1);
    health.set_ready(false);

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let watch_stop = tokio::spawn(async move {
        let why = tokio::select! {
            _ = signalled() => Stop::Signal,
            _ = election.lost() => Stop::LostLease,
        };
        let _ = stop_tx.send(true);
        (why, election)
    });
    let stop = async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
        info!("stopping the controller");
    };
    controller::run(client, config, metrics.clone(), Some(id), health, stop).await?;
    metrics.leader.set(0);
    let (why, election) = watch_stop
        .await
        .map_err(|e| Error::Usage(format!("shutdown task failed: {e}")))?;
    match why {
        Stop::Signal => {
            election.release().await;
            Ok(())
        }
        Stop::LostLease => Err(Error::LostLease),
    }
}
