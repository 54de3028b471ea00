//! `GET /v1/cluster`: every member this node knows of, with its state;
//! `GET /v1/plugins`: the plugins this node runs, with their schemas and
//! figures, and which plugin versions every member runs.

use std::time::Duration;

use actix_web::{get, web, HttpResponse};
use ractor::rpc::CallResult;
use troupe_actors::membership::MembershipMsg;
use troupe_actors::plugins::PluginRegistryMsg;
use troupe_actors::tree::{MEMBERSHIP, PLUGINS};
use troupe_protocol::plugins::{NodePlugins, PluginList};
use troupe_protocol::{ClusterView, Member, MemberState};

use super::openapi::Unavailable;
use super::{ApiError, AppState};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn members(state: &AppState) -> Result<Vec<Member>, ApiError> {
    let membership = state
        .directory
        .get::<MembershipMsg>(MEMBERSHIP)
        .ok_or_else(|| ApiError::unavailable("membership is restarting"))?;
    match membership
        .call(MembershipMsg::Members, Some(CALL_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(members)) => Ok(members),
        _ => Err(ApiError::unavailable("membership did not answer")),
    }
}

/// Every member this node knows of, with its state.
#[utoipa::path(
    tag = "cluster",
    operation_id = "cluster_view",
    responses((status = 200, description = "The members.", body = ClusterView), Unavailable)
)]
#[get("/v1/cluster")]
pub(super) async fn view(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ClusterView {
        cluster: state.cluster.to_string(),
        node: state.node_id.to_string(),
        members: members(&state).await?,
    }))
}

/// The plugins this node runs, and which versions every member runs.
#[utoipa::path(
    tag = "cluster",
    operation_id = "plugins",
    responses((status = 200, description = "The plugins.", body = PluginList), Unavailable)
)]
#[get("/v1/plugins")]
pub(super) async fn plugins(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let registry = state
        .directory
        .get::<PluginRegistryMsg>(PLUGINS)
        .ok_or_else(|| ApiError::unavailable("the plugin registry is restarting"))?;
    let plugins = match registry
        .call(PluginRegistryMsg::List, Some(CALL_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(plugins)) => plugins,
        _ => return Err(ApiError::unavailable("the plugin registry did not answer")),
    };
    let cluster = members(&state)
        .await?
        .into_iter()
        .map(|m| NodePlugins {
            live: matches!(m.state, MemberState::Alive | MemberState::Suspect),
            node: m.id,
            plugins: m.plugins,
        })
        .collect();
    Ok(HttpResponse::Ok().json(PluginList {
        node: state.node_id.to_string(),
        plugins,
        cluster,
    }))
}
