//! `POST /v1/tasks` (one task or an array), `GET /v1/tasks` (paged),
//! `GET` and `DELETE /v1/tasks/{id}`, `GET` and `PUT /v1/workers`.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use troupe_actors::scheduler::{SchedulerMsg, MAX_PAGE};
use troupe_protocol::{SubmitTask, TaskState, Workers};

use super::json::{parse, read_body, MAX_BODY};
use super::{page_limit, ApiError, AppState};

pub(super) async fn submit(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY).await?;
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
    let mut accepted = state.router.submit(tasks, batch).await?;
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
            "limit" => limit = page_limit(&value, MAX_PAGE)?,
            other => return Err(ApiError::invalid(other, "unknown query parameter")),
        }
    }
    let page = state.router.list(after, wanted, limit).await?;
    Ok(HttpResponse::Ok().json(page))
}

pub(super) async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    state
        .router
        .get(&id)
        .await?
        .map(|record| HttpResponse::Ok().json(record))
        .ok_or_else(|| ApiError::not_found(format!("no task {id}")))
}

pub(super) async fn cancel(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let record = state.router.cancel(&id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(record))
}

pub(super) async fn workers(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let count = state.router.ask(SchedulerMsg::Workers).await?;
    Ok(HttpResponse::Ok().json(Workers { count }))
}

pub(super) async fn resize(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Workers { count } = parse(&read_body(payload, MAX_BODY).await?)?;
    let count = state
        .router
        .ask(|reply| SchedulerMsg::SetWorkers(count, reply))
        .await?;
    Ok(HttpResponse::Ok().json(Workers { count }))
}
