//! Command-line interface of the `troupe` binary: every subcommand and
//! flag, parsed by clap. What each one does is in [`crate::commands`].
//!
//! Flags that mean the same everywhere (`--output`, `--token`,
//! `--log-format`) are global, so each has one spelling and one place to
//! read it; `--node` is shared by the commands that talk to one node.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use troupe_protocol::{Priority, TaskState};

use crate::telemetry::LogFormat;

/// Troupe: a cluster of equal nodes hosting supervised actors, tasks and
/// event-time windows.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, about, propagate_version = true)]
pub struct Cli {
    /// Flags every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Log line format (of `troupe node`, and of the nodes a command starts).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TROUPE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Output format: tables for people, or one JSON document on stdout
    /// for programs (progress bars are then hidden).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "table",
        env = "TROUPE_OUTPUT"
    )]
    pub output: Output,
    /// Bearer token sent with every request this command makes (for nodes
    /// with `[auth] required`; `troupe token` mints one). Commands that
    /// start their own nodes mint one from the config when needed.
    #[arg(long, global = true, env = "TROUPE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The node a command talks to.
#[derive(Debug, Clone, Args)]
pub struct NodeTarget {
    /// Base URL of the node's HTTP API.
    #[arg(long, env = "TROUPE_NODE", default_value = "http://127.0.0.1:8401")]
    pub node: String,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node of the cluster in the foreground.
    Node(NodeArgs),
    /// Submit a task (or a file of tasks); with `--wait`, wait for its
    /// outcome.
    // `--version` here is the plugin version a task accepts (as in the
    // API), not troupe's: `troupe --version` still prints that.
    #[command(disable_version_flag = true)]
    Submit(SubmitArgs),
    /// List, inspect and cancel tasks.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Operate all local nodes of a cluster, or list a cluster's members.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Show a node's health, readiness and supervision tree.
    Status(StatusArgs),
    /// Kill nodes under load and count what was lost: starts the config's
    /// nodes, submits tasks, SIGKILLs and restarts nodes, then prints a
    /// summary.
    Chaos(ChaosArgs),
    /// Work with events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Measure a fresh local cluster.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print a bearer token (JWT, HS256) signed with the cluster secret.
    Token(TokenArgs),
}

/// `troupe submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The node to submit to (any node: the task goes to its owner).
    #[command(flatten)]
    pub target: NodeTarget,
    /// The task kind (plugin), e.g. `echo`, `sleep`, `json.transform`.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    pub kind: Option<String>,
    /// The task input: JSON text, `@path` to read it from a file, or `-`
    /// to read it from stdin.
    #[arg(long, requires = "kind")]
    pub input: Option<String>,
    /// Submit every task of a file instead: a JSON array or NDJSON of
    /// submissions (`{"kind": …, "input": …, …}`), `-` for stdin; sent in
    /// batches, each all-or-nothing.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Scheduling priority.
    #[arg(long, value_parser = priority_parser(), requires = "kind")]
    pub priority: Option<Priority>,
    /// Idempotency key: submitting the same key again names the same task.
    #[arg(long, requires = "kind")]
    pub key: Option<String>,
    /// Longest one attempt may run, ms.
    #[arg(long, requires = "kind")]
    pub timeout_ms: Option<u64>,
    /// Further attempts after a failed, crashed or timed-out one.
    #[arg(long, requires = "kind")]
    pub max_retries: Option<u32>,
    /// Plugin versions the task accepts, as a semver requirement (`^1.2`).
    #[arg(long = "version", value_name = "REQ", requires = "kind")]
    pub version_req: Option<String>,
    /// Wait until the task has finished, print its outcome, and exit 1
    /// unless it succeeded.
    #[arg(long, conflicts_with = "file")]
    pub wait: bool,
}

/// `troupe tasks …`.
#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// The cluster's tasks, oldest first, one page (or all with `--all`).
    List(TasksListArgs),
    /// One task: its record and every attempt.
    Get(TaskIdArgs),
    /// Cancel a task (also while it runs).
    Cancel(TaskIdArgs),
}

/// `troupe tasks list`.
#[derive(Debug, Args)]
pub struct TasksListArgs {
    /// The node to ask (any node lists the whole cluster's tasks).
    #[command(flatten)]
    pub target: NodeTarget,
    /// Only tasks in this state.
    #[arg(long, value_parser = state_parser())]
    pub state: Option<TaskState>,
    /// Tasks per page.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Every page, not just the first.
    #[arg(long)]
    pub all: bool,
}

/// `troupe tasks get` / `troupe tasks cancel`.
#[derive(Debug, Args)]
pub struct TaskIdArgs {
    /// The node to ask (any node answers for any task).
    #[command(flatten)]
    pub target: NodeTarget,
    /// The task's id.
    pub id: String,
}

/// A clap parser for a snake_case protocol enum, by its serde names, so
/// the CLI accepts exactly what the API does and `--help` lists them.
fn serde_enum_parser<T>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).try_map(|name| {
        serde_json::from_value(serde_json::Value::String(name))
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, e))
    })
}

fn priority_parser() -> impl TypedValueParser<Value = Priority> {
    serde_enum_parser(&["low", "normal", "high", "critical"])
}

fn state_parser() -> impl TypedValueParser<Value = TaskState> {
    serde_enum_parser(&[
        "pending",
        "waiting",
        "queued",
        "running",
        "retrying",
        "succeeded",
        "failed",
        "cancelled",
        "timed_out",
    ])
}

