//! Hostile input (issue 13): every attack a tenant can make on tcred, each against a victim
//! namespace whose credentials must keep rotating.
//!
//! Each test runs one operator (cluster-wide, so it serves both the attacker's and the victim's
//! namespace; `--exclude-namespaces` leaves the other tests' namespaces of this run to their own
//! operators), a well-behaved simulator for the victim (credentials of 90 s, renewed about every
//! minute) and the attacker's own simulator(s), often in hostile mode (docs/simulator.md). While
//! the attack runs, the victim's Secret is sampled every second. At the end of each test:
//!
//! - the attacked object made at most 3 mint calls in the 60 s after the attack began;
//! - the victim's Secret never held an expired credential, and the victim rotated;
//! - the operator process is alive (0 restarts), its log has no panic, its peak RSS < 128 MiB;
//! - no token any attacker simulator received is accepted by the API server (TokenReview).
//!
//! The figures are printed and written to `target/bench/hostile.json` (one entry per attack).
//! Cargo runs test binaries one after another, so no other test binary's operator runs meanwhile;
//! the tests of this file run in parallel (about 90 s each).

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::*;
use tcred::api::{TemporaryCredential, condition::reasons};

/// Every attack of this file: each gets the namespaces `hostile-<run>-<attack>-{a,v}`.
const ATTACKS: &[&str] = &[
    "huge-body",
    "expired",
    "extreme-expiry",
    "malformed",
    "extra-key",
    "bad-labels",
    "big-annotations",
    "expires-at",
    "web-identity",
    "session-expiry",
    "hostile-date",
    "stolen-secret",
    "endpoint",
    "rotate-spam",
    "restart",
    "slow",
    "excluded",
];

/// The victim's credential lifetime (capped by its simulator): renewed about every minute.
const VICTIM_LIFETIME: u64 = 90;
/// How long the attacked object's mint calls are counted.
const WINDOW: Duration = Duration::from_secs(60);
/// The issue's bound on the attacked object's mint calls in [`WINDOW`].
const MAX_MINT_CALLS: u64 = 3;
/// The issue's bound on the operator's peak RSS under attack.
const MAX_PEAK_RSS_KIB: u64 = 128 * 1024;

const SECRET_EXPIRES_AT: &str = "HUAWEICLOUD_SDK_EXPIRES_AT";

static RUN: LazyLock<String> = LazyLock::new(|| format!("{:05}", rand::random::<u32>() % 100_000));

fn namespace_of(attack: &str, role: &str) -> String {
    format!("hostile-{}-{attack}-{role}", *RUN)
}

