//! Benchmark: time from creating a TemporaryCredential to its Secret existing, on the local
//! control plane with the Huawei simulator and a release build of the operator, measured against
//! the API server's own ceiling in the same run (docs/benchmarks.md).
//!
//!   cargo bench --bench create_to_secret                   # a burst of 100 credentials
//!   TCRED_BENCH_N=10000 cargo bench --bench create_to_secret
//!
//! Knobs: `TCRED_BENCH_N` (burst size, 100), `TCRED_BENCH_CONCURRENCY` (operator `--concurrency`
//! and the ceiling client's workers, 16), `TCRED_BENCH_SINGLE` (single creates, 30),
//! `TCRED_BENCH_ROTATING` (credentials of the steady rotation, 150; 0 skips it),
//! `TCRED_BENCH_ROTATION_WINDOW` (seconds counted, 60).
//!
//! Phases, one operator process throughout (a second one for the restart):
//! 1. **single**: credentials created one at a time on an idle operator: create → Secret p50/p99,
//!    beside the floor, the sum of the round trips that path makes, each measured here.
//! 2. **ceiling**: a client server-side-applying Secrets of the size tcred writes, with the
//!    operator's concurrency: the API server's Secret writes/s, halved for the two writes every
//!    issue needs at least (Secret and status).
//! 3. **burst**: `N` credentials created together: credentials/s and its ratio to the ceiling,
//!    latency, memory; then a restart (resync time, mints — expected none —, memory).
//! 4. **rotation**: credentials of 30 s lifetimes rotating in a steady state; the API server's
//!    own `apiserver_request_total` counts the writes per rotation, by resource and verb.
//!
//! Writes target/bench/create_to_secret-<n>.json. A benchmark, not a test: it asserts nothing
//! about timing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use support::*;
use tcred::api::TemporaryCredential;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    ms(percentile(&v, 0.5))
}

fn latency_json(mut v: Vec<Duration>) -> Value {
    v.sort();
    json!({
        "p50": ms(percentile(&v, 0.50)),
        "p90": ms(percentile(&v, 0.90)),
        "p99": ms(percentile(&v, 0.99)),
        "max": ms(v.last().copied().unwrap_or_default()),
    })
}

async fn start_operator(ns: &str, concurrency: u16) -> Operator {
    let options = OperatorOptions {
        namespace: Some(ns),
        rust_log: "warn",
        // One namespace holds every credential here: the per-namespace share (default 4) would
        // measure the fairness limit, not the operator.
        extra: vec![
            format!("--concurrency={concurrency}"),
            format!("--namespace-concurrency={concurrency}"),
        ],
        ..Default::default()
    };
    Operator::start_with("bench-create", options).await
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: Option<u32>) -> Option<u64> {
    status_kib(&proc_status(pid)?, "VmRSS:")
}

fn proc_status(pid: Option<u32>) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()
}

/// A `Name:  1234 kB` field of /proc/<pid>/status, in KiB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Memory of a process from /proc: resident (RSS) split into anonymous (heap, stacks) and file
/// pages (the binary), and the peak, in KiB.
fn memory(pid: Option<u32>) -> Value {
    let Some(status) = proc_status(pid) else {
        return Value::Null;
    };
    json!({
        "rssKiB": status_kib(&status, "VmRSS:"),
        "anonKiB": status_kib(&status, "RssAnon:"),
        "fileKiB": status_kib(&status, "RssFile:"),
        "peakKiB": status_kib(&status, "VmHWM:"),
    })
}

