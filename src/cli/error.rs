//! What a command reports to the user when it fails.

/// Errors a command reports to the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Controller(#[from] crate::controller::Error),
    #[error("{0}")]
    Leader(#[from] crate::leader::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Agent(#[from] crate::agent::Error),
    #[error("{0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
    #[error("lost the leader lease; exiting so a fresh replica can stand by")]
    LostLease,
    #[error("{0}")]
    Usage(String),
}