/// Samples a managed Secret every second and counts the times it held an expired (or
/// unreadable) credential.
struct Sampler {
    expired: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(client: &Client, ns: &str, name: &str) -> Self {
        let (expired, samples, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let api = Api::<Secret>::namespaced(client.clone(), ns);
        let name = name.to_owned();
        let task = {
            let (expired, samples, stop) = (expired.clone(), samples.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Some(secret)) = api.get_opt(&name).await {
                        samples.fetch_add(1, Ordering::Relaxed);
                        let expiry = secret
                            .data
                            .as_ref()
                            .and_then(|d| d.get(SECRET_EXPIRES_AT))
                            .and_then(|v| std::str::from_utf8(&v.0).ok())
                            .and_then(|s| s.parse::<jiff::Timestamp>().ok());
                        if expiry.is_none_or(|at| at <= jiff::Timestamp::now()) {
                            expired.fetch_add(1, Ordering::Relaxed);
                            eprintln!("{name}: expired or unreadable credential in the Secret: {expiry:?}");
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        Self {
            expired,
            samples,
            stop,
            task,
        }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (
            self.expired.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}

/// The figures the issue's "Done when" asks for, per attack.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Figures {
    attacker_mint_calls_in_60s: u64,
    victim_expired_observations: u64,
    victim_samples: u64,
    victim_mints: u64,
    operator_peak_rss_mib: f64,
    operator_restarts: u32,
    operator_panics: usize,
    received_tokens: usize,
    received_tokens_accepted_by_apiserver: usize,
}

static BENCH: Mutex<()> = Mutex::new(());

/// Adds (or replaces) this attack's entry in `target/bench/hostile.json`.
fn record(attack: &str, figures: &Figures) {
    let _guard = BENCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("hostile.json");
    let mut all: BTreeMap<String, Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let mut entry = serde_json::to_value(figures).unwrap_or(Value::Null);
    entry["run"] = json!(*RUN);
    entry["at"] = json!(jiff::Timestamp::now().to_string());
    all.insert(attack.to_owned(), entry);
    let _ = std::fs::write(&path, serde_json::to_string_pretty(&all).unwrap_or_default());
}

/// One attack's world: the attacker's and the victim's namespaces, the victim's simulator and
/// credential (already issued), the operator, and the sampler of the victim's Secret. Dropping it
/// kills the processes and deletes both namespaces.
struct Arena {
    attack: &'static str,
    admin: Client,
    attacker: String,
    victim: String,
    victim_sim: Simulator,
    op: Operator,
    sampler: Option<Sampler>,
    attack_started: Instant,
    _namespaces: Namespaces,
}

impl Arena {
    async fn start(attack: &'static str, extra: &[&str]) -> Self {
        Self::start_with(attack, extra, false).await
    }

    /// As [`Arena::start`]; with `exclude_attacker`, the cluster-wide operator also leaves the
    /// attacker's namespace alone (`--exclude-namespaces`), for a scoped installation there.
    async fn start_with(attack: &'static str, extra: &[&str], exclude_attacker: bool) -> Self {
        assert!(ATTACKS.contains(&attack), "{attack} is listed in ATTACKS");
        let admin = admin().await;
        let (attacker, victim) = (namespace_of(attack, "a"), namespace_of(attack, "v"));
        let namespaces = Namespaces(vec![attacker.clone(), victim.clone()]);
        create_named_namespace(&admin, &attacker).await;
        create_named_namespace(&admin, &victim).await;
        let victim_sim = Simulator::start(&default_sim_config()).await;
        victim_sim.set_lifetime(Some(VICTIM_LIFETIME)).await;
        access_key_source(&admin, &victim, "victim-src", &victim_sim).await;
        apply(
            &admin,
            agency_credential(&victim, "victim", "victim-src", json!({})),
        )
        .await;

        let mut others: Vec<String> = ATTACKS
            .iter()
            .filter(|a| **a != attack)
            .flat_map(|a| [namespace_of(a, "a"), namespace_of(a, "v")])
            .collect();
        if exclude_attacker {
            others.push(attacker.clone());
        }
        let mut flags = vec![format!("--exclude-namespaces={}", others.join(","))];
        flags.extend(extra.iter().map(|f| (*f).to_owned()));
        let op = Operator::start_with(
            &format!("hostile-{attack}"),
            OperatorOptions {
                namespace: None,
                identity: attack,
                extra: flags,
                ..OperatorOptions::production()
            },
        )
        .await;
        wait_ready_reason(
            &admin,
            &victim,
            "victim",
            reasons::ISSUED,
            Duration::from_secs(60),
        )
        .await;
        let sampler = Some(Sampler::start(&admin, &victim, "victim"));
        Self {
            attack,
            admin,
            attacker,
            victim,
            victim_sim,
            op,
            sampler,
            attack_started: Instant::now(),
            _namespaces: namespaces,
        }
    }

    /// Marks the moment the attack begins: the 60 s window of mint calls starts here.
    fn attack_now(&mut self) {
        self.attack_started = Instant::now();
    }

    /// Waits out the window, reads the attackers' mint calls, lets the victim renew, then checks
    /// and records the figures every attack shares. `max_calls` bounds the mint calls of all
    /// `attackers` together (3 per attacked object).
    async fn finish(mut self, attackers: &[&Simulator], max_calls: u64) -> Figures {
        if let Some(left) = WINDOW.checked_sub(self.attack_started.elapsed()) {
            tokio::time::sleep(left).await;
        }
        let mut calls = 0;
        for sim in attackers {
            calls += sim.mint_calls().await;
        }
        // The victim renews about a minute after its first issue: wait for that rotation.
        let victim_urn = agency_urn(AGENCY);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.victim_sim.mints(&victim_urn).await < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let victim_mints = self.victim_sim.mints(&victim_urn).await;
        let (expired, samples) = match self.sampler.take() {
            Some(s) => s.stop().await,
            None => (0, 0),
        };

        let pid = self.op.pid().expect("the operator was started");
        let peak = peak_rss_kib(pid).unwrap_or(0);
        let alive = process_alive(pid);
        let panics = panic_lines(&self.op.logs());
        let mut received = Vec::new();
        for sim in attackers {
            received.extend(sim.received_id_tokens().await);
            let r = sim.received().await;
            for key in ["accessTokens", "refreshTokens"] {
                received.extend(
                    r[key]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str().map(str::to_owned)),
                );
            }
        }
        let mut accepted = 0;
        for token in &received {
            if token_accepted(&self.admin, token).await {
                accepted += 1;
            }
        }
        let figures = Figures {
            attacker_mint_calls_in_60s: calls,
            victim_expired_observations: expired,
            victim_samples: samples,
            victim_mints,
            #[allow(clippy::cast_precision_loss)]
            operator_peak_rss_mib: peak as f64 / 1024.0,
            operator_restarts: u32::from(!alive),
            operator_panics: panics.len(),
            received_tokens: received.len(),
            received_tokens_accepted_by_apiserver: accepted,
        };
        eprintln!(
            "hostile {}: {}",
            self.attack,
            serde_json::to_string(&figures).unwrap_or_default()
        );
        record(self.attack, &figures);

        assert!(alive, "the operator exited (log {})", self.op.log.display());
        assert!(
            panics.is_empty(),
            "the operator log reports a panic:\n{}",
            panics.join("\n")
        );
        assert!(
            calls <= max_calls,
            "{} mint calls on the attacked object(s) in 60 s (at most {max_calls})",
            calls
        );
        assert_eq!(expired, 0, "the victim's Secret held an expired credential");
        assert!(samples > 30, "the victim's Secret was sampled ({samples} times)");
        assert!(
            victim_mints >= 2,
            "the victim kept rotating ({victim_mints} mints)"
        );
        assert!(
            peak > 0 && peak < MAX_PEAK_RSS_KIB,
            "operator peak RSS {peak} KiB"
        );
        assert_eq!(
            accepted, 0,
            "a token the API server accepts reached a hostile endpoint"
        );
        figures
    }

    /// An accessKey source `name` in the attacker's namespace pointed at `sim`.
    async fn attacker_source(&self, name: &str, sim: &Simulator) {
        access_key_source(&self.admin, &self.attacker, name, sim).await;
    }

    async fn attacker_credential(&self, name: &str, source: &str, extra: Value) {
        apply(
            &self.admin,
            agency_credential(&self.attacker, name, source, extra),
        )
        .await;
    }

    /// The attack of a hostile endpoint: a simulator answering with `hostile` (docs/simulator.md),
    /// the attacker's source pointed at it and its credential created now. Returns the simulator
    /// and the message of the failed mint, once the credential reports it, after checking that
    /// no Secret was written.
    async fn hostile_endpoint_attack(&mut self, hostile: Value) -> (Simulator, String) {
        let sim = Simulator::start(&default_sim_config()).await;
        sim.set_hostile(hostile).await;
        self.attacker_source("attacker-src", &sim).await;
        self.attack_now();
        self.attacker_credential("attacker", "attacker-src", json!({}))
            .await;
        let tc = self
            .wait_attacker("attacker", reasons::MINT_FAILED, Duration::from_secs(30))
            .await;
        assert!(
            get_secret(&self.admin, &self.attacker, "attacker")
                .await
                .is_none(),
            "nothing is written from a hostile answer"
        );
        (sim, ready_message(&tc))
    }

    /// The attacker's credential issued by a well-behaved simulator, whose counters then start
    /// from zero with the attack (which begins now).
    async fn issued_attacker(&mut self) -> Simulator {
        let sim = Simulator::start(&default_sim_config()).await;
        self.attacker_source("attacker-src", &sim).await;
        self.attacker_credential("attacker", "attacker-src", json!({}))
            .await;
        self.wait_attacker("attacker", reasons::ISSUED, Duration::from_secs(30))
            .await;
        sim.reset_stats().await;
        self.attack_now();
        sim
    }

    async fn wait_attacker(&self, name: &str, reason: &str, timeout: Duration) -> TemporaryCredential {
        wait_ready_reason(&self.admin, &self.attacker, name, reason, timeout).await
    }
}

/// Deletes its namespaces when dropped (also when a test panics half-way through its setup), unless
/// `TCRED_KEEP_NAMESPACES` is set.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        if std::env::var_os("TCRED_KEEP_NAMESPACES").is_none() {
            let _ = kubectl()
                .args(["delete", "namespace", "--wait=false", "--ignore-not-found"])
                .args(&self.0)
                .output();
        }
    }
}

/// An already-expired instant in Huawei's format.
fn ago(seconds: i64) -> String {
    jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(seconds))
        .expect("a recent instant")
        .strftime("%Y-%m-%dT%H:%M:%S.000Z")
        .to_string()
}

