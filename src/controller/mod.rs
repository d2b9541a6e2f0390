//! The TemporaryCredential controller: fetch → authorize → plan (pure) → mint → build (pure) →
//! apply → status. This module wires the watches; the steps live in the submodules.

pub mod apply;
pub mod authorize;
pub mod context;
pub mod credentials;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod guard;
pub mod restart;
pub mod sources;

pub use self::credentials::{mint, pending, plan, secret, status};

use std::{future::Future, sync::Arc};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::{
        Controller, WatchStreamExt,
        controller::Config as RuntimeConfig,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::info;

pub use self::context::{Config, Context, Stores};
use crate::{
    api::{ClusterCredentialSource, CredentialSource, SourceKind, TemporaryCredential, labels},
    cloud::{HttpClient, endpoints::EndpointPolicy, http::Timeouts},
    metrics::{Caches, Metrics},
    ratelimit::{Rate, RateLimiter},
};

/// Reconcile failures the runtime retries (minting failures are not errors: they are handled,
/// scheduled and reported inside reconcile).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error(
        "the tcred CRDs are not installed: apply them with `kubectl apply -f crds/` or the Helm chart ({0})"
    )]
    CrdsMissing(#[source] kube::Error),
    #[error("{0}")]
    Setup(String),
    /// A bug: the reconcile panicked. Contained to the object, retried with backoff.
    #[error("internal error (a bug in tcred; see the operator log): {0}")]
    Panicked(String),
}

impl Error {
    /// Label of `tcred_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::CrdsMissing(_) => "crds_missing",
            Self::Setup(_) => "setup",
            Self::Panicked(_) => "panic",
        }
    }
}

/// What a person reads about a failed Kubernetes call: the API server's own message for an API
/// error (it names the object and the reason), else the error.
pub fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
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
    scoped::<TemporaryCredential>(client, namespace)
        .list(&ListParams::default().limit(1))
        .await
        .map_err(missing_or_kube)?;
    scoped::<CredentialSource>(client, namespace)
        .list(&ListParams::default().limit(1))
        .await
        .map_err(missing_or_kube)?;
    Api::<ClusterCredentialSource>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .map_err(missing_or_kube)?;
    Ok(())
}

