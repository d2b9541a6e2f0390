//! The `tcred` command line: `controller`, `agent`, `crd`, `login`, `status`, `rotate`.

mod controller;
mod crd;
mod error;
mod login;
mod rotate;
mod status;

use clap::{Parser, Subcommand};

pub use self::error::Error;
use crate::telemetry::LogFormat;

/// tcred keeps short-lived Huawei Cloud credentials in Kubernetes Secrets.
#[derive(Debug, Parser)]
#[command(name = "tcred", version, about, long_about = None)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TCRED_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator.
    Controller(controller::ControllerArgs),
    /// Run the node-local credentials agent (pod identity; a DaemonSet on the host network).
    Agent(crate::agent::AgentArgs),
    /// Print the CRDs as YAML, or write one file per CRD.
    Crd(crd::CrdArgs),
    /// Log in to IAM Identity Center for an identityCenter source (device authorization).
    Login(login::LoginArgs),
    /// Show TemporaryCredentials: ready, target, expiry, renewal, last error.
    Status(status::StatusArgs),
    /// Force one rotation of a TemporaryCredential and wait for the new credential.
    Rotate(rotate::RotateArgs),
}

impl Cli {
    /// The default log filter for the command (`RUST_LOG` overrides it).
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Controller(_) => "info,kube_lease_manager=warn",
            Command::Agent(_) => "info",
            _ => "warn",
        }
    }

    pub async fn run(self) -> Result<(), Error> {
        match self.command {
            Command::Controller(args) => controller::run(args).await,
            Command::Agent(args) => Ok(crate::agent::run(args).await?),
            Command::Crd(args) => crd::run(&args),
            Command::Login(args) => login::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Rotate(args) => rotate::run(args).await,
        }
    }
}
