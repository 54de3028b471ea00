//! Events: what `POST /v1/events` takes, what the event log keeps, and the
//! replies of ingestion, `GET /v1/events` and `GET /stats`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Payload;

/// An event as a client sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "source": "sensor-1",
    "event_type": "reading",
    "timestamp": "2026-01-01T00:00:00Z",
    "data": {"room": "kitchen", "celsius": 21.5},
}))]
pub struct EventIn {
    /// Unique id; events are deduplicated by it. Generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub event_id: Option<String>,
    /// Where it comes from (a device, a service); watermarks are per source.
    #[schema(min_length = 1, max_length = 256)]
    pub source: String,
    /// What happened; pipelines filter on it.
    #[schema(min_length = 1, max_length = 256)]
    pub event_type: String,
    /// Event time: ms since the Unix epoch, or an RFC 3339 string. The
    /// arrival time when absent (the reply counts those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<EventTime>,
    /// The payload.
    pub data: Payload,
}

/// Event time as sent: a number of ms or an RFC 3339 string.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EventTime {
    /// Milliseconds since the Unix epoch.
    Millis(u64),
    /// RFC 3339, e.g. `2026-11-23T12:00:00Z`.
    Text(String),
}

/// By hand rather than `untagged`: serde buffers an untagged value before
/// trying each variant, which was a sixth of parsing an event.
impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Time;
        impl serde::de::Visitor<'_> for Time {
            type Value = EventTime;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("ms since the Unix epoch or an RFC 3339 string")
            }
            fn visit_u64<E: serde::de::Error>(self, ms: u64) -> Result<EventTime, E> {
                Ok(EventTime::Millis(ms))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<EventTime, E> {
                Ok(EventTime::Text(text.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<EventTime, E> {
                Ok(EventTime::Text(text))
            }
        }
        deserializer.deserialize_any(Time)
    }
}

/// An event as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Position in this node's event log (from 1).
    pub offset: u64,
    /// Unique id.
    pub event_id: String,
    /// Where it comes from.
    pub source: String,
    /// What happened.
    pub event_type: String,
    /// Event time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// When this node received it, ms since the Unix epoch.
    pub received_at_ms: u64,
    /// The payload.
    pub data: Payload,
}

/// Reply to an ingestion (202).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IngestReply {
    /// New events now in the event log.
    pub accepted: u64,
    /// Events whose id the log already had (nothing written for them).
    pub duplicate: u64,
    /// Accepted events already late for a running pipeline when they
    /// arrived (past every window they belong to, by its watermark then;
    /// kept at `/v1/pipelines/{id}/late`). A pipeline still catching up
    /// may find more: its own count is in `/v1/pipelines`.
    #[serde(default)]
    pub late: u64,
    /// Accepted events that had no `event_id` and were given one.
    pub ids_assigned: u64,
    /// Accepted events that had no `timestamp`: their event time is their
    /// arrival time.
    pub timestamps_assigned: u64,
    /// Log offsets of the accepted events, first and last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<u64>>, min_items = 2, max_items = 2)]
    pub offsets: Option<(u64, u64)>,
}

impl IngestReply {
    /// Adds the counts of a later part of the same request.
    pub fn absorb(&mut self, later: IngestReply) {
        self.accepted += later.accepted;
        self.duplicate += later.duplicate;
        self.late += later.late;
        self.ids_assigned += later.ids_assigned;
        self.timestamps_assigned += later.timestamps_assigned;
        self.offsets = match (self.offsets, later.offsets) {
            (Some((first, _)), Some((_, last))) => Some((first, last)),
            (mine, theirs) => mine.or(theirs),
        };
    }
}

/// A page of `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventPage {
    /// Events in log order.
    pub events: Vec<Event>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /stats`: what this node ingested.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IngestStats {
    /// Events in the log.
    pub events: u64,
    /// Duplicates refused since the node started.
    pub duplicates: u64,
    /// Events in the log per source.
    pub sources: BTreeMap<String, u64>,
}

/// Reply to `DELETE /v1/events?older_than=…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Retention {
    /// Events deleted.
    pub deleted: u64,
    /// Events with an earlier event time (ms since the Unix epoch) went.
    pub cutoff_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_are_ms_or_text_and_nothing_else() {
        let time = |json: &str| serde_json::from_str::<EventTime>(json);
        assert_eq!(
            time("1767225600000").ok(),
            Some(EventTime::Millis(1_767_225_600_000))
        );
        assert_eq!(
            time(r#""2026-01-01T00:00:00Z""#).ok(),
            Some(EventTime::Text("2026-01-01T00:00:00Z".into()))
        );
        for bad in ["-1", "1.5", "true", "null", "[1]", "{}"] {
            let err = time(bad).expect_err(bad);
            assert!(
                err.to_string().contains("ms since the Unix epoch"),
                "{bad}: {err}"
            );
        }
        for time in [EventTime::Millis(5), EventTime::Text("x".into())] {
            let json = serde_json::to_string(&time).expect("serialize");
            assert_eq!(serde_json::from_str::<EventTime>(&json).ok(), Some(time));
        }
    }
}
