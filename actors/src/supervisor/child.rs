//! How a supervisor starts, inspects and fault-injects one child.
//!
//! A [`ChildSpec`] erases the child's actor type: the supervisor only holds
//! closures that spawn a fresh incarnation (linked to itself, registered under
//! its path) and that deliver an injected fault to a running one.

use std::sync::Arc;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, Message, SpawnErr};

use super::{Supervisor, SupervisorArgs, SupervisorMsg, SupervisorStart};
use crate::directory::ActorPath;

/// Messages of actors that can be made to crash on purpose.
///
/// Each supervised actor's message enum has a variant that makes its handler
/// panic with the given reason; `POST /v1/actors/{path}/crash` delivers it.
pub trait FaultInjection: Message {
    /// The message that makes the receiving actor panic with `reason`.
    fn injected_fault(reason: String) -> Self;
}

/// Implements [`FaultInjection`] for a message enum whose variant
/// `InjectedFault(String)` makes its actor panic.
#[macro_export]
macro_rules! fault_injection {
    ($msg:ty) => {
        impl $crate::supervisor::FaultInjection for $msg {
            fn injected_fault(reason: String) -> Self {
                Self::InjectedFault(reason)
            }
        }
    };
}

/// Whether a child is a leaf or supervises others itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    /// A leaf actor doing work.
    Worker,
    /// A nested [`Supervisor`].
    Supervisor,
}

impl ChildKind {
    /// The name shown in `GET /v1/actors`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::Worker => "worker",
            ChildKind::Supervisor => "supervisor",
        }
    }
}

type StartFn =
    dyn Fn(ActorPath, ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync;
type InjectFn = dyn Fn(&ActorCell, String) -> bool + Send + Sync;

/// How long a new incarnation waits for its predecessor's name to be free.
const NAME_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Makes sure no earlier incarnation holds `name`: one left over from a
/// supervisor that failed (ractor stops a dead supervisor's children
/// asynchronously, so they may outlive it briefly) is killed, and its name
/// awaited.
async fn free_name(name: &str) {
    let Some(stale) = ractor::registry::where_is(name) else {
        return;
    };
    tracing::debug!(actor = name, "waiting for the previous incarnation to stop");
    stale.kill();
    let deadline = tokio::time::Instant::now() + NAME_WAIT;
    while ractor::registry::where_is(name).is_some() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// A start function that spawns a new incarnation from `make` each time,
/// linked to the supervisor and registered under its tree path.
fn spawn_fresh<A, F>(make: F) -> Arc<StartFn>
where
    A: Actor,
    F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
{
    Arc::new(move |place: ActorPath, supervisor: ActorCell| {
        let (actor, arguments) = make();
        let fut: BoxFuture<'static, Result<ActorCell, SpawnErr>> = Box::pin(async move {
            let name = place.registered_name();
            free_name(&name).await;
            let (actor_ref, _) =
                Actor::spawn_linked(Some(name), actor, arguments, supervisor).await?;
            Ok(actor_ref.get_cell())
        });
        fut
    })
}

/// Everything a supervisor needs to (re)start one child.
#[derive(Clone)]
pub struct ChildSpec {
    pub(super) name: String,
    pub(super) kind: ChildKind,
    start: Arc<StartFn>,
    inject: Arc<InjectFn>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A leaf actor. `args` builds fresh arguments for every incarnation, so
    /// a restart re-runs `pre_start` from scratch.
    pub fn worker<A, F>(name: impl Into<String>, actor: A, args: F) -> Self
    where
        A: Actor + Clone,
        A::Msg: FaultInjection,
        F: Fn() -> A::Arguments + Send + Sync + 'static,
    {
        let start = spawn_fresh(move || (actor.clone(), args()));
        let inject = |cell: &ActorCell, reason: String| {
            cell.send_message::<A::Msg>(A::Msg::injected_fault(reason))
                .is_ok()
        };
        Self {
            name: name.into(),
            kind: ChildKind::Worker,
            start,
            inject: Arc::new(inject),
        }
    }

    /// An actor whose messages are not ours (ractor's factory): `make`
    /// builds it and its arguments for every incarnation, and an injected
    /// fault stops it, which its supervisor treats as a failure too.
    pub fn stoppable<A, F>(name: impl Into<String>, make: F) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let start = spawn_fresh(make);
        let inject = |cell: &ActorCell, reason: String| {
            cell.stop(Some(format!("injected fault: {reason}")));
            true
        };
        Self {
            name: name.into(),
            kind: ChildKind::Worker,
            start,
            inject: Arc::new(inject),
        }
    }

    /// Runs every incarnation on `runtime` (its handlers, timers and the
    /// tasks it spawns) instead of the supervisor's.
    pub fn on_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        let start = self.start;
        self.start = Arc::new(move |place: ActorPath, supervisor: ActorCell| {
            let spawn = start(place, supervisor);
            let runtime = runtime.clone();
            let fut: BoxFuture<'static, Result<ActorCell, SpawnErr>> = Box::pin(async move {
                runtime
                    .spawn(spawn)
                    .await
                    .map_err(|e| SpawnErr::StartupFailed(e.into()))?
            });
            fut
        });
        self
    }

    /// A nested supervisor with its own strategy, policy and children.
    pub fn supervisor(name: impl Into<String>, args: SupervisorArgs) -> Self {
        let name = name.into();
        let start = move |place: ActorPath, supervisor: ActorCell| {
            let start = SupervisorStart {
                place,
                args: args.clone(),
            };
            let fut: BoxFuture<'static, Result<ActorCell, SpawnErr>> = Box::pin(async move {
                let name = start.place.registered_name();
                free_name(&name).await;
                let (actor_ref, _) =
                    Actor::spawn_linked(Some(name), Supervisor, start, supervisor).await?;
                Ok(actor_ref.get_cell())
            });
            fut
        };
        let inject = |cell: &ActorCell, reason: String| {
            cell.send_message::<SupervisorMsg>(SupervisorMsg::injected_fault(reason))
                .is_ok()
        };
        Self {
            name,
            kind: ChildKind::Supervisor,
            start: Arc::new(start),
            inject: Arc::new(inject),
        }
    }

    /// The child's name among its siblings.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn start(
        &self,
        place: ActorPath,
        supervisor: ActorCell,
    ) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> {
        (self.start)(place, supervisor)
    }

    pub(super) fn inject(&self, cell: &ActorCell, reason: String) -> bool {
        (self.inject)(cell, reason)
    }
}
