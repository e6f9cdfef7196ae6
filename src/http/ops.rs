//! Health, metrics and the OpenAPI document.

use super::AppState;
use crate::actors::messages::RenderMetrics;
use crate::error::AppResult;
use crate::wire::*;
use actix_web::{HttpResponse, web};
use utoipa::OpenApi;

#[utoipa::path(get, path = "/health", responses((status = 200, description = "The master is up")))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    // Highly available masters say which one leads (a follower's answer is in
    // `http/follower.rs`); a single master says only that it is healthy, as the seed did.
    match state.leader_epoch {
        Some(epoch) => {
            HttpResponse::Ok().json(serde_json::json!({ "status": "healthy", "role": "leader", "epoch": epoch }))
        }
        None => HttpResponse::Ok().json(serde_json::json!({ "status": "healthy" })),
    }
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
        super::jobs::post_result, super::batches::post_results, super::batches::node_progress, super::jobs::release_lease, super::nodes::register_node, super::nodes::list_nodes, super::nodes::get_node,
        super::nodes::remove_node, super::nodes::heartbeat, super::nodes::drain_node, super::nodes::undrain_node,
        super::nodes::poll_control, super::outputs::upload_output, super::outputs::list_outputs,
        super::outputs::download_output, super::outputs::delete_outputs, health, metrics, status, health_score,
        super::webhooks::create_webhook, super::webhooks::list_webhooks, super::webhooks::get_webhook,
        super::webhooks::delete_webhook, super::webhooks::list_deliveries, super::webhooks::redeliver,
        super::ui::revoke_sessions, super::uploads::upload_input, super::uploads::download_upload
    ),
    components(schemas(Job, JobList, SubmitJobRequest, ControlResponse, JobLogs, NextJobResponse, Node, NodeList,
        NodeRegistration, GpuInfo, Heartbeat, HeartbeatResponse, RunningJob, ProgressReport, ProgressDetail,
        ProgressResponse, ControlAction, ControlCommand, ControlCommands, ControlAck, JobResult, ResultResponse,
        ErrorBody, StateTransition, LeaseRelease, RegisteredNode, StatusReport, QueueStatus, RunningStatus, NodeStatus,
        JobOutput, JobOutputs, crate::wire::Upload, crate::domain::media::InputInfo, crate::domain::media::StreamInfo,
        crate::wire::Event, NotifyRequest, WebhookRequest, Webhook, WebhookList, crate::wire::Delivery, DeliveryList,
        crate::wire::NodeProgress, crate::wire::JobProgress, crate::wire::ResultBatch, crate::wire::BatchAnswers,
        crate::wire::ItemAnswer, crate::wire::ItemOutcome)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// Live status snapshot: queues, running jobs with progress, nodes.
#[utoipa::path(get, path = "/status", responses((status = 200, body = StatusReport)))]
pub async fn status(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    use crate::actors::messages::{GetLiveView, GetSchedulerSnapshot, ListNodeSummaries};
    let snap = state.h.scheduler.send(GetSchedulerSnapshot).await?;
    let nodes = state.h.nodes.send(ListNodeSummaries).await?;
    let mut running = Vec::new();
    for a in &snap.live {
        if let Ok(v) = a.send(GetLiveView).await
            && v.state.is_leased()
        {
            running.push(RunningStatus {
                job_status: v.state,
                node_id: v.node_id,
                attempt: v.attempt,
                progress: v.progress,
            });
        }
    }
    let mut queues = QueueStatus {
        total: 0,
        by_queue: Default::default(),
        by_priority: Default::default(),
        oldest_wait_seconds: snap.oldest_wait_seconds,
        unplaceable: snap.unplaceable,
    };
    for (q, p, n) in &snap.queued {
        queues.total += n;
        *queues.by_queue.entry(q.as_str().into()).or_default() += n;
        *queues.by_priority.entry(p.as_str().into()).or_default() += n;
    }
    Ok(HttpResponse::Ok().json(StatusReport { queues, running, nodes, generated_at: chrono::Utc::now().to_rfc3339() }))
}

/// Health score 0–100 with the factors that lowered it.
#[utoipa::path(get, path = "/health/score", responses((status = 200, description = "Score, status and factors")))]
pub async fn health_score(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    use crate::actors::messages::{GetNodeCounts, GetRecentOutcomes, GetSchedulerSnapshot};
    use crate::domain::health::{HealthInputs, score};
    let snap = state.h.scheduler.send(GetSchedulerSnapshot).await?;
    let [available, busy, draining, offline] = state.h.nodes.send(GetNodeCounts).await?;
    let (ok, failed) = state.h.metrics.send(GetRecentOutcomes).await?;
    let database_ok = state.h.db.read(crate::db::ping).await.is_ok();
    let inputs = HealthInputs {
        database_ok,
        nodes_online: available + busy + draining,
        nodes_offline: offline,
        nodes_total: available + busy + draining + offline,
        queued: snap.queued.iter().map(|(_, _, n)| n).sum(),
        unplaceable_classes: snap.unplaceable.len(),
        oldest_wait_seconds: snap.oldest_wait_seconds,
        recent_completed: ok,
        recent_failed: failed,
    };
    Ok(HttpResponse::Ok().json(score(&inputs)))
}
