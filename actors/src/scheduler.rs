//! The scheduler's task table: every task this node owns, through its life.
//!
//! `pending → queued → running → succeeded | failed | cancelled | timed_out`,
//! with `retrying` between attempts. A submission is durable (flushed) before
//! it is acknowledged; later transitions are written without waiting for the
//! disk, so a hard kill may forget the last few — on restart the table
//! re-queues every unfinished task, and an attempt that was running is
//! marked `interrupted` and run again: delivery is at-least-once.
//!
//! Attempts run on the worker pool (`node/scheduler/workers`, a ractor
//! factory) and report back with `AttemptStarted` / `AttemptDone`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::factory::{FactoryMessage, Job};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use troupe_protocol::{Attempt, SubmitTask, TaskAccepted, TaskRecord, TaskState};

use crate::directory::ActorDirectory;
use crate::store::{Inserted, Storage, StoreError, TaskStore};
use crate::supervisor::FaultInjection;
use crate::tasks::kinds;
use crate::tasks::worker::{AttemptReport, Outcome, TaskJob};
use crate::tree::WORKERS;

/// Longest accepted idempotency key, in bytes.
const MAX_KEY_LEN: usize = 256;
/// Longest accepted per-attempt timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most retries a task may ask for.
const MAX_RETRIES: u32 = 100;
/// Largest worker pool.
pub const MAX_WORKERS: usize = 256;
/// How often tasks that could not reach the pool are offered again.
const DISPATCH_RETRY: Duration = Duration::from_millis(100);

/// Why a request to the table failed.
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
    /// No task with that id.
    #[error("no task {0}")]
    NotFound(String),
    /// The task already finished.
    #[error("task {id} already finished ({state:?})")]
    Finished {
        /// The task.
        id: String,
        /// Its terminal state.
        state: TaskState,
    },
    /// The store failed; the request was not carried out.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Messages the task table handles.
pub enum SchedulerMsg {
    /// Validate and durably record a task, then queue it.
    Submit(
        SubmitTask,
        RpcReplyPort<Result<TaskAccepted, SchedulerError>>,
    ),
    /// Look a task up by id.
    Get(
        String,
        RpcReplyPort<Result<Option<TaskRecord>, SchedulerError>>,
    ),
    /// Cancel a task, running or not.
    Cancel(String, RpcReplyPort<Result<TaskRecord, SchedulerError>>),
    /// A worker began an attempt.
    AttemptStarted {
        /// Task id.
        id: String,
        /// Attempt number.
        attempt: u32,
    },
    /// An attempt ended.
    AttemptDone {
        /// Task id.
        id: String,
        /// Attempt number.
        attempt: u32,
        /// How.
        outcome: Outcome,
    },
    /// A retry's backoff ran out.
    Requeue(String),
    /// Offer tasks that could not reach the pool again.
    DispatchBacklog,
    /// Resize the worker pool.
    SetWorkers(usize, RpcReplyPort<Result<usize, SchedulerError>>),
    /// The worker pool's size.
    Workers(RpcReplyPort<usize>),
    /// Panic with this reason.
    InjectedFault(String),
}

impl FaultInjection for SchedulerMsg {
    fn injected_fault(reason: String) -> Self {
        SchedulerMsg::InjectedFault(reason)
    }
}

/// The task-table actor.
#[derive(Clone)]
pub struct Scheduler {
    /// This node's id: the owner of tasks submitted here.
    pub node_id: Arc<str>,
    /// Where the task table lives.
    pub storage: Arc<dyn Storage>,
    /// Finds the worker pool and this actor's own current incarnation.
    pub directory: ActorDirectory,
    /// Worker pool size, shared with the pool's spec so a restarted pool
    /// comes back at the size last asked for.
    pub workers: Arc<AtomicUsize>,
}

struct Active {
    record: TaskRecord,
    cancel: CancellationToken,
    queued_at: Instant,
}

