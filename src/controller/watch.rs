//! The wiring: which objects each controller watches and caches, what wakes a reconcile, and
//! the start of both controllers (docs/controller.md §Watches).

use std::{collections::HashMap, fmt::Debug, future::Future, sync::Arc};

use futures::{FutureExt, Stream, StreamExt, stream::BoxStream};
use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{Namespace, Secret},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::{
        Controller, WatchStreamExt,
        controller::{Action, Config as RuntimeConfig},
        events::Reporter,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tracing::info;

use super::{
    apply,
    context::{Config, Context, StatusWrites, Stores, synced},
    credentials, entry,
    error::Error,
    namespace_gate::NamespaceGate,
    sources,
};
use crate::{
    api::{
        ClusterCredentialSource, CredentialSource, SourceKind, TemporaryCredential, annotations,
        condition::reasons, labels,
    },
    cloud::{HttpClient, endpoints::EndpointPolicy, http::Timeouts},
    metrics::{Caches, Metrics},
    ratelimit::{Rate, RateLimiter},
    session,
    source::{SourceResource, kind_name},
};

type Events<K> = BoxStream<'static, Result<K, watcher::Error>>;
type Guarded<K> = DeserializeGuard<K>;

/// The API for `K` in `namespace`, or in every namespace.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Fails early, with an install hint, when the CRDs are missing. Lists within the watched
/// namespace, which is all a namespace-scoped installation may read. Only a 404 means missing
/// CRDs; any other failure (no network, 403) is reported as what it is.
pub async fn check_crds(client: &Client, namespace: Option<&str>) -> Result<(), Error> {
    let missing_or_kube = |e: kube::Error| match &e {
        kube::Error::Api(s) if s.code == 404 => Error::CrdsMissing(e),
        _ => Error::Kube(e),
    };
    let one = ListParams::default().limit(1);
    scoped::<TemporaryCredential>(client, namespace)
        .list(&one)
        .await
        .map_err(missing_or_kube)?;
    scoped::<CredentialSource>(client, namespace)
        .list(&one)
        .await
        .map_err(missing_or_kube)?;
    Api::<ClusterCredentialSource>::all(client.clone())
        .list(&one)
        .await
        .map_err(missing_or_kube)?;
    Ok(())
}

/// What `run` reports while starting.
pub trait Readiness: Send + Sync + 'static {
    /// The caches are synced and reconciles are running.
    fn set_ready(&self, ready: bool);
}

/// The objects of `api` under `config`, cached in a new store, as a stream of watch events
/// (the one reflector-plus-watcher of every cache). managedFields and kubectl's copy of the last
/// applied manifest are never read here and are most of an object's size, so they are dropped
/// before caching (docs/benchmarks.md, memory).
fn reflected<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let events = reflector::reflector(writer, watcher(api, config).modify(trim_cached)).default_backoff();
    (store, events)
}

/// Drops what no reader of a cache uses from an object before it is cached (the controllers'
/// caches here, the credentials endpoint's in `podidentity::store`).
pub fn trim_cached<K: Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// kubectl's copy of the last applied manifest (`kubectl apply`): as big as the spec again.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Every cache and the watch streams feeding the credential controller.
struct Watches {
    credentials: Store<Guarded<TemporaryCredential>>,
    credential_events: Events<Guarded<TemporaryCredential>>,
    stores: Stores,
    sources: Events<Guarded<CredentialSource>>,
    cluster_sources: Events<Guarded<ClusterCredentialSource>>,
    namespaces: Events<PartialObjectMeta<Namespace>>,
    secrets: Events<PartialObjectMeta<Secret>>,
    /// Fed by the credentials' watch (each delivered version ends a record of a status write).
    status_writes: Arc<StatusWrites>,
}

