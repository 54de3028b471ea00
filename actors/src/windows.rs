//! Event-time windows of one pipeline: the logic a window shard runs,
//! without I/O.
//!
//! Each source has a watermark: the latest event time seen from it minus
//! the pipeline's `watermark_delay_ms`. The pipeline's watermark is the
//! smallest of them (a slow source holds windows open, as in Flink), and it
//! never moves back: a source that appears later, behind it, cannot reopen
//! a window already emitted. A
//! window closes — and its result is emitted, once — when the watermark
//! passes its end plus `allowed_lateness_ms`; until then late, out-of-order
//! events still count. An event whose windows have all closed is *late*: it
//! changes nothing and is handed back to the caller to be counted and kept,
//! never dropped silently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use tdigest::TDigest;
use troupe_protocol::{AggregateOp, AggregateSpec, Event, PipelineSpec, WindowResult, WindowSpec};

/// What became of an event offered to a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Not for this pipeline (another `event_type`).
    Filtered,
    /// It lacks the `key_by` field.
    NoKey,
    /// Counted in its window(s).
    Added,
    /// Every window it belongs to has closed.
    Late,
}

/// Running state of one aggregate (`min` and `max` mean something once
/// `n > 0`; kept finite so that a checkpoint is plain JSON). A quantile
/// keeps a t-digest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Acc {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<Digest>,
}

/// A t-digest and the values not yet folded into it (folding one value at
/// a time would re-sort the digest per event). No digest until the first
/// fold: an empty one holds NaN bounds, which JSON cannot carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Digest {
    digest: Option<TDigest>,
    pending: Vec<f64>,
}

/// Values gathered before they are folded into a digest.
const DIGEST_BATCH: usize = 256;

impl Digest {
    fn new() -> Self {
        Self {
            digest: None,
            pending: Vec::new(),
        }
    }

    fn push(&mut self, value: f64) {
        self.pending.push(value);
        if self.pending.len() >= DIGEST_BATCH {
            self.fold();
        }
    }

    fn fold(&mut self) {
        if !self.pending.is_empty() {
            let digest = self
                .digest
                .take()
                .unwrap_or_else(|| TDigest::new_with_size(DIGEST_SIZE));
            self.digest = Some(digest.merge_unsorted(std::mem::take(&mut self.pending)));
        }
    }

    fn merge(&mut self, other: &Digest) {
        self.fold();
        let mut other = other.clone();
        other.fold();
        self.digest = match (self.digest.take(), other.digest) {
            (Some(a), Some(b)) => Some(TDigest::merge_digests(vec![a, b])),
            (a, b) => a.or(b),
        };
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        let mut all = self.clone();
        all.fold();
        all.digest.map(|d| d.estimate_quantile(q))
    }
}

impl PartialEq for Acc {
    fn eq(&self, other: &Self) -> bool {
        (self.n, self.sum, self.min, self.max) == (other.n, other.sum, other.min, other.max)
    }
}

/// Centroids kept per quantile digest.
const DIGEST_SIZE: usize = 100;

impl Acc {
    fn for_op(op: AggregateOp) -> Self {
        Self {
            digest: (op == AggregateOp::Quantile).then(Digest::new),
            ..Self::default()
        }
    }

