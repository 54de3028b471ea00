//! The scheduler's task table: every task this node owns, through its life.
//!
//! `pending → waiting(deps) → queued → running → succeeded | failed |
//! cancelled | timed_out`, with `retrying` between attempts. A task runs
//! only once every task it depends on succeeded; if one fails or times out
//! it fails, if one is cancelled it is cancelled, and so on down the chain.
//! The table writes a submission without flushing and queues it at once;
//! its caller flushes (one flush for all batches in flight, outside this
//! actor) and stores the replicas before it acknowledges. Later transitions
//! are written without waiting for the disk, so a hard kill may forget the
//! last few — on restart the table
//! re-queues every unfinished task, and an attempt that was running is
//! marked `interrupted` and run again: delivery is at-least-once.
//!
//! Attempts run on the worker pool (`node/scheduler/workers`, a ractor
//! factory) and report back with `AttemptStarted` / `AttemptDone`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::factory::{FactoryMessage, Job};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use semver::VersionReq;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use troupe_plugin::LoadedPlugin;
use troupe_protocol::wire::PlacedTask;
use troupe_protocol::{now_ms, Attempt, SubmitTask, TaskAccepted, TaskPage, TaskRecord, TaskState};

use crate::directory::ActorDirectory;
use crate::placement::{
    compatible, eligible, rendezvous_owner, replica_order, version_req, Catalogue,
};
use crate::plugins::PluginHost;
use crate::store::{Inserted, Storage, StoreError, TaskStore};
use crate::tasks::gauges::PoolGauges;
use crate::tasks::worker::{AttemptReport, Outcome, TaskJob};
use crate::tree::WORKERS;

/// Longest accepted idempotency key, in bytes.
const MAX_KEY_LEN: usize = 256;
/// Longest accepted per-attempt timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most retries a task may ask for.
const MAX_RETRIES: u32 = 100;
/// Most dependencies one task may have.
const MAX_DEPENDENCIES: usize = 100;
/// Most tasks in one batch submission.
pub const MAX_BATCH: usize = 10_000;
/// Largest page of `GET /v1/tasks`.
pub const MAX_PAGE: usize = 1_000;
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

/// Acceptances, one per submitted task in order, and the records created.
pub type Submitted = (Vec<TaskAccepted>, Vec<TaskRecord>);

/// Messages the task table handles.
pub enum SchedulerMsg {
    /// Validate and record tasks, then queue them. All are checked before
    /// any is written; `batch` prefixes error fields with `[i].`. The
    /// caller flushes the store before acknowledging.
    Submit {
        /// The tasks, with the ids they were placed under.
        tasks: Vec<PlacedTask>,
        /// Whether they came as an array.
        batch: bool,
        /// One acceptance per task, in order, and the records created
        /// (for the caller to replicate before acknowledging).
        reply: RpcReplyPort<Result<Submitted, SchedulerError>>,
    },
    /// A page of tasks in submission order.
    List {
        /// Cursor: the last id of the previous page.
        after: Option<String>,
        /// Only tasks in this state.
        state: Option<TaskState>,
        /// Page size.
        limit: usize,
        /// The page.
        reply: RpcReplyPort<Result<TaskPage, SchedulerError>>,
    },
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
    /// Re-examine a task that is not running: its backoff or `not_before`
    /// ran out, or it was just taken back after a restart.
    Ready(String),
    /// Offer tasks that could not reach the pool again.
    DispatchBacklog,
    /// Resize the worker pool.
    SetWorkers(usize, RpcReplyPort<Result<usize, SchedulerError>>),
    /// The worker pool's size.
    Workers(RpcReplyPort<Result<usize, SchedulerError>>),
    /// Panic with this reason.
    InjectedFault(String),
}

crate::fault_injection!(SchedulerMsg);

