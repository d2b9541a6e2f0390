//! The `tcred` binary: parse arguments, start logging, run the chosen command.

use std::process::ExitCode;

use clap::Parser;
use tcred::{cli::Cli, cloud::http::install_crypto_provider, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, cli.default_log_filter());
    install_crypto_provider();
    match cli.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
