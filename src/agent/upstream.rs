//! The agent's side of the controller's credentials endpoint: an HTTPS client that trusts only
//! the CA bundle in `--ca-file` (re-read when the file changes, so a rotated CA is picked up
//! without a restart), and one forward of a pod's request with a bounded answer.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use bytes::Bytes;
use http::StatusCode;
use tracing::{debug, info, warn};
use url::Url;

use super::{cache::MAX_ENTRY_BYTES, request::Refusal};
use crate::sensitive::SecretString;

/// How the agent reaches the controller.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `https://host:port`, without a path.
    pub base: Url,
    pub ca_file: PathBuf,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// The current client, rebuilt when the CA bundle changes; `None` until a usable bundle exists.
pub struct Upstream {
    config: UpstreamConfig,
    current: RwLock<Option<(Vec<u8>, reqwest::Client)>>,
}

/// An answer from the controller, bounded to [`MAX_ENTRY_BYTES`].
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<http::HeaderValue>,
    pub body: Bytes,
}

fn client(config: &UpstreamConfig, pem: &[u8]) -> Result<reqwest::Client, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in the CA file".into());
    }
    reqwest::Client::builder()
        .tls_certs_only(certs)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.connect_timeout)
        .timeout(config.timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("tcred-agent/", env!("CARGO_PKG_VERSION")))
        .hickory_dns(true)
        .build()
        .map_err(|e| e.to_string())
}

impl Upstream {
    pub fn new(config: UpstreamConfig) -> Arc<Self> {
        let upstream = Arc::new(Self {
            config,
            current: RwLock::new(None),
        });
        upstream.reload();
        upstream
    }

    /// Re-reads the CA file; rebuilds the client when its bytes changed. A missing or unusable
    /// file keeps the client the agent has (or none).
    pub fn reload(&self) {
        let pem = match std::fs::read(&self.config.ca_file) {
            Ok(pem) => pem,
            Err(error) => {
                debug!(file = %self.config.ca_file.display(), %error, "CA file not readable");
                return;
            }
        };
        let unchanged = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(old, _)| *old == pem);
        if unchanged {
            return;
        }
        match client(&self.config, &pem) {
            Ok(c) => {
                info!(file = %self.config.ca_file.display(), "loaded the CA bundle");
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some((pem, c));
            }
            Err(error) => warn!(file = %self.config.ca_file.display(), %error, "CA file unusable"),
        }
    }

    pub fn ca_file(&self) -> &Path {
        &self.config.ca_file
    }

    /// Whether a usable CA bundle has been loaded.
    pub fn ready(&self) -> bool {
        self.current.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn client(&self) -> Option<reqwest::Client> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().map(|(_, c)| c.clone())
    }

    /// Forwards a pod's `POST` of `path` with its token; answers of any status come back (to be
    /// passed through), transport failures and oversized answers are refusals.
    pub async fn forward(&self, path: &str, token: &SecretString) -> Result<Answer, Refusal> {
        let client = self.client().ok_or(Refusal::Unavailable)?;
        let url = self.config.base.join(path).map_err(|_| Refusal::BadPath)?;
        let resp = client
            .post(url)
            .header(http::header::AUTHORIZATION, token.expose())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body("{}")
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let content_type = resp.headers().get(http::header::CONTENT_TYPE).cloned();
        let body = read_bounded(resp).await?;
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }
}

/// The refusal for a failed exchange; the detail goes to the agent's debug log only, without
/// the URL.
fn transport(e: reqwest::Error) -> Refusal {
    let timeout = e.is_timeout();
    debug!(error = %e.without_url(), "upstream exchange failed");
    if timeout {
        Refusal::UpstreamTimeout
    } else {
        Refusal::Unavailable
    }
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Bytes, Refusal> {
    if resp.content_length().is_some_and(|n| n > MAX_ENTRY_BYTES as u64) {
        return Err(Refusal::Unavailable);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if out.len().saturating_add(chunk.len()) > MAX_ENTRY_BYTES {
            return Err(Refusal::Unavailable);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}
