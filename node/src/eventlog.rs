//! The node's event log: append-only segment files plus an id index, under
//! `<data dir>/events`.
//!
//! DESIGN.md puts the event log in sled. It was there first, and it set the
//! ceiling: sled's cost is per key, and deduplication needs a key per event
//! id, so ingestion spent most of its time in sled's allocator and page
//! cache (~50–90k events/s, and sled's per-id index grew the node past
//! 400 MiB on a 2 GB body). Here an append is one `write` of one frame per
//! batch ([`segments`]), and ids live in a bounded-memory index of sorted
//! runs with Bloom filters ([`ids`]). Tasks, schedules and window results
//! stay in sled.
//!
//! What is derived — the id index and the per-source counts — is recorded
//! in `manifest.json` with the offset it covers, each time the index writes
//! a run; on opening, the log replays the events after that offset. Offsets
//! are never handed out twice: the manifest keeps the last offset deleted
//! by retention as a floor.

pub mod ids;
pub mod segments;

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use troupe_actors::store::{EventFilter, EventStore, StoreError};
use troupe_protocol::Event;

use ids::IdIndex;
use segments::{encode, read_frame, FrameError, FrameInfo, Segment, SEGMENT_BYTES};

const MANIFEST: &str = "manifest.json";
/// Batches kept in memory for readers (up to a few MiB): a window shard
/// a little behind the ingestor reads them instead of decoding frames
/// (4 → 8: 459-490k → 457-500k events/s in `bench events`).
const RECENT: usize = 8;

/// Why the event log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file could not be read or written.
    #[error("event log in {dir}: {source}")]
    Io {
        /// The log's directory.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A closed segment is damaged.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The manifest is not one this code wrote.
    #[error("event log manifest {path}: {source}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
}

/// What the log derives from its events, as of offset `covered`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    /// Every event up to this offset is in the id index's runs and counted.
    covered: u64,
    /// The last offset retention deleted: offsets continue above it.
    floor: u64,
    /// Id index runs, by level.
    runs: Vec<Vec<String>>,
    /// Events per source.
    sources: BTreeMap<String, u64>,
}

/// The event log of one node (see the module docs).
pub struct EventLog {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    /// In offset order; the last is written to.
    segments: Vec<Segment>,
    ids: IdIndex,
    /// Events per source (hashed: counted for every event appended).
    sources: foldhash::HashMap<String, u64>,
    covered: u64,
    floor: u64,
    /// Reused encoding buffer.
    frame: Vec<u8>,
    /// The newest batches as appended, oldest first: window shards that
    /// keep up read these instead of decoding frames.
    recent: VecDeque<Arc<[Event]>>,
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

impl Inner {
    fn last_offset(&self) -> u64 {
        self.segments
            .iter()
            .rev()
            .find_map(Segment::last)
            .unwrap_or(0)
            .max(self.floor)
    }

    /// The first frame holding an offset above `cursor`.
    fn frame_after(&self, cursor: u64) -> Option<(Arc<std::fs::File>, PathBuf, FrameInfo)> {
        let at = self
            .segments
            .partition_point(|s| s.last().is_some_and(|last| last <= cursor));
        let segment = self.segments[at..].iter().find(|s| !s.frames.is_empty())?;
        let frame = segment.frames[segment.frames.partition_point(|f| f.last <= cursor)];
        Some((Arc::clone(&segment.file), segment.path.clone(), frame))
    }

    /// Adds events already in the log to the index and counts (opening,
    /// rebuilding after retention); writes runs as the index fills.
    fn derive(&mut self, dir: &Path, events: &[Event]) -> Result<(), StoreError> {
        for event in events {
            self.count(&event.source);
            if self.ids.insert(ids::hash(&event.event_id)) {
                self.persist(dir, event.offset)?;
            }
        }
        Ok(())
    }

    /// Events per source, in name order.
    fn sources_sorted(&self) -> BTreeMap<String, u64> {
        self.sources
            .iter()
            .map(|(source, n)| (source.clone(), *n))
            .collect()
    }

    /// One more event of `source` (its name is copied only the first time).
    fn count(&mut self, source: &str) {
        match self.sources.get_mut(source) {
            Some(n) => *n += 1,
            None => {
                self.sources.insert(source.to_owned(), 1);
            }
        }
    }

    /// Writes the index's memory table as a run and the manifest saying it
    /// covers up to `covered`.
    fn persist(&mut self, dir: &Path, covered: u64) -> Result<(), StoreError> {
        let merged = self.ids.persist().map_err(unavailable)?;
        self.covered = covered;
        self.write_manifest(dir)?;
        self.ids.remove_merged(&merged).map_err(unavailable)
    }