impl Watches {
    fn start(client: &Client, config: &Config) -> Self {
        let status_writes = Arc::new(StatusWrites::default());
        let ns = config.namespace.as_deref();
        // Objects of namespaces left to a scoped installation are not even cached here.
        let watched = || excluding(watcher::Config::default(), &config.exclude_namespaces);
        let (sources, source_events) = reflected(scoped(client, ns), watched());
        let (cluster_sources, cluster_events) = reflected(Api::all(client.clone()), Default::default());
        let ns_config = match ns {
            Some(n) => watcher::Config::default().fields(&format!("metadata.name={n}")),
            None => watcher::Config::default(),
        };
        let (namespaces, ns_events) = reflected(Api::all(client.clone()), ns_config);
        let secrets = watcher(
            scoped::<PartialObjectMeta<Secret>>(client, ns),
            watched().labels(&secret_selector(config)),
        )
        .default_backoff()
        .touched_objects();
        // A credential is reconciled when its spec or its rotate annotation changes — not when
        // tcred writes its status — and otherwise by the triggers below and its own schedule.
        let (credentials, credential_events) = reflected(
            scoped::<Guarded<TemporaryCredential>>(client, ns),
            in_shard(watched(), config),
        );
        let delivered = status_writes.clone();
        let credential_events = wakes(credential_events.inspect(move |event| {
            if let Ok(watcher::Event::Apply(tc) | watcher::Event::InitApply(tc)) = event {
                let meta = tc.meta();
                delivered.delivered(
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default(),
                    meta.uid.as_deref(),
                    meta.resource_version.as_deref(),
                );
            }
        }));
        Self {
            status_writes,
            credentials,
            credential_events: credential_events.boxed(),
            stores: Stores::new(sources, cluster_sources, namespaces),
            sources: source_events.touched_objects().boxed(),
            cluster_sources: cluster_events.touched_objects().boxed(),
            namespaces: ns_events.touched_objects().boxed(),
            secrets: secrets.boxed(),
        }
    }

    /// Ready once every cache has its first full listing.
    fn report_ready(&self, readiness: Arc<dyn Readiness>) {
        let c = self.credentials.clone();
        let s = self.stores.clone();
        tokio::spawn(async move {
            if !(synced(&c).await && s.synced().await) {
                return;
            }
            info!("caches synced");
            readiness.set_ready(true);
        });
    }
}

/// Runs the TemporaryCredential and source controllers until `shutdown` resolves; in-flight
/// reconciles finish first.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    instance: Option<String>,
    readiness: Arc<dyn Readiness>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let ns = config.namespace.clone();
    let ns = ns.as_deref();
    check_crds(&client, ns).await?;
    let watches = Watches::start(&client, &config);
    let ctx = Arc::new(context(&client, config, metrics, instance, &watches)?);
    watches.report_ready(readiness);
    info!(
        namespace = ns.unwrap_or("<all>"),
        shard_selector = %ctx.config.shard_selector,
        serve_sources = ctx.config.serve_sources,
        "starting the TemporaryCredential and source controllers"
    );
    let shutdown = shutdown.shared();
    let credentials = credential_controller(watches, ctx.clone(), shutdown.clone());
    let exclude = ctx.config.exclude_namespaces.clone();
    let sources = source_controller(
        scoped::<Guarded<CredentialSource>>(&client, ns),
        excluding(watcher::Config::default(), &exclude),
        &client,
        ns,
        shutdown.clone(),
        ctx.clone(),
    );
    // A namespace-scoped installation uses ClusterCredentialSources but leaves their status and
    // session refresh to the cluster-wide installation: several scoped ones would contend for
    // them, and their Secrets live outside the watched namespace.
    // Of a sharded installation only one shard (`--serve-sources`) runs the source controllers:
    // source status and session refresh have a single writer (docs/sharding.md).
    let serve_sources = ctx.config.serve_sources;
    let sources = async {
        if serve_sources {
            sources.await;
        }
    };
    let cluster_sources = async {
        if ns.is_none() && serve_sources {
            let api = Api::<Guarded<ClusterCredentialSource>>::all(client.clone());
            source_controller(api, Default::default(), &client, ns, shutdown, ctx).await;
        }
    };
    tokio::join!(credentials, sources, cluster_sources);
    info!("controllers stopped");
    Ok(())
}

/// What every reconcile shares, built over the caches of `watches`.
fn context(
    client: &Client,
    config: Config,
    metrics: Arc<Metrics>,
    instance: Option<String>,
    watches: &Watches,
) -> Result<Context, Error> {
    let policy =
        EndpointPolicy::new(&config.allowed_endpoint_hosts).map_err(|e| Error::Setup(e.to_string()))?;
    let http =
        HttpClient::with_policy(Timeouts::default(), policy).map_err(|e| Error::Setup(e.to_string()))?;
    metrics.attach_caches(Caches {
        clocks: http.clocks.clone(),
        credentials: watches.credentials.clone(),
        sources: watches.stores.sources.clone(),
        cluster_sources: watches.stores.cluster_sources.clone(),
    });
    let reporter = Reporter {
        controller: "tcred".into(),
        instance,
    };
    Ok(Context {
        client: client.clone(),
        reporter,
        http,
        limiter: RateLimiter::new(
            Rate::new(config.mint_rate, config.mint_burst),
            Rate::new(config.mint_rate_total, config.mint_burst_total),
        ),
        metrics,
        stores: watches.stores.clone(),
        agency_urns: Default::default(),
        status_writes: watches.status_writes.clone(),
        namespace_gate: NamespaceGate::new(config.namespace_concurrency),
        error_backoff: Default::default(),
        pending: Default::default(),
        own_secret_writes: Default::default(),
        served: watches.credentials.clone(),
        config,
    })
}

