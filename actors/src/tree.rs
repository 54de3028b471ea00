//! The supervision tree of one node, as DESIGN.md draws it.
//!
//! ```text
//! node            one_for_one
//! ├── membership  gossip view of the cluster
//! ├── plugins
//! ├── scheduler
//! └── ingest      rest_for_one: a restarted ingestor restarts the shards it feeds
//!     ├── ingestor
//!     └── shard-0 … shard-K-1
//! ```

use std::sync::Arc;

use ractor::{Actor, ActorRef, SpawnErr};
use tokio::task::JoinHandle;

use crate::directory::{ActorDirectory, ActorPath};
use crate::membership::Membership;
use crate::placeholder::Placeholder;
use crate::plugins::PluginRegistry;
use crate::scheduler::Scheduler;
use crate::store::Storage;
use crate::supervisor::{
    ChildSpec, RestartPolicy, Strategy, Supervisor, SupervisorArgs, SupervisorMsg, SupervisorStart,
};

/// Name of the root supervisor; every actor path starts with it.
pub const ROOT: &str = "node";
/// Path of the scheduler.
pub const SCHEDULER: &str = "node/scheduler";
/// Path of the membership actor.
pub const MEMBERSHIP: &str = "node/membership";
/// Path of the plugin registry.
pub const PLUGINS: &str = "node/plugins";

/// What the tree needs from the process that hosts it.
#[derive(Clone)]
pub struct NodeTreeConfig {
    /// This node's id.
    pub node_id: Arc<str>,
    /// Its storage.
    pub storage: Arc<dyn Storage>,
    /// Membership over the node's gossip.
    pub membership: Membership,
    /// Restart intensity and backoff for every supervisor.
    pub policy: RestartPolicy,
    /// Number of window shards under `ingest`.
    pub shards: usize,
}

/// A running tree: its root and a directory to find actors in it.
pub struct NodeTree {
    /// The root supervisor.
    pub root: ActorRef<SupervisorMsg>,
    /// Ends when the root stops (shutdown) or gives up (escalation).
    pub handle: JoinHandle<()>,
    /// Resolves actor paths of this tree.
    pub directory: ActorDirectory,
}

fn node_children(config: &NodeTreeConfig) -> Vec<ChildSpec> {
    let scheduler = Scheduler {
        node_id: Arc::clone(&config.node_id),
        storage: Arc::clone(&config.storage),
    };
    let mut ingest = vec![ChildSpec::worker(
        "ingestor",
        Placeholder { role: "ingestor" },
        || (),
    )];
    ingest.extend((0..config.shards).map(|k| {
        ChildSpec::worker(
            format!("shard-{k}"),
            Placeholder {
                role: "window shard",
            },
            || (),
        )
    }));
    vec![
        ChildSpec::worker("membership", config.membership.clone(), || ()),
        ChildSpec::worker("plugins", PluginRegistry, || ()),
        ChildSpec::worker("scheduler", scheduler, || ()),
        ChildSpec::supervisor(
            "ingest",
            SupervisorArgs {
                strategy: Strategy::RestForOne,
                policy: config.policy,
                children: ingest,
            },
        ),
    ]
}

/// Starts the node's tree. `scope` must be unique per tree in this process.
pub async fn start(scope: &str, config: &NodeTreeConfig) -> Result<NodeTree, SpawnErr> {
    let place = ActorPath::root(scope, ROOT);
    let directory = place.directory();
    let start = SupervisorStart {
        args: SupervisorArgs {
            strategy: Strategy::OneForOne,
            policy: config.policy,
            children: node_children(config),
        },
        place: place.clone(),
    };
    let (root, handle) = Actor::spawn(Some(place.registered_name()), Supervisor, start).await?;
    Ok(NodeTree {
        root,
        handle,
        directory,
    })
}
