//! `POST /v1/schedules`, `GET /v1/schedules`, `GET` and `DELETE
//! /v1/schedules/{id}`: recurring tasks.

use actix_web::{web, HttpResponse};
use troupe_protocol::CreateSchedule;

use super::json::{parse, read_body, MAX_BODY};
use super::{ApiError, AppState};

pub(super) async fn create(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let create: CreateSchedule = parse(&read_body(payload, MAX_BODY).await?)?;
    let status = state.router.create_schedule(create).await?;
    Ok(HttpResponse::Created().json(status))
}

pub(super) async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.router.list_schedules().await?))
}

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

pub(super) async fn delete(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.router.delete_schedule(&id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
