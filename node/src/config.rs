//! `cluster.toml`: loading, defaults and validation.
//!
//! Every table is `deny_unknown_fields`, so a typo is an error rather than a
//! silently ignored setting; every error names the key path
//! (`nodes[1].http`) so the operator knows what to fix. The binary prints
//! the error on one line and exits with code 2.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use troupe_actors::supervisor::RestartPolicy;
use troupe_actors::tree::STUCK_AFTER;
use troupe_protocol::PipelineSpec;

/// A config file that cannot be used, and where the problem is.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// Key path of the problem (`nodes[0].http`), or `(file)` for the file itself.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// The whole of `cluster.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `[cluster]`: name, replication, secret.
    pub cluster: ClusterSection,
    /// `[[nodes]]`: every node of the cluster.
    pub nodes: Vec<NodeEntry>,
    /// `[storage]`: optional PostgreSQL.
    #[serde(default)]
    pub storage: StorageSection,
    /// `[supervision]`: restart intensity and backoff.
    #[serde(default)]
    pub supervision: SupervisionSection,
    /// `[workers]`: the local worker pool.
    #[serde(default)]
    pub workers: WorkersSection,
    /// `[[pipelines]]`: windowed aggregations over ingested events.
    #[serde(default)]
    pub pipelines: Vec<PipelineSpec>,
    /// `[ingest]`: event ingestion limits.
    #[serde(default)]
    pub ingest: IngestSection,
    /// `[limits]`: per-client request rate.
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[auth]`: bearer tokens for clients.
    #[serde(default)]
    pub auth: AuthSection,
    /// `[[alerts]]`: rules over the pipelines' window aggregates.
    #[serde(default)]
    pub alerts: Vec<troupe_protocol::alerts::AlertRule>,
    /// `[debug]`: switches for testing and demos.
    #[serde(default)]
    pub debug: DebugSection,
    /// Folder of the config file; relative data dirs are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Cluster name; nodes of another cluster are not peers.
    pub name: String,
    /// Copies of each task record (owner included).
    #[serde(default = "default_replication")]
    pub replication: usize,
    /// Shared secret for node-to-node authentication and token signing.
    pub secret: String,
    /// Time between gossip rounds.
    #[serde(default = "default_gossip_interval_ms")]
    pub gossip_interval_ms: u64,
    /// Phi-accrual threshold: a node is declared dead after roughly this
    /// many mean heartbeat intervals of silence.
    #[serde(default = "default_phi_threshold")]
    pub phi_threshold: f64,
}

fn default_replication() -> usize {
    2
}

fn default_gossip_interval_ms() -> u64 {
    100
}

/// With 100 ms gossip the mean heartbeat interval on loopback is ~60 ms,
/// so 24 declares a node dead after ~1.5 s of silence: fast, yet robust to
/// a noisy 2-core machine pausing a process for a second.
fn default_phi_threshold() -> f64 {
    24.0
}

/// One `[[nodes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Unique node id (`n1`).
    pub id: String,
    /// REST API, dashboard and `/metrics`.
    pub http: SocketAddr,
    /// Node-to-node transport (TCP).
    pub cluster: SocketAddr,
    /// Gossip (UDP).
    pub gossip: SocketAddr,
    /// Data directory, relative to the config file's folder.
    pub data_dir: PathBuf,
}

/// `[storage]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// PostgreSQL for aggregates, task history and archived events.
    pub postgres_url: Option<String>,
}

/// `[supervision]`: applies to every supervisor on the node; each key
/// defaults on its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionSection {
    /// More restarts than this within `within_secs` and a supervisor escalates.
    pub max_restarts: u32,
    /// The intensity window.
    pub within_secs: u64,
    /// First backoff delay (the first restart is immediate).
    pub backoff_min_ms: u64,
    /// Largest backoff delay.
    pub backoff_max_ms: u64,
}

