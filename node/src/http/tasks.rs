//! `POST /v1/tasks`, `GET` and `DELETE /v1/tasks/{id}`, `GET` and
//! `PUT /v1/workers`.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use ractor::rpc::CallResult;
use ractor::ActorRef;
use troupe_actors::scheduler::{SchedulerError, SchedulerMsg};
use troupe_actors::tree::SCHEDULER;
use troupe_protocol::{SubmitTask, Workers};

use super::json::{parse, read_body};
use super::{ApiError, AppState};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn table(state: &AppState) -> Result<ActorRef<SchedulerMsg>, ApiError> {
    state
        .directory
        .get(SCHEDULER)
        .ok_or_else(|| ApiError::unavailable("the task table is restarting"))
}

fn table_error(err: SchedulerError) -> ApiError {
    match err {
        SchedulerError::Invalid { field, reason } => ApiError::invalid(field, reason),
        SchedulerError::NotFound(_) => ApiError::not_found(err.to_string()),
        SchedulerError::Finished { .. } => ApiError::conflict(err.to_string()),
        SchedulerError::Store(e) => ApiError::unavailable(e.to_string()),
    }
}

/// Calls the task table and maps its answer; `what` names the request in
/// the error when the table does not answer.
async fn ask<T, F>(state: &AppState, build: F, what: &str) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(ractor::RpcReplyPort<Result<T, SchedulerError>>) -> SchedulerMsg,
{
    match table(state)?.call(build, Some(CALL_TIMEOUT)).await {
        Ok(CallResult::Success(answer)) => answer.map_err(table_error),
        _ => Err(ApiError::unavailable(format!(
            "the task table did not answer; {what}"
        ))),
    }
}

pub(super) async fn submit(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        // serde would read an array positionally as one task; say what we want.
        return Err(ApiError::invalid(
            "(body)",
            "expected one task object; batch submission (an array) comes with the cluster scheduler",
        ));
    }
    let task: SubmitTask = parse(&body)?;
    // Not acknowledged unless answered: the client may retry with the same key.
    let accepted = ask(
        &state,
        |reply| SchedulerMsg::Submit(task, reply),
        "the task was not acknowledged",
    )
    .await?;
    Ok(HttpResponse::Accepted().json(accepted))
}

pub(super) async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let found = ask(
        &state,
        |reply| SchedulerMsg::Get(id.clone(), reply),
        "try again",
    )
    .await?;
    found
        .map(|record| HttpResponse::Ok().json(record))
        .ok_or_else(|| ApiError::not_found(format!("no task {id}")))
}

pub(super) async fn cancel(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let record = ask(&state, |reply| SchedulerMsg::Cancel(id, reply), "try again").await?;
    Ok(HttpResponse::Ok().json(record))
}

pub(super) async fn workers(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match table(&state)?
        .call(SchedulerMsg::Workers, Some(CALL_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(count)) => Ok(HttpResponse::Ok().json(Workers { count })),
        _ => Err(ApiError::unavailable("the task table did not answer")),
    }
}

pub(super) async fn resize(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Workers { count } = parse(&read_body(payload).await?)?;
    let count = ask(
        &state,
        |reply| SchedulerMsg::SetWorkers(count, reply),
        "try again",
    )
    .await?;
    Ok(HttpResponse::Ok().json(Workers { count }))
}
