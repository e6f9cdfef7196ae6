//! Health, metrics and the OpenAPI document.

use super::AppState;
use crate::actors::messages::RenderMetrics;
use crate::error::AppResult;
use crate::wire::*;
use actix_web::{HttpResponse, web};
use utoipa::OpenApi;

#[utoipa::path(get, path = "/health", responses((status = 200, description = "The master is up")))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "healthy" }))
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    let body = state.h.metrics.send(RenderMetrics).await?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(body))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "ffrtmp master API", description = "Every route is also served under /api/v1. Errors are {\"error\": code, \"message\": text}."),
    paths(
        super::jobs::submit_job, super::jobs::list_jobs, super::jobs::get_job, super::jobs::control_job,
        super::jobs::job_logs, super::jobs::next_job, super::jobs::report_progress, super::jobs::ack_control,
        super::jobs::post_result, super::jobs::release_lease, super::nodes::register_node, super::nodes::list_nodes, super::nodes::get_node,
        super::nodes::remove_node, super::nodes::heartbeat, super::nodes::drain_node, super::nodes::undrain_node,
        super::nodes::poll_control, health, metrics, status, health_score
    ),
    components(schemas(Job, JobList, SubmitJobRequest, ControlResponse, JobLogs, NextJobResponse, Node, NodeList,
        NodeRegistration, GpuInfo, Heartbeat, HeartbeatResponse, RunningJob, ProgressReport, ProgressDetail,
        ProgressResponse, ControlAction, ControlCommand, ControlCommands, ControlAck, JobResult, ResultResponse,
        ErrorBody, StateTransition, LeaseRelease, RegisteredNode)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// Live status snapshot: queues, running jobs with progress, nodes.
#[utoipa::path(get, path = "/status", responses((status = 200, description = "Queues, running jobs with progress, nodes")))]
pub async fn status(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    use crate::actors::messages::{GetLiveView, GetSchedulerSnapshot, ListNodes};
    let snap = state.h.scheduler.send(GetSchedulerSnapshot).await?;
    let nodes = state.h.nodes.send(ListNodes).await?;
    let mut running = Vec::new();
    for a in &snap.live {
        if let Ok(v) = a.send(GetLiveView).await
            && v.state.is_leased() {
                running.push(serde_json::json!({
                    "job_status": v.state.as_str(),
                    "node_id": v.node_id,
                    "attempt": v.attempt,
                    "progress": v.progress,
                }));
            }
    }
    let mut by_queue = serde_json::Map::new();
    let mut by_priority = serde_json::Map::new();
    let mut total = 0usize;
    for (q, p, n) in &snap.queued {
        total += n;
        *by_queue.entry(q.as_str()).or_insert(0.into()) = (by_queue.get(q.as_str()).and_then(|v| v.as_u64()).unwrap_or(0) + *n as u64).into();
        *by_priority.entry(p.as_str()).or_insert(0.into()) = (by_priority.get(p.as_str()).and_then(|v| v.as_u64()).unwrap_or(0) + *n as u64).into();
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "queues": { "total": total, "by_queue": by_queue, "by_priority": by_priority,
                    "oldest_wait_seconds": snap.oldest_wait_seconds, "unplaceable": snap.unplaceable },
        "running": running,
        "nodes": nodes.iter().map(|n| serde_json::json!({
            "node_id": n.id, "name": n.name, "node_status": n.status, "running_jobs": n.running_jobs,
            "max_concurrent_jobs": n.max_concurrent_jobs, "cpu_load_percent": n.cpu_load_percent, "last_heartbeat": n.last_heartbeat,
        })).collect::<Vec<_>>(),
        "generated_at": chrono::Utc::now().to_rfc3339(),
    })))
}

/// Health score 0–100 with the factors that lowered it.
#[utoipa::path(get, path = "/health/score", responses((status = 200, description = "Score, status and factors")))]
pub async fn health_score(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    use crate::actors::messages::{GetRecentOutcomes, GetSchedulerSnapshot, ListNodes};
    use crate::domain::health::{HealthInputs, score};
    let snap = state.h.scheduler.send(GetSchedulerSnapshot).await?;
    let nodes = state.h.nodes.send(ListNodes).await?;
    let (ok, failed) = state.h.metrics.send(GetRecentOutcomes).await?;
    let database_ok = state.h.db.read(crate::db::ping).await.is_ok();
    let inputs = HealthInputs {
        database_ok,
        nodes_online: nodes.iter().filter(|n| n.status != "offline").count(),
        nodes_offline: nodes.iter().filter(|n| n.status == "offline").count(),
        nodes_total: nodes.len(),
        queued: snap.queued.iter().map(|(_, _, n)| n).sum(),
        unplaceable_classes: snap.unplaceable.len(),
        oldest_wait_seconds: snap.oldest_wait_seconds,
        recent_completed: ok,
        recent_failed: failed,
    };
    Ok(HttpResponse::Ok().json(score(&inputs)))
}
