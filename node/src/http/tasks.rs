//! `POST /v1/tasks` (one task or an array), `GET /v1/tasks` (paged),
//! `GET` and `DELETE /v1/tasks/{id}`, `GET` and `PUT /v1/workers`.

use std::collections::HashMap;

use actix_web::{delete, get, post, put, web, HttpResponse};
use troupe_actors::scheduler::{SchedulerMsg, MAX_PAGE};
use troupe_protocol::{SubmitTask, TaskAccepted, TaskPage, TaskRecord, TaskState, Workers};

use super::json::{parse, read_body, MAX_BODY};
use super::openapi::{
    BodyErrors, Conflict, NotFound, OneOrMany, PageQuery, QueryErrors, Unavailable,
};
use super::{page_limit, ApiError, AppState};

/// Submits one task, or an array of them (all or nothing).
#[utoipa::path(
    tag = "tasks",
    operation_id = "submit_tasks",
    request_body(content = OneOrMany<SubmitTask>, description = "One task or an array of tasks."),
    responses(
        (status = 202, description = "Accepted: one answer per task, an array for an array.",
         body = OneOrMany<TaskAccepted>),
        BodyErrors, NotFound, Conflict, Unavailable,
    )
)]
#[post("/v1/tasks")]
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

/// A page of tasks across the cluster, in submission order.
#[utoipa::path(
    tag = "tasks",
    operation_id = "list_tasks",
    params(
        ("state" = Option<TaskState>, Query, description = "Only tasks in this state."),
        PageQuery,
    ),
    responses((status = 200, description = "A page.", body = TaskPage), QueryErrors, Unavailable)
)]
#[get("/v1/tasks")]
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

/// One task, from its owner.
#[utoipa::path(
    tag = "tasks",
    operation_id = "get_task",
    params(("id" = String, Path, description = "The task's id.")),
    responses((status = 200, description = "The task.", body = TaskRecord),
              NotFound, Unavailable)
)]
#[get("/v1/tasks/{id}")]
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

/// Cancels a task that has not finished.
#[utoipa::path(
    tag = "tasks",
    operation_id = "cancel_task",
    params(("id" = String, Path, description = "The task's id.")),
    responses((status = 200, description = "Cancelled.", body = TaskRecord),
              NotFound, Conflict, Unavailable)
)]
#[delete("/v1/tasks/{id}")]
pub(super) async fn cancel(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let record = state.router.cancel(&id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(record))
}

/// This node's task worker count.
#[utoipa::path(
    tag = "tasks",
    operation_id = "get_workers",
    responses((status = 200, description = "Workers.", body = Workers), Unavailable)
)]
#[get("/v1/workers")]
pub(super) async fn workers(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let count = state.router.ask(SchedulerMsg::Workers).await?;
    Ok(HttpResponse::Ok().json(Workers { count }))
}

/// Sets this node's task worker count.
#[utoipa::path(
    tag = "tasks",
    operation_id = "set_workers",
    request_body = Workers,
    responses((status = 200, description = "The new count.", body = Workers),
              BodyErrors, Unavailable)
)]
#[put("/v1/workers")]
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
