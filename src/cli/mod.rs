//! The `tcred` command line: `controller`, `agent`, `crd`, `login`, `status`, `rotate`.

mod controller;
mod crd;
mod login;
mod rotate;
mod status;

use clap::{Parser, Subcommand};

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
