//! Request bodies as typed JSON, with errors a client can act on.
//!
//! actix's `Json` extractor folds every problem into one message. Here a
//! syntax error is a 400 with line and column, and a well-formed body of the
//! wrong shape is a 422 naming the field path (`input`, `priority`).

use actix_web::web;
use serde::de::DeserializeOwned;

use super::ApiError;

/// Largest JSON body accepted by typed endpoints.
pub(super) const MAX_BODY: usize = 1 << 20;

/// Reads the whole body, up to `limit` bytes ([`MAX_BODY`] for typed
/// endpoints); beyond it a 413 in our error shape (actix's own limit
/// answers in plain text).
pub(super) async fn read_body(payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(ApiError::malformed(format!("could not read the body: {e}"))),
        Err(_) => Err(ApiError::too_large(format!("body over {limit} bytes"))),
    }
}

/// Parses `body` as `T`. Good bodies take serde_json's plain path; only
/// a bad one is parsed again, tracking the path, to name the field (the
/// tracking was a fifth of NDJSON ingestion's parse time).
pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| classify(e, body))?;
    deserializer
        .end()
        .map_err(|e| ApiError::malformed(e.to_string()))?;
    Ok(value)
}

/// The field a shape error is about: its path, and for a missing field
/// the missing one under it (serde reports the object that lacks it).
fn field_of(path: &str, inner: &serde_json::Error) -> String {
    let message = inner.to_string();
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, missing) {
        (".", Some(name)) => name.to_owned(),
        (_, Some(name)) => format!("{path}.{name}"),
        (".", None) => "(body)".to_owned(),
        (_, None) => path.to_owned(),
    }
}

fn classify(err: serde_path_to_error::Error<serde_json::Error>, body: &[u8]) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    // serde_json reports some shape errors (a number where an enum's string
    // belongs) as syntax errors; a body that is valid JSON is a 422.
    let well_formed = || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
    match inner.classify() {
        serde_json::error::Category::Data => {
            ApiError::invalid(field_of(&path, &inner), inner.to_string())
        }
        serde_json::error::Category::Syntax if well_formed() => {
            ApiError::invalid(field_of(&path, &inner), inner.to_string())
        }
        _ => ApiError::malformed(format!("malformed JSON: {inner}")),
    }
}
