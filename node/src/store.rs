//! The embedded default store: one sled database per node for tasks,
//! schedules and window results, and the event log ([`crate::eventlog`]).
//!
//! A node's store is one replica of cluster state, not the only copy, so a
//! store that sled reports as corrupt (which its issue tracker shows can
//! happen after hard kills) is moved aside and the node starts empty rather
//! than refusing to start. Writes that are acknowledged are flushed first:
//! a SIGKILL keeps what reached the OS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::eventlog::segments::FrameError;
use crate::eventlog::{EventLog, LogError};
use troupe_actors::store::{
    page_of, paginate, EventStore, Inserted, ResultFilter, ScheduleStore, Storage, StoreError,
    TaskStore, WindowStore,
};
use troupe_protocol::{Event, ScheduleRecord, TaskRecord, TaskState, WindowResult};

/// Why the store could not be opened at all.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// sled failed for a reason other than corruption (permissions, disk,
    /// another process holding the directory).
    #[error("cannot open store in {dir}: {source}")]
    Sled {
        /// The data directory.
        dir: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// The event log could not be opened.
    #[error(transparent)]
    Events(#[from] LogError),
    /// The corrupt store could not be moved aside.
    #[error("cannot move corrupt store {dir} aside: {source}")]
    MoveAside {
        /// The data directory.
        dir: PathBuf,
        /// The rename error.
        source: std::io::Error,
    },
}

/// sled's page cache. Its default (1 GiB) was most of a node's memory
/// under a long ingest; measured with `troupe bench events --events
/// 1000000`: 64 MiB → 408 MiB peak RSS, 8 MiB → 227 MiB, at the same rate
/// (and `bench tasks` kept its ~30k tasks/s). Since the event log left
/// sled, the window results are what fills it: ingesting 2 GB peaks at
/// 97.8 MiB with 8 MiB, 93.0 with 4 and 87.0 with 2; `bench tasks
/// --tasks 100000` gives 15.6-18.2k tasks/s with 8 MiB, 15.6-16.3k with 4
/// and 12.8-13.4k with 2.
const CACHE_BYTES: u64 = 4 << 20;

/// sled-backed [`Storage`].
#[derive(Clone)]
pub struct SledStorage {
    db: sled::Db,
    /// Opened once: it keeps its index and tail in memory.
    events: Arc<EventLog>,
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

impl SledStorage {
    /// Opens (or creates) the store under `data_dir/store`.
    pub fn open(data_dir: &Path) -> Result<Self, OpenError> {
        let events = Arc::new(open_events(data_dir)?);
        let dir = data_dir.join("store");
        // Throughput over disk space: sled rewrites segments less eagerly.
        let open = |dir: &Path| {
            sled::Config::new()
                .path(dir)
                .mode(sled::Mode::HighThroughput)
                .cache_capacity(CACHE_BYTES)
                .open()
        };
        match open(&dir) {
            Ok(db) => Ok(Self { db, events }),
            // Data sled cannot read. I/O errors (permissions, a second
            // process holding the lock) are not this and must not move data.
            Err(
                sled::Error::Corruption { .. }
                | sled::Error::Unsupported(_)
                | sled::Error::ReportableBug(_),
            ) => {
                let aside = move_aside(data_dir, "store")?;
                tracing::error!(moved_to = %aside.display(), "store was corrupt; starting empty");
                open(&dir)
                    .map(|db| Self { db, events })
                    .map_err(|source| OpenError::Sled { dir, source })
            }
            Err(source) => Err(OpenError::Sled { dir, source }),
        }
    }

    /// Writes everything buffered to disk (shutdown).
    pub fn flush(&self) -> Result<usize, StoreError> {
        self.db.flush().map_err(unavailable)
    }
}

/// Renames `data_dir/name` to `data_dir/name.corrupt-<unix seconds>`,
/// kept for inspection; returns the new path.
fn move_aside(data_dir: &Path, name: &str) -> Result<PathBuf, OpenError> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = data_dir.join(name);
    let aside = data_dir.join(format!("{name}.corrupt-{stamp}"));
    std::fs::rename(&dir, &aside).map_err(|source| OpenError::MoveAside { dir, source })?;
    Ok(aside)
}

/// Opens the event log; one whose files cannot be read as a log (a damaged
/// closed segment, a foreign manifest) is moved aside like a corrupt sled
/// store. I/O errors are not that, and move nothing.
fn open_events(data_dir: &Path) -> Result<EventLog, OpenError> {
    let dir = data_dir.join("events");
    match EventLog::open(&dir) {
        Err(e @ (LogError::Frame(FrameError::Corrupt { .. }) | LogError::Manifest { .. })) => {
            let aside = move_aside(data_dir, "events")?;
            tracing::error!(error = %e, moved_to = %aside.display(), "event log was corrupt; starting empty");
            Ok(EventLog::open(&dir)?)
        }
        other => Ok(other?),
    }
}

impl Storage for SledStorage {
    fn tasks(&self) -> Result<Arc<dyn TaskStore>, StoreError> {
        Ok(Arc::new(SledTasks {
            db: self.db.clone(),
            by_id: self.db.open_tree("tasks").map_err(unavailable)?,
            by_key: self.db.open_tree("task_keys").map_err(unavailable)?,
        }))
    }

    fn schedules(&self) -> Result<Arc<dyn ScheduleStore>, StoreError> {
        Ok(Arc::new(SledSchedules {
            db: self.db.clone(),
            tree: self.db.open_tree("schedules").map_err(unavailable)?,
        }))
    }

    fn events(&self) -> Result<Arc<dyn EventStore>, StoreError> {
        Ok(Arc::clone(&self.events) as Arc<dyn EventStore>)
    }

    fn windows(&self) -> Result<Arc<dyn WindowStore>, StoreError> {
        Ok(Arc::new(SledWindows {
            tree: self.db.open_tree("windows").map_err(unavailable)?,
        }))
    }

    fn check(&self) -> Result<(), StoreError> {
        self.db
            .get(b"__ready_probe")
            .map(|_| ())
            .map_err(unavailable)
    }
}

/// Window results, late events and shard checkpoints in one tree, so a
/// shard's commit is one atomic batch: `k` + shard → checkpoint,
/// `r` + pipeline + 0 + key + 0 + window start → result, `l` + pipeline +
/// 0 + offset → late event.
struct SledWindows {
    tree: sled::Tree,
}

fn parts_key(prefix: u8, parts: &[&str], number: u64) -> Vec<u8> {
    let mut key = vec![prefix];
    for part in parts {
        key.extend_from_slice(part.as_bytes());
        key.push(0);
    }
    key.extend_from_slice(&number.to_be_bytes());
    key
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl WindowStore for SledWindows {
    fn flush(&self) -> Result<(), StoreError> {
        self.tree.flush().map(|_| ()).map_err(unavailable)
    }

    fn checkpoint(&self, shard: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree
            .get(parts_key(b'k', &[], shard as u64))
            .map_err(unavailable)?
            .map(|v| v.to_vec()))
    }

    fn commit(
        &self,
        shard: usize,
        results: &[WindowResult],
        late: &[(String, Event)],
        checkpoint: &[u8],
        outbox: bool,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for r in results {
            let bytes = serde_json::to_vec(r).map_err(unavailable)?;
            if outbox {
                batch.insert(
                    parts_key(b'o', &[&r.pipeline, &r.key], r.window_start_ms),
                    bytes.clone(),
                );
            }
            batch.insert(
                parts_key(b'r', &[&r.pipeline, &r.key], r.window_start_ms),
                bytes,
            );
        }
        for (pipeline, event) in late {
            batch.insert(
                parts_key(b'l', &[pipeline], event.offset),
                serde_json::to_vec(event).map_err(unavailable)?,
            );
        }
        batch.insert(parts_key(b'k', &[], shard as u64), checkpoint);
        self.tree.apply_batch(batch).map_err(unavailable)
    }

    fn results(
        &self,
        filter: &ResultFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<WindowResult>, Option<String>), StoreError> {
        let mut prefix = vec![b'r'];
        prefix.extend_from_slice(filter.pipeline.as_bytes());
        prefix.push(0);
        if let Some(key) = &filter.key {
            prefix.extend_from_slice(key.as_bytes());
            prefix.push(0);
        }
        let start = match after.and_then(unhex) {
            Some(mut cursor) => {
                cursor.push(0); // just after the cursor's key
                cursor
            }
            None => prefix.clone(),
        };
        let items = self
            .tree
            .range(start..)
            .take_while(|entry| {
                entry
                    .as_ref()
                    .map_or(true, |(key, _)| key.starts_with(&prefix))
            })
            .map(|entry| {
                let (key, bytes) = entry.map_err(unavailable)?;
                let result: WindowResult = decode("window result", &bytes)?;
                Ok((key, result))
            })
            .filter(|item| {
                item.as_ref().map_or(true, |(_, r)| {
                    filter.from_ms.is_none_or(|f| r.window_start_ms >= f)
                        && filter.to_ms.is_none_or(|t| r.window_start_ms < t)
                })
            });
        let (page, cursor) = page_of(items, limit, |(key, _)| hex(key))?;
        Ok((page.into_iter().map(|(_, r)| r).collect(), cursor))
    }

    fn outbox(&self, limit: usize) -> Result<Vec<WindowResult>, StoreError> {
        self.tree
            .scan_prefix(b"o")
            .take(limit)
            .map(|entry| {
                let (_, bytes) = entry.map_err(unavailable)?;
                decode("outbox result", &bytes)
            })
            .collect()
    }

    fn outbox_done(&self, written: &[WindowResult]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for r in written {
            batch.remove(parts_key(b'o', &[&r.pipeline, &r.key], r.window_start_ms));
        }
        self.tree.apply_batch(batch).map_err(unavailable)
    }

    fn outbox_len(&self) -> Result<u64, StoreError> {
        Ok(self.tree.scan_prefix(b"o").count() as u64)
    }

    fn late(
        &self,
        pipeline: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<u64>), StoreError> {
        let start = parts_key(b'l', &[pipeline], after.saturating_add(1));
        let end = parts_key(b'l', &[pipeline], u64::MAX);
        let events = self.tree.range(start..=end).map(|entry| {
            let (_, bytes) = entry.map_err(unavailable)?;
            decode("late event", &bytes)
        });
        page_of(events, limit, |e: &Event| e.offset)
    }
}

struct SledSchedules {
    db: sled::Db,
    tree: sled::Tree,
}

impl ScheduleStore for SledSchedules {
    fn put(&self, record: &ScheduleRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(unavailable)?;
        self.tree
            .insert(record.id.as_bytes(), bytes)
            .map_err(unavailable)?;
        self.db.flush().map(|_| ()).map_err(unavailable)
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let found = self
            .tree
            .remove(id.as_bytes())
            .map_err(unavailable)?
            .is_some();
        self.db.flush().map_err(unavailable)?;
        Ok(found)
    }

    fn all(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.tree
            .iter()
            .map(|entry| {
                let (key, bytes) = entry.map_err(unavailable)?;
                decode(&String::from_utf8_lossy(&key), &bytes)
            })
            .collect()
    }
}

struct SledTasks {
    db: sled::Db,
    by_id: sled::Tree,
    by_key: sled::Tree,
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// Whether the client gave the task an idempotency key (else it is keyed
/// by its own fresh id, which no other submission can repeat).
fn has_own_key(record: &TaskRecord) -> bool {
    record.key != record.id
}

impl TaskStore for SledTasks {
    fn insert_new(&self, record: &TaskRecord) -> Result<Inserted, StoreError> {
        let bytes = serde_json::to_vec(record).map_err(unavailable)?;
        if !has_own_key(record) {
            // Keyed by its fresh id: nothing to look up, nothing to map.
            return self
                .by_id
                .insert(record.id.as_bytes(), bytes)
                .map(|_| Inserted::Created)
                .map_err(unavailable);
        }
        // Record and key mapping land together or not at all.
        let existing = (&self.by_id, &self.by_key)
            .transaction(|(by_id, by_key)| {
                if let Some(id) = by_key.get(record.key.as_bytes())? {
                    return Ok(Some(id));
                }
                by_key.insert(record.key.as_bytes(), record.id.as_bytes())?;
                by_id.insert(record.id.as_bytes(), bytes.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(None)
            })
            .map_err(|e: TransactionError<()>| unavailable(format!("{e:?}")))?;
        if let Some(id) = existing {
            let id = String::from_utf8_lossy(&id).into_owned();
            return match self.get(&id)? {
                Some(record) => Ok(Inserted::Existing(Box::new(record))),
                None => Err(StoreError::Corrupt {
                    key: id,
                    reason: "idempotency key points at a missing task".into(),
                }),
            };
        }
        Ok(Inserted::Created)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(unavailable)
    }

    fn page(
        &self,
        after: Option<&str>,
        state: Option<TaskState>,
        owner: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TaskRecord>, Option<String>), StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(id) => Bound::Excluded(id.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        // Read lazily: one page (plus one record) is decoded, however large the table.
        let records = self
            .by_id
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .map(|entry| {
                let (key, bytes) = entry.map_err(unavailable)?;
                decode(&String::from_utf8_lossy(&key), &bytes)
            });
        paginate(records, state, owner, limit)
    }

    fn put(&self, record: &TaskRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(unavailable)?;
        // Replicas arrive through here too: map the key so that a replica
        // that becomes owner still answers repeats of it.
        if has_own_key(record) {
            self.by_key
                .insert(record.key.as_bytes(), record.id.as_bytes())
                .map_err(unavailable)?;
        }
        self.by_id
            .insert(record.id.as_bytes(), bytes)
            .map(|_| ())
            .map_err(unavailable)
    }

    fn matching(&self, keep: &dyn Fn(&TaskRecord) -> bool) -> Result<Vec<TaskRecord>, StoreError> {
        let mut records = Vec::new();
        for entry in &self.by_id {
            let (key, bytes) = entry.map_err(unavailable)?;
            let record: TaskRecord = decode(&String::from_utf8_lossy(&key), &bytes)?;
            if keep(&record) {
                records.push(record);
            }
        }
        Ok(records)
    }

    fn get(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.by_id
            .get(id.as_bytes())
            .map_err(unavailable)?
            .map(|bytes| decode(id, &bytes))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_protocol::{Priority, SubmitTask, TaskState};

    fn record(id: &str, key: &str) -> TaskRecord {
        let task = SubmitTask {
            kind: "echo".into(),
            input: serde_json::json!({"x": 1}),
            priority: Priority::High,
            key: Some(key.into()),
            ..SubmitTask::default()
        };
        TaskRecord::from_submission(id.into(), task, "n1".into(), 7)
    }

    #[test]
    fn pages_follow_id_order_filter_by_state_and_end_without_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tasks = SledStorage::open(dir.path())
            .expect("open")
            .tasks()
            .expect("tree");
        for i in 0..7 {
            let mut r = record(&format!("id-{i}"), &format!("k{i}"));
            if i % 2 == 0 {
                r.state = TaskState::Succeeded;
            }
            tasks.insert_new(&r).expect("insert");
        }
        let ids = |page: &[TaskRecord]| page.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let (first, cursor) = tasks.page(None, None, None, 3).expect("page");
        assert_eq!(
            (ids(&first), cursor.as_deref()),
            (
                vec!["id-0".into(), "id-1".into(), "id-2".into()],
                Some("id-2")
            )
        );
        let (rest, cursor) = tasks.page(Some("id-2"), None, None, 10).expect("page");
        assert_eq!((rest.len(), cursor), (4, None));
        let (done, _) = tasks
            .page(None, Some(TaskState::Succeeded), None, 10)
            .expect("page");
        assert_eq!(ids(&done), ["id-0", "id-2", "id-4", "id-6"]);
    }

    #[test]
    fn records_survive_reopening_and_keys_are_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let tasks = SledStorage::open(dir.path())
                .expect("open")
                .tasks()
                .expect("tree");
            assert_eq!(
                tasks.insert_new(&record("a", "k")).expect("insert"),
                Inserted::Created
            );
            assert_eq!(
                tasks.insert_new(&record("b", "k")).expect("insert"),
                Inserted::Existing(Box::new(record("a", "k")))
            );
        }
        let tasks = SledStorage::open(dir.path())
            .expect("reopen")
            .tasks()
            .expect("tree");
        assert_eq!(tasks.get("a").expect("get"), Some(record("a", "k")));
        assert_eq!(tasks.get("b").expect("get"), None);
    }

    #[test]
    fn a_corrupt_store_is_moved_aside_and_the_node_starts_empty() {
        // Only a damaged `conf` is detectable here: a garbled `db` log is
        // opened and recovered as far as sled can, so that case is covered
        // by re-sync from replicas, not by this check.
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let storage = SledStorage::open(dir.path()).expect("open");
            storage
                .tasks()
                .expect("tree")
                .insert_new(&record("a", "k"))
                .expect("insert");
        }
        std::fs::write(dir.path().join("store").join("conf"), b"\xff\xfe garbage").expect("write");
        assert_moved_aside_and_empty(dir.path());
    }

    #[test]
    fn an_unreadable_event_log_is_moved_aside_and_the_log_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("events")).expect("dir");
        std::fs::write(
            dir.path().join("events").join("manifest.json"),
            b"{ not a manifest",
        )
        .expect("write");
        let storage = SledStorage::open(dir.path()).expect("open");
        let (last, sources) = storage.events().expect("log").tail().expect("tail");
        assert_eq!((last, sources.len()), (0, 0));
        assert!(has_entry(dir.path(), "events.corrupt-"));
    }

    #[test]
    fn a_store_held_by_another_process_is_an_error_not_moved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = SledStorage::open(dir.path()).expect("open");
        let err = SledStorage::open(dir.path())
            .err()
            .expect("second open fails");
        assert!(matches!(err, OpenError::Sled { .. }), "{err}");
        assert!(!has_entry(dir.path(), "store.corrupt-"));
    }

    fn assert_moved_aside_and_empty(dir: &Path) {
        let storage = SledStorage::open(dir).expect("opens after moving aside");
        assert_eq!(storage.tasks().expect("tree").get("a").expect("get"), None);
        storage.check().expect("usable");
        assert!(
            has_entry(dir, "store.corrupt-"),
            "corrupt store kept for inspection"
        );
    }

    /// Whether `dir` holds an entry whose name starts with `prefix`.
    fn has_entry(dir: &Path, prefix: &str) -> bool {
        std::fs::read_dir(dir)
            .expect("list")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
    }
}
