//! The membership view served by `GET /v1/cluster`.

use crate::plugins::PluginId;
use serde::{Deserialize, Serialize};

/// `GET /v1/cluster`: this node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// Cluster name from `cluster.toml`.
    pub cluster: String,
    /// Id of the node that answered.
    pub node: String,
    /// Every node incarnation this node has heard of, newest generation per id.
    pub members: Vec<Member>,
}

/// One member as seen by the answering node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    /// Node id.
    pub id: String,
    /// Liveness as judged by the failure detector and announcements.
    pub state: MemberState,
    /// Incarnation: when its gossip started, ms since the Unix epoch. A
    /// restarted node has a larger one.
    pub generation: u64,
    /// Gossip (UDP) address.
    pub gossip: String,
    /// HTTP address it published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Troupe version it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its process CPU use over the last publishing period, in cores (0.0–N).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    /// Task attempts waiting for one of its workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
    /// Size of its worker pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u64>,
    /// Plugins (task kinds) it runs, and their versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginId>,
    /// Milliseconds since its heartbeat last advanced, as seen here (0 for self).
    pub last_heard_ms: u64,
}

/// Member liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Heartbeats arriving.
    Alive,
    /// Still alive to the failure detector, but not heard from lately.
    Suspect,
    /// Declared dead by the failure detector.
    Dead,
    /// Announced a graceful departure.
    Left,
}
