//! Storage as the actors see it: small traits that `node` implements over
//! sled (and later PostgreSQL), and an in-memory version for tests.
//!
//! Actors acquire their stores in `pre_start` through [`Storage`], so a
//! restarted actor re-opens what it uses instead of inheriting it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::collections::BTreeMap;

use troupe_protocol::{Event, ScheduleRecord, TaskRecord, TaskState, WindowResult};

/// A storage failure, with whether retrying can help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be read or written (disk, I/O, closed).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes did not decode: a bug or a damaged store.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// Key of the bad record.
        key: String,
        /// Decoder message.
        reason: String,
    },
}

/// Outcome of [`TaskStore::insert_new`].
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// The record was written and is durable.
    Created,
    /// A task with the same idempotency key exists already; nothing written.
    Existing(Box<TaskRecord>),
}

/// Durable task records of one node.
pub trait TaskStore: Send + Sync {
    /// Writes `record` unless its idempotency key is taken. Not durable
    /// until [`TaskStore::flush`]: callers flush once before acknowledging,
    /// so a batch shares one flush.
    fn insert_new(&self, record: &TaskRecord) -> Result<Inserted, StoreError>;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Up to `limit` records after id `after` (ids sort by submission
    /// time), in `state` and owned by `owner` if given; and the cursor of
    /// the next page.
    fn page(
        &self,
        after: Option<&str>,
        state: Option<TaskState>,
        owner: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TaskRecord>, Option<String>), StoreError>;
    /// The record with this id.
    fn get(&self, id: &str) -> Result<Option<TaskRecord>, StoreError>;
    /// Overwrites an existing record (state changes); not flushed.
    fn put(&self, record: &TaskRecord) -> Result<(), StoreError>;
    /// Every record `keep` accepts (a full scan: for start-up and
    /// membership changes, not for requests).
    fn matching(&self, keep: &dyn Fn(&TaskRecord) -> bool) -> Result<Vec<TaskRecord>, StoreError>;
}

/// The schedules a node holds (as owner or as a replica).
pub trait ScheduleStore: Send + Sync {
    /// Writes `record` durably (flushed before returning).
    fn put(&self, record: &ScheduleRecord) -> Result<(), StoreError>;
    /// Forgets schedule `id`; whether it was held.
    fn delete(&self, id: &str) -> Result<bool, StoreError>;
    /// Every schedule held.
    fn all(&self) -> Result<Vec<ScheduleRecord>, StoreError>;
}

/// Which events a page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this source.
    pub source: Option<String>,
    /// Event time at or after this, ms since the Unix epoch.
    pub from_ms: Option<u64>,
    /// Event time before this.
    pub to_ms: Option<u64>,
}

impl EventFilter {
    /// Whether `event` passes.
    pub fn admits(&self, event: &Event) -> bool {
        self.source.as_ref().is_none_or(|s| *s == event.source)
            && self.from_ms.is_none_or(|from| event.timestamp_ms >= from)
            && self.to_ms.is_none_or(|to| event.timestamp_ms < to)
    }
}

/// A node's event log: events in arrival order (offsets from 1), their ids
/// for deduplication, and per-source counts.
pub trait EventStore: Send + Sync {
    /// The last offset written (0 for an empty log) and the per-source counts.
    fn tail(&self) -> Result<(u64, BTreeMap<String, u64>), StoreError>;
    /// Which of these ids the log holds (one call per batch: the log may
    /// be shared with readers, and a lock per id was contended).
    fn known(&self, event_ids: &[&str]) -> Result<Vec<bool>, StoreError>;
    /// Writes `events` (offsets assigned) and counts them per source, all
    /// or nothing. Not durable until [`EventStore::flush`].
    fn append(&self, events: Arc<[Event]>) -> Result<(), StoreError>;
    /// Makes everything appended so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Deletes every event older (by event time) than `cutoff_ms`, with its
    /// id (a resent copy is new again) and its share of the per-source
    /// counts; offsets are never reused. Returns how many went.
    fn retain(&self, cutoff_ms: u64) -> Result<u64, StoreError>;
    /// Up to `limit` events after offset `after` that `filter` admits, and
    /// the cursor (last offset read) when more may follow. Reads lazily.
    fn page(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<u64>), StoreError>;
    /// Events after offset `after` in batches as they were appended, at
    /// least `min` of them unless the log ends first; the first batch may
    /// also hold events at or before `after`. For window shards: a log may
    /// keep its newest batches in memory, shared with the writer, so a
    /// reader that keeps up decodes nothing.
    fn read(&self, after: u64, min: usize) -> Result<Vec<Arc<[Event]>>, StoreError> {
        let (events, _) = self.page(after, &EventFilter::default(), min)?;
        Ok(if events.is_empty() {
            Vec::new()
        } else {
            vec![events.into()]
        })
    }
}

