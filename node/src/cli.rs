//! Command-line interface of the `troupe` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::telemetry::LogFormat;

/// Troupe: a cluster of equal nodes hosting supervised actors, tasks and
/// event-time windows.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, about, propagate_version = true)]
pub struct Cli {
    /// Log line format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TROUPE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node of the cluster in the foreground.
    Node(NodeArgs),
    /// Operate all local nodes of a cluster.
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
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
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
    /// Base URL of the node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8401")]
    pub node: String,
    /// Events per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Events to send.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Distinct sources.
    #[arg(long, default_value_t = 10)]
    pub sources: u64,
    /// Events per request (NDJSON).
    #[arg(long, default_value_t = 1_000)]
    pub batch: u64,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
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
    #[arg(long, default_value_t = 100)]
    pub sources: u64,
    /// Run each event's data through `json.transform` with this jq filter
    /// before windowing (e.g. `{temperature: (.temperature * 9 / 5 + 32)}`):
    /// the cost of a pipeline transform.
    #[arg(long)]
    pub transform: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `troupe bench tasks`.
#[derive(Debug, Args)]
pub struct BenchTasksArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 3)]
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
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Concurrent client threads.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
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
    /// Base URL of the node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8401")]
    pub node: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

/// How listings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables and trees for people.
    Table,
    /// JSON for programs.
    Json,
}
