//! Chaos soak: many short-lived credentials rotating for many minutes while the Huawei simulator
//! answers with latency, 5xx and 429 + Retry-After, the leading operator is SIGKILLed again and
//! again (a standby takes over), and the API server itself is restarted once. Run by hand or by
//! `make soak` (not part of `make test`); docs/benchmarks.md, "Chaos soak", has the figures.
//!
//!   make soak                                             # release build, defaults below
//!   TCRED_SOAK_CREDENTIALS=200 TCRED_SOAK_MINUTES=10 cargo bench --bench soak
//!
//! Knobs (environment): `TCRED_SOAK_CREDENTIALS` (300), `TCRED_SOAK_MINUTES` of chaos (15),
//! `TCRED_SOAK_LIFETIMES` (the simulator's lifetime cap in seconds, cycled per fault phase;
//! "120,90"), `TCRED_SOAK_KILL_EVERY` (seconds between leader SIGKILLs, 90),
//! `TCRED_SOAK_APISERVER_PAUSE` (seconds the API server stays stopped, 5), `TCRED_SOAK_SAMPLE`
//! (seconds between Secret samples, 3), `TCRED_SOAK_CONCURRENCY` (operator `--concurrency`, 16),
//! `TCRED_SOAK_NAMESPACE_CONCURRENCY` (operator `--namespace-concurrency`, the same as
//! `--concurrency`: the whole fleet is in one namespace, and the default share of 4 would measure
//! the fairness limit — about 4 mints/s at the storm's one-second latency, below the fleet's 5–6.7
//! rotations/s), `TCRED_SOAK_RENEW_PERCENT` (the credentials' `renewBeforePercentage`, 50).
//!
//! A sampler lists every Secret throughout: a Secret holding an expired credential is a failure;
//! a few credentials per sample sign a GetCallerIdentity call the simulator must accept. At the
//! end: mints (the simulator's count) per rotation (the credentials' `status.rotations`), the API
//! server's own write counts per rotation (`apiserver_request_total`, scraped before and after,
//! summed over the two API server lifetimes), and the time until every credential was Ready and
//! fresh again after the API server came back. Writes `target/bench/soak.json`; exits 1 when an
//! invariant fails.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde_json::{Value, json};
use support::*;
use tcred::{
    api::{TemporaryCredential, annotations},
    cloud::{HttpClient, endpoints::parse_endpoint, http::Timeouts, signer::AccessKey, sts},
    sensitive::SecretString,
};

const LEASE: &str = "tcred-controller";
const LEASE_SECONDS: u64 = 6;
const SECRET_SELECTOR: &str = "app.kubernetes.io/managed-by=tcred";
/// Mints per rotation the soak accepts (a few lost to a SIGKILL between mint and Secret write).
const MAX_MINTS_PER_ROTATION: f64 = 1.05;
/// A renewal this far past its time still counts as fresh (a mint in flight, a retry backing
/// off): after the API server restart (recovery) and at the end (settled).
const RECOVERY_GRACE: i64 = 5;
const SETTLED_GRACE: i64 = 20;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

struct Knobs {
    credentials: usize,
    chaos: Duration,
    lifetimes: Vec<u64>,
    kill_every: Duration,
    apiserver_pause: u64,
    sample_every: Duration,
    concurrency: u16,
    namespace_concurrency: u16,
    renew_percent: u8,
}

