//! Writing a session Secret without losing a concurrent write: a replace at the resourceVersion
//! read (a create when there was none), and on a conflict the latest Secret is read again and
//! the caller decides on top of it. `tcred login` and the controller's refresh both write this
//! way (docs/controller.md §Session refresh).

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::PostParams};

/// Attempts before a write that keeps conflicting gives up.
const ATTEMPTS: usize = 5;

/// What to do on top of the Secret as it is now.
pub enum Next {
    /// Write this Secret (carrying the resourceVersion it was built on).
    Write(Box<Secret>),
    /// Leave the Secret as it is: what is there wins.
    Keep,
}

/// What the write ended with.
pub enum Outcome {
    Written(Secret),
    /// The caller kept what was there (`None`: the Secret is gone).
    Kept(Option<Secret>),
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("re-reading the session Secret: {0}")]
    Reread(#[source] kube::Error),
    #[error("{0}")]
    Write(#[source] kube::Error),
    #[error("the session Secret kept changing while it was written")]
    Conflicting,
}

/// Writes Secret `name`, starting from `current` (what the caller read). `next` gets the Secret
/// as it is and whether it was read again after a conflict, and says what to write.
pub async fn write(
    api: &Api<Secret>,
    name: &str,
    field_manager: &str,
    mut current: Option<Secret>,
    mut next: impl FnMut(Option<&Secret>, bool) -> Next,
) -> Result<Outcome, WriteError> {
    let params = PostParams {
        field_manager: Some(field_manager.to_owned()),
        ..Default::default()
    };
    for attempt in 0..ATTEMPTS {
        let secret = match next(current.as_ref(), attempt > 0) {
            Next::Write(s) => *s,
            Next::Keep => return Ok(Outcome::Kept(current)),
        };
        let written = match &current {
            Some(_) => api.replace(name, &params, &secret).await,
            None => api.create(&params, &secret).await,
        };
        match written {
            Ok(s) => return Ok(Outcome::Written(s)),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                current = api.get_opt(name).await.map_err(WriteError::Reread)?;
            }
            Err(e) => return Err(WriteError::Write(e)),
        }
    }
    Err(WriteError::Conflicting)
}
