//! Prometheus metrics (`/metrics`). Counters and histograms are recorded as things happen; the
//! per-object gauges (expiry, renewal, readiness, session expiry) are read from the controller's
//! caches at scrape time, so the series of a deleted object disappear with it.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, OnceLock},
};

use jiff::Timestamp;
use kube::{Resource, ResourceExt, core::DeserializeGuard, runtime::reflector::Store};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        counter::Counter, family::Family, gauge::ConstGauge, gauge::Gauge, histogram::Histogram, info::Info,
    },
    registry::{Registry, Unit},
};

use crate::api::{
    ClusterCredentialSource, CredentialSource, SourceStatus, TemporaryCredential,
    condition::{find, types},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MintLabels {
    /// `<namespace>/<name>` of a CredentialSource, `<name>` of a ClusterCredentialSource.
    pub source: String,
    /// `success` or the error class (`throttled`, `auth`, `not_found`, `invalid_request`, `server`, `network`).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeapLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Every metric tcred exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub mints: Family<MintLabels, Counter>,
    /// SWR logins for `imagePullSecret` credentials, by source and result: a login that fails
    /// after its credential was minted counts as a failed mint too, and here says it was SWR.
    pub registry_logins: Family<MintLabels, Counter>,
    pub mint_duration: Histogram,
    pub reconciles: Counter,
    /// Reconciles that read their object from the API server because the cache had not caught
    /// up with this controller's last status write.
    pub stale_cache_reads: Counter,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub rollout_restarts: Family<NamespaceLabels, Counter>,
    pub leader: Gauge,
    /// The credentials endpoint's (`tcred_pod_identity_*`).
    pub pod_identity: Arc<crate::podidentity::metrics::EndpointMetrics>,
    caches: Arc<CacheCollector>,
    /// The label sets of `mints` and `rollout_restarts` in use, so the series of sources and
    /// namespaces that are gone can be removed (tenants must not grow them without bound).
    labelled: Mutex<Labelled>,
}

#[derive(Debug, Default)]
struct Labelled {
    mints: HashSet<MintLabels>,
    registry_logins: HashSet<MintLabels>,
    restart_namespaces: HashSet<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tcred");
        let mints = Family::<MintLabels, Counter>::default();
        registry.register("mint", "Credentials minted, by source and result", mints.clone());
        let registry_logins = Family::<MintLabels, Counter>::default();
        registry.register(
            "registry_login",
            "SWR logins obtained for image pull Secrets, by source and result",
            registry_logins.clone(),
        );
        let mint_duration = Histogram::new([0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        registry.register_with_unit(
            "mint_duration",
            "Time to mint one credential (Huawei Cloud calls, rate limiting included)",
            Unit::Seconds,
            mint_duration.clone(),
        );
        let reconciles = Counter::default();
        registry.register("reconcile", "TemporaryCredential reconciles", reconciles.clone());
        let stale_cache_reads = Counter::default();
        registry.register(
            "stale_cache_reads",
            "Reconciles that read their TemporaryCredential from the API server because the cache had not yet seen the last status write",
            stale_cache_reads.clone(),
        );
        let reconcile_duration =
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register_with_unit(
            "reconcile_duration",
            "Time per TemporaryCredential reconcile",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by reason (Kubernetes API errors, mint failures by class, denials)",
            reconcile_errors.clone(),
        );
        let rollout_restarts = Family::<NamespaceLabels, Counter>::default();
        registry.register(
            "rollout_restarts",
            "Workloads restarted after a rotation",
            rollout_restarts.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this replica holds the leader lease",
            leader.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let pod_identity = Arc::new(crate::podidentity::metrics::EndpointMetrics::register(
            &mut registry,
        ));
        let caches = Arc::new(CacheCollector::default());
        registry.register_collector(Box::new(caches.clone()));
        registry.register_collector(Box::new(HeapCollector));
        Self {
            registry,
            mints,
            registry_logins,
            mint_duration,
            reconciles,
            stale_cache_reads,
            reconcile_duration,
            reconcile_errors,
            rollout_restarts,
            leader,
            pod_identity,
            caches,
            labelled: Mutex::default(),
        }
    }

    /// Connects the per-object gauges to the controller's caches (once, when it starts).
    pub fn attach_caches(&self, caches: Caches) {
        // A second controller start in one process keeps the first caches; there is only one.
        let _ = self.caches.caches.set(caches);
    }

    /// A reconcile of a TemporaryCredential starts: counted, and timed until the guard drops.
    pub fn record_reconcile(&self) -> Timer<'_> {
        self.reconciles.inc();
        Timer::start(&self.reconcile_duration)
    }

    /// A reconcile read its object from the API server because the cache was behind.
    pub fn record_stale_cache_read(&self) {
        self.stale_cache_reads.inc();
    }

    /// A call to Huawei Cloud to mint starts: timed until the guard drops.
    pub fn record_mint_call(&self) -> Timer<'_> {
        Timer::start(&self.mint_duration)
    }

    /// A mint through `source` succeeded.
    pub fn record_mint_success(&self, source: String) {
        self.count_mint(source, "success");
    }

    /// A mint through `source` failed with an error of class `class` (a label of
    /// [`crate::cloud::ErrorClass`]): a mint result and a reconcile error `mint_<class>`.
    pub fn record_mint_failure(&self, source: String, class: &str) {
        self.count_mint(source, class);
        self.count_error(&format!("mint_{class}"));
    }

    /// A Secret write failed (a dry run or the write of a minted credential).
    pub fn record_secret_write_failure(&self) {
        self.count_error("secret_write");
    }

    /// A TemporaryCredential was denied by its source's policy.
    pub fn record_denied(&self) {
        self.count_error("denied");
    }

    /// An object that cannot be read was skipped.
    pub fn record_invalid_object(&self) {
        self.count_error("invalid_object");
    }

    /// A reconcile panicked (and was contained).
    pub fn record_panic(&self) {
        self.count_error("panic");
    }

    /// A reconcile failed with the error labelled `label`.
    pub fn record_reconcile_error(&self, label: &str) {
        self.count_error(label);
    }

    /// An SWR login through `source` ended with `result`: `success` or the error class.
    pub fn record_registry_login(&self, source: String, result: &str) {
        let labels = MintLabels {
            source,
            result: result.to_owned(),
        };
        self.registry_logins.get_or_create(&labels).inc();
        self.remember(|l| &mut l.registry_logins, labels);
    }

    fn count_mint(&self, source: String, result: &str) {
        let labels = MintLabels {
            source,
            result: result.to_owned(),
        };
        self.mints.get_or_create(&labels).inc();
        self.remember(|l| &mut l.mints, labels);
    }

    /// Keeps `labels` in the set `pick` chooses, so `prune` can remove its series with its source.
    fn remember(&self, pick: fn(&mut Labelled) -> &mut HashSet<MintLabels>, labels: MintLabels) {
        let mut labelled = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        pick(&mut labelled).insert(labels);
    }

    /// Counts one rollout restart in `namespace`.
    pub fn record_restart(&self, namespace: &str) {
        self.rollout_restarts
            .get_or_create(&NamespaceLabels {
                namespace: namespace.to_owned(),
            })
            .inc();
        self.labelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restart_namespaces
            .insert(namespace.to_owned());
    }

    /// Removes the mint and registry login series of sources and the restart series of namespaces
    /// that no longer exist in the caches (nothing before the caches are attached).
    fn prune(&self) {
        let Some(caches) = self.caches.caches.get() else {
            return;
        };
        let mut sources: HashSet<String> = caches
            .sources
            .state()
            .iter()
            .map(|g| format!("{}/{}", g.namespace().unwrap_or_default(), g.name_any()))
            .collect();
        sources.extend(caches.cluster_sources.state().iter().map(|g| g.name_any()));
        let namespaces: HashSet<String> = caches
            .credentials
            .state()
            .iter()
            .filter_map(|g| g.namespace())
            .collect();
        let mut guard = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        let labelled = &mut *guard;
        for (family, used) in [
            (&self.mints, &mut labelled.mints),
            (&self.registry_logins, &mut labelled.registry_logins),
        ] {
            used.retain(|l| {
                let keep = sources.contains(&l.source);
                if !keep {
                    family.remove(l);
                }
                keep
            });
        }
        labelled.restart_namespaces.retain(|ns| {
            let keep = namespaces.contains(ns);
            if !keep {
                self.rollout_restarts.remove(&NamespaceLabels {
                    namespace: ns.clone(),
                });
            }
            keep
        });
    }

    /// OpenMetrics text.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        self.prune();
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }

    fn count_error(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// The caches the per-object gauges are read from.
#[derive(Clone)]
pub struct Caches {
    /// The clock skew of each trusted Huawei Cloud host.
    pub clocks: Arc<crate::cloud::http::Clocks>,
    pub credentials: Store<DeserializeGuard<TemporaryCredential>>,
    pub sources: Store<DeserializeGuard<CredentialSource>>,
    pub cluster_sources: Store<DeserializeGuard<ClusterCredentialSource>>,
}

#[derive(Default)]
struct CacheCollector {
    caches: OnceLock<Caches>,
}

impl std::fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheCollector")
            .field("attached", &self.caches.get().is_some())
            .finish()
    }
}

fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(caches) = self.caches.get() else {
            return Ok(());
        };
        encode_credentials(&mut encoder, caches)?;
        encode_sources(&mut encoder, caches)?;
        let mut m = encoder.encode_descriptor(
            "huawei_clock_skew",
            "How far Huawei Cloud's clock (the Date of its responses) runs ahead of this host's, by endpoint host (trusted hosts only); negative when behind",
            Some(&Unit::Seconds),
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (host, skew) in caches.clocks.snapshot() {
            ConstGauge::new(skew).encode(m.encode_family(&HostLabels { host })?)?;
        }
        Ok(())
    }
}

/// `tcred_heap_bytes{kind}`: the allocator's view of the heap ([`crate::heap`]), read at scrape.
#[derive(Debug)]
struct HeapCollector;

impl Collector for HeapCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(heap) = crate::heap::read() else {
            return Ok(());
        };
        gauge(
            &mut encoder,
            "heap_bytes",
            "The heap as the allocator sees it: allocated (held by the program), active, resident, metadata (the allocator's own), retained (address space kept for reuse)",
            heap.rows()
                .map(|(kind, bytes)| (HeapLabels { kind }, bytes as f64)),
        )
    }
}

/// One gauge family, one series per row (encoded as the rows come: no list is built).
fn gauge<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, ConstGauge::new(0.0f64).metric_type())?;
    for (l, v) in rows {
        ConstGauge::new(v).encode(m.encode_family(&l)?)?;
    }
    Ok(())
}

