//! Supervision hot path: from an injected crash to the new incarnation of a
//! leaf actor answering a call, on the node's real tree (in-memory storage).
//!
//! `cargo bench -p troupe-actors --bench restart`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ractor::rpc::CallResult;
use troupe_actors::membership::{LoneGossip, Membership};
use troupe_actors::placement::Catalogue;
use troupe_actors::plugins::{PluginHost, PluginRegistryMsg};
use troupe_actors::scheduler::ClusterLink;
use troupe_actors::store::MemoryStorage;
use troupe_actors::supervisor::{RestartPolicy, SupervisorMsg};
use troupe_actors::tasks::gauges::PoolGauges;
use troupe_actors::tree::{self, NodeTree, NodeTreeConfig, PLUGINS, STUCK_AFTER};
use troupe_plugin::{Plugins, Scope};

/// Crashes `node/plugins` and waits until a new incarnation answers.
async fn crash_and_await(tree: &NodeTree) {
    let old = tree
        .directory
        .get::<PluginRegistryMsg>(PLUGINS)
        .expect("plugins running")
        .get_id();
    let delivered = tree
        .root
        .call(
            |reply| SupervisorMsg::Crash {
                path: vec!["plugins".into()],
                reason: "bench".into(),
                reply,
            },
            None,
        )
        .await;
    assert!(matches!(delivered, Ok(CallResult::Success(Ok(())))));
    loop {
        if let Some(plugins) = tree.directory.get::<PluginRegistryMsg>(PLUGINS) {
            if plugins.get_id() != old {
                if let Ok(CallResult::Success(_)) =
                    plugins.call(PluginRegistryMsg::List, None).await
                {
                    return;
                }
            }
        }
        tokio::task::yield_now().await;
    }
}

fn restart(c: &mut Criterion) {
    // Panics are the point here; keep the default hook from flooding stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (live_tx, live_rx) = tokio::sync::watch::channel(vec!["bench".to_owned()]);
    let (catalogue_tx, catalogue_rx) = tokio::sync::watch::channel(Catalogue::new());
    let config = NodeTreeConfig {
        node_id: Arc::from("bench"),
        storage: Arc::new(MemoryStorage::default()),
        membership: Membership {
            node_id: Arc::from("bench"),
            gossip: Arc::new(LoneGossip {
                node_id: "bench".into(),
            }),
            published: Vec::new(),
            tick: Duration::from_millis(100),
            suspect_after: Duration::from_millis(500),
            leave_linger: Duration::ZERO,
            stats: Arc::new(Vec::new),
            live: Arc::new(live_tx),
            catalogue: Arc::new(catalogue_tx),
        },
        cluster: ClusterLink {
            live: live_rx,
            catalogue: catalogue_rx,
            replication: 1,
            replicate: Arc::new(|_, _| {}),
        },
        fire: Arc::new(|_, _| {}),
        // Every restart immediate and never an escalation: this measures
        // the restart itself, not the backoff policy.
        policy: RestartPolicy {
            max_restarts: u32::MAX,
            within: Duration::from_secs(1),
            backoff_min: Duration::ZERO,
            backoff_max: Duration::ZERO,
        },
        shards: 2,
        windows_runtime: None,
        pipelines: Vec::new(),
        sink: None,
        pool: PoolGauges::new(2),
        stuck_after: STUCK_AFTER,
        plugins: Arc::new(PluginHost::new(Plugins::load(&[]).expect("plugins load"))),
        resources: Arc::new(Scope::builder),
        results: Arc::default(),
        alerts: None,
    };
    let tree = runtime
        .block_on(tree::start("bench", &config))
        .expect("tree starts");
    c.bench_function("leaf crash to serving again", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    crash_and_await(&tree).await;
                }
                started.elapsed()
            })
        });
    });
}

criterion_group!(benches, restart);
criterion_main!(benches);
