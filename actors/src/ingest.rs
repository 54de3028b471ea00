//! Admitting events: checks a client's event and turns it into a log
//! record, with the field path and reason when it is wrong.

use chrono::DateTime;
use troupe_protocol::{Event, EventIn, EventTime};

/// Longest `event_id`, `source` or `event_type`, in bytes.
pub const MAX_NAME: usize = 256;

/// An event ready for the log (offset 0 until the ingestor assigns one),
/// and what the node filled in for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// The record.
    pub event: Event,
    /// Its id was generated here.
    pub id_assigned: bool,
    /// Its event time is its arrival time.
    pub time_assigned: bool,
}

fn name(field: &str, value: &str) -> Result<(), (String, String)> {
    if value.is_empty() || value.len() > MAX_NAME {
        return Err((field.into(), format!("must be 1 to {MAX_NAME} bytes")));
    }
    Ok(())
}

/// Checks `input`, received at `now_ms`; `Err((field path, reason))`.
pub fn admit(input: EventIn, now_ms: u64) -> Result<Admitted, (String, String)> {
    name("source", &input.source)?;
    name("event_type", &input.event_type)?;
    if let Some(id) = &input.event_id {
        name("event_id", id)?;
    }
    let timestamp_ms = match &input.timestamp {
        None => now_ms,
        // Past i64 no clock, RFC 3339 time or PostgreSQL BIGINT can
        // say it (nor the API's documented int64).
        Some(EventTime::Millis(ms)) if i64::try_from(*ms).is_ok() => *ms,
        Some(EventTime::Millis(_)) => {
            return Err((
                "timestamp".to_owned(),
                format!("must be at most {} ms since the Unix epoch", i64::MAX),
            ))
        }
        Some(EventTime::Text(text)) => DateTime::parse_from_rfc3339(text)
            .ok()
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
            .ok_or_else(|| {
                (
                    "timestamp".to_owned(),
                    "must be ms since the Unix epoch or an RFC 3339 time after 1970".to_owned(),
                )
            })?,
    };
    let id_assigned = input.event_id.is_none();
    Ok(Admitted {
        event: Event {
            offset: 0,
            event_id: input
                .event_id
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            source: input.source,
            event_type: input.event_type,
            timestamp_ms,
            received_at_ms: now_ms,
            data: input.data,
        },
        id_assigned,
        time_assigned: input.timestamp.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(value: serde_json::Value) -> EventIn {
        serde_json::from_str(&value.to_string()).expect("shape")
    }

    #[test]
    fn missing_id_and_time_are_filled_in_and_said() {
        let admitted = admit(
            input(json!({"source": "s", "event_type": "t", "data": {}})),
            42,
        )
        .expect("valid");
        assert!(admitted.id_assigned && admitted.time_assigned);
        assert_eq!(admitted.event.timestamp_ms, 42);
        assert_eq!(admitted.event.received_at_ms, 42);
    }

    #[test]
    fn times_are_ms_or_rfc3339_and_bad_ones_name_the_field() {
        let at = |t: serde_json::Value| {
            admit(
                input(json!({"source": "s", "event_type": "t", "timestamp": t, "data": {}})),
                0,
            )
            .map(|a| a.event.timestamp_ms)
        };
        assert_eq!(at(json!(1_767_225_600_000u64)), Ok(1_767_225_600_000));
        assert_eq!(at(json!("2026-01-01T00:00:00Z")), Ok(1_767_225_600_000));
        assert_eq!(
            at(json!("2026-01-01T01:00:00+01:00")),
            Ok(1_767_225_600_000)
        );
        assert_eq!(at(json!("yesterday")).unwrap_err().0, "timestamp");
        assert_eq!(at(json!(i64::MAX as u64)), Ok(i64::MAX as u64));
        assert_eq!(at(json!(i64::MAX as u64 + 1)).unwrap_err().0, "timestamp");
        let empty = admit(
            input(json!({"source": "", "event_type": "t", "data": {}})),
            0,
        );
        assert_eq!(empty.unwrap_err().0, "source");
    }
}
