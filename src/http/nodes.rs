//! Node routes: register, list, describe, remove, heartbeat, drain, control long-poll.

use super::AppState;
use super::auth::node_token;
use crate::actors::messages::*;
use crate::error::{AppError, AppResult};
use crate::wire::*;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use std::time::Duration;

#[utoipa::path(post, path = "/nodes/register", request_body = NodeRegistration,
    responses((status = 201, body = RegisteredNode), (status = 200, description = "Re-registration", body = RegisteredNode), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn register_node(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<NodeRegistration>,
) -> AppResult<HttpResponse> {
    let r = state.h.nodes.send(RegisterNode { registration: body.into_inner(), token: node_token(&req) }).await??;
    let reply = RegisteredNode { node: r.node, node_token: r.token };
    Ok(if r.created { HttpResponse::Created() } else { HttpResponse::Ok() }.json(reply))
}

#[utoipa::path(get, path = "/nodes", responses((status = 200, body = NodeList)))]
pub async fn list_nodes(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    let nodes = state.h.nodes.send(ListNodes).await?;
    Ok(HttpResponse::Ok().json(NodeList { count: nodes.len(), nodes }))
}

#[utoipa::path(get, path = "/nodes/{id}", params(("id" = String, Path)), responses((status = 200, body = Node), (status = 404, body = ErrorBody)))]
pub async fn get_node(state: web::Data<AppState>, id: web::Path<String>) -> AppResult<HttpResponse> {
    let node = state.h.nodes.send(GetNode(id.clone())).await?.ok_or_else(|| AppError::node_not_found(&id))?;
    Ok(HttpResponse::Ok().json(node))
}

#[utoipa::path(delete, path = "/nodes/{id}", params(("id" = String, Path)),
    responses((status = 200, description = "Removed"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove_node(state: web::Data<AppState>, id: web::Path<String>) -> AppResult<HttpResponse> {
    state.h.nodes.send(RemoveNode(id.clone())).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "node_id": id.into_inner(), "status": "removed" })))
}

#[utoipa::path(post, path = "/nodes/{id}/heartbeat", params(("id" = String, Path)), request_body(content = Option<Heartbeat>, description = "Optional"),
    responses((status = 200, body = HeartbeatResponse), (status = 404, body = ErrorBody)))]
pub async fn heartbeat(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> AppResult<HttpResponse> {
    let hb: Heartbeat = if body.iter().all(|b| b.is_ascii_whitespace()) {
        Heartbeat::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| AppError::bad_request("invalid_json", format!("invalid heartbeat body: {e}")))?
    };
    let reported = hb.running_jobs.clone();
    let mut resp =
        state.h.nodes.send(RecordHeartbeat { node_id: id.clone(), heartbeat: hb, token: node_token(&req) }).await??;
    if let Some(reported) = reported {
        resp.stale_jobs = state.h.scheduler.send(ReconcileNodeJobs { node_id: id.into_inner(), reported }).await?;
    }
    Ok(HttpResponse::Ok().json(resp))
}

#[utoipa::path(post, path = "/nodes/{id}/drain", params(("id" = String, Path)), responses((status = 200, body = Node), (status = 404, body = ErrorBody)))]
pub async fn drain_node(state: web::Data<AppState>, id: web::Path<String>) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(state.h.nodes.send(DrainNode { node_id: id.into_inner(), drain: true }).await??))
}

#[utoipa::path(post, path = "/nodes/{id}/undrain", params(("id" = String, Path)), responses((status = 200, body = Node), (status = 404, body = ErrorBody)))]
pub async fn undrain_node(state: web::Data<AppState>, id: web::Path<String>) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(state.h.nodes.send(DrainNode { node_id: id.into_inner(), drain: false }).await??))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ControlQuery {
    /// Seconds to hold the request when no command is pending (0–60, default 25).
    pub wait: Option<f64>,
}

#[utoipa::path(get, path = "/nodes/{id}/control", params(("id" = String, Path), ControlQuery),
    responses((status = 200, body = ControlCommands), (status = 404, body = ErrorBody)))]
pub async fn poll_control(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<ControlQuery>,
) -> AppResult<HttpResponse> {
    let wait = q.wait.unwrap_or(25.0);
    if !(0.0..=60.0).contains(&wait) {
        return Err(AppError::bad_request("invalid_query", "wait must be between 0 and 60 seconds"));
    }
    let rx = state.h.nodes.send(PollControl { node_id: id.into_inner(), token: node_token(&req) }).await??;
    let commands = match tokio::time::timeout(Duration::from_secs_f64(wait.min(state.max_long_poll)), rx).await {
        Ok(Ok(c)) => c,
        _ => Vec::new(),
    };
    Ok(HttpResponse::Ok().json(ControlCommands { commands }))
}
