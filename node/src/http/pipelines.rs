//! `GET /v1/pipelines`, `/v1/windows`, `/v1/watermarks` (from the window
//! shards), `GET /v1/aggregates` (closed windows, paged) and
//! `GET /v1/pipelines/{id}/late` (late events, paged).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::transform::EventTransform;

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use ractor::rpc::CallResult;
use troupe_actors::shard::{shard_of, PipelineStatus, ShardMsg};
use troupe_actors::store::ResultFilter;
use troupe_actors::tree::shard_path;
use troupe_protocol::{
    Checkpointed, EventPage, OpenWindows, PipelineSpec, ResultPage, Watermarks, WindowResult,
};

use super::events::time_bound;
use super::json::{parse, read_body, MAX_BODY};
use super::openapi::{BodyErrors, Conflict, NotFound, PageQuery, QueryErrors, Unavailable};
use super::{
    ndjson_pages, offset_cursor, page_limit, store_work, wants_ndjson, ApiError, AppState,
};

/// Largest page of results or late events.
const MAX_PAGE: usize = 1_000;
/// How long a shard may take to answer.
const SHARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls window shard `k`.
async fn ask_shard<T: Send + 'static>(
    state: &AppState,
    k: usize,
    build: impl FnOnce(ractor::RpcReplyPort<T>) -> ShardMsg,
) -> Result<T, ApiError> {
    let path = shard_path(k);
    let shard = state
        .directory
        .get::<ShardMsg>(&path)
        .ok_or_else(|| ApiError::unavailable(format!("{path} is restarting")))?;
    match shard.call(build, Some(SHARD_TIMEOUT)).await {
        Ok(CallResult::Success(answer)) => Ok(answer),
        _ => Err(ApiError::unavailable(format!("{path} did not answer"))),
    }
}

pub(super) async fn statuses(state: &AppState) -> Result<Vec<PipelineStatus>, ApiError> {
    let mut all = Vec::new();
    for k in 0..state.shards {
        all.append(&mut ask_shard(state, k, ShardMsg::Status).await?);
    }
    all.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
    Ok(all)
}

/// `POST /v1/checkpoint`: every shard processes the log to its end and
/// commits; then the store is flushed. Answers each shard's offset.
#[utoipa::path(
    tag = "pipelines",
    operation_id = "checkpoint",
    responses((status = 200, description = "Each shard's committed offset.", body = Checkpointed),
              Unavailable)
)]
#[post("/v1/checkpoint")]
pub(super) async fn checkpoint(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut offsets = BTreeMap::new();
    for k in 0..state.shards {
        let offset = ask_shard(&state, k, ShardMsg::Checkpoint)
            .await?
            .map_err(ApiError::unavailable)?;
        offsets.insert(shard_path(k), offset);
    }
    flush(&state).await?;
    Ok(HttpResponse::Ok().json(Checkpointed {
        checkpointed: offsets,
    }))
}

/// `POST /v1/pipelines[?start_from=earliest|latest]`: runs a new pipeline
/// on this node, over the retained log (`earliest`, the default) or over
/// events from now on; it survives restarts like one from the config.
#[utoipa::path(
    tag = "pipelines",
    operation_id = "create_pipeline",
    params(("start_from" = Option<String>, Query,
            description = "`earliest` (the default: the retained log) or `latest` (events from now on).")),
    request_body = PipelineSpec,
    responses((status = 201, description = "Running.", body = PipelineStatus),
              BodyErrors, QueryErrors, Conflict, Unavailable)
)]
#[post("/v1/pipelines")]
pub(super) async fn create(
    state: web::Data<AppState>,
    query: web::Query<HashMap<String, String>>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let mut from_latest = false;
    for (key, value) in query.into_inner() {
        match (key.as_str(), value.as_str()) {
            ("start_from", "earliest") => from_latest = false,
            ("start_from", "latest") => from_latest = true,
            ("start_from", _) => return Err(ApiError::invalid("start_from", "earliest or latest")),
            (other, _) => return Err(ApiError::invalid(other, "unknown query parameter")),
        }
    }
    let spec: PipelineSpec = parse(&read_body(payload, MAX_BODY).await?)?;
    troupe_actors::windows::validate(&spec)
        .map_err(|(field, reason)| ApiError::invalid(field, reason))?;
    if let Some(transform) = &spec.transform {
        EventTransform::new(transform, &state.router.plugins)
            .map_err(|(field, reason)| ApiError::invalid(field, reason))?;
    }
    if statuses(&state).await?.iter().any(|s| s.spec.id == spec.id) {
        return Err(ApiError::conflict(format!("pipeline {} exists", spec.id)));
    }
    let k = shard_of(&spec.id, state.shards);
    let status = ask_shard(&state, k, |reply| ShardMsg::Add {
        spec,
        from_latest,
        reply,
    })
    .await?
    .map_err(ApiError::conflict)?;
    flush(&state).await?;
    Ok(HttpResponse::Created().json(status))
}

