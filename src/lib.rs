//! tcred: a Kubernetes operator that mints short-lived Huawei Cloud credentials into Secrets and
//! rotates them ahead of expiry. `main.rs` wires; this library does the work.

pub mod agent;
pub mod api;
pub mod certs;
pub mod cli;
pub mod cloud;
pub mod controller;
pub mod heap;
pub mod leader;
pub mod metrics;
pub mod podidentity;
pub mod ratelimit;
pub mod schedule;
pub mod sensitive;
pub mod server;
pub mod session;
pub mod shard;
pub mod source;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod webhook;
