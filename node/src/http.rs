//! The REST API: routes, shared handler state and request metrics.
//!
//! Handlers hold no state of their own: they resolve the actor they need by
//! path, call it, and map the reply to HTTP. [`routes`] is used by the
//! server and by in-process tests alike; every handler is added in
//! `register`, which also builds the OpenAPI document (`openapi`), so
//! what is served and what `GET /openapi.json` says are the same list.

pub mod access;
mod actors;
mod cluster;
mod dashboard;
mod error;
mod events;
mod health;
mod json;
pub mod limits;
mod openapi;
mod pipelines;
mod schedules;
mod tasks;

use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest};
use actix_web::web;
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::ActorRef;
use troupe_actors::directory::ActorDirectory;
use troupe_actors::store::{EventStore, Storage, StoreError, WindowStore};
use troupe_actors::supervisor::SupervisorMsg;

pub use error::ApiError;

/// What handlers need to reach the node's actors.
#[derive(Clone)]
pub struct AppState {
    /// Cluster name.
    pub cluster: Arc<str>,
    /// This node's id.
    pub node_id: Arc<str>,
    /// Incarnation: start time in ms since the epoch.
    pub generation: u64,
    /// Process start, for uptime.
    pub started: Instant,
    /// Root of the supervision tree.
    pub root: ActorRef<SupervisorMsg>,
    /// Finds actors by tree path.
    pub directory: ActorDirectory,
    /// The node's store, for `/ready`.
    pub storage: Arc<dyn Storage>,
    /// Routes task requests to their owners.
    pub router: Arc<crate::routing::TaskRouter>,
    /// The event log, for flushing before an ingestion is acknowledged.
    pub events: Arc<dyn EventStore>,
    /// Largest ingestion body, bytes.
    pub ingest_limit: usize,
    /// Ingestion requests in progress at once; more get a 429.
    pub ingest_slots: Arc<tokio::sync::Semaphore>,
    /// Window results and late events, for queries.
    pub windows: Arc<dyn WindowStore>,
    /// Window shards under `node/ingest`.
    pub shards: usize,
    /// Health of the PostgreSQL sink, when configured.
    pub postgres: Option<troupe_actors::sink::SinkStatus>,
    /// The PostgreSQL results table, when configured (`/v1/aggregates?source=postgres`).
    pub results_db: Option<Arc<crate::postgres::PgSink>>,
    /// Whether `POST /v1/actors/{path}/crash` is allowed.
    pub fault_injection: bool,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Token checks, when `[auth] required`.
    pub access: Option<Arc<access::Access>>,
    /// Per-client request rate, when `[limits]` sets one.
    pub limits: Option<Arc<limits::ClientLimits>>,
    /// The worker pool's live figures, for the dashboard.
    pub pool: Arc<troupe_actors::tasks::gauges::PoolGauges>,
    /// Window results as they are committed, for the dashboard.
    pub results: Arc<troupe_actors::results::ResultsFeed>,
    /// What the alert rules raised.
    pub alerts: Arc<troupe_actors::alerts::AlertBoard>,
    /// Cancelled when the node shuts down; ends streaming responses.
    pub stopping: tokio_util::sync::CancellationToken,
    /// The dashboard stream's latest snapshot ([`publish_snapshots`]).
    pub snapshots: Arc<dashboard::Snapshots>,
}

pub use dashboard::publish_snapshots;

/// The `limit` query parameter of a paged listing: 1 to `max`.
fn page_limit(value: &str, max: usize) -> Result<usize, ApiError> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ApiError::invalid("limit", format!("must be from 1 to {max}")))
}

/// A `cursor` query parameter that is a log offset.
fn offset_cursor(value: &str) -> Result<u64, ApiError> {
    value
        .parse()
        .map_err(|_| ApiError::invalid("cursor", "not a cursor from a previous page"))
}

/// Runs store work off the async threads (sled blocks); a store failure
/// is a 503.
pub async fn store_work<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(ApiError::unavailable(e.to_string())),
        Err(e) => Err(ApiError::unavailable(format!("store work failed: {e}"))),
    }
}

/// Whether the client asked for NDJSON (`Accept: application/x-ndjson`).
fn wants_ndjson(req: &actix_web::HttpRequest) -> bool {
    req.headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"))
}