    fn write_manifest(&self, dir: &Path) -> Result<(), StoreError> {
        let manifest = Manifest {
            covered: self.covered,
            floor: self.floor,
            runs: self.ids.runs(),
            sources: self.sources_sorted(),
        };
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let bytes = serde_json::to_vec(&manifest).map_err(unavailable)?;
        std::fs::write(&tmp, bytes).map_err(unavailable)?;
        std::fs::rename(&tmp, dir.join(MANIFEST)).map_err(unavailable)
    }

    /// Calls `f` with the events of each frame of segment `i`, one frame
    /// in memory at a time.
    fn each_frame(
        &mut self,
        i: usize,
        mut f: impl FnMut(&mut Self, Vec<Event>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let segment = &self.segments[i];
        let (file, path) = (Arc::clone(&segment.file), segment.path.clone());
        for frame in segment.frames.clone() {
            let events = read_frame(&file, &path, frame).map_err(unavailable)?;
            f(self, events)?;
        }
        Ok(())
    }
}

impl EventLog {
    /// Opens (or creates) the log in `dir`, replaying what the manifest
    /// does not cover.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        let io = |source| LogError::Io {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let manifest_path = dir.join(MANIFEST);
        let manifest: Manifest = match std::fs::read(&manifest_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| LogError::Manifest {
                path: manifest_path,
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(io(e)),
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "seg"));
        paths.sort();
        let newest = paths.len().saturating_sub(1);
        let mut segments = paths
            .into_iter()
            .enumerate()
            .map(|(i, path)| Segment::open(path, i == newest))
            .collect::<Result<Vec<_>, _>>()?;
        if segments.is_empty() {
            segments.push(Segment::create(dir, manifest.floor + 1).map_err(io)?);
        }
        let mut inner = Inner {
            segments,
            ids: IdIndex::open(dir, &manifest.runs).map_err(io)?,
            sources: manifest.sources.into_iter().collect(),
            covered: manifest.covered,
            floor: manifest.floor,
            frame: Vec::new(),
            recent: VecDeque::new(),
        };
        // Replay what the manifest does not cover.
        let mut cursor = inner.covered;
        while let Some((file, path, frame)) = inner.frame_after(cursor) {
            let events = read_frame(&file, &path, frame)?;
            let fresh: Vec<Event> = events.into_iter().filter(|e| e.offset > cursor).collect();
            inner
                .derive(dir, &fresh)
                .map_err(|e| io(std::io::Error::other(e.to_string())))?;
            cursor = frame.last;
        }
        Ok(Self {
            dir: dir.to_owned(),
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves nothing half-done that
        // matters more than stopping ingestion would.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EventStore for EventLog {
    fn tail(&self) -> Result<(u64, BTreeMap<String, u64>), StoreError> {
        let inner = self.lock();
        Ok((inner.last_offset(), inner.sources_sorted()))
    }

    fn known(&self, event_ids: &[&str]) -> Result<Vec<bool>, StoreError> {
        let hashes: Vec<u128> = event_ids.iter().map(|id| ids::hash(id)).collect();
        let inner = self.lock();
        hashes
            .into_iter()
            .map(|h| inner.ids.contains(h).map_err(unavailable))
            .collect()
    }

    fn append(&self, events: Arc<[Event]>) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let mut guard = self.lock();
        let inner = &mut *guard;
        encode(&events, &mut inner.frame);
        let full = inner.segments.last().is_none_or(|s| s.len >= SEGMENT_BYTES);
        if full {
            if let Some(closing) = inner.segments.last() {
                closing.file.sync_data().map_err(unavailable)?;
            }
            let segment = Segment::create(&self.dir, first.offset).map_err(unavailable)?;
            inner.segments.push(segment);
        }
        let active = inner
            .segments
            .last_mut()
            .ok_or_else(|| unavailable("no segment"))?;
        active
            .append(&inner.frame, last.offset)
            .map_err(unavailable)?;
        let mut persist = false;
        for event in events.iter() {
            inner.count(&event.source);
            persist |= inner.ids.insert(ids::hash(&event.event_id));
        }
        // The events are in the log now, whatever happens to the index: it
        // is derived, keeps its memory table on failure and is written
        // again with the next batch (or replayed on the next start).
        if persist {
            if let Err(e) = inner.persist(&self.dir, last.offset) {
                tracing::warn!(error = %e, "could not write the event id index; will retry");
            }
        }
        let retired = if inner.recent.len() == RECENT {
            inner.recent.pop_front()
        } else {
            None
        };
        inner.recent.push_back(Arc::clone(&events));
        // Freeing a batch's events is not done holding the log.
        drop(guard);
        drop(retired);
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let file = self.lock().segments.last().map(|s| Arc::clone(&s.file));
        match file {
            Some(file) => file.sync_data().map_err(unavailable),
            None => Ok(()),
        }
    }

    fn retain(&self, cutoff_ms: u64) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let last = inner.last_offset();
        inner.recent.clear();
        let mut removed = 0u64;
        let mut i = 0;
        // A frame at a time, so memory does not grow with the log.
        while i < inner.segments.len() {
            let old = |e: &Event| e.timestamp_ms < cutoff_ms;
            let mut gone = 0;
            inner.each_frame(i, |_, events| {
                gone += events.iter().filter(|e| old(e)).count() as u64;
                Ok(())
            })?;
            if gone == 0 {
                i += 1;
                continue;
            }
            removed += gone;
            let path = inner.segments[i].path.clone();
            let tmp = path.with_extension("tmp");
            let mut out =
                std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(unavailable)?);
            let mut kept = 0;
            let mut frame = Vec::new();
            inner.each_frame(i, |_, mut events| {
                events.retain(|e| !old(e));
                kept += events.len();
                if !events.is_empty() {
                    encode(&events, &mut frame);
                    out.write_all(&frame).map_err(unavailable)?;
                }
                Ok(())
            })?;
            let out = out.into_inner().map_err(|e| unavailable(e.error()))?;
            if kept == 0 && i + 1 < inner.segments.len() {
                drop(out);
                std::fs::remove_file(&tmp).map_err(unavailable)?;
                std::fs::remove_file(&path).map_err(unavailable)?;
                inner.segments.remove(i);
                continue;
            }
            out.sync_data().map_err(unavailable)?;
            std::fs::rename(&tmp, &path).map_err(unavailable)?;
            inner.segments[i] = Segment::open(path, true).map_err(unavailable)?;
            i += 1;
        }
        if removed == 0 {
            return Ok(0);
        }
        // Rebuild what is derived from the events that are left.
        inner.floor = inner.floor.max(last);
        let old = inner.ids.clear();
        inner.sources.clear();
        for s in 0..inner.segments.len() {
            inner.each_frame(s, |inner, events| inner.derive(&self.dir, &events))?;
        }
        inner.persist(&self.dir, last)?;
        inner.ids.remove_merged(&old).map_err(unavailable)?;
        Ok(removed)
    }

