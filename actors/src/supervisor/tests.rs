//! Supervision behaviour with small probe actors whose starts are counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;
use troupe_protocol::{ActorNode, ActorStatus};

use super::*;
use crate::directory::ActorPath;

#[derive(Clone, Default)]
struct Probe {
    starts: Arc<AtomicUsize>,
}

enum ProbeMsg {
    Ping(RpcReplyPort<()>),
    Fault(String),
}

impl FaultInjection for ProbeMsg {
    fn injected_fault(reason: String) -> Self {
        ProbeMsg::Fault(reason)
    }
}

impl Actor for Probe {
    type Msg = ProbeMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<ProbeMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<ProbeMsg>,
        message: ProbeMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ProbeMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            ProbeMsg::Fault(reason) => panic!("{reason}"),
        }
        Ok(())
    }
}

struct Tree {
    root: ActorRef<SupervisorMsg>,
    place: ActorPath,
}

static SCOPES: AtomicUsize = AtomicUsize::new(0);

/// The probes' injected panics are expected: keep them (and their
/// backtraces) off stderr, and out of the restart timings. Any other panic
/// still goes to the default hook.
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<String>().map(String::as_str) != Some(INJECTED) {
                default(info);
            }
        }));
    });
}

const INJECTED: &str = "boom";

async fn start_tree(strategy: Strategy, policy: RestartPolicy, children: Vec<ChildSpec>) -> Tree {
    quiet_injected_panics();
    let scope = format!("test-{}", SCOPES.fetch_add(1, Ordering::SeqCst));
    let place = ActorPath::root(&scope, "root");
    let start = SupervisorStart {
        place: place.clone(),
        args: SupervisorArgs {
            strategy,
            policy,
            children,
        },
    };
    let (root, _) = Actor::spawn(Some(place.registered_name()), Supervisor, start)
        .await
        .expect("root supervisor starts");
    Tree { root, place }
}

fn probes(names: &[&str]) -> (Vec<Probe>, Vec<ChildSpec>) {
    let probes: Vec<Probe> = names.iter().map(|_| Probe::default()).collect();
    let specs = names
        .iter()
        .zip(&probes)
        .map(|(name, probe)| ChildSpec::worker(*name, probe.clone(), || ()))
        .collect();
    (probes, specs)
}

impl Tree {
    async fn snapshot(&self) -> ActorNode {
        self.root
            .call(SupervisorMsg::Snapshot, Some(Duration::from_secs(2)))
            .await
            .expect("root answers")
            .expect("snapshot in time")
    }

    async fn crash(&self, path: &str) -> Result<(), CrashError> {
        let path = path.split('/').skip(1).map(str::to_owned).collect();
        self.root
            .call(
                |reply| SupervisorMsg::Crash {
                    path,
                    reason: INJECTED.into(),
                    reply,
                },
                Some(Duration::from_secs(2)),
            )
            .await
            .expect("root answers")
            .expect("crash answered in time")
    }