impl Default for SupervisionSection {
    fn default() -> Self {
        let policy = RestartPolicy::default();
        Self {
            max_restarts: policy.max_restarts,
            within_secs: policy.within.as_secs(),
            backoff_min_ms: policy.backoff_min.as_millis() as u64,
            backoff_max_ms: policy.backoff_max.as_millis() as u64,
        }
    }
}

impl SupervisionSection {
    /// The restart policy every supervisor of the node uses.
    pub fn policy(&self) -> RestartPolicy {
        RestartPolicy {
            max_restarts: self.max_restarts,
            within: Duration::from_secs(self.within_secs),
            backoff_min: Duration::from_millis(self.backoff_min_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
        }
    }
}

/// `[workers]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersSection {
    /// Workers at start; `PUT /v1/workers` changes it at run time.
    pub count: usize,
    /// A worker busy on one attempt for longer than this is stuck: the
    /// pool replaces it and the attempt counts as crashed (and is retried
    /// if it has retries left). The pool notices through its workers'
    /// heartbeats, sent every 10 s, so replacement comes between this and
    /// this plus 10 s (plus this again). Default: the longest timeout plus 30 s.
    pub stuck_after_secs: u64,
}

impl Default for WorkersSection {
    fn default() -> Self {
        Self {
            count: 4,
            stuck_after_secs: STUCK_AFTER.as_secs(),
        }
    }
}

impl WorkersSection {
    /// The stuck-worker limit.
    pub fn stuck_after(&self) -> Duration {
        Duration::from_secs(self.stuck_after_secs)
    }
}

/// `[limits]`: how many HTTP requests one client (by IP address) may
/// make; beyond that, 429 with Retry-After. `/health`, `/ready` and
/// `/metrics` are never limited.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Sustained requests per second per client; 0 (the default) is no
    /// limit.
    pub requests_per_second: u32,
    /// Requests a client may make at once above the sustained rate
    /// (default: one second's worth).
    pub burst: Option<u32>,
}

/// `[auth]`: who may call the HTTP API. With `required`, every request
/// that changes something (any method but GET and HEAD) needs a bearer
/// token — a JWT (HS256, signed with the cluster secret; `troupe token`
/// makes one) or one of `tokens` — and reads need one too with
/// `protect_reads`. Probes (`/health`, `/ready`, `/metrics`) never do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Require tokens (off by default).
    pub required: bool,
    /// Require a token to read too.
    pub protect_reads: bool,
    /// Static tokens, for clients that cannot mint JWTs.
    pub tokens: Vec<StaticToken>,
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// Who holds it (logged, and named in a 403).
    pub name: String,
    /// The token itself.
    pub token: String,
    /// What it allows.
    pub role: Role,
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Reads only.
    Read,
}

/// `[ingest]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// Largest body of one ingestion request, MiB (an NDJSON stream is
    /// read as it arrives, so this bounds the request, not memory; a JSON
    /// document is parsed whole and is also held to 64 MiB).
    pub max_body_mb: u64,
    /// Ingestion requests served at once; beyond that a request gets 429
    /// with Retry-After (the node is saturated, nothing was written).
    pub max_concurrent_requests: usize,
}

impl Default for IngestSection {
    fn default() -> Self {
        Self {
            max_body_mb: 4096,
            max_concurrent_requests: 64,
        }
    }
}