async fn set_running(
    state: &AppState,
    id: String,
    running: bool,
) -> Result<HttpResponse, ApiError> {
    let k = shard_of(&id, state.shards);
    let status = ask_shard(state, k, |reply| ShardMsg::SetRunning {
        id: id.clone(),
        running,
        reply,
    })
    .await?
    .map_err(ApiError::unavailable)?
    .ok_or_else(|| ApiError::not_found(format!("no pipeline {id}")))?;
    flush(state).await?;
    Ok(HttpResponse::Ok().json(status))
}

/// Resumes a stopped pipeline.
#[utoipa::path(
    tag = "pipelines",
    operation_id = "start_pipeline",
    params(("id" = String, Path, description = "The pipeline's id.")),
    responses((status = 200, description = "Running.", body = PipelineStatus),
              NotFound, Unavailable)
)]
#[post("/v1/pipelines/{id}/start")]
pub(super) async fn start(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_running(&state, id.into_inner(), true).await
}

/// Pauses a pipeline: it takes no events until started.
#[utoipa::path(
    tag = "pipelines",
    operation_id = "stop_pipeline",
    params(("id" = String, Path, description = "The pipeline's id.")),
    responses((status = 200, description = "Stopped.", body = PipelineStatus),
              NotFound, Unavailable)
)]
#[post("/v1/pipelines/{id}/stop")]
pub(super) async fn stop(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_running(&state, id.into_inner(), false).await
}

/// One pipeline's state and counts.
#[utoipa::path(
    tag = "pipelines",
    operation_id = "pipeline_stats",
    params(("id" = String, Path, description = "The pipeline's id.")),
    responses((status = 200, description = "The pipeline.", body = PipelineStatus),
              NotFound, Unavailable)
)]
#[get("/v1/pipelines/{id}/stats")]
pub(super) async fn stats(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    statuses(&state)
        .await?
        .into_iter()
        .find(|s| s.spec.id == id)
        .map(|s| HttpResponse::Ok().json(s))
        .ok_or_else(|| ApiError::not_found(format!("no pipeline {id}")))
}

/// The pipelines this node runs.
#[utoipa::path(
    tag = "pipelines",
    operation_id = "list_pipelines",
    responses((status = 200, description = "The pipelines.", body = Vec<PipelineStatus>),
              Unavailable)
)]
#[get("/v1/pipelines")]
pub(super) async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(statuses(&state).await?))
}

/// Open windows per pipeline.
#[utoipa::path(
    tag = "pipelines",
    operation_id = "open_windows",
    responses((status = 200, description = "Per pipeline.", body = Vec<OpenWindows>),
              Unavailable)
)]
#[get("/v1/windows")]
pub(super) async fn open_windows(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let open: Vec<_> = statuses(&state)
        .await?
        .into_iter()
        .map(|s| OpenWindows {
            pipeline: s.spec.id,
            open_windows: s.open_windows,
            watermark_ms: s.watermark_ms,
        })
        .collect();
    Ok(HttpResponse::Ok().json(open))
}

/// Watermarks per pipeline, keyed by pipeline id.
#[utoipa::path(
    tag = "pipelines",
    operation_id = "watermarks",
    responses((status = 200, description = "By pipeline id.", body = BTreeMap<String, Watermarks>),
              Unavailable)
)]
#[get("/v1/watermarks")]
pub(super) async fn watermarks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let marks: BTreeMap<String, Watermarks> = statuses(&state)
        .await?
        .into_iter()
        .map(|s| {
            (
                s.spec.id,
                Watermarks {
                    watermark_ms: s.watermark_ms,
                    sources: s.source_watermarks,
                },
            )
        })
        .collect();
    Ok(HttpResponse::Ok().json(marks))
}

