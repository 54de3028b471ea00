//! The live dashboard: `GET /` is the page, `GET /v1/dashboard` one
//! snapshot of this node and its view of the cluster, and
//! `GET /v1/dashboard/stream` a snapshot every second as server-sent
//! events (`event: snapshot`, taken once for all viewers); also `GET /v1/alerts`, what the alert rules
//! raised.
//!
//! The page is one self-contained file compiled into the binary, so every
//! node serves it with nothing to install or fetch. It reads the stream
//! with `fetch` rather than `EventSource` so that it can send a bearer
//! token when reads are protected (`[auth] protect_reads`); the page itself
//! holds no data and is always served.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use actix_web::{get, web, HttpResponse};
use futures::future::{join3, try_join_all};
use futures::StreamExt as _;
use troupe_actors::tasks::gauges::LANE_ORDER;
use troupe_protocol::alerts::AlertsView;
use troupe_protocol::dashboard::{DashboardSnapshot, InFlightTask, PipelineFigures, PoolFigures};
use troupe_protocol::TaskState;

use super::{actors, cluster, pipelines, ApiError, AppState};

/// One event of the stream, as its fields arrive (the document's schema
/// of `text/event-stream`; never built).
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "documents the stream's events")]
struct SnapshotEvent {
    /// Always `snapshot`.
    event: String,
    /// A [`DashboardSnapshot`] as JSON.
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// The page.
const PAGE: &str = include_str!("dashboard.html");
/// Time between two snapshots on the stream.
const PERIOD: Duration = Duration::from_secs(1);
/// Alert notifications in a snapshot.
const RECENT_ALERTS: usize = 20;
/// Unfinished tasks listed per state.
const IN_FLIGHT_PAGE: usize = 100;

/// The dashboard page (HTML; it reads `/v1/dashboard/stream`).
#[utoipa::path(
    tag = "dashboard",
    operation_id = "dashboard_page",
    responses((status = 200, description = "The page.", body = String, content_type = "text/html"))
)]
#[get("/")]
pub(super) async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-cache"))
        .body(PAGE)
}

/// One snapshot of this node and its view of the cluster.
#[utoipa::path(
    tag = "dashboard",
    operation_id = "dashboard_snapshot",
    responses((status = 200, description = "The snapshot; sections that could not be read are null, with the reason in `unavailable`.", body = DashboardSnapshot))
)]
#[get("/v1/dashboard")]
pub(super) async fn snapshot(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(take(&state).await)
}

/// Every alert rule with its firing keys and counts, and the latest
/// notifications.
#[utoipa::path(
    tag = "alerts",
    operation_id = "alerts",
    responses((status = 200, description = "The rules and the latest notifications.", body = AlertsView))
)]
#[get("/v1/alerts")]
pub(super) async fn alerts(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.alerts.view())
}

/// A snapshot every second, as server-sent events (`event: snapshot`,
/// `data:` the snapshot's JSON).
#[utoipa::path(
    tag = "dashboard",
    operation_id = "dashboard_stream",
    responses((status = 200, description = "Server-sent events, one `snapshot` a second.", body = SnapshotEvent, content_type = "text/event-stream"))
)]
#[get("/v1/dashboard/stream")]
pub(super) async fn stream(state: web::Data<AppState>) -> HttpResponse {
    let mut frames = state.snapshots.subscribe();
    // A new viewer gets the latest snapshot at once, then each new one.
    let latest = frames.borrow_and_update().clone();
    let first = futures::stream::iter(latest.map(Ok::<_, actix_web::Error>));
    let next = futures::stream::unfold((state, frames), |(state, mut frames)| async move {
        tokio::select! {
            changed = frames.changed() => changed.ok()?,
            () = state.stopping.cancelled() => return None,
        }
        let frame = frames.borrow_and_update().clone()?;
        Some((Ok(frame), (state, frames)))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        // Proxies that buffer would hold every frame back.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(first.chain(next))
}

/// The stream's snapshots, one a second for all viewers together.
pub type Snapshots = tokio::sync::watch::Sender<Option<web::Bytes>>;

/// Takes a snapshot every second while anyone watches the stream and
/// publishes it, as a server-sent event, to every viewer; ends at shutdown.
/// However many dashboards are open, the node does the work of one.
pub async fn publish_snapshots(state: web::Data<AppState>) {
    let mut ticks = tokio::time::interval(PERIOD);
    // After a slow snapshot, the next comes a period later, not in a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = state.stopping.cancelled() => return,
        }
        if state.snapshots.receiver_count() == 0 {
            continue;
        }
        let taken = take(&state).await;
        let frame = match serde_json::to_string(&taken) {
            Ok(json) => format!("event: snapshot\ndata: {json}\n\n"),
            Err(e) => format!("event: error\ndata: {e}\n\n"),
        };
        state.snapshots.send_replace(Some(web::Bytes::from(frame)));
    }
}