/// The TemporaryCredential controller, woken by its own spec changes and by its sources, its
/// namespace and its Secret.
async fn credential_controller(
    w: Watches,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let store = w.credentials.clone();
    // A place that frees up in a full namespace wakes its most urgent waiter at once.
    let woken = match ctx.namespace_gate.take_wakes() {
        Some(rx) => futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|w| (w, rx)) })
            .map(|(ns, name)| ObjectRef::new(&name).within(&ns))
            .boxed(),
        None => futures::stream::empty().boxed(),
    };
    Controller::for_stream(w.credential_events, w.credentials)
        .with_config(RuntimeConfig::default().concurrency(ctx.config.concurrency))
        .reconcile_on(woken)
        .watches_stream(w.sources, {
            let store = store.clone();
            move |src: Guarded<CredentialSource>| users_of_source(&store, &src)
        })
        .watches_stream(w.cluster_sources, {
            let store = store.clone();
            move |src: Guarded<ClusterCredentialSource>| users_of_source(&store, &src)
        })
        .watches_stream(w.namespaces, move |n| users_in_namespace(&store, &n))
        .watches_stream(w.secrets, {
            let ctx = ctx.clone();
            move |s| owner_of_secret(&ctx, s)
        })
        .graceful_shutdown_on(shutdown)
        .run(credentials::reconcile, entry::error_policy, ctx)
        .for_each(log_queue_error)
        .await;
}

/// A controller for one source kind, also woken when its session Secret (written by `tcred
/// login`, labelled with the source) changes.
async fn source_controller<K: SourceResource>(
    api: Api<Guarded<K>>,
    watch: watcher::Config,
    client: &Client,
    ns: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    ctx: Arc<Context>,
) {
    let kind = kind_name(K::KIND);
    let sessions = watcher(
        scoped::<PartialObjectMeta<Secret>>(client, ns),
        watcher::Config::default().labels(&format!("{}={kind}", session::labels::SOURCE_KIND)),
    )
    .default_backoff()
    .touched_objects();
    let by_session = |s: PartialObjectMeta<Secret>| {
        let name = s.labels().get(session::labels::SOURCE_NAME)?.clone();
        Some(match K::KIND {
            SourceKind::CredentialSource => ObjectRef::new(&name).within(&s.namespace().unwrap_or_default()),
            SourceKind::ClusterCredentialSource => ObjectRef::new(&name),
        })
    };
    Controller::new(api, watch)
        .with_config(RuntimeConfig::default().concurrency(4))
        .watches_stream(sessions, by_session)
        .graceful_shutdown_on(shutdown)
        .run(reconcile_source::<K>, entry::error_policy, ctx)
        .for_each(log_queue_error)
        .await;
}

/// A source reconcile as the runtime enters it (see [`entry`]).
async fn reconcile_source<K: SourceResource>(
    obj: Arc<Guarded<K>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if obj.namespace().is_some_and(|ns| ctx.excluded(&ns)) {
        return Ok(Action::await_change());
    }
    let result = entry::contained(&ctx, obj.as_ref(), async {
        match &obj.0 {
            Err(invalid) => {
                entry::report_invalid(&ctx, obj.as_ref(), invalid).await;
                Ok(Action::await_change())
            }
            Ok(src) if src.meta().deletion_timestamp.is_some() => Ok(Action::await_change()),
            Ok(src) => sources::reconcile(src, &ctx).await,
        }
    })
    .await;
    if let Err(Error::Panicked(_)) = &result {
        let note = "tcred hit an internal error reconciling this source (a bug: the operator log has the details); it retries with backoff";
        apply::publish(
            &ctx,
            obj.as_ref(),
            true,
            reasons::INTERNAL_ERROR,
            "Reconcile",
            note.into(),
        )
        .await;
    }
    result
}