/// The table's state: its store and the tasks not yet finished.
pub struct SchedulerState {
    tasks: Arc<dyn TaskStore>,
    active: HashMap<String, Active>,
    backlog: VecDeque<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn count(event: &'static str) {
    metrics::counter!("troupe_tasks_total", "event" => event).increment(1);
}

fn validate(task: &SubmitTask) -> Result<(), SchedulerError> {
    let invalid = |field: &str, reason: String| SchedulerError::Invalid {
        field: field.to_owned(),
        reason,
    };
    if task.kind.is_empty() {
        return Err(invalid("kind", "must not be empty".into()));
    }
    kinds::validate(&task.kind, &task.input)
        .map_err(|(field, reason)| SchedulerError::Invalid { field, reason })?;
    if let Some(key) = &task.key {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(invalid("key", format!("must be 1 to {MAX_KEY_LEN} bytes")));
        }
    }
    let max_timeout = MAX_TIMEOUT.as_millis() as u64;
    if task.timeout_ms.is_some_and(|t| t == 0 || t > max_timeout) {
        return Err(invalid(
            "timeout_ms",
            format!("must be from 1 to {max_timeout}"),
        ));
    }
    if task.max_retries > MAX_RETRIES {
        return Err(invalid(
            "max_retries",
            format!("must be at most {MAX_RETRIES}"),
        ));
    }
    if task.backoff.initial_ms > task.backoff.max_ms {
        return Err(invalid(
            "backoff.initial_ms",
            "must not exceed backoff.max_ms".into(),
        ));
    }
    Ok(())
}

/// Full-jitter exponential backoff before attempt `next` (2 for the first retry).
fn retry_delay(record: &TaskRecord, next: u32) -> Duration {
    let doublings = next.saturating_sub(2).min(30);
    let cap = record
        .backoff
        .initial_ms
        .saturating_mul(1u64 << doublings)
        .min(record.backoff.max_ms);
    Duration::from_millis(fastrand::u64(0..=cap))
}

impl Scheduler {
    fn pool(&self) -> Option<ActorRef<FactoryMessage<String, TaskJob>>> {
        self.directory.get(WORKERS)
    }

    /// Sends the next attempt of task `id` to the pool, or to the backlog.
    fn dispatch(&self, state: &mut SchedulerState, id: String) {
        let Some(active) = state.active.get_mut(&id) else {
            return;
        };
        let Some(pool) = self.pool() else {
            state.backlog.push_back(id);
            return;
        };
        active.record.state = TaskState::Queued;
        active.cancel = CancellationToken::new();
        active.queued_at = Instant::now();
        let attempt = active.record.attempts.len() as u32 + 1;
        let job = TaskJob {
            kind: active.record.kind.clone(),
            input: active.record.input.clone(),
            priority: active.record.priority,
            timeout: active.record.timeout_ms.map(Duration::from_millis),
            cancel: active.cancel.clone(),
            report: Some(AttemptReport::new(
                self.directory.clone(),
                id.clone(),
                attempt,
            )),
        };
        if pool.dispatch_job(Job::new(id.clone(), job)).is_err() {
            state.backlog.push_back(id);
        }
    }

    fn submit(
        &self,
        state: &mut SchedulerState,
        task: SubmitTask,
    ) -> Result<TaskAccepted, SchedulerError> {
        validate(&task)?;
        let id = uuid::Uuid::now_v7().to_string();
        let record = TaskRecord {
            key: task.key.unwrap_or_else(|| id.clone()),
            id,
            kind: task.kind,
            input: task.input,
            priority: task.priority,
            state: TaskState::Pending,
            owner: self.node_id.to_string(),
            submitted_at_ms: now_ms(),
            timeout_ms: task.timeout_ms,
            max_retries: task.max_retries,
            backoff: task.backoff,
            attempts: Vec::new(),
            result: None,
            error: None,
            finished_at_ms: None,
        };
        match state.tasks.insert_new(&record)? {
            Inserted::Existing(existing) => Ok(TaskAccepted {
                id: existing.id,
                owner: existing.owner,
                created: false,
            }),
            Inserted::Created => {
                count("submitted");
                let accepted = TaskAccepted {
                    id: record.id.clone(),
                    owner: record.owner.clone(),
                    created: true,
                };
                let id = record.id.clone();
                state.active.insert(
                    id.clone(),
                    Active {
                        record,
                        cancel: CancellationToken::new(),
                        queued_at: Instant::now(),
                    },
                );
                self.dispatch(state, id);
                Ok(accepted)
            }
        }
    }

