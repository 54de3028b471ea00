//! A supervised actor that holds a place in the tree for a role whose real
//! implementation lands with a later issue (the window shards).
//!
//! It is a real actor under a real supervisor — it starts, can be crashed and
//! is restarted — so the tree, `/v1/actors` and fault injection have their
//! final shape now. Each role replaces it with its own actor type.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::supervisor::FaultInjection;

/// Messages of a placeholder: only the injected fault.
#[derive(Debug)]
pub enum PlaceholderMsg {
    /// Panic with this reason.
    InjectedFault(String),
}

impl FaultInjection for PlaceholderMsg {
    fn injected_fault(reason: String) -> Self {
        PlaceholderMsg::InjectedFault(reason)
    }
}

/// The placeholder actor; `role` says what will live here.
#[derive(Debug, Clone, Copy)]
pub struct Placeholder {
    /// What this place in the tree is for.
    pub role: &'static str,
}

impl Actor for Placeholder {
    type Msg = PlaceholderMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<(), ActorProcessingErr> {
        tracing::debug!(actor = ?myself.get_name(), role = self.role, "started");
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PlaceholderMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
    }
}
