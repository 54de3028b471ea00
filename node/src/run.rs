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
use troupe_actors::membership::{Membership, MembershipMsg, KEY_HTTP, KEY_VERSION};
use troupe_actors::tree::{self, NodeTreeConfig, MEMBERSHIP};

use crate::config::{ClusterConfig, NodeEntry};
use crate::gossip::{cpu_load_probe, ChitchatGossip};
use crate::http::{self, AppState};
use crate::store::SledStorage;
use crate::telemetry;

/// Longest a graceful shutdown may take before the process gives up on it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// Window shards under `node/ingest` until pipelines configure them.
const INGEST_SHARDS: usize = 2;

/// Membership for node `entry`: gossip with every other configured node.
fn membership(config: &ClusterConfig, entry: &NodeEntry) -> Membership {
    let interval = Duration::from_millis(config.cluster.gossip_interval_ms);
    let gossip = ChitchatGossip {
        node_id: entry.id.clone(),
        cluster: config.cluster.name.clone(),
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
        ],
        tick: interval,
        suspect_after: interval * 5,
        leave_linger: interval * 3,
        load: Arc::new(cpu_load_probe()),
    }
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

    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let node_id: Arc<str> = Arc::from(entry.id.as_str());
    let tree_config = NodeTreeConfig {
        node_id: Arc::clone(&node_id),
        storage: Arc::new(storage.clone()),
        membership: membership(config, &entry),
        policy: config.supervision.policy(),
        shards: INGEST_SHARDS,
        workers: config.workers.count,
    };
    let mut node_tree = tree::start(&format!("{node_id}@{generation}"), &tree_config)
        .await
        .context("supervision tree failed to start")?;

    let state = web::Data::new(AppState {
        cluster: Arc::from(config.cluster.name.as_str()),
        node_id: Arc::clone(&node_id),
        generation,
        started: Instant::now(),
        root: node_tree.root.clone(),
        directory: node_tree.directory.clone(),
        storage: tree_config.storage.clone(),
        fault_injection: options.fault_injection || config.debug.fault_injection,
        metrics: metrics.clone(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
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
        server_handle.stop(true).await;
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