impl Knobs {
    fn from_env() -> Self {
        let lifetimes: Vec<u64> = std::env::var("TCRED_SOAK_LIFETIMES")
            .unwrap_or_else(|_| "120,90".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .filter(|&s| s >= 60)
            .collect();
        Self {
            credentials: env_or("TCRED_SOAK_CREDENTIALS", 300),
            chaos: Duration::from_secs_f64(env_or("TCRED_SOAK_MINUTES", 15.0) * 60.0),
            lifetimes: if lifetimes.is_empty() {
                vec![120]
            } else {
                lifetimes
            },
            kill_every: Duration::from_secs(env_or("TCRED_SOAK_KILL_EVERY", 90)),
            apiserver_pause: env_or("TCRED_SOAK_APISERVER_PAUSE", 5),
            sample_every: Duration::from_secs(env_or("TCRED_SOAK_SAMPLE", 3)),
            concurrency: env_or("TCRED_SOAK_CONCURRENCY", 16),
            namespace_concurrency: env_or(
                "TCRED_SOAK_NAMESPACE_CONCURRENCY",
                env_or("TCRED_SOAK_CONCURRENCY", 16),
            ),
            renew_percent: env_or("TCRED_SOAK_RENEW_PERCENT", 50u8).clamp(1, 90),
        }
    }
}

// === Operators: two replicas with leader election, replaced when they die ===

struct Replicas {
    ns: String,
    concurrency: u16,
    namespace_concurrency: u16,
    ops: Vec<(String, Operator)>,
    started: u32,
    kills: u32,
    /// Replicas that exited without being killed by the soak (e.g. a lost lease).
    exits: u32,
}

impl Replicas {
    async fn start(ns: &str, concurrency: u16, namespace_concurrency: u16) -> Self {
        let mut r = Self {
            ns: ns.to_owned(),
            concurrency,
            namespace_concurrency,
            ops: vec![],
            started: 0,
            kills: 0,
            exits: 0,
        };
        r.top_up().await;
        r
    }

    async fn spawn(&mut self) {
        self.started += 1;
        let identity = format!("soak-{}", self.started);
        let options = OperatorOptions {
            namespace: Some(&self.ns),
            leader_elect: true,
            lease_namespace: Some(&self.ns),
            identity: &identity,
            rust_log: "warn",
            min_mint_interval: "15s",
            min_credential_lifetime: "30s",
            extra: vec![
                format!("--concurrency={}", self.concurrency),
                format!("--namespace-concurrency={}", self.namespace_concurrency),
                format!("--lease-duration-seconds={LEASE_SECONDS}"),
                "--lease-grace-seconds=2".into(),
            ],
            kubeconfig: None,
        };
        let op = Operator::start_with("soak", options).await;
        self.ops.push((identity, op));
    }

    /// Replaces replicas that exited, so two always run (as a Deployment's pods would be).
    async fn top_up(&mut self) {
        let before = self.ops.len();
        self.ops.retain(|(_, op)| op.pid().is_some_and(process_alive));
        self.exits += (before - self.ops.len()) as u32;
        while self.ops.len() < 2 {
            self.spawn().await;
        }
    }

    /// SIGKILLs the replica named `holder` (the lease holder); false when none of ours is.
    fn kill_leader(&mut self, holder: &str) -> bool {
        let Some(i) = self.ops.iter().position(|(id, _)| id == holder) else {
            return false;
        };
        let (_, mut op) = self.ops.remove(i);
        op.kill();
        self.kills += 1;
        true
    }

    fn panics(&self) -> Vec<String> {
        self.ops
            .iter()
            .flat_map(|(_, op)| panic_lines(&op.logs()))
            .collect()
    }