// === Unbounded and hostile responses ===

#[tokio::test]
async fn a_huge_response_body_is_cut_at_64_kib_and_the_operator_stays_small() {
    let mut a = Arena::start("huge-body", &[]).await;
    let (hostile, msg) = a
        .hostile_endpoint_attack(json!({"operations": ["AssumeAgency"], "hugeBodyBytes": 300_000_000u64}))
        .await;
    assert!(
        msg.contains("64 KiB"),
        "the condition says the response was too large: {msg}"
    );
    let f = a.finish(&[&hostile], MAX_MINT_CALLS).await;
    assert!(f.operator_peak_rss_mib < 128.0);
}

#[tokio::test]
async fn already_expired_credentials_are_failed_mints_with_backoff() {
    let mut a = Arena::start("expired", &[]).await;
    let (hostile, msg) = a
        .hostile_endpoint_attack(json!({"operations": ["AssumeAgency"], "expiration": ago(10)}))
        .await;
    assert!(
        msg.contains("expire"),
        "the condition says the credential was expired: {msg}"
    );
    a.finish(&[&hostile], MAX_MINT_CALLS).await;
}

#[tokio::test]
async fn extreme_negative_and_far_future_expirations_are_refused_without_a_crash() {
    let mut a = Arena::start("extreme-expiry", &[]).await;
    let values = [
        json!("-009999-01-02T01:59:59Z"),
        json!(-1_000_000_000_000_i64),
        json!("+009999-12-31T23:59:59Z"),
        json!(i64::MAX),
    ];
    let mut sims = Vec::new();
    for value in &values {
        let sim = Simulator::start(&default_sim_config()).await;
        sim.set_hostile(json!({"expiration": value})).await;
        sims.push(sim);
    }
    a.attack_now();
    for (i, sim) in sims.iter().enumerate() {
        a.attacker_source(&format!("src-{i}"), sim).await;
        a.attacker_credential(&format!("attacker-{i}"), &format!("src-{i}"), json!({}))
            .await;
    }
    for (i, value) in values.iter().enumerate() {
        let tc = a
            .wait_attacker(
                &format!("attacker-{i}"),
                reasons::MINT_FAILED,
                Duration::from_secs(30),
            )
            .await;
        let msg = ready_message(&tc);
        if value.is_string() {
            assert!(
                msg.contains("expiration"),
                "{value}: the condition names the field: {msg}"
            );
        } else {
            assert!(!msg.is_empty(), "{value}: a readable condition");
        }
        assert!(
            get_secret(&a.admin, &a.attacker, &format!("attacker-{i}"))
                .await
                .is_none()
        );
    }
    let refs: Vec<&Simulator> = sims.iter().collect();
    a.finish(&refs, MAX_MINT_CALLS * values.len() as u64).await;
}