/// Which window results a page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultFilter {
    /// The pipeline.
    pub pipeline: String,
    /// Only this key.
    pub key: Option<String>,
    /// Windows starting at or after this.
    pub from_ms: Option<u64>,
    /// Windows starting before this.
    pub to_ms: Option<u64>,
}

/// What window shards keep: closed windows' results (one per pipeline,
/// key and window start, so writing one again changes nothing), late
/// events, and each shard's checkpoint — written together, atomically.
pub trait WindowStore: Send + Sync {
    /// Shard `shard`'s last checkpoint.
    fn checkpoint(&self, shard: usize) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores results and late events (per pipeline) with the checkpoint
    /// that covers them, all or nothing; with `outbox`, the results also
    /// wait in the outbox for an external sink.
    fn commit(
        &self,
        shard: usize,
        results: &[WindowResult],
        late: &[(String, Event)],
        checkpoint: &[u8],
        outbox: bool,
    ) -> Result<(), StoreError>;
    /// Up to `limit` results waiting for the external sink.
    fn outbox(&self, limit: usize) -> Result<Vec<WindowResult>, StoreError>;
    /// Takes results the sink has written out of the outbox.
    fn outbox_done(&self, written: &[WindowResult]) -> Result<(), StoreError>;
    /// Results waiting in the outbox.
    fn outbox_len(&self) -> Result<u64, StoreError>;
    /// Makes every commit so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// A page of results in (key, window start) order, and the cursor of
    /// the next page.
    fn results(
        &self,
        filter: &ResultFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<WindowResult>, Option<String>), StoreError>;
    /// A page of a pipeline's late events in log order, and the cursor.
    fn late(
        &self,
        pipeline: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<u64>), StoreError>;
}

/// One node's storage: opens the stores that actors use.
pub trait Storage: Send + Sync {
    /// The task table.
    fn tasks(&self) -> Result<Arc<dyn TaskStore>, StoreError>;
    /// The schedules.
    fn schedules(&self) -> Result<Arc<dyn ScheduleStore>, StoreError>;
    /// The event log.
    fn events(&self) -> Result<Arc<dyn EventStore>, StoreError>;
    /// Window results, late events and shard checkpoints.
    fn windows(&self) -> Result<Arc<dyn WindowStore>, StoreError>;
    /// Whether the store answers (for `/ready`).
    fn check(&self) -> Result<(), StoreError>;
}

/// One page of a listing read lazily: up to `limit` items, and the
/// cursor of the last one when more follow (one item past the page is
/// read to know). Stops at the first error.
pub fn page_of<T, C>(
    items: impl Iterator<Item = Result<T, StoreError>>,
    limit: usize,
    cursor: impl Fn(&T) -> C,
) -> Result<(Vec<T>, Option<C>), StoreError> {
    let mut page = Vec::new();
    for item in items {
        let item = item?;
        if page.len() == limit {
            let next = page.last().map(&cursor);
            return Ok((page, next));
        }
        page.push(item);
    }
    Ok((page, None))
}

/// A page of tasks (in id order) in `state` and of `owner`.
pub fn paginate(
    records: impl Iterator<Item = Result<TaskRecord, StoreError>>,
    state: Option<TaskState>,
    owner: Option<&str>,
    limit: usize,
) -> Result<(Vec<TaskRecord>, Option<String>), StoreError> {
    let wanted =
        |r: &TaskRecord| state.is_none_or(|s| r.state == s) && owner.is_none_or(|o| r.owner == o);
    page_of(
        records.filter(|r| r.as_ref().map_or(true, wanted)),
        limit,
        |r| r.id.clone(),
    )
}

