//! Our supervisor: restart strategies, intensity limits and backoff on ractor.
//!
//! ractor links actors and reports supervision events; this actor decides what
//! to do with them, Erlang/OTP style. One mechanism serves the whole tree, and
//! it keeps what `GET /v1/actors` shows (status, restart counts, last failure
//! per child) in its own state rather than in a second copy. Fault injection
//! (`POST /v1/actors/{path}/crash`) is routed down the tree by path.
//!
//! A child that fails is restarted per [`Strategy`]; the first restart in a
//! quiet period is immediate and later ones back off exponentially. More than
//! [`RestartPolicy::max_restarts`] restarts within [`RestartPolicy::within`]
//! and the supervisor fails itself, so its own parent deals with the subtree.

mod child;
mod policy;
#[cfg(test)]
mod tests;

use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tokio::time::Instant;
use troupe_protocol::{now_ms, ActorNode, ActorStatus, Failure};

pub use child::{ChildKind, ChildSpec, FaultInjection};
pub use policy::{EventWindow, RestartPolicy, Strategy};

use crate::directory::ActorPath;

/// How long a supervisor waits for a child to stop before killing it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a supervisor waits for a nested supervisor's snapshot.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// Strategy, policy and children of one supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorArgs {
    /// Which siblings a failure takes down.
    pub strategy: Strategy,
    /// Intensity limit and backoff.
    pub policy: RestartPolicy,
    /// Children, started in this order and stopped in reverse.
    pub children: Vec<ChildSpec>,
}

/// Why a fault could not be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrashError {
    /// No actor has that path.
    #[error("no actor at {path}")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The actor is between incarnations.
    #[error("actor {path} is restarting")]
    Restarting {
        /// The path asked for.
        path: String,
    },
}

/// Messages a supervisor handles.
pub enum SupervisorMsg {
    /// The live subtree under this supervisor.
    Snapshot(RpcReplyPort<ActorNode>),
    /// Make the actor at `path` (relative to this supervisor; empty means the
    /// supervisor itself) panic with `reason`.
    Crash {
        /// Remaining path segments below this supervisor.
        path: Vec<String>,
        /// Panic message.
        reason: String,
        /// Answered once the fault is delivered.
        reply: RpcReplyPort<Result<(), CrashError>>,
    },
    /// A backoff delay ran out: start these children (in order) again.
    RestartDue(Vec<usize>),
    /// Panic now (fault injection into the supervisor itself).
    InjectedFault(String),
}

crate::fault_injection!(SupervisorMsg);

/// The supervisor actor.
#[derive(Debug, Clone, Copy)]
pub struct Supervisor;

/// Arguments of a supervisor incarnation: where it sits and what it runs.
#[derive(Debug, Clone)]
pub struct SupervisorStart {
    /// This supervisor's place in the tree.
    pub place: ActorPath,
    /// Strategy, policy, children.
    pub args: SupervisorArgs,
}

/// Per-child bookkeeping.
struct Child {
    spec: ChildSpec,
    place: ActorPath,
    cell: Option<ActorCell>,
    status: ActorStatus,
    restarts: u64,
    last_failure: Option<Failure>,
    failed_at: Option<Instant>,
    failures: EventWindow,
}

