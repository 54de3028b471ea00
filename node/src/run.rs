//! One node's life: open the store, start the supervision tree, serve HTTP,
//! and shut down in order when told to.
//!
//! Shutdown is the reverse of start-up: stop accepting requests (in-flight
//! ones finish), stop the tree (children first, each releasing what it
//! holds), flush the store. All of it within [`SHUTDOWN_GRACE`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use troupe_actors::alerts::{AlertBoard, Alerts, Outbox};
use troupe_actors::membership::{
    Membership, MembershipMsg, StatsProbe, KEY_HTTP, KEY_LOAD, KEY_PLUGINS, KEY_QUEUE_DEPTH,
    KEY_VERSION, KEY_WORKERS,
};
use troupe_actors::placement::Catalogue;
use troupe_actors::plugins::{PluginHost, ResourcePlan};
use troupe_actors::results::ResultsFeed;
use troupe_actors::scheduler::ClusterLink;
use troupe_actors::sink::{ResultSink, SinkStatus};
use troupe_actors::tasks::gauges::PoolGauges;
use troupe_actors::transform::EventTransform;
use troupe_actors::tree::{self, NodeTreeConfig, MEMBERSHIP};
use troupe_builtins::resources;
use troupe_plugin::{Plugins, Scope};
use troupe_protocol::plugins::encode_catalogue;
use troupe_protocol::SinkHealth;

use crate::auth::ClusterKey;
use crate::config::{ClusterConfig, NodeEntry};
use crate::gossip::{cpu_load_probe, ChitchatGossip};
use crate::http::{self, AppState};
use crate::postgres::PgSink;
use crate::replication;
use crate::routing::TaskRouter;
use crate::store::SledStorage;
use crate::telemetry;
use crate::transport::{self, Peers};

/// Longest a graceful shutdown may take before the process gives up on it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// Window shards under `node/ingest`; pipeline i runs on shard i mod this.
const INGEST_SHARDS: usize = 2;

/// How much lower the window shards' thread runs than the rest (a nice
/// value: 0 is normal, 19 the lowest).
const WINDOWS_NICE: i32 = 10;

/// The window shards' runtime: one thread at a lower OS priority.
/// Acknowledging events is what a client waits for; a shard that is
/// behind reads the log at its own pace (its results do not depend on
/// when it computes them). At equal priority the shards took half of a
/// 2-core node while NDJSON ingestion ran; this way ingestion runs at
/// full speed during a burst and the windows catch up after it. With no
/// ingestion, the shards have the cores to themselves.
fn windows_runtime() -> std::io::Result<SideRuntime> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("troupe-windows")
        .on_thread_start(|| {
            // SAFETY: setpriority only changes the scheduling priority of
            // the calling thread (Linux keeps a nice value per thread).
            let done = unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, WINDOWS_NICE) };
            if done != 0 {
                tracing::warn!("could not lower the window shards' priority");
            }
        })
        .enable_all()
        .build()?;
    Ok(SideRuntime(Some(runtime)))
}

/// A runtime beside the main one, shut down without waiting when the node
/// stops (a runtime may not be dropped inside another; its actors have
/// stopped with the tree by then).
struct SideRuntime(Option<tokio::runtime::Runtime>);

impl SideRuntime {
    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|r| r.handle().clone())
    }
}

impl Drop for SideRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What membership gossips about this node every period: CPU load, and
/// the worker pool's queue depth and size.
fn node_stats(pool: Arc<PoolGauges>) -> StatsProbe {
    let load = cpu_load_probe();
    Arc::new(move || {
        let mut stats = vec![
            (KEY_QUEUE_DEPTH.to_owned(), pool.queued().to_string()),
            (KEY_WORKERS.to_owned(), pool.size().to_string()),
        ];
        if let Some(load) = load() {
            stats.push((KEY_LOAD.to_owned(), format!("{load:.3}")));
        }
        stats
    })
}

