//! Benchmark: time from creating a TemporaryCredential to its Secret existing, on the local
//! control plane with the Huawei simulator and a release build of the operator.
//!
//!   cargo bench --bench create_to_secret                   # 100 credentials
//!   TCRED_BENCH_N=10000 cargo bench --bench create_to_secret
//!
//! Prints p50/p90/p99/max and throughput, then restarts the operator and measures the resync
//! (time until every credential was looked at again, mints — expected none —, memory), and writes
//! target/bench/create_to_secret-<n>.json. A benchmark, not a test: it asserts nothing about timing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use support::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn start_operator(ns: &str, concurrency: u16) -> Operator {
    let options = OperatorOptions {
        namespace: Some(ns),
        rust_log: "warn",
        extra: vec![format!("--concurrency={concurrency}")],
        ..Default::default()
    };
    Operator::start_with("bench-create", options).await
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("TCRED_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let concurrency: u16 = std::env::var("TCRED_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let client = admin().await;
    let ns = create_namespace(&client, "bench-create", &[]).await;
    let sim = Simulator::start(&default_sim_config()).await;
    access_key_source(&client, &ns, "corp", &sim).await;
    let op = start_operator(&ns, concurrency).await;

    // Record when each Secret first appears.
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let secrets = Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &ns);
    let seen = arrived.clone();
    let watch = tokio::spawn(async move {
        let stream = watcher(
            secrets,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=tcred"),
        )
        .default_backoff()
        .applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(s)) = stream.try_next().await {
            seen.lock()
                .unwrap()
                .entry(s.name_any())
                .or_insert_with(Instant::now);
        }
    });

    let started = Instant::now();
    let mut created = HashMap::new();
    let manifests: Vec<_> = (0..n)
        .map(|i| {
            (
                format!("c{i:05}"),
                agency_credential(&ns, &format!("c{i:05}"), "corp", json!({})),
            )
        })
        .collect();
    // Create in parallel batches, as `kubectl apply -f dir/` of many objects would.
    for chunk in manifests.chunks(50) {
        let stamps = futures::stream::iter(chunk.iter().cloned())
            .map(|(name, m)| {
                let api = Api::<tcred::api::TemporaryCredential>::namespaced(client.clone(), &ns);
                async move {
                    let tc: tcred::api::TemporaryCredential = serde_json::from_value(m).expect("manifest");
                    let t = Instant::now();
                    api.create(&kube::api::PostParams::default(), &tc)
                        .await
                        .expect("create");
                    (name, t)
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        created.extend(stamps);
    }
    let created_all = started.elapsed();

    let deadline = Instant::now() + Duration::from_secs(600 + n as u64 / 10);
    while arrived.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} Secrets appeared",
            arrived.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = started.elapsed();
    watch.abort();

    let arrivals = arrived.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = created
        .iter()
        .map(|(name, t)| arrivals[name].saturating_duration_since(*t))
        .collect();
    latencies.sort();
    let mints = sim.mints_total().await;
    let metrics = op.metrics().await;
    let counter = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_owned()
    };
    let reconciles = counter("tcred_reconcile_total");
    let stale_cache_reads = counter("tcred_stale_cache_reads_total");

    let rss_after_create = rss_kib(op.pid());

    // Restart: a new process resyncs every credential and must mint nothing.
    let mut op = op;
    op.stop();
    let restarted = Instant::now();
    let op = start_operator(&ns, concurrency).await;
    let ready = restarted.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600 + n as u64 / 10);
    let resynced = loop {
        let m = op.metrics().await;
        let done = m
            .lines()
            .find(|l| l.starts_with("tcred_reconcile_total "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if done >= n as f64 {
            break restarted.elapsed();
        }
        assert!(Instant::now() < deadline, "resync did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mints_after_restart = sim.mints_total().await - mints;
    let rss_after_resync = rss_kib(op.pid());

    let result = json!({
        "benchmark": "create_to_secret",
        "credentials": n,
        "operatorConcurrency": concurrency,
        "latencyMs": {
            "p50": ms(percentile(&latencies, 0.50)),
            "p90": ms(percentile(&latencies, 0.90)),
            "p99": ms(percentile(&latencies, 0.99)),
            "max": ms(*latencies.last().unwrap()),
        },
        "createAllSeconds": created_all.as_secs_f64(),
        "allSecretsSeconds": total.as_secs_f64(),
        "secretsPerSecond": n as f64 / total.as_secs_f64(),
        "simulatorMints": mints,
        "reconciles": reconciles,
        "staleCacheReads": stale_cache_reads,
        "operatorRssKiB": rss_after_create,
        "restart": {
            "readySeconds": ready.as_secs_f64(),
            "allReconciledSeconds": resynced.as_secs_f64(),
            "mints": mints_after_restart,
            "operatorRssKiB": rss_after_resync,
        },
        "date": jiff::Timestamp::now().to_string(),
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("create_to_secret-{n}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("wrote {}", path.display());

    drop(op);
    delete_namespace(&client, &ns).await;
}
