//! Membership: this node's view of who is in the cluster.
//!
//! Gossip itself (chitchat over UDP, in `node`) is behind [`Gossip`], so
//! this module only turns what gossip reports into member states:
//! [`MemberTable`] is that logic without I/O; the [`Membership`] actor polls
//! the gossip session on a tick, logs every state change, publishes this
//! node's figures (load, queue depth, workers), and announces leaving on a graceful stop.
//!
//! States: `left` if the node announced leaving; `dead` once the failure
//! detector says so; `suspect` while still alive to the detector but not
//! heard from for [`Membership::suspect_after`]; otherwise `alive`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;
use troupe_protocol::plugins::decode_catalogue;
use troupe_protocol::{Member, MemberState};

use crate::placement::Catalogue;

/// Published key: the node's HTTP address.
pub const KEY_HTTP: &str = "http";
/// Published key: Troupe version.
pub const KEY_VERSION: &str = "version";
/// Published key: CPU use in cores.
pub const KEY_LOAD: &str = "load";
/// Published key: attempts queued for the worker pool.
pub const KEY_QUEUE_DEPTH: &str = "queue_depth";
/// Published key: worker pool size.
pub const KEY_WORKERS: &str = "workers";
/// Published key: task kinds run here, comma-separated.
pub const KEY_PLUGINS: &str = "plugins";
/// Published key: lifecycle status; [`STATUS_LEAVING`] on a graceful stop.
pub const KEY_STATUS: &str = "status";
/// Value of [`KEY_STATUS`] when a node is leaving.
pub const STATUS_LEAVING: &str = "leaving";

/// What gossip reports about one node incarnation.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Node id.
    pub id: String,
    /// Incarnation.
    pub generation: u64,
    /// Gossip address.
    pub gossip: String,
    /// Alive according to the failure detector.
    pub live: bool,
    /// Its heartbeat counter; advancing means we are hearing from it.
    pub heartbeat: u64,
    /// What it published.
    pub keys: BTreeMap<String, String>,
}

/// A joined gossip session; dropping it must stop gossiping.
pub trait GossipSession: Send + Sync {
    /// Sets a key of this node's published state.
    fn publish(&self, key: String, value: String) -> BoxFuture<'_, ()>;
    /// Every node incarnation gossip knows of, this node included.
    fn observe(&self) -> BoxFuture<'_, Vec<Observation>>;
    /// Announces leaving, gives peers `linger` to hear it, then stops.
    fn leave(&mut self, linger: Duration) -> BoxFuture<'_, ()>;
}

/// Joins the cluster's gossip.
pub trait Gossip: Send + Sync {
    /// Starts gossiping as incarnation `generation` with `keys` published.
    fn join(
        &self,
        generation: u64,
        keys: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<Box<dyn GossipSession>, String>>;
}

/// Gossip with nobody: this node alone, no network. For actor tests and
/// single-process benches, as `MemoryStorage` is for storage.
#[derive(Debug, Clone)]
pub struct LoneGossip {
    /// This node's id.
    pub node_id: String,
}

struct LoneSession {
    node_id: String,
    generation: u64,
    keys: std::sync::Mutex<BTreeMap<String, String>>,
    heartbeat: std::sync::atomic::AtomicU64,
}

impl Gossip for LoneGossip {
    fn join(
        &self,
        generation: u64,
        keys: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<Box<dyn GossipSession>, String>> {
        let session = LoneSession {
            node_id: self.node_id.clone(),
            generation,
            keys: std::sync::Mutex::new(keys.into_iter().collect()),
            heartbeat: std::sync::atomic::AtomicU64::new(0),
        };
        Box::pin(async move { Ok(Box::new(session) as Box<dyn GossipSession>) })
    }
}

impl GossipSession for LoneSession {
    fn publish(&self, key: String, value: String) -> BoxFuture<'_, ()> {
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(key, value);
        }
        Box::pin(async {})
    }

    fn observe(&self) -> BoxFuture<'_, Vec<Observation>> {
        let heartbeat = self
            .heartbeat
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let keys = self.keys.lock().map(|k| k.clone()).unwrap_or_default();
        Box::pin(async move {
            vec![Observation {
                id: self.node_id.clone(),
                generation: self.generation,
                gossip: "local".into(),
                live: true,
                heartbeat,
                keys,
            }]
        })
    }

    fn leave(&mut self, _linger: Duration) -> BoxFuture<'_, ()> {
        Box::pin(self.publish(KEY_STATUS.into(), STATUS_LEAVING.into()))
    }
}