/// The per-TemporaryCredential gauges: expiry, renewal, readiness. Read in place from the
/// cache: a scrape once cloned every cached object and its status three times (about 50 MB
/// allocated per scrape at 10,000 credentials, held by the allocator for a while after).
fn encode_credentials(encoder: &mut DescriptorEncoder, caches: &Caches) -> Result<(), std::fmt::Error> {
    let cached = caches.credentials.state();
    let creds = || {
        cached.iter().filter_map(|g| {
            let tc = g.0.as_ref().ok()?;
            // Borrowed from the cached object: a scrape copies nothing per credential.
            let labels = [
                ("namespace", tc.metadata.namespace.as_deref().unwrap_or_default()),
                ("name", tc.metadata.name.as_deref().unwrap_or_default()),
            ];
            Some((labels, tc.status.as_ref()))
        })
    };
    gauge(
        encoder,
        "credential_expiration_timestamp_seconds",
        "When the credential in the Secret expires (Unix time)",
        creds().filter_map(|(l, s)| Some((l, seconds(s?.expires_at.as_ref()?.0)))),
    )?;
    gauge(
        encoder,
        "credential_renewal_timestamp_seconds",
        "When tcred will next mint the credential (Unix time)",
        creds().filter_map(|(l, s)| Some((l, seconds(s?.renewal_time.as_ref()?.0)))),
    )?;
    gauge(
        encoder,
        "credential_ready",
        "1 when the Secret holds a valid credential and renewal is on track",
        creds().map(|(l, s)| {
            let ready = s
                .and_then(|s| find(&s.conditions, types::READY))
                .is_some_and(|c| c.status == "True");
            (l, if ready { 1.0 } else { 0.0 })
        }),
    )
}