    fn add(&mut self, value: f64) {
        if let Some(digest) = &mut self.digest {
            digest.push(value);
        }
        if self.n == 0 {
            (self.min, self.max) = (value, value);
        }
        self.n += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    fn merge(&mut self, other: &Acc) {
        if other.n == 0 {
            return;
        }
        if let (Some(mine), Some(theirs)) = (&mut self.digest, &other.digest) {
            mine.merge(theirs);
        }
        if self.n == 0 {
            (self.min, self.max) = (other.min, other.max);
        }
        self.n += other.n;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        self.digest.as_ref().and_then(|d| d.quantile(q))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Window {
    end: u64,
    events: u64,
    accs: Vec<Acc>,
}

impl Window {
    /// Counts an event reaching to `end` with `values`, one per aggregate.
    fn fold(&mut self, end: u64, values: &[Option<f64>]) {
        self.end = self.end.max(end);
        self.events += 1;
        for (acc, value) in self.accs.iter_mut().zip(values) {
            if let Some(v) = value {
                acc.add(*v);
            }
        }
    }
}

/// An engine's state without its spec, for checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    /// Open windows: key, start, window.
    open: Vec<(String, u64, Window)>,
    /// Latest event time per source.
    latest: BTreeMap<String, u64>,
    /// The highest watermark reached.
    watermark: Option<u64>,
}

/// The windows of one pipeline.
#[derive(Debug, Clone)]
pub struct WindowEngine {
    spec: PipelineSpec,
    /// Open windows by (key, start).
    open: BTreeMap<(String, u64), Window>,
    /// Latest event time per source.
    latest: foldhash::HashMap<String, u64>,
    /// The highest watermark reached.
    watermark: Option<u64>,
    /// The earliest latest event time over sources (derived from `latest`).
    slowest: Option<u64>,
    /// No open window closes before this watermark (a lower bound, so
    /// that `advance` need not look at every window after every event).
    next_close: Option<u64>,
    /// Buffers reused by every event.
    scratch: Scratch,
}

/// What offering an event needs besides the engine, kept between events
/// so that the hot path does not allocate.
#[derive(Debug, Clone, Default)]
struct Scratch {
    /// The event's key, and a window's start.
    probe: (String, u64),
    /// The windows holding the event.
    windows: Vec<(u64, u64)>,
    /// The number each aggregate takes from the event.
    values: Vec<Option<f64>>,
}

/// Checks a pipeline spec; `Err((field, reason))`.
pub fn validate(spec: &PipelineSpec) -> Result<(), (String, String)> {
    let bad = |field: &str, reason: &str| Err((field.to_owned(), reason.to_owned()));
    if spec.id.is_empty() || spec.id.len() > 100 {
        return bad("id", "must be 1 to 100 bytes");
    }
    match spec.window {
        WindowSpec::Tumbling { size_ms: 0 } => return bad("window.size_ms", "must be at least 1"),
        WindowSpec::Sliding { size_ms: 0, .. } => {
            return bad("window.size_ms", "must be at least 1")
        }
        WindowSpec::Sliding { slide_ms: 0, .. } => {
            return bad("window.slide_ms", "must be at least 1")
        }
        WindowSpec::Sliding { size_ms, slide_ms } if slide_ms > size_ms => {
            return bad("window.slide_ms", "must not exceed window.size_ms")
        }
        WindowSpec::Sliding { size_ms, slide_ms } if size_ms / slide_ms > 1000 => {
            return bad("window.slide_ms", "at most 1000 windows may overlap")
        }
        WindowSpec::Session { gap_ms: 0 } => return bad("window.gap_ms", "must be at least 1"),
        _ => {}
    }
    if spec.aggregates.is_empty() {
        return bad("aggregates", "at least one");
    }
    for (i, aggregate) in spec.aggregates.iter().enumerate() {
        match (aggregate.op, &aggregate.field) {
            (AggregateOp::Count, _) => {}
            (AggregateOp::Quantile, _) if !aggregate.q.is_some_and(|q| q > 0.0 && q < 1.0) => {
                return Err((
                    format!("aggregates[{i}].q"),
                    "a quantile between 0 and 1 (0.99 for p99) is required".into(),
                ))
            }
            (_, None) => {
                return Err((
                    format!("aggregates[{i}].field"),
                    "is required for this op".into(),
                ))
            }
            (_, Some(field)) if lookup_path(field).is_none() => {
                return Err((
                    format!("aggregates[{i}].field"),
                    "must be source, event_type, timestamp_ms or data.<path>".into(),
                ))
            }
            _ => {}
        }
    }
    if let Some(key) = &spec.key_by {
        if lookup_path(key).is_none() {
            return bad("key_by", "must be source, event_type or data.<path>");
        }
    }
    Ok(())
}

/// A field path split for lookup: the top-level field and the path in `data`.
fn lookup_path(path: &str) -> Option<(&str, Option<&str>)> {
    match path.split_once('.') {
        None if matches!(path, "source" | "event_type" | "timestamp_ms") => Some((path, None)),
        Some(("data", rest)) if !rest.is_empty() => Some(("data", Some(rest))),
        _ => None,
    }
}

/// A field of an event: its text or a JSON value in `data`.
enum Field<'e> {
    Text(&'e str),
    Number(u64),
    Json(&'e RawValue),
}

/// The value at `path` in `event`, borrowed (this runs for every event
/// and aggregate).
fn value_at<'e>(event: &'e Event, path: &str) -> Option<Field<'e>> {
    match lookup_path(path)? {
        ("source", _) => Some(Field::Text(&event.source)),
        ("event_type", _) => Some(Field::Text(&event.event_type)),
        ("timestamp_ms", _) => Some(Field::Number(event.timestamp_ms)),
        (_, rest) => event.data.lookup(rest?).map(Field::Json),
    }
}

fn number_at(event: &Event, path: &str) -> Option<f64> {
    match value_at(event, path)? {
        Field::Number(n) => Some(n as f64),
        Field::Json(v) => serde_json::from_str(v.get()).ok(),
        Field::Text(_) => None,
    }
}

/// Writes the key of `event` into `out` (reused, so that keying does not
/// allocate); `false` when the event has no key.
fn key_into(event: &Event, key_by: Option<&str>, out: &mut String) -> bool {
    out.clear();
    let Some(path) = key_by else {
        return true;
    };
    match value_at(event, path) {
        None => false,
        Some(Field::Text(s)) => {
            out.push_str(s);
            true
        }
        Some(Field::Number(n)) => {
            out.push_str(&n.to_string());
            true
        }
        Some(Field::Json(raw)) => match serde_json::from_str(raw.get()) {
            Ok(Value::String(s)) => {
                out.push_str(&s);
                true
            }
            Ok(Value::Null) | Err(_) => false,
            Ok(other) => {
                out.push_str(&other.to_string());
                true
            }
        },
    }
}

/// Writes the windows (start, end) of `window` holding time `t` into
/// `out`; for sessions, the session an event at `t` alone would open.
fn windows_of(window: &WindowSpec, t: u64, out: &mut Vec<(u64, u64)>) {
    out.clear();
    match *window {
        WindowSpec::Tumbling { size_ms } => {
            let start = t - t % size_ms;
            out.push((start, start + size_ms));
        }
        WindowSpec::Sliding { size_ms, slide_ms } => {
            let mut start = t - t % slide_ms;
            loop {
                if start + size_ms > t {
                    out.push((start, start + size_ms));
                }
                if start < slide_ms || start + size_ms <= t {
                    break;
                }
                start -= slide_ms;
            }
        }
        WindowSpec::Session { gap_ms } => out.push((t, t.saturating_add(gap_ms))),
    }
}

/// The latest end among the windows holding `t` (what [`windows_of`]
/// writes first); `None` when no window holds it.
fn last_end(window: &WindowSpec, t: u64) -> Option<u64> {
    match *window {
        WindowSpec::Tumbling { size_ms } => Some(t - t % size_ms + size_ms),
        WindowSpec::Sliding { size_ms, slide_ms } => {
            let end = t - t % slide_ms + size_ms;
            (end > t).then_some(end)
        }
        WindowSpec::Session { gap_ms } => Some(t.saturating_add(gap_ms)),
    }
}

/// Whether an event of `event_type` at event time `t` is late for `spec`
/// at `watermark`: every window it belongs to has closed.
pub fn is_late(spec: &PipelineSpec, watermark: Option<u64>, event_type: &str, t: u64) -> bool {
    let Some(watermark) = watermark else {
        return false;
    };
    if spec.event_type.as_ref().is_some_and(|e| e != event_type) {
        return false;
    }
    last_end(&spec.window, t)
        .is_none_or(|end| end.saturating_add(spec.allowed_lateness_ms) <= watermark)
}

impl WindowEngine {
    /// An engine for a validated spec.
    pub fn new(spec: PipelineSpec) -> Self {
        Self {
            spec,
            open: BTreeMap::new(),
            latest: foldhash::HashMap::default(),
            watermark: None,
            slowest: None,
            next_close: None,
            scratch: Scratch::default(),
        }
    }