/// Reads every section; one that fails is `null`, its reason kept.
async fn take(state: &AppState) -> DashboardSnapshot {
    let mut unavailable = BTreeMap::new();
    let (members, tree, in_flight) = join3(
        cluster::members(state),
        actors::snapshot(state),
        in_flight(state),
    )
    .await;
    let members = keep(&mut unavailable, "members", members);
    let tree = keep(&mut unavailable, "tree", tree);
    let in_flight = keep(&mut unavailable, "in_flight", in_flight);
    let pipelines = keep(
        &mut unavailable,
        "pipelines",
        pipelines::statuses(state).await,
    )
    .map(|all| {
        all.into_iter()
            .map(|p| PipelineFigures {
                id: p.spec.id,
                running: p.running,
                open_windows: p.open_windows as u64,
                watermark_ms: p.watermark_ms,
                added: p.counters.added,
                late: p.counters.late,
                emitted: p.counters.emitted,
            })
            .collect()
    });
    let queued = LANE_ORDER
        .into_iter()
        .zip(state.pool.lanes())
        .map(|(priority, n)| (priority, n as u64))
        .collect();
    DashboardSnapshot {
        cluster: state.cluster.to_string(),
        node: state.node_id.to_string(),
        at_ms: troupe_protocol::now_ms(),
        uptime_secs: state.started.elapsed().as_secs(),
        members,
        tree,
        pool: PoolFigures {
            workers: state.pool.size() as u64,
            queued,
            finished_total: state.pool.finished(),
        },
        in_flight,
        pipelines,
        aggregates: state.results.recent(),
        alerts: state.alerts.recent(RECENT_ALERTS),
        unavailable,
    }
}

/// A section's value, or `None` with the reason noted.
fn keep<T>(
    unavailable: &mut BTreeMap<String, String>,
    section: &str,
    result: Result<T, ApiError>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            unavailable.insert(section.to_owned(), e.to_parts().1.detail);
            None
        }
    }
}

/// States of a task that is not finished.
const UNFINISHED: [TaskState; 5] = [
    TaskState::Running,
    TaskState::Retrying,
    TaskState::Queued,
    TaskState::Waiting,
    TaskState::Pending,
];

/// Unfinished tasks across the cluster, a page per state. The listings are
/// concurrent, so a task that moves on between them is kept once, in the
/// first state listed.
async fn in_flight(state: &AppState) -> Result<Vec<InFlightTask>, ApiError> {
    let pages = try_join_all(
        UNFINISHED.map(|wanted| state.router.list(None, Some(wanted), IN_FLIGHT_PAGE)),
    )
    .await?;
    let mut seen = HashSet::new();
    Ok(pages
        .into_iter()
        .flat_map(|listed| listed.tasks)
        .filter(|t| seen.insert(t.id.clone()))
        .map(|t| InFlightTask {
            id: t.id,
            kind: t.kind,
            state: t.state,
            priority: t.priority,
            owner: t.owner,
        })
        .collect())
}
