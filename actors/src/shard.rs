//! A window shard (`node/ingest/shard-K`): runs the windows of the
//! pipelines assigned to it (by a hash of the pipeline's id, see
//! [`shard_of`]; one engine sees all of a pipeline's events, so its
//! watermarks are right).
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
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use troupe_protocol::{Event, PipelineSpec};

use tokio_util::sync::CancellationToken;

use crate::plugins::PluginHost;
use crate::store::{EventStore, Storage, WindowStore};
use crate::transform::EventTransform;
use crate::windows::{is_late, EngineState, Offered, WindowEngine};

/// How often a shard looks for new events.
const TICK: Duration = Duration::from_millis(50);
/// Events read per log page.
const PAGE: usize = 4_096;
/// Pages processed per tick, so status requests are answered meanwhile.
const PAGES_PER_TICK: usize = 16;
/// Time after which a tick stops at the end of a page (a pipeline with a
/// slow transform takes far longer per page than plain windowing).
const TICK_BUDGET: Duration = Duration::from_millis(200);

/// One pipeline as a checkpoint keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    spec: PipelineSpec,
    state: EngineState,
    counters: Counters,
    /// Every event up to here has been offered to it.
    offset: u64,
    running: bool,
}

/// What a shard checkpoints: its pipelines, each with its own offset (a
/// stopped pipeline resumes where it stopped; a new one starts where it
/// was asked to).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    #[serde(default)]
    pipelines: Vec<Saved>,
}

/// Counts of one pipeline, kept in the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counters {
    /// Events counted in windows.
    pub added: u64,
    /// Events past every window they belonged to (kept, see `late`).
    pub late: u64,
    /// Events without the `key_by` field.
    pub no_key: u64,
    /// Windows closed and stored.
    pub emitted: u64,
    /// Events the pipeline's transform failed on (skipped).
    #[serde(default)]
    pub transform_errors: u64,
}

/// A pipeline's live state, for `GET /v1/pipelines`, `/v1/windows`,
/// `/v1/watermarks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineStatus {
    /// The pipeline.
    pub spec: PipelineSpec,
    /// Whether it takes events (`POST /v1/pipelines/{id}/stop` pauses it).
    pub running: bool,
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
    /// Run a new (validated) pipeline, from the log's start or its end;
    /// answered once its checkpoint is committed.
    Add {
        /// The pipeline.
        spec: PipelineSpec,
        /// Start at the end of the log (only events from now on).
        from_latest: bool,
        /// Done, or why not.
        reply: RpcReplyPort<Result<PipelineStatus, String>>,
    },
    /// Pause or resume a pipeline; `None` if this shard has no such one.
    SetRunning {
        /// The pipeline.
        id: String,
        /// Run or pause.
        running: bool,
        /// Its status after the change.
        reply: RpcReplyPort<Result<Option<PipelineStatus>, String>>,
    },
    /// Panic with this reason.
    InjectedFault(String),
}

crate::fault_injection!(ShardMsg);

/// The shard a pipeline runs on: a stable hash of its id, so adding a
/// pipeline moves no other.
pub fn shard_of(pipeline: &str, shards: usize) -> usize {
    let hash = pipeline.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % shards.max(1) as u64) as usize
}

/// Running pipelines' watermarks as their shards last committed them, so
/// that ingestion can say how many events arrive late already (a shard
/// that has not caught up yet may still find more late).
#[derive(Default)]
pub struct LiveWatermarks(RwLock<BTreeMap<String, (PipelineSpec, Option<u64>)>>);

impl LiveWatermarks {
    fn publish(&self, pipelines: &[Pipeline]) {
        let mut live = self.0.write().unwrap_or_else(|e| e.into_inner());
        for p in pipelines {
            let id = &p.engine.spec().id;
            match (p.running, live.get_mut(id)) {
                (false, _) => {
                    live.remove(id);
                }
                (true, Some(entry)) => entry.1 = p.engine.watermark(),
                (true, None) => {
                    live.insert(id.clone(), (p.engine.spec().clone(), p.engine.watermark()));
                }
            }
        }
    }

    /// How many of `events` some running pipeline would find late now.
    pub fn count_late(&self, events: &[Event]) -> u64 {
        let live = self.0.read().unwrap_or_else(|e| e.into_inner());
        if live.is_empty() {
            return 0;
        }
        events
            .iter()
            .filter(|e| {
                live.values()
                    .any(|(spec, wm)| is_late(spec, *wm, &e.event_type, e.timestamp_ms))
            })
            .count() as u64
    }
}

