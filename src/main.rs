//! The `tcred` binary: parse arguments, start logging, run the chosen command.

use std::process::ExitCode;

use clap::Parser;
use tcred::{cli::Cli, cloud::http::install_crypto_provider, telemetry};

/// jemalloc returns freed memory to the system over time; glibc's per-thread arenas kept a
/// restart's transient allocations resident (docs/benchmarks.md, memory). Its statistics are
/// the `tcred_heap_bytes` gauges.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, cli.default_log_filter());
    if !tcred::heap::purge_in_background() {
        tracing::warn!(
            "the allocator's background purge could not be enabled; freed memory is returned only as tcred allocates"
        );
    }
    install_crypto_provider();
    match cli.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
