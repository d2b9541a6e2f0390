//! `tcred agent`: the node-local credentials agent (a DaemonSet on the host network). Pods on the
//! node reach it over plain http at the node's IP; it checks the request, answers from a cache
//! keyed by SHA-256(token, path), and otherwise forwards the pod's token over TLS (verified with
//! `--ca-file`) to the controller's credentials endpoint. Errors pass through and are not cached.
//! No token, credential or body is ever logged.

pub mod cache;
pub mod metrics;
pub mod request;
pub mod upstream;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use jiff::Timestamp;
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{debug, info};
use url::Url;

use self::{
    cache::Cache,
    metrics::AgentMetrics,
    request::{MAX_BODY_BYTES, Refusal},
    upstream::{Answer, Upstream, UpstreamConfig},
};

/// The SDKs give up after 5 s (Python, Java); the agent answers well before.
pub const MAX_UPSTREAM_TIMEOUT: Duration = Duration::from_millis(4500);
/// How long a request waits for an upstream slot before it is answered 429.
const QUEUE_WAIT: Duration = Duration::from_secs(1);
/// How often the CA file is re-read and the cache purged.
const HOUSEKEEPING: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Address pods reach: `ip:port`, or an IP alone with --port (the chart passes the node's IP
    /// from the downward API).
    #[arg(long, env = "TCRED_AGENT_LISTEN")]
    pub listen: String,
    /// Port used when --listen is an IP alone.
    #[arg(long, default_value_t = 8182, env = "TCRED_AGENT_PORT")]
    pub port: u16,
    /// The controller's credentials endpoint, `https://host:port`.
    #[arg(long, env = "TCRED_AGENT_UPSTREAM")]
    pub upstream: Url,
    /// CA bundle (PEM) that verifies the upstream; re-read when it changes.
    #[arg(long, env = "TCRED_AGENT_CA_FILE")]
    pub ca_file: PathBuf,
    /// Longest time an answer is served from the cache (never past its expiration − 42 min).
    #[arg(long, default_value = "30s", env = "TCRED_AGENT_CACHE_TTL")]
    pub cache_ttl: kube::core::Duration,
    /// Most answers held in the cache.
    #[arg(long, default_value_t = 10_000, env = "TCRED_AGENT_CACHE_ENTRIES")]
    pub cache_entries: usize,
    /// Time allowed for one upstream request (at most 4.5 s: the SDKs give up at 5 s).
    #[arg(long, default_value = "3s", env = "TCRED_AGENT_UPSTREAM_TIMEOUT")]
    pub upstream_timeout: kube::core::Duration,
    /// Upstream requests in flight at once; more wait up to 1 s, then get 429.
    #[arg(long, default_value_t = 64, env = "TCRED_AGENT_UPSTREAM_CONCURRENCY")]
    pub upstream_concurrency: usize,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The agent's settings, checked.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub upstream: UpstreamConfig,
    pub cache_ttl: Duration,
    pub cache_entries: usize,
    pub upstream_concurrency: usize,
}

/// `ip:port`, `[v6]:port`, or a bare IP (v4 or v6) with `port`.
pub fn listen_address(listen: &str, port: u16) -> Result<SocketAddr, Error> {
    let listen = listen.trim();
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return Ok(addr);
    }
    listen
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, port))
        .map_err(|_| Error::Usage(format!("--listen: {listen:?} is neither ip:port nor an IP")))
}

impl TryFrom<AgentArgs> for Config {
    type Error = Error;

    fn try_from(args: AgentArgs) -> Result<Self, Error> {
        let listen = listen_address(&args.listen, args.port)?;
        let base = args.upstream;
        let plain = base.path() == "/" && base.query().is_none() && base.fragment().is_none();
        if base.scheme() != "https" || base.host().is_none() || !base.username().is_empty() || !plain {
            return Err(Error::Usage(
                "--upstream must be https://host[:port] with no path".into(),
            ));
        }
        let timeout = Duration::from(args.upstream_timeout);
        if timeout.is_zero() || timeout > MAX_UPSTREAM_TIMEOUT {
            return Err(Error::Usage(
                "--upstream-timeout must be above 0 and at most 4.5s".into(),
            ));
        }
        Ok(Self {
            listen,
            upstream: UpstreamConfig {
                base,
                ca_file: args.ca_file,
                connect_timeout: timeout.min(Duration::from_secs(1)),
                timeout,
            },
            cache_ttl: Duration::from(args.cache_ttl),
            cache_entries: args.cache_entries,
            upstream_concurrency: args.upstream_concurrency.max(1),
        })
    }
}

/// The running agent's shared state.
pub struct Agent {
    upstream: Arc<Upstream>,
    cache: Mutex<Cache>,
    ttl: Duration,
    permits: Semaphore,
    pub metrics: AgentMetrics,
}