/// Member states derived from observations over time.
#[derive(Debug)]
pub struct MemberTable {
    self_id: String,
    suspect_after: Duration,
    /// Until then the detector has too few samples to call anyone dead.
    warm_until: Instant,
    /// (id, generation) → (last heartbeat seen, when it last advanced).
    heard: HashMap<(String, u64), (u64, Instant)>,
    latest: Vec<Observation>,
}

impl MemberTable {
    /// A table for node `self_id`, created at `now`. A fresh failure
    /// detector calls every peer not-live until it has heard two heartbeats;
    /// for `warmup` such peers are shown as suspect rather than dead.
    pub fn new(self_id: &str, suspect_after: Duration, warmup: Duration, now: Instant) -> Self {
        Self {
            self_id: self_id.to_owned(),
            suspect_after,
            warm_until: now + warmup,
            heard: HashMap::new(),
            latest: Vec::new(),
        }
    }

    /// Whether the failure detector has had time to hear from peers.
    pub fn is_warm(&self, now: Instant) -> bool {
        now >= self.warm_until
    }

    /// Takes in what gossip reports at `now`.
    pub fn refresh(&mut self, now: Instant, observations: Vec<Observation>) {
        for obs in &observations {
            let entry = self
                .heard
                .entry((obs.id.clone(), obs.generation))
                .or_insert((obs.heartbeat, now));
            if entry.0 != obs.heartbeat {
                *entry = (obs.heartbeat, now);
            }
        }
        self.heard.retain(|(id, generation), _| {
            observations
                .iter()
                .any(|o| &o.id == id && o.generation == *generation)
        });
        self.latest = observations;
    }

    /// The members as of `now`, newest incarnation per id, sorted by id.
    pub fn members(&self, now: Instant) -> Vec<Member> {
        let mut newest: BTreeMap<&str, &Observation> = BTreeMap::new();
        for obs in &self.latest {
            let slot = newest.entry(obs.id.as_str()).or_insert(obs);
            if obs.generation > slot.generation {
                *slot = obs;
            }
        }
        newest
            .into_values()
            .map(|obs| {
                let is_self = obs.id == self.self_id;
                let silent = self
                    .heard
                    .get(&(obs.id.clone(), obs.generation))
                    .map_or(Duration::ZERO, |(_, at)| now.duration_since(*at));
                let state = if obs.keys.get(KEY_STATUS).map(String::as_str) == Some(STATUS_LEAVING)
                {
                    MemberState::Left
                } else if is_self {
                    MemberState::Alive
                } else if !obs.live && now >= self.warm_until {
                    MemberState::Dead
                } else if !obs.live || silent > self.suspect_after {
                    // Not live while warming up: not proven dead yet.
                    MemberState::Suspect
                } else {
                    MemberState::Alive
                };
                Member {
                    id: obs.id.clone(),
                    state,
                    generation: obs.generation,
                    gossip: obs.gossip.clone(),
                    http: obs.keys.get(KEY_HTTP).cloned(),
                    version: obs.keys.get(KEY_VERSION).cloned(),
                    load: obs.keys.get(KEY_LOAD).and_then(|l| l.parse().ok()),
                    queue_depth: obs.keys.get(KEY_QUEUE_DEPTH).and_then(|q| q.parse().ok()),
                    workers: obs.keys.get(KEY_WORKERS).and_then(|w| w.parse().ok()),
                    plugins: obs
                        .keys
                        .get(KEY_PLUGINS)
                        .map(|p| decode_catalogue(p))
                        .unwrap_or_default(),
                    last_heard_ms: if is_self {
                        0
                    } else {
                        silent.as_millis() as u64
                    },
                }
            })
            .collect()
    }
}

/// A member changing state, as logged (and later consumed by the scheduler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberChange {
    /// Node id.
    pub id: String,
    /// Its generation now.
    pub generation: u64,
    /// Previous state, `None` when first seen.
    pub from: Option<MemberState>,
    /// New state.
    pub to: MemberState,
}

/// State changes between two member lists.
pub fn changes(before: &[Member], after: &[Member]) -> Vec<MemberChange> {
    after
        .iter()
        .filter_map(|now| {
            let was = before.iter().find(|m| m.id == now.id);
            let same = was.is_some_and(|m| m.state == now.state && m.generation == now.generation);
            (!same).then(|| MemberChange {
                id: now.id.clone(),
                generation: now.generation,
                from: was
                    .filter(|m| m.generation == now.generation)
                    .map(|m| m.state),
                to: now.state,
            })
        })
        .collect()
}

