//! What every reconcile shares: clients, caches of sources and namespaces, the rate limiter,
//! metrics, and the lookup of a TemporaryCredential's source in those caches.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Client, ResourceExt,
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::{
        events::Reporter,
        reflector::{ObjectRef, Store},
    },
};

use super::{
    authorize::Problem, credentials::pending::PendingWrites, guard::ErrorBackoff,
    namespace_gate::NamespaceGate, own_writes::OwnSecretWrites,
};
use crate::{
    api::{ClusterCredentialSource, CredentialSource, SourceKind, TemporaryCredential, condition::reasons},
    cloud::HttpClient,
    metrics::Metrics,
    ratelimit::RateLimiter,
    shard::ShardSelector,
    source::{Source, kind_name},
};

/// Settings of the controller process.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch only this namespace (TemporaryCredentials, CredentialSources, Secrets).
    pub namespace: Option<String>,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Mints per second per Huawei endpoint, and the burst allowed.
    pub mint_rate: f64,
    pub mint_burst: u32,
    /// Warn this long before an Identity Center portal session ends.
    pub session_warning: Duration,
    /// Mints per second across every endpoint together, and the burst allowed (0: unlimited).
    pub mint_rate_total: f64,
    pub mint_burst_total: u32,
    /// Hosts a namespaced CredentialSource may name in `endpoints`, besides Huawei Cloud's own
    /// domains: `host`, `host:port` or `*.domain`.
    pub allowed_endpoint_hosts: Vec<String>,
    /// Namespaces this installation leaves alone (served by a namespace-scoped installation).
    pub exclude_namespaces: Vec<String>,
    /// Reconciles of one namespace running at once, so one tenant cannot hold every slot.
    pub namespace_concurrency: u16,
    /// Least time between two mints of one credential (its first issue aside).
    pub min_mint_interval: Duration,
    /// A credential issued with less validity than this is a failed mint.
    pub min_credential_lifetime: Duration,
    /// The TemporaryCredentials (and their managed Secrets) this process serves
    /// (docs/sharding.md). Default: all.
    pub shard_selector: ShardSelector,
    /// Whether this process runs the source controllers (source status, Identity Center session
    /// refresh): one writer for what is not sharded (docs/sharding.md).
    pub serve_sources: bool,
    /// The dynamic sharder's ring this process is a shard of: it acknowledges that ring's drains.
    pub controller_ring: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 16,
            mint_rate: 20.0,
            mint_burst: 40,
            session_warning: Duration::from_secs(24 * 3600),
            mint_rate_total: 50.0,
            mint_burst_total: 100,
            allowed_endpoint_hosts: Vec::new(),
            exclude_namespaces: Vec::new(),
            namespace_concurrency: 4,
            min_mint_interval: Duration::from_secs(30),
            min_credential_lifetime: Duration::from_secs(60),
            shard_selector: ShardSelector::default(),
            serve_sources: true,
            controller_ring: None,
        }
    }
}

/// Caches shared by the credential and source controllers.
#[derive(Clone)]
pub struct Stores {
    pub sources: Store<DeserializeGuard<CredentialSource>>,
    pub cluster_sources: Store<DeserializeGuard<ClusterCredentialSource>>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// All three have had their first full listing (a cache never "unlists").
    listed: Arc<AtomicBool>,
}

impl Stores {
    pub fn new(
        sources: Store<DeserializeGuard<CredentialSource>>,
        cluster_sources: Store<DeserializeGuard<ClusterCredentialSource>>,
        namespaces: Store<PartialObjectMeta<Namespace>>,
    ) -> Self {
        Self {
            sources,
            cluster_sources,
            namespaces,
            listed: Arc::default(),
        }
    }

    /// Waits until each of these caches has its first full listing; false when one never will
    /// (its watch ended: the process is stopping). Until then a source or a namespace missing
    /// from a cache is not known to be missing: a reconcile that went ahead would report a
    /// false SourceNotFound or a namespace outside the policy, on every restart. Every reconcile
    /// asks, so once the answer is yes it is remembered and given without waiting on anything.
    pub async fn synced(&self) -> bool {
        if self.listed.load(Ordering::Acquire) {
            return true;
        }
        let listed = synced(&self.sources).await
            && synced(&self.cluster_sources).await
            && synced(&self.namespaces).await;
        if listed {
            self.listed.store(true, Ordering::Release);
        }
        listed
    }
}

