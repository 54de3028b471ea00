//! `POST /v1/tasks` and `GET /v1/tasks/{id}`.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use ractor::rpc::CallResult;
use ractor::ActorRef;
use troupe_actors::scheduler::{SchedulerError, SchedulerMsg};
use troupe_actors::tree::SCHEDULER;
use troupe_protocol::SubmitTask;

use super::json::{parse, read_body};
use super::{ApiError, AppState};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn scheduler(state: &AppState) -> Result<ActorRef<SchedulerMsg>, ApiError> {
    state
        .directory
        .get(SCHEDULER)
        .ok_or_else(|| ApiError::unavailable("the scheduler is restarting"))
}

fn scheduler_error(err: SchedulerError) -> ApiError {
    match err {
        SchedulerError::Invalid { field, reason } => ApiError::invalid(field, reason),
        SchedulerError::Store(e) => ApiError::unavailable(e.to_string()),
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
    match scheduler(&state)?
        .call(
            |reply| SchedulerMsg::Submit(task, reply),
            Some(CALL_TIMEOUT),
        )
        .await
    {
        Ok(CallResult::Success(Ok(accepted))) => Ok(HttpResponse::Accepted().json(accepted)),
        Ok(CallResult::Success(Err(err))) => Err(scheduler_error(err)),
        // Not acknowledged: the client may retry with the same key.
        _ => Err(ApiError::unavailable(
            "the scheduler did not answer; the task was not acknowledged",
        )),
    }
}

pub(super) async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let answer = scheduler(&state)?
        .call(
            |reply| SchedulerMsg::Get(id.clone(), reply),
            Some(CALL_TIMEOUT),
        )
        .await;
    match answer {
        Ok(CallResult::Success(Ok(Some(record)))) => Ok(HttpResponse::Ok().json(record)),
        Ok(CallResult::Success(Ok(None))) => Err(ApiError::not_found(format!("no task {id}"))),
        Ok(CallResult::Success(Err(err))) => Err(scheduler_error(err)),
        _ => Err(ApiError::unavailable("the scheduler did not answer")),
    }
}
