//! `GET /v1/pipelines`, `/v1/windows`, `/v1/watermarks` (from the window
//! shards), `GET /v1/aggregates` (closed windows, paged) and
//! `GET /v1/pipelines/{id}/late` (late events, paged).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use ractor::rpc::CallResult;
use serde_json::json;
use troupe_actors::shard::{PipelineStatus, ShardMsg};
use troupe_actors::store::ResultFilter;

use super::events::time_bound;
use super::{
    ndjson_pages, offset_cursor, page_limit, store_work, wants_ndjson, ApiError, AppState,
};

/// Largest page of results or late events.
const MAX_PAGE: usize = 1_000;
/// How long a shard may take to answer.
const SHARD_TIMEOUT: Duration = Duration::from_secs(10);

async fn statuses(state: &AppState) -> Result<Vec<PipelineStatus>, ApiError> {
    let mut all = Vec::new();
    for k in 0..state.shards {
        let path = format!("node/ingest/shard-{k}");
        let shard = state
            .directory
            .get::<ShardMsg>(&path)
            .ok_or_else(|| ApiError::unavailable(format!("{path} is restarting")))?;
        match shard.call(ShardMsg::Status, Some(SHARD_TIMEOUT)).await {
            Ok(CallResult::Success(mut some)) => all.append(&mut some),
            _ => return Err(ApiError::unavailable(format!("{path} did not answer"))),
        }
    }
    all.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
    Ok(all)
}

/// `POST /v1/checkpoint`: every shard processes the log to its end and
/// commits; then the store is flushed. Answers each shard's offset.
pub(super) async fn checkpoint(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut offsets = BTreeMap::new();
    for k in 0..state.shards {
        let path = format!("node/ingest/shard-{k}");
        let shard = state
            .directory
            .get::<ShardMsg>(&path)
            .ok_or_else(|| ApiError::unavailable(format!("{path} is restarting")))?;
        match shard.call(ShardMsg::Checkpoint, Some(SHARD_TIMEOUT)).await {
            Ok(CallResult::Success(Ok(offset))) => {
                offsets.insert(path, offset);
            }
            Ok(CallResult::Success(Err(e))) => return Err(ApiError::unavailable(e)),
            _ => return Err(ApiError::unavailable(format!("{path} did not answer"))),
        }
    }
    let log = Arc::clone(&state.events);
    store_work(move || log.flush()).await?;
    Ok(HttpResponse::Ok().json(json!({"checkpointed": offsets})))
}

pub(super) async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(statuses(&state).await?))
}

pub(super) async fn windows(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let open: Vec<_> = statuses(&state)
        .await?
        .into_iter()
        .map(|s| json!({"pipeline": s.spec.id, "open_windows": s.open_windows, "watermark_ms": s.watermark_ms}))
        .collect();
    Ok(HttpResponse::Ok().json(open))
}

pub(super) async fn watermarks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let marks: BTreeMap<String, _> = statuses(&state)
        .await?
        .into_iter()
        .map(|s| {
            (
                s.spec.id,
                json!({"watermark_ms": s.watermark_ms, "sources": s.source_watermarks}),
            )
        })
        .collect();
    Ok(HttpResponse::Ok().json(marks))
}

pub(super) async fn aggregates(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let mut filter = ResultFilter::default();
    let mut cursor = None;
    let mut limit = 100;
    for (key, value) in query.into_inner() {
        match key.as_str() {
            "pipeline" => filter.pipeline = value,
            "key" => filter.key = Some(value),
            "from" => filter.from_ms = Some(time_bound("from", &value)?),
            "to" => filter.to_ms = Some(time_bound("to", &value)?),
            "cursor" => cursor = Some(value),
            "limit" => limit = page_limit(&value, MAX_PAGE)?,
            other => return Err(ApiError::invalid(other, "unknown query parameter")),
        }
    }
    if filter.pipeline.is_empty() {
        return Err(ApiError::invalid("pipeline", "is required"));
    }
    if wants_ndjson(&req) {
        // Everything from the cursor on, a page at a time.
        let store = Arc::clone(&state.windows);
        return Ok(ndjson_pages(cursor, move |cursor: Option<String>| {
            let store = Arc::clone(&store);
            let filter = filter.clone();
            async move {
                let (results, next) =
                    store_work(move || store.results(&filter, cursor.as_deref(), MAX_PAGE)).await?;
                Ok((results, next.map(Some)))
            }
        }));
    }
    let store = Arc::clone(&state.windows);
    let (results, next_cursor) =
        store_work(move || store.results(&filter, cursor.as_deref(), limit)).await?;
    Ok(HttpResponse::Ok().json(json!({"results": results, "next_cursor": next_cursor})))
}

pub(super) async fn late(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let pipeline = id.into_inner();
    let mut after = 0;
    let mut limit = 100;
    for (key, value) in query.into_inner() {
        match key.as_str() {
            "cursor" => after = offset_cursor(&value)?,
            "limit" => limit = page_limit(&value, MAX_PAGE)?,
            other => return Err(ApiError::invalid(other, "unknown query parameter")),
        }
    }
    let store = Arc::clone(&state.windows);
    let (events, next_cursor) = store_work(move || store.late(&pipeline, after, limit)).await?;
    Ok(HttpResponse::Ok()
        .json(json!({"events": events, "next_cursor": next_cursor.map(|c| c.to_string())})))
}