/// Waits until `store` has its first full listing: true then, false when it never will (the
/// watch feeding it ended first). `Store::wait_until_ready` wakes only the latest of several
/// concurrent waiters (the runtime and many reconciles wait on the same store), so it is polled
/// again every 250 ms; a synced store answers at once.
pub async fn synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let poll = Duration::from_millis(250);
    loop {
        match tokio::time::timeout(poll, store.wait_until_ready()).await {
            Ok(Ok(())) => return true,
            Ok(Err(_writer_dropped)) => return false,
            Err(_elapsed) => {}
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    /// Who tcred's Events say reported them.
    pub reporter: Reporter,
    pub http: HttpClient,
    pub limiter: RateLimiter,
    pub metrics: Arc<Metrics>,
    pub stores: Stores,
    pub config: Config,
    /// (source uid, account, permission set) → agency URN, so Identity Center mints do not list
    /// the user's assignments every time.
    pub agency_urns: Mutex<HashMap<AgencyKey, (String, Instant)>>,
    /// The status writes the cache may not show yet (see [`StatusWrites`]).
    pub status_writes: Arc<StatusWrites>,
    /// Reconciles running per namespace (see [`NamespaceGate`]).
    pub namespace_gate: NamespaceGate,
    /// Consecutive reconcile errors per object.
    pub error_backoff: ErrorBackoff,
    /// Minted credentials whose Secret write failed.
    pub pending: PendingWrites,
    /// Secret writes whose watch events are still to come (see [`OwnSecretWrites`]).
    pub own_secret_writes: OwnSecretWrites,
    /// The TemporaryCredentials this process serves now (the credential controller's cache):
    /// an object relabelled into another shard leaves it (see [`Context::still_served`]).
    pub served: Store<DeserializeGuard<TemporaryCredential>>,
}

/// The last status this controller wrote to each TemporaryCredential, as the resourceVersion the
/// write produced. A reconcile that follows a write closely (the write's own Secret event
/// triggers one) may find the cache still holding the object from before the write; computing
/// from that stale status would redo a rotation already made or write an old status back. Such a
/// reconcile reads the object from the API server instead, as long as the cache has not caught
/// up (not only once: two reconciles can follow one write before its watch event arrives). An
/// entry goes when the watch delivers the written version, or when a reconcile finds the cache
/// caught up: entries live about as long as a write takes to come back through the watch.
#[derive(Default)]
pub struct StatusWrites(Mutex<HashMap<(String, String), Written>>);

/// One status write: the object's uid and the resourceVersion it produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub uid: String,
    pub resource_version: String,
}

impl StatusWrites {
    /// Records a status write to `namespace/name`.
    pub fn record(&self, namespace: &str, name: &str, written: Written) {
        if let Ok(mut m) = self.0.lock() {
            m.insert((namespace.to_owned(), name.to_owned()), written);
        }
    }

    /// Whether the cached object (`uid`, `resource_version`) may predate the last status write
    /// to it; the caller then reads the object from the API server. A cache at the written
    /// version (or an object replaced under the same name) ends the record.
    pub fn cache_may_be_stale(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        resource_version: Option<&str>,
    ) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return false;
        };
        let key = (namespace.to_owned(), name.to_owned());
        let stale = match m.get(&key) {
            Some(w) => Some(w.uid.as_str()) == uid && Some(w.resource_version.as_str()) != resource_version,
            None => return false,
        };
        if !stale {
            m.remove(&key);
        }
        stale
    }

    /// The watch delivered `namespace/name` at `resource_version` (with `uid`): the same test as
    /// [`Self::cache_may_be_stale`], made as the cache takes the object in, so a credential that
    /// is not reconciled again for an hour does not keep its record that long.
    pub fn delivered(&self, namespace: &str, name: &str, uid: Option<&str>, resource_version: Option<&str>) {
        self.cache_may_be_stale(namespace, name, uid, resource_version);
    }

    /// The API server has `resource_version` of the object, which the cache also has: whatever
    /// this controller wrote before is in the cache (later writes by others included).
    pub fn caught_up(&self, namespace: &str, name: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&(namespace.to_owned(), name.to_owned()));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or_default()
    }
}

/// (source uid, account id, permission set name).
pub type AgencyKey = (String, String, String);

/// How long a resolved permission set → agency URN mapping is trusted.
pub const AGENCY_URN_TTL: Duration = Duration::from_secs(600);

impl Context {
    /// Whether this installation leaves `namespace` to another (`--exclude-namespaces`).
    pub fn excluded(&self, namespace: &str) -> bool {
        self.config.exclude_namespaces.iter().any(|n| n == namespace)
    }

    /// The source `tc` names, from the caches.
    pub fn source_of(&self, tc: &TemporaryCredential) -> Result<Source, Problem> {
        let r = &tc.spec.source_ref;
        let ns = tc.namespace().unwrap_or_default();
        let found = match r.kind {
            SourceKind::CredentialSource => self
                .stores
                .sources
                .get(&ObjectRef::new(&r.name).within(&ns))
                .map(Source::Namespaced),
            SourceKind::ClusterCredentialSource => self
                .stores
                .cluster_sources
                .get(&ObjectRef::new(&r.name))
                .map(Source::Cluster),
        };
        found.ok_or_else(|| {
            let what = match r.kind {
                SourceKind::CredentialSource => format!("{} {ns}/{}", kind_name(r.kind), r.name),
                SourceKind::ClusterCredentialSource => format!("{} {}", kind_name(r.kind), r.name),
            };
            Problem::new(reasons::SOURCE_NOT_FOUND, format!("{what} does not exist"))
        })
    }