/// `troupe token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The cluster config file (its secret signs the token).
    #[arg(long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Who the token is for.
    #[arg(long, default_value = "cli")]
    pub subject: String,
    /// What it allows.
    #[arg(long, value_enum, default_value = "admin")]
    pub role: crate::config::Role,
    /// Seconds until it expires.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
}

/// `troupe chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// The cluster config file (its nodes must not be running).
    #[arg(long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Tasks to submit over the run.
    #[arg(long, default_value_t = 1_000)]
    pub tasks: usize,
    /// Nodes to kill (one after another, each restarted after it is
    /// declared dead).
    #[arg(long, default_value_t = 1)]
    pub kill: usize,
    /// Seconds over which tasks are submitted and kills happen.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Each task sleeps a random time up to this many ms.
    #[arg(long, default_value_t = 50)]
    pub task_ms: u64,
}

/// `troupe events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Generate readings and send them to a node, paced, with a progress bar.
    Send(EventsSendArgs),
}

/// `troupe events send`.
#[derive(Debug, Args)]
pub struct EventsSendArgs {
    /// The node to talk to.
    #[command(flatten)]
    pub target: NodeTarget,
    /// Events per second.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// Events to send.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Distinct sources.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub sources: u64,
    /// Events per request (NDJSON).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
}

/// `troupe bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Task throughput and submit-to-finish latency: starts a local cluster
    /// in a scratch folder, submits no-op tasks in batches over HTTP, waits
    /// for all to finish, prints the figures and stops the cluster.
    Tasks(BenchTasksArgs),
    /// Ingestion rate and memory: starts one node in a scratch folder and
    /// streams one NDJSON request of generated events into it.
    Events(BenchEventsArgs),
}

/// `troupe bench events`.
#[derive(Debug, Args)]
pub struct BenchEventsArgs {
    /// Events in the request (~130 bytes each: 16,000,000 is about 2 GB).
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Distinct sources.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub sources: u64,
    /// Run each event's data through `json.transform` with this jq filter
    /// before windowing (e.g. `{temperature: (.temperature * 9 / 5 + 32)}`):
    /// the cost of a pipeline transform.
    #[arg(long)]
    pub transform: Option<String>,
}

/// `troupe bench tasks`.
#[derive(Debug, Args)]
pub struct BenchTasksArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    pub nodes: usize,
    /// Replication factor.
    #[arg(long, default_value_t = 2)]
    pub replication: usize,
    /// Workers per node.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Tasks to submit.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    /// Tasks per HTTP request.
    #[arg(long, default_value_t = 1_000, value_parser = at_least_one)]
    pub batch: usize,
    /// Concurrent client threads.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    pub clients: usize,
}

/// `troupe node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The cluster config file.
    #[arg(long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Which `[[nodes]]` entry this process is.
    #[arg(long)]
    pub id: String,
    /// Allow `POST /v1/actors/{path}/crash` (fault injection).
    #[arg(long)]
    pub fault_injection: bool,
}

/// `troupe cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start every node of the config as a local process and stay in the
    /// foreground; Ctrl-C stops them all gracefully.
    Up(ClusterUpArgs),
    /// Stop every node of the config running on this machine (SIGTERM,
    /// then SIGKILL after the timeout).
    Down(ClusterDownArgs),
    /// The members a node knows of: state, address, generation, load,
    /// queue depth, workers and plugins.
    Members(ClusterMembersArgs),
}

/// `troupe cluster members`.
#[derive(Debug, Args)]
pub struct ClusterMembersArgs {
    /// The node to ask.
    #[command(flatten)]
    pub target: NodeTarget,
}

/// `troupe cluster down`.
#[derive(Debug, Args)]
pub struct ClusterDownArgs {
    /// The cluster config file.
    #[arg(long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Seconds to wait for a graceful stop before SIGKILL.
    #[arg(long, default_value_t = 20)]
    pub timeout: u64,
}

/// `troupe cluster up`.
#[derive(Debug, Args)]
pub struct ClusterUpArgs {
    /// The cluster config file.
    #[arg(long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Start the nodes with fault injection allowed.
    #[arg(long)]
    pub fault_injection: bool,
}

/// `troupe status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The node to talk to.
    #[command(flatten)]
    pub target: NodeTarget,
}

/// Bad usage found after parsing (an `--input` that is not JSON, a file
/// that cannot be read): exit code 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// How listings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables and trees for people.
    Table,
    /// JSON for programs.
    Json,
}

/// A count that must be 1 or more (a usage error, exit 2, otherwise).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn output_and_token_are_global() {
        let cli = Cli::try_parse_from([
            "troupe",
            "tasks",
            "list",
            "--output",
            "json",
            "--token",
            "t",
            "--state",
            "timed_out",
        ])
        .map_err(|e| e.to_string());
        let Ok(cli) = cli else {
            panic!("{cli:?}");
        };
        assert_eq!(cli.global.output, Output::Json);
        assert_eq!(cli.global.token.as_deref(), Some("t"));
        let Command::Tasks(TasksCommand::List(list)) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(list.state, Some(TaskState::TimedOut));
    }

    #[test]
    fn counts_of_zero_are_usage_errors() {
        for args in [
            &["troupe", "events", "send", "--rate", "0"][..],
            &["troupe", "events", "send", "--batch", "0"],
            &["troupe", "bench", "tasks", "--clients", "0"],
            &["troupe", "bench", "events", "--sources", "0"],
        ] {
            let error = Cli::try_parse_from(args).expect_err("zero is refused");
            assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
        }
    }
}