/// Logs what the runtime reports besides reconcile results. A failed reconcile is already logged
/// by its error policy and a vanished object is routine; a watch or queue failure (a 403 on a
/// watch, the API server going away) is not, and is a warning.
async fn log_queue_error<T, E1, E2>(res: Result<T, kube::runtime::controller::Error<E1, E2>>)
where
    E1: std::error::Error + 'static,
    E2: std::error::Error + 'static,
    kube::runtime::controller::Error<E1, E2>: std::fmt::Display,
{
    use kube::runtime::controller::Error as E;
    match res {
        Ok(_) => {}
        Err(error @ (E::ReconcilerFailed(..) | E::ObjectNotFound(_))) => {
            tracing::debug!(%error, "reconcile queue event");
        }
        Err(error) => tracing::warn!(%error, "watch or queue error"),
    }
}

/// `config` without the objects of `excluded` namespaces: a field selector, so the API server
/// filters them out of lists and watches.
fn excluding(config: watcher::Config, excluded: &[String]) -> watcher::Config {
    if excluded.is_empty() {
        return config;
    }
    let selector = excluded
        .iter()
        .map(|n| format!("metadata.namespace!={n}"))
        .collect::<Vec<_>>()
        .join(",");
    config.fields(&selector)
}

/// `config` narrowed to the TemporaryCredentials of this process's shard (docs/sharding.md). An
/// object relabelled out of the shard leaves the watch (the API server sends its deletion), so its
/// cache entry goes and no timer of this process acts on it again.
fn in_shard(config: watcher::Config, c: &Config) -> watcher::Config {
    match c.shard_selector.to_query() {
        Some(selector) => config.labels(&selector),
        None => config,
    }
}

/// The managed Secrets to watch: those of this shard when the shard selector names only shard
/// labels (which a managed Secret copies from its TemporaryCredential), else all of them (a
/// Secret of another shard then maps to a credential this process does not cache, and is
/// dropped).
fn secret_selector(c: &Config) -> String {
    match c.shard_selector.to_query() {
        Some(selector) if c.shard_selector.applies_to_secrets() => {
            format!("{},{selector}", labels::MANAGED_SELECTOR)
        }
        _ => labels::MANAGED_SELECTOR.to_owned(),
    }
}

