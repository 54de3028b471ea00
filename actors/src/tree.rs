//! The supervision tree of one node, as DESIGN.md draws it.
//!
//! ```text
//! node            one_for_one
//! ├── membership  gossip view of the cluster
//! ├── plugins
//! ├── schedules   recurring tasks this node holds; fires those it owns
//! ├── scheduler   rest_for_one: a restarted pool restarts the table, which
//! │   │           re-queues what the pool was running
//! │   ├── workers  ractor factory running task attempts
//! │   └── table    the task table
//! ├── ingest      rest_for_one: a restarted ingestor restarts the shards
//! │   ├── ingestor    the event log's one writer
//! │   └── shard-0 … shard-K-1   pipelines' windows, following the log
//! └── sinks       one_for_one (only with storage.postgres_url)
//!     └── postgres    drains the results outbox into PostgreSQL
//! ```

use std::sync::Arc;
use std::time::Duration;

use ractor::factory::routing::QueuerRouting;
use ractor::factory::{worker_builder, DeadMansSwitchConfiguration, Factory, FactoryArguments};
use ractor::{Actor, ActorRef, SpawnErr};
use tokio::task::JoinHandle;

use troupe_protocol::PipelineSpec;

use crate::directory::{ActorDirectory, ActorPath};
use crate::ingestor::Ingestor;
use crate::membership::Membership;
use crate::plugins::{PluginHost, PluginRegistry, ResourcePlan};
use crate::scheduler::{ClusterLink, Scheduler, MAX_TIMEOUT};
use crate::schedules::{FireFn, Schedules};
use crate::shard::{shard_of, LiveWatermarks, WindowShard};
use crate::sink::{ResultSink, SinkActor, SinkStatus};
use crate::store::Storage;
use crate::supervisor::{
    ChildSpec, RestartPolicy, Strategy, Supervisor, SupervisorArgs, SupervisorMsg, SupervisorStart,
};
use crate::tasks::gauges::PoolGauges;
use crate::tasks::queue::FairQueue;
use crate::tasks::worker::{TaskJob, TaskWorker};

/// Name of the root supervisor; every actor path starts with it.
pub const ROOT: &str = "node";
/// Path of the task table.
pub const SCHEDULER: &str = "node/scheduler/table";
/// Path of the worker pool.
pub const WORKERS: &str = "node/scheduler/workers";
/// Path of the membership actor.
pub const MEMBERSHIP: &str = "node/membership";
/// Path of the ingestor.
pub const INGESTOR: &str = "node/ingest/ingestor";
/// Path of window shard `k`.
pub fn shard_path(k: usize) -> String {
    format!("node/ingest/shard-{k}")
}

/// Path of the schedules actor.
pub const SCHEDULES: &str = "node/schedules";
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
    /// What the task table needs of the cluster.
    pub cluster: ClusterLink,
    /// Submits the task of a schedule's tick.
    pub fire: FireFn,
    /// Restart intensity and backoff for every supervisor.
    pub policy: RestartPolicy,
    /// Number of window shards under `ingest`.
    pub shards: usize,
    /// Where the window shards run, if not on the tree's runtime.
    pub windows_runtime: Option<tokio::runtime::Handle>,
    /// The pipelines of the config (each on the shard [`shard_of`] names).
    pub pipelines: Vec<PipelineSpec>,
    /// The external results sink (PostgreSQL), if configured, and its
    /// health for `/ready`.
    pub sink: Option<(Arc<dyn ResultSink>, SinkStatus)>,
    /// The worker pool's figures; its size is the pool's initial size.
    pub pool: Arc<PoolGauges>,
    /// A worker busy on one attempt for longer than this is stuck and is
    /// replaced (its attempt counts as crashed).
    pub stuck_after: Duration,
    /// The plugins this node runs.
    pub plugins: Arc<PluginHost>,
    /// Where the window shards publish committed results.
    pub results: Arc<crate::results::ResultsFeed>,
    /// Alert rules over those results, when `[[alerts]]` has any.
    pub alerts: Option<crate::alerts::Alerts>,
    /// The resources the plugin registry holds for them.
    pub resources: ResourcePlan,
}

/// The pool that runs task attempts.
pub type TaskPool =
    Factory<String, TaskJob, (), TaskWorker, QueuerRouting<String, TaskJob>, FairQueue>;

/// The default stuck-worker limit: no attempt may legitimately run longer
/// than the largest timeout.
pub const STUCK_AFTER: Duration = MAX_TIMEOUT.saturating_add(Duration::from_secs(30));

