//! What each `troupe` subcommand does: the body of the binary, in the
//! library so that a binary built with more plugins (declared in its own
//! crate, see `troupe_plugin::register_plugin!`) is `main` calling
//! [`main`] — nothing else to edit.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad config.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::cli::{
    BenchCommand, Cli, ClusterCommand, Command, EventsCommand, NodeTarget, TasksCommand, UsageError,
};
use crate::client::{Client, DEFAULT_TIMEOUT};
use crate::config::ClusterConfig;
use crate::run::{run, NodeOptions};
use crate::{bench, chaos, cluster, loadgen, signals, status, tasks, telemetry};

/// How long one `events send` request may take.
const EVENTS_TIMEOUT: Duration = Duration::from_secs(60);

fn load(path: &std::path::Path) -> Result<ClusterConfig, ExitCode> {
    ClusterConfig::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// Prints `err` on stderr; exit code 2 for bad usage, else 1.
fn failed(err: anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    if err.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

/// Runs `work` (blocking HTTP calls) off the runtime; its error is the
/// exit code.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> ExitCode {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(_)) => ExitCode::SUCCESS,
        Ok(Err(e)) => failed(e),
        Err(e) => failed(e.into()),
    }
}

/// Parses the command line and runs the subcommand; call it from `main`
/// under a tokio runtime.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let global = cli.global;
    let output = global.output;
    let client = |target: &NodeTarget, timeout: Duration| {
        Client::new(&target.node, global.token.clone(), timeout)
    };
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
            telemetry::init_logging(global.log_format);
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
        Command::Submit(args) => {
            let client = client(&args.target, DEFAULT_TIMEOUT);
            blocking(move || tasks::submit(&args, &client, output)).await
        }
        Command::Tasks(TasksCommand::List(args)) => {
            let client = client(&args.target, DEFAULT_TIMEOUT);
            blocking(move || tasks::list(&args, &client, output)).await
        }
        Command::Tasks(TasksCommand::Get(args)) => {
            let client = client(&args.target, DEFAULT_TIMEOUT);
            blocking(move || tasks::get(&args, &client, output)).await
        }
        Command::Tasks(TasksCommand::Cancel(args)) => {
            let client = client(&args.target, DEFAULT_TIMEOUT);
            blocking(move || tasks::cancel(&args, &client, output)).await
        }
        Command::Cluster(ClusterCommand::Up(args)) => {
            let config = match load(&args.config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match cluster::up(&args, &config, global.log_format).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed(e),
            }
        }
        Command::Cluster(ClusterCommand::Down(args)) => {
            let config = match load(&args.config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            blocking(move || cluster::down(&args, &config)).await
        }
        Command::Cluster(ClusterCommand::Members(args)) => {
            let client = client(&args.target, DEFAULT_TIMEOUT);
            blocking(move || cluster::members(&client, output)).await
        }
        Command::Status(args) => {
            let client = client(&args.target, DEFAULT_TIMEOUT);
            blocking(move || status::run(&client, output)).await
        }
        Command::Chaos(args) => {
            let config = match load(&args.config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match tokio::task::spawn_blocking(move || chaos::run(&args, &config, &global)).await {
                Ok(Ok(report)) if report.lost == 0 && report.unfinished == 0 => ExitCode::SUCCESS,
                Ok(Ok(_)) => ExitCode::from(1),
                Ok(Err(e)) => failed(e),
                Err(e) => failed(e.into()),
            }
        }
        Command::Events(EventsCommand::Send(args)) => {
            let client = client(&args.target, EVENTS_TIMEOUT);
            blocking(move || loadgen::send(&args, &client, output)).await
        }
        Command::Bench(BenchCommand::Events(args)) => {
            blocking(move || bench::events(&args, &global)).await
        }
        Command::Bench(BenchCommand::Tasks(args)) => {
            blocking(move || bench::tasks(&args, &global)).await
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
    }
}
