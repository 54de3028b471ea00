//! Task submission and task records (`POST /v1/tasks`, `GET /v1/tasks/{id}`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Task priority: critical > high > normal > low.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
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

/// Body of `POST /v1/tasks`. (`Default` is for building one in code; over
/// the wire `kind` is still required.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"kind": "echo", "input": {"n": 1}, "priority": "high"}))]
pub struct SubmitTask {
    /// The plugin that runs the task (`sleep`, `echo`, …).
    pub kind: String,
    /// Versions of the plugin the task accepts, as a semver requirement
    /// (`^1.2`, `>=2, <3`); any version if absent. Placed only on nodes
    /// whose plugin matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Plugin input, passed through as JSON.
    #[serde(default)]
    pub input: Value,
    /// Scheduling priority.
    #[serde(default)]
    pub priority: Priority,
    /// Idempotency key: the same key names the same task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Longest one attempt may run before it is stopped as timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Further attempts after a failed, crashed or timed-out one.
    #[serde(default)]
    pub max_retries: u32,
    /// Delay between attempts.
    #[serde(default)]
    pub backoff: Backoff,
    /// Ids of tasks that must succeed before this one runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Do not start before this time, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
}

/// Exponential backoff with full jitter between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// Upper bound of the first delay.
    pub initial_ms: u64,
    /// Upper bound of any delay.
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_ms: 100,
            max_ms: 10_000,
        }
    }
}

/// Body of `PUT /v1/workers`, and reply of `GET /v1/workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Workers {
    /// Number of workers in this node's pool.
    pub count: usize,
}

/// Reply to an accepted submission (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskAccepted {
    /// The task's id.
    pub id: String,
    /// The node that owns it.
    pub owner: String,
    /// False when the idempotency key named an existing task.
    pub created: bool,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted and durable, not yet queued (or held until `not_before_ms`).
    Pending,
    /// Waiting for the tasks it depends on to succeed.
    Waiting,
    /// Waiting in a worker queue.
    Queued,
    /// On a worker now.
    Running,
    /// An attempt failed; waiting out the backoff before the next.
    Retrying,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error after its retries.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
    /// Its last attempt ran past `timeout_ms`.
    TimedOut,
}

impl TaskState {
    /// Whether the task is finished for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::TimedOut
        )
    }
}

/// One attempt at running a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// The node that ran it.
    pub node: String,
    /// When it started, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// When it ended, if it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// How it ended: `succeeded`, `failed: …`, `crashed: …`, `timed_out`,
    /// `cancelled`, `interrupted` (the node stopped under it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// A task as stored and as served by `GET /v1/tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskRecord {
    /// The task's id.
    pub id: String,
    /// Idempotency key (client-supplied or the id).
    pub key: String,
    /// The plugin that runs it.
    pub kind: String,
    /// Plugin versions it accepts (semver requirement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
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
    /// Per-attempt timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Further attempts allowed after the first.
    #[serde(default)]
    pub max_retries: u32,
    /// Delay between attempts.
    #[serde(default)]
    pub backoff: Backoff,
    /// Every attempt so far, oldest first.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// The plugin's output, once succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it failed, timed out or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it reached its terminal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// Tasks that must succeed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Earliest start, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
}

impl TaskRecord {
    /// A task as first recorded: `pending`, no attempts yet. A submission
    /// without an idempotency key is keyed by its id.
    pub fn from_submission(
        id: String,
        task: SubmitTask,
        owner: String,
        submitted_at_ms: u64,
    ) -> Self {
        Self {
            key: task.key.unwrap_or_else(|| id.clone()),
            id,
            kind: task.kind,
            version: task.version,
            input: task.input,
            priority: task.priority,
            state: TaskState::Pending,
            owner,
            submitted_at_ms,
            timeout_ms: task.timeout_ms,
            max_retries: task.max_retries,
            backoff: task.backoff,
            attempts: Vec::new(),
            result: None,
            error: None,
            finished_at_ms: None,
            depends_on: task.depends_on,
            not_before_ms: task.not_before_ms,
        }
    }
}

/// A page of `GET /v1/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskPage {
    /// Tasks in submission order.
    pub tasks: Vec<TaskRecord>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