/// Membership for node `entry`: gossip with every other configured node.
fn membership(
    config: &ClusterConfig,
    entry: &NodeEntry,
    (live, catalogue): (watch::Sender<Vec<String>>, watch::Sender<Catalogue>),
    pool: &Arc<PoolGauges>,
    plugins: &PluginHost,
) -> Membership {
    let interval = Duration::from_millis(config.cluster.gossip_interval_ms);
    let gossip = ChitchatGossip {
        node_id: entry.id.clone(),
        // Nodes with another secret are another cluster to chitchat.
        cluster: ClusterKey::new(&config.cluster.secret).gossip_cluster_id(&config.cluster.name),
        listen: entry.gossip,
        seeds: config
            .nodes
            .iter()
            .filter(|n| n.id != entry.id)
            .map(|n| n.gossip.to_string())
            .collect(),
        interval,
        phi_threshold: config.cluster.phi_threshold,
    };
    Membership {
        node_id: Arc::from(entry.id.as_str()),
        gossip: Arc::new(gossip),
        published: vec![
            (KEY_HTTP.to_owned(), entry.http.to_string()),
            (KEY_VERSION.to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            (
                KEY_PLUGINS.to_owned(),
                encode_catalogue(&plugins.plugins().catalogue()),
            ),
        ],
        tick: interval,
        suspect_after: interval * 5,
        leave_linger: interval * 3,
        stats: node_stats(Arc::clone(pool)),
        live: Arc::new(live),
        catalogue: Arc::new(catalogue),
    }
}

/// The resources this node offers plugins: an HTTP client always,
/// PostgreSQL when `storage.postgres_url` is set. The plugin registry
/// acquires them (again on each restart).
fn resource_plan(config: &ClusterConfig) -> ResourcePlan {
    let postgres = config.storage.postgres_url.clone();
    Arc::new(move || {
        let scope = resources::http_client(Scope::builder());
        match &postgres {
            Some(url) => resources::postgres(scope, url),
            None => scope,
        }
    })
}

/// Which node of the config to run, and how.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The loaded cluster config.
    pub config: Arc<ClusterConfig>,
    /// Id of the node to run.
    pub node_id: String,
    /// Allow fault injection regardless of `[debug]`.
    pub fault_injection: bool,
}