    fn get(&self, state: &SchedulerState, id: &str) -> Result<Option<TaskRecord>, SchedulerError> {
        match state.active.get(id) {
            Some(active) => Ok(Some(active.record.clone())),
            None => Ok(state.tasks.get(id)?),
        }
    }

    fn cancel(&self, state: &mut SchedulerState, id: &str) -> Result<TaskRecord, SchedulerError> {
        let Some(active) = state.active.get_mut(id) else {
            return match state.tasks.get(id)? {
                Some(record) => Err(SchedulerError::Finished {
                    id: id.to_owned(),
                    state: record.state,
                }),
                None => Err(SchedulerError::NotFound(id.to_owned())),
            };
        };
        if active.record.state == TaskState::Cancelled {
            return Ok(active.record.clone());
        }
        let running = active.record.state == TaskState::Running;
        active.cancel.cancel();
        active.record.state = TaskState::Cancelled;
        active.record.error = Some("cancelled on request".into());
        active.record.finished_at_ms = Some(now_ms());
        let record = active.record.clone();
        state.tasks.put(&record)?;
        count("cancelled");
        // A running attempt still reports back; keep it until it does.
        if !running {
            state.active.remove(id);
        }
        Ok(record)
    }

    fn attempt_started(&self, state: &mut SchedulerState, id: &str, attempt: u32) {
        let Some(active) = state.active.get_mut(id) else {
            return;
        };
        if active.record.state != TaskState::Queued
            || attempt != active.record.attempts.len() as u32 + 1
        {
            return;
        }
        metrics::histogram!("troupe_task_queue_wait_seconds")
            .record(active.queued_at.elapsed().as_secs_f64());
        active.record.state = TaskState::Running;
        active.record.attempts.push(Attempt {
            number: attempt,
            node: self.node_id.to_string(),
            started_at_ms: now_ms(),
            finished_at_ms: None,
            outcome: None,
        });
        if let Err(e) = state.tasks.put(&active.record) {
            tracing::warn!(task = %id, "could not record start: {e}");
        }
    }