/// The task-table actor.
#[derive(Clone)]
pub struct Scheduler {
    /// This node's id: the owner of tasks submitted here.
    pub node_id: Arc<str>,
    /// Where the task table lives.
    pub storage: Arc<dyn Storage>,
    /// Finds the worker pool and this actor's own current incarnation.
    pub directory: ActorDirectory,
    /// The pool's figures; its size is shared with the pool's spec so a
    /// restarted pool comes back at the size last asked for.
    pub pool: Arc<PoolGauges>,
    /// The rest of the cluster, for replicas and rebalancing.
    pub cluster: ClusterLink,
    /// The plugins that check submissions' input.
    pub plugins: Arc<PluginHost>,
}

/// Queues a record for a node's replica store, without waiting.
pub type ReplicateFn = Arc<dyn Fn(&str, TaskRecord) + Send + Sync>;

/// What the table needs to know of the cluster.
#[derive(Clone)]
pub struct ClusterLink {
    /// Ids of the nodes that can own tasks, sorted.
    pub live: tokio::sync::watch::Receiver<Vec<String>>,
    /// Which plugins each of them runs.
    pub catalogue: tokio::sync::watch::Receiver<Catalogue>,
    /// Copies of each task record, owner included.
    pub replication: usize,
    /// Hands records to another node's replica store.
    pub replicate: ReplicateFn,
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
    /// Dependency id → tasks waiting for it.
    dependents: HashMap<String, Vec<String>>,
    /// Membership as last acted on.
    live: tokio::sync::watch::Receiver<Vec<String>>,
}

fn count(event: &'static str) {
    metrics::counter!("troupe_tasks_total", "event" => event).increment(1);
}

/// The version requirement a task puts on its plugin.
pub fn wanted_version(task: &SubmitTask) -> Result<Option<VersionReq>, SchedulerError> {
    version_req(task.version.as_deref()).map_err(|reason| SchedulerError::Invalid {
        field: "version".into(),
        reason,
    })
}

/// This node's plugin for `task`, if it runs the task's kind in a version
/// the task accepts.
pub fn local_plugin<'a>(
    task: &SubmitTask,
    plugins: &'a PluginHost,
) -> Result<Option<&'a Arc<LoadedPlugin>>, SchedulerError> {
    let wanted = wanted_version(task)?;
    Ok(plugins
        .get(&task.kind)
        .filter(|p| compatible(p.version(), wanted.as_ref())))
}

/// Checks a submission on its own (not its dependencies, which only the
/// owner can see), and its input if `plugin` — this node's plugin for its
/// kind — is given. Any node runs this before placing a task; the owner
/// runs it again with its plugin.
pub fn validate(task: &SubmitTask, plugin: Option<&LoadedPlugin>) -> Result<(), SchedulerError> {
    let invalid = |field: &str, reason: String| SchedulerError::Invalid {
        field: field.to_owned(),
        reason,
    };
    if task.kind.is_empty() {
        return Err(invalid("kind", "must not be empty".into()));
    }
    wanted_version(task)?;
    if let Some(plugin) = plugin {
        plugin
            .check(&task.input)
            .map_err(|e| SchedulerError::Invalid {
                field: e.field,
                reason: e.reason,
            })?;
    }
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
    if task.depends_on.len() > MAX_DEPENDENCIES {
        return Err(invalid(
            "depends_on",
            format!("at most {MAX_DEPENDENCIES} dependencies"),
        ));
    }
    Ok(())
}

/// Prefixes an input error's field with the task's index in a batch.
pub fn in_batch(err: SchedulerError, index: usize) -> SchedulerError {
    match err {
        SchedulerError::Invalid { field, reason } => SchedulerError::Invalid {
            field: format!("[{index}].{field}"),
            reason,
        },
        other => other,
    }
}

/// Prepares an unfinished record for a new owner or a new incarnation of
/// this table: an attempt that was running is over (`interrupted`; it will
/// run again, so it counts as a possible duplicate), and whatever the task
/// was doing, it is examined afresh.
fn take_back(record: &mut TaskRecord) {
    if let Some(last) = record.attempts.last_mut().filter(|a| a.outcome.is_none()) {
        last.outcome = Some("interrupted".into());
        last.finished_at_ms = Some(now_ms());
        metrics::counter!("troupe_task_duplicate_runs_total").increment(1);
    }
    if matches!(record.state, TaskState::Queued | TaskState::Running) {
        record.state = TaskState::Pending;
    }
}

