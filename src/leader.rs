//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder mints and writes. Uses
//! kube-lease-manager (server-side apply on the Lease, so two candidates cannot both win).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    /// Seconds a lease stays valid without renewal; a standby takes over after this.
    pub duration_seconds: u64,
    /// The holder renews this many seconds before the lease would lapse.
    pub grace_seconds: u64,
    /// Labels the Lease carries (a dynamic sharder finds its ring's shards by label,
    /// docs/sharding.md).
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid lease timing: grace ({grace}s) must be shorter than the lease duration ({duration}s), both above zero"
    )]
    Timing { duration: u64, grace: u64 },
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("leader election stopped")]
    Stopped,
    #[error("labelling the Lease: {0}")]
    Label(#[source] kube::Error),
}

/// Applies `cfg.labels` to the Lease (its own field manager: the election's applies leave them).
async fn label_lease(client: Client, cfg: &LeaderConfig) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": cfg.lease_name, "labels": cfg.labels},
    });
    Api::<Lease>::namespaced(client, &cfg.namespace)
        .patch(
            &cfg.lease_name,
            &PatchParams::apply("tcred-lease-labels").force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
        .map_err(Error::Label)
}

/// A running election.
pub struct Election {
    state: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
}

impl Election {
    pub async fn start(client: Client, cfg: &LeaderConfig) -> Result<Self, Error> {
        if cfg.duration_seconds == 0 || cfg.grace_seconds == 0 || cfg.grace_seconds >= cfg.duration_seconds {
            return Err(Error::Timing {
                duration: cfg.duration_seconds,
                grace: cfg.grace_seconds,
            });
        }
        let manager = LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
            .with_namespace(&cfg.namespace)
            .with_identity(&cfg.identity)
            .with_field_manager(format!("tcred-{}", cfg.identity))
            .with_duration(cfg.duration_seconds)
            .with_grace(cfg.grace_seconds)
            .build()
            .await?;
        if !cfg.labels.is_empty() {
            label_lease(client, cfg).await?;
        }
        let (state, task) = manager.watch().await;
        Ok(Self { state, task })
    }

    /// Waits until this replica holds the lease.
    pub async fn acquired(&mut self) -> Result<(), Error> {
        self.state
            .wait_for(|leader| *leader)
            .await
            .map(|_| ())
            .map_err(|_| Error::Stopped)
    }

    /// Resolves when this replica loses the lease (or the election stops).
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(|leader| !*leader).await;
    }

    /// Steps down: the lease is released so a standby takes over at once, not after it lapses.
    pub async fn release(self) {
        drop(self.state);
        match self.task.await {
            Ok(Ok(_)) => info!("released the leader lease"),
            Ok(Err(error)) => {
                warn!(%error, "could not release the leader lease; a standby takes over when it lapses")
            }
            Err(error) => warn!(%error, "the leader election task failed"),
        }
    }
}
