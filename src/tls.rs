//! Serving an axum [`Router`] over TLS (rustls, ring) from a PEM certificate/key file pair that is
//! re-read when the files change, so a mounted Secret that rotates needs no restart.
//!
//! The whole API:
//! - [`TlsFiles`]: the two paths; [`TlsFiles::load`] checks them once (used at start-up).
//! - [`Limits`]: connection, handshake, header and reload bounds, with safe defaults.
//! - [`bind`]: binds an address, loads the pair (an error if it is unusable) and returns the bound
//!   address and the serving future, like [`crate::server::bind`]. The future runs until the
//!   `shutdown` future completes (e.g. `token.cancelled_owned()` or a signal), then stops
//!   accepting, lets the open connections finish their requests for at most
//!   [`Limits::drain`], and returns.
//!
//! Only HTTP/1.1 is offered (ALPN `http/1.1`). Each connection is served on its own task; the
//! handshake and the request headers each have a deadline, and at most
//! [`Limits::max_connections`] connections are open at once (more wait in the kernel's backlog),
//! so a slow or flooding client cannot hold more than a bounded amount of memory. A pair that
//! fails to parse, or whose key does not match the certificate, is logged and ignored: the
//! previous pair keeps serving.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use sha2::{Digest, Sha256};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// Why a certificate/key pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no usable PEM private key")]
    NoKey { path: PathBuf },
    #[error("certificate/key pair: {0}")]
    Pair(#[source] rustls::Error),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The certificate chain (leaf first) and private key PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Bounds of one TLS server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; more wait until one closes.
    pub max_connections: usize,
    /// Time a client has to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a client has to send a request's headers (on a new or kept-alive connection).
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) read; larger ones get `431`.
    pub max_header_bytes: usize,
    /// How often the files are checked for a change.
    pub reload_interval: Duration,
    /// How long open connections may take to finish after `shutdown`.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            reload_interval: Duration::from_secs(10),
            drain: Duration::from_secs(10),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// A parsed pair and the digest of the bytes it came from.
struct Loaded {
    key: Arc<CertifiedKey>,
    digest: [u8; 32],
}

impl TlsFiles {
    /// Reads and checks the pair: at least one certificate, a private key, and the key matching
    /// the leaf certificate.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, Error> {
        Ok(self.load_with_digest()?.key)
    }

    fn load_with_digest(&self) -> Result<Loaded, Error> {
        let (cert_pem, key_pem) = (read(&self.cert)?, read(&self.key)?);
        let digest = digest(&cert_pem, &key_pem);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(Error::NoCertificate {
                path: self.cert.clone(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| Error::NoKey {
            path: self.key.clone(),
        })?;
        let key = CertifiedKey::from_der(certs, key, &provider()).map_err(Error::Pair)?;
        Ok(Loaded {
            key: Arc::new(key),
            digest,
        })
    }
}

fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((cert.len() as u64).to_be_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

/// Hands every handshake the current pair.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|k| k.clone())
    }
}

/// Re-reads the files every `interval` and swaps the pair in when their bytes changed and parse.
async fn watch_files(files: TlsFiles, resolver: Arc<Reloading>, mut digest: [u8; 32], interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let (cert, key) = (files.cert.clone(), files.key.clone());
        let changed = tokio::task::spawn_blocking(move || digest_of(&cert, &key)).await;
        let Ok(Ok(now)) = changed else { continue };
        if now == digest {
            continue;
        }
        let f = files.clone();
        match tokio::task::spawn_blocking(move || f.load_with_digest()).await {
            Ok(Ok(loaded)) => {
                if let Ok(mut current) = resolver.current.write() {
                    *current = loaded.key;
                }
                digest = loaded.digest;
                info!(cert = %files.cert.display(), "reloaded the TLS certificate");
            }
            Ok(Err(e)) => {
                // Remember the bad bytes so the warning is not repeated every tick.
                digest = now;
                warn!(error = %e, "ignoring a changed TLS certificate/key pair; still serving the previous one");
            }
            Err(_) => {}
        }
    }
}

fn digest_of(cert: &Path, key: &Path) -> Result<[u8; 32], Error> {
    Ok(digest(&read(cert)?, &read(key)?))
}