/// The credentials whose own watch event calls for a reconcile: those [`spec_or_rotate_request`]
/// sees changed, and every object that enters the watch — new, or relabelled into this shard
/// (docs/sharding.md), even when it was here before: what it last looked like here is forgotten
/// when it leaves (a deletion event) and on every relist.
fn wakes(
    events: impl Stream<Item = Result<watcher::Event<Guarded<TemporaryCredential>>, watcher::Error>>
    + Send
    + 'static,
) -> impl Stream<Item = Result<Guarded<TemporaryCredential>, watcher::Error>> + Send + 'static {
    // Keyed by a hash of (namespace, name) under a key chosen per process: 16 bytes an object
    // instead of a full object reference (~0.3 KiB). Two objects whose hashes collide (chance
    // about n²/2⁶⁵, and not steerable by anyone who names objects) would only lose a change's
    // immediate wake; their scheduled reconciles still come.
    let keys = std::hash::RandomState::new();
    let key = move |tc: &Guarded<TemporaryCredential>| {
        std::hash::BuildHasher::hash_one(&keys, (tc.namespace(), tc.name_any()))
    };
    let mut seen: HashMap<u64, u64> = HashMap::new();
    events.filter_map(move |event| {
        let woken = match event {
            Ok(watcher::Event::Apply(tc) | watcher::Event::InitApply(tc)) => {
                let hash = spec_or_rotate_request(&tc);
                let changed = hash.is_none_or(|h| seen.insert(key(&tc), h) != Some(h));
                changed.then_some(Ok(tc))
            }
            Ok(watcher::Event::Delete(tc)) => {
                seen.remove(&key(&tc));
                None
            }
            Ok(watcher::Event::Init) => {
                seen.clear();
                None
            }
            Ok(watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(woken)
    })
}

/// What a TemporaryCredential's own watch events react to: its generation (spec changes) and the
/// `tcred.dev/rotate` annotation.
fn spec_or_rotate_request(tc: &Guarded<TemporaryCredential>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    kube::Resource::meta(tc).generation.hash(&mut h);
    tc.annotations().get(annotations::ROTATE).hash(&mut h);
    kube::Resource::meta(tc).deletion_timestamp.is_some().hash(&mut h);
    // A dynamic sharder's drain request is acted on at once (docs/sharding.md).
    crate::shard::has_drain_label(tc.labels()).hash(&mut h);
    Some(h.finish())
}

type CredentialRef = ObjectRef<Guarded<TemporaryCredential>>;

/// The TemporaryCredentials in `store` that `pred` selects, as trigger references.
fn users(
    store: &Store<Guarded<TemporaryCredential>>,
    pred: impl Fn(&TemporaryCredential) -> bool,
) -> Vec<CredentialRef> {
    store
        .state()
        .iter()
        .filter(|g| g.0.as_ref().is_ok_and(&pred))
        .map(|g| ObjectRef::from(g.as_ref()))
        .collect()
}

/// The TemporaryCredentials that name source `src` (of either kind).
fn users_of_source<K: SourceResource>(
    store: &Store<Guarded<TemporaryCredential>>,
    src: &Guarded<K>,
) -> Vec<CredentialRef> {
    let (name, namespace) = (src.name_any(), src.namespace());
    users(store, |tc| {
        tc.spec.source_ref.kind == K::KIND
            && tc.spec.source_ref.name == name
            && (K::KIND == SourceKind::ClusterCredentialSource || tc.namespace() == namespace)
    })
}

/// The TemporaryCredentials of namespace `n` that use a ClusterCredentialSource (whose namespace
/// selector reads the namespace's labels).
fn users_in_namespace(
    store: &Store<Guarded<TemporaryCredential>>,
    n: &PartialObjectMeta<Namespace>,
) -> Vec<CredentialRef> {
    let name = n.name_any();
    users(store, |tc| {
        tc.spec.source_ref.kind == SourceKind::ClusterCredentialSource
            && tc.namespace().as_deref() == Some(&name)
    })
}

/// The TemporaryCredential a managed Secret belongs to, unless the event is tcred's own write of
/// it (see [`super::own_writes`]).
fn owner_of_secret(ctx: &Context, s: PartialObjectMeta<Secret>) -> Option<CredentialRef> {
    let ns = s.namespace().unwrap_or_default();
    if ctx
        .own_secret_writes
        .is_own(&ns, &s.name_any(), s.resource_version().as_deref())
    {
        return None;
    }
    s.labels()
        .get(labels::CREDENTIAL)
        .map(|owner| ObjectRef::new(owner).within(&s.namespace().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::tc;

    fn guarded(generation: i64, label: Option<&str>) -> Guarded<TemporaryCredential> {
        let mut t = tc("billing");
        t.metadata.uid = Some("u1".into());
        t.metadata.generation = Some(generation);
        t.metadata.labels = label.map(|l| [(crate::shard::SHARD_LABEL.to_owned(), l.to_owned())].into());
        DeserializeGuard(Ok(t))
    }

    async fn woken(events: Vec<watcher::Event<Guarded<TemporaryCredential>>>) -> Vec<Option<i64>> {
        wakes(futures::stream::iter(events.into_iter().map(Ok)))
            .map(|r| r.ok().and_then(|g| kube::Resource::meta(&g).generation))
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_credential_that_comes_back_to_its_shard_is_reconciled_again() {
        use watcher::Event::*;
        let events = vec![
            Init,
            InitApply(guarded(1, Some("a"))),
            InitDone,
            // tcred's own status write: the same generation, no wake
            Apply(guarded(1, Some("a"))),
            // relabelled away (the watch deletes it) and back: woken although nothing else changed
            Delete(guarded(1, Some("b"))),
            Apply(guarded(1, Some("a"))),
            Apply(guarded(2, Some("a"))),
            // a relist forgets everything
            Init,
            InitApply(guarded(2, Some("a"))),
            InitDone,
        ];
        assert_eq!(woken(events).await, vec![Some(1), Some(1), Some(2), Some(2)]);
    }

    #[tokio::test]
    async fn objects_of_the_same_name_in_other_namespaces_are_told_apart() {
        use watcher::Event::*;
        let mut other = guarded(1, None);
        other.meta_mut().namespace = Some("elsewhere".into());
        let events = vec![Apply(guarded(1, None)), Apply(other), Apply(guarded(1, None))];
        assert_eq!(woken(events).await, vec![Some(1), Some(1)]);
    }

    #[test]
    fn a_cached_object_keeps_no_managed_fields_and_no_last_applied_copy() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let mut g = guarded(1, None);
        let meta = g.meta_mut();
        meta.managed_fields = Some(vec![ManagedFieldsEntry::default(); 2]);
        meta.annotations = Some(
            [
                (LAST_APPLIED.to_owned(), "{}".to_owned()),
                ("keep".to_owned(), "me".to_owned()),
            ]
            .into(),
        );
        trim_cached(&mut g);
        assert_eq!(g.meta().managed_fields, None);
        assert_eq!(
            g.annotations().keys().collect::<Vec<_>>(),
            vec!["keep"],
            "only kubectl's copy goes"
        );
    }
}
