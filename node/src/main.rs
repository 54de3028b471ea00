//! The `troupe` binary: parse the command line, then hand over to the library.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad config.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use troupe_node::cli::{BenchCommand, Cli, ClusterCommand, Command, EventsCommand};
use troupe_node::config::ClusterConfig;
use troupe_node::run::{run, NodeOptions};
use troupe_node::{bench, chaos, cluster, loadgen, signals, status, telemetry};

fn load(path: &std::path::Path) -> Result<ClusterConfig, ExitCode> {
    ClusterConfig::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn failed(err: anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::from(1)
}

/// jemalloc, not glibc's malloc: ingestion allocates and frees a few
/// small objects per event on one thread and frees them on another, and
/// glibc's arenas (capped at two to bound memory) made one run in three
/// stall on arena locks (130k events/s instead of 400k); jemalloc keeps
/// per-thread caches and runs steadily.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before its first allocation (the
/// `_RJEM_MALLOC_CONF` environment variable still overrides them): two
/// arenas instead of eight per core, since a node's many short-lived
/// blocking threads would each leave memory resident in an arena of
/// their own; freed pages go back to the system within a second. Peak
/// RSS while ingesting a 2 GB body: 108.9 MiB with the defaults, 97.8
/// MiB with these, at the same rate.
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 47] = b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(args) => {
            let config = match load(&args.config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            if let Err(reason) = config.node(&args.id) {
                eprintln!("error: {}: --id: {reason}", args.config.display());
                return ExitCode::from(2);
            }
            telemetry::init_logging(cli.log_format);
            let metrics = match telemetry::init_metrics() {
                Ok(handle) => handle,
                Err(e) => return failed(e),
            };
            let options = NodeOptions {
                config: Arc::new(config),
                node_id: args.id,
                fault_injection: args.fault_injection,
            };
            match run(options, metrics, signals::shutdown_requested()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    failed(e)
                }
            }
        }
        Command::Cluster(ClusterCommand::Up(args)) => {
            let config = match load(&args.config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match cluster::up(&args, &config, cli.log_format).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed(e),
            }
        }
        Command::Chaos(args) => {
            let config = match load(&args.config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            let format = cli.log_format;
            match tokio::task::spawn_blocking(move || chaos::run(&args, &config, format)).await {
                Ok(Ok(report)) if report.lost == 0 && report.unfinished == 0 => ExitCode::SUCCESS,
                Ok(Ok(_)) => ExitCode::from(1),
                Ok(Err(e)) => failed(e),
                Err(e) => failed(e.into()),
            }
        }
        Command::Events(EventsCommand::Send(args)) => {
            match tokio::task::spawn_blocking(move || loadgen::send(&args)).await {
                Ok(Ok(_)) => ExitCode::SUCCESS,
                Ok(Err(e)) => failed(e),
                Err(e) => failed(e.into()),
            }
        }
        Command::Bench(BenchCommand::Events(args)) => {
            let format = cli.log_format;
            match tokio::task::spawn_blocking(move || bench::events(&args, format)).await {
                Ok(Ok(_)) => ExitCode::SUCCESS,
                Ok(Err(e)) => failed(e),
                Err(e) => failed(e.into()),
            }
        }
        Command::Bench(BenchCommand::Tasks(args)) => {
            let format = cli.log_format;
            match tokio::task::spawn_blocking(move || bench::tasks(&args, format)).await {
                Ok(Ok(_)) => ExitCode::SUCCESS,
                Ok(Err(e)) => failed(e),
                Err(e) => failed(e.into()),
            }
        }
        Command::Cluster(ClusterCommand::Down(args)) => {
            let config = match load(&args.config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match tokio::task::spawn_blocking(move || cluster::down(&args, &config)).await {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => failed(e),
                Err(e) => failed(e.into()),
            }
        }
        Command::Status(args) => {
            match tokio::task::spawn_blocking(move || status::run(&args)).await {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => failed(e),
                Err(e) => failed(e.into()),
            }
        }
    }
}
