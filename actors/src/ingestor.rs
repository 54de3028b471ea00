//! The ingestor (`node/ingest/ingestor`): the one writer of the event log.
//!
//! Being the only writer, it hands out offsets in order and deduplicates
//! by event id without races: an id already in the log, or earlier in the
//! same batch, is counted as a duplicate and not written. A batch is
//! written all or nothing; the caller flushes before it acknowledges (one
//! flush shared by all batches in flight, outside this actor). The log
//! counts events per source as it appends them, so `GET /stats` survives
//! restarts.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use troupe_protocol::{EventPage, IngestReply, IngestStats};

use crate::ingest::Admitted;
use crate::shard::LiveWatermarks;
use crate::store::{EventFilter, EventStore, Storage, StoreError};

/// Messages of the ingestor.
pub enum IngestorMsg {
    /// Append these events (deduplicated), all or nothing.
    Append(Vec<Admitted>, RpcReplyPort<Result<IngestReply, StoreError>>),
    /// Per-source totals.
    Stats(RpcReplyPort<Result<IngestStats, StoreError>>),
    /// Delete events older than this event time (ms); how many went.
    Retain(u64, RpcReplyPort<Result<u64, StoreError>>),
    /// A page of the log.
    Page {
        /// Events after this offset.
        after: u64,
        /// Which events.
        filter: EventFilter,
        /// Page size.
        limit: usize,
        /// The page.
        reply: RpcReplyPort<Result<EventPage, StoreError>>,
    },
    /// Panic with this reason.
    InjectedFault(String),
}

crate::fault_injection!(IngestorMsg);

/// The ingestor actor.
#[derive(Clone)]
pub struct Ingestor {
    /// Where the event log lives.
    pub storage: Arc<dyn Storage>,
    /// The pipelines' watermarks, to count events late on arrival.
    pub watermarks: Arc<LiveWatermarks>,
}

/// The ingestor's state: the log and what it knows of its tail.
pub struct IngestorState {
    log: Arc<dyn EventStore>,
    last_offset: u64,
    duplicates: u64,
}

fn count(outcome: &'static str, n: u64) {
    metrics::counter!("troupe_events_total", "outcome" => outcome).increment(n);
}

impl Ingestor {
    fn append(
        state: &mut IngestorState,
        watermarks: &LiveWatermarks,
        batch: Vec<Admitted>,
    ) -> Result<IngestReply, StoreError> {
        let mut reply = IngestReply::default();
        // Which of the batch are repeats, of the log or of an earlier one
        // in the batch; a generated id is new by construction.
        let mut repeated = vec![false; batch.len()];
        {
            let mut seen: foldhash::HashSet<&str> =
                foldhash::HashSet::with_capacity_and_hasher(batch.len(), Default::default());
            let mut ask = Vec::with_capacity(batch.len());
            for (i, admitted) in batch.iter().enumerate() {
                let id = admitted.event.event_id.as_str();
                if admitted.id_assigned {
                    continue;
                }
                if seen.insert(id) {
                    ask.push((i, id));
                } else {
                    repeated[i] = true;
                }
            }
            let ids: Vec<&str> = ask.iter().map(|(_, id)| *id).collect();
            for ((i, _), known) in ask.iter().zip(state.log.known(&ids)?) {
                repeated[*i] = known;
            }
        }
        let mut events = Vec::with_capacity(batch.len());
        let mut offset = state.last_offset;
        for (admitted, repeated) in batch.into_iter().zip(repeated) {
            if repeated {
                reply.duplicate += 1;
                continue;
            }
            let mut event = admitted.event;
            offset += 1;
            event.offset = offset;
            reply.accepted += 1;
            reply.ids_assigned += u64::from(admitted.id_assigned);
            reply.timestamps_assigned += u64::from(admitted.time_assigned);
            events.push(event);
        }
        if !events.is_empty() {
            reply.late = watermarks.count_late(&events);
            state.log.append(events.into())?;
            reply.offsets = Some((state.last_offset + 1, offset));
            state.last_offset = offset;
        }
        state.duplicates += reply.duplicate;
        count("accepted", reply.accepted);
        count("duplicate", reply.duplicate);
        Ok(reply)
    }
}

