//! The live supervision tree as served by `GET /v1/actors`.

use serde::{Deserialize, Serialize};

/// One actor in the supervision tree, with its children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActorNode {
    /// The actor's own name, unique among its siblings (`ingestor`).
    pub name: String,
    /// Slash-separated path from the root (`node/ingest/ingestor`); what
    /// `POST /v1/actors/{path}/crash` takes.
    pub path: String,
    /// `supervisor` or `worker`.
    pub kind: String,
    /// What the actor is doing now.
    pub status: ActorStatus,
    /// How many times its supervisor has restarted it since the node started.
    pub restarts: u64,
    /// The most recent failure, if it ever failed.
    pub last_failure: Option<Failure>,
    /// Supervised children, in start order.
    #[schema(no_recursion)]
    pub children: Vec<ActorNode>,
}

impl ActorNode {
    /// Finds the node at `path` in this subtree.
    pub fn find(&self, path: &str) -> Option<&ActorNode> {
        if self.path == path {
            return Some(self);
        }
        self.children.iter().find_map(|child| child.find(path))
    }
}

/// Lifecycle of a supervised actor as its supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorStatus {
    /// Started and handling messages.
    Running,
    /// Failed; its supervisor restarts it after the backoff delay.
    Restarting,
    /// Stopped on purpose and not coming back.
    Stopped,
}

/// Why and when an actor last failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Failure {
    /// The panic message or handler error.
    pub reason: String,
    /// Wall-clock time of the failure, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Reply to `POST /v1/actors/{path}/crash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Crashed {
    /// The actor crashed.
    pub path: String,
    /// Always true: its supervisor was told.
    pub crashed: bool,
}
