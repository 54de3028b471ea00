//! Pipelines: which events to aggregate, how to window them, and what the
//! closed windows hold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A pipeline, from `cluster.toml` (`[[pipelines]]`) or the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "id": "rooms",
    "event_type": "reading",
    "key_by": "data.room",
    "window": {"kind": "tumbling", "size_ms": 60000},
    "aggregates": [{"op": "count"}, {"op": "avg", "field": "data.celsius"}],
}))]
pub struct PipelineSpec {
    /// Unique id.
    pub id: String,
    /// Only events of this `event_type` (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// A plugin that rewrites each event's data before it is keyed and
    /// windowed (none: the data as ingested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<TransformSpec>,
    /// Field path of the key windows are kept per: `source`, `event_type`
    /// or `data.<path>` (one key for all events when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_by: Option<String>,
    /// How events are grouped in time.
    pub window: WindowSpec,
    /// What each window computes.
    pub aggregates: Vec<AggregateSpec>,
    /// How long after its end (by watermark) a window still takes events.
    #[serde(default)]
    pub allowed_lateness_ms: u64,
    /// How far each source's watermark trails the latest event time seen
    /// from it (how out of order a source may be).
    #[serde(default)]
    pub watermark_delay_ms: u64,
}

/// A pipeline transform: a plugin that takes the settings in `with` plus
/// the event's data as `input`, and returns `outputs`, the data of the
/// events to window in its place — none drops the event, several fan it
/// out (`json.transform` is one). It must be deterministic: windows are
/// recomputed from the log after a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformSpec {
    /// The plugin (`json.transform`).
    pub plugin: String,
    /// Plugin versions accepted, as a semver requirement (any if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The plugin's settings (`{ filter = "…" }`); `input` is the event's.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub with: serde_json::Map<String, serde_json::Value>,
}

/// Window kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows of `size_ms`.
    Tumbling {
        /// Window length.
        size_ms: u64,
    },
    /// Windows of `size_ms` starting every `slide_ms` (an event is in
    /// `size_ms / slide_ms` of them).
    Sliding {
        /// Window length.
        size_ms: u64,
        /// Distance between window starts.
        slide_ms: u64,
    },
    /// Per key, events closer than `gap_ms` to each other share a window.
    Session {
        /// Inactivity that ends a session.
        gap_ms: u64,
    },
}

/// One aggregate of a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateSpec {
    /// What to compute.
    pub op: AggregateOp,
    /// The numeric field it reads (`data.temperature`); not for `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `quantile`: which one, between 0 and 1 (0.99 for p99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<f64>,
}

/// Aggregate operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AggregateOp {
    /// Events in the window.
    Count,
    /// Sum of the field.
    Sum,
    /// Smallest value of the field.
    Min,
    /// Largest value of the field.
    Max,
    /// Mean of the field.
    Avg,
    /// Approximate quantile `q` of the field (t-digest, 100 centroids).
    Quantile,
}

impl AggregateSpec {
    /// The name its value has in a result: `count`, `avg(data.temperature)`.
    pub fn name(&self) -> String {
        let quantile;
        let op = match self.op {
            AggregateOp::Count => "count",
            AggregateOp::Sum => "sum",
            AggregateOp::Min => "min",
            AggregateOp::Max => "max",
            AggregateOp::Avg => "avg",
            AggregateOp::Quantile => {
                // 0.99 → p99, 0.999 → p99.9
                let percent = format!("{:.3}", self.q.unwrap_or(0.0) * 100.0);
                quantile = format!("p{}", percent.trim_end_matches('0').trim_end_matches('.'));
                &quantile
            }
        };
        match &self.field {
            Some(field) if self.op != AggregateOp::Count => format!("{op}({field})"),
            _ => op.to_owned(),
        }
    }
}

/// A closed window's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WindowResult {
    /// The pipeline.
    pub pipeline: String,
    /// The key.
    pub key: String,
    /// Start of the window, ms since the Unix epoch (inclusive).
    pub window_start_ms: u64,
    /// End of the window (exclusive).
    pub window_end_ms: u64,
    /// Events in the window.
    pub events: u64,
    /// Each aggregate by name; absent when no event had the field.
    pub values: BTreeMap<String, f64>,
}

/// A page of `GET /v1/aggregates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResultPage {
    /// Closed windows in (key, window start) order.
    pub results: Vec<WindowResult>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One pipeline in `GET /v1/windows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpenWindows {
    /// The pipeline.
    pub pipeline: String,
    /// Windows open now.
    pub open_windows: usize,
    /// The pipeline's watermark.
    pub watermark_ms: Option<u64>,
}

/// One pipeline in `GET /v1/watermarks` (keyed by pipeline id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Watermarks {
    /// The pipeline's watermark: the least of its sources'.
    pub watermark_ms: Option<u64>,
    /// Per-source watermarks.
    pub sources: BTreeMap<String, u64>,
}

/// Reply to `POST /v1/checkpoint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkpointed {
    /// Log offset each window shard committed, by shard path.
    pub checkpointed: BTreeMap<String, u64>,
}
