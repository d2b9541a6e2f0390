//! tcred: a Kubernetes operator that mints short-lived Huawei Cloud credentials into Secrets and
//! rotates them ahead of expiry. `main.rs` wires; this library does the work.

pub mod api;
pub mod cloud;
pub mod controller;
pub mod schedule;
pub mod sensitive;
