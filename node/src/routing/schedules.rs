//! Schedules across the cluster: created on R holders, listed from all.
//!
//! A new schedule gets an id and R holders (rendezvous order of its id over
//! the live nodes); it is acknowledged once every holder stored it durably.
//! Which holder fires it is decided by each holder on its own (the first
//! live one; see `troupe_actors::schedules`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use ractor::rpc::CallResult;
use troupe_actors::placement::rendezvous_order;
use troupe_actors::scheduler::{local_plugin, validate, SchedulerError};
use troupe_actors::schedules::{parse_cron, FireFn, SchedulesMsg};
use troupe_actors::tree::SCHEDULES;
use troupe_protocol::wire::{PeerReply, PeerRequest};
use troupe_protocol::{CreateSchedule, ScheduleRecord, ScheduleStatus, SubmitTask};

use super::{table_error, unexpected, TaskRouter, TABLE_TIMEOUT};
use crate::http::ApiError;

/// Longest schedule name, in bytes.
const MAX_NAME: usize = 200;

/// The idempotency key of a schedule's tick: one task per tick, however
/// many holders fire it.
fn tick_key(schedule: &str, tick_ms: u64) -> String {
    format!("schedule:{schedule}:{tick_ms}")
}

impl TaskRouter {
    async fn ask_schedules<T, F>(&self, build: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(ractor::RpcReplyPort<T>) -> SchedulesMsg,
    {
        let actor = self
            .directory
            .get::<SchedulesMsg>(SCHEDULES)
            .ok_or_else(|| ApiError::unavailable("the schedules actor is restarting"))?;
        match actor.call(build, Some(TABLE_TIMEOUT)).await {
            Ok(CallResult::Success(answer)) => Ok(answer),
            _ => Err(ApiError::unavailable("the schedules actor did not answer")),
        }
    }

    /// Checks, places and stores a new schedule on its holders.
    pub async fn create_schedule(
        &self,
        create: CreateSchedule,
    ) -> Result<ScheduleStatus, ApiError> {
        parse_cron(&create.cron).map_err(|reason| ApiError::invalid("cron", reason))?;
        if create.name.as_ref().is_some_and(|n| n.len() > MAX_NAME) {
            return Err(ApiError::invalid(
                "name",
                format!("at most {MAX_NAME} bytes"),
            ));
        }
        if create.task.key.is_some() {
            return Err(ApiError::invalid(
                "task.key",
                "a schedule keys each tick's task itself; leave key out",
            ));
        }
        if !create.task.depends_on.is_empty() {
            return Err(ApiError::invalid(
                "task.depends_on",
                "recurring tasks cannot depend on other tasks",
            ));
        }
        let live = self.placement_view().await?;
        // Each tick is placed like any submission; checking now saves a
        // schedule that could never run.
        local_plugin(&create.task, &self.plugins)
            .and_then(|plugin| validate(&create.task, plugin.map(|p| &**p)))
            .and_then(|()| self.runners(live.clone()).of(&create.task).map(|_| ()))
            .map_err(|e| match e {
                SchedulerError::Invalid { field, reason } => {
                    ApiError::invalid(format!("task.{field}"), reason)
                }
                other => table_error(other),
            })?;
        let id = uuid::Uuid::now_v7().to_string();
        let holders: Vec<String> = rendezvous_order(&id, &live)
            .into_iter()
            .take(self.replication.max(1))
            .map(str::to_owned)
            .collect();
        let record = ScheduleRecord {
            id,
            name: create.name,
            cron: create.cron,
            task: create.task,
            holders: holders.clone(),
            created_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let stores = holders.iter().map(|node| {
            let request = PeerRequest::PutSchedule {
                record: Box::new(record.clone()),
            };
            async move {
                match self.ask_node(node, request).await? {
                    PeerReply::Stored => Ok(()),
                    _ => Err(unexpected(node)),
                }
            }
        });
        for stored in join_all(stores).await {
            stored?;
        }
        let owner = holders.first().cloned();
        Ok(ScheduleStatus {
            record,
            owner,
            next_fire_ms: None,
            last_fired_ms: None,
        })
    }

    pub(super) async fn hold_schedule(&self, record: ScheduleRecord) -> Result<(), ApiError> {
        self.ask_schedules(|reply| SchedulesMsg::Put(Box::new(record), reply))
            .await?
            .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    /// The schedules this node holds.
    pub(super) async fn held_schedules(&self) -> Result<Vec<ScheduleStatus>, ApiError> {
        self.ask_schedules(SchedulesMsg::List).await
    }

    pub(super) async fn drop_schedule(&self, id: String) -> Result<bool, ApiError> {
        self.ask_schedules(|reply| SchedulesMsg::Delete(id, reply))
            .await?
            .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    /// Every schedule held by a live node; of several copies, the one of
    /// the node that fires it (it knows the last and next tick).
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleStatus>, ApiError> {
        let live = self.live();
        let answers = join_all(live.iter().map(|node| async move {
            match self.ask_node(node, PeerRequest::ListSchedules).await? {
                PeerReply::Schedules { schedules } => Ok((node.clone(), schedules)),
                _ => Err(unexpected(node)),
            }
        }))
        .await;
        let mut merged: BTreeMap<String, ScheduleStatus> = BTreeMap::new();
        let answers = answers.into_iter().filter_map(|answer| {
            answer
                .map_err(|e| tracing::warn!("a node's schedules are missing from the list: {e}"))
                .ok()
        });
        for (node, schedules) in answers {
            for status in schedules {
                let from_owner = status.owner.as_deref() == Some(node.as_str());
                if from_owner || !merged.contains_key(&status.record.id) {
                    merged.insert(status.record.id.clone(), status);
                }
            }
        }
        Ok(merged.into_values().collect())
    }

    /// Deletes a schedule from every live node; 404 if none held it.
    pub async fn delete_schedule(&self, id: &str) -> Result<(), ApiError> {
        let live = self.live();
        let answers = join_all(live.iter().map(|node| async move {
            match self
                .ask_node(node, PeerRequest::DeleteSchedule { id: id.to_owned() })
                .await?
            {
                PeerReply::Deleted { found } => Ok(found),
                _ => Err(unexpected(node)),
            }
        }))
        .await;
        let mut found = false;
        for answer in answers {
            found |= answer?;
        }
        if found {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("no schedule {id}")))
        }
    }

    /// Fires a schedule's tick: submits its task under the tick's key, in
    /// the background (the schedules actor does not wait on the network).
    pub fn fire_fn(router: &Arc<Self>) -> FireFn {
        let router = Arc::clone(router);
        Arc::new(move |schedule: &ScheduleRecord, tick_ms: u64| {
            let router = Arc::clone(&router);
            let task = SubmitTask {
                key: Some(tick_key(&schedule.id, tick_ms)),
                ..schedule.task.clone()
            };
            let id = schedule.id.clone();
            tokio::spawn(async move {
                match router.submit(vec![task], false).await {
                    Ok(accepted) => {
                        tracing::debug!(schedule = %id, tick_ms, ?accepted, "schedule fired")
                    }
                    Err(e) => {
                        tracing::warn!(schedule = %id, tick_ms, "schedule tick not submitted: {e}")
                    }
                }
            });
        })
    }
}
