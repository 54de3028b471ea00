//! `GET /v1/actors` (the live supervision tree) and
//! `POST /v1/actors/{path}/crash` (fault injection).

use std::time::Duration;

use actix_web::{get, post, web, HttpResponse};
use ractor::rpc::CallResult;
use troupe_actors::supervisor::{CrashError, SupervisorMsg};
use troupe_actors::tree::ROOT;
use troupe_protocol::{ActorNode, Crashed};

use super::openapi::{Conflict, Forbidden, NotFound, Unavailable};
use super::{ApiError, AppState};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The live supervision tree.
pub(super) async fn snapshot(state: &AppState) -> Result<ActorNode, ApiError> {
    match state
        .root
        .call(SupervisorMsg::Snapshot, Some(CALL_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(root)) => Ok(root),
        _ => Err(ApiError::unavailable("the supervision tree did not answer")),
    }
}

#[utoipa::path(
    tag = "actors",
    operation_id = "actor_tree",
    responses((status = 200, description = "The root and its descendants.", body = ActorNode),
              Unavailable)
)]
#[get("/v1/actors")]
pub(super) async fn tree(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(snapshot(&state).await?))
}

/// Fault injection: crashes the actor at `path`; its supervisor restarts
/// it. Only with `--fault-injection` or `[debug] fault_injection`.
#[utoipa::path(
    tag = "actors",
    operation_id = "crash_actor",
    params(("path" = String, Path, description = "The actor's tree path (`node/ingestor`).")),
    responses((status = 202, description = "Crashed.", body = Crashed),
              Forbidden, NotFound, Conflict, Unavailable)
)]
#[post("/v1/actors/{path:.+}/crash")]
pub(super) async fn crash(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !state.fault_injection {
        return Err(ApiError::forbidden(
            "fault injection is off; start the node with --fault-injection or [debug] fault_injection = true",
        ));
    }
    let path = path.into_inner();
    let mut segments = path.split('/').map(str::to_owned);
    if segments.next().as_deref() != Some(ROOT) {
        return Err(ApiError::not_found(format!(
            "no actor at {path}; paths start with {ROOT}/"
        )));
    }
    let rest: Vec<String> = segments.collect();
    let reason = format!("fault injected via HTTP into {path}");
    let answer = state
        .root
        .call(
            |reply| SupervisorMsg::Crash {
                path: rest,
                reason,
                reply,
            },
            Some(CALL_TIMEOUT),
        )
        .await;
    match answer {
        Ok(CallResult::Success(Ok(()))) => Ok(HttpResponse::Accepted().json(Crashed {
            path,
            crashed: true,
        })),
        Ok(CallResult::Success(Err(err @ CrashError::NotFound { .. }))) => {
            Err(ApiError::not_found(err.to_string()))
        }
        Ok(CallResult::Success(Err(err @ CrashError::Restarting { .. }))) => {
            Err(ApiError::conflict(err.to_string()))
        }
        _ => Err(ApiError::unavailable("the supervision tree did not answer")),
    }
}