    fn stop_all(&mut self) {
        for (_, op) in &mut self.ops {
            op.stop();
        }
    }
}

async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(LEASE)
        .await
        .ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

// === The sampler ===

#[derive(Default)]
struct Samples {
    rounds: u64,
    failed_lists: u64,
    secrets_seen: u64,
    expired: Vec<Value>,
    min_remaining_seconds: Option<i64>,
    /// The access key last seen in each Secret; a new one is a rotation seen by the sampler.
    last_key: HashMap<String, String>,
    rotations_seen: u64,
    signed_ok: u64,
    signed_rejected: Vec<String>,
}

fn text(s: &Secret, key: &str) -> Option<String> {
    let v = s.data.as_ref()?.get(key)?;
    String::from_utf8(v.0.clone()).ok()
}

fn key_of(s: &Secret) -> Option<AccessKey> {
    Some(AccessKey {
        id: text(s, "HUAWEICLOUD_SDK_AK")?,
        secret: SecretString::new(text(s, "HUAWEICLOUD_SDK_SK")?),
        security_token: Some(SecretString::new(text(s, "HUAWEICLOUD_SDK_SECURITY_TOKEN")?)),
    })
}

fn expires_at(s: &Secret) -> Option<jiff::Timestamp> {
    text(s, "HUAWEICLOUD_SDK_EXPIRES_AT")?.parse().ok()
}

/// One sample: every Secret's expiry against now, and `verify` of them signing a call.
async fn sample_once(
    client: &Client,
    ns: &str,
    http: &HttpClient,
    sts_url: &url::Url,
    verify: usize,
    samples: &Mutex<Samples>,
) {
    let list = Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(SECRET_SELECTOR))
        .await;
    let Ok(list) = list else {
        samples.lock().unwrap().failed_lists += 1;
        return;
    };
    let now = jiff::Timestamp::now();
    let mut to_verify = vec![];
    {
        let mut s = samples.lock().unwrap();
        s.rounds += 1;
        let offset = (s.rounds as usize * verify) % list.items.len().max(1);
        for (i, secret) in list.items.iter().enumerate() {
            s.secrets_seen += 1;
            let name = secret.name_any();
            let Some(exp) = expires_at(secret) else {
                s.expired
                    .push(json!({"secret": name, "observedAt": now.to_string(), "expiresAt": null}));
                continue;
            };
            let left = exp.as_second() - now.as_second();
            s.min_remaining_seconds = Some(s.min_remaining_seconds.map_or(left, |m| m.min(left)));
            if exp <= now {
                s.expired.push(
                    json!({"secret": name, "observedAt": now.to_string(), "expiresAt": exp.to_string()}),
                );
            }
            if let Some(ak) = text(secret, "HUAWEICLOUD_SDK_AK")
                && s.last_key
                    .insert(name.clone(), ak.clone())
                    .is_some_and(|old| old != ak)
            {
                s.rotations_seen += 1;
            }
            let pick = (i + list.items.len() - offset) % list.items.len().max(1) < verify;
            if pick && left > 5 {
                to_verify.push((name, secret.clone()));
            }
        }
    }
    for (name, secret) in to_verify {
        let Some(key) = key_of(&secret) else { continue };
        let result = sts::caller_identity(http, sts_url, &key).await;
        let mut s = samples.lock().unwrap();
        match result {
            Ok(who) if who.principal_urn.contains("assumed-agency:ops/") => s.signed_ok += 1,
            Ok(who) => s
                .signed_rejected
                .push(format!("{name}: unexpected principal {}", who.principal_urn)),
            Err(e) => s.signed_rejected.push(format!("{name}: {e}")),
        }
    }
}

// === The API server's own counters ===

/// `apiserver_request_total` summed over status codes, keyed `resource[/subresource] VERB`
/// (mutating verbs only), for the resources tcred writes.
async fn apiserver_writes(client: &Client) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(req).await.unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else { continue };
        let label = |k: &str| {
            let pat = format!("{k}=\"");
            labels
                .find(&pat)
                .map(|i| &labels[i + pat.len()..])
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        let (resource, sub, verb) = (label("resource"), label("subresource"), label("verb"));
        let tracked = ["secrets", "temporarycredentials", "events", "leases"];
        if !tracked.contains(&resource.as_str()) || ["GET", "LIST", "WATCH"].contains(&verb.as_str()) {
            continue;
        }
        let key = if sub.is_empty() {
            format!("{resource} {verb}")
        } else {
            format!("{resource}/{sub} {verb}")
        };
        *out.entry(key).or_insert(0.0) += value;
    }
    out
}

fn add_delta(
    total: &mut BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) {
    for (k, v) in after {
        *total.entry(k.clone()).or_insert(0.0) += v - before.get(k).copied().unwrap_or(0.0);
    }
}

// === Readiness of the whole fleet ===