fn pool_spec(gauges: Arc<PoolGauges>, host: Arc<PluginHost>, stuck_after: Duration) -> ChildSpec {
    ChildSpec::stoppable("workers", move || {
        let worker_gauges = Arc::clone(&gauges);
        let host = Arc::clone(&host);
        let arguments = FactoryArguments::builder()
            .worker_builder(Box::new(worker_builder(move |_| {
                (
                    TaskWorker {
                        gauges: Arc::clone(&worker_gauges),
                        host: Arc::clone(&host),
                    },
                    (),
                )
            })))
            .queue(FairQueue::new(Arc::clone(&gauges)))
            .router(QueuerRouting::default())
            .num_initial_workers(gauges.size())
            .dead_mans_switch(DeadMansSwitchConfiguration {
                detection_timeout: stuck_after,
                kill_worker: true,
            })
            .build();
        (TaskPool::default(), arguments)
    })
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

fn node_children(config: &NodeTreeConfig, directory: &ActorDirectory) -> Vec<ChildSpec> {
    let table = Scheduler {
        node_id: Arc::clone(&config.node_id),
        storage: Arc::clone(&config.storage),
        directory: directory.clone(),
        pool: Arc::clone(&config.pool),
        cluster: config.cluster.clone(),
        plugins: Arc::clone(&config.plugins),
    };
    let schedules = Schedules {
        node_id: Arc::clone(&config.node_id),
        storage: Arc::clone(&config.storage),
        live: config.cluster.live.clone(),
        fire: Arc::clone(&config.fire),
    };
    let watermarks = Arc::new(LiveWatermarks::default());
    let ingestor = Ingestor {
        storage: Arc::clone(&config.storage),
        watermarks: Arc::clone(&watermarks),
    };
    let mut ingest = vec![ChildSpec::worker("ingestor", ingestor, || ())];
    ingest.extend((0..config.shards).map(|k| {
        let shard = WindowShard {
            index: k,
            pipelines: config
                .pipelines
                .iter()
                .filter(|p| shard_of(&p.id, config.shards) == k)
                .cloned()
                .collect(),
            storage: Arc::clone(&config.storage),
            outbox: config.sink.is_some(),
            watermarks: Arc::clone(&watermarks),
            plugins: Arc::clone(&config.plugins),
            results: Arc::clone(&config.results),
        };
        let spec = ChildSpec::worker(format!("shard-{k}"), shard, || ());
        match &config.windows_runtime {
            Some(runtime) => spec.on_runtime(runtime.clone()),
            None => spec,
        }
    }));
    let mut children = vec![
        ChildSpec::worker("membership", config.membership.clone(), || ()),
        ChildSpec::worker(
            "plugins",
            PluginRegistry {
                host: Arc::clone(&config.plugins),
                resources: Arc::clone(&config.resources),
            },
            || (),
        ),
        ChildSpec::worker("schedules", schedules, || ()),
        ChildSpec::supervisor(
            "scheduler",
            SupervisorArgs {
                strategy: Strategy::RestForOne,
                policy: config.policy,
                children: vec![
                    pool_spec(
                        Arc::clone(&config.pool),
                        Arc::clone(&config.plugins),
                        config.stuck_after,
                    ),
                    ChildSpec::worker("table", table, || ()),
                ],
            },
        ),
        ChildSpec::supervisor(
            "ingest",
            SupervisorArgs {
                strategy: Strategy::RestForOne,
                policy: config.policy,
                children: ingest,
            },
        ),
    ];
    if let Some(alerts) = &config.alerts {
        children.push(ChildSpec::worker("alerts", alerts.clone(), || ()));
    }
    if let Some((sink, status)) = &config.sink {
        let actor = SinkActor {
            sink: Arc::clone(sink),
            storage: Arc::clone(&config.storage),
            status: Arc::clone(status),
        };
        children.push(ChildSpec::supervisor(
            "sinks",
            SupervisorArgs {
                strategy: Strategy::OneForOne,
                policy: config.policy,
                children: vec![ChildSpec::worker("postgres", actor, || ())],
            },
        ));
    }
    children
}

/// The directory of the tree started under `scope` (usable before it starts).
pub fn directory(scope: &str) -> ActorDirectory {
    ActorPath::root(scope, ROOT).directory()
}

/// Starts the node's tree. `scope` must be unique per tree in this process.
pub async fn start(scope: &str, config: &NodeTreeConfig) -> Result<NodeTree, SpawnErr> {
    let place = ActorPath::root(scope, ROOT);
    let directory = place.directory();
    let start = SupervisorStart {
        args: SupervisorArgs {
            strategy: Strategy::OneForOne,
            policy: config.policy,
            children: node_children(config, &directory),
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
