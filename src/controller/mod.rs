//! The TemporaryCredential controller: fetch → authorize → plan (pure) → mint → build (pure) →
//! apply → status.

pub mod authorize;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod plan;
pub mod secret;
pub mod status;