    /// The pipeline's watermark: every window ending (plus lateness) at or
    /// before it is closed. `None` until an event was seen.
    pub fn watermark(&self) -> Option<u64> {
        self.watermark
    }

    /// Per-source watermarks.
    pub fn source_watermarks(&self) -> BTreeMap<String, u64> {
        self.latest
            .iter()
            .map(|(s, t)| (s.clone(), t.saturating_sub(self.spec.watermark_delay_ms)))
            .collect()
    }

    /// The pipeline.
    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// Windows still open.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// The state to checkpoint.
    pub fn state(&self) -> EngineState {
        EngineState {
            open: self
                .open
                .iter()
                .map(|((key, start), w)| (key.clone(), *start, w.clone()))
                .collect(),
            latest: self.latest.iter().map(|(s, t)| (s.clone(), *t)).collect(),
            watermark: self.watermark,
        }
    }

    /// An engine resumed from a checkpoint of the same spec.
    pub fn resume(spec: PipelineSpec, state: EngineState) -> Self {
        let latest: foldhash::HashMap<String, u64> = state.latest.into_iter().collect();
        Self {
            spec,
            open: state
                .open
                .into_iter()
                .map(|(key, start, w)| ((key, start), w))
                .collect(),
            slowest: latest.values().min().copied(),
            latest,
            watermark: state.watermark,
            next_close: Some(0),
            scratch: Scratch::default(),
        }
    }