/// `troupe.pid` in the data dir while the node runs, for `troupe cluster
/// down`; removed when the node exits (a killed node leaves it behind, and
/// `cluster down` checks that the pid is still a troupe node).
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn write(dir: &std::path::Path) -> anyhow::Result<Self> {
        let path = dir.join(crate::local::PID_FILE);
        std::fs::write(&path, std::process::id().to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the node until `shutdown` resolves (Ok) or the supervision tree
/// gives up (Err).
pub async fn run(
    options: NodeOptions,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = &options.config;
    let entry = config
        .node(&options.node_id)
        .map_err(anyhow::Error::msg)?
        .clone();
    let data_dir = config.data_dir(&entry);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let storage = SledStorage::open(&data_dir)?;
    // The store is ours alone now (sled locks it), so is the pid file.
    let _pid_file = PidFile::write(&data_dir)?;

    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let node_id: Arc<str> = Arc::from(entry.id.as_str());
    let scope = format!("{node_id}@{generation}");
    let storage_handle: Arc<dyn troupe_actors::store::Storage> = Arc::new(storage.clone());
    // Empty until membership has a warm view of who is alive.
    let (live_tx, live_rx) = watch::channel(Vec::<String>::new());
    let (catalogue_tx, catalogue_rx) = watch::channel(Catalogue::new());
    let resources = resource_plan(config);
    let plugins = Arc::new(PluginHost::new(Plugins::load(&resources().names())?));
    // Transforms name plugins, which only now are known.
    for (i, pipeline) in config.pipelines.iter().enumerate() {
        if let Some(transform) = &pipeline.transform {
            EventTransform::new(transform, &plugins)
                .map_err(|(field, reason)| anyhow::anyhow!("pipelines[{i}].{field}: {reason}"))?;
        }
    }
    let key = ClusterKey::new(&config.cluster.secret);
    let peers = Arc::new(Peers::new(
        &entry.id,
        &config.cluster.name,
        key.clone(),
        config
            .nodes
            .iter()
            .filter(|n| n.id != entry.id)
            .map(|n| (n.id.clone(), n.cluster))
            .collect(),
    ));
    let router = Arc::new(TaskRouter {
        node_id: Arc::clone(&node_id),
        replication: config.cluster.replication,
        directory: tree::directory(&scope),
        peers: Arc::clone(&peers),
        live: live_rx.clone(),
        catalogue: catalogue_rx.clone(),
        plugins: Arc::clone(&plugins),
        store: storage_handle.tasks()?,
    });
    let peer_listener = tokio::net::TcpListener::bind(entry.cluster)
        .await
        .with_context(|| format!("cannot listen for peers on {}", entry.cluster))?;
    let pool = PoolGauges::new(config.workers.count);
    let results_db = match &config.storage.postgres_url {
        Some(url) => Some(Arc::new(PgSink::new(url)?)),
        None => None,
    };
    let sink: Option<(Arc<dyn ResultSink>, SinkStatus)> = results_db.as_ref().map(|db| {
        (
            Arc::clone(db) as Arc<dyn ResultSink>,
            Arc::new(std::sync::Mutex::new(SinkHealth::default())),
        )
    });
    let windows = windows_runtime().context("could not start the window shards' runtime")?;
    let results = Arc::new(ResultsFeed::default());
    let alert_board = AlertBoard::new(&config.alerts);
    let alerts = (!config.alerts.is_empty()).then(|| Alerts {
        node_id: Arc::clone(&node_id),
        rules: config.alerts.clone(),
        results: Arc::clone(&results),
        board: Arc::clone(&alert_board),
        outbox: Outbox::new(crate::alerts::webhook(), Arc::clone(&alert_board)),
    });
    let tree_config = NodeTreeConfig {
        node_id: Arc::clone(&node_id),
        storage: Arc::clone(&storage_handle),
        membership: membership(config, &entry, (live_tx, catalogue_tx), &pool, &plugins),
        cluster: ClusterLink {
            live: live_rx,
            catalogue: catalogue_rx,
            replication: config.cluster.replication,
            replicate: replication::start(
                &peers,
                config
                    .nodes
                    .iter()
                    .filter(|n| n.id != entry.id)
                    .map(|n| n.id.clone()),
            ),
        },
        fire: TaskRouter::fire_fn(&router),
        policy: config.supervision.policy(),
        shards: INGEST_SHARDS,
        windows_runtime: windows.handle(),
        pipelines: config.pipelines.clone(),
        sink: sink.clone(),
        pool: Arc::clone(&pool),
        stuck_after: config.workers.stuck_after(),
        plugins,
        resources,
        results,
        alerts,
    };
    let mut node_tree = tree::start(&scope, &tree_config)
        .await
        .context("supervision tree failed to start")?;
    let peer_stop = CancellationToken::new();
    let handler_router = Arc::clone(&router);
    let peer_server = tokio::spawn(transport::serve(
        peer_listener,
        config.cluster.name.clone(),
        key,
        Arc::new(move |request| {
            let router = Arc::clone(&handler_router);
            Box::pin(async move { router.handle_peer(request).await })
        }),
        peer_stop.clone(),
    ));

    // Ends long-lived responses (the dashboard's stream) at shutdown, so
    // the server need not wait them out.
    let stop_streams = CancellationToken::new();
    let state = web::Data::new(AppState {
        cluster: Arc::from(config.cluster.name.as_str()),
        node_id: Arc::clone(&node_id),
        generation,
        started: Instant::now(),
        root: node_tree.root.clone(),
        directory: node_tree.directory.clone(),
        storage: tree_config.storage.clone(),
        router,
        events: storage_handle.events()?,
        ingest_limit: config.ingest.max_body(),
        ingest_slots: Arc::new(tokio::sync::Semaphore::new(
            config.ingest.max_concurrent_requests,
        )),
        windows: storage_handle.windows()?,
        shards: INGEST_SHARDS,
        postgres: sink.map(|(_, status)| status),
        results_db,
        fault_injection: options.fault_injection || config.debug.fault_injection,
        metrics: metrics.clone(),
        limits: http::limits::ClientLimits::from_config(&config.limits).map(Arc::new),
        access: http::access::Access::from_config(&config.auth, &config.cluster.secret)
            .map(Arc::new),
        pool,
        results: Arc::clone(&tree_config.results),
        alerts: alert_board,
        stopping: stop_streams.clone(),
        snapshots: Arc::new(tokio::sync::watch::Sender::new(None)),
    });
    tokio::spawn(http::publish_snapshots(state.clone()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap_fn(http::access::authorize)
            .wrap_fn(http::limits::limit_rate)
            .wrap_fn(http::record_request)
            .configure(http::routes)
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(5)
    .bind(entry.http)
    .with_context(|| format!("cannot listen on {}", entry.http))?
    .run();
    let server_handle = server.handle();
    let mut serving = tokio::spawn(server);
    let upkeep = tokio::spawn(telemetry::metrics_upkeep(metrics));
    tracing::info!(node = %node_id, generation, http = %entry.http, data_dir = %data_dir.display(), "node up");

    let outcome = tokio::select! {
        () = shutdown => Ok(()),
        _ = &mut node_tree.handle => Err(anyhow::anyhow!(
            "the root supervisor failed; the supervision tree gave up"
        )),
        result = &mut serving => Err(anyhow::anyhow!("HTTP server stopped: {result:?}")),
    };
    tracing::info!(node = %node_id, "shutting down");
    upkeep.abort();
    let stopping = async {
        // Peers hear that we leave before anything else stops, so they need
        // not wait for the failure detector.
        if let Some(membership) = node_tree.directory.get::<MembershipMsg>(MEMBERSHIP) {
            let _ = membership
                .call(MembershipMsg::Leave, Some(SHUTDOWN_GRACE))
                .await;
        }
        stop_streams.cancel();
        server_handle.stop(true).await;
        peer_stop.cancel();
        let _ = peer_server.await;
        let _ = node_tree
            .root
            .stop_and_wait(Some("node shutting down".into()), Some(SHUTDOWN_GRACE))
            .await;
        storage.flush()
    };
    match tokio::time::timeout(SHUTDOWN_GRACE, stopping).await {
        Ok(Ok(_)) => tracing::info!(node = %node_id, "stopped cleanly"),
        Ok(Err(e)) => return Err(e).context("final store flush failed"),
        Err(_) => anyhow::bail!("shutdown took longer than {SHUTDOWN_GRACE:?}"),
    }
    outcome
}