/// The per-source gauges: session expiry (identityCenter) and readiness.
fn encode_sources(encoder: &mut DescriptorEncoder, caches: &Caches) -> Result<(), std::fmt::Error> {
    let mut sessions = Vec::new();
    let mut ready = Vec::new();
    let mut push = |source: String, kind: &'static str, s: Option<&SourceStatus>| {
        let l = SourceLabels { source, kind };
        if let Some(t) = s.and_then(|s| s.session_expires_at.as_ref()) {
            sessions.push((l.clone(), seconds(t.0)));
        }
        let ok = s
            .and_then(|s| find(&s.conditions, types::READY))
            .is_some_and(|c| c.status == "True");
        ready.push((l, if ok { 1.0 } else { 0.0 }));
    };
    for g in caches.sources.state() {
        if let Ok(src) = &g.0 {
            push(
                format!("{}/{}", src.namespace().unwrap_or_default(), src.name_any()),
                "CredentialSource",
                src.status.as_ref(),
            );
        }
    }
    for g in caches.cluster_sources.state() {
        if let Ok(src) = &g.0 {
            push(src.name_any(), "ClusterCredentialSource", src.status.as_ref());
        }
    }
    gauge(
        encoder,
        "source_session_expiration_timestamp_seconds",
        "When an Identity Center source's portal session ends (Unix time)",
        sessions,
    )?;
    gauge(encoder, "source_ready", "1 when the source can mint", ready)
}

/// Observes elapsed time into a histogram when dropped.
pub struct Timer<'a> {
    histogram: &'a Histogram,
    start: std::time::Instant,
}

impl<'a> Timer<'a> {
    pub fn start(histogram: &'a Histogram) -> Self {
        Self {
            histogram,
            start: std::time::Instant::now(),
        }
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// The `<namespace>/<name>` or `<name>` label of a source.
pub fn source_label<K: Resource>(source: &K) -> String {
    match source.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", source.meta().name.as_deref().unwrap_or_default()),
        None => source.meta().name.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_sources_and_namespaces_that_are_gone_are_removed() {
        let m = Metrics::new();
        m.record_mint_success("team-a/corp".into());
        m.record_registry_login("team-a/corp".into(), "success");
        m.record_restart("team-a");
        // before the caches are attached nothing is pruned
        let text = m.render().expect("render");
        assert!(text.contains(r#"source="team-a/corp""#), "{text}");
        assert!(
            text.contains(r#"tcred_registry_login_total{source="team-a/corp",result="success"} 1"#),
            "{text}"
        );
        let (credentials, _w1) = kube::runtime::reflector::store();
        let (sources, _w2) = kube::runtime::reflector::store();
        let (cluster_sources, _w3) = kube::runtime::reflector::store();
        m.attach_caches(Caches {
            clocks: Default::default(),
            credentials,
            sources,
            cluster_sources,
        });
        let text = m.render().expect("render");
        assert!(!text.contains("team-a"), "{text}");
        let labelled = m.labelled.lock().expect("lock");
        assert!(labelled.mints.is_empty() && labelled.registry_logins.is_empty());
    }

    #[test]
    fn counters_and_histograms_render_with_the_tcred_prefix() {
        let m = Metrics::new();
        m.mints
            .get_or_create(&MintLabels {
                source: "team-a/corp".into(),
                result: "success".into(),
            })
            .inc();
        m.mint_duration.observe(0.2);
        m.count_error("kube");
        m.rollout_restarts
            .get_or_create(&NamespaceLabels {
                namespace: "team-a".into(),
            })
            .inc();
        let text = m.render().unwrap();
        for needle in [
            r#"tcred_mint_total{source="team-a/corp",result="success"} 1"#,
            "tcred_mint_duration_seconds_count 1",
            r#"tcred_reconcile_errors_total{reason="kube"} 1"#,
            r#"tcred_rollout_restarts_total{namespace="team-a"} 1"#,
            "tcred_leader 0",
            r#"tcred_build_info{version=""#,
            r#"tcred_heap_bytes{kind="allocated"} "#,
            r#"tcred_heap_bytes{kind="retained"} "#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
