//! Harness for the credentials endpoint (pod identity): a generated TLS pair, an operator with
//! the endpoint on, ServiceAccounts and their TokenRequest tokens, and a client that calls the
//! endpoint as Huawei's SDKs do.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use serde_json::Value;

use super::{Operator, OperatorOptions, free_port, log_dir};

/// tcred's default pod identity audience.
pub const AUDIENCE: &str = "tcred.dev";

/// A self-signed certificate for `localhost` and its key, written under the test's log dir.
pub struct TlsPair {
    pub cert_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsPair {
    pub fn generate(test: &str) -> Self {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        let dir = log_dir(test);
        let (cert, key) = (dir.join("endpoint-tls.crt"), dir.join("endpoint-tls.key"));
        std::fs::write(&cert, c.cert.pem()).expect("write cert");
        std::fs::write(&key, c.signing_key.serialize_pem()).expect("write key");
        Self {
            cert_pem: c.cert.pem(),
            cert,
            key,
        }
    }
}

/// An operator with the credentials endpoint on, and a client for that endpoint.
pub struct EndpointOperator {
    pub operator: Operator,
    pub endpoint: Endpoint,
}

/// Starts `tcred controller` with `o`, plus the endpoint on a free loopback port with `tls`.
pub async fn start_operator(test: &str, tls: &TlsPair, mut o: OperatorOptions<'_>) -> EndpointOperator {
    let port = free_port();
    o.extra.extend([
        format!("--credentials-endpoint-address=127.0.0.1:{port}"),
        format!("--tls-cert-file={}", tls.cert.display()),
        format!("--tls-key-file={}", tls.key.display()),
    ]);
    let operator = Operator::start_with(test, o).await;
    let endpoint = Endpoint::new(tls, SocketAddr::from(([127, 0, 0, 1], port)));
    EndpointOperator { operator, endpoint }
}

/// Calls the endpoint over TLS, trusting only the test's certificate.
#[derive(Clone)]
pub struct Endpoint {
    pub client: reqwest::Client,
    pub base: String,
}

/// One answer: status, `Cache-Control` and the JSON body (`Null` when not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub cache_control: Option<String>,
    pub body: Value,
}

impl Endpoint {
    pub fn new(tls: &TlsPair, addr: SocketAddr) -> Self {
        tcred::cloud::http::install_crypto_provider();
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(tls.cert_pem.as_bytes()).expect("cert")])
            .resolve("localhost", addr)
            .timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(64)
            .build()
            .expect("client");
        Self {
            client,
            base: format!("https://localhost:{}", addr.port()),
        }
    }

    /// `POST /v1/credentials/{ns}/{name}` with body `{}` and `Authorization: <token>`, as the SDKs do.
    pub async fn fetch(&self, ns: &str, name: &str, token: Option<&str>) -> Answer {
        self.send(&format!("/v1/credentials/{ns}/{name}"), token, "{}".into(), None)
            .await
            .expect("endpoint reachable")
    }

    /// Any request: path, token, body and one extra header.
    pub async fn send(
        &self,
        path: &str,
        token: Option<&str>,
        body: String,
        header: Option<(&str, String)>,
    ) -> Result<Answer, reqwest::Error> {
        let mut req = self.client.post(format!("{}{path}", self.base)).body(body);
        if let Some(t) = token {
            req = req.header("authorization", t);
        }
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let cache_control = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await?;
        Ok(Answer {
            status,
            cache_control,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }
}

/// Creates ServiceAccount `ns/name`.
pub async fn service_account(client: &Client, ns: &str, name: &str) {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create ServiceAccount");
}

/// A TokenRequest token of `ns/sa` for `audiences` (empty: the API server's own), valid an hour,
/// optionally bound to an object that invalidates it when deleted.
pub async fn token(
    client: &Client,
    ns: &str,
    sa: &str,
    audiences: &[&str],
    bound: Option<BoundObjectReference>,
) -> String {
    token_for(client, ns, sa, audiences, bound, 3600).await
}

/// [`token`] valid `seconds` (the API server's minimum is 600).
pub async fn token_for(
    client: &Client,
    ns: &str,
    sa: &str,
    audiences: &[&str],
    bound: Option<BoundObjectReference>,
    seconds: i64,
) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
            expiration_seconds: Some(seconds),
            bound_object_ref: bound,
        }),
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .and_then(|s| s.token)
        .expect("token")
}

/// The resident set size (`VmRSS`) of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// A JWT-shaped token with a plausible audience and expiry but no valid signature: it passes
/// the endpoint's local checks and costs a TokenReview (what an attacker would send).
pub fn forged_token(i: u64) -> String {
    use base64::Engine;
    let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let exp = jiff::Timestamp::now().as_second() + 3600;
    let claims = serde_json::json!({"aud": [AUDIENCE], "exp": exp, "sub": format!("system:serviceaccount:x:forged-{i}")});
    format!(
        "{}.{}.{}",
        e(br#"{"alg":"RS256"}"#),
        e(claims.to_string().as_bytes()),
        e(&i.to_be_bytes())
    )
}
