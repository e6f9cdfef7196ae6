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
        super::nodes::poll_control, health, metrics
    ),
    components(schemas(Job, JobList, SubmitJobRequest, ControlResponse, JobLogs, NextJobResponse, Node, NodeList,
        NodeRegistration, GpuInfo, Heartbeat, HeartbeatResponse, RunningJob, ProgressReport, ProgressDetail,
        ProgressResponse, ControlAction, ControlCommand, ControlCommands, ControlAck, JobResult, ResultResponse,
        ErrorBody, StateTransition, LeaseRelease)),
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
