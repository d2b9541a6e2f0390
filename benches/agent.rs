//! Benchmark of the node agent (`tcred agent`): requests/s and latency (p50/p99) through the agent
//! at a fixed offered rate (default 1,000 requests/s) from many distinct tokens, against an
//! in-process TLS stand-in for the controller's credentials endpoint (a fixed answer, so what is
//! measured is the agent: validation, cache, TLS forward). Three scenarios: every request a new
//! token (all misses), tokens reused (mostly cache hits), and a closed loop at the agent's
//! saturation. Writes target/bench/agent.json. A benchmark, not a test: it asserts nothing about
//! timing.
//!
//!   cargo bench --bench agent            (TCRED_BENCH_SECONDS=10, TCRED_BENCH_RATE=1000)

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Json, Router, routing::post};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tcred::{
    agent::{self, Config, upstream::UpstreamConfig},
    certs::{self, Policy, Stored},
    tls::{self, Limits, TlsFiles},
};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

async fn start() -> (String, tempfile::TempDir, Arc<AtomicU64>) {
    tcred::cloud::http::install_crypto_provider();
    let s: Stored = certs::step(
        &Stored::default(),
        &["127.0.0.1".to_owned()],
        Timestamp::now(),
        &Policy::default(),
    )
    .expect("certificates")
    .expect("a fresh state");
    let dir = tempfile::tempdir().expect("tempdir");
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let leaf = s.leaf.as_ref().expect("leaf");
    std::fs::write(&files.cert, &leaf.cert).expect("write");
    std::fs::write(&files.key, &leaf.key).expect("write");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, certs::bundle(&s)).expect("write");
    let upstream_calls = Arc::new(AtomicU64::new(0));
    let calls = upstream_calls.clone();
    let expiration = Timestamp::now()
        .checked_add(SignedDuration::from_hours(2))
        .expect("time")
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let app = Router::new().route(
        "/v1/credentials/{ns}/{name}",
        post(move || {
            calls.fetch_add(1, Ordering::Relaxed);
            let expiration = expiration.clone();
            async move {
                Json(
                    json!({"credentials": {"accessKeyId": "AK", "secretAccessKey": "SK",
                    "securityToken": "T".repeat(1500), "expiration": expiration}}),
                )
            }
        }),
    );
    let limits = Limits {
        max_connections: 4096,
        ..Limits::default()
    };
    let (up, serve) = tls::bind(
        "127.0.0.1:0".parse().expect("addr"),
        files,
        app,
        limits,
        std::future::pending(),
    )
    .await
    .expect("stand-in upstream");
    tokio::spawn(serve);
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        upstream: UpstreamConfig {
            base: format!("https://{up}").parse().expect("url"),
            ca_file: ca,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
        },
        cache_ttl: Duration::from_secs(30),
        cache_entries: 10_000,
        upstream_concurrency: 64,
    };
    let (addr, _agent, serve) = agent::bind(config, std::future::pending()).await.expect("agent");
    tokio::spawn(serve);
    (
        format!("http://{addr}/v1/credentials/bench/app"),
        dir,
        upstream_calls,
    )
}

/// Offers `rate` requests/s for `seconds`; token `i % distinct` for request i.
async fn open_loop(url: &str, rate: u64, seconds: u64, distinct: u64, calls: &AtomicU64) -> Value {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .expect("client");
    let total = rate * seconds;
    let before = calls.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (http, url) = (http.clone(), url.to_owned());
        let token = format!(
            "eyJhbGciOiJSUzI1NiJ9.token-{:08}.{}",
            i % distinct,
            "s".repeat(600)
        );
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = http
                .post(&url)
                .header("authorization", token)
                .body("{}")
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            (t.elapsed(), ok)
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    summarize(results, start, calls.load(Ordering::Relaxed) - before, rate)
}

fn summarize(results: Vec<(Duration, bool)>, start: Instant, upstream: u64, offered: u64) -> Value {
    let failed = results.iter().filter(|(_, ok)| !ok).count();
    let mut lat: Vec<Duration> = results.into_iter().map(|(d, _)| d).collect();
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    json!({
        "offered_rps": offered,
        "requests": lat.len(),
        "achieved_rps": (lat.len() as f64 / elapsed).round(),
        "failed": failed,
        "upstream_requests": upstream,
        "latency_ms": {"p50": ms(percentile(&lat, 0.5)), "p90": ms(percentile(&lat, 0.9)),
            "p99": ms(percentile(&lat, 0.99)), "max": ms(lat.last().copied().unwrap_or_default())},
    })
}

/// A closed loop of `workers` clients for `seconds`, all distinct tokens: the agent's ceiling.
async fn saturation(url: &str, workers: u64, seconds: u64, calls: &AtomicU64) -> Value {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .expect("client");
    let before = calls.load(Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (http, url) = (http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = http
                    .post(&url)
                    .header("authorization", format!("sat-{w}-{i}"))
                    .body("{}")
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                out.push((t.elapsed(), ok));
                i += 1;
            }
            out
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.expect("worker"));
    }
    summarize(results, start, calls.load(Ordering::Relaxed) - before, 0)
}

#[tokio::main]
async fn main() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let seconds = env("TCRED_BENCH_SECONDS", 10);
    let rate = env("TCRED_BENCH_RATE", 1000);
    let (url, _dir, calls) = start().await;
    // Warm the connection pools.
    open_loop(&url, 100, 1, 100, &calls).await;
    let misses = open_loop(&url, rate, seconds, u64::MAX, &calls).await;
    println!("all distinct tokens (cache misses): {misses}");
    let reused = open_loop(&url, rate, seconds, 2000, &calls).await;
    println!("2,000 tokens reused (cache hits after the first): {reused}");
    let ceiling = saturation(&url, 64, seconds.min(5), &calls).await;
    println!("closed loop, 64 clients, distinct tokens: {ceiling}");
    let result = json!({
        "benchmark": "agent",
        "seconds": seconds,
        "all_distinct_tokens": misses,
        "reused_tokens_2000": reused,
        "saturation_64_clients": ceiling,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let file = dir.join("agent.json");
    std::fs::write(&file, serde_json::to_string_pretty(&result).expect("json")).expect("write");
    println!("wrote {}", file.display());
}
