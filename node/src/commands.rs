//! What each `troupe` subcommand does: the body of the binary, in the
//! library so that a binary built with more plugins (declared in its own
//! crate, see `troupe_plugin::register_plugin!`) is `main` calling
//! [`main`] — nothing else to edit.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad config.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::cli::{BenchCommand, Cli, ClusterCommand, Command, EventsCommand};
use crate::config::ClusterConfig;
use crate::run::{run, NodeOptions};
use crate::{bench, chaos, cluster, loadgen, signals, status, telemetry};

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

/// Parses the command line and runs the subcommand; call it from `main`
/// under a tokio runtime.
pub async fn main() -> ExitCode {
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
        Command::Token(args) => {
            let config = match load(&args.config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match crate::http::access::mint(
                &config.cluster.secret,
                &args.subject,
                args.role,
                args.ttl_secs,
            ) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => failed(anyhow::anyhow!(e)),
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