    /// Waits until the actor at `path` has `restarts` restarts and answers a ping.
    async fn await_restarts(&self, path: &str, restarts: u64) -> ActorNode {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let tree = self.snapshot().await;
            if let Some(node) = tree.find(path) {
                if node.restarts == restarts && node.status == ActorStatus::Running {
                    return node.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{path} never reached {restarts} restarts: {tree:#?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn ping(&self, path: &str) -> bool {
        let Some(actor) = self.place.directory().get::<ProbeMsg>(path) else {
            return false;
        };
        matches!(
            actor
                .call(ProbeMsg::Ping, Some(Duration::from_millis(200)))
                .await,
            Ok(ractor::rpc::CallResult::Success(()))
        )
    }
}

fn starts(probes: &[Probe]) -> Vec<usize> {
    probes
        .iter()
        .map(|p| p.starts.load(Ordering::SeqCst))
        .collect()
}

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_child() {
    let (probes, specs) = probes(&["a", "b", "c"]);
    let tree = start_tree(Strategy::OneForOne, RestartPolicy::default(), specs).await;
    tree.crash("root/b").await.expect("fault delivered");
    let b = tree.await_restarts("root/b", 1).await;
    assert!(b
        .last_failure
        .expect("failure recorded")
        .reason
        .contains("boom"));
    assert_eq!(starts(&probes), vec![1, 2, 1]);
    assert!(tree.ping("root/b").await, "restarted child serves again");
}

#[tokio::test]
async fn one_for_all_restarts_every_child() {
    let (probes, specs) = probes(&["a", "b", "c"]);
    let tree = start_tree(Strategy::OneForAll, RestartPolicy::default(), specs).await;
    tree.crash("root/b").await.expect("fault delivered");
    tree.await_restarts("root/c", 1).await;
    tree.await_restarts("root/a", 1).await;
    assert_eq!(starts(&probes), vec![2, 2, 2]);
    let snapshot = tree.snapshot().await;
    // Only the child that crashed carries a failure.
    assert!(snapshot
        .find("root/a")
        .and_then(|a| a.last_failure.clone())
        .is_none());
}

#[tokio::test]
async fn rest_for_one_restarts_the_failed_child_and_later_ones() {
    let (probes, specs) = probes(&["a", "b", "c"]);
    let tree = start_tree(Strategy::RestForOne, RestartPolicy::default(), specs).await;
    tree.crash("root/b").await.expect("fault delivered");
    tree.await_restarts("root/c", 1).await;
    tree.await_restarts("root/b", 1).await;
    assert_eq!(starts(&probes), vec![1, 2, 2]);
}

#[tokio::test]
async fn exceeding_intensity_escalates_to_the_parent() {
    let (probes, leaf) = probes(&["leaf"]);
    let strict = RestartPolicy {
        max_restarts: 2,
        within: Duration::from_secs(60),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
    };
    let inner = ChildSpec::supervisor(
        "inner",
        SupervisorArgs {
            strategy: Strategy::OneForOne,
            policy: strict,
            children: leaf,
        },
    );
    let tree = start_tree(Strategy::OneForOne, RestartPolicy::default(), vec![inner]).await;
    for restarts in 1..=2 {
        tree.crash("root/inner/leaf")
            .await
            .expect("fault delivered");
        tree.await_restarts("root/inner/leaf", restarts).await;
    }
    // The third failure within the window is one too many for `inner`.
    tree.crash("root/inner/leaf")
        .await
        .expect("fault delivered");
    let inner = tree.await_restarts("root/inner", 1).await;
    let reason = inner
        .last_failure
        .clone()
        .expect("escalation recorded")
        .reason;
    assert!(reason.contains("restart intensity exceeded"), "{reason}");
    // The new `inner` incarnation starts its leaf afresh.
    let leaf = inner.find("root/inner/leaf").expect("leaf is back");
    assert_eq!((leaf.restarts, leaf.status), (0, ActorStatus::Running));
    assert_eq!(starts(&probes), vec![4]);
    assert!(tree.ping("root/inner/leaf").await);
}

#[tokio::test]
async fn crash_of_unknown_path_is_refused() {
    let (_, specs) = probes(&["a"]);
    let tree = start_tree(Strategy::OneForOne, RestartPolicy::default(), specs).await;
    assert_eq!(
        tree.crash("root/nope").await,
        Err(CrashError::NotFound {
            path: "root/nope".into()
        })
    );
    assert_eq!(
        tree.crash("root/a/deeper").await,
        Err(CrashError::NotFound {
            path: "root/a/deeper".into()
        })
    );
}

/// Time from injecting a fault to the new incarnation answering a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leaf_serves_again_well_under_50_ms() {
    const RUNS: usize = 50;
    let mut took = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (_, specs) = probes(&["leaf"]);
        let tree = start_tree(Strategy::OneForOne, RestartPolicy::default(), specs).await;
        let old = tree
            .place
            .directory()
            .get::<ProbeMsg>("root/leaf")
            .expect("leaf runs");
        let started = Instant::now();
        tree.crash("root/leaf").await.expect("fault delivered");
        loop {
            if let Some(now) = tree.place.directory().get::<ProbeMsg>("root/leaf") {
                if now.get_id() != old.get_id() && tree.ping("root/leaf").await {
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        took.push(started.elapsed());
        tree.root.stop(None);
    }
    took.sort();
    let (p50, max) = (took[RUNS / 2], took[RUNS - 1]);
    println!("leaf restart to serving: p50 {p50:?}, max {max:?} over {RUNS} runs");
    assert!(p50 < Duration::from_millis(50), "p50 restart took {p50:?}");
}

/// Records the thread each incarnation starts on.
#[derive(Clone, Default)]
struct Placed {
    threads: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Actor for Placed {
    type Msg = ProbeMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<ProbeMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        let thread = std::thread::current().name().unwrap_or_default().to_owned();
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(thread);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ProbeMsg>,
        message: ProbeMsg,
        state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Probe::default().handle(myself, message, state).await
    }
}

#[tokio::test]
async fn a_child_placed_on_another_runtime_starts_and_restarts_there() {
    let side = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("side")
        .enable_all()
        .build()
        .expect("a runtime");
    let placed = Placed::default();
    let spec = ChildSpec::worker("placed", placed.clone(), || ()).on_runtime(side.handle().clone());
    let (_, mut specs) = probes(&["here"]);
    specs.push(spec);
    let tree = start_tree(Strategy::OneForOne, RestartPolicy::default(), specs).await;
    tree.crash("root/placed").await.expect("fault delivered");
    tree.await_restarts("root/placed", 1).await;
    assert!(
        tree.ping("root/placed").await,
        "restarted child serves again"
    );
    let threads = placed.threads.lock().map(|t| t.clone()).unwrap_or_default();
    assert_eq!(threads, ["side", "side"]);
    side.shutdown_background();
}