    fn closed(&self, end: u64) -> bool {
        self.watermark()
            .is_some_and(|wm| end.saturating_add(self.spec.allowed_lateness_ms) <= wm)
    }

    /// Writes the number each aggregate takes from `event` into `out`; a
    /// field several aggregates read is looked up once.
    fn values(&self, event: &Event, out: &mut Vec<Option<f64>>) {
        out.clear();
        for (i, a) in self.spec.aggregates.iter().enumerate() {
            let value = match (&a.op, &a.field) {
                (AggregateOp::Count, _) | (_, None) => None,
                (_, Some(field)) => match self.spec.aggregates[..i]
                    .iter()
                    .position(|b| b.op != AggregateOp::Count && b.field.as_ref() == Some(field))
                {
                    Some(earlier) => out[earlier],
                    None => number_at(event, field),
                },
            };
            out.push(value);
        }
    }

    /// Whether the pipeline takes events of `event_type`.
    pub fn takes_type(&self, event_type: &str) -> bool {
        self.spec
            .event_type
            .as_deref()
            .is_none_or(|t| t == event_type)
    }

    /// Offers an event; its source's watermark advances either way.
    pub fn offer(&mut self, event: &Event) -> Offered {
        if !self.takes_type(&event.event_type) {
            return Offered::Filtered;
        }
        let outcome = self.add(event);
        self.observe(&event.source, event.timestamp_ms);
        outcome
    }

    /// Advances `source`'s watermark to event time `t` without counting an
    /// event: for one a pipeline transform dropped, which still says how
    /// far its source has got.
    pub fn observe(&mut self, source: &str, t: u64) {
        let before = match self.latest.get_mut(source) {
            Some(latest) => {
                let before = *latest;
                *latest = before.max(t);
                Some(before)
            }
            None => {
                self.latest.insert(source.to_owned(), t);
                None
            }
        };
        self.slowest = match (before, self.slowest) {
            // A new source may be the slowest now.
            (None, slowest) => Some(slowest.map_or(t, |s| s.min(t))),
            // The slowest source moved on: find the new slowest.
            (Some(b), Some(s)) if b == s && t > b => self.latest.values().min().copied(),
            (_, slowest) => slowest,
        };
        let watermark = self
            .slowest
            .map(|t| t.saturating_sub(self.spec.watermark_delay_ms));
        self.watermark = self.watermark.max(watermark);
    }

    fn add(&mut self, event: &Event) -> Offered {
        let mut scratch = std::mem::take(&mut self.scratch);
        let outcome = self.add_with(event, &mut scratch);
        self.scratch = scratch;
        outcome
    }

