//! The plugin registry (`node/plugins`): the plugins this node runs and
//! the resources they use.
//!
//! The plugins themselves are declared anywhere in the binary and loaded
//! once into a [`PluginHost`] shared with the worker pool, which runs them
//! without messaging this actor. The actor owns the node's resource scope:
//! it acquires the resources in `pre_start` (in parallel; a failure names
//! the resource and releases the rest) and releases them in `post_stop`,
//! so a restart of the registry reconnects them. It answers the catalogue
//! with each plugin's schema and figures.

use std::sync::{Arc, RwLock};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio_util::sync::CancellationToken;
use troupe_plugin::{Context, LoadedPlugin, Plugins, Scope, ScopeBuilder};
use troupe_protocol::plugins::PluginInfo;

/// The plugins of this node and, while the registry runs, its resources.
pub struct PluginHost {
    plugins: Plugins,
    resources: RwLock<Option<Arc<Scope>>>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("plugins", &self.plugins.catalogue())
            .finish_non_exhaustive()
    }
}

impl PluginHost {
    /// A host for `plugins`, holding no resources yet.
    pub fn new(plugins: Plugins) -> Self {
        Self {
            plugins,
            resources: RwLock::new(None),
        }
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    /// The plugin that runs `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.get(kind)
    }

    /// The version of plugin `kind` this node loaded, if any: what
    /// placement reads for this node (see `placement::Own`).
    pub fn version_of(&self, kind: &str) -> Option<&'static str> {
        self.get(kind).map(|p| p.version())
    }

    /// What an attempt sees: its cancellation and the node's resources.
    pub fn context(&self, cancel: CancellationToken) -> Context {
        let resources = self.resources.read().map_or(None, |r| r.clone());
        Context::new(cancel, resources)
    }

    fn hold(&self, scope: Option<Arc<Scope>>) {
        if let Ok(mut slot) = self.resources.write() {
            *slot = scope;
        }
    }
}

/// Builds the scope of the node's resources, afresh on each (re)start.
pub type ResourcePlan = Arc<dyn Fn() -> ScopeBuilder + Send + Sync>;

/// Messages the registry handles.
pub enum PluginRegistryMsg {
    /// The catalogue, with schemas and figures.
    List(RpcReplyPort<Vec<PluginInfo>>),
    /// Panic with this reason.
    InjectedFault(String),
}

crate::fault_injection!(PluginRegistryMsg);

/// The registry actor.
#[derive(Clone)]
pub struct PluginRegistry {
    /// The plugins, shared with the worker pool.
    pub host: Arc<PluginHost>,
    /// The node's resources.
    pub resources: ResourcePlan,
}

impl Actor for PluginRegistry {
    type Msg = PluginRegistryMsg;
    /// Keeps the node's resources until the actor stops.
    type State = Arc<Scope>;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        // A crashed incarnation's resources go before new ones come.
        self.host.hold(None);
        let scope = Arc::new((self.resources)().acquire().await?);
        tracing::info!(resources = ?scope.names(), plugins = self.host.plugins.iter().count(), "plugin resources acquired");
        self.host.hold(Some(Arc::clone(&scope)));
        Ok(scope)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        _scope: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Attempts in flight keep their own handle; the rest goes with
        // the state.
        self.host.hold(None);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _scope: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PluginRegistryMsg::List(reply) => {
                let _ = reply.send(self.host.plugins.iter().map(|p| p.info()).collect());
            }
            PluginRegistryMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
        Ok(())
    }
}