impl Agent {
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(Self {
            upstream: Upstream::new(config.upstream.clone()),
            cache: Mutex::new(Cache::new(config.cache_entries)),
            ttl: config.cache_ttl,
            permits: Semaphore::new(config.upstream_concurrency),
            metrics: AgentMetrics::default(),
        })
    }

    /// Re-reads the CA file and drops expired answers.
    pub fn housekeeping(&self) {
        self.upstream.reload();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.purge(Instant::now());
        self.metrics.cache_entries.set(cache.len() as i64);
    }

    /// Answers in the cache now.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    async fn answer(&self, req: Request) -> Result<Response, Refusal> {
        let (parts, body) = req.into_parts();
        let target = request::parse_path(parts.uri.path(), parts.uri.query())?;
        let token = request::check(&parts.method, &parts.headers)?;
        axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| Refusal::TooLarge)?;
        let path = target.path();
        let key = cache::key(&token, &path);
        let hit = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key, Instant::now());
        if let Some(body) = hit {
            self.metrics.cache_hits.inc();
            return Ok(credentials(body));
        }
        let _permit = tokio::time::timeout(QUEUE_WAIT, self.permits.acquire())
            .await
            .map_err(|_| Refusal::Busy)?
            .map_err(|_| Refusal::Busy)?;
        let started = Instant::now();
        let answer = self.upstream.forward(&path, &token).await;
        self.metrics
            .upstream_seconds
            .observe(started.elapsed().as_secs_f64());
        let answer = answer?;
        if answer.status != StatusCode::OK {
            debug!(status = answer.status.as_u16(), namespace = %target.namespace, name = %target.name, "passing an upstream refusal through");
            return Ok(passed_through(answer));
        }
        if let Some(lifetime) = cache::lifetime(&answer.body, Timestamp::now(), self.ttl) {
            let now = Instant::now();
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.insert(key, answer.body.clone(), now + lifetime, now);
            self.metrics.cache_entries.set(cache.len() as i64);
        }
        Ok(credentials(answer.body))
    }
}

fn credentials(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn passed_through(answer: Answer) -> Response {
    let mut resp = Response::new(Body::from(answer.body));
    *resp.status_mut() = answer.status;
    if let Some(ct) = answer.content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

async fn handle(State(agent): State<Arc<Agent>>, req: Request) -> Response {
    let resp = agent
        .answer(req)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    agent.metrics.answered(resp.status().as_u16());
    resp
}

async fn metrics(State(agent): State<Arc<Agent>>) -> Response {
    match agent.metrics.render() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(agent): State<Arc<Agent>>) -> Response {
    if agent.upstream.ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no usable CA bundle yet").into_response()
    }
}

/// The agent's routes: `/healthz`, `/readyz`, `/metrics`, and every other path through the
/// credentials handler (which refuses what is not `/v1/credentials/{namespace}/{name}`).
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(handle)
        .with_state(agent)
}

/// Binds, then serves until `stop` resolves; housekeeping runs alongside.
pub async fn serve(
    config: Config,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let agent = Agent::new(&config);
    let listener = TcpListener::bind(config.listen).await?;
    info!(addr = %listener.local_addr()?, upstream = %config.upstream.base, "serving credentials to pods on this node");
    let keeper = agent.clone();
    let housekeeping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        loop {
            tick.tick().await;
            keeper.housekeeping();
        }
    });
    let served = axum::serve(listener, router(agent))
        .with_graceful_shutdown(stop)
        .await;
    housekeeping.abort();
    Ok(served?)
}

async fn signalled() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `tcred agent`.
pub async fn run(args: AgentArgs) -> Result<(), Error> {
    let config = Config::try_from(args)?;
    serve(config, signalled()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_an_address_or_an_ip_with_the_port() {
        assert_eq!(
            listen_address("10.0.0.5:9000", 8182).unwrap(),
            "10.0.0.5:9000".parse().unwrap()
        );
        assert_eq!(
            listen_address("10.0.0.5", 8182).unwrap(),
            "10.0.0.5:8182".parse().unwrap()
        );
        assert_eq!(
            listen_address("fd00::5", 8182).unwrap(),
            "[fd00::5]:8182".parse().unwrap()
        );
        assert_eq!(
            listen_address("[fd00::5]:1", 8182).unwrap(),
            "[fd00::5]:1".parse().unwrap()
        );
        assert!(listen_address("node-a", 8182).is_err());
        assert!(listen_address("", 8182).is_err());
    }

    fn args(upstream: &str, timeout: &str) -> AgentArgs {
        AgentArgs {
            listen: "127.0.0.1".into(),
            port: 0,
            upstream: upstream.parse().unwrap(),
            ca_file: "/nonexistent".into(),
            cache_ttl: "30s".parse().unwrap(),
            cache_entries: 10,
            upstream_timeout: timeout.parse().unwrap(),
            upstream_concurrency: 0,
        }
    }

    #[test]
    fn upstream_must_be_https_without_a_path_and_timeouts_below_the_sdks() {
        let ok = Config::try_from(args("https://tcred-credentials.tcred.svc:8443", "3s")).unwrap();
        assert_eq!(ok.upstream_concurrency, 1);
        assert_eq!(ok.upstream.connect_timeout, Duration::from_secs(1));
        for bad in [
            "http://tcred-credentials.tcred.svc:8443",
            "https://tcred-credentials.tcred.svc:8443/x",
            "https://u:p@tcred-credentials.tcred.svc:8443",
            "https://tcred-credentials.tcred.svc:8443/?a=1",
        ] {
            assert!(Config::try_from(args(bad, "3s")).is_err(), "{bad}");
        }
        assert!(Config::try_from(args("https://h:1", "5s")).is_err());
        assert!(Config::try_from(args("https://h:1", "0s")).is_err());
    }
}
