//! `POST /v1/schedules`, `GET /v1/schedules`, `GET` and `DELETE
//! /v1/schedules/{id}`: recurring tasks.

use actix_web::{delete, get, post, web, HttpResponse};
use troupe_protocol::{CreateSchedule, ScheduleStatus};

use super::json::{parse, read_body, MAX_BODY};
use super::openapi::{BodyErrors, Conflict, NotFound, Unavailable};
use super::{ApiError, AppState};

/// A new recurring task.
#[utoipa::path(
    tag = "schedules",
    operation_id = "create_schedule",
    request_body = CreateSchedule,
    responses((status = 201, description = "Created.", body = ScheduleStatus),
              BodyErrors, Conflict, Unavailable)
)]
#[post("/v1/schedules")]
pub(super) async fn create(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let create: CreateSchedule = parse(&read_body(payload, MAX_BODY).await?)?;
    let status = state.router.create_schedule(create).await?;
    Ok(HttpResponse::Created().json(status))
}

/// Every schedule in the cluster.
#[utoipa::path(
    tag = "schedules",
    operation_id = "list_schedules",
    responses((status = 200, description = "The schedules.", body = Vec<ScheduleStatus>),
              Unavailable)
)]
#[get("/v1/schedules")]
pub(super) async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.router.list_schedules().await?))
}

/// One schedule.
#[utoipa::path(
    tag = "schedules",
    operation_id = "get_schedule",
    params(("id" = String, Path, description = "The schedule's id.")),
    responses((status = 200, description = "The schedule.", body = ScheduleStatus),
              NotFound, Unavailable)
)]
#[get("/v1/schedules/{id}")]
pub(super) async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    state
        .router
        .list_schedules()
        .await?
        .into_iter()
        .find(|s| s.record.id == id)
        .map(|s| HttpResponse::Ok().json(s))
        .ok_or_else(|| ApiError::not_found(format!("no schedule {id}")))
}

/// Deletes a schedule; tasks it started are not touched.
#[utoipa::path(
    tag = "schedules",
    operation_id = "delete_schedule",
    params(("id" = String, Path, description = "The schedule's id.")),
    responses((status = 204, description = "Deleted."), NotFound, Unavailable)
)]
#[delete("/v1/schedules/{id}")]
pub(super) async fn delete(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.router.delete_schedule(&id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