impl Actor for Ingestor {
    type Msg = IngestorMsg;
    type State = IngestorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let log = self.storage.events()?;
        let (last_offset, _) = log.tail()?;
        Ok(IngestorState {
            log,
            last_offset,
            duplicates: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            IngestorMsg::Append(batch, reply) => {
                let _ = reply.send(Self::append(state, &self.watermarks, batch));
            }
            IngestorMsg::Retain(cutoff, reply) => {
                let _ = reply.send(state.log.retain(cutoff));
            }
            IngestorMsg::Stats(reply) => {
                // The log keeps the per-source counts.
                let stats = state.log.tail().map(|(_, sources)| IngestStats {
                    events: sources.values().sum(),
                    duplicates: state.duplicates,
                    sources,
                });
                let _ = reply.send(stats);
            }
            IngestorMsg::Page {
                after,
                filter,
                limit,
                reply,
            } => {
                let page = state
                    .log
                    .page(after, &filter, limit)
                    .map(|(events, cursor)| EventPage {
                        events,
                        next_cursor: cursor.map(|c| c.to_string()),
                    });
                let _ = reply.send(page);
            }
            IngestorMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::admit;
    use crate::store::MemoryStorage;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn event(id: Option<&str>, source: &str) -> Admitted {
        let mut body = json!({"source": source, "event_type": "t", "data": {}});
        if let Some(id) = id {
            body["event_id"] = json!(id);
        }
        admit(serde_json::from_value(body).expect("shape"), 7).expect("valid")
    }

    #[tokio::test]
    async fn duplicates_are_counted_not_written_and_offsets_run_on() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let (actor, handle) = Actor::spawn(
            None,
            Ingestor {
                storage: Arc::clone(&storage),
                watermarks: Arc::default(),
            },
            (),
        )
        .await
        .expect("spawn");
        let append = |batch: Vec<Admitted>| {
            let actor = actor.clone();
            async move {
                actor
                    .call(|r| IngestorMsg::Append(batch, r), None)
                    .await
                    .expect("call")
                    .expect("answer")
                    .expect("stored")
            }
        };
        let first = append(vec![
            event(Some("a"), "s1"),
            event(Some("a"), "s1"),
            event(None, "s2"),
        ])
        .await;
        assert_eq!(
            (first.accepted, first.duplicate, first.ids_assigned),
            (2, 1, 1)
        );
        assert_eq!(first.offsets, Some((1, 2)));
        let second = append(vec![event(Some("a"), "s1"), event(Some("b"), "s1")]).await;
        assert_eq!((second.accepted, second.duplicate), (1, 1));
        assert_eq!(second.offsets, Some((3, 3)));
        let stats = actor
            .call(IngestorMsg::Stats, None)
            .await
            .expect("call")
            .expect("answer")
            .expect("stats");
        assert_eq!(stats.events, 3);
        assert_eq!(
            stats.sources,
            BTreeMap::from([("s1".into(), 2), ("s2".into(), 1)])
        );
        actor.stop(None);
        handle.await.expect("stopped");

        // A new incarnation picks up the tail and the counts.
        let (actor, _) = Actor::spawn(
            None,
            Ingestor {
                storage,
                watermarks: Arc::default(),
            },
            (),
        )
        .await
        .expect("spawn");
        let third = actor
            .call(
                |r| IngestorMsg::Append(vec![event(Some("a"), "s1"), event(Some("c"), "s2")], r),
                None,
            )
            .await
            .expect("call")
            .expect("answer")
            .expect("stored");
        assert_eq!(
            (third.accepted, third.duplicate, third.offsets),
            (1, 1, Some((4, 4)))
        );
    }
}
