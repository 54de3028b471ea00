//! Tasks across the cluster: placement, forwarding, replication, lookups.
//!
//! Any node takes a submission: it checks each task, gives it an id, ranks
//! the live nodes for its key (rendezvous hashing) and hands it to the
//! owner — itself or a peer. The owner records it, copies the record to the
//! next R-1 nodes of that order, and only then acknowledges: an
//! acknowledged task is durable on min(R, live) nodes. All of this runs in
//! request handlers, never inside the task table actor, so two tables never
//! wait on each other.

mod schedules;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use ractor::rpc::CallResult;
use ractor::ActorRef;
use tokio::sync::watch;
use troupe_actors::directory::ActorDirectory;
use troupe_actors::placement::{eligible, rendezvous_order, replica_order, version_on, Catalogue};
use troupe_actors::plugins::PluginHost;
use troupe_actors::scheduler::{
    in_batch, local_plugin, validate, wanted_version, SchedulerError, SchedulerMsg,
};
use troupe_actors::store::{StoreError, TaskStore};
use troupe_actors::tree::SCHEDULER;
use troupe_protocol::wire::{PeerReply, PeerRequest, PlacedTask};
use troupe_protocol::{SubmitTask, TaskAccepted, TaskPage, TaskRecord, TaskState};

use crate::http::{store_work, ApiError};
use crate::transport::Peers;

/// How long a peer may take to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the local task table may take to answer.
const TABLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a submission waits for a membership view at start-up.
const JOIN_WAIT: Duration = Duration::from_secs(5);

/// Routes task requests to the nodes that own the tasks.
pub struct TaskRouter {
    /// This node.
    pub node_id: Arc<str>,
    /// Copies of each record, owner included.
    pub replication: usize,
    /// Finds the local task table.
    pub directory: ActorDirectory,
    /// The other nodes.
    pub peers: Arc<Peers>,
    /// Live node ids, from membership.
    pub live: watch::Receiver<Vec<String>>,
    /// The plugins each live node runs, from membership.
    pub catalogue: watch::Receiver<Catalogue>,
    /// This node's plugins.
    pub plugins: Arc<PluginHost>,
    /// Where replica records are written (opened once, at start-up).
    pub store: Arc<dyn TaskStore>,
}

/// The nodes that can run each kind of task, worked out once per kind
/// and version requirement for a request.
pub(crate) struct Runners {
    live: Vec<String>,
    catalogue: Catalogue,
    me: Arc<str>,
    plugins: Arc<PluginHost>,
    known: HashMap<(String, Option<String>), Vec<String>>,
}

impl Runners {
    /// The live nodes that run `task`'s plugin in a version it accepts,
    /// in `live`'s order; a 422 naming `kind` or `version` if none does.
    pub(crate) fn of(&mut self, task: &SubmitTask) -> Result<&[String], SchedulerError> {
        let key = (task.kind.clone(), task.version.clone());
        if !self.known.contains_key(&key) {
            let wanted = wanted_version(task)?;
            let own = (&*self.me, self.plugins.version_of(&task.kind));
            let nodes = eligible(
                &self.live,
                &self.catalogue,
                own,
                &task.kind,
                wanted.as_ref(),
            );
            if nodes.is_empty() {
                return Err(self.none_for(task));
            }
            self.known.insert(key.clone(), nodes);
        }
        Ok(self.known.get(&key).map_or(&[], Vec::as_slice))
    }

    fn none_for(&self, task: &SubmitTask) -> SchedulerError {
        let own = (&*self.me, self.plugins.version_of(&task.kind));
        let versions: Vec<&str> = self
            .live
            .iter()
            .filter_map(|node| version_on(node, &self.catalogue, own, &task.kind))
            .collect();
        match (&task.version, versions.is_empty()) {
            (Some(wanted), false) => SchedulerError::Invalid {
                field: "version".into(),
                reason: format!(
                    "no live node runs plugin {:?} in a version matching {wanted} (live nodes run {})",
                    task.kind,
                    versions.join(", ")
                ),
            },
            _ => SchedulerError::Invalid {
                field: "kind".into(),
                reason: format!(
                    "no live node runs plugin {:?}; GET /v1/plugins lists the plugins",
                    task.kind
                ),
            },
        }
    }
}

