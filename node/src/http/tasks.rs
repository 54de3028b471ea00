//! `POST /v1/tasks` (one task or an array), `GET /v1/tasks` (paged),
//! `GET` and `DELETE /v1/tasks/{id}`, `GET` and `PUT /v1/workers`.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use ractor::rpc::CallResult;
use ractor::ActorRef;
use troupe_actors::scheduler::{SchedulerError, SchedulerMsg, MAX_PAGE};
use troupe_actors::tree::SCHEDULER;
use troupe_protocol::{SubmitTask, TaskState, Workers};

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
    let batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let tasks: Vec<SubmitTask> = if batch {
        parse(&body)?
    } else {
        vec![parse(&body)?]
    };
    if tasks.is_empty() {
        return Err(ApiError::invalid("(body)", "the batch is empty"));
    }
    // Not acknowledged unless answered: the client may retry with the same keys.
    let mut accepted = ask(
        &state,
        |reply| SchedulerMsg::Submit {
            tasks,
            batch,
            reply,
        },
        "nothing was acknowledged",
    )
    .await?;
    Ok(match (batch, accepted.pop()) {
        (false, Some(one)) => HttpResponse::Accepted().json(one),
        (_, last) => {
            accepted.extend(last);
            HttpResponse::Accepted().json(accepted)
        }
    })
}

/// Default page size of `GET /v1/tasks`.
const DEFAULT_PAGE: usize = 100;

pub(super) async fn list(
    state: web::Data<AppState>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let mut wanted = None;
    let mut after = None;
    let mut limit = DEFAULT_PAGE;
    for (key, value) in query.into_inner() {
        match key.as_str() {
            "state" => {
                wanted = Some(
                    serde_json::from_value::<TaskState>(serde_json::Value::String(value.clone()))
                        .map_err(|_| {
                        ApiError::invalid("state", format!("unknown task state {value:?}"))
                    })?,
                )
            }
            "cursor" => after = Some(value),
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid("limit", format!("must be from 1 to {MAX_PAGE}"))
                    })?
            }
            other => return Err(ApiError::invalid(other, "unknown query parameter")),
        }
    }
    let page = ask(
        &state,
        |reply| SchedulerMsg::List {
            after,
            state: wanted,
            limit,
            reply,
        },
        "try again",
    )
    .await?;
    Ok(HttpResponse::Ok().json(page))
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