/// A supervisor's state: its children and its recent restarts.
pub struct SupervisorState {
    place: ActorPath,
    strategy: Strategy,
    policy: RestartPolicy,
    children: Vec<Child>,
    intensity: EventWindow,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorStart;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        start: SupervisorStart,
    ) -> Result<Self::State, ActorProcessingErr> {
        let SupervisorStart { place, args } = start;
        let mut children = Vec::with_capacity(args.children.len());
        for spec in args.children {
            let child_place = place.child(spec.name());
            let cell = spec
                .start(child_place.clone(), myself.get_cell())
                .await
                .map_err(|e| format!("{}: could not start: {e}", child_place.path()))?;
            metrics::counter!("troupe_actor_restarts_total", "actor" => child_place.path().to_owned())
                .increment(0);
            children.push(Child {
                spec,
                place: child_place,
                cell: Some(cell),
                status: ActorStatus::Running,
                restarts: 0,
                last_failure: None,
                failed_at: None,
                failures: EventWindow::default(),
            });
        }
        Ok(SupervisorState {
            place,
            strategy: args.strategy,
            policy: args.policy,
            children,
            intensity: EventWindow::default(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Children first, newest first, each given time to release what it holds.
        for child in state.children.iter_mut().rev() {
            if let Some(cell) = child.cell.take() {
                stop_child(&child.place, cell, "supervisor stopping").await;
            }
            child.status = ActorStatus::Stopped;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Snapshot(reply) => {
                // The caller may have given up; nothing to do then.
                let _ = reply.send(state.snapshot().await);
            }
            SupervisorMsg::Crash {
                path,
                reason,
                reply,
            } => state.route_crash(&myself, path, reason, reply),
            SupervisorMsg::RestartDue(indices) => state.start_children(&myself, indices).await?,
            SupervisorMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                state
                    .child_exited(&myself, cell.get_id(), err.to_string())
                    .await
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // Every child is permanent: a stop we did not ask for is a failure.
                let reason = format!(
                    "stopped unexpectedly: {}",
                    reason.as_deref().unwrap_or("no reason given")
                );
                state.child_exited(&myself, cell.get_id(), reason).await
            }
            _ => Ok(()),
        }
    }
}

/// Stops one child gracefully, killing it if it does not stop in time.
async fn stop_child(place: &ActorPath, cell: ActorCell, why: &str) {
    if cell
        .stop_and_wait(Some(why.to_owned()), Some(STOP_TIMEOUT))
        .await
        .is_err()
    {
        tracing::warn!(actor = %place.path(), "did not stop in time; killing it");
        cell.kill();
    }
}

impl SupervisorState {
    fn child_index(&self, id: ActorId) -> Option<usize> {
        self.children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|cell| cell.get_id() == id))
    }

    /// Applies the strategy after child `id` exited; `Err` escalates.
    async fn child_exited(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: ActorId,
        reason: String,
    ) -> Result<(), ActorProcessingErr> {
        // Children we stopped ourselves (siblings under one_for_all /
        // rest_for_one) no longer hold a cell and are ignored here.
        let Some(index) = self.child_index(id) else {
            return Ok(());
        };
        let failures = self.record_failure(index, reason)?;
        let affected = self.strategy.affected(index, self.children.len());
        for sibling in affected.clone().rev().filter(|&i| i != index) {
            let child = &mut self.children[sibling];
            if let Some(cell) = child.cell.take() {
                child.status = ActorStatus::Restarting;
                child.failed_at = Some(Instant::now());
                stop_child(&child.place, cell, "sibling failed").await;
            }
        }
        self.schedule_restart(myself, affected.collect(), failures)
            .await
    }

    /// Records a failure of child `index`; returns how many failures that
    /// child had in the window, or `Err` when the intensity limit is passed.
    fn record_failure(
        &mut self,
        index: usize,
        reason: String,
    ) -> Result<usize, ActorProcessingErr> {
        let now = Instant::now();
        let within = self.policy.within;
        let child = &mut self.children[index];
        child.cell = None;
        child.status = ActorStatus::Restarting;
        child.failed_at = Some(now);
        tracing::warn!(actor = %child.place.path(), cause = %reason, "actor failed");
        child.last_failure = Some(Failure {
            reason: reason.clone(),
            at_ms: now_ms(),
        });
        let failures = child.failures.record(now, within);
        let recent = self.intensity.record(now, within);
        if recent > self.policy.max_restarts as usize {
            let path = child.place.path().to_owned();
            tracing::error!(
                supervisor = %self.place.path(),
                restarts = recent - 1,
                within_secs = within.as_secs_f64(),
                last = %path,
                cause = %reason,
                "restart intensity exceeded; escalating to parent"
            );
            return Err(format!(
                "restart intensity exceeded: more than {} restarts within {:?} (last: {path}: {reason})",
                self.policy.max_restarts, within
            )
            .into());
        }
        Ok(failures)
    }

    async fn schedule_restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        indices: Vec<usize>,
        failures: usize,
    ) -> Result<(), ActorProcessingErr> {
        let delay = self.policy.backoff(failures);
        if delay.is_zero() {
            return self.start_children(myself, indices).await;
        }
        tracing::info!(
            supervisor = %self.place.path(),
            delay_ms = delay.as_millis() as u64,
            "backing off before restart"
        );
        myself.send_after(delay, move || SupervisorMsg::RestartDue(indices));
        Ok(())
    }

    /// Starts the listed children that are not running, in order.
    async fn start_children(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        indices: Vec<usize>,
    ) -> Result<(), ActorProcessingErr> {
        for (position, &index) in indices.iter().enumerate() {
            let child = &mut self.children[index];
            if child.cell.is_some() {
                continue;
            }
            match child
                .spec
                .start(child.place.clone(), myself.get_cell())
                .await
            {
                Ok(cell) => {
                    child.cell = Some(cell);
                    child.status = ActorStatus::Running;
                    child.restarts += 1;
                    let took = child.failed_at.map(|t| t.elapsed()).unwrap_or_default();
                    let path = child.place.path().to_owned();
                    metrics::counter!("troupe_actor_restarts_total", "actor" => path.clone())
                        .increment(1);
                    metrics::histogram!("troupe_actor_restart_seconds").record(took.as_secs_f64());
                    tracing::info!(
                        actor = %path,
                        restarts = child.restarts,
                        took_us = took.as_micros() as u64,
                        "actor restarted"
                    );
                }
                Err(err) => {
                    // A failed start counts as another failure of that child.
                    let failures = self.record_failure(index, format!("restart failed: {err}"))?;
                    let rest = indices[position..].to_vec();
                    let delay = self.policy.backoff(failures.max(2));
                    myself.send_after(delay, move || SupervisorMsg::RestartDue(rest));
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn route_crash(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        mut path: Vec<String>,
        reason: String,
        reply: RpcReplyPort<Result<(), CrashError>>,
    ) {
        if path.is_empty() {
            let _ = reply.send(Ok(()));
            // Panic on the next message, after the caller has its answer.
            let _ = myself.send_message(SupervisorMsg::InjectedFault(reason));
            return;
        }
        let name = path.remove(0);
        let full = self.place.child(&name).path().to_owned();
        let Some(child) = self.children.iter().find(|c| c.spec.name() == name) else {
            let _ = reply.send(Err(CrashError::NotFound { path: full }));
            return;
        };
        let Some(cell) = child.cell.as_ref() else {
            let _ = reply.send(Err(CrashError::Restarting { path: full }));
            return;
        };
        if path.is_empty() {
            tracing::warn!(actor = %full, reason = %reason, "injecting fault");
            let delivered = child.spec.inject(cell, reason);
            let _ = reply.send(if delivered {
                Ok(())
            } else {
                Err(CrashError::Restarting { path: full })
            });
        } else if child.spec.kind == ChildKind::Supervisor {
            let forwarded = SupervisorMsg::Crash {
                path,
                reason,
                reply,
            };
            if let Err(ractor::MessagingErr::SendErr(SupervisorMsg::Crash { reply, .. })) =
                cell.send_message(forwarded)
            {
                let _ = reply.send(Err(CrashError::Restarting { path: full }));
            }
        } else {
            let missing = format!("{full}/{}", path.join("/"));
            let _ = reply.send(Err(CrashError::NotFound { path: missing }));
        }
    }

    async fn snapshot(&self) -> ActorNode {
        let mut children = Vec::with_capacity(self.children.len());
        for child in &self.children {
            let nested = match (child.spec.kind, &child.cell) {
                (ChildKind::Supervisor, Some(cell)) => {
                    let actor: ActorRef<SupervisorMsg> = cell.clone().into();
                    match actor
                        .call(SupervisorMsg::Snapshot, Some(SNAPSHOT_TIMEOUT))
                        .await
                    {
                        Ok(ractor::rpc::CallResult::Success(node)) => node.children,
                        _ => Vec::new(),
                    }
                }
                _ => Vec::new(),
            };
            children.push(ActorNode {
                name: child.spec.name().to_owned(),
                path: child.place.path().to_owned(),
                kind: child.spec.kind.as_str().to_owned(),
                status: child.status,
                restarts: child.restarts,
                last_failure: child.last_failure.clone(),
                children: nested,
            });
        }
        ActorNode {
            name: self.place.name().to_owned(),
            path: self.place.path().to_owned(),
            kind: ChildKind::Supervisor.as_str().to_owned(),
            status: ActorStatus::Running,
            restarts: 0,
            last_failure: None,
            children,
        }
    }
}