fn server_config(resolver: Arc<Reloading>) -> Result<Arc<ServerConfig>, Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Pair)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds `addr`, loads `files` and returns the bound address and the serving future (see the
/// module doc). Fails when the address cannot be bound or the pair is unusable.
pub async fn bind(
    addr: SocketAddr,
    files: TlsFiles,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send + 'static), Error> {
    let f = files.clone();
    let loaded = tokio::task::spawn_blocking(move || f.load_with_digest())
        .await
        .map_err(|e| Error::Read {
            path: files.cert.clone(),
            source: std::io::Error::other(e),
        })??;
    let resolver = Arc::new(Reloading {
        current: RwLock::new(loaded.key),
    });
    let acceptor = TlsAcceptor::from(server_config(resolver.clone())?);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let reload = tokio::spawn(watch_files(
        files,
        resolver,
        loaded.digest,
        limits.reload_interval,
    ));
    let serve = async move {
        accept_loop(listener, acceptor, app, limits, shutdown).await;
        reload.abort();
    };
    Ok((bound, serve))
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing_tx, closing_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let conn = Connection {
            acceptor: acceptor.clone(),
            app: app.clone(),
            limits,
            closing: closing_rx.clone(),
        };
        tokio::spawn(async move {
            conn.serve(tcp, peer).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.drain, slots.acquire_many(all)).await;
}

/// One accepted TCP connection.
struct Connection {
    acceptor: TlsAcceptor,
    app: Router,
    limits: Limits,
    closing: watch::Receiver<bool>,
}

impl Connection {
    async fn serve(mut self, tcp: TcpStream, peer: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let handshake = tokio::time::timeout(self.limits.handshake_timeout, self.acceptor.accept(tcp));
        let tls = match handshake.await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let service = TowerToHyperService::new(self.app);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_buf_size(self.limits.max_header_bytes.max(8192));
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result { debug!(%peer, error = %e, "connection ended with an error") }
                return;
            }
            _ = self.closing.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    struct Pair {
        cert: String,
        key: String,
    }

    fn generate() -> Pair {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        Pair {
            cert: c.cert.pem(),
            key: c.signing_key.serialize_pem(),
        }
    }

    fn write(files: &TlsFiles, pair: &Pair) {
        // Like a Secret volume update: the new bytes appear at once.
        for (path, text) in [(&files.cert, &pair.cert), (&files.key, &pair.key)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }

    fn client(trust: &Pair, addr: SocketAddr) -> reqwest::Client {
        crate::cloud::http::install_crypto_provider();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(trust.cert.as_bytes()).unwrap()])
            .resolve("localhost", addr)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    async fn hello(trust: &Pair, addr: SocketAddr) -> Result<String, reqwest::Error> {
        let url = format!("https://localhost:{}/hello", addr.port());
        client(trust, addr).get(url).send().await?.text().await
    }

    struct Running {
        addr: SocketAddr,
        files: TlsFiles,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    async fn start(first: &Pair) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        write(&files, first);
        let app = Router::new().route("/hello", get(|| async { "hi" }));
        let limits = Limits {
            reload_interval: Duration::from_millis(50),
            ..Limits::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let addr = "127.0.0.1:0".parse().unwrap();
        let (addr, serve) = bind(addr, files.clone(), app, limits, shutdown).await.unwrap();
        Running {
            addr,
            files,
            stop: Some(stop),
            done: tokio::spawn(serve),
            _dir: dir,
        }
    }

    #[tokio::test]
    async fn serves_the_current_pair_and_picks_up_a_rotated_one() {
        let (first, second) = (generate(), generate());
        let mut server = start(&first).await;
        assert_eq!(hello(&first, server.addr).await.unwrap(), "hi");
        assert!(
            hello(&second, server.addr).await.is_err(),
            "second pair not yet served"
        );

        write(&server.files, &second);
        let mut rotated = false;
        for _ in 0..100 {
            if hello(&second, server.addr).await.is_ok() {
                rotated = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(rotated, "the rotated pair is served without a restart");
        assert!(
            hello(&first, server.addr).await.is_err(),
            "the old pair is no longer served"
        );

        // A broken update keeps the last good pair.
        std::fs::write(&server.files.key, "not a key").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(hello(&second, server.addr).await.unwrap(), "hi");

        server.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(15), server.done)
            .await
            .unwrap()
            .unwrap();
        assert!(
            hello(&second, server.addr).await.is_err(),
            "nothing listens after shutdown"
        );
    }

    #[tokio::test]
    async fn refuses_an_oversized_request_head() {
        let pair = generate();
        let server = start(&pair).await;
        let url = format!("https://localhost:{}/hello", server.addr.port());
        let big = "x".repeat(64 * 1024);
        let resp = client(&pair, server.addr)
            .get(&url)
            .header("x-big", big)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            reqwest::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(
            hello(&pair, server.addr).await.unwrap(),
            "hi",
            "the server keeps serving"
        );
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let (a, b) = (generate(), generate());
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        std::fs::write(&files.cert, &a.cert).unwrap();
        std::fs::write(&files.key, &b.key).unwrap();
        assert!(matches!(files.load(), Err(Error::Pair(_))));
        std::fs::write(&files.key, "").unwrap();
        assert!(matches!(files.load(), Err(Error::NoKey { .. })));
        std::fs::write(&files.cert, "").unwrap();
        assert!(matches!(files.load(), Err(Error::NoCertificate { .. })));
    }
}
