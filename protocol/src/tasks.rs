//! Task submission and task records (`POST /v1/tasks`, `GET /v1/tasks/{id}`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Task priority: critical > high > normal > low.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Runs last.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Ahead of normal work.
    High,
    /// Ahead of everything.
    Critical,
}

/// Body of `POST /v1/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    /// The plugin that runs the task (`sleep`, `echo`, …).
    pub kind: String,
    /// Plugin input, passed through as JSON.
    #[serde(default)]
    pub input: Value,
    /// Scheduling priority.
    #[serde(default)]
    pub priority: Priority,
    /// Idempotency key: the same key names the same task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Reply to an accepted submission (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAccepted {
    /// The task's id.
    pub id: String,
    /// The node that owns it.
    pub owner: String,
    /// False when the idempotency key named an existing task.
    pub created: bool,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted and durable, not yet queued.
    Pending,
    /// Waiting in a worker queue.
    Queued,
    /// On a worker now.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error after its retries.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

/// A task as stored and as served by `GET /v1/tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's id.
    pub id: String,
    /// Idempotency key (client-supplied or the id).
    pub key: String,
    /// The plugin that runs it.
    pub kind: String,
    /// Plugin input.
    pub input: Value,
    /// Scheduling priority.
    pub priority: Priority,
    /// Current state.
    pub state: TaskState,
    /// The node that owns it.
    pub owner: String,
    /// Submission time, ms since the Unix epoch.
    pub submitted_at_ms: u64,
}