#[tokio::test]
async fn malformed_json_is_a_failed_mint_with_backoff() {
    let mut a = Arena::start("malformed", &[]).await;
    let (hostile, msg) = a.hostile_endpoint_attack(json!({"malformedJson": true})).await;
    assert!(!msg.is_empty());
    a.finish(&[&hostile], MAX_MINT_CALLS).await;
}

// === Edited objects: no mint loop ===

#[tokio::test]
async fn a_foreign_data_key_in_the_managed_secret_is_kept_and_is_not_an_edit() {
    let mut a = Arena::start("extra-key", &[]).await;
    let sim = a.issued_attacker().await;
    let patch = json!({"stringData": {"EXTRA": "someone else's key"}});
    Api::<Secret>::namespaced(a.admin.clone(), &a.attacker)
        .patch("attacker", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("add a data key");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let secret = get_secret(&a.admin, &a.attacker, "attacker")
        .await
        .expect("Secret");
    assert_eq!(
        secret_text(&secret, "EXTRA"),
        "someone else's key",
        "foreign keys are kept"
    );
    let tc = get_tc(&a.admin, &a.attacker, "attacker").await;
    assert_eq!(ready_of(&tc).map(|(_, r)| r).as_deref(), Some(reasons::ISSUED));
    let f = a.finish(&[&sim], MAX_MINT_CALLS).await;
    assert_eq!(
        f.attacker_mint_calls_in_60s, 0,
        "an extra key is not an edit: nothing is minted"
    );
}

#[tokio::test]
async fn secret_labels_the_api_server_rejects_are_refused_at_apply() {
    let mut a = Arena::start("bad-labels", &[]).await;
    let sim = Simulator::start(&default_sim_config()).await;
    a.attacker_source("attacker-src", &sim).await;
    a.attack_now();
    for labels in [
        json!({"bad key!": "v"}),
        json!({"tcred.dev/team": "has spaces"}),
        json!({"ok": "x".repeat(64)}),
        json!({"/leading-slash": "v"}),
    ] {
        let manifest = agency_credential(
            &a.attacker,
            "attacker",
            "attacker-src",
            json!({"secret": {"labels": labels}}),
        );
        let err = try_apply(&a.admin, &manifest)
            .await
            .expect_err("labels the API server rejects are refused at apply");
        assert!(
            err.contains("spec.secret.labels"),
            "{labels}: the refusal names the field: {err}"
        );
    }
    assert!(get_secret(&a.admin, &a.attacker, "attacker").await.is_none());
    a.finish(&[&sim], 0).await;
}

#[tokio::test]
async fn secret_annotations_too_large_are_refused_or_reported_without_a_mint_loop() {
    let mut a = Arena::start("big-annotations", &[]).await;
    let sim = Simulator::start(&default_sim_config()).await;
    a.attacker_source("attacker-src", &sim).await;
    a.attack_now();
    // One value far beyond any sane bound: refused by the schema.
    let one_huge = json!({"secret": {"annotations": {"note": "x".repeat(300 * 1024)}}});
    let err = try_apply(
        &a.admin,
        &agency_credential(&a.attacker, "attacker", "attacker-src", one_huge),
    )
    .await
    .expect_err("a 300 KiB annotation is refused at apply");
    assert!(err.contains("spec.secret.annotations"), "{err}");
    // Many values each within bounds whose total exceeds the 256 KiB Secret limit: either the
    // schema refuses them, or tcred reports SecretWriteFailed and retries only the write.
    let many: serde_json::Map<String, Value> = (0..64)
        .map(|i| (format!("example.com/note-{i:02}"), json!("y".repeat(4096))))
        .collect();
    let manifest = agency_credential(
        &a.attacker,
        "attacker",
        "attacker-src",
        json!({"secret": {"annotations": many}}),
    );
    match try_apply(&a.admin, &manifest).await {
        Err(err) => assert!(err.contains("spec.secret.annotations"), "{err}"),
        Ok(()) => {
            let tc = a
                .wait_attacker("attacker", reasons::SECRET_WRITE_FAILED, Duration::from_secs(30))
                .await;
            assert!(!ready_message(&tc).is_empty());
            let events = events_for(&a.admin, &a.attacker, "attacker").await;
            assert!(has_event(&events, reasons::SECRET_WRITE_FAILED), "{events:?}");
        }
    }
    a.finish(&[&sim], MAX_MINT_CALLS).await;
}

#[tokio::test]
async fn an_edited_expires_at_annotation_neither_keeps_a_credential_past_expiry_nor_rotates() {
    let mut a = Arena::start("expires-at", &[]).await;
    let sim = Simulator::start(&default_sim_config()).await;
    sim.set_lifetime(Some(VICTIM_LIFETIME)).await;
    a.attacker_source("attacker-src", &sim).await;
    a.attacker_credential("attacker", "attacker-src", json!({})).await;
    a.wait_attacker("attacker", reasons::ISSUED, Duration::from_secs(30))
        .await;
    sim.reset_stats().await;
    let own = Sampler::start(&a.admin, &a.attacker, "attacker");
    a.attack_now();
    let patch = json!({"metadata": {"annotations": {
        tcred::api::annotations::EXPIRES_AT: "2099-01-01T00:00:00Z",
        tcred::api::annotations::ISSUED_AT: "2099-01-01T00:00:00Z",
    }}});
    Api::<Secret>::namespaced(a.admin.clone(), &a.attacker)
        .patch("attacker", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edit the schedule annotations");
    // The real expiry is 90 s after issue: tcred renews on time and the Secret never holds an
    // expired credential.
    wait_for(
        Duration::from_secs(90),
        "the edited credential renewed on time",
        || {
            let sim = &sim;
            async move { (sim.mints(&agency_urn(AGENCY)).await >= 1).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (own_expired, _) = own.stop().await;
    assert_eq!(own_expired, 0, "the edited Secret held an expired credential");
    let f = a.finish(&[&sim], MAX_MINT_CALLS).await;
    assert!(
        f.attacker_mint_calls_in_60s <= 1,
        "the edit did not count as a rotation"
    );
}

#[tokio::test]
async fn rotate_annotation_spam_is_honoured_at_most_three_times_a_minute() {
    let mut a = Arena::start("rotate-spam", &[]).await;
    let sim = a.issued_attacker().await;
    for i in 0..55 {
        rotate(&a.admin, &a.attacker, "attacker", &format!("spam-{i}")).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let f = a.finish(&[&sim], MAX_MINT_CALLS).await;
    assert!(
        f.attacker_mint_calls_in_60s >= 1,
        "rotate requests are still honoured"
    );
}

#[tokio::test]
async fn a_restart_target_without_the_opt_in_is_not_restarted() {
    let mut a = Arena::start("restart", &[]).await;
    let sim = Simulator::start(&default_sim_config()).await;
    a.attacker_source("attacker-src", &sim).await;
    let deployment = |name: &str, opt_in: Option<&str>| {
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": a.attacker, "labels": {"team": "pay"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                             "spec": {"containers": [{"name": "c", "image": "registry.invalid/none"}]}},
            },
        });
        if let Some(v) = opt_in {
            d["metadata"]["annotations"] = json!({"tcred.dev/restart-on-rotation": v});
        }
        d
    };
    apply(&a.admin, deployment("bystander", None)).await;
    apply(&a.admin, deployment("opted", Some("attacker"))).await;
    // An empty selector ("every workload of the namespace") is refused at apply.
    let empty = agency_credential(
        &a.attacker,
        "attacker",
        "attacker-src",
        json!({"rolloutRestartTargets": [{"kind": "Deployment", "selector": {}}]}),
    );
    let err = try_apply(&a.admin, &empty)
        .await
        .expect_err("an empty selector is refused");
    assert!(err.contains("rolloutRestartTargets"), "{err}");

    a.attack_now();
    a.attacker_credential(
        "attacker",
        "attacker-src",
        json!({"rolloutRestartTargets": [{"kind": "Deployment", "selector": {"matchLabels": {"team": "pay"}}}]}),
    )
    .await;
    a.wait_attacker("attacker", reasons::ISSUED, Duration::from_secs(30))
        .await;
    rotate(&a.admin, &a.attacker, "attacker", "once").await;
    let restarted_at = |name: &'static str| {
        let api = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(a.admin.clone(), &a.attacker);
        async move {
            let d = api.get(name).await.expect("get Deployment");
            d.spec?
                .template
                .metadata?
                .annotations?
                .get(tcred::api::annotations::RESTARTED_AT)
                .cloned()
        }
    };
    wait_for(
        Duration::from_secs(60),
        "the opted-in Deployment restarted",
        || restarted_at("opted"),
    )
    .await;
    assert!(
        restarted_at("bystander").await.is_none(),
        "a workload without the opt-in is never restarted"
    );
    // The skipped workload's Event is published in the same reconcile, after the restarts.
    wait_for(Duration::from_secs(20), "a RestartNotAllowed Event", || async {
        let events = events_for(&a.admin, &a.attacker, "attacker").await;
        has_event(&events, reasons::RESTART_NOT_ALLOWED).then_some(())
    })
    .await;
    a.finish(&[&sim], MAX_MINT_CALLS).await;
}

// === Identities, bound Secrets and endpoints ===

#[tokio::test]
async fn web_identity_never_sends_a_token_the_api_server_accepts() {
    let mut a = Arena::start("web-identity", &[]).await;
    let issuer = apiserver_issuer(&a.admin).await;
    let provider = format!("iam::{ACCOUNT}:oidcProvider:local-cluster");
    let mut config = default_sim_config();
    config["accounts"][0]["agencies"]
        .as_array_mut()
        .expect("agencies")
        .push(json!({
            "name": "oidc-trust", "maxSessionSeconds": 43200,
            "trustedOidc": [{"provider": provider, "subjects": [format!("system:serviceaccount:{}:*", a.attacker)],
                             "audiences": [issuer, "sts.huaweicloud"]}],
        }));
    config["oidcProviders"]
        .as_array_mut()
        .expect("oidcProviders")
        .push(json!({
            "urn": provider, "issuer": issuer,
            "jwksUri": format!("{}/openid/v1/jwks", apiserver_url()),
            "caFile": cluster_dir().join("pki/ca.crt").display().to_string(),
        }));
    let hostile = Simulator::start(&config).await;
    let sas = Api::<ServiceAccount>::namespaced(a.admin.clone(), &a.attacker);
    for (sa, opt_in) in [("named-only", None), ("opted-in", Some("*"))] {
        let annotations =
            opt_in.map(|v| BTreeMap::from([("tcred.dev/allowed-credentials".to_owned(), v.to_owned())]));
        let obj = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(sa.into()),
                annotations,
                ..Default::default()
            },
            ..Default::default()
        };
        sas.create(&PostParams::default(), &obj)
            .await
            .expect("create ServiceAccount");
    }
    for (name, audience) in [("apiserver-aud", issuer.as_str()), ("sts-aud", "sts.huaweicloud")] {
        let spec = json!({
            "webIdentity": {"region": "ap-southeast-1", "providerUrn": provider, "audience": audience},
            "endpoints": {"sts": hostile.url},
        });
        credential_source(&a.admin, &a.attacker, name, spec).await;
    }
    let urn = agency_urn("oidc-trust");
    a.attack_now();
    let credential = |name: &str, source: &str, sa: &str| {
        json!({
            "apiVersion": "tcred.dev/v1alpha1", "kind": "TemporaryCredential",
            "metadata": {"name": name, "namespace": a.attacker},
            "spec": {"sourceRef": {"name": source}, "agencyUrn": urn, "serviceAccountName": sa, "duration": "1h"},
        })
    };
    // The API server's own audience, for a ServiceAccount that opted in.
    apply(
        &a.admin,
        credential("steal-apiserver", "apiserver-aud", "opted-in"),
    )
    .await;
    // A ServiceAccount the tenant only named (no opt-in annotation).
    apply(&a.admin, credential("steal-named", "sts-aud", "named-only")).await;
    // The control: a Huawei audience for an opted-in ServiceAccount is exchanged.
    apply(&a.admin, credential("legit", "sts-aud", "opted-in")).await;

    a.wait_attacker("legit", reasons::ISSUED, Duration::from_secs(30))
        .await;
    // Let the refused credentials have their go before looking at what the endpoint received.
    let tc = a
        .wait_attacker(
            "steal-apiserver",
            reasons::TOKEN_NOT_ALLOWED,
            Duration::from_secs(30),
        )
        .await;
    assert!(
        ready_message(&tc).contains("accepted by the Kubernetes API server"),
        "{}",
        ready_message(&tc)
    );
    let tc = a
        .wait_attacker("steal-named", reasons::TOKEN_NOT_ALLOWED, Duration::from_secs(30))
        .await;
    assert!(
        ready_message(&tc).contains("tcred.dev/allowed-credentials"),
        "{}",
        ready_message(&tc)
    );

    let tokens = hostile.received_id_tokens().await;
    assert!(
        !tokens.is_empty(),
        "the control credential's token reached the endpoint"
    );
    for token in &tokens {
        assert!(
            !token_accepted(&a.admin, token).await,
            "the API server accepts a token the endpoint received"
        );
    }
    let f = a.finish(&[&hostile], MAX_MINT_CALLS * 3).await;
    assert_eq!(f.received_tokens_accepted_by_apiserver, 0);
}

