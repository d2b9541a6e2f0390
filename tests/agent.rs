//! The node agent against a stand-in for the controller's credentials endpoint: an axum TLS
//! server in this process with a generated CA. Proves caching, expiry, the pass-through of
//! refusals, bounded memory under a flood of distinct tokens, and that one pod's token never gets
//! another's cached answer. No cluster needed.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tcred::{
    agent::{self, Agent, Config, upstream::UpstreamConfig},
    certs::{self, Policy, Stored},
    tls::{self, Limits, TlsFiles},
};
use tempfile::TempDir;
use tokio::sync::oneshot;

/// What the stand-in answers and what it saw.
#[derive(Default)]
struct Upstream {
    /// Requests seen per token.
    seen: Mutex<HashMap<String, u32>>,
    /// Validity left in the credentials it serves.
    validity: Mutex<Option<SignedDuration>>,
}

impl Upstream {
    fn seen(&self, token: &str) -> u32 {
        self.seen.lock().unwrap().get(token).copied().unwrap_or(0)
    }

    fn total(&self) -> u32 {
        self.seen.lock().unwrap().values().sum()
    }
}

fn refusal(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({"error": error, "message": "stand-in"}))).into_response()
}

/// Tokens `bad*` are 401, `other-sa*` are 403; everything else gets credentials named after the
/// token, so a test can tell whose answer it got.
async fn credentials(
    State(up): State<Arc<Upstream>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    *up.seen.lock().unwrap().entry(token.clone()).or_default() += 1;
    if token.starts_with("bad") {
        return refusal(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if token.starts_with("other-sa") {
        return refusal(StatusCode::FORBIDDEN, "Forbidden");
    }
    let validity = up
        .validity
        .lock()
        .unwrap()
        .unwrap_or(SignedDuration::from_hours(2));
    let expiration = Timestamp::now().checked_add(validity).unwrap();
    Json(json!({"credentials": {
        "accessKeyId": format!("AK-{token}-{ns}-{name}"),
        "secretAccessKey": "SK",
        "securityToken": "ST",
        "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    }}))
    .into_response()
}

struct Rig {
    agent: Arc<Agent>,
    url: String,
    upstream: Arc<Upstream>,
    http: reqwest::Client,
    _dir: TempDir,
    _stop: (oneshot::Sender<()>, oneshot::Sender<()>),
}

/// A CA and a serving certificate for 127.0.0.1, written to files: (dir, cert, key, CA bundle).
fn pki() -> (TempDir, TlsFiles, PathBuf) {
    let now = Timestamp::now();
    let s: Stored = certs::step(
        &Stored::default(),
        &["127.0.0.1".to_owned()],
        now,
        &Policy::default(),
    )
    .unwrap()
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let leaf = s.leaf.as_ref().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    std::fs::write(&files.cert, &leaf.cert).unwrap();
    std::fs::write(&files.key, &leaf.key).unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, certs::bundle(&s)).unwrap();
    (dir, files, ca)
}

async fn rig(ttl: Duration, entries: usize) -> Rig {
    tcred::cloud::http::install_crypto_provider();
    let (dir, files, ca) = pki();
    let upstream = Arc::new(Upstream::default());
    let app = Router::new()
        .route("/v1/credentials/{ns}/{name}", post(credentials))
        .with_state(upstream.clone());
    let (up_stop, up_rx) = oneshot::channel::<()>();
    let (up_addr, serve) = tls::bind(
        "127.0.0.1:0".parse().unwrap(),
        files,
        app,
        Limits::default(),
        async move {
            let _ = up_rx.await;
        },
    )
    .await
    .unwrap();
    tokio::spawn(serve);
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: UpstreamConfig {
            base: format!("https://{up_addr}").parse().unwrap(),
            ca_file: ca,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
        },
        cache_ttl: ttl,
        cache_entries: entries,
        upstream_concurrency: 64,
    };
    let (stop, rx) = oneshot::channel::<()>();
    let (addr, agent, serve) = agent::bind(config, async move {
        let _ = rx.await;
    })
    .await
    .unwrap();
    tokio::spawn(serve);
    Rig {
        agent,
        url: format!("http://{addr}"),
        upstream,
        http: reqwest::Client::new(),
        _dir: dir,
        _stop: (stop, up_stop),
    }
}

impl Rig {
    async fn fetch(&self, token: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("authorization", token)
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert_eq!(r.headers()["cache-control"], "no-store");
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

const PATH: &str = "/v1/credentials/team-a/app";

fn access_key(v: &Value) -> &str {
    v["credentials"]["accessKeyId"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn answers_are_cached_per_token_and_path_until_the_ttl() {
    let rig = rig(Duration::from_millis(800), 100).await;
    let (s, first) = rig.fetch("pod-a", PATH).await;
    assert_eq!(s, 200);
    assert_eq!(access_key(&first), "AK-pod-a-team-a-app");
    for _ in 0..5 {
        let (s, again) = rig.fetch("pod-a", PATH).await;
        assert_eq!((s, &again), (200, &first));
    }
    assert_eq!(rig.upstream.seen("pod-a"), 1, "served from the cache");
    // Another path with the same token is its own entry.
    let (_, other) = rig.fetch("pod-a", "/v1/credentials/team-a/other").await;
    assert_eq!(access_key(&other), "AK-pod-a-team-a-other");
    assert_eq!(rig.upstream.seen("pod-a"), 2);
    tokio::time::sleep(Duration::from_millis(900)).await;
    rig.fetch("pod-a", PATH).await;
    assert_eq!(rig.upstream.seen("pod-a"), 3, "the TTL ended: fetched again");
}

#[tokio::test]
async fn a_second_pods_token_never_gets_the_first_pods_answer() {
    let rig = rig(Duration::from_secs(30), 100).await;
    let (_, a) = rig.fetch("pod-a", PATH).await;
    let (s, b) = rig.fetch("pod-b", PATH).await;
    assert_eq!(s, 200);
    assert_eq!(access_key(&a), "AK-pod-a-team-a-app");
    assert_eq!(access_key(&b), "AK-pod-b-team-a-app");
    // A token of another ServiceAccount asking for the cached path is refused upstream, not
    // served pod-a's cached credentials.
    let (s, refused) = rig.fetch("other-sa-token", PATH).await;
    assert_eq!(s, 403);
    assert_eq!(refused["error"], "Forbidden");
}

#[tokio::test]
async fn refusals_pass_through_and_are_never_cached() {
    let rig = rig(Duration::from_secs(30), 100).await;
    for _ in 0..3 {
        let (s, body) = rig.fetch("bad-token", PATH).await;
        assert_eq!((s, body["error"].as_str()), (401, Some("Unauthorized")));
        let (s, body) = rig.fetch("other-sa-1", PATH).await;
        assert_eq!((s, body["error"].as_str()), (403, Some("Forbidden")));
    }
    assert_eq!(rig.upstream.seen("bad-token"), 3);
    assert_eq!(rig.upstream.seen("other-sa-1"), 3);
    assert_eq!(rig.agent.cached(), 0);
}

#[tokio::test]
async fn a_credential_near_the_sdk_threshold_is_not_cached_past_expiration_minus_42_minutes() {
    let rig = rig(Duration::from_secs(30), 100).await;
    // 41 minutes left: inside the margin, never cached.
    *rig.upstream.validity.lock().unwrap() = Some(SignedDuration::from_mins(41));
    rig.fetch("pod-a", PATH).await;
    rig.fetch("pod-a", PATH).await;
    assert_eq!(rig.upstream.seen("pod-a"), 2);
    // 42 min + 1 s left: cached for about a second, not the 30 s TTL.
    *rig.upstream.validity.lock().unwrap() = Some(SignedDuration::from_secs(42 * 60 + 1));
    rig.fetch("pod-b", PATH).await;
    rig.fetch("pod-b", PATH).await;
    assert_eq!(rig.upstream.seen("pod-b"), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    rig.fetch("pod-b", PATH).await;
    assert_eq!(rig.upstream.seen("pod-b"), 2);
}

#[tokio::test]
async fn a_flood_of_distinct_tokens_keeps_the_cache_bounded_and_a_victim_served() {
    let rig = Arc::new(rig(Duration::from_secs(30), 64).await);
    let (_, victim) = rig.fetch("victim", PATH).await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let rig = rig.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..60 {
                let (s, _) = rig.fetch(&format!("flood-{w}-{i}"), PATH).await;
                assert!(s == 200 || s == 429, "{s}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(rig.agent.cached() <= 64, "{} entries", rig.agent.cached());
    assert!(rig.upstream.total() > 64);
    let (s, again) = rig.fetch("victim", PATH).await;
    assert_eq!(s, 200);
    assert_eq!(access_key(&again), access_key(&victim));
}

#[tokio::test]
async fn what_is_not_a_credential_request_is_refused_before_the_upstream() {
    let rig = rig(Duration::from_secs(30), 100).await;
    let cases: [(&str, &str, Option<&str>, String, u16); 6] = [
        ("GET", PATH, Some("t"), String::new(), 405),
        ("POST", "/v1/credentials/team-a", Some("t"), String::new(), 400),
        ("POST", "/v1/credentials/Team/app", Some("t"), String::new(), 400),
        ("POST", "/etc/passwd", Some("t"), String::new(), 404),
        ("POST", PATH, None, String::new(), 401),
        ("POST", PATH, Some("t"), "x".repeat(4096), 413),
    ];
    for (method, path, token, body, want) in cases {
        let mut req = rig
            .http
            .request(method.parse().unwrap(), format!("{}{path}", rig.url))
            .body(body);
        if let Some(t) = token {
            req = req.header("authorization", t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{method} {path}");
    }
    assert_eq!(rig.upstream.total(), 0);
    let health = rig.http.get(format!("{}/healthz", rig.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = rig.http.get(format!("{}/readyz", rig.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = rig.http.get(format!("{}/metrics", rig.url)).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(r#"tcred_agent_requests_total{code="405"} 1"#),
        "{text}"
    );
    assert!(!text.contains("team-a"), "no namespace or name in the metrics");
}

#[tokio::test]
async fn an_upstream_it_cannot_verify_is_never_sent_the_token() {
    let rig = rig(Duration::from_secs(30), 100).await;
    // A second CA, unrelated to the upstream's certificate, replaces the bundle.
    let (_other_dir, _, other_ca) = pki();
    std::fs::copy(&other_ca, rig.agent_ca()).unwrap();
    rig.agent.housekeeping();
    let (s, body) = rig.fetch("pod-a", PATH).await;
    assert_eq!(s, 502);
    assert_eq!(body["error"], "Unavailable");
    assert_eq!(rig.upstream.seen("pod-a"), 0);
}

impl Rig {
    fn agent_ca(&self) -> PathBuf {
        self._dir.path().join("ca.crt")
    }
}