    fn read(&self, after: u64, min: usize) -> Result<Vec<Arc<[Event]>>, StoreError> {
        let mut batches = Vec::new();
        let mut cursor = after;
        let mut read = 0;
        while read < min {
            let next = {
                let inner = self.lock();
                let cached = inner.recent.iter().find(|b| {
                    let (first, last) = (b[0].offset, b[b.len() - 1].offset);
                    first <= cursor + 1 && cursor < last
                });
                match cached {
                    Some(batch) => Ok(Arc::clone(batch)),
                    None => Err(inner.frame_after(cursor)),
                }
            };
            let batch: Arc<[Event]> = match next {
                Ok(batch) => batch,
                Err(None) => break,
                Err(Some((file, path, frame))) => {
                    read_frame(&file, &path, frame).map_err(unavailable)?.into()
                }
            };
            let Some(last) = batch.last().map(|e| e.offset) else {
                break;
            };
            read += batch.iter().filter(|e| e.offset > cursor).count();
            cursor = last;
            batches.push(batch);
        }
        Ok(batches)
    }

    fn page(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<u64>), StoreError> {
        // Frame by frame; whether more follow is known from the frame index,
        // without decoding a frame past the page.
        let mut page = Vec::new();
        let mut cursor = after;
        loop {
            // Bound first: the guard must not live through the loop body.
            let next = self.lock().frame_after(cursor);
            let Some((file, path, frame)) = next else {
                break;
            };
            let events = read_frame(&file, &path, frame).map_err(unavailable)?;
            for event in events {
                if event.offset <= after || !filter.admits(&event) {
                    continue;
                }
                if page.len() == limit {
                    let next = page.last().map(|e: &Event| e.offset);
                    return Ok((page, next));
                }
                page.push(event);
            }
            cursor = frame.last;
            if page.len() == limit {
                let more = self.lock().frame_after(cursor).is_some();
                return Ok((page, if more { Some(cursor) } else { None }));
            }
        }
        Ok((page, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(offset: u64, source: &str, time: u64) -> Event {
        Event {
            offset,
            event_id: format!("id-{offset}"),
            source: source.into(),
            event_type: "t".into(),
            timestamp_ms: time,
            received_at_ms: time,
            data: json!({"n": offset})
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into(),
        }
    }

    fn append(log: &EventLog, events: &[Event]) {
        log.append(events.to_vec().into()).expect("append");
    }

    fn has(log: &EventLog, id: &str) -> bool {
        log.known(&[id]).expect("known")[0]
    }

    #[test]
    fn appends_pages_and_reopens_with_ids_counts_and_offsets() {
        let dir = tempfile::tempdir().expect("dir");
        let log = EventLog::open(dir.path()).expect("open");
        append(
            &log,
            &(1..=3).map(|o| event(o, "a", o * 10)).collect::<Vec<_>>(),
        );
        append(
            &log,
            &(4..=5).map(|o| event(o, "b", o * 10)).collect::<Vec<_>>(),
        );
        assert!(has(&log, "id-4"));
        assert!(!has(&log, "id-6"));
        // A page ending where a frame ends knows more follow without
        // reading on.
        let (page, cursor) = log.page(0, &EventFilter::default(), 3).expect("page");
        assert_eq!(page.iter().map(|e| e.offset).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(cursor, Some(3));
        let (page, cursor) = log.page(3, &EventFilter::default(), 2).expect("page");
        assert_eq!((page.len(), cursor), (2, None));
        let (page, cursor) = log.page(1, &EventFilter::default(), 3).expect("page");
        assert_eq!(page.iter().map(|e| e.offset).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(cursor, Some(4));
        let only_b = EventFilter {
            source: Some("b".into()),
            ..EventFilter::default()
        };
        let (page, cursor) = log.page(0, &only_b, 10).expect("page");
        assert_eq!(page.iter().map(|e| e.offset).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(cursor, None);
        log.flush().expect("flush");
        drop(log);

        let log = EventLog::open(dir.path()).expect("reopen");
        let (last, counts) = log.tail().expect("tail");
        assert_eq!(last, 5);
        assert_eq!(counts, BTreeMap::from([("a".into(), 3), ("b".into(), 2)]));
        assert!(has(&log, "id-2"));
        assert_eq!(
            log.page(0, &EventFilter::default(), 10).expect("page").0,
            (1..=5)
                .map(|o| event(o, if o <= 3 { "a" } else { "b" }, o * 10))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn readers_get_the_same_batches_from_memory_and_from_disk() {
        let dir = tempfile::tempdir().expect("dir");
        let log = EventLog::open(dir.path()).expect("open");
        // Six batches of three on disk only, then RECENT in memory too.
        let total = 3 * (RECENT as u64 + 6);
        for first in (1..=total).step_by(3) {
            append(
                &log,
                &(first..first + 3)
                    .map(|o| event(o, "a", o))
                    .collect::<Vec<_>>(),
            );
        }
        let offsets = |batches: Vec<Arc<[Event]>>| -> Vec<u64> {
            batches
                .iter()
                .flat_map(|b| b.iter().map(|e| e.offset))
                .collect()
        };
        // The newest batches are in memory; older ones come from disk.
        let memory = log.read(20, 4).expect("read");
        assert!(Arc::ptr_eq(&memory[0], &log.lock().recent[0]));
        assert_eq!(offsets(memory), (19..=24).collect::<Vec<_>>());
        let all = offsets(log.read(0, 100).expect("read"));
        assert_eq!(all, (1..=total).collect::<Vec<_>>());
        drop(log);
        let log = EventLog::open(dir.path()).expect("reopen");
        assert_eq!(offsets(log.read(0, 100).expect("read")), all);
        assert_eq!(
            offsets(log.read(20, 4).expect("read")),
            (19..=24).collect::<Vec<_>>()
        );
        assert!(log.read(total, 10).expect("read").is_empty());
    }

    #[test]
    fn retention_deletes_old_events_forgets_their_ids_and_never_reuses_offsets() {
        let dir = tempfile::tempdir().expect("dir");
        let log = EventLog::open(dir.path()).expect("open");
        append(
            &log,
            &(1..=4).map(|o| event(o, "a", o * 10)).collect::<Vec<_>>(),
        );
        append(&log, &[event(5, "b", 15), event(6, "a", 60)]);
        // Older than 35 ms of event time: offsets 1, 2, 3 and 5.
        assert_eq!(log.retain(35).expect("retain"), 4);
        assert!(!has(&log, "id-1"));
        assert!(has(&log, "id-6"));
        let (page, _) = log.page(0, &EventFilter::default(), 10).expect("page");
        assert_eq!(page.iter().map(|e| e.offset).collect::<Vec<_>>(), [4, 6]);
        assert_eq!(
            log.tail().expect("tail"),
            (6, BTreeMap::from([("a".into(), 2)]))
        );
        // Everything goes: the next offset is still 7, after a reopen too.
        assert_eq!(log.retain(u64::MAX).expect("retain"), 2);
        drop(log);
        let log = EventLog::open(dir.path()).expect("reopen");
        assert_eq!(log.tail().expect("tail"), (6, BTreeMap::new()));
        assert_eq!(
            log.page(0, &EventFilter::default(), 10).expect("page").0,
            []
        );
    }
}