/// Session Secret data as `tcred login` writes it, with `expires` as `accessTokenExpiresAt`.
fn session_data(expires: &str) -> Vec<(&'static str, String)> {
    let later = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * 30))
        .expect("a month from now")
        .to_string();
    vec![
        ("region", "ap-southeast-1".into()),
        ("startUrl", START_URL.into()),
        ("clientId", "client-id-stolen".into()),
        ("clientSecret", "client-secret-stolen".into()),
        ("clientSecretExpiresAt", later),
        ("accessToken", "access-token-stolen".into()),
        ("accessTokenExpiresAt", expires.into()),
        ("refreshToken", "refresh-token-stolen".into()),
    ]
}

async fn labelled_secret(client: &Client, ns: &str, name: &str, data: &[(&str, String)], bound_to: &str) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(BTreeMap::from([
                ("tcred.dev/source-kind".to_owned(), "CredentialSource".to_owned()),
                ("tcred.dev/source-name".to_owned(), bound_to.to_owned()),
            ])),
            ..Default::default()
        },
        string_data: Some(data.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
}

#[tokio::test]
async fn a_session_expiring_in_year_minus_9999_is_a_readable_error_not_a_crash() {
    let mut a = Arena::start("session-expiry", &[]).await;
    let hostile = Simulator::start(&default_sim_config()).await;
    labelled_secret(
        &a.admin,
        &a.attacker,
        "attacker-ic-session",
        &session_data("-009999-01-02T01:59:59Z"),
        "attacker-ic",
    )
    .await;
    a.attack_now();
    identity_center_source(&a.admin, &a.attacker, "attacker-ic", &hostile).await;
    apply(
        &a.admin,
        json!({
            "apiVersion": "tcred.dev/v1alpha1", "kind": "TemporaryCredential",
            "metadata": {"name": "attacker", "namespace": a.attacker},
            "spec": {"sourceRef": {"name": "attacker-ic"}, "permissionSet": {"accountId": ACCOUNT, "name": "ReadOnlyAccess"}},
        }),
    )
    .await;
    let msg = wait_for(
        Duration::from_secs(30),
        "the source reports the bad session",
        || async {
            let src = Api::<tcred::api::CredentialSource>::namespaced(a.admin.clone(), &a.attacker)
                .get("attacker-ic")
                .await
                .ok()?;
            let v = serde_json::to_value(&src).ok()?;
            ready_condition(&v)
                .filter(|(s, _, _)| s == "False")
                .map(|(_, _, m)| m)
        },
    )
    .await;
    assert!(
        msg.contains("accessTokenExpiresAt"),
        "the condition names the key: {msg}"
    );
    assert!(
        !msg.contains("refresh-token-stolen") && !msg.contains("access-token-stolen"),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let received = hostile.received().await;
    assert_eq!(
        received["refreshTokens"],
        json!([]),
        "nothing was sent on a session that does not parse"
    );
    a.finish(&[&hostile], MAX_MINT_CALLS).await;
}

#[tokio::test]
async fn a_source_naming_another_sources_secret_gets_secret_not_bound_and_sends_nothing() {
    let mut a = Arena::start("stolen-secret", &[]).await;
    let hostile = Simulator::start(&default_sim_config()).await;
    let far = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(8))
        .expect("later")
        .to_string();
    // Secrets bound to the source "corp" (which may not even exist).
    labelled_secret(&a.admin, &a.attacker, "corp-session", &session_data(&far), "corp").await;
    labelled_secret(
        &a.admin,
        &a.attacker,
        "corp-ak",
        &[
            ("accessKeyId", CI_BOT_AK.into()),
            ("secretAccessKey", CI_BOT_SK.into()),
        ],
        "corp",
    )
    .await;
    a.attack_now();
    credential_source(
        &a.admin,
        &a.attacker,
        "ic-thief",
        json!({"identityCenter": {"region": "ap-southeast-1", "sessionSecretRef": {"name": "corp-session"}},
               "endpoints": {"oidc": hostile.url, "portal": hostile.url}}),
    )
    .await;
    credential_source(
        &a.admin,
        &a.attacker,
        "ak-thief",
        json!({"accessKey": {"region": "ap-southeast-1", "secretRef": {"name": "corp-ak"}},
               "endpoints": {"sts": hostile.url}}),
    )
    .await;
    apply(
        &a.admin,
        json!({
            "apiVersion": "tcred.dev/v1alpha1", "kind": "TemporaryCredential",
            "metadata": {"name": "ic-stolen", "namespace": a.attacker},
            "spec": {"sourceRef": {"name": "ic-thief"}, "permissionSet": {"accountId": ACCOUNT, "name": "ReadOnlyAccess"}},
        }),
    )
    .await;
    a.attacker_credential("ak-stolen", "ak-thief", json!({})).await;
    for name in ["ic-stolen", "ak-stolen"] {
        let tc = a
            .wait_attacker(name, reasons::SECRET_NOT_BOUND, Duration::from_secs(30))
            .await;
        let msg = ready_message(&tc);
        assert!(
            msg.contains("tcred.dev/source-name"),
            "{name}: the condition names the label: {msg}"
        );
    }
    for source in ["ic-thief", "ak-thief"] {
        // The source controller writes the source's status on its own: wait for it.
        let v = wait_for(Duration::from_secs(30), "the source's SecretNotBound", || async {
            let src = Api::<tcred::api::CredentialSource>::namespaced(a.admin.clone(), &a.attacker)
                .get(source)
                .await
                .expect("source");
            let v = serde_json::to_value(&src).expect("json");
            let (_, reason, _) = ready_condition(&v).unwrap_or_default();
            (reason == reasons::SECRET_NOT_BOUND).then_some(v)
        })
        .await;
        assert!(
            v["status"]["accessKeyId"].is_null(),
            "{source}: nothing read from the Secret"
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        hostile.api_requests().await,
        0,
        "nothing reached the tenant's endpoint"
    );
    assert_eq!(hostile.received().await["accessTokens"], json!([]));
    a.finish(&[&hostile], 0).await;
}

#[tokio::test]
async fn a_namespaced_endpoint_outside_the_allowlist_gets_no_request() {
    let mut a = Arena::start("endpoint", &[]).await;
    // [::1] passes the schema (loopback) but is not in the tests' --allowed-endpoint-hosts.
    let outside = Simulator::start_on(&default_sim_config(), "[::1]:0").await;
    assert!(outside.url.starts_with("http://[::1]:"), "{}", outside.url);
    a.attack_now();
    a.attacker_source("attacker-src", &outside).await;
    a.attacker_credential("attacker", "attacker-src", json!({})).await;
    let tc = a
        .wait_attacker("attacker", reasons::ENDPOINT_NOT_ALLOWED, Duration::from_secs(30))
        .await;
    let msg = ready_message(&tc);
    assert!(
        msg.contains("--allowed-endpoint-hosts"),
        "the condition names the flag: {msg}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        outside.api_requests().await,
        0,
        "no request to a host the administrator did not allow"
    );
    a.finish(&[&outside], 0).await;
}

// === Shared resources: no starvation ===

#[tokio::test]
async fn a_hostile_date_header_does_not_change_another_tenants_lifetime() {
    let mut a = Arena::start("hostile-date", &[]).await;
    // 50 minutes ahead (the issue's figure), and 20 s ahead: small enough that a skew taken from
    // it would pass as plausible and shorten the victim's credential by 20 s.
    let mut sims = Vec::new();
    for offset in [3000, 20] {
        let sim = Simulator::start(&default_sim_config()).await;
        sim.set_lifetime(Some(VICTIM_LIFETIME)).await;
        sim.set_hostile(json!({"dateOffsetSeconds": offset})).await;
        sims.push(sim);
    }
    a.attack_now();
    for (s, sim) in sims.iter().enumerate() {
        a.attacker_source(&format!("attacker-src-{s}"), sim).await;
        for i in 0..3 {
            a.attacker_credential(
                &format!("attacker-{s}-{i}"),
                &format!("attacker-src-{s}"),
                json!({}),
            )
            .await;
        }
    }
    // The skew is kept per host: the attackers' hosts show their own Date, the victim's host
    // keeps its true (zero) skew.
    let host = |sim: &Simulator| {
        sim.url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned()
    };
    let victim_host = host(&a.victim_sim);
    // First the hostile Date must have arrived: the 20 s host shows its skew.
    let near = host(&sims[1]);
    let metrics = wait_for(Duration::from_secs(60), "the hostile host's skew", || async {
        let metrics = a.op.metrics().await;
        let skew = sample(
            &metrics,
            &format!("tcred_huawei_clock_skew_seconds{{host=\"{near}\"}}"),
        )?;
        (skew >= 10.0).then_some(metrics)
    })
    .await;
    let skew = sample(
        &metrics,
        &format!("tcred_huawei_clock_skew_seconds{{host=\"{victim_host}\"}}"),
    )
    .expect("the victim's host has a clock-skew series");
    assert!(
        skew.abs() < 10.0,
        "another host's Date moved the victim host's clock-skew gauge to {skew}"
    );
    let hostile: Vec<&Simulator> = sims.iter().collect();
    let (admin, victim) = (a.admin.clone(), a.victim.clone());
    let f = a.finish(&hostile, MAX_MINT_CALLS * 6).await;
    assert!(f.victim_mints >= 2);
    // The victim's credential minted while the hostile Date was sent keeps its real lifetime.
    let status = get_tc(&admin, &victim, "victim").await.status.expect("status");
    let (issued, expires) = (
        status.last_rotation_time.expect("lastRotationTime").0,
        status.expires_at.expect("expiresAt").0,
    );
    let lifetime = expires.duration_since(issued).as_secs();
    assert!(
        (i64::try_from(VICTIM_LIFETIME).unwrap_or(90) - lifetime).abs() <= 5,
        "the victim's recorded lifetime is {lifetime} s, issued {VICTIM_LIFETIME} s"
    );
}

#[tokio::test]
async fn a_slow_endpoint_held_by_sixteen_credentials_does_not_starve_the_victim() {
    let mut a = Arena::start("slow", &[]).await;
    let hostile = Simulator::start(&default_sim_config()).await;
    hostile.set_hostile(json!({"slowBodySeconds": 120})).await;
    a.attacker_source("attacker-src", &hostile).await;
    a.attack_now();
    for i in 0..16 {
        a.attacker_credential(&format!("attacker-{i:02}"), "attacker-src", json!({}))
            .await;
    }
    let f = a.finish(&[&hostile], MAX_MINT_CALLS * 16).await;
    assert!(
        f.victim_mints >= 2,
        "the victim renewed while the slow endpoint held its callers"
    );
}

#[test]
fn every_attack_has_short_distinct_namespaces() {
    let mut seen = std::collections::BTreeSet::new();
    for attack in ATTACKS {
        for role in ["a", "v"] {
            let ns = namespace_of(attack, role);
            assert!(ns.len() <= 63, "{ns}");
            assert!(seen.insert(ns));
        }
    }
}

#[test]
fn the_sampler_counts_unreadable_expiries_as_expired() {
    // The same parse the sampler uses: Huawei's format and RFC 3339 parse, garbage does not.
    assert!("2030-01-01T00:00:00.000Z".parse::<jiff::Timestamp>().is_ok());
    assert!(
        "-009999-01-02T01:59:59Z"
            .parse::<jiff::Timestamp>()
            .is_ok_and(|t| t < jiff::Timestamp::now()),
        "an extreme year parses and is long expired"
    );
    assert!(
        ago(10)
            .parse::<jiff::Timestamp>()
            .is_ok_and(|t| t < jiff::Timestamp::now())
    );
}

// === Two installations ===

#[tokio::test]
async fn a_namespace_served_by_a_scoped_installation_is_left_alone_by_the_cluster_wide_one() {
    // The cluster-wide operator excludes the attacker's namespace, which a namespace-scoped
    // operator serves: every mint there is made once, by the scoped one.
    let mut a = Arena::start_with("excluded", &[], true).await;
    let scoped = Operator::start_with(
        "hostile-excluded-scoped",
        OperatorOptions {
            namespace: Some(&a.attacker),
            identity: "scoped",
            ..OperatorOptions::production()
        },
    )
    .await;
    let sim = Simulator::start(&default_sim_config()).await;
    a.attack_now();
    a.attacker_source("own-src", &sim).await;
    a.attacker_credential("own", "own-src", json!({})).await;
    a.wait_attacker("own", reasons::ISSUED, Duration::from_secs(30))
        .await;
    rotate(&a.admin, &a.attacker, "own", "once").await;
    a.wait_attacker("own", reasons::ROTATED, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sim.mint_calls().await,
        2,
        "one issue and one rotation, each made by one installation"
    );
    assert!(
        !a.op.logs().contains(&format!("namespace={}", a.attacker)),
        "the cluster-wide operator reconciled an excluded namespace"
    );
    drop(scoped);
    a.finish(&[&sim], MAX_MINT_CALLS).await;
}
