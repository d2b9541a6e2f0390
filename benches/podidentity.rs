//! Benchmark: the credentials endpoint (pod identity) on the local control plane with the Huawei
//! simulator. Many distinct ServiceAccount tokens (TokenRequest, audience tcred.dev) fetch their
//! credentials at a fixed open-loop rate; memory is measured per served credential; the API
//! server's own TokenReview rate, measured in the same run, is the yardstick (what the endpoint
//! would manage if every request needed a review).
//!
//!   cargo bench --bench podidentity
//!   TCRED_BENCH_RATE=1000 TCRED_BENCH_SECONDS=10 TCRED_BENCH_SAS=200 TCRED_BENCH_CREDENTIALS=300 \
//!     cargo bench --bench podidentity
//!
//! Prints the figures and writes target/bench/podidentity.json. A benchmark: it asserts nothing
//! about timing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{Api, Client, api::PostParams};
use serde_json::json;
use support::{podidentity::*, *};
use tokio::sync::Semaphore;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Credential `c<i>` served to the ServiceAccounts listed.
async fn served(client: &Client, ns: &str, i: u64, sas: Vec<String>) {
    let extra = json!({"duration": "2h", "podIdentity": {"serviceAccounts": sas}});
    apply(client, agency_credential(ns, &format!("c{i}"), "corp", extra)).await;
}

async fn wait_secrets(client: &Client, ns: &str, n: u64) {
    wait_for(Duration::from_secs(600), &format!("{n} Secrets"), || async {
        let list = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await
            .ok()?;
        let managed = list
            .items
            .iter()
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key("tcred.dev/credential"))
            })
            .count() as u64;
        (managed >= n).then_some(())
    })
    .await;
}

/// Open loop: one request every 1/rate s for `seconds`, each to (credential, token) in turn.
async fn load(
    ep: &Endpoint,
    ns: &str,
    targets: &[(String, String)],
    rate: u64,
    seconds: u64,
) -> (Vec<Duration>, Vec<u16>, f64) {
    let total = rate * seconds;
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let in_flight = Arc::new(Semaphore::new(512));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for i in 0..total {
        tokio::time::sleep_until((start + gap * i as u32).into()).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (name, token) = targets[(i as usize) % targets.len()].clone();
        let (ep, ns) = (ep.clone(), ns.to_owned());
        tasks.spawn(async move {
            let t = Instant::now();
            let path = format!("/v1/credentials/{ns}/{name}");
            let code = ep
                .send(&path, Some(&token), "{}".into(), None)
                .await
                .map(|a| a.status)
                .unwrap_or(0);
            drop(permit);
            (t.elapsed(), code)
        });
    }
    let mut latencies = Vec::new();
    let mut codes = Vec::new();
    while let Some(Ok((d, c))) = tasks.join_next().await {
        latencies.push(d);
        codes.push(c);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    (latencies, codes, elapsed)
}

/// TokenReviews per second the API server answers (32 at once), for `n` reviews of `tokens`.
async fn token_review_rate(client: &Client, tokens: &[String], n: usize) -> f64 {
    let sem = Arc::new(Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (client, token) = (client.clone(), tokens[i % tokens.len()].clone());
        tasks.spawn(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token,
                    audiences: Some(vec![AUDIENCE.into()]),
                },
                ..Default::default()
            };
            let _ = Api::<TokenReview>::all(client)
                .create(&PostParams::default(), &review)
                .await;
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    n as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let (rate, seconds) = (env("TCRED_BENCH_RATE", 1000), env("TCRED_BENCH_SECONDS", 10));
    let (sa_count, extra_creds) = (env("TCRED_BENCH_SAS", 200), env("TCRED_BENCH_CREDENTIALS", 300));
    let client = admin().await;
    let ns = create_namespace(&client, "bench-podidentity", &[]).await;
    let sim = Simulator::start(&default_sim_config()).await;
    access_key_source(&client, &ns, "corp", &sim).await;
    let tls = TlsPair::generate("bench-podidentity");
    let options = OperatorOptions {
        namespace: Some(&ns),
        rust_log: "warn",
        ..Default::default()
    };
    let op = start_operator("bench-podidentity", &tls, options).await;

    // ServiceAccounts sa<i>, 32 per credential (the schema's maximum), one token each.
    let groups = sa_count.div_ceil(32);
    for i in 0..sa_count {
        service_account(&client, &ns, &format!("sa{i}")).await;
    }
    for g in 0..groups {
        let sas = (g * 32..((g + 1) * 32).min(sa_count))
            .map(|i| format!("sa{i}"))
            .collect();
        served(&client, &ns, g, sas).await;
    }
    wait_secrets(&client, &ns, groups).await;
    let mut targets = Vec::new();
    for i in 0..sa_count {
        targets.push((
            format!("c{}", i / 32),
            token(&client, &ns, &format!("sa{i}"), &[AUDIENCE], None).await,
        ));
    }
    // Warm up: every token reviewed once (within the review burst), every credential in the watch.
    for (name, t) in &targets {
        wait_for(Duration::from_secs(60), "warm-up", || async {
            (op.endpoint.fetch(&ns, name, Some(t)).await.status == 200).then_some(())
        })
        .await;
    }
    let (latencies, codes, elapsed) = load(&op.endpoint, &ns, &targets, rate, seconds).await;
    let ok = codes.iter().filter(|c| **c == 200).count();
    let tokens: Vec<String> = targets.iter().map(|(_, t)| t.clone()).collect();
    let review_rate = token_review_rate(&client, &tokens, 2000).await;

    // Memory per served credential: `extra_creds` more credentials, each fetched once.
    let rss_before = rss_kib(op.operator.pid().expect("pid")).unwrap_or(0);
    for i in 0..extra_creds {
        served(&client, &ns, groups + i, vec!["sa0".into()]).await;
    }
    wait_secrets(&client, &ns, groups + extra_creds).await;
    for i in 0..extra_creds {
        let _ = op
            .endpoint
            .fetch(&ns, &format!("c{}", groups + i), Some(&targets[0].1))
            .await;
    }
    let rss_after = rss_kib(op.operator.pid().expect("pid")).unwrap_or(0);
    let per_1000 = (rss_after.saturating_sub(rss_before) as f64) * 1000.0 / extra_creds.max(1) as f64;

    let result = json!({
        "benchmark": "podidentity",
        "profile": if cfg!(debug_assertions) { "dev" } else { "release" },
        "targetRatePerSecond": rate, "seconds": seconds, "serviceAccounts": sa_count,
        "requests": codes.len(), "ok": ok,
        "non200": codes.len() - ok,
        "achievedRequestsPerSecond": codes.len() as f64 / elapsed,
        "latencyMs": {"p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "max": percentile(&latencies, 1.0)},
        "apiServerTokenReviewsPerSecond": review_rate,
        "endpointOverTokenReviewRate": (codes.len() as f64 / elapsed) / review_rate,
        "memory": {"credentials": extra_creds, "rssBeforeKiB": rss_before, "rssAfterKiB": rss_after, "kibPer1000Credentials": per_1000},
        "date": jiff::Timestamp::now().to_string(),
    });
    let text = serde_json::to_string_pretty(&result).expect("json");
    println!("{text}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(dir.join("podidentity.json"), text).expect("write");
    println!("wrote target/bench/podidentity.json");
    drop(op);
    delete_namespace(&client, &ns).await;
}