/// What `run` reports while starting.
pub trait Readiness: Send + Sync + 'static {
    /// The caches are synced and reconciles are running.
    fn set_ready(&self, ready: bool);
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
    // Objects of namespaces left to a scoped installation are not even cached here.
    let watched = || excluding(watcher::Config::default(), &config.exclude_namespaces);

    let (sources, sources_writer) = reflector::store::<DeserializeGuard<CredentialSource>>();
    let (cluster_sources, cluster_writer) = reflector::store::<DeserializeGuard<ClusterCredentialSource>>();
    let (namespaces, ns_writer) = reflector::store::<PartialObjectMeta<Namespace>>();

    let source_stream = reflector::reflector(
        sources_writer,
        watcher(
            scoped::<DeserializeGuard<CredentialSource>>(&client, ns),
            watched(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let cluster_stream = reflector::reflector(
        cluster_writer,
        watcher(
            Api::<DeserializeGuard<ClusterCredentialSource>>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let ns_config = match ns {
        Some(n) => watcher::Config::default().fields(&format!("metadata.name={n}")),
        None => watcher::Config::default(),
    };
    let ns_stream = reflector::reflector(
        ns_writer,
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            ns_config,
        ),
    )
    .default_backoff()
    .touched_objects();
    let secret_stream = watcher(
        scoped::<PartialObjectMeta<Secret>>(&client, ns),
        watched().labels(labels::MANAGED_SELECTOR),
    )
    .default_backoff()
    .touched_objects();

    // A credential is reconciled when its spec or its rotate annotation changes — not when tcred
    // writes its status — and otherwise by the triggers below and its own schedule.
    let (credentials, credentials_writer) = reflector::store::<DeserializeGuard<TemporaryCredential>>();
    let credential_stream = reflector::reflector(
        credentials_writer,
        watcher(
            scoped::<DeserializeGuard<TemporaryCredential>>(&client, ns),
            watched(),
        )
        // managedFields are never read here and are most of each cached object's size.
        .modify(|tc| tc.managed_fields_mut().clear()),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(spec_or_rotate_request, Default::default());
    let controller = Controller::for_stream(credential_stream, credentials.clone())
        .with_config(RuntimeConfig::default().concurrency(config.concurrency));

    let by_source = {
        let store = credentials.clone();
        move |src: DeserializeGuard<CredentialSource>| {
            let (name, namespace) = (src.name_any(), src.namespace());
            users(&store, |tc| {
                tc.spec.source_ref.kind == SourceKind::CredentialSource
                    && tc.spec.source_ref.name == name
                    && tc.namespace() == namespace
            })
        }
    };
    let by_cluster_source = {
        let store = credentials.clone();
        move |src: DeserializeGuard<ClusterCredentialSource>| {
            let name = src.name_any();
            users(&store, |tc| {
                tc.spec.source_ref.kind == SourceKind::ClusterCredentialSource
                    && tc.spec.source_ref.name == name
            })
        }
    };
    let by_namespace = {
        let store = credentials.clone();
        move |n: PartialObjectMeta<Namespace>| {
            let name = n.name_any();
            users(&store, |tc| {
                tc.spec.source_ref.kind == SourceKind::ClusterCredentialSource
                    && tc.namespace().as_deref() == Some(&name)
            })
        }
    };
    let by_secret = |s: PartialObjectMeta<Secret>| {
        s.labels().get(labels::CREDENTIAL).map(|owner| {
            ObjectRef::<DeserializeGuard<TemporaryCredential>>::new(owner)
                .within(&s.namespace().unwrap_or_default())
        })
    };

    let stores = Stores {
        sources: sources.clone(),
        cluster_sources: cluster_sources.clone(),
        namespaces: namespaces.clone(),
    };
    let policy =
        EndpointPolicy::new(&config.allowed_endpoint_hosts).map_err(|e| Error::Setup(e.to_string()))?;
    let http =
        HttpClient::with_policy(Timeouts::default(), policy).map_err(|e| Error::Setup(e.to_string()))?;
    metrics.attach_caches(Caches {
        clocks: http.clocks.clone(),
        credentials: credentials.clone(),
        sources: sources.clone(),
        cluster_sources: cluster_sources.clone(),
    });
    let reporter = Reporter {
        controller: "tcred".into(),
        instance,
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        http,
        limiter: RateLimiter::new(
            Rate::new(config.mint_rate, config.mint_burst),
            Rate::new(config.mint_rate_total, config.mint_burst_total),
        ),
        metrics,
        stores,
        agency_urns: Default::default(),
        status_writes: Default::default(),
        namespace_gate: guard::NamespaceGate::new(config.namespace_concurrency),
        error_backoff: Default::default(),
        pending: Default::default(),
        config,
    });

    // Ready once every cache has its first full listing.
    {
        let (c, s, cs, n) = (credentials.clone(), sources, cluster_sources, namespaces);
        tokio::spawn(async move {
            synced(&c).await;
            synced(&s).await;
            synced(&cs).await;
            synced(&n).await;
            info!("caches synced");
            readiness.set_ready(true);
        });
    }

    info!(
        namespace = ns.unwrap_or("<all>"),
        "starting the TemporaryCredential and source controllers"
    );
    let shutdown = shutdown.shared();
    let credentials = controller
        .watches_stream(source_stream, by_source)
        .watches_stream(cluster_stream, by_cluster_source)
        .watches_stream(ns_stream, by_namespace)
        .watches_stream(secret_stream, by_secret)
        .graceful_shutdown_on(shutdown.clone())
        .run(credentials::reconcile, credentials::error_policy, ctx.clone())
        .for_each(log_queue_error);
    let exclude = ctx.config.exclude_namespaces.clone();
    let sources = source_controller(
        scoped::<DeserializeGuard<CredentialSource>>(&client, ns),
        excluding(watcher::Config::default(), &exclude),
        &client,
        ns,
        shutdown.clone(),
        ctx.clone(),
    );
    // A namespace-scoped installation uses ClusterCredentialSources but leaves their status and
    // session refresh to the cluster-wide installation: several scoped ones would contend for
    // them, and their Secrets live outside the watched namespace.
    let cluster_sources = async {
        if ns.is_none() {
            source_controller(
                Api::<DeserializeGuard<ClusterCredentialSource>>::all(client.clone()),
                watcher::Config::default(),
                &client,
                ns,
                shutdown,
                ctx,
            )
            .await;
        }
    };
    tokio::join!(credentials, sources, cluster_sources);
    info!("controllers stopped");
    Ok(())
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

/// A controller for one source kind, also woken when its session Secret (written by `tcred
/// login`, labelled with the source) changes.
async fn source_controller<K: sources::SourceResource>(
    api: Api<DeserializeGuard<K>>,
    watch: watcher::Config,
    client: &Client,
    ns: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    ctx: Arc<Context>,
) {
    let kind = match K::KIND {
        SourceKind::CredentialSource => "CredentialSource",
        SourceKind::ClusterCredentialSource => "ClusterCredentialSource",
    };
    let sessions = watcher(
        scoped::<PartialObjectMeta<Secret>>(client, ns),
        watcher::Config::default().labels(&format!("{}={kind}", crate::session::labels::SOURCE_KIND)),
    )
    .default_backoff()
    .touched_objects();
    let by_session = |s: PartialObjectMeta<Secret>| {
        let name = s.labels().get(crate::session::labels::SOURCE_NAME)?.clone();
        Some(match K::KIND {
            SourceKind::CredentialSource => ObjectRef::new(&name).within(&s.namespace().unwrap_or_default()),
            SourceKind::ClusterCredentialSource => ObjectRef::new(&name),
        })
    };
    Controller::new(api, watch)
        .with_config(RuntimeConfig::default().concurrency(4))
        .watches_stream(sessions, by_session)
        .graceful_shutdown_on(shutdown)
        .run(reconcile_source::<K>, source_error_policy::<K>, ctx)
        .for_each(log_queue_error)
        .await;
}

/// A source reconcile, with a panic contained to the source (an error with backoff and an Event).
async fn reconcile_source<K: sources::SourceResource>(
    obj: Arc<DeserializeGuard<K>>,
    ctx: Arc<Context>,
) -> Result<kube::runtime::controller::Action, Error> {
    let key = source_key(&obj);
    if obj.namespace().is_some_and(|ns| ctx.excluded(&ns)) {
        return Ok(kube::runtime::controller::Action::await_change());
    }
    match guard::contained(sources::reconcile::<K>(obj.clone(), ctx.clone())).await {
        Ok(Ok(action)) => {
            ctx.error_backoff.succeeded(&key);
            Ok(action)
        }
        Ok(Err(e)) => Err(e),
        Err(panic) => {
            ctx.metrics.count_error("panic");
            tracing::error!(object = %obj.name_any(), panic, "source reconcile panicked; contained, retrying with backoff");
            apply::publish(
                &ctx,
                obj.as_ref(),
                true,
                crate::api::condition::reasons::INTERNAL_ERROR,
                "Reconcile",
                "tcred hit an internal error reconciling this source (a bug: the operator log has the details); it retries with backoff".into(),
            )
            .await;
            Err(Error::Panicked(panic))
        }
    }
}

fn source_key<K: sources::SourceResource>(obj: &DeserializeGuard<K>) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Source reconcile errors back off per source.
fn source_error_policy<K: sources::SourceResource>(
    obj: Arc<DeserializeGuard<K>>,
    error: &Error,
    ctx: Arc<Context>,
) -> kube::runtime::controller::Action {
    ctx.metrics.count_error(error.metric_label());
    let delay = ctx.error_backoff.failed(&source_key(&obj));
    tracing::warn!(%error, object = %obj.name_any(), retry_in_seconds = delay.as_secs(), "source reconcile failed");
    kube::runtime::controller::Action::requeue(delay)
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

/// Waits until `store` has its first full listing. `Store::wait_until_ready` wakes only the
/// latest of several concurrent waiters (the runtime waits on the same store), so re-poll it.
async fn synced<K>(store: &Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let poll = std::time::Duration::from_millis(250);
    while !matches!(
        tokio::time::timeout(poll, store.wait_until_ready()).await,
        Ok(Ok(()))
    ) {}
}

/// What a TemporaryCredential's own watch events react to: its generation (spec changes) and the
/// `tcred.dev/rotate` annotation.
fn spec_or_rotate_request(tc: &DeserializeGuard<TemporaryCredential>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    kube::Resource::meta(tc).generation.hash(&mut h);
    tc.annotations().get(crate::api::annotations::ROTATE).hash(&mut h);
    kube::Resource::meta(tc).deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// The TemporaryCredentials in `store` that `pred` selects, as trigger references.
fn users(
    store: &Store<DeserializeGuard<TemporaryCredential>>,
    pred: impl Fn(&TemporaryCredential) -> bool,
) -> Vec<ObjectRef<DeserializeGuard<TemporaryCredential>>> {
    store
        .state()
        .iter()
        .filter(|g| g.0.as_ref().is_ok_and(&pred))
        .map(|g| ObjectRef::from(g.as_ref()))
        .collect()
}