fn table_error(err: SchedulerError) -> ApiError {
    match err {
        SchedulerError::Invalid { field, reason } => ApiError::invalid(field, reason),
        SchedulerError::NotFound(_) => ApiError::not_found(err.to_string()),
        SchedulerError::Finished { .. } => ApiError::conflict(err.to_string()),
        SchedulerError::Store(e) => ApiError::unavailable(e.to_string()),
    }
}

fn unexpected(node: &str) -> ApiError {
    ApiError::unavailable(format!("{node} gave an unexpected answer"))
}

/// Of several nodes' copies of a task, the owner's own; failing that (the
/// owner is gone) the most advanced: finished before unfinished, then the
/// one with more attempts. Replicas may lag behind the owner.
fn freshest(copies: impl Iterator<Item = (String, TaskRecord)>) -> Option<TaskRecord> {
    copies
        .max_by_key(|(node, record)| {
            (
                *node == record.owner,
                record.state.is_terminal(),
                record.attempts.len(),
            )
        })
        .map(|(_, record)| record)
}

impl TaskRouter {
    /// Whether this node knows who is alive: placement and replication
    /// need that, except in a cluster of one.
    pub fn joined(&self) -> bool {
        self.peers.is_empty() || !self.live.borrow().is_empty()
    }

    /// Live nodes; this node alone in a cluster of one, or while
    /// membership has no view (lookups only: submissions wait for one).
    fn live(&self) -> Vec<String> {
        let live = self.live.borrow().clone();
        if live.is_empty() {
            vec![self.node_id.to_string()]
        } else {
            live
        }
    }

    /// The live nodes to place on, waiting briefly for a first view: a task
    /// placed without one would be acknowledged without its replicas.
    async fn placement_view(&self) -> Result<Vec<String>, ApiError> {
        if !self.joined() {
            let mut live = self.live.clone();
            let joined = tokio::time::timeout(JOIN_WAIT, live.wait_for(|v| !v.is_empty())).await;
            if !matches!(joined, Ok(Ok(_))) {
                return Err(ApiError::unavailable(
                    "this node has not yet joined the cluster; nothing was acknowledged",
                ));
            }
        }
        Ok(self.live())
    }

    /// Where tasks can run, for one request over `live`: this node by the
    /// plugins it loaded, the others by what they gossip.
    pub(crate) fn runners(&self, live: Vec<String>) -> Runners {
        Runners {
            catalogue: self.catalogue.borrow().clone(),
            me: Arc::clone(&self.node_id),
            plugins: Arc::clone(&self.plugins),
            live,
            known: HashMap::new(),
        }
    }

    fn table(&self) -> Result<ActorRef<SchedulerMsg>, ApiError> {
        self.directory
            .get(SCHEDULER)
            .ok_or_else(|| ApiError::unavailable("the task table is restarting"))
    }

