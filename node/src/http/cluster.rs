//! `GET /v1/cluster`: every member this node knows of, with its state.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use ractor::rpc::CallResult;
use troupe_actors::membership::MembershipMsg;
use troupe_actors::tree::MEMBERSHIP;
use troupe_protocol::ClusterView;

use super::{ApiError, AppState};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn view(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let membership = state
        .directory
        .get::<MembershipMsg>(MEMBERSHIP)
        .ok_or_else(|| ApiError::unavailable("membership is restarting"))?;
    match membership
        .call(MembershipMsg::Members, Some(CALL_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(members)) => Ok(HttpResponse::Ok().json(ClusterView {
            cluster: state.cluster.to_string(),
            node: state.node_id.to_string(),
            members,
        })),
        _ => Err(ApiError::unavailable("membership did not answer")),
    }
}
