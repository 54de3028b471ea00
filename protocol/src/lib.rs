//! Every type that crosses a Troupe process boundary.
//!
//! HTTP request and reply bodies, and the one error body every endpoint uses,
//! live here so that the node, the CLI and the black-box tests agree on one
//! shape. This crate is a leaf: serde only, no I/O, no actors.
#![deny(missing_docs)]

pub mod actors;
pub mod alerts;
pub mod cluster;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod health;
pub mod payload;
pub mod pipelines;
pub mod plugins;
pub mod schedules;
pub mod tasks;
pub mod wire;

pub use actors::{ActorNode, ActorStatus, Crashed, Failure};
pub use cluster::{ClusterView, Member, MemberState};
pub use error::ErrorBody;
pub use events::{Event, EventIn, EventPage, EventTime, IngestReply, IngestStats, Retention};
pub use health::{Health, Readiness, SinkHealth};
pub use payload::Payload;
pub use pipelines::{
    AggregateOp, AggregateSpec, Checkpointed, OpenWindows, PipelineSpec, ResultPage, TransformSpec,
    Watermarks, WindowResult, WindowSpec,
};
pub use plugins::{NodePlugins, PluginId, PluginInfo, PluginList, PluginMetrics};
pub use schedules::{CreateSchedule, ScheduleRecord, ScheduleStatus};
pub use tasks::{
    Attempt, Backoff, Priority, SubmitTask, TaskAccepted, TaskPage, TaskRecord, TaskState, Workers,
};

/// Wall-clock now, in ms since the Unix epoch: the unit of every `*_ms`
/// time in these types.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