/// Messages the membership actor handles.
pub enum MembershipMsg {
    /// Poll gossip, update states, log changes.
    Tick,
    /// The current member list.
    Members(RpcReplyPort<Vec<Member>>),
    /// Announce leaving and stop gossiping (graceful shutdown).
    Leave(RpcReplyPort<()>),
    /// Panic with this reason.
    InjectedFault(String),
}

crate::fault_injection!(MembershipMsg);

/// The node's changing figures to publish (load, queue depth, workers),
/// as gossip keys and values; read every [`STATS_PERIOD`].
pub type StatsProbe = Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

/// The membership actor.
#[derive(Clone)]
pub struct Membership {
    /// This node's id.
    pub node_id: Arc<str>,
    /// How to join gossip.
    pub gossip: Arc<dyn Gossip>,
    /// Keys published at join (`http`, `version`, `plugins`).
    pub published: Vec<(String, String)>,
    /// How often gossip is polled.
    pub tick: Duration,
    /// Silence after which a live member is shown as suspect.
    pub suspect_after: Duration,
    /// Time to let a leave announcement spread before stopping.
    pub leave_linger: Duration,
    /// Source of the figures published every [`STATS_PERIOD`].
    pub stats: StatsProbe,
    /// Ids of the nodes that can own tasks (alive or suspect, not dead or
    /// left), sorted; placement reads it.
    pub live: Arc<tokio::sync::watch::Sender<Vec<String>>>,
    /// The plugins each of those nodes runs; updated before `live`.
    pub catalogue: Arc<tokio::sync::watch::Sender<Catalogue>>,
}

/// The membership actor's state.
pub struct MembershipState {
    session: Option<Box<dyn GossipSession>>,
    table: MemberTable,
    members: Vec<Member>,
    last_stats: Instant,
}

/// How often the node's figures are re-published.
pub const STATS_PERIOD: Duration = Duration::from_secs(1);

