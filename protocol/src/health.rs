//! Bodies of `GET /health` and `GET /ready`.

use serde::{Deserialize, Serialize};

/// `GET /health`: the process is alive and serving HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok` when the endpoint answers at all.
    pub status: String,
    /// This node's id from `cluster.toml`.
    pub node: String,
    /// Incarnation of this node: start time in ms since the epoch.
    pub generation: u64,
    /// Troupe version.
    pub version: String,
    /// Seconds since this process started.
    pub uptime_secs: u64,
}

/// `GET /ready`: whether this node can take work, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    /// True when the store is open, every supervised actor is running and
    /// the node has joined the cluster.
    pub ready: bool,
    /// The node knows who is alive (always true in a cluster of one).
    pub joined: bool,
    /// The store answered.
    pub store: bool,
    /// Every actor in the supervision tree is running.
    pub actors: bool,
    /// Paths of actors that are not running, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_running: Vec<String>,
    /// External sinks (PostgreSQL), when configured. A sink that is down
    /// does not make the node unready: results wait for it durably.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<SinkHealth>,
}

/// How a sink is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SinkHealth {
    /// The last write (or connection attempt) succeeded.
    pub up: bool,
    /// Results waiting in the local outbox, as last counted.
    pub queued: u64,
    /// Results written since the node started.
    pub written: u64,
    /// Why it is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