    fn add_with(&mut self, event: &Event, scratch: &mut Scratch) -> Offered {
        let Scratch {
            probe,
            windows,
            values,
        } = scratch;
        if !key_into(event, self.spec.key_by.as_deref(), &mut probe.0) {
            return Offered::NoKey;
        }
        let t = event.timestamp_ms;
        windows_of(&self.spec.window, t, windows);
        windows.retain(|(_, end)| !self.closed(*end));
        if windows.is_empty() {
            return Offered::Late;
        }
        self.values(event, values);
        let lateness = self.spec.allowed_lateness_ms;
        for &(start, end) in windows.iter() {
            let (start, end) = if matches!(self.spec.window, WindowSpec::Session { .. }) {
                self.merge_sessions(&probe.0, start, end)
            } else {
                (start, end)
            };
            probe.1 = start;
            let close = end.saturating_add(lateness);
            self.next_close = Some(self.next_close.map_or(close, |c| c.min(close)));
            // One lookup for a window that is open; the key is copied only
            // for a window that is new.
            match self.open.get_mut(probe) {
                Some(window) => window.fold(end, values),
                None => {
                    let mut window = Window {
                        end,
                        events: 0,
                        accs: self
                            .spec
                            .aggregates
                            .iter()
                            .map(|a| Acc::for_op(a.op))
                            .collect(),
                    };
                    window.fold(end, values);
                    self.open.insert(probe.clone(), window);
                }
            }
        }
        Offered::Added
    }

    /// Folds every open session of `key` overlapping `[start, end)` into one
    /// window and returns its span (the merged window is left open under
    /// the returned start).
    fn merge_sessions(&mut self, key: &str, start: u64, end: u64) -> (u64, u64) {
        let overlapping: Vec<u64> = self
            .open
            .range((key.to_owned(), 0)..=(key.to_owned(), u64::MAX))
            .filter(|((_, s), w)| *s <= end && start <= w.end)
            .map(|((_, s), _)| *s)
            .collect();
        let mut merged: Option<Window> = None;
        let (mut lo, mut hi) = (start, end);
        for s in overlapping {
            if let Some(window) = self.open.remove(&(key.to_owned(), s)) {
                lo = lo.min(s);
                hi = hi.max(window.end);
                match &mut merged {
                    None => merged = Some(window),
                    Some(m) => {
                        m.events += window.events;
                        for (a, b) in m.accs.iter_mut().zip(&window.accs) {
                            a.merge(b);
                        }
                    }
                }
            }
        }
        if let Some(mut window) = merged {
            window.end = hi;
            self.open.insert((key.to_owned(), lo), window);
        }
        (lo, hi)
    }

    /// Closes and returns every window the watermark has passed (end plus
    /// lateness), in end order.
    pub fn advance(&mut self) -> Vec<WindowResult> {
        let Some(watermark) = self.watermark() else {
            return Vec::new();
        };
        if self.next_close.is_none_or(|close| watermark < close) {
            return Vec::new();
        }
        let lateness = self.spec.allowed_lateness_ms;
        let done: Vec<(String, u64)> = self
            .open
            .iter()
            .filter(|(_, w)| w.end.saturating_add(lateness) <= watermark)
            .map(|(k, _)| k.clone())
            .collect();
        self.next_close = self
            .open
            .values()
            .map(|w| w.end.saturating_add(lateness))
            .filter(|close| *close > watermark)
            .min();
        let mut results: Vec<WindowResult> = done
            .into_iter()
            .filter_map(|(key, start)| {
                let window = self.open.remove(&(key.clone(), start))?;
                Some(self.result(key, start, &window))
            })
            .collect();
        results.sort_by(|a, b| (a.window_end_ms, &a.key).cmp(&(b.window_end_ms, &b.key)));
        results
    }