/// Streams a paged listing as NDJSON, one page in memory at a time:
/// `page(cursor)` gives a page and the next cursor. An error after the
/// first byte ends the stream with an `{"error": …}` line.
fn ndjson_pages<C, T, F, Fut>(first: C, page: F) -> actix_web::HttpResponse
where
    C: 'static,
    T: serde::Serialize,
    F: Fn(C) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<C>), ApiError>> + 'static,
{
    let stream = futures::stream::unfold((Some(first), page), |(cursor, page)| async move {
        let cursor = cursor?;
        let (bytes, next) = match page(cursor).await {
            Ok((items, next)) => {
                let mut bytes = Vec::new();
                for item in &items {
                    if serde_json::to_writer(&mut bytes, item).is_ok() {
                        bytes.push(b'\n');
                    }
                }
                (bytes, next)
            }
            Err(e) => {
                let line = serde_json::json!({"error": e.to_parts().1});
                (format!("{line}\n").into_bytes(), None)
            }
        };
        Some((
            Ok::<_, actix_web::Error>(web::Bytes::from(bytes)),
            (next, page),
        ))
    });
    actix_web::HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(stream)
}

/// Paths never rate-limited: the probes of an orchestrator and of
/// Prometheus (the OpenAPI document reads this too).
const PROBES: &[&str] = &["/health", "/ready", "/metrics"];

/// Every route. Each handler carries its route macro and
/// `#[utoipa::path]`, so adding it here both serves and documents it.
fn register(routes: &mut openapi::Routes) {
    routes
        .add(dashboard::page)
        .add(dashboard::snapshot)
        .add(dashboard::stream)
        .add(dashboard::alerts)
        .add(health::health)
        .add(health::ready)
        .add(health::metrics)
        .add(openapi::openapi_json)
        .add(cluster::view)
        .add(cluster::plugins)
        .add(actors::tree)
        .add(actors::crash)
        .add(tasks::submit)
        .add(tasks::list)
        .add(tasks::get)
        .add(tasks::cancel)
        .add(events::ingest)
        .add(events::list)
        .add(events::retain)
        .add(events::webhook_one)
        .add(events::webhook_batch)
        .add(events::stats)
        .add(pipelines::list)
        .add(pipelines::create)
        .add(pipelines::start)
        .add(pipelines::stop)
        .add(pipelines::stats)
        .add(pipelines::late)
        .add(pipelines::open_windows)
        .add(pipelines::watermarks)
        .add(pipelines::aggregates)
        .add(pipelines::checkpoint)
        .add(schedules::create)
        .add(schedules::list)
        .add(schedules::get)
        .add(schedules::delete)
        .add(tasks::workers)
        .add(tasks::resize);
}

/// Registers every route, the extractors' error answers and the fallback
/// for unknown routes and methods, all in the one error shape.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| {
        ApiError::malformed(format!("the query does not decode: {e}")).into()
    }))
    .app_data(
        web::PathConfig::default().error_handler(|e, _| {
            ApiError::malformed(format!("the path does not decode: {e}")).into()
        }),
    )
    .app_data(
        web::JsonConfig::default()
            .limit(json::MAX_BODY)
            .error_handler(|e, _| {
                ApiError::malformed(format!("not the expected JSON: {e}")).into()
            }),
    );
    register(&mut openapi::Routes::new(
        &mut utoipa_actix_web::service_config::ServiceConfig::new(cfg),
    ));
    cfg.default_service(web::to(error::no_route));
}

/// For a middleware that decides before routing: answers `refused`
/// without calling the service, or calls it.
fn refuse_or_call<S, B>(
    req: ServiceRequest,
    srv: &S,
    refused: Option<ApiError>,
) -> impl std::future::Future<Output = Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>>
where
    S: Service<
        ServiceRequest,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    let call = match refused {
        Some(error) => Err(error),
        None => Ok(srv.call(req)),
    };
    async move {
        match call {
            Ok(call) => call.await,
            Err(error) => Err(error.into()),
        }
    }
}

/// Counts requests by route pattern and status, and times them.
pub fn record_request<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<S::Response, S::Error>>
where
    S: Service<
        ServiceRequest,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    let started = Instant::now();
    // The pattern, not the raw path, keeps label cardinality bounded.
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = srv.call(req);
    async move {
        let response = response.await?;
        let status = response.status().as_u16().to_string();
        metrics::counter!("troupe_http_requests_total", "route" => route.clone(), "status" => status)
            .increment(1);
        metrics::histogram!("troupe_http_request_duration_seconds", "route" => route)
            .record(started.elapsed().as_secs_f64());
        Ok(response)
    }
}

#[cfg(test)]
mod tests;