impl SchedulerState {
    /// Makes `record` one of the tasks this table drives; returns its id.
    fn activate(&mut self, record: TaskRecord) -> String {
        let id = record.id.clone();
        self.active.insert(
            id.clone(),
            Active {
                record,
                cancel: CancellationToken::new(),
                queued_at: Instant::now(),
            },
        );
        id
    }
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

    /// The state of task `id` as far as this table knows.
    fn state_of(state: &SchedulerState, id: &str) -> Result<Option<TaskState>, StoreError> {
        match state.active.get(id) {
            Some(active) => Ok(Some(active.record.state)),
            None => Ok(state.tasks.get(id)?.map(|r| r.state)),
        }
    }

    fn check(&self, state: &SchedulerState, task: &SubmitTask) -> Result<(), SchedulerError> {
        let plugin = local_plugin(task, &self.plugins)?.ok_or_else(|| SchedulerError::Invalid {
            field: "kind".into(),
            reason: format!(
                "node {} does not run plugin {:?}{}",
                self.node_id,
                task.kind,
                task.version
                    .as_deref()
                    .map(|v| format!(" in a version matching {v}"))
                    .unwrap_or_default()
            ),
        })?;
        validate(task, Some(plugin))?;
        for (i, dep) in task.depends_on.iter().enumerate() {
            if Self::state_of(state, dep)?.is_none() {
                return Err(SchedulerError::Invalid {
                    field: format!("depends_on[{i}]"),
                    reason: format!("no task {dep}"),
                });
            }
        }
        Ok(())
    }

    fn submit(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
        tasks: Vec<PlacedTask>,
        batch: bool,
    ) -> Result<Submitted, SchedulerError> {
        if tasks.len() > MAX_BATCH {
            return Err(SchedulerError::Invalid {
                field: "(body)".into(),
                reason: format!("at most {MAX_BATCH} tasks per batch"),
            });
        }
        // Nothing is written unless every task is valid.
        for (i, placed) in tasks.iter().enumerate() {
            self.check(state, &placed.task)
                .map_err(|e| if batch { in_batch(e, i) } else { e })?;
        }
        let mut accepted = Vec::with_capacity(tasks.len());
        let mut created = Vec::new();
        for PlacedTask { id, task } in tasks {
            let record = TaskRecord::from_submission(id, task, self.node_id.to_string(), now_ms());
            match state.tasks.insert_new(&record)? {
                Inserted::Existing(existing) => accepted.push(TaskAccepted {
                    id: existing.id,
                    owner: existing.owner,
                    created: false,
                }),
                Inserted::Created => {
                    accepted.push(TaskAccepted {
                        id: record.id.clone(),
                        owner: record.owner.clone(),
                        created: true,
                    });
                    created.push(record);
                }
            }
        }
        for record in created.clone() {
            count("submitted");
            let id = state.activate(record);
            self.advance(myself, state, id)?;
        }
        Ok((accepted, created))
    }

    /// Copies `record` to the other nodes of its replica set, without waiting.
    fn replicate(&self, record: &TaskRecord) {
        let runners = self.placement(record);
        let live = self.cluster.live.borrow().clone();
        for node in replica_order(&record.key, &runners, &live)
            .into_iter()
            .take(self.cluster.replication)
            .filter(|n| *n != &*self.node_id)
        {
            (self.cluster.replicate)(node, record.clone());
        }
    }

