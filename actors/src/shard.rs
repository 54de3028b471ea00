//! A window shard (`node/ingest/shard-K`): runs the windows of the
//! pipelines assigned to it (pipeline i → shard i mod K, so one engine
//! sees all of a pipeline's events and its watermarks are right).
//!
//! The shard follows the event log rather than being fed by the ingestor:
//! every tick it reads the events after the offset it has covered, offers
//! them to its engines, and commits — atomically — the windows that closed,
//! the late events, and a checkpoint (the offset and every engine's state).
//! After a crash or a SIGKILL it resumes from its checkpoint and replays the
//! log from there; the replay is deterministic and a result is stored under
//! (pipeline, key, window start), so every closed window is stored exactly
//! once with exactly the values of an uninterrupted run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use troupe_protocol::{Event, PipelineSpec};

use crate::store::{EventFilter, EventStore, Storage, WindowStore};
use crate::supervisor::FaultInjection;
use crate::windows::{EngineState, Offered, WindowEngine};

/// How often a shard looks for new events.
const TICK: Duration = Duration::from_millis(50);
/// Events read per log page.
const PAGE: usize = 4_096;
/// Pages processed per tick, so status requests are answered meanwhile.
const PAGES_PER_TICK: usize = 16;

/// What a shard checkpoints.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// Every event up to here has been offered.
    offset: u64,
    /// Engine state per pipeline id.
    engines: BTreeMap<String, EngineState>,
    /// Counters per pipeline id.
    counters: BTreeMap<String, Counters>,
}

/// Counts of one pipeline, kept in the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Events counted in windows.
    pub added: u64,
    /// Events past every window they belonged to (kept, see `late`).
    pub late: u64,
    /// Events without the `key_by` field.
    pub no_key: u64,
    /// Windows closed and stored.
    pub emitted: u64,
}

/// A pipeline's live state, for `GET /v1/pipelines`, `/v1/windows`,
/// `/v1/watermarks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineStatus {
    /// The pipeline.
    pub spec: PipelineSpec,
    /// The shard running it.
    pub shard: usize,
    /// Log offset covered.
    pub offset: u64,
    /// The pipeline's watermark.
    pub watermark_ms: Option<u64>,
    /// Per-source watermarks.
    pub source_watermarks: BTreeMap<String, u64>,
    /// Windows open now.
    pub open_windows: usize,
    /// Counts since the pipeline started.
    pub counters: Counters,
}

/// Messages of a shard.
pub enum ShardMsg {
    /// Read and process new events.
    Tick,
    /// The state of its pipelines.
    Status(RpcReplyPort<Vec<PipelineStatus>>),
    /// Process everything in the log now, commit, and answer the offset
    /// covered.
    Checkpoint(RpcReplyPort<Result<u64, String>>),
    /// Panic with this reason.
    InjectedFault(String),
}

impl FaultInjection for ShardMsg {
    fn injected_fault(reason: String) -> Self {
        ShardMsg::InjectedFault(reason)
    }
}

/// The shard actor.
#[derive(Clone)]
pub struct WindowShard {
    /// Its index.
    pub index: usize,
    /// The pipelines it runs.
    pub pipelines: Vec<PipelineSpec>,
    /// Where the log and the results are.
    pub storage: Arc<dyn Storage>,
    /// Whether results also go to the outbox of an external sink.
    pub outbox: bool,
}

/// A shard's state.
pub struct ShardState {
    log: Arc<dyn EventStore>,
    store: Arc<dyn WindowStore>,
    offset: u64,
    engines: Vec<(WindowEngine, Counters)>,
}

impl WindowShard {
    /// Processes up to [`PAGES_PER_TICK`] pages; whether more may follow.
    fn catch_up(&self, state: &mut ShardState) -> Result<bool, ActorProcessingErr> {
        if state.engines.is_empty() {
            return Ok(false);
        }
        for _ in 0..PAGES_PER_TICK {
            let (events, more) = state
                .log
                .page(state.offset, &EventFilter::default(), PAGE)?;
            let Some(last) = events.last().map(|e| e.offset) else {
                return Ok(false);
            };
            let mut results = Vec::new();
            let mut late: Vec<(String, Event)> = Vec::new();
            for event in &events {
                for (engine, counters) in &mut state.engines {
                    match engine.offer(event) {
                        Offered::Added => counters.added += 1,
                        Offered::Late => {
                            counters.late += 1;
                            late.push((engine.spec().id.clone(), event.clone()));
                        }
                        Offered::NoKey => counters.no_key += 1,
                        Offered::Filtered => {}
                    }
                    let closed = engine.advance();
                    counters.emitted += closed.len() as u64;
                    results.extend(closed);
                }
            }
            state.offset = last;
            let checkpoint = Checkpoint {
                offset: state.offset,
                engines: state
                    .engines
                    .iter()
                    .map(|(e, _)| (e.spec().id.clone(), e.state()))
                    .collect(),
                counters: state
                    .engines
                    .iter()
                    .map(|(e, c)| (e.spec().id.clone(), c.clone()))
                    .collect(),
            };
            let bytes = serde_json::to_vec(&checkpoint)?;
            state
                .store
                .commit(self.index, &results, &late, &bytes, self.outbox)?;
            metrics::counter!("troupe_windows_emitted_total").increment(results.len() as u64);
            metrics::counter!("troupe_events_late_total").increment(late.len() as u64);
            if more.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn status(&self, state: &ShardState) -> Vec<PipelineStatus> {
        state
            .engines
            .iter()
            .map(|(engine, counters)| PipelineStatus {
                spec: engine.spec().clone(),
                shard: self.index,
                offset: state.offset,
                watermark_ms: engine.watermark(),
                source_watermarks: engine.source_watermarks(),
                open_windows: engine.open_windows(),
                counters: counters.clone(),
            })
            .collect()
    }
}

impl Actor for WindowShard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let log = self.storage.events()?;
        let store = self.storage.windows()?;
        let mut checkpoint: Checkpoint = match store.checkpoint(self.index)? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => Checkpoint::default(),
        };
        let engines = self
            .pipelines
            .iter()
            .map(|spec| {
                let engine = match checkpoint.engines.remove(&spec.id) {
                    Some(saved) => WindowEngine::resume(spec.clone(), saved),
                    None => WindowEngine::new(spec.clone()),
                };
                let counters = checkpoint.counters.remove(&spec.id).unwrap_or_default();
                (engine, counters)
            })
            .collect();
        if checkpoint.offset > 0 {
            tracing::info!(
                shard = self.index,
                offset = checkpoint.offset,
                "resuming windows from checkpoint"
            );
        }
        myself.send_interval(TICK, || ShardMsg::Tick);
        Ok(ShardState {
            log,
            store,
            offset: checkpoint.offset,
            engines,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Tick => {
                if self.catch_up(state)? {
                    // More to read: go on after whatever else is waiting.
                    let _ = myself.send_message(ShardMsg::Tick);
                }
            }
            ShardMsg::Status(reply) => {
                let _ = reply.send(self.status(state));
            }
            ShardMsg::Checkpoint(reply) => {
                let caught_up = loop {
                    match self.catch_up(state) {
                        Ok(true) => continue,
                        Ok(false) => break Ok(state.offset),
                        Err(e) => break Err(e.to_string()),
                    }
                };
                let _ = reply.send(caught_up);
            }
            ShardMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
        Ok(())
    }
}
