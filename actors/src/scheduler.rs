//! The scheduler: this node's task table.
//!
//! For now it validates submissions, applies idempotency keys and makes the
//! record durable before the HTTP layer acknowledges; queues, workers,
//! placement and replication build on this table (cluster issue).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use troupe_protocol::{SubmitTask, TaskAccepted, TaskRecord, TaskState};

use crate::plugins::is_builtin_kind;
use crate::store::{Inserted, Storage, StoreError, TaskStore};
use crate::supervisor::FaultInjection;

/// Why a submission or lookup failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SchedulerError {
    /// Input was wrong; `field` names it.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store failed; the submission was not acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Messages the scheduler handles.
pub enum SchedulerMsg {
    /// Validate and durably record a task.
    Submit(
        SubmitTask,
        RpcReplyPort<Result<TaskAccepted, SchedulerError>>,
    ),
    /// Look a task up by id.
    Get(
        String,
        RpcReplyPort<Result<Option<TaskRecord>, SchedulerError>>,
    ),
    /// Panic with this reason.
    InjectedFault(String),
}

impl FaultInjection for SchedulerMsg {
    fn injected_fault(reason: String) -> Self {
        SchedulerMsg::InjectedFault(reason)
    }
}

/// The scheduler actor.
#[derive(Clone)]
pub struct Scheduler {
    /// This node's id: the owner of tasks submitted here.
    pub node_id: Arc<str>,
    /// Where the task table lives.
    pub storage: Arc<dyn Storage>,
}

/// The scheduler's state: the task table it opened in `pre_start`.
pub struct SchedulerState {
    tasks: Arc<dyn TaskStore>,
}

/// Longest accepted idempotency key, in bytes.
const MAX_KEY_LEN: usize = 256;

fn validate(task: &SubmitTask) -> Result<(), SchedulerError> {
    let invalid = |field: &str, reason: String| SchedulerError::Invalid {
        field: field.to_owned(),
        reason,
    };
    if task.kind.is_empty() {
        return Err(invalid("kind", "must not be empty".into()));
    }
    if !is_builtin_kind(&task.kind) {
        return Err(invalid(
            "kind",
            format!("unknown task kind {:?}", task.kind),
        ));
    }
    if let Some(key) = &task.key {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(invalid("key", format!("must be 1 to {MAX_KEY_LEN} bytes")));
        }
    }
    Ok(())
}

impl SchedulerState {
    fn submit(&self, node_id: &str, task: SubmitTask) -> Result<TaskAccepted, SchedulerError> {
        validate(&task)?;
        let id = uuid::Uuid::now_v7().to_string();
        let record = TaskRecord {
            key: task.key.unwrap_or_else(|| id.clone()),
            id,
            kind: task.kind,
            input: task.input,
            priority: task.priority,
            state: TaskState::Pending,
            owner: node_id.to_owned(),
            submitted_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        Ok(match self.tasks.insert_new(&record)? {
            Inserted::Created => TaskAccepted {
                id: record.id,
                owner: record.owner,
                created: true,
            },
            Inserted::Existing(existing) => TaskAccepted {
                id: existing.id,
                owner: existing.owner,
                created: false,
            },
        })
    }
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SchedulerState {
            tasks: self.storage.tasks()?,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SchedulerMsg::Submit(task, reply) => {
                let _ = reply.send(state.submit(&self.node_id, task));
            }
            SchedulerMsg::Get(id, reply) => {
                let _ = reply.send(state.tasks.get(&id).map_err(SchedulerError::from));
            }
            SchedulerMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
        Ok(())
    }
}