/// The operator's `tcred_heap_bytes` gauges (its allocator's statistics), by kind, in KiB.
fn heap_kib(metrics: &str) -> Value {
    let mut out = serde_json::Map::new();
    for line in metrics.lines().filter(|l| l.starts_with("tcred_heap_bytes{")) {
        let kind = line.split('"').nth(1).unwrap_or_default();
        let bytes: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        out.insert(kind.to_owned(), json!((bytes / 1024.0).round()));
    }
    Value::Object(out)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// When each managed Secret was first seen, by name.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

fn watch_arrivals(client: &Client, ns: &str, selector: &str) -> (Arrivals, tokio::task::JoinHandle<()>) {
    let arrived: Arrivals = Arc::default();
    let secrets = Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns);
    let seen = arrived.clone();
    let selector = selector.to_owned();
    let task = tokio::spawn(async move {
        let stream = watcher(secrets, watcher::Config::default().labels(&selector))
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
    (arrived, task)
}

async fn wait_arrived(arrived: &Arrivals, names: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while arrived.lock().unwrap().len() < names {
        assert!(
            Instant::now() < deadline,
            "only {} of {names} Secrets appeared",
            arrived.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn credential(ns: &str, name: &str) -> TemporaryCredential {
    serde_json::from_value(agency_credential(ns, name, "corp", json!({}))).expect("manifest")
}

/// A Prometheus counter of the operator (the sum over its label sets).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ') | Some(b'{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// === The API server's own counts ===

/// The API server's write requests so far (`apiserver_request_total`), by
/// `resource[/subresource] VERB` (`+dry-run` for dry runs), from its /metrics.
async fn apiserver_writes(client: &Client) -> BTreeMap<String, f64> {
    apiserver_requests(client, &["POST", "PUT", "PATCH", "APPLY", "DELETE"]).await
}

/// Writes and single-object reads (`GET`) so far, keyed as in [`apiserver_writes`].
async fn apiserver_writes_and_gets(client: &Client) -> BTreeMap<String, f64> {
    apiserver_requests(client, &["POST", "PUT", "PATCH", "APPLY", "DELETE", "GET"]).await
}

fn is_write(key: &str) -> bool {
    !key.ends_with(" GET")
}

/// The API server's requests of `verbs` so far, keyed as in [`apiserver_writes`].
async fn apiserver_requests(client: &Client, verbs: &[&str]) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client
        .request_text(req)
        .await
        .expect("scrape the API server's /metrics");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |k: &str| {
            let key = format!("{k}=\"");
            labels
                .split_once(&key)
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(v, _)| v.to_owned())
                .unwrap_or_default()
        };
        let verb = label("verb");
        if !verbs.contains(&verb.as_str()) {
            continue;
        }
        let resource = match label("subresource").as_str() {
            "" => label("resource"),
            sub => format!("{}/{sub}", label("resource")),
        };
        let dry = if label("dry_run").is_empty() {
            ""
        } else {
            " +dry-run"
        };
        let v: f64 = value.parse().unwrap_or(0.0);
        *out.entry(format!("{resource} {verb}{dry}")).or_default() += v;
    }
    out
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect()
}

// === Phase 1: one credential at a time ===

/// Round trips the create → Secret path makes besides the operator's work, measured here one at
/// a time on the idle API server: the client's create, a watch delivery (twice: the operator
/// learns of the credential, the client of the Secret; an event that arrives before the write's
/// answer counts 0), the operator's dry-run and real create of the Secret. A GET of a missing
/// Secret is measured too: a new credential no longer makes it. The mint's own round trips come from the operator's
/// `tcred_mint_duration_seconds`.
struct Floor {
    create_tc: Vec<Duration>,
    watch: Vec<Duration>,
    get_missing: Vec<Duration>,
    dry_run: Vec<Duration>,
    create_secret: Vec<Duration>,
}

async fn measure_floor(client: &Client, ns: &str, template: &Secret, create_tc: Vec<Duration>) -> Floor {
    let reps = create_tc.len();
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let (arrived, task) = watch_arrivals(client, ns, "tcred-bench=floor");
    let mut f = Floor {
        create_tc,
        watch: vec![],
        get_missing: vec![],
        dry_run: vec![],
        create_secret: vec![],
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..reps {
        let name = format!("floor-{i:03}");
        let mut s = template.clone();
        s.metadata = kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.to_owned()),
            labels: Some([("tcred-bench".to_owned(), "floor".to_owned())].into()),
            ..Default::default()
        };
        let t = Instant::now();
        let _ = api.get_opt(&name).await.expect("get");
        f.get_missing.push(t.elapsed());
        let dry = PostParams {
            dry_run: true,
            field_manager: Some("bench".into()),
        };
        let t = Instant::now();
        api.create(&dry, &s).await.expect("dry-run create");
        f.dry_run.push(t.elapsed());
        let t = Instant::now();
        api.create(&PostParams::default(), &s).await.expect("create");
        let done = Instant::now();
        f.create_secret.push(done - t);
        wait_arrived(&arrived, i + 1, Duration::from_secs(10)).await;
        let seen = arrived.lock().unwrap()[&name];
        f.watch.push(seen.saturating_duration_since(done));
    }
    task.abort();
    f
}

struct Single {
    latencies: Vec<Duration>,
    /// The create call alone.
    creates: Vec<Duration>,
    mint_seconds: f64,
    mints: f64,
}

async fn single_creates(client: &Client, ns: &str, op: &Operator, arrived: &Arrivals, reps: usize) -> Single {
    let api = Api::<TemporaryCredential>::namespaced(client.clone(), ns);
    let before = op.metrics().await;
    let (mut latencies, mut creates) = (vec![], vec![]);
    for i in 0..reps {
        let name = format!("s{i:03}");
        let t = Instant::now();
        api.create(&PostParams::default(), &credential(ns, &name))
            .await
            .expect("create");
        creates.push(t.elapsed());
        let deadline = Instant::now() + Duration::from_secs(30);
        let seen = loop {
            if let Some(at) = arrived.lock().unwrap().get(&name) {
                break *at;
            }
            assert!(Instant::now() < deadline, "no Secret for {name}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        latencies.push(seen.saturating_duration_since(t));
        // Idle again: the status write and the Event of this one are done.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = op.metrics().await;
    let d = |name: &str| counter(&after, name) - counter(&before, name);
    Single {
        latencies,
        creates,
        mint_seconds: d("tcred_mint_duration_seconds_sum"),
        mints: d("tcred_mint_duration_seconds_count"),
    }
}

fn single_json(s: Single, f: Floor) -> Value {
    let mint_ms = if s.mints > 0.0 {
        s.mint_seconds * 1000.0 / s.mints
    } else {
        0.0
    };
    let watch = median_ms(f.watch.clone());
    let parts = json!({
        "createCredential": median_ms(f.create_tc.clone()),
        "watchDelivery": watch,
        "dryRunCreateSecret": median_ms(f.dry_run.clone()),
        "mint": (mint_ms * 10.0).round() / 10.0,
        "createSecret": median_ms(f.create_secret.clone()),
        "watchDeliveryOfTheSecret": watch,
    });
    let floor: f64 = parts
        .as_object()
        .map(|m| m.values().filter_map(Value::as_f64).sum())
        .unwrap_or(0.0);
    json!({
        "creates": s.latencies.len(),
        "latencyMs": latency_json(s.latencies),
        "floorMs": (floor * 10.0).round() / 10.0,
        "floorPartsMs (medians)": parts,
        // Not on the path: a credential without status probes its Secret with the dry run.
        "getSecretMs (median, off the path)": median_ms(f.get_missing),
    })
}

// === Phase 2: the API server's ceiling ===

/// Secrets/s the API server accepts by server-side apply from `workers` concurrent writers, each
/// Secret the size of `template`.
async fn ceiling(client: &Client, ns: &str, template: &Secret, count: usize, workers: usize) -> f64 {
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let params = PatchParams::apply("tcred-bench").force();
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            let params = params.clone();
            let mut s = template.clone();
            s.metadata = kube::api::ObjectMeta {
                name: Some(format!("ceiling-{i:05}")),
                namespace: Some(ns.to_owned()),
                labels: Some([("tcred-bench".to_owned(), "ceiling".to_owned())].into()),
                ..Default::default()
            };
            async move {
                let name = s.name_any();
                api.patch(&name, &params, &Patch::Apply(&s))
                    .await
                    .expect("apply a Secret");
            }
        })
        .buffer_unordered(workers)
        .collect::<Vec<_>>()
        .await;
    count as f64 / started.elapsed().as_secs_f64()
}

/// A Secret with the data of a Secret tcred wrote, for writes of the same size.
async fn template_secret(client: &Client, ns: &str, name: &str) -> Secret {
    let s = get_secret(client, ns, name).await.expect("a Secret tcred wrote");
    Secret {
        data: s.data,
        type_: s.type_,
        ..Default::default()
    }
}

// === Phase 3: a burst ===

async fn burst(
    client: &Client,
    ns: &str,
    n: usize,
    arrived: &Arrivals,
) -> (Vec<Duration>, Duration, Duration) {
    let started = Instant::now();
    let mut created = HashMap::new();
    let names: Vec<String> = (0..n).map(|i| format!("c{i:05}")).collect();
    // Create in parallel batches, as `kubectl apply -f dir/` of many objects would.
    for chunk in names.chunks(50) {
        let stamps = futures::stream::iter(chunk.iter().cloned())
            .map(|name| {
                let api = Api::<TemporaryCredential>::namespaced(client.clone(), ns);
                let tc = credential(ns, &name);
                async move {
                    let t = Instant::now();
                    api.create(&PostParams::default(), &tc).await.expect("create");
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
    loop {
        let have = {
            let a = arrived.lock().unwrap();
            names.iter().filter(|n| a.contains_key(*n)).count()
        };
        if have == n {
            break;
        }
        assert!(Instant::now() < deadline, "only {have} of {n} Secrets appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = arrived.lock().unwrap().clone();
    let last = names.iter().map(|n| arrivals[n]).max().unwrap_or(started);
    let latencies = created
        .iter()
        .map(|(name, t)| arrivals[name].saturating_duration_since(*t))
        .collect();
    (latencies, created_all, last - started)
}

/// Restarts the operator: time until every credential was reconciled again, mints meanwhile
/// (expected none), memory.
async fn restart(
    client: &Client,
    op: Operator,
    ns: &str,
    n: usize,
    concurrency: u16,
    sim: &Simulator,
) -> (Operator, Value) {
    let mints = sim.mints_total().await;
    let requests_before = apiserver_writes_and_gets(client).await;
    let mut op = op;
    op.stop();
    let restarted = Instant::now();
    let op = start_operator(ns, concurrency).await;
    let ready = restarted.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600 + n as u64 / 10);
    let resynced = loop {
        if counter(&op.metrics().await, "tcred_reconcile_total") >= n as f64 {
            break restarted.elapsed();
        }
        assert!(Instant::now() < deadline, "resync did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Every write the API server took from the stop to the end of the resync (the rig's
    // controller manager renews its own lease meanwhile: `leases PUT`).
    let writes: BTreeMap<String, f64> = delta(&apiserver_writes_and_gets(client).await, &requests_before)
        .into_iter()
        .filter(|(k, _)| is_write(k))
        .collect();
    let rss = rss_kib(op.pid());
    // Settled: what a quiet operator keeps after the resync's transient allocations.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let heap_settled = heap_kib(&op.metrics().await);
    let result = json!({
        "readySeconds": ready.as_secs_f64(),
        "allReconciledSeconds": resynced.as_secs_f64(),
        "mints": sim.mints_total().await - mints,
        "apiServerWrites": writes,
        "operatorRssKiB": rss,
        "memorySettled": memory(op.pid()),
        "heapSettledKiB": heap_settled,
    });
    (op, result)
}

// === Phase 4: steady rotation ===

/// Creates `count` credentials whose issued lifetime is 30 s, lets them settle into rotating,
/// and counts the API server's writes over `window` per rotation (rotations = mints meanwhile).
async fn rotation(client: &Client, ns: &str, sim: &Simulator, count: usize, window: Duration) -> Value {
    const LIFETIME: u64 = 30;
    sim.set_lifetime(Some(LIFETIME)).await;
    let api = Api::<TemporaryCredential>::namespaced(client.clone(), ns);
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            let tc = credential(ns, &format!("r{i:04}"));
            async move { api.create(&PostParams::default(), &tc).await.expect("create") }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    // Every credential issued and rotated at least once before the window opens.
    tokio::time::sleep(Duration::from_secs(LIFETIME * 3 / 2)).await;
    let (writes_before, mints_before) = (apiserver_writes(client).await, sim.mints_total().await);
    tokio::time::sleep(window).await;
    let (writes_after, mints_after) = (apiserver_writes(client).await, sim.mints_total().await);
    sim.set_lifetime(None).await;
    let rotations = (mints_after - mints_before) as f64;
    let writes = delta(&writes_after, &writes_before);
    let per = |pred: &dyn Fn(&str) -> bool| {
        let w: f64 = writes.iter().filter(|(k, _)| pred(k)).map(|(_, v)| v).sum();
        (w / rotations.max(1.0) * 100.0).round() / 100.0
    };
    json!({
        "credentials": count,
        "issuedLifetimeSeconds": LIFETIME,
        "windowSeconds": window.as_secs(),
        "rotations": rotations,
        "writesPerRotation": {
            "secrets": per(&|k| k.starts_with("secrets ")),
            "status": per(&|k| k.starts_with("temporarycredentials/status ")),
            "events": per(&|k| k.starts_with("events ")),
            "total": per(&|k| {
                k.starts_with("secrets ") || k.starts_with("temporarycredentials") || k.starts_with("events ")
            }),
        },
        "apiServerWritesInWindow": writes,
    })
}

#[tokio::main]
async fn main() {
    let n: usize = env_or("TCRED_BENCH_N", 100);
    let concurrency: u16 = env_or("TCRED_BENCH_CONCURRENCY", 16);
    let singles: usize = env_or("TCRED_BENCH_SINGLE", 30);
    let rotating: usize = env_or("TCRED_BENCH_ROTATING", 150);
    let window = Duration::from_secs(env_or("TCRED_BENCH_ROTATION_WINDOW", 60));
    let load_at_start = load_average();
    let client = admin().await;
    let ns = create_namespace(&client, "bench-create", &[]).await;
    let sim = Simulator::start(&default_sim_config()).await;
    access_key_source(&client, &ns, "corp", &sim).await;
    let op = start_operator(&ns, concurrency).await;
    let (arrived, watch) = watch_arrivals(&client, &ns, "app.kubernetes.io/managed-by=tcred");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heap_idle = heap_kib(&op.metrics().await);
    let memory_idle = memory(op.pid());

    let single = single_creates(&client, &ns, &op, &arrived, singles.max(1)).await;
    let template = template_secret(&client, &ns, "s000").await;
    let floor = measure_floor(&client, &ns, &template, single.creates.clone()).await;
    let single = single_json(single, floor);
    println!("single: {single}");

    let ceiling_count = n.clamp(1000, 5000);
    let ceiling_secrets = ceiling(&client, &ns, &template, ceiling_count, usize::from(concurrency)).await;
    println!("ceiling: {ceiling_secrets:.0} Secret applies/s");

    let load_before_burst = load_average();
    let mints_before = sim.mints_total().await;
    let requests_before = apiserver_writes_and_gets(&client).await;
    let (latencies, created_all, total) = burst(&client, &ns, n, &arrived).await;
    let credentials_per_second = n as f64 / total.as_secs_f64();
    let mints = sim.mints_total().await - mints_before;
    // Every request of the burst, the benchmark's own creates included (they are part of what the
    // API server must carry per credential), per credential; reads include other clients' GETs
    // made meanwhile (the rig's controller manager).
    let requests = delta(&apiserver_writes_and_gets(&client).await, &requests_before);
    let per_credential: BTreeMap<String, f64> = requests
        .iter()
        .map(|(k, v)| (k.clone(), (v / n as f64 * 100.0).round() / 100.0))
        .collect();
    let writes_per_credential: f64 = requests
        .iter()
        .filter(|(k, _)| is_write(k))
        .map(|(_, v)| v)
        .sum::<f64>()
        / n as f64;
    println!("burst requests per credential: {per_credential:?}");
    let metrics = op.metrics().await;
    let memory_after_create = memory(op.pid());
    println!("burst: {credentials_per_second:.0} credentials/s");
    watch.abort();
    // The steady state with every credential valid: the burst's transient allocations have had
    // the allocator's decay time (10 s) and its background purge to go back.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let memory_steady = memory(op.pid());
    let heap_steady = heap_kib(&op.metrics().await);
    println!("steady after the burst: {memory_steady}");

    let (op, restart) = restart(&client, op, &ns, n + singles, concurrency, &sim).await;
    println!("restart: {restart}");
    let rotation = if rotating > 0 {
        let r = rotation(&client, &ns, &sim, rotating, window).await;
        println!("rotation: {r}");
        r
    } else {
        Value::Null
    };

    let result = json!({
        "benchmark": "create_to_secret",
        "credentials": n,
        "operatorConcurrency": concurrency,
        "loadAverage": {"start": load_at_start, "beforeBurst": load_before_burst, "end": load_average()},
        "single": single,
        "apiServerCeiling": {
            "secretAppliesPerSecond": ceiling_secrets,
            "secrets": ceiling_count,
            "workers": concurrency,
            "credentialsPerSecondAtTwoWrites": ceiling_secrets / 2.0,
        },
        "burst": {
            "latencyMs": latency_json(latencies),
            "createAllSeconds": created_all.as_secs_f64(),
            "allSecretsSeconds": total.as_secs_f64(),
            "credentialsPerSecond": credentials_per_second,
            "ratioToCeiling": credentials_per_second / (ceiling_secrets / 2.0),
            "apiServerRequestsPerCredential": per_credential,
            "writesPerCredential": writes_per_credential,
            "ratioToCeilingAtMeasuredWrites":
                credentials_per_second * writes_per_credential / ceiling_secrets,
            "simulatorMints": mints,
            "reconciles": counter(&metrics, "tcred_reconcile_total"),
            "staleCacheReads": counter(&metrics, "tcred_stale_cache_reads_total"),
            "operatorRssKiB": memory_after_create["rssKiB"],
            "memory": memory_after_create,
            "heapKiB": heap_kib(&metrics),
            "memorySteady": memory_steady,
            "heapSteadyKiB": heap_steady,
        },
        "operatorMemoryIdle": memory_idle,
        "operatorHeapIdleKiB": heap_idle,
        "restart": restart,
        "rotation": rotation,
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