/// `Ok` when every credential is Ready=True and every Secret holds an unexpired credential whose
/// renewal is not overdue by more than `grace` seconds; else how many are not.
async fn fleet_fresh(client: &Client, ns: &str, n: usize, grace: i64) -> Result<(), String> {
    let tcs = Api::<TemporaryCredential>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list credentials: {e}"))?;
    let not_ready = tcs
        .items
        .iter()
        .filter(|tc| ready_of(tc).map(|(s, _)| s) != Some("True".into()))
        .count();
    let secrets = Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(SECRET_SELECTOR))
        .await
        .map_err(|e| format!("list Secrets: {e}"))?;
    let now = jiff::Timestamp::now().as_second();
    let stale = secrets
        .items
        .iter()
        .filter(|s| {
            let expired = expires_at(s).is_none_or(|e| e.as_second() <= now);
            let overdue = s
                .annotations()
                .get(annotations::RENEWAL_TIME)
                .and_then(|r| r.parse::<jiff::Timestamp>().ok())
                .is_none_or(|r| r.as_second() + grace < now);
            expired || overdue
        })
        .count();
    if not_ready == 0 && stale == 0 && secrets.items.len() == n {
        Ok(())
    } else {
        Err(format!(
            "{not_ready} not Ready, {stale} stale, {} of {n} Secrets",
            secrets.items.len()
        ))
    }
}

async fn rotations_total(client: &Client, ns: &str) -> i64 {
    Api::<TemporaryCredential>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list credentials")
        .items
        .iter()
        .filter_map(|tc| tc.status.as_ref().map(|s| s.rotations))
        .sum()
}

// === Faults ===

/// The fault phase at `elapsed`, in 45 s slots: two of mild trouble, then one of a storm,
/// repeating; each slot also moves the simulator's lifetime cap along `lifetimes`.
fn phase(elapsed: Duration, lifetimes: &[u64]) -> (usize, &'static str, Value, u64) {
    let n = (elapsed.as_secs() / 45) as usize;
    let lifetime = lifetimes[n % lifetimes.len()];
    if n % 3 == 2 {
        let storm = json!({"latencyMs": 200, "latencyJitterMs": 1500, "errorRate": 0.2,
                           "throttleRate": 0.2, "retryAfterSeconds": 3, "scope": "mint"});
        (n, "storm", storm, lifetime)
    } else {
        let mild = json!({"latencyMs": 20, "latencyJitterMs": 300, "errorRate": 0.05,
                          "throttleRate": 0.05, "retryAfterSeconds": 2, "scope": "mint"});
        (n, "mild", mild, lifetime)
    }
}

