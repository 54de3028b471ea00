//! Node-to-node messages: what travels on the cluster transport.
//!
//! Each connection opens with a [`Hello`]; then every frame (a 4-byte
//! big-endian length and a JSON body) is an [`Envelope`] whose `id` pairs a
//! request with its reply, so many requests share one connection.

use serde::{Deserialize, Serialize};

use crate::{
    ErrorBody, ScheduleRecord, ScheduleStatus, SubmitTask, TaskAccepted, TaskPage, TaskRecord,
    TaskState,
};

/// First bytes of every connection's hello.
pub const MAGIC: &str = "troupe-cluster";
/// Version of this protocol; peers must match.
pub const VERSION: u16 = 3;
/// Largest frame accepted.
pub const MAX_FRAME: usize = 64 << 20;

/// The first frame on a connection, from the connecting side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: String,
    /// The sender's [`VERSION`].
    pub version: u16,
    /// The sender's cluster name; other clusters are refused.
    pub cluster: String,
    /// The sender's node id.
    pub node: String,
    /// When it was sent, ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// Fresh for each connection.
    pub nonce: String,
    /// HMAC-SHA256 (hex), keyed by the cluster secret, over cluster, node,
    /// send time and nonce.
    pub proof: String,
}

/// A request or reply with its correlation id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Pairs a reply with its request.
    pub id: u64,
    /// The message.
    pub body: T,
}

/// A task whose id the receiving node was chosen to own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedTask {
    /// Id assigned by the node that took the submission.
    pub id: String,
    /// The submission.
    pub task: SubmitTask,
}

/// What one node asks another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PeerRequest {
    /// Own these tasks: record, replicate, queue, then acknowledge.
    Submit {
        /// Tasks placed on the receiver.
        tasks: Vec<PlacedTask>,
    },
    /// Keep these records as a replica (durably, before replying).
    Store {
        /// Task records, new or updated.
        records: Vec<TaskRecord>,
    },
    /// Keep these later states of records as a replica, without flushing:
    /// the owner does not flush its own copy of them either.
    Update {
        /// Task records, latest state of each.
        records: Vec<TaskRecord>,
    },
    /// The receiver's copy of a task, if any.
    Get {
        /// Task id.
        id: String,
    },
    /// A page of the tasks the receiver owns.
    List {
        /// Ids after this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        /// Only tasks in this state.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<TaskState>,
        /// Page size.
        limit: usize,
    },
    /// Cancel a task the receiver owns.
    Cancel {
        /// Task id.
        id: String,
    },
    /// Hold a copy of this schedule (durably, before replying).
    PutSchedule {
        /// The schedule.
        record: Box<ScheduleRecord>,
    },
    /// Forget this schedule if held.
    DeleteSchedule {
        /// Schedule id.
        id: String,
    },
    /// The schedules the receiver holds.
    ListSchedules,
}

/// What the other node answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum PeerReply {
    /// Submissions acknowledged, one per task in order.
    Accepted {
        /// The acceptances.
        accepted: Vec<TaskAccepted>,
    },
    /// Records stored.
    Stored,
    /// A page of tasks.
    Page {
        /// The page.
        page: TaskPage,
    },
    /// Schedules held.
    Schedules {
        /// What the receiver holds.
        schedules: Vec<ScheduleStatus>,
    },
    /// Whether a deleted schedule was held.
    Deleted {
        /// It was held and is gone now.
        found: bool,
    },
    /// A task lookup's answer.
    Task {
        /// The record, if the receiver has one.
        record: Option<Box<TaskRecord>>,
    },
    /// The request failed, with the HTTP status it maps to.
    Error {
        /// HTTP status a client would get.
        status: u16,
        /// The error body.
        body: ErrorBody,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_listings_cross_the_wire_whole() {
        let status = ScheduleStatus {
            record: ScheduleRecord {
                id: "s".into(),
                name: None,
                cron: "* * * * *".into(),
                task: SubmitTask::default(),
                holders: vec!["n1".into()],
                created_at_ms: 1,
            },
            owner: Some("n1".into()),
            next_fire_ms: Some(2),
            last_fired_ms: None,
        };
        let reply = PeerReply::Schedules {
            schedules: vec![status],
        };
        let bytes = serde_json::to_vec(&reply).expect("encode");
        let back: PeerReply = serde_json::from_slice(&bytes).expect("decode");
        assert_eq!(back, reply);
    }
}
