//! The results sink (`node/sinks/postgres`): drains the window results
//! outbox into an external store (PostgreSQL), in batches.
//!
//! Shards put every closed window into a durable local outbox in the same
//! commit as the result itself; this actor writes the oldest batch out and
//! only then takes it out of the outbox. While the external store is down
//! it keeps retrying (with backoff) and the outbox grows — nothing is
//! lost, and `/ready` shows the sink down and how much waits. A write that
//! is repeated after a crash changes nothing: the sink upserts on
//! (pipeline, key, window start). The connection is made and the schema
//! migrated on the first write, not in `pre_start`: a database that is down
//! must not make the supervisor give up on the node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use troupe_protocol::{SinkHealth, WindowResult};

use crate::store::{Storage, WindowStore};

/// Results written per batch.
const BATCH: usize = 500;
/// How often the outbox is looked at.
const TICK: Duration = Duration::from_millis(200);
/// Longest wait between attempts while the store is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// An external store for window results.
pub trait ResultSink: Send + Sync {
    /// Upserts `results` on (pipeline, key, window start); connects and
    /// migrates first if needed. `Err` says why, in one line.
    fn write<'a>(&'a self, results: &'a [WindowResult]) -> BoxFuture<'a, Result<(), String>>;
}

/// Shared view of the sink's health, for `/ready`.
pub type SinkStatus = Arc<Mutex<SinkHealth>>;

/// Messages of the sink actor.
pub enum SinkMsg {
    /// Drain what waits.
    Tick,
    /// Panic with this reason.
    InjectedFault(String),
}

crate::fault_injection!(SinkMsg);

/// The sink actor.
#[derive(Clone)]
pub struct SinkActor {
    /// Where results go.
    pub sink: Arc<dyn ResultSink>,
    /// Where the outbox is.
    pub storage: Arc<dyn Storage>,
    /// Health, shared with `/ready`.
    pub status: SinkStatus,
}

/// The sink actor's state.
pub struct SinkState {
    store: Arc<dyn WindowStore>,
    failures: u32,
    skip_until: tokio::time::Instant,
}

impl SinkActor {
    fn report(&self, update: impl FnOnce(&mut SinkHealth)) {
        if let Ok(mut health) = self.status.lock() {
            update(&mut health);
        }
    }

    async fn drain(&self, state: &mut SinkState) -> Result<(), ActorProcessingErr> {
        if tokio::time::Instant::now() < state.skip_until {
            return Ok(());
        }
        loop {
            let batch = state.store.outbox(BATCH)?;
            if batch.is_empty() {
                self.report(|h| h.queued = 0);
                return Ok(());
            }
            match self.sink.write(&batch).await {
                Ok(()) => {
                    state.store.outbox_done(&batch)?;
                    state.failures = 0;
                    metrics::counter!("troupe_sink_written_total").increment(batch.len() as u64);
                    self.report(|h| {
                        h.up = true;
                        h.error = None;
                        h.written += batch.len() as u64;
                    });
                }
                Err(error) => {
                    state.failures = state.failures.saturating_add(1);
                    let wait = TICK
                        .saturating_mul(1 << state.failures.min(5))
                        .min(MAX_BACKOFF);
                    state.skip_until = tokio::time::Instant::now() + wait;
                    let queued = state.store.outbox_len()?;
                    tracing::warn!(queued, retry_in = ?wait, "results sink down: {error}");
                    metrics::counter!("troupe_sink_failures_total").increment(1);
                    self.report(|h| {
                        h.up = false;
                        h.queued = queued;
                        h.error = Some(error);
                    });
                    return Ok(());
                }
            }
        }
    }
}

impl Actor for SinkActor {
    type Msg = SinkMsg;
    type State = SinkState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let store = self.storage.windows()?;
        myself.send_interval(TICK, || SinkMsg::Tick);
        Ok(SinkState {
            store,
            failures: 0,
            skip_until: tokio::time::Instant::now(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SinkMsg::Tick => self.drain(state).await?,
            SinkMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
        Ok(())
    }
}