/// Closed windows of a pipeline, paged; with `Accept: application/x-ndjson`,
/// everything from the cursor on, one result a line.
#[utoipa::path(
    tag = "pipelines",
    operation_id = "aggregates",
    params(
        ("pipeline" = String, Query, description = "The pipeline."),
        ("key" = Option<String>, Query, description = "Only this key."),
        ("from" = Option<String>, Query, description = "Windows starting at or after: ms since the Unix epoch or RFC 3339."),
        ("to" = Option<String>, Query, description = "Windows starting before: ms since the Unix epoch or RFC 3339."),
        PageQuery,
        ("source" = Option<String>, Query,
         description = "`store` (the default) or `postgres` (the results table, when configured)."),
    ),
    responses(
        (status = 200, description = "A page, or an NDJSON stream of results.", content(
            (ResultPage = "application/json"),
            (WindowResult = "application/x-ndjson"),
        )),
        QueryErrors, Unavailable,
    )
)]
#[get("/v1/aggregates")]
pub(super) async fn aggregates(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let mut filter = ResultFilter::default();
    let mut cursor = None;
    let mut limit = 100;
    let mut from_postgres = false;
    for (key, value) in query.into_inner() {
        match key.as_str() {
            "pipeline" => filter.pipeline = value,
            "key" => filter.key = Some(value),
            "from" => filter.from_ms = Some(time_bound("from", &value)?),
            "to" => filter.to_ms = Some(time_bound("to", &value)?),
            "cursor" => cursor = Some(value),
            "limit" => limit = page_limit(&value, MAX_PAGE)?,
            "source" => {
                from_postgres = match value.as_str() {
                    "store" => false,
                    "postgres" => true,
                    _ => return Err(ApiError::invalid("source", "store or postgres")),
                }
            }
            other => return Err(ApiError::invalid(other, "unknown query parameter")),
        }
    }
    if filter.pipeline.is_empty() {
        return Err(ApiError::invalid("pipeline", "is required"));
    }
    let page = results_reader(&state, from_postgres)?;
    if wants_ndjson(&req) {
        // Everything from the cursor on, a page at a time.
        return Ok(ndjson_pages(cursor, move |cursor: Option<String>| {
            let (page, filter) = (page.clone(), filter.clone());
            async move {
                let (results, next) = page(filter, cursor, MAX_PAGE).await?;
                Ok((results, next.map(Some)))
            }
        }));
    }
    let (results, next_cursor) = page(filter, cursor, limit).await?;
    Ok(HttpResponse::Ok().json(ResultPage {
        results,
        next_cursor,
    }))
}

/// Reads a page of results (filter, cursor, limit) from the node's store
/// or from the PostgreSQL results table.
type ResultPages = Arc<
    dyn Fn(
        ResultFilter,
        Option<String>,
        usize,
    ) -> futures::future::BoxFuture<
        'static,
        Result<(Vec<troupe_protocol::WindowResult>, Option<String>), ApiError>,
    >,
>;

fn results_reader(state: &AppState, from_postgres: bool) -> Result<ResultPages, ApiError> {
    if !from_postgres {
        let store = Arc::clone(&state.windows);
        return Ok(Arc::new(move |filter, cursor, limit| {
            let store = Arc::clone(&store);
            Box::pin(async move {
                store_work(move || store.results(&filter, cursor.as_deref(), limit)).await
            })
        }));
    }
    let db = state.results_db.clone().ok_or_else(|| {
        ApiError::invalid(
            "source",
            "no PostgreSQL is configured (storage.postgres_url)",
        )
    })?;
    Ok(Arc::new(move |filter, cursor, limit| {
        let db = Arc::clone(&db);
        Box::pin(async move {
            db.results(&filter, cursor.as_deref(), limit)
                .await
                .map_err(|e| match e {
                    None => ApiError::invalid("cursor", "not a cursor of this listing"),
                    Some(reason) => ApiError::unavailable(format!("postgres: {reason}")),
                })
        })
    }))
}

/// A pipeline's late events (past every window they belonged to), paged.
#[utoipa::path(
    tag = "pipelines",
    operation_id = "late_events",
    params(
        ("id" = String, Path, description = "The pipeline's id."),
        PageQuery,
    ),
    responses((status = 200, description = "A page.", body = EventPage), QueryErrors, Unavailable)
)]
#[get("/v1/pipelines/{id}/late")]
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
    Ok(HttpResponse::Ok().json(EventPage {
        events,
        next_cursor: next_cursor.map(|c| c.to_string()),
    }))
}

/// Makes the shards' commits (checkpoints, pipeline changes) durable.
async fn flush(state: &AppState) -> Result<(), ApiError> {
    let windows = std::sync::Arc::clone(&state.windows);
    store_work(move || windows.flush()).await
}