/// The shard actor.
#[derive(Clone)]
pub struct WindowShard {
    /// Its index.
    pub index: usize,
    /// The pipelines from the config that it runs.
    pub pipelines: Vec<PipelineSpec>,
    /// Where the log and the results are.
    pub storage: Arc<dyn Storage>,
    /// Whether results also go to the outbox of an external sink.
    pub outbox: bool,
    /// Where it publishes its pipelines' watermarks.
    pub watermarks: Arc<LiveWatermarks>,
    /// The plugins pipeline transforms run.
    pub plugins: Arc<PluginHost>,
    /// Where committed results are published.
    pub results: Arc<crate::results::ResultsFeed>,
}

struct Pipeline {
    engine: WindowEngine,
    transform: Option<EventTransform>,
    counters: Counters,
    offset: u64,
    running: bool,
}

/// Offers one event to a pipeline, collecting what closed and what was late.
fn offer(
    (engine, counters): (&mut WindowEngine, &mut Counters),
    event: &Event,
    results: &mut Vec<troupe_protocol::WindowResult>,
    late: &mut Vec<(String, Event)>,
) {
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

/// A shard's state.
pub struct ShardState {
    log: Arc<dyn EventStore>,
    store: Arc<dyn WindowStore>,
    pipelines: Vec<Pipeline>,
}

impl WindowShard {
    fn commit(
        &self,
        state: &ShardState,
        results: &[troupe_protocol::WindowResult],
        late: &[(String, Event)],
    ) -> Result<(), ActorProcessingErr> {
        let checkpoint = Checkpoint {
            pipelines: state
                .pipelines
                .iter()
                .map(|p| Saved {
                    spec: p.engine.spec().clone(),
                    state: p.engine.state(),
                    counters: p.counters.clone(),
                    offset: p.offset,
                    running: p.running,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&checkpoint)?;
        state
            .store
            .commit(self.index, results, late, &bytes, self.outbox)?;
        self.results.publish(results);
        self.watermarks.publish(&state.pipelines);
        Ok(())
    }

    /// The transform of `spec`, built against this node's plugins.
    fn transform(&self, spec: &PipelineSpec) -> Result<Option<EventTransform>, String> {
        spec.transform
            .as_ref()
            .map(|t| EventTransform::new(t, &self.plugins))
            .transpose()
            .map_err(|(field, reason)| format!("pipeline {}: {field}: {reason}", spec.id))
    }

    /// Processes up to [`PAGES_PER_TICK`] pages; whether more may follow.
    async fn catch_up(&self, state: &mut ShardState) -> Result<bool, ActorProcessingErr> {
        let started = std::time::Instant::now();
        for _ in 0..PAGES_PER_TICK {
            if started.elapsed() > TICK_BUDGET {
                return Ok(true);
            }
            let Some(from) = state
                .pipelines
                .iter()
                .filter(|p| p.running)
                .map(|p| p.offset)
                .min()
            else {
                return Ok(false);
            };
            let batches = state.log.read(from, PAGE)?;
            let Some(last) = batches.last().and_then(|b| b.last()).map(|e| e.offset) else {
                return Ok(false);
            };
            let read: usize = batches.iter().map(|b| b.len()).sum();
            let mut results = Vec::new();
            let mut late: Vec<(String, Event)> = Vec::new();
            // What transforms see: never cancelled, the node's resources.
            let cx = self.plugins.context(CancellationToken::new());
            for pipeline in state.pipelines.iter_mut().filter(|p| p.running) {
                let Pipeline {
                    engine,
                    transform,
                    counters,
                    offset,
                    ..
                } = pipeline;
                let events = batches.iter().flat_map(|b| b.iter());
                for event in events.filter(|e| e.offset > *offset) {
                    let Some(transform) = transform else {
                        offer((engine, counters), event, &mut results, &mut late);
                        continue;
                    };
                    if !engine.takes_type(&event.event_type) {
                        continue;
                    }
                    let derived = transform.apply(event, &cx).await.unwrap_or_else(|reason| {
                        counters.transform_errors += 1;
                        tracing::debug!(pipeline = %engine.spec().id, event = %event.event_id, %reason, "transform failed; event skipped");
                        Vec::new()
                    });
                    if derived.is_empty() {
                        // Dropped, but its source has still got this far.
                        engine.observe(&event.source, event.timestamp_ms);
                        let closed = engine.advance();
                        counters.emitted += closed.len() as u64;
                        results.extend(closed);
                    }
                    for event in &derived {
                        offer((engine, counters), event, &mut results, &mut late);
                    }
                }
                *offset = (*offset).max(last);
            }
            self.commit(state, &results, &late)?;
            metrics::counter!("troupe_windows_emitted_total").increment(results.len() as u64);
            metrics::counter!("troupe_events_late_total").increment(late.len() as u64);
            if read < PAGE {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn status_of(&self, p: &Pipeline) -> PipelineStatus {
        PipelineStatus {
            spec: p.engine.spec().clone(),
            running: p.running,
            shard: self.index,
            offset: p.offset,
            watermark_ms: p.engine.watermark(),
            source_watermarks: p.engine.source_watermarks(),
            open_windows: p.engine.open_windows(),
            counters: p.counters.clone(),
        }
    }

    fn add(
        &self,
        state: &mut ShardState,
        spec: PipelineSpec,
        from_latest: bool,
    ) -> Result<PipelineStatus, String> {
        if state
            .pipelines
            .iter()
            .any(|p| p.engine.spec().id == spec.id)
        {
            return Err(format!("pipeline {} exists", spec.id));
        }
        let offset = if from_latest {
            state.log.tail().map_err(|e| e.to_string())?.0
        } else {
            0
        };
        let transform = self.transform(&spec)?;
        state.pipelines.push(Pipeline {
            engine: WindowEngine::new(spec),
            transform,
            counters: Counters::default(),
            offset,
            running: true,
        });
        self.commit(state, &[], &[]).map_err(|e| e.to_string())?;
        Ok(state
            .pipelines
            .last()
            .map(|p| self.status_of(p))
            .ok_or("lost")?)
    }

    fn set_running(
        &self,
        state: &mut ShardState,
        id: &str,
        running: bool,
    ) -> Result<Option<PipelineStatus>, String> {
        let Some(index) = state
            .pipelines
            .iter()
            .position(|p| p.engine.spec().id == id)
        else {
            return Ok(None);
        };
        state.pipelines[index].running = running;
        self.commit(state, &[], &[]).map_err(|e| e.to_string())?;
        Ok(Some(self.status_of(&state.pipelines[index])))
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
        let checkpoint: Checkpoint = match store.checkpoint(self.index)? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => Checkpoint::default(),
        };
        let mut saved: BTreeMap<String, Saved> = checkpoint
            .pipelines
            .into_iter()
            .map(|s| (s.spec.id.clone(), s))
            .collect();
        let resume = |saved: Saved| -> Result<Pipeline, String> {
            Ok(Pipeline {
                transform: self.transform(&saved.spec)?,
                engine: WindowEngine::resume(saved.spec, saved.state),
                counters: saved.counters,
                offset: saved.offset,
                running: saved.running,
            })
        };
        let mut pipelines = Vec::new();
        // Pipelines of the config; one whose spec changed starts afresh.
        for spec in &self.pipelines {
            match saved.remove(&spec.id) {
                Some(s) if s.spec == *spec => pipelines.push(resume(s)?),
                previous => {
                    if previous.is_some() {
                        tracing::warn!(pipeline = %spec.id, "spec changed in the config; its windows start again from the log's start");
                    }
                    pipelines.push(Pipeline {
                        engine: WindowEngine::new(spec.clone()),
                        transform: self.transform(spec)?,
                        counters: Counters::default(),
                        offset: 0,
                        running: true,
                    });
                }
            }
        }
        // Pipelines created over the API.
        for s in saved.into_values() {
            pipelines.push(resume(s)?);
        }
        myself.send_interval(TICK, || ShardMsg::Tick);
        Ok(ShardState {
            log,
            store,
            pipelines,
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
                if self.catch_up(state).await? {
                    // More to read: go on after whatever else is waiting.
                    let _ = myself.send_message(ShardMsg::Tick);
                }
            }
            ShardMsg::Status(reply) => {
                let _ = reply.send(state.pipelines.iter().map(|p| self.status_of(p)).collect());
            }
            ShardMsg::Checkpoint(reply) => {
                let caught_up = loop {
                    match self.catch_up(state).await {
                        Ok(true) => continue,
                        Ok(false) => {
                            break Ok(state.pipelines.iter().map(|p| p.offset).max().unwrap_or(0))
                        }
                        Err(e) => break Err(e.to_string()),
                    }
                };
                let _ = reply.send(caught_up);
            }
            ShardMsg::Add {
                spec,
                from_latest,
                reply,
            } => {
                let _ = reply.send(self.add(state, spec, from_latest));
            }
            ShardMsg::SetRunning { id, running, reply } => {
                let _ = reply.send(self.set_running(state, &id, running));
            }
            ShardMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
        Ok(())
    }
}