impl IngestSection {
    /// The body limit in bytes.
    pub fn max_body(&self) -> usize {
        usize::try_from(self.max_body_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
}

/// `[debug]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugSection {
    /// Allow `POST /v1/actors/{path}/crash`.
    #[serde(default)]
    pub fault_injection: bool,
}

impl ClusterConfig {
    /// Reads, parses and validates a config file.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let error = |key: &str, reason: String| ConfigError {
            file: file.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| error("(file)", format!("cannot read: {e}")))?;
        let mut config = Self::parse(&text).map_err(|(key, reason)| error(&key, reason))?;
        config.base_dir = file
            .parent()
            .map(Path::to_owned)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(config)
    }

    /// Parses and validates config text; errors are `(key path, reason)`.
    pub fn parse(text: &str) -> Result<Self, (String, String)> {
        let deserializer = toml::Deserializer::new(text);
        let config: Self = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let at = inner
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            let key = if path == "." {
                "(file)".to_owned()
            } else {
                path
            };
            // Operators read this on one line; toml's messages may span several.
            let message: Vec<&str> = inner
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            (key, format!("{}{at}", message.join("; ")))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects values that parse but contradict each other.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: &str| Err((key.to_owned(), reason.to_owned()));
        let mut pipeline_ids = HashSet::new();
        for (i, pipeline) in self.pipelines.iter().enumerate() {
            troupe_actors::windows::validate(pipeline)
                .map_err(|(field, reason)| (format!("pipelines[{i}].{field}"), reason))?;
            if !pipeline_ids.insert(&pipeline.id) {
                return bad(
                    &format!("pipelines[{i}].id"),
                    "another pipeline has this id",
                );
            }
        }
        troupe_actors::alerts::validate(&self.alerts, &self.pipelines)?;
        if self.cluster.name.trim().is_empty() {
            return bad("cluster.name", "must not be empty");
        }
        if self.cluster.secret.is_empty() {
            return bad("cluster.secret", "must not be empty");
        }
        if !(10..=10_000).contains(&self.cluster.gossip_interval_ms) {
            return bad("cluster.gossip_interval_ms", "must be between 10 and 10000");
        }
        if !(self.cluster.phi_threshold >= 1.0 && self.cluster.phi_threshold <= 100.0) {
            return bad("cluster.phi_threshold", "must be between 1 and 100");
        }
        if self.nodes.is_empty() {
            return bad("nodes", "at least one [[nodes]] entry is required");
        }
        if self.cluster.replication == 0 || self.cluster.replication > self.nodes.len() {
            return Err((
                "cluster.replication".into(),
                format!(
                    "must be between 1 and the number of nodes ({})",
                    self.nodes.len()
                ),
            ));
        }
        let mut ids = HashSet::new();
        let mut addrs = HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let valid_id = !node.id.is_empty()
                && node.id.len() <= 64
                && node
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_id {
                return bad(
                    &format!("nodes[{i}].id"),
                    "must be 1-64 characters of a-z, A-Z, 0-9, '-' or '_'",
                );
            }
            if !ids.insert(node.id.as_str()) {
                return Err((
                    format!("nodes[{i}].id"),
                    format!("duplicate node id {:?}", node.id),
                ));
            }
            for (key, addr) in [
                ("http", node.http),
                ("cluster", node.cluster),
                ("gossip", node.gossip),
            ] {
                // Gossip is UDP and may share a port number with a TCP address.
                if !addrs.insert((key == "gossip", addr)) {
                    return Err((
                        format!("nodes[{i}].{key}"),
                        format!("address {addr} is used twice"),
                    ));
                }
            }
        }
        if let Some(url) = &self.storage.postgres_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return bad(
                    "storage.postgres_url",
                    "must start with postgres:// or postgresql://",
                );
            }
        }
        if !(1..=troupe_actors::scheduler::MAX_WORKERS).contains(&self.workers.count) {
            return Err((
                "workers.count".into(),
                format!(
                    "must be from 1 to {}",
                    troupe_actors::scheduler::MAX_WORKERS
                ),
            ));
        }
        if self.ingest.max_body_mb == 0 {
            return bad("ingest.max_body_mb", "must be at least 1");
        }
        if self.ingest.max_concurrent_requests == 0 {
            return bad("ingest.max_concurrent_requests", "must be at least 1");
        }
        if self.workers.stuck_after_secs == 0 {
            return bad("workers.stuck_after_secs", "must be at least 1");
        }
        let s = &self.supervision;
        if s.within_secs == 0 {
            return bad("supervision.within_secs", "must be at least 1");
        }
        if s.backoff_min_ms > s.backoff_max_ms {
            return bad(
                "supervision.backoff_min_ms",
                "must not exceed backoff_max_ms",
            );
        }
        Ok(())
    }

    /// The entry of node `id`.
    pub fn node(&self, id: &str) -> Result<&NodeEntry, String> {
        self.nodes.iter().find(|n| n.id == id).ok_or_else(|| {
            let known: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
            format!("no node with id {id:?} (known: {})", known.join(", "))
        })
    }

    /// Data directory of `node`, resolved against the config file's folder.
    pub fn data_dir(&self, node: &NodeEntry) -> PathBuf {
        self.base_dir.join(&node.data_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[cluster]
name = "t"
secret = "s"
[[nodes]]
id = "n1"
http = "127.0.0.1:8401"
cluster = "127.0.0.1:7401"
gossip = "127.0.0.1:7501"
data_dir = "data/n1"
[[nodes]]
id = "n2"
http = "127.0.0.1:8402"
cluster = "127.0.0.1:7402"
gossip = "127.0.0.1:7502"
data_dir = "data/n2"
"#;

    fn error_of(text: &str) -> (String, String) {
        ClusterConfig::parse(text).expect_err("config must be rejected")
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let config = ClusterConfig::parse(GOOD).expect("valid");
        assert_eq!(config.cluster.replication, 2);
        assert_eq!(config.supervision.policy(), RestartPolicy::default());
        assert!(!config.debug.fault_injection);
        assert_eq!(config.node("n2").expect("n2").http.port(), 8402);
        assert!(config
            .node("n9")
            .expect_err("unknown")
            .contains("known: n1, n2"));
    }

    #[test]
    fn errors_name_the_key_path() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "http = \"127.0.0.1:8402\"",
                "http = \"nope\"",
                "nodes[1].http",
                "invalid socket address",
            ),
            (
                "data_dir = \"data/n1\"",
                "data_dir = \"data/n1\"\ncolour = 1",
                "nodes[0].colour",
                "unknown field",
            ),
            (
                "name = \"t\"",
                "name = \"\"",
                "cluster.name",
                "must not be empty",
            ),
            (
                "secret = \"s\"",
                "secret = \"s\"\nreplication = 3",
                "cluster.replication",
                "between 1 and",
            ),
            ("id = \"n2\"", "id = \"n1\"", "nodes[1].id", "duplicate"),
            ("id = \"n2\"", "id = \"n 2\"", "nodes[1].id", "must be 1-64"),
            (
                "gossip = \"127.0.0.1:7502\"",
                "gossip = \"127.0.0.1:7501\"",
                "nodes[1].gossip",
                "used twice",
            ),
        ];
        for (from, to, key, reason) in cases {
            let (got_key, got_reason) = error_of(&GOOD.replacen(from, to, 1));
            assert_eq!(&got_key, key, "for {to}: {got_reason}");
            assert!(got_reason.contains(reason), "for {to}: {got_reason}");
        }
    }

    #[test]
    fn sections_are_checked_too() {
        let partial = ClusterConfig::parse(&format!("{GOOD}[supervision]\nmax_restarts = 3\n"))
            .expect("partial section is fine");
        assert_eq!(partial.supervision.max_restarts, 3);
        assert_eq!(partial.supervision.within_secs, 60);
        let (key, _) = error_of(&format!("{GOOD}[supervision]\nwithin_secs = 0\n"));
        assert_eq!(key, "supervision.within_secs");
        let (key, _) = error_of(&format!("{GOOD}[storage]\npostgres_url = \"mysql://x\"\n"));
        assert_eq!(key, "storage.postgres_url");
        let (key, _) = error_of(&format!("{GOOD}[debug]\nfault_injection = \"yes\"\n"));
        assert_eq!(key, "debug.fault_injection");
        let (key, reason) = error_of("[cluster\nname=1");
        assert_eq!(key, "(file)");
        assert!(reason.contains("line 1"), "{reason}");
    }
}