    /// The live nodes that could run `record`: its owner and replicas
    /// come from these, in rendezvous order.
    fn placement(&self, record: &TaskRecord) -> Vec<String> {
        let live = self.cluster.live.borrow().clone();
        // Checked at submission: a record's requirement parses.
        let wanted = version_req(record.version.as_deref()).ok().flatten();
        let own = (&*self.node_id, self.plugins.version_of(&record.kind));
        eligible(
            &live,
            &self.cluster.catalogue.borrow(),
            own,
            &record.kind,
            wanted.as_ref(),
        )
    }

    /// After a membership change: adopt the tasks whose owner is gone and
    /// for which this node is now first in line. Unfinished ones are run;
    /// finished ones only change owner, so that this node lists and
    /// answers for them.
    fn adopt_orphans(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), StoreError> {
        let live = state.live.borrow_and_update().clone();
        if !live.iter().any(|n| n == &*self.node_id) {
            // Not yet (or no longer) part of the view: adopt nothing.
            return Ok(());
        }
        let mut adopted = 0;
        let me = &*self.node_id;
        let orphans = state.tasks.matching(&|record| {
            !live.contains(&record.owner)
                && rendezvous_owner(&record.key, &self.placement(record)) == Some(me)
        })?;
        for mut record in orphans {
            record.owner = me.to_owned();
            if record.state.is_terminal() {
                state.tasks.put(&record)?;
                continue;
            }
            tracing::info!(task = %record.id, "adopting task of a departed node");
            take_back(&mut record);
            state.tasks.put(&record)?;
            self.replicate(&record);
            let id = state.activate(record);
            self.advance(myself, state, id)?;
            adopted += 1;
        }
        if adopted > 0 {
            metrics::counter!("troupe_tasks_adopted_total").increment(adopted);
            tracing::info!(adopted, "re-queued tasks of departed nodes");
        }
        Ok(())
    }

    /// Moves a task that is not running on: waits for its dependencies,
    /// settles it if one of them failed, holds it until `not_before_ms`,
    /// or queues it.
    fn advance(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
        id: String,
    ) -> Result<(), StoreError> {
        let Some(active) = state.active.get(&id) else {
            return Ok(());
        };
        let depends_on = active.record.depends_on.clone();
        let not_before = active.record.not_before_ms;
        let mut unfinished = Vec::new();
        for dep in &depends_on {
            match Self::state_of(state, dep)? {
                Some(TaskState::Succeeded) => {}
                Some(dep_state) if dep_state.is_terminal() => {
                    let (terminal, verb) = if dep_state == TaskState::Cancelled {
                        (TaskState::Cancelled, "was cancelled")
                    } else {
                        (TaskState::Failed, "did not succeed")
                    };
                    if let Some(active) = state.active.get_mut(&id) {
                        active.record.state = terminal;
                        active.record.error = Some(format!("dependency {dep} {verb}"));
                    }
                    count(if terminal == TaskState::Cancelled {
                        "cancelled"
                    } else {
                        "failed"
                    });
                    return self.finish(myself, state, &id);
                }
                Some(_) => unfinished.push(dep.clone()),
                None => {
                    if let Some(active) = state.active.get_mut(&id) {
                        active.record.state = TaskState::Failed;
                        active.record.error = Some(format!("dependency {dep} does not exist"));
                    }
                    count("failed");
                    return self.finish(myself, state, &id);
                }
            }
        }
        if !unfinished.is_empty() {
            for dep in unfinished {
                let waiting = state.dependents.entry(dep).or_default();
                if !waiting.contains(&id) {
                    waiting.push(id.clone());
                }
            }
            if let Some(active) = state.active.get_mut(&id) {
                if active.record.state != TaskState::Waiting {
                    active.record.state = TaskState::Waiting;
                    state.tasks.put(&active.record)?;
                }
            }
            return Ok(());
        }
        let now = now_ms();
        if let Some(at) = not_before.filter(|&at| at > now) {
            if let Some(active) = state.active.get_mut(&id) {
                active.record.state = TaskState::Pending;
            }
            myself.send_after(Duration::from_millis(at - now), move || {
                SchedulerMsg::Ready(id)
            });
            return Ok(());
        }
        self.dispatch(state, id);
        Ok(())
    }