    fn attempt_done(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
        id: &str,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<(), StoreError> {
        let Some(active) = state.active.get_mut(id) else {
            return Ok(());
        };
        let record = &mut active.record;
        // Reports of earlier attempts (before a restart of this table) are stale.
        if attempt != record.attempts.len() as u32 {
            return Ok(());
        }
        let finished = now_ms();
        if let Some(last) = record.attempts.last_mut() {
            let ran = finished.saturating_sub(last.started_at_ms);
            metrics::histogram!("troupe_task_run_seconds").record(ran as f64 / 1000.0);
            last.finished_at_ms = Some(finished);
            last.outcome = Some(match &outcome {
                Outcome::Succeeded(_) => "succeeded".into(),
                Outcome::Failed(e) => format!("failed: {e}"),
                Outcome::Crashed(e) => format!("crashed: {e}"),
                Outcome::TimedOut => "timed_out".into(),
                Outcome::Cancelled => "cancelled".into(),
            });
        }
        let retry = match outcome {
            _ if record.state == TaskState::Cancelled => None,
            Outcome::Succeeded(value) => {
                record.state = TaskState::Succeeded;
                record.result = Some(value);
                count("succeeded");
                None
            }
            Outcome::Cancelled => {
                record.state = TaskState::Cancelled;
                None
            }
            Outcome::Failed(error) | Outcome::Crashed(error) => Some((TaskState::Failed, error)),
            Outcome::TimedOut => Some((
                TaskState::TimedOut,
                format!("attempt ran past {} ms", record.timeout_ms.unwrap_or(0)),
            )),
        };
        if let Some((terminal, error)) = retry {
            record.error = Some(error);
            if attempt <= record.max_retries {
                record.state = TaskState::Retrying;
                count("retried");
                let delay = retry_delay(record, attempt + 1);
                state.tasks.put(record)?;
                let id = id.to_owned();
                myself.send_after(delay, move || SchedulerMsg::Requeue(id));
                return Ok(());
            }
            record.state = terminal;
            count(if terminal == TaskState::TimedOut {
                "timed_out"
            } else {
                "failed"
            });
        }
        record.finished_at_ms.get_or_insert(finished);
        state.tasks.put(record)?;
        state.active.remove(id);
        Ok(())
    }
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let tasks = self.storage.tasks()?;
        let mut state = SchedulerState {
            tasks: Arc::clone(&tasks),
            active: HashMap::new(),
            backlog: VecDeque::new(),
        };
        // Take back every unfinished task; attempts cut short run again.
        for mut record in tasks.unfinished()? {
            if let Some(last) = record.attempts.last_mut().filter(|a| a.outcome.is_none()) {
                last.outcome = Some("interrupted".into());
                last.finished_at_ms = Some(now_ms());
                metrics::counter!("troupe_task_duplicate_runs_total").increment(1);
            }
            let id = record.id.clone();
            state.active.insert(
                id.clone(),
                Active {
                    record,
                    cancel: CancellationToken::new(),
                    queued_at: Instant::now(),
                },
            );
            state.backlog.push_back(id);
        }
        if !state.backlog.is_empty() {
            tracing::info!(tasks = state.backlog.len(), "re-queueing unfinished tasks");
        }
        myself.send_interval(DISPATCH_RETRY, || SchedulerMsg::DispatchBacklog);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SchedulerMsg::Submit(task, reply) => {
                let _ = reply.send(self.submit(state, task));
            }
            SchedulerMsg::Get(id, reply) => {
                let _ = reply.send(self.get(state, &id));
            }
            SchedulerMsg::Cancel(id, reply) => {
                let _ = reply.send(self.cancel(state, &id));
            }
            SchedulerMsg::AttemptStarted { id, attempt } => {
                self.attempt_started(state, &id, attempt)
            }
            SchedulerMsg::AttemptDone {
                id,
                attempt,
                outcome,
            } => self.attempt_done(&myself, state, &id, attempt, outcome)?,
            SchedulerMsg::Requeue(id) => {
                if state
                    .active
                    .get(&id)
                    .is_some_and(|a| a.record.state == TaskState::Retrying)
                {
                    self.dispatch(state, id);
                }
            }
            SchedulerMsg::DispatchBacklog => {
                for id in std::mem::take(&mut state.backlog) {
                    self.dispatch(state, id);
                }
            }
            SchedulerMsg::SetWorkers(count, reply) => {
                let answer = if (1..=MAX_WORKERS).contains(&count) {
                    self.workers.store(count, Ordering::SeqCst);
                    if let Some(pool) = self.pool() {
                        let _ = pool.adjust_worker_pool(count);
                    }
                    tracing::info!(workers = count, "worker pool resized");
                    Ok(count)
                } else {
                    Err(SchedulerError::Invalid {
                        field: "count".into(),
                        reason: format!("must be from 1 to {MAX_WORKERS}"),
                    })
                };
                let _ = reply.send(answer);
            }
            SchedulerMsg::Workers(reply) => {
                let _ = reply.send(self.workers.load(Ordering::SeqCst));
            }
            SchedulerMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
        Ok(())
    }
}