    /// Whether `tc` is still in this process's shard. A reconcile that began before the object
    /// was relabelled into another shard checks this before it mints, so the shard that lost the
    /// object does not mint it too (docs/sharding.md §Moving objects).
    pub fn still_served(&self, tc: &TemporaryCredential) -> bool {
        let Some(ns) = tc.namespace() else {
            return true;
        };
        self.served
            .get(&ObjectRef::new(&tc.name_any()).within(&ns))
            .is_some_and(|cached| cached.uid() == tc.uid())
    }

    /// Labels of `namespace`, from the cache.
    pub fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.stores
            .namespaces
            .get(&ObjectRef::new(namespace))
            .map(|n| n.labels().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cache_is_synced_after_its_first_listing_and_never_if_its_watch_ends_first() {
        use kube::runtime::{reflector, watcher::Event};
        let (store, mut writer) = reflector::store::<PartialObjectMeta<Namespace>>();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), synced(&store))
                .await
                .is_err(),
            "not synced before its listing"
        );
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        assert!(synced(&store).await);

        let (store, writer) = reflector::store::<PartialObjectMeta<Namespace>>();
        drop(writer);
        let ended = tokio::time::timeout(Duration::from_secs(5), synced(&store)).await;
        assert_eq!(
            ended.ok(),
            Some(false),
            "a reconcile waiting on it is let go, not spun"
        );
    }

    fn written(rv: &str) -> Written {
        Written {
            uid: "u1".into(),
            resource_version: rv.into(),
        }
    }

    #[test]
    fn a_cache_behind_the_last_write_stays_stale_until_it_catches_up() {
        let w = StatusWrites::default();
        w.record("ns", "a", written("12"));
        assert!(w.cache_may_be_stale("ns", "a", Some("u1"), Some("11")));
        // a second reconcile before the watch delivers the write is still not fooled
        assert!(w.cache_may_be_stale("ns", "a", Some("u1"), Some("11")));
        assert!(!w.cache_may_be_stale("ns", "a", Some("u1"), Some("12")));
        assert_eq!(w.len(), 0);
    }

    #[tokio::test]
    async fn the_shared_caches_are_synced_once_all_three_have_listed() {
        use kube::runtime::{reflector, watcher::Event};
        let (sources, mut s) = reflector::store();
        let (cluster_sources, mut c) = reflector::store();
        let (namespaces, mut n) = reflector::store();
        let stores = Stores::new(sources, cluster_sources, namespaces);
        s.apply_watcher_event(&Event::InitDone);
        c.apply_watcher_event(&Event::InitDone);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), stores.synced())
                .await
                .is_err(),
            "the namespaces have not listed yet"
        );
        n.apply_watcher_event(&Event::InitDone);
        assert!(stores.synced().await);
        assert!(stores.clone().synced().await, "clones share the answer");
    }

    #[test]
    fn a_record_ends_when_the_watch_delivers_the_written_version_or_another_object() {
        let w = StatusWrites::default();
        w.record("ns", "a", written("12"));
        w.record("ns", "b", written("20"));
        w.delivered("ns", "a", Some("u1"), Some("11"));
        assert_eq!(w.len(), 2, "an older version says nothing");
        w.delivered("ns", "a", Some("u1"), Some("12"));
        w.delivered("ns", "b", Some("u2"), Some("3"));
        assert_eq!(
            w.len(),
            0,
            "the written version, and a new object of the name, end them"
        );
    }

    #[test]
    fn a_cache_that_holds_what_the_api_server_has_has_caught_up() {
        let w = StatusWrites::default();
        w.record("ns", "a", written("12"));
        // someone else wrote after us: the cache shows 14, the API server too
        assert!(w.cache_may_be_stale("ns", "a", Some("u1"), Some("14")));
        w.caught_up("ns", "a");
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_cache_at_the_last_write_or_another_object_is_not_stale() {
        let w = StatusWrites::default();
        w.record("ns", "a", written("12"));
        assert!(!w.cache_may_be_stale("ns", "a", Some("u1"), Some("12")));
        w.record("ns", "a", written("12"));
        // the object was deleted and created again under the same name
        assert!(!w.cache_may_be_stale("ns", "a", Some("u2"), Some("3")));
        assert!(!w.cache_may_be_stale("ns", "b", Some("u1"), Some("1")));
    }
}