    /// Settles a task whose record is terminal: stores it, forgets it, and
    /// re-examines the tasks waiting for it.
    fn finish(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
        id: &str,
    ) -> Result<(), StoreError> {
        if let Some(mut active) = state.active.remove(id) {
            active.record.finished_at_ms.get_or_insert_with(now_ms);
            state.tasks.put(&active.record)?;
            self.replicate(&active.record);
        }
        for dependent in state.dependents.remove(id).unwrap_or_default() {
            self.advance(myself, state, dependent)?;
        }
        Ok(())
    }

    fn get(&self, state: &SchedulerState, id: &str) -> Result<Option<TaskRecord>, SchedulerError> {
        match state.active.get(id) {
            Some(active) => Ok(Some(active.record.clone())),
            None => Ok(state.tasks.get(id)?),
        }
    }

    fn cancel(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
        id: &str,
    ) -> Result<TaskRecord, SchedulerError> {
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
        // A running attempt still reports back; it is settled then.
        if !running {
            self.finish(myself, state, id)?;
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
        self.replicate(&active.record);
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
                myself.send_after(delay, move || SchedulerMsg::Ready(id));
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
        self.finish(myself, state, id)
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
            dependents: HashMap::new(),
            live: self.cluster.live.clone(),
        };
        // The first tick looks for orphans whatever the view is now.
        state.live.mark_changed();
        // Take back every unfinished task; attempts cut short run again.
        // (Replicas of others' tasks: their owner runs them, or a rebalance
        // adopts them.)
        let me = &*self.node_id;
        for mut record in tasks.matching(&|r| !r.state.is_terminal() && r.owner == me)? {
            take_back(&mut record);
            let id = state.activate(record);
            let _ = myself.send_message(SchedulerMsg::Ready(id));
        }
        if !state.active.is_empty() {
            tracing::info!(tasks = state.active.len(), "taking back unfinished tasks");
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
            SchedulerMsg::Submit {
                tasks,
                batch,
                reply,
            } => {
                let _ = reply.send(self.submit(&myself, state, tasks, batch));
            }
            SchedulerMsg::List {
                after,
                state: wanted,
                limit,
                reply,
            } => {
                let page = state
                    .tasks
                    .page(
                        after.as_deref(),
                        wanted,
                        Some(&self.node_id),
                        limit.clamp(1, MAX_PAGE),
                    )
                    .map(|(tasks, next_cursor)| TaskPage { tasks, next_cursor })
                    .map_err(SchedulerError::from);
                let _ = reply.send(page);
            }
            SchedulerMsg::Get(id, reply) => {
                let _ = reply.send(self.get(state, &id));
            }
            SchedulerMsg::Cancel(id, reply) => {
                let _ = reply.send(self.cancel(&myself, state, &id));
            }
            SchedulerMsg::AttemptStarted { id, attempt } => {
                self.attempt_started(state, &id, attempt)
            }
            SchedulerMsg::AttemptDone {
                id,
                attempt,
                outcome,
            } => self.attempt_done(&myself, state, &id, attempt, outcome)?,
            SchedulerMsg::Ready(id) => {
                let idle = state.active.get(&id).is_some_and(|a| {
                    matches!(
                        a.record.state,
                        TaskState::Pending | TaskState::Waiting | TaskState::Retrying
                    )
                });
                if idle {
                    self.advance(&myself, state, id)?;
                }
            }
            SchedulerMsg::DispatchBacklog => {
                for id in std::mem::take(&mut state.backlog) {
                    self.dispatch(state, id);
                }
                if state.live.has_changed().unwrap_or(false) {
                    self.adopt_orphans(&myself, state)?;
                }
            }
            SchedulerMsg::SetWorkers(count, reply) => {
                let answer = if (1..=MAX_WORKERS).contains(&count) {
                    self.pool.set_size(count);
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
                let _ = reply.send(Ok(self.pool.size()));
            }
            SchedulerMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
        Ok(())
    }
}
