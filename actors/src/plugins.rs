//! The plugin registry: which task kinds this node can run.
//!
//! Until the plugin contract lands (plugin issue) the catalogue is the
//! built-in test kinds; the actor serves it so callers already ask the
//! registry rather than a constant.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::tasks::kinds::BUILTIN;

/// Messages the registry handles.
pub enum PluginRegistryMsg {
    /// Names of the kinds this node runs.
    List(RpcReplyPort<Vec<String>>),
    /// Panic with this reason.
    InjectedFault(String),
}

crate::fault_injection!(PluginRegistryMsg);

/// The registry actor.
#[derive(Debug, Clone, Copy)]
pub struct PluginRegistry;

impl Actor for PluginRegistry {
    type Msg = PluginRegistryMsg;
    type State = Vec<String>;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(BUILTIN.iter().map(|k| (*k).to_owned()).collect())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        kinds: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PluginRegistryMsg::List(reply) => {
                let _ = reply.send(kinds.clone());
            }
            PluginRegistryMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
        Ok(())
    }
}