    fn result(&self, key: String, start: u64, window: &Window) -> WindowResult {
        let values = self
            .spec
            .aggregates
            .iter()
            .zip(&window.accs)
            .filter_map(|(spec, acc): (&AggregateSpec, &Acc)| {
                let value = match spec.op {
                    AggregateOp::Count => Some(window.events as f64),
                    _ if acc.n == 0 => None,
                    AggregateOp::Sum => Some(acc.sum),
                    AggregateOp::Min => Some(acc.min),
                    AggregateOp::Max => Some(acc.max),
                    AggregateOp::Avg => Some(acc.sum / acc.n as f64),
                    AggregateOp::Quantile => acc.quantile(spec.q.unwrap_or(0.5)),
                }?;
                Some((spec.name(), value))
            })
            .collect();
        WindowResult {
            pipeline: self.spec.id.clone(),
            key,
            window_start_ms: start,
            window_end_ms: window.end,
            events: window.events,
            values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(window: WindowSpec, lateness: u64, delay: u64) -> PipelineSpec {
        serde_json::from_value(json!({
            "id": "p",
            "event_type": "reading",
            "key_by": "data.device",
            "window": window,
            "aggregates": [
                {"op": "count"},
                {"op": "sum", "field": "data.v"},
                {"op": "min", "field": "data.v"},
                {"op": "max", "field": "data.v"},
                {"op": "avg", "field": "data.v"}
            ],
            "allowed_lateness_ms": lateness,
            "watermark_delay_ms": delay
        }))
        .expect("spec")
    }

    fn event(source: &str, device: &str, t: u64, v: f64) -> Event {
        Event {
            offset: 0,
            event_id: format!("{source}-{t}-{v}"),
            source: source.into(),
            event_type: "reading".into(),
            timestamp_ms: t,
            received_at_ms: t,
            data: json!({"device": device, "v": v})
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into(),
        }
    }

    /// The expected result of a window, computed by brute force.
    fn expect(key: &str, start: u64, end: u64, vs: &[f64]) -> WindowResult {
        let mut values = BTreeMap::from([("count".to_owned(), vs.len() as f64)]);
        if !vs.is_empty() {
            values.insert("sum(data.v)".into(), vs.iter().sum());
            values.insert(
                "min(data.v)".into(),
                vs.iter().cloned().fold(f64::INFINITY, f64::min),
            );
            values.insert(
                "max(data.v)".into(),
                vs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            );
            values.insert(
                "avg(data.v)".into(),
                vs.iter().sum::<f64>() / vs.len() as f64,
            );
        }
        WindowResult {
            pipeline: "p".into(),
            key: key.into(),
            window_start_ms: start,
            window_end_ms: end,
            events: vs.len() as u64,
            values,
        }
    }

    fn run(engine: &mut WindowEngine, events: &[Event]) -> (Vec<WindowResult>, Vec<Offered>) {
        let mut results = Vec::new();
        let mut offered = Vec::new();
        for e in events {
            offered.push(engine.offer(e));
            results.extend(engine.advance());
        }
        (results, offered)
    }

    #[test]
    fn an_event_is_late_only_when_every_window_it_belongs_to_has_closed() {
        let tumbling = spec(WindowSpec::Tumbling { size_ms: 1000 }, 100, 0);
        // Window [1000, 2000) closes at watermark 2100.
        assert!(!is_late(&tumbling, Some(2099), "reading", 1500));
        assert!(is_late(&tumbling, Some(2100), "reading", 1500));
        assert!(!is_late(&tumbling, None, "reading", 1500));
        assert!(
            !is_late(&tumbling, Some(9000), "other", 1500),
            "filtered out"
        );
        let sliding = spec(
            WindowSpec::Sliding {
                size_ms: 1000,
                slide_ms: 500,
            },
            0,
            0,
        );
        // 1200 is in [500, 1500) and [1000, 2000): late once both closed.
        assert!(!is_late(&sliding, Some(1500), "reading", 1200));
        assert!(is_late(&sliding, Some(2000), "reading", 1200));
        let session = spec(WindowSpec::Session { gap_ms: 300 }, 0, 0);
        assert!(!is_late(&session, Some(1299), "reading", 1000));
        assert!(is_late(&session, Some(1300), "reading", 1000));
    }

    #[test]
    fn the_last_end_is_the_latest_end_of_the_windows_holding_a_time() {
        let kinds = [
            WindowSpec::Tumbling { size_ms: 7 },
            WindowSpec::Sliding {
                size_ms: 10,
                slide_ms: 3,
            },
            WindowSpec::Sliding {
                size_ms: 3,
                slide_ms: 5,
            },
            WindowSpec::Session { gap_ms: 4 },
        ];
        let mut windows = Vec::new();
        for kind in &kinds {
            for t in 0..40 {
                windows_of(kind, t, &mut windows);
                assert!(windows.iter().all(|(start, end)| *start <= t && t < *end));
                let latest = windows.iter().map(|(_, end)| *end).max();
                assert_eq!(last_end(kind, t), latest, "{kind:?} at {t}");
            }
        }
    }

    #[test]
    fn tumbling_windows_take_out_of_order_events_until_the_watermark_passes() {
        let mut engine = WindowEngine::new(spec(WindowSpec::Tumbling { size_ms: 1000 }, 0, 500));
        let events = [
            event("s", "a", 100, 1.0),
            event("s", "a", 900, 3.0),
            event("s", "a", 1200, 10.0), // watermark 700
            event("s", "a", 800, 2.0),   // out of order, window [0,1000) still open
            event("s", "b", 1300, 7.0),
            event("s", "a", 1600, 20.0), // watermark 1100: [0,1000) closes
            event("s", "a", 950, 99.0),  // late: its window has closed
            event("s", "a", 3100, 0.0),  // watermark 2600: [1000,2000) closes for a and b
        ];
        let (results, offered) = run(&mut engine, &events);
        assert_eq!(offered[6], Offered::Late);
        assert_eq!(
            results,
            vec![
                expect("a", 0, 1000, &[1.0, 3.0, 2.0]),
                expect("a", 1000, 2000, &[10.0, 20.0]),
                expect("b", 1000, 2000, &[7.0]),
            ]
        );
        assert_eq!(engine.open_windows(), 1);
    }

    #[test]
    fn allowed_lateness_keeps_a_window_open_past_the_watermark() {
        let mut engine = WindowEngine::new(spec(WindowSpec::Tumbling { size_ms: 1000 }, 300, 0));
        let events = [
            event("s", "a", 500, 1.0),
            event("s", "a", 1200, 2.0), // watermark 1200 < 1000 + 300: still open
            event("s", "a", 999, 4.0),  // late, but within lateness
            event("s", "a", 1300, 8.0), // watermark 1300: [0,1000) closes
            event("s", "a", 998, 16.0), // beyond lateness
        ];
        let (results, offered) = run(&mut engine, &events);
        assert_eq!(results, vec![expect("a", 0, 1000, &[1.0, 4.0])]);
        assert_eq!(offered[2], Offered::Added);
        assert_eq!(offered[4], Offered::Late);
    }

    #[test]
    fn sliding_windows_count_each_event_in_every_window_that_holds_it() {
        let mut engine = WindowEngine::new(spec(
            WindowSpec::Sliding {
                size_ms: 1000,
                slide_ms: 500,
            },
            0,
            0,
        ));
        let times = [100u64, 600, 700, 1400, 2100];
        let events: Vec<Event> = times
            .iter()
            .map(|t| event("s", "a", *t, *t as f64))
            .collect();
        let (results, _) = run(&mut engine, &events);
        // Independently: every window [k*500, k*500+1000) that ended by 2100.
        let expected: Vec<WindowResult> = (0..4u64)
            .map(|k| (k * 500, k * 500 + 1000))
            .filter(|(_, end)| *end <= 2100)
            .map(|(start, end)| {
                let vs: Vec<f64> = times
                    .iter()
                    .filter(|t| (start..end).contains(*t))
                    .map(|t| *t as f64)
                    .collect();
                expect("a", start, end, &vs)
            })
            .filter(|r| r.events > 0)
            .collect();
        assert_eq!(results, expected);
    }

    #[test]
    fn sessions_merge_events_closer_than_the_gap_even_out_of_order() {
        let mut engine = WindowEngine::new(spec(WindowSpec::Session { gap_ms: 100 }, 0, 200));
        let events = [
            event("s", "a", 1000, 1.0),
            event("s", "a", 1150, 2.0), // a second session [1150,1250)
            event("s", "a", 1080, 4.0), // bridges them: one session [1000,1250)
            event("s", "b", 1100, 8.0),
            event("s", "a", 2000, 0.0), // watermark 1800: both close
        ];
        let (results, _) = run(&mut engine, &events);
        assert_eq!(
            results,
            vec![
                expect("b", 1100, 1200, &[8.0]),
                expect("a", 1000, 1250, &[1.0, 2.0, 4.0]),
            ]
        );
    }

    #[test]
    fn the_slowest_source_holds_the_watermark() {
        let mut engine = WindowEngine::new(spec(WindowSpec::Tumbling { size_ms: 1000 }, 0, 0));
        engine.offer(&event("slow", "a", 100, 2.0));
        engine.offer(&event("fast", "a", 5000, 1.0));
        engine.offer(&event("slow", "a", 900, 4.0));
        assert_eq!(engine.watermark(), Some(900));
        assert!(
            engine.advance().is_empty(),
            "slow source still inside [0,1000)"
        );
        engine.offer(&event("slow", "a", 1000, 3.0));
        let results = engine.advance();
        assert_eq!(results, vec![expect("a", 0, 1000, &[2.0, 4.0])]);
        assert_eq!(
            engine.source_watermarks(),
            BTreeMap::from([("fast".into(), 5000), ("slow".into(), 1000)])
        );
        // A checkpointed engine carries on where it was.
        let state = serde_json::to_string(&engine.state()).expect("checkpoint");
        let mut engine = WindowEngine::resume(
            spec(WindowSpec::Tumbling { size_ms: 1000 }, 0, 0),
            serde_json::from_str(&state).expect("restore"),
        );
        // A source first seen behind the watermark cannot reopen [0,1000).
        assert_eq!(engine.offer(&event("new", "a", 10, 1.0)), Offered::Late);
        assert_eq!(engine.watermark(), Some(1000));
        assert_eq!(engine.open_windows(), 2, "[1000,2000) and [5000,6000)");
    }

    #[test]
    fn filters_keys_and_specs_are_checked() {
        let mut engine = WindowEngine::new(spec(WindowSpec::Tumbling { size_ms: 10 }, 0, 0));
        let mut other = event("s", "a", 1, 1.0);
        other.event_type = "other".into();
        assert_eq!(engine.offer(&other), Offered::Filtered);
        let mut keyless = event("s", "a", 1, 1.0);
        keyless.data = json!({"v": 1.0})
            .as_object()
            .cloned()
            .unwrap_or_default()
            .into();
        assert_eq!(engine.offer(&keyless), Offered::NoKey);

        let mut bad = spec(
            WindowSpec::Sliding {
                size_ms: 10,
                slide_ms: 20,
            },
            0,
            0,
        );
        assert_eq!(validate(&bad).unwrap_err().0, "window.slide_ms");
        bad.window = WindowSpec::Tumbling { size_ms: 10 };
        bad.aggregates[1].field = Some("temperature".into());
        assert_eq!(validate(&bad).unwrap_err().0, "aggregates[1].field");
        bad.aggregates[1].field = None;
        assert_eq!(validate(&bad).unwrap_err().0, "aggregates[1].field");
        assert!(validate(&spec(WindowSpec::Session { gap_ms: 5 }, 0, 0)).is_ok());
    }
}

#[cfg(test)]
mod quantile_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantiles_are_close_and_survive_a_checkpoint() {
        let spec: PipelineSpec = serde_json::from_value(json!({
            "id": "q",
            "window": {"kind": "tumbling", "size_ms": 10_000},
            "aggregates": [
                {"op": "quantile", "field": "data.v", "q": 0.5},
                {"op": "quantile", "field": "data.v", "q": 0.99}
            ]
        }))
        .expect("spec");
        assert!(validate(&spec).is_ok());
        let mut engine = WindowEngine::new(spec.clone());
        let event = |t: u64, v: f64| Event {
            offset: 0,
            event_id: t.to_string(),
            source: "s".into(),
            event_type: "t".into(),
            timestamp_ms: t,
            received_at_ms: t,
            data: json!({"v": v})
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into(),
        };
        // 1..=1000 shuffled, with a checkpoint halfway.
        for i in 0..500u64 {
            engine.offer(&event(i, ((i * 7919) % 1000 + 1) as f64));
        }
        let saved = serde_json::to_string(&engine.state()).expect("checkpoint");
        let mut engine = WindowEngine::resume(spec, serde_json::from_str(&saved).expect("restore"));
        for i in 500..1000u64 {
            engine.offer(&event(i, ((i * 7919) % 1000 + 1) as f64));
        }
        engine.offer(&event(20_000, 0.0));
        let results = engine.advance();
        let values = &results[0].values;
        let p50 = values["p50(data.v)"];
        let p99 = values["p99(data.v)"];
        assert!((p50 - 500.0).abs() < 10.0, "p50 {p50}");
        assert!((p99 - 990.0).abs() < 10.0, "p99 {p99}");
    }
}

#[cfg(test)]
mod digest_tests {
    use super::*;

    #[test]
    fn an_empty_digest_checkpoints_as_plain_json() {
        let text = serde_json::to_string(&Digest::new()).expect("encode");
        let back: Digest = serde_json::from_str(&text).expect(&text);
        assert_eq!(back.pending.len(), 0);
    }
}
