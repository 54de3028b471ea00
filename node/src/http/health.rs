//! `GET /health`, `GET /ready` and `GET /metrics`.

use actix_web::{get, web, HttpResponse};
use troupe_actors::supervisor::SupervisorMsg;
use troupe_protocol::{ActorNode, ActorStatus, Health, Readiness};

use super::AppState;

/// How long `/ready` waits for the supervision tree to answer.
const TREE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Liveness: the process answers.
#[utoipa::path(
    tag = "probes",
    operation_id = "health",
    responses((status = 200, description = "The node is up.", body = Health))
)]
#[get("/health")]
pub(super) async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
        node: state.node_id.to_string(),
        generation: state.generation,
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: state.started.elapsed().as_secs(),
    })
}

fn not_running(node: &ActorNode, out: &mut Vec<String>) {
    if node.status != ActorStatus::Running {
        out.push(node.path.clone());
    }
    for child in &node.children {
        not_running(child, out);
    }
}

/// Readiness: the store is open, every supervised actor runs and the node
/// has joined the cluster.
#[utoipa::path(
    tag = "probes",
    operation_id = "ready",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Not ready; the body says what is missing.", body = Readiness),
    )
)]
#[get("/ready")]
pub(super) async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let store = state.storage.check().is_ok();
    let mut down = Vec::new();
    match state
        .root
        .call(SupervisorMsg::Snapshot, Some(TREE_TIMEOUT))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(tree)) => not_running(&tree, &mut down),
        _ => down.push(troupe_actors::tree::ROOT.to_owned()),
    }
    let joined = state.router.joined();
    let readiness = Readiness {
        ready: store && joined && down.is_empty(),
        joined,
        store,
        actors: down.is_empty(),
        not_running: down,
        postgres: state
            .postgres
            .as_ref()
            .and_then(|status| status.lock().ok().map(|h| h.clone())),
    };
    if readiness.ready {
        HttpResponse::Ok().json(readiness)
    } else {
        HttpResponse::ServiceUnavailable().json(readiness)
    }
}

/// Prometheus metrics.
#[utoipa::path(
    tag = "probes",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format.",
               body = String, content_type = "text/plain"))
)]
#[get("/metrics")]
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