/// Locks an in-memory store (a poisoned lock is an unavailable store).
fn locked<T>(mutex: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, StoreError> {
    mutex
        .lock()
        .map_err(|_| StoreError::Unavailable("lock poisoned".into()))
}

/// Storage in memory, for tests of actors.
#[derive(Debug, Default, Clone)]
pub struct MemoryStorage {
    tasks: Arc<MemoryTasks>,
    schedules: Arc<MemorySchedules>,
    events: Arc<MemoryEvents>,
    windows: Arc<MemoryWindows>,
}

#[derive(Debug, Default)]
struct WindowMaps {
    checkpoints: HashMap<usize, Vec<u8>>,
    results: BTreeMap<(String, String, u64), WindowResult>,
    late: BTreeMap<(String, u64), Event>,
    outbox: BTreeMap<(String, String, u64), WindowResult>,
}

#[derive(Debug, Default)]
struct MemoryWindows(Mutex<WindowMaps>);

impl WindowStore for MemoryWindows {
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn checkpoint(&self, shard: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(locked(&self.0)?.checkpoints.get(&shard).cloned())
    }

    fn commit(
        &self,
        shard: usize,
        results: &[WindowResult],
        late: &[(String, Event)],
        checkpoint: &[u8],
        outbox: bool,
    ) -> Result<(), StoreError> {
        let mut maps = locked(&self.0)?;
        for r in results {
            let id = (r.pipeline.clone(), r.key.clone(), r.window_start_ms);
            if outbox {
                maps.outbox.insert(id.clone(), r.clone());
            }
            maps.results.insert(id, r.clone());
        }
        for (pipeline, event) in late {
            maps.late
                .insert((pipeline.clone(), event.offset), event.clone());
        }
        maps.checkpoints.insert(shard, checkpoint.to_vec());
        Ok(())
    }

    fn results(
        &self,
        filter: &ResultFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<WindowResult>, Option<String>), StoreError> {
        let maps = locked(&self.0)?;
        let items = maps
            .results
            .values()
            .filter(|r| r.pipeline == filter.pipeline)
            .filter(|r| filter.key.as_ref().is_none_or(|k| *k == r.key))
            .filter(|r| filter.from_ms.is_none_or(|f| r.window_start_ms >= f))
            .filter(|r| filter.to_ms.is_none_or(|t| r.window_start_ms < t))
            .filter(|r| {
                after.is_none_or(|a| format!("{}:{}", r.key, r.window_start_ms).as_str() > a)
            })
            .map(|r| Ok(r.clone()));
        page_of(items, limit, |r| format!("{}:{}", r.key, r.window_start_ms))
    }

    fn outbox(&self, limit: usize) -> Result<Vec<WindowResult>, StoreError> {
        Ok(locked(&self.0)?
            .outbox
            .values()
            .take(limit)
            .cloned()
            .collect())
    }

    fn outbox_done(&self, written: &[WindowResult]) -> Result<(), StoreError> {
        let mut maps = locked(&self.0)?;
        for r in written {
            maps.outbox
                .remove(&(r.pipeline.clone(), r.key.clone(), r.window_start_ms));
        }
        Ok(())
    }

    fn outbox_len(&self) -> Result<u64, StoreError> {
        Ok(locked(&self.0)?.outbox.len() as u64)
    }

    fn late(
        &self,
        pipeline: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<u64>), StoreError> {
        let maps = locked(&self.0)?;
        let items = maps
            .late
            .range((pipeline.to_owned(), after.saturating_add(1))..=(pipeline.to_owned(), u64::MAX))
            .map(|(_, e)| Ok(e.clone()));
        page_of(items, limit, |e| e.offset)
    }
}

/// Events, per-source counts, last offset written.
type EventLog = (Vec<Event>, BTreeMap<String, u64>, u64);

#[derive(Debug, Default)]
struct MemoryEvents(Mutex<EventLog>);

impl EventStore for MemoryEvents {
    fn tail(&self) -> Result<(u64, BTreeMap<String, u64>), StoreError> {
        let log = locked(&self.0)?;
        Ok((log.2, log.1.clone()))
    }

    fn known(&self, event_ids: &[&str]) -> Result<Vec<bool>, StoreError> {
        let log = locked(&self.0)?;
        Ok(event_ids
            .iter()
            .map(|id| log.0.iter().any(|e| e.event_id == *id))
            .collect())
    }

    fn append(&self, events: Arc<[Event]>) -> Result<(), StoreError> {
        let mut log = locked(&self.0)?;
        log.0.extend_from_slice(&events);
        log.2 = events.last().map_or(log.2, |e| e.offset);
        for event in events.iter() {
            *log.1.entry(event.source.clone()).or_default() += 1;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn retain(&self, cutoff_ms: u64) -> Result<u64, StoreError> {
        let mut log = locked(&self.0)?;
        let (kept, gone): (Vec<Event>, Vec<Event>) =
            log.0.drain(..).partition(|e| e.timestamp_ms >= cutoff_ms);
        log.0 = kept;
        for event in &gone {
            if let Some(count) = log.1.get_mut(&event.source) {
                *count = count.saturating_sub(1);
            }
        }
        log.1.retain(|_, count| *count > 0);
        Ok(gone.len() as u64)
    }

    fn page(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<u64>), StoreError> {
        let log = locked(&self.0)?;
        let items = log
            .0
            .iter()
            .filter(|e| e.offset > after && filter.admits(e))
            .map(|e| Ok(e.clone()));
        page_of(items, limit, |e| e.offset)
    }
}

#[derive(Debug, Default)]
struct MemorySchedules(Mutex<HashMap<String, ScheduleRecord>>);

impl ScheduleStore for MemorySchedules {
    fn put(&self, record: &ScheduleRecord) -> Result<(), StoreError> {
        locked(&self.0)?.insert(record.id.clone(), record.clone());
        Ok(())
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        Ok(locked(&self.0)?.remove(id).is_some())
    }

    fn all(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        Ok(locked(&self.0)?.values().cloned().collect())
    }
}

#[derive(Debug, Default)]
struct MemoryTasks {
    records: Mutex<MemoryMaps>,
}

impl Storage for MemoryStorage {
    fn tasks(&self) -> Result<Arc<dyn TaskStore>, StoreError> {
        Ok(self.tasks.clone())
    }

    fn schedules(&self) -> Result<Arc<dyn ScheduleStore>, StoreError> {
        Ok(self.schedules.clone())
    }

    fn events(&self) -> Result<Arc<dyn EventStore>, StoreError> {
        Ok(self.events.clone())
    }

    fn windows(&self) -> Result<Arc<dyn WindowStore>, StoreError> {
        Ok(self.windows.clone())
    }

    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

type MemoryMaps = (HashMap<String, TaskRecord>, HashMap<String, String>);

impl TaskStore for MemoryTasks {
    fn insert_new(&self, record: &TaskRecord) -> Result<Inserted, StoreError> {
        let mut guard = locked(&self.records)?;
        let (by_id, by_key) = &mut *guard;
        if let Some(existing) = by_key.get(&record.key).and_then(|id| by_id.get(id)) {
            return Ok(Inserted::Existing(Box::new(existing.clone())));
        }
        by_key.insert(record.key.clone(), record.id.clone());
        by_id.insert(record.id.clone(), record.clone());
        Ok(Inserted::Created)
    }

    fn get(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        Ok(locked(&self.records)?.0.get(id).cloned())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn page(
        &self,
        after: Option<&str>,
        state: Option<TaskState>,
        owner: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TaskRecord>, Option<String>), StoreError> {
        let guard = locked(&self.records)?;
        let mut ids: Vec<&String> = guard
            .0
            .keys()
            .filter(|id| after.is_none_or(|a| id.as_str() > a))
            .collect();
        ids.sort();
        paginate(
            ids.into_iter()
                .filter_map(|id| guard.0.get(id).cloned())
                .map(Ok),
            state,
            owner,
            limit,
        )
    }

    fn put(&self, record: &TaskRecord) -> Result<(), StoreError> {
        let mut guard = locked(&self.records)?;
        guard.1.insert(record.key.clone(), record.id.clone());
        guard.0.insert(record.id.clone(), record.clone());
        Ok(())
    }

    fn matching(&self, keep: &dyn Fn(&TaskRecord) -> bool) -> Result<Vec<TaskRecord>, StoreError> {
        Ok(locked(&self.records)?
            .0
            .values()
            .filter(|r| keep(r))
            .cloned()
            .collect())
    }
}
