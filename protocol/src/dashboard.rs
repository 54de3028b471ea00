//! What the dashboard shows: one snapshot of a node and its view of the
//! cluster, served by `GET /v1/dashboard` and, every second, by the
//! server-sent events of `GET /v1/dashboard/stream`.
//!
//! Each section is read on its own; one that cannot be read this time
//! (a node not answering the task listing while it is being declared dead,
//! say) is `null` with the reason in `unavailable`, and the rest still
//! arrives. Counters are totals since the node started: the page derives
//! rates from successive snapshots.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alerts::AlertEvent;
use crate::{ActorNode, Member, Priority, TaskState, WindowResult};

/// One look at a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DashboardSnapshot {
    /// Cluster name.
    pub cluster: String,
    /// The node that answered.
    pub node: String,
    /// When the snapshot was taken, ms since the Unix epoch.
    pub at_ms: u64,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// Every member this node knows of.
    pub members: Option<Vec<Member>>,
    /// This node's supervision tree, with restart counts.
    pub tree: Option<ActorNode>,
    /// This node's worker pool.
    pub pool: PoolFigures,
    /// Unfinished tasks across the cluster (up to a page per state), by owner.
    pub in_flight: Option<Vec<InFlightTask>>,
    /// This node's pipelines.
    pub pipelines: Option<Vec<PipelineFigures>>,
    /// This node's most recently closed windows, newest first.
    pub aggregates: Vec<WindowResult>,
    /// The latest alert notifications, newest first.
    pub alerts: Vec<AlertEvent>,
    /// Sections that could not be read this time, and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unavailable: BTreeMap<String, String>,
}

/// The worker pool's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolFigures {
    /// Workers.
    pub workers: u64,
    /// Attempts waiting for a worker, per priority.
    pub queued: BTreeMap<Priority, u64>,
    /// Attempts finished since the node started (any outcome).
    pub finished_total: u64,
}

/// A task that is not finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InFlightTask {
    /// Task id.
    pub id: String,
    /// Its plugin.
    pub kind: String,
    /// Where it is.
    pub state: TaskState,
    /// Its priority.
    pub priority: Priority,
    /// The node that owns it now.
    pub owner: String,
}

/// A pipeline's live figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineFigures {
    /// Pipeline id.
    pub id: String,
    /// Whether it takes events.
    pub running: bool,
    /// Windows open now.
    pub open_windows: u64,
    /// Its watermark, ms since the Unix epoch.
    pub watermark_ms: Option<u64>,
    /// Events counted in windows since it started.
    pub added: u64,
    /// Late events since it started.
    pub late: u64,
    /// Windows closed since it started.
    pub emitted: u64,
}
