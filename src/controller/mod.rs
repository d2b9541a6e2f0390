//! The controllers (docs/controller.md): TemporaryCredentials in [`credentials`] (fetch →
//! authorize → plan (pure) → mint → build (pure) → apply → status) and the two source kinds in
//! [`sources`]; [`watch`] wires their watches. This module only names the parts.

pub mod apply;
pub mod authorize;
pub mod context;
pub mod credentials;
pub mod entry;
pub mod error;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod guard;
pub mod namespace_gate;
pub mod own_writes;
pub mod restart;
pub mod shard;
pub mod sources;
pub mod watch;

pub use self::{
    context::{Config, Context, Stores},
    credentials::{mint, pending, plan, secret, status},
    error::{Error, kube_message},
    watch::{Readiness, check_crds, run, trim_cached},
};