    /// Calls the local task table.
    pub async fn ask<T, F>(&self, build: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(ractor::RpcReplyPort<Result<T, SchedulerError>>) -> SchedulerMsg,
    {
        match self.table()?.call(build, Some(TABLE_TIMEOUT)).await {
            Ok(CallResult::Success(answer)) => answer.map_err(table_error),
            _ => Err(ApiError::unavailable("the task table did not answer")),
        }
    }

    async fn call(&self, node: &str, request: PeerRequest) -> Result<PeerReply, ApiError> {
        match self.peers.call(node, request, PEER_TIMEOUT).await {
            Ok(PeerReply::Error { status, body }) => Err(ApiError::from_parts(status, body)),
            Ok(reply) => Ok(reply),
            Err(e) => Err(ApiError::unavailable(e.to_string())),
        }
    }

    /// Asks `node` — this one too, through the handler peers use — so a
    /// request to every live node is one loop.
    async fn ask_node(&self, node: &str, request: PeerRequest) -> Result<PeerReply, ApiError> {
        if node != &*self.node_id {
            return self.call(node, request).await;
        }
        match self.handle_peer(request).await {
            PeerReply::Error { status, body } => Err(ApiError::from_parts(status, body)),
            reply => Ok(reply),
        }
    }

    /// Takes a submission on any node: checks, places, forwards, and
    /// answers once every task is durable on its replica set.
    pub async fn submit(
        &self,
        tasks: Vec<SubmitTask>,
        batch: bool,
    ) -> Result<Vec<TaskAccepted>, ApiError> {
        for (i, task) in tasks.iter().enumerate() {
            // Input is checked here when this node runs the plugin, and
            // by the owner in any case.
            local_plugin(task, &self.plugins)
                .and_then(|plugin| validate(task, plugin.map(|p| &**p)))
                .map_err(|e| if batch { in_batch(e, i) } else { e })
                .map_err(table_error)?;
        }
        let live = self.placement_view().await?;
        tracing::debug!(tasks = tasks.len(), ?live, "placing a submission");
        let mut runners = self.runners(live);
        for (i, task) in tasks.iter().enumerate() {
            runners
                .of(task)
                .map_err(|e| if batch { in_batch(e, i) } else { e })
                .map_err(table_error)?;
        }
        let mut groups: BTreeMap<String, Vec<(usize, PlacedTask)>> = BTreeMap::new();
        for (index, task) in tasks.into_iter().enumerate() {
            let id = uuid::Uuid::now_v7().to_string();
            let key = task.key.clone().unwrap_or_else(|| id.clone());
            let nodes = runners.of(&task).map_err(table_error)?;
            let owner = rendezvous_order(&key, nodes)
                .first()
                .map_or_else(|| self.node_id.to_string(), |o| (*o).to_owned());
            groups
                .entry(owner)
                .or_default()
                .push((index, PlacedTask { id, task }));
        }
        let total: usize = groups.values().map(Vec::len).sum();
        let calls = groups.into_iter().map(|(owner, group)| async move {
            let (indices, placed): (Vec<usize>, Vec<PlacedTask>) = group.into_iter().unzip();
            let accepted = if owner == *self.node_id {
                self.own(placed, batch).await
            } else {
                match self
                    .call(&owner, PeerRequest::Submit { tasks: placed })
                    .await?
                {
                    PeerReply::Accepted { accepted } => Ok(accepted),
                    _ => Err(unexpected(&owner)),
                }
            }?;
            Ok::<_, ApiError>(indices.into_iter().zip(accepted).collect::<Vec<_>>())
        });
        let mut ordered: Vec<Option<TaskAccepted>> = vec![None; total];
        for group in join_all(calls).await {
            for (index, accepted) in group? {
                ordered[index] = Some(accepted);
            }
        }
        Ok(ordered.into_iter().flatten().collect())
    }

    /// Records tasks placed on this node and replicates them.
    pub async fn own(
        &self,
        placed: Vec<PlacedTask>,
        batch: bool,
    ) -> Result<Vec<TaskAccepted>, ApiError> {
        let (accepted, created) = self
            .ask(|reply| SchedulerMsg::Submit {
                tasks: placed,
                batch,
                reply,
            })
            .await?;
        // Durable here and on the replicas before the acknowledgement.
        // Concurrent submissions share sled's flush.
        tokio::try_join!(
            self.on_store(|store| store.flush()),
            self.store_on_replicas(&created)
        )?;
        Ok(accepted)
    }

    /// The replica nodes of `record` other than this one.
    fn replicas_of(&self, key: &str, runners: &[String], live: &[String]) -> Vec<String> {
        replica_order(key, runners, live)
            .into_iter()
            .take(self.replication)
            .filter(|n| *n != &*self.node_id)
            .map(str::to_owned)
            .collect()
    }

    async fn store_on_replicas(&self, records: &[TaskRecord]) -> Result<(), ApiError> {
        let live = self.placement_view().await?;
        let mut runners = self.runners(live.clone());
        let mut by_node: BTreeMap<String, Vec<TaskRecord>> = BTreeMap::new();
        for record in records {
            // The nodes that could adopt it come first, in the order
            // placement used; then others, which only keep a copy.
            let task = SubmitTask {
                kind: record.kind.clone(),
                version: record.version.clone(),
                ..SubmitTask::default()
            };
            let nodes = runners.of(&task).map_err(table_error)?;
            for node in self.replicas_of(&record.key, nodes, &live) {
                by_node.entry(node).or_default().push(record.clone());
            }
        }
        let calls = by_node.into_iter().map(|(node, records)| async move {
            match self.call(&node, PeerRequest::Store { records }).await {
                Ok(PeerReply::Stored) => Ok(()),
                Ok(_) => Err(unexpected(&node)),
                Err(e) => Err(ApiError::unavailable(format!(
                    "recorded on {} but not on replica {node} ({e}); not acknowledged, resubmit with the same key",
                    self.node_id
                ))),
            }
        });
        join_all(calls).await.into_iter().collect()
    }

    async fn local(&self, id: &str) -> Result<Option<TaskRecord>, ApiError> {
        let id = id.to_owned();
        self.ask(|reply| SchedulerMsg::Get(id, reply)).await
    }

    async fn peer_copy(&self, node: &str, id: &str) -> Option<TaskRecord> {
        match self
            .call(node, PeerRequest::Get { id: id.to_owned() })
            .await
        {
            Ok(PeerReply::Task { record }) => {
                if record.is_none() {
                    tracing::info!(peer = %node, task = %id, "peer has no copy");
                }
                record.map(|r| *r)
            }
            Ok(other) => {
                tracing::warn!(peer = %node, task = %id, ?other, "unexpected answer to a lookup");
                None
            }
            Err(e) => {
                tracing::info!(peer = %node, task = %id, "no copy from peer: {e}");
                None
            }
        }
    }

    /// A task from wherever it is: the owner's copy when the owner is up,
    /// else the freshest replica here, else whichever peer has it.
    pub async fn get(&self, id: &str) -> Result<Option<TaskRecord>, ApiError> {
        let live = self.live();
        let others: Vec<&String> = live.iter().filter(|n| **n != *self.node_id).collect();
        match self.local(id).await? {
            Some(record) if record.owner == *self.node_id => Ok(Some(record)),
            Some(record) if !live.contains(&record.owner) => {
                tracing::info!(task = %id, owner = %record.owner, ?live, "owner not live; answering from the replica");
                Ok(Some(record))
            }
            Some(record) => Ok(Some(
                self.peer_copy(&record.owner.clone(), id)
                    .await
                    .unwrap_or(record),
            )),
            None => {
                let answers = join_all(others.iter().map(|n| async move {
                    self.peer_copy(n, id)
                        .await
                        .map(|record| ((*n).clone(), record))
                }))
                .await;
                Ok(freshest(answers.into_iter().flatten()))
            }
        }
    }

    /// Cancels a task wherever its owner is.
    pub async fn cancel(&self, id: &str) -> Result<TaskRecord, ApiError> {
        let record = self
            .get(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no task {id}")))?;
        if record.owner == *self.node_id {
            let id = id.to_owned();
            return self.ask(|reply| SchedulerMsg::Cancel(id, reply)).await;
        }
        match self
            .call(&record.owner, PeerRequest::Cancel { id: id.to_owned() })
            .await?
        {
            PeerReply::Task {
                record: Some(record),
            } => Ok(*record),
            _ => Err(unexpected(&record.owner)),
        }
    }

    /// A page of the tasks this node owns.
    async fn local_page(
        &self,
        after: Option<String>,
        state: Option<TaskState>,
        limit: usize,
    ) -> Result<TaskPage, ApiError> {
        self.ask(|reply| SchedulerMsg::List {
            after,
            state,
            limit,
            reply,
        })
        .await
    }

    /// A page of tasks across the cluster, in id (submission) order: every
    /// live node's page after the cursor, merged. Each task is listed by
    /// its owner; a node that does not answer fails the request rather
    /// than leave a silent hole in the listing.
    pub async fn list(
        &self,
        after: Option<String>,
        state: Option<TaskState>,
        limit: usize,
    ) -> Result<TaskPage, ApiError> {
        let live = self.live();
        let pages = join_all(live.iter().map(|node| {
            let request = PeerRequest::List {
                after: after.clone(),
                state,
                limit,
            };
            async move {
                match self.ask_node(node, request).await? {
                    PeerReply::Page { page } => Ok(page),
                    _ => Err(unexpected(node)),
                }
            }
        }))
        .await;
        let mut more = false;
        let mut tasks: BTreeMap<String, TaskRecord> = BTreeMap::new();
        for page in pages {
            let page = page?;
            more |= page.next_cursor.is_some();
            for task in page.tasks {
                // A node back from the dead may still list what another adopted.
                let keep = tasks
                    .get(&task.id)
                    .is_none_or(|held| !held.state.is_terminal() && task.state.is_terminal());
                if keep {
                    tasks.insert(task.id.clone(), task);
                }
            }
        }
        more |= tasks.len() > limit;
        let tasks: Vec<TaskRecord> = tasks.into_values().take(limit).collect();
        let next_cursor = if more {
            tasks.last().map(|t| t.id.clone())
        } else {
            None
        };
        Ok(TaskPage { tasks, next_cursor })
    }

    /// Answers another node.
    pub async fn handle_peer(&self, request: PeerRequest) -> PeerReply {
        let answer = match request {
            PeerRequest::Submit { tasks } => self
                .own(tasks, false)
                .await
                .map(|accepted| PeerReply::Accepted { accepted }),
            PeerRequest::Store { records } => self.store_replicas(records, true).await,
            PeerRequest::Update { records } => self.store_replicas(records, false).await,
            PeerRequest::List {
                after,
                state,
                limit,
            } => self
                .local_page(after, state, limit)
                .await
                .map(|page| PeerReply::Page { page }),
            PeerRequest::Get { id } => self.local(&id).await.map(|record| PeerReply::Task {
                record: record.map(Box::new),
            }),
            PeerRequest::Cancel { id } => self
                .ask(|reply| SchedulerMsg::Cancel(id, reply))
                .await
                .map(|record| PeerReply::Task {
                    record: Some(Box::new(record)),
                }),
            PeerRequest::PutSchedule { record } => self
                .hold_schedule(*record)
                .await
                .map(|()| PeerReply::Stored),
            PeerRequest::DeleteSchedule { id } => self
                .drop_schedule(id)
                .await
                .map(|found| PeerReply::Deleted { found }),
            PeerRequest::ListSchedules => self
                .held_schedules()
                .await
                .map(|schedules| PeerReply::Schedules { schedules }),
        };
        answer.unwrap_or_else(|e| {
            let (status, body) = e.to_parts();
            PeerReply::Error { status, body }
        })
    }

    /// Runs `work` on the task store off the async threads.
    async fn on_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn TaskStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = Arc::clone(&self.store);
        store_work(move || work(store.as_ref())).await
    }

    /// Keeps records as a replica; `durable` flushes before replying.
    async fn store_replicas(
        &self,
        records: Vec<TaskRecord>,
        durable: bool,
    ) -> Result<PeerReply, ApiError> {
        self.on_store(move |store| {
            for record in records {
                // Updates may arrive out of order: never step back from an end.
                let stale = store
                    .get(&record.id)?
                    .is_some_and(|held| held.state.is_terminal() && !record.state.is_terminal());
                if !stale {
                    store.put(&record)?;
                }
            }
            if durable {
                store.flush()?;
            }
            Ok(PeerReply::Stored)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_protocol::{Attempt, TaskState};

    fn copy(state: TaskState, attempts: usize) -> TaskRecord {
        let task = SubmitTask {
            kind: "echo".into(),
            ..SubmitTask::default()
        };
        let mut record = TaskRecord::from_submission("t".into(), task, "n3".into(), 0);
        record.state = state;
        record.attempts = (0..attempts)
            .map(|i| Attempt {
                number: i as u32 + 1,
                node: "n3".into(),
                started_at_ms: 0,
                finished_at_ms: None,
                outcome: None,
            })
            .collect();
        record
    }

    #[test]
    fn the_owners_copy_wins_over_lagging_replicas() {
        let copies = vec![
            ("n2".to_owned(), copy(TaskState::Running, 1)),
            ("n3".to_owned(), copy(TaskState::Succeeded, 1)),
            ("n1".to_owned(), copy(TaskState::Pending, 0)),
        ];
        assert_eq!(
            freshest(copies.into_iter()).map(|r| r.state),
            Some(TaskState::Succeeded)
        );
    }

    #[test]
    fn without_the_owner_the_most_advanced_replica_wins() {
        let copies = vec![
            ("n1".to_owned(), copy(TaskState::Pending, 0)),
            ("n2".to_owned(), copy(TaskState::Running, 1)),
        ];
        assert_eq!(
            freshest(copies.into_iter()).map(|r| r.state),
            Some(TaskState::Running)
        );
        assert_eq!(freshest(std::iter::empty()), None);
    }
}