fn restart_apiserver(pause: u64) -> bool {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/cluster.sh");
    std::process::Command::new(script)
        .args(["restart-apiserver", &pause.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// Creates the credentials (renewing at half their lifetime) and waits for all to be fresh.
async fn create_fleet(client: &Client, ns: &str, n: usize, renew_percent: u8) -> Duration {
    use futures::StreamExt;
    let started = Instant::now();
    let api = Api::<TemporaryCredential>::namespaced(client.clone(), ns);
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let name = format!("c{i:05}");
            let m = agency_credential(
                ns,
                &name,
                "corp",
                json!({"duration": "15m", "renewBeforePercentage": renew_percent}),
            );
            async move {
                let tc: TemporaryCredential = serde_json::from_value(m).expect("manifest");
                api.create(&Default::default(), &tc).await.expect("create");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    wait_for(
        Duration::from_secs(600 + n as u64),
        "every credential Ready with its Secret",
        || async { fleet_fresh(client, ns, n, SETTLED_GRACE).await.ok() },
    )
    .await;
    started.elapsed()
}

struct Chaos {
    leader_kills: Vec<f64>,
    failovers: Vec<f64>,
    apiserver_down: Option<f64>,
    apiserver_ok: bool,
    recovery: Option<f64>,
    /// What was not fresh when the API server answered again.
    at_return: String,
    /// Secrets expired or overdue for renewal when the API server answered again.
    behind_at_return: usize,
    writes: BTreeMap<String, f64>,
    /// The API server's counters when the current segment of `writes` began.
    scrape_from: BTreeMap<String, f64>,
    phases: Vec<Value>,
}

/// Waits until the lease holder is someone other than `old` (the failover time).
async fn wait_new_holder(client: &Client, ns: &str, old: &str, replicas: &mut Replicas) -> Option<f64> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(120) {
        if lease_holder(client, ns).await.is_some_and(|h| h != old) {
            return Some(secs(t.elapsed()));
        }
        replicas.top_up().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Restarts the API server (`hack/cluster.sh restart-apiserver`) and measures the time until
/// every credential is Ready and fresh again.
async fn restart_and_recover(
    client: &Client,
    ns: &str,
    knobs: &Knobs,
    replicas: &mut Replicas,
    out: &mut Chaos,
) {
    let before = apiserver_writes(client).await;
    add_delta(&mut out.writes, &out.scrape_from, &before);
    let t = Instant::now();
    let pause = knobs.apiserver_pause;
    out.apiserver_ok = tokio::task::spawn_blocking(move || restart_apiserver(pause))
        .await
        .unwrap_or(false);
    out.apiserver_down = Some(secs(t.elapsed()));
    // A new API server process counts from zero.
    out.scrape_from = BTreeMap::new();
    let back = Instant::now();
    out.at_return = fleet_fresh(client, ns, knobs.credentials, RECOVERY_GRACE)
        .await
        .err()
        .unwrap_or_else(|| "all fresh".into());
    // Caught up: every Secret that was behind (expired, or its renewal overdue) when the API
    // server answered again holds a new, unexpired credential. Faults keep running, so "every
    // renewal on time" is not the bar: a storm keeps a few renewals retrying at any moment.
    let mut behind: Option<HashMap<String, String>> = None;
    while back.elapsed() < Duration::from_secs(600) {
        replicas.top_up().await;
        if let Ok(list) = Api::<Secret>::namespaced(client.clone(), ns)
            .list(&ListParams::default().labels(SECRET_SELECTOR))
            .await
        {
            let now = jiff::Timestamp::now().as_second();
            let state = |s: &Secret| {
                let expired = expires_at(s).is_none_or(|e| e.as_second() <= now);
                let overdue = s
                    .annotations()
                    .get(annotations::RENEWAL_TIME)
                    .and_then(|r| r.parse::<jiff::Timestamp>().ok())
                    .is_none_or(|r| r.as_second() + RECOVERY_GRACE < now);
                (
                    expired,
                    overdue,
                    text(s, "HUAWEICLOUD_SDK_AK").unwrap_or_default(),
                )
            };
            let b = behind.get_or_insert_with(|| {
                let b: HashMap<String, String> = list
                    .items
                    .iter()
                    .filter_map(|s| {
                        let (expired, overdue, ak) = state(s);
                        (expired || overdue).then(|| (s.name_any(), ak))
                    })
                    .collect();
                out.behind_at_return = b.len();
                b
            });
            let mut any_expired = false;
            for s in &list.items {
                let (expired, _, ak) = state(s);
                any_expired |= expired;
                if !expired && b.get(&s.name_any()).is_some_and(|old| *old != ak) {
                    b.remove(&s.name_any());
                }
            }
            if b.is_empty() && !any_expired && list.items.len() == knobs.credentials {
                out.recovery = Some(secs(back.elapsed()));
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!(
        "[soak] API server down {:?} s; when back: {}; caught up after {:?} s",
        out.apiserver_down, out.at_return, out.recovery
    );
}

async fn run_chaos(
    client: &Client,
    ns: &str,
    knobs: &Knobs,
    sim: &Simulator,
    replicas: &mut Replicas,
) -> Chaos {
    let mut out = Chaos {
        leader_kills: vec![],
        failovers: vec![],
        apiserver_down: None,
        apiserver_ok: false,
        recovery: None,
        at_return: String::new(),
        behind_at_return: 0,
        writes: BTreeMap::new(),
        scrape_from: apiserver_writes(client).await,
        phases: vec![],
    };
    let started = Instant::now();
    let mut last_kill = Instant::now();
    let mut current_phase = usize::MAX;
    let mut restarted = false;
    while started.elapsed() < knobs.chaos {
        let (n, name, faults, lifetime) = phase(started.elapsed(), &knobs.lifetimes);
        if n != current_phase {
            current_phase = n;
            sim.set_faults(faults).await;
            sim.set_lifetime(Some(lifetime)).await;
            out.phases
                .push(json!({"at": secs(started.elapsed()), "phase": name, "lifetimeSeconds": lifetime}));
        }
        if !restarted && started.elapsed() >= knobs.chaos / 2 {
            restarted = true;
            println!("[soak] restarting the API server at {:.0?}", started.elapsed());
            restart_and_recover(client, ns, knobs, replicas, &mut out).await;
            last_kill = Instant::now();
        }
        if last_kill.elapsed() >= knobs.kill_every
            && let Some(holder) = lease_holder(client, ns).await
            && replicas.kill_leader(&holder)
        {
            last_kill = Instant::now();
            out.leader_kills.push(secs(started.elapsed()));
            replicas.top_up().await;
            if let Some(f) = wait_new_holder(client, ns, &holder, replicas).await {
                out.failovers.push(f);
            }
        }
        replicas.top_up().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    sim.set_faults(json!({"latencyMs": 0, "latencyJitterMs": 0, "errorRate": 0.0, "throttleRate": 0.0}))
        .await;
    out
}

#[tokio::main]
async fn main() {
    let knobs = Knobs::from_env();
    let client = admin().await;
    let ns = create_namespace(&client, "soak", &[]).await;
    let sim = Simulator::start(&default_sim_config()).await;
    sim.set_lifetime(Some(knobs.lifetimes[0])).await;
    access_key_source(&client, &ns, "corp", &sim).await;
    let mut replicas = Replicas::start(&ns, knobs.concurrency, knobs.namespace_concurrency).await;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "[soak] {} credentials, {:.0?} of chaos, namespace {ns}, load {}",
        knobs.credentials,
        knobs.chaos,
        load.trim()
    );
    let setup = create_fleet(&client, &ns, knobs.credentials, knobs.renew_percent).await;
    println!("[soak] every credential issued after {setup:.1?}");

    // The sampler runs from here to the end.
    let samples: Arc<Mutex<Samples>> = Arc::default();
    let sampler = {
        let (client, ns, samples) = (client.clone(), ns.clone(), samples.clone());
        let sts_url = parse_endpoint(&sim.url).expect("simulator URL");
        let every = knobs.sample_every;
        tokio::spawn(async move {
            let http = HttpClient::new(Timeouts::default()).expect("http client");
            loop {
                sample_once(&client, &ns, &http, &sts_url, 3, &samples).await;
                tokio::time::sleep(every).await;
            }
        })
    };

    let mints_before = sim.mints_total().await;
    let rotations_before = rotations_total(&client, &ns).await;
    let window = Instant::now();
    let chaos = run_chaos(&client, &ns, &knobs, &sim, &mut replicas).await;

    // Calm: every credential fresh again, then stop the replicas and count.
    let settle = Instant::now();
    let settled = tokio::time::timeout(Duration::from_secs(300), async {
        while fleet_fresh(&client, &ns, knobs.credentials, SETTLED_GRACE)
            .await
            .is_err()
        {
            replicas.top_up().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await
    .is_ok();
    let settle = secs(settle.elapsed());
    let mut chaos = chaos;
    let end = apiserver_writes(&client).await;
    add_delta(&mut chaos.writes, &chaos.scrape_from, &end);
    sampler.abort();
    let panics = replicas.panics();
    replicas.stop_all();
    let mints = sim.mints_total().await - mints_before;
    let rotations = rotations_total(&client, &ns).await - rotations_before;
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let window_seconds = window.elapsed().as_secs_f64();
    let needed = |lifetime: u64| {
        let period = lifetime as f64 * (100 - knobs.renew_percent as u64) as f64 / 100.0;
        (knobs.credentials as f64 / period * 100.0).round() / 100.0
    };
    let per_rotation = |v: f64| (v / rotations.max(1) as f64 * 1000.0).round() / 1000.0;
    let mints_per_rotation = per_rotation(mints as f64);
    let tc_writes: f64 = ["secrets", "temporarycredentials", "events"]
        .iter()
        .map(|r| {
            chaos
                .writes
                .iter()
                .filter(|(k, _)| k.split([' ', '/']).next() == Some(r))
                .map(|(_, v)| v)
                .sum::<f64>()
        })
        .sum();
    let writes_per_resource: BTreeMap<&String, f64> =
        chaos.writes.iter().map(|(k, v)| (k, per_rotation(*v))).collect();

    let mut failures = vec![];
    if !samples.expired.is_empty() {
        failures.push(format!(
            "{} expired credentials seen in Secrets",
            samples.expired.len()
        ));
    }
    if mints_per_rotation > MAX_MINTS_PER_ROTATION {
        failures.push(format!(
            "{mints_per_rotation} mints per rotation (at most {MAX_MINTS_PER_ROTATION})"
        ));
    }
    if !samples.signed_rejected.is_empty() {
        failures.push(format!(
            "{} sampled credentials rejected",
            samples.signed_rejected.len()
        ));
    }
    if !chaos.apiserver_ok || chaos.recovery.is_none() {
        failures.push("the fleet did not recover after the API server restart".into());
    }
    if !settled {
        failures.push("the fleet was not fresh 5 minutes after the chaos ended".into());
    }
    if !panics.is_empty() {
        failures.push(format!("{} panics in operator logs", panics.len()));
    }
    if rotations <= 0 {
        failures.push("no rotation happened".into());
    }

    let result = json!({
        "benchmark": "soak",
        "credentials": knobs.credentials,
        "chaosSeconds": knobs.chaos.as_secs(),
        "lifetimesSeconds": knobs.lifetimes,
        "renewBeforePercentage": knobs.renew_percent,
        "operatorConcurrency": knobs.concurrency,
        "namespaceConcurrency": knobs.namespace_concurrency,
        "setupSeconds": secs(setup),
        "expiredInSecretObservations": samples.expired.len(),
        "expiredExamples": samples.expired.iter().take(20).collect::<Vec<_>>(),
        "minRemainingValiditySeconds": samples.min_remaining_seconds,
        "sampler": {
            "rounds": samples.rounds, "failedLists": samples.failed_lists,
            "secretObservations": samples.secrets_seen, "rotationsSeen": samples.rotations_seen,
            "signedCallsAccepted": samples.signed_ok, "signedCallsRejected": samples.signed_rejected,
        },
        "mints": mints,
        "rotations": rotations,
        "mintsPerRotation": mints_per_rotation,
        "mintsPerSecond": (mints as f64 / window_seconds * 100.0).round() / 100.0,
        // What the fleet needs: each credential renews when `renewBeforePercentage` of its
        // lifetime is left.
        "rotationsPerSecondNeeded": {
            "atLongestLifetime": needed(*knobs.lifetimes.iter().max().unwrap_or(&120)),
            "atShortestLifetime": needed(*knobs.lifetimes.iter().min().unwrap_or(&120)),
        },
        "apiServerWrites": chaos.writes,
        "apiServerWritesPerRotation": {
            "secretsTemporaryCredentialsEvents": per_rotation(tc_writes),
            "byResourceAndVerb": writes_per_resource,
        },
        "leaderKills": chaos.leader_kills.len(),
        "leaderKillsAtSeconds": chaos.leader_kills,
        "failoverSeconds": chaos.failovers,
        "replicasStarted": replicas.started,
        "replicaExitsUnplanned": replicas.exits,
        "apiServerRestart": {"ok": chaos.apiserver_ok, "stoppedToReadySeconds": chaos.apiserver_down,
                             "pauseSeconds": knobs.apiserver_pause, "notFreshWhenBack": chaos.at_return,
                             "behindWhenBack": chaos.behind_at_return,
                             "recoverySeconds": chaos.recovery},
        "settleSeconds": settle,
        "faultPhases": chaos.phases,
        "operatorPanics": panics,
        "loadAverage": {"start": load.trim(), "end": load_after.trim()},
        "profile": if cfg!(debug_assertions) { "dev" } else { "release" },
        "failures": failures,
        "date": jiff::Timestamp::now().to_string(),
    });
    let pretty = serde_json::to_string_pretty(&result).expect("json");
    println!("{pretty}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(dir.join("soak.json"), &pretty).expect("write soak.json");
    println!("wrote {}", dir.join("soak.json").display());
    delete_namespace(&client, &ns).await;
    // `process::exit` runs no destructors: stop the simulator and any replica first.
    drop(replicas);
    drop(sim);
    if !failures.is_empty() {
        eprintln!("soak FAILED: {}", failures.join("; "));
        std::process::exit(1);
    }
}