impl Membership {
    async fn refresh(&self, state: &mut MembershipState) {
        let Some(session) = state.session.as_ref() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(state.last_stats) >= STATS_PERIOD {
            state.last_stats = now;
            for (key, value) in (self.stats)() {
                session.publish(key, value).await;
            }
        }
        state.table.refresh(now, session.observe().await);
        let members = state.table.members(now);
        for change in changes(&state.members, &members) {
            tracing::info!(
                member = %change.id,
                generation = change.generation,
                from = ?change.from,
                to = ?change.to,
                "membership change"
            );
        }
        for kind in [
            MemberState::Alive,
            MemberState::Suspect,
            MemberState::Dead,
            MemberState::Left,
        ] {
            let count = members.iter().filter(|m| m.state == kind).count();
            let label = format!("{kind:?}").to_lowercase();
            metrics::gauge!("troupe_cluster_members", "state" => label).set(count as f64);
        }
        if !state.table.is_warm(now) {
            // Until the detector has heard from peers, "live" would be a guess.
            state.members = members;
            return;
        }
        let mut live: Vec<String> = members
            .iter()
            .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .map(|m| m.id.clone())
            .collect();
        live.sort();
        let catalogue: Catalogue = members
            .iter()
            .filter(|m| live.contains(&m.id))
            .map(|m| (m.id.clone(), m.plugins.clone()))
            .collect();
        self.catalogue.send_if_modified(|current| {
            let changed = *current != catalogue;
            if changed {
                *current = catalogue;
            }
            changed
        });
        self.live.send_if_modified(|current| {
            let changed = *current != live;
            if changed {
                *current = live;
            }
            changed
        });
        state.members = members;
    }
}

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        // Each incarnation of this actor gossips as a new generation, so
        // peers never confuse it with the state of the one that failed.
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let session = self.gossip.join(generation, self.published.clone()).await?;
        myself.send_interval(self.tick, || MembershipMsg::Tick);
        Ok(MembershipState {
            session: Some(session),
            table: MemberTable::new(
                &self.node_id,
                self.suspect_after,
                self.suspect_after * 4,
                Instant::now(),
            ),
            members: Vec::new(),
            last_stats: Instant::now(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MembershipMsg::Tick => self.refresh(state).await,
            MembershipMsg::Members(reply) => {
                self.refresh(state).await;
                let _ = reply.send(state.members.clone());
            }
            MembershipMsg::Leave(reply) => {
                if let Some(mut session) = state.session.take() {
                    tracing::info!("announcing leave to the cluster");
                    session.leave(self.leave_linger).await;
                }
                let _ = reply.send(());
            }
            MembershipMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(id: &str, generation: u64, live: bool, heartbeat: u64) -> Observation {
        Observation {
            id: id.into(),
            generation,
            gossip: format!("127.0.0.1:{generation}"),
            live,
            heartbeat,
            keys: BTreeMap::from([(KEY_HTTP.to_owned(), "127.0.0.1:1".to_owned())]),
        }
    }

    fn states(table: &MemberTable, now: Instant) -> Vec<(String, MemberState, u64)> {
        table
            .members(now)
            .into_iter()
            .map(|m| (m.id, m.state, m.generation))
            .collect()
    }

    #[test]
    fn live_members_go_suspect_when_silent_and_dead_when_the_detector_says() {
        let start = Instant::now();
        let mut table = MemberTable::new("n1", Duration::from_millis(500), Duration::ZERO, start);
        table.refresh(start, vec![obs("n1", 1, true, 5), obs("n2", 1, true, 7)]);
        assert_eq!(
            states(&table, start),
            vec![
                ("n1".into(), MemberState::Alive, 1),
                ("n2".into(), MemberState::Alive, 1)
            ]
        );
        // n2's heartbeat stops advancing: suspect after 500 ms, self never is.
        let later = start + Duration::from_millis(600);
        table.refresh(later, vec![obs("n1", 1, true, 5), obs("n2", 1, true, 7)]);
        assert_eq!(states(&table, later)[1].1, MemberState::Suspect);
        assert_eq!(states(&table, later)[0].1, MemberState::Alive);
        assert_eq!(table.members(later)[1].last_heard_ms, 600);
        // Its heartbeat advances again: alive.
        table.refresh(later, vec![obs("n1", 1, true, 6), obs("n2", 1, true, 8)]);
        assert_eq!(states(&table, later)[1].1, MemberState::Alive);
        // The detector gives up on it: dead.
        table.refresh(later, vec![obs("n1", 1, true, 6), obs("n2", 1, false, 8)]);
        assert_eq!(states(&table, later)[1].1, MemberState::Dead);
    }

    #[test]
    fn a_fresh_table_does_not_call_unproven_peers_dead() {
        let start = Instant::now();
        let mut table = MemberTable::new(
            "n1",
            Duration::from_millis(500),
            Duration::from_secs(2),
            start,
        );
        table.refresh(start, vec![obs("n1", 1, true, 1), obs("n2", 1, false, 1)]);
        assert_eq!(states(&table, start)[1].1, MemberState::Suspect);
        let warm = start + Duration::from_secs(2);
        table.refresh(warm, vec![obs("n1", 1, true, 2), obs("n2", 1, false, 1)]);
        assert_eq!(states(&table, warm)[1].1, MemberState::Dead);
    }

    #[test]
    fn the_newest_generation_wins_and_leaving_is_left() {
        let now = Instant::now();
        let mut table = MemberTable::new("n1", Duration::from_secs(1), Duration::ZERO, now);
        let mut leaving = obs("n3", 9, true, 1);
        leaving
            .keys
            .insert(KEY_STATUS.into(), STATUS_LEAVING.into());
        table.refresh(
            now,
            vec![obs("n2", 1, false, 3), obs("n2", 2, true, 1), leaving],
        );
        assert_eq!(
            states(&table, now),
            vec![
                ("n2".into(), MemberState::Alive, 2),
                ("n3".into(), MemberState::Left, 9)
            ]
        );
    }

    #[test]
    fn changes_report_transitions_and_new_incarnations() {
        let member = |id: &str, state, generation| Member {
            id: id.into(),
            state,
            generation,
            gossip: String::new(),
            http: None,
            version: None,
            load: None,
            queue_depth: None,
            workers: None,
            plugins: Vec::new(),
            last_heard_ms: 0,
        };
        let before = vec![
            member("n1", MemberState::Alive, 1),
            member("n2", MemberState::Alive, 1),
        ];
        let after = vec![
            member("n1", MemberState::Alive, 1),
            member("n2", MemberState::Alive, 2),
            member("n3", MemberState::Dead, 1),
        ];
        let got = changes(&before, &after);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].id.as_str(), got[0].from, got[0].generation),
            ("n2", None, 2)
        );
        assert_eq!(
            (got[1].id.as_str(), got[1].from, got[1].to),
            ("n3", None, MemberState::Dead)
        );
    }
}
