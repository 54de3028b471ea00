//! Recurring tasks: `POST /v1/schedules` and what `GET` gives back.

use serde::{Deserialize, Serialize};

use crate::SubmitTask;

/// Body of `POST /v1/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "tick", "cron": "*/5 * * * *", "task": {"kind": "echo", "input": {"n": 1}}}))]
pub struct CreateSchedule {
    /// A label for people; not unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Cron expression in UTC: five fields (minute first) or six (second
    /// first), e.g. `*/5 * * * *` or `*/10 * * * * *`.
    pub cron: String,
    /// The task submitted at every tick.
    pub task: SubmitTask,
}

/// A schedule as stored on each of the nodes that hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleRecord {
    /// Schedule id.
    pub id: String,
    /// A label for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Cron expression (UTC).
    pub cron: String,
    /// The task submitted at every tick.
    pub task: SubmitTask,
    /// The nodes holding a copy, in rendezvous order: the first live one
    /// fires it.
    pub holders: Vec<String>,
    /// When it was created, ms since the Unix epoch.
    pub created_at_ms: u64,
}

/// A schedule as `GET /v1/schedules` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleStatus {
    /// The schedule.
    #[serde(flatten)]
    pub record: ScheduleRecord,
    /// The node that fires it now (the first live holder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Next tick, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire_ms: Option<u64>,
    /// Last tick fired by the owner since it took the schedule over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired_ms: Option<u64>,
}
