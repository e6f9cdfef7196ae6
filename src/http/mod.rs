//! The REST API (actix-web). Handlers are thin: parse, send one message, map the reply.
//! Every route is served at the root (the seed's paths) and under `/api/v1`.

pub mod admission;
pub mod auth;
pub mod batches;
pub mod error;
pub mod events;
pub mod follower;
pub mod graphs;
pub mod jobs;
pub mod nodes;
pub mod ops;
pub mod outputs;
pub mod rate_limit;
pub mod templates;
pub mod ui;
pub mod uploads;
pub mod webhooks;

use crate::actors::MasterHandles;
use crate::actors::messages::{MetricEvent, MetricRecorded};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, web};
use std::time::Instant;

/// What every handler can reach.
pub struct AppState {
    pub h: MasterHandles,
    pub default_max_retries: i32,
    pub reject_unplaceable: bool,
    /// `--strict-parameters`: refuse parameters no encode reads (else kept and listed).
    pub strict_parameters: bool,
    /// Cap on long-poll waits, seconds.
    pub max_long_poll: f64,
    /// `--rtmp-allow`: where RTMP jobs may stream; None = the workers' `--rtmp-base` hosts.
    pub rtmp_allow: Option<Vec<crate::domain::allow::HostPattern>>,
    /// `--input-allow`: hosts URL inputs may come from (empty: none).
    pub input_allow: Vec<crate::domain::allow::HostPattern>,
    /// Where job outputs are stored.
    pub artifacts: crate::storage::ArtifactStore,
    /// `--max-output-bytes`: largest single output accepted.
    pub max_output_bytes: u64,
    /// `--s3-allow`: buckets jobs may read inputs from and write outputs to.
    pub s3_allow: Vec<String>,
    /// `--output-root`: shared libraries mounted on the master too (their outputs are
    /// downloadable through the API).
    pub output_roots: Vec<std::path::PathBuf>,
    /// `--webhook-allow`: hosts webhooks may be delivered to.
    pub webhook_allow: Vec<crate::domain::allow::HostPattern>,
    /// `--webhook-secret`: signs jobs' `notify` webhooks that bring no secret.
    pub webhook_secret: Option<String>,
    /// Comment lines on an idle event stream, this often.
    pub sse_keepalive: std::time::Duration,
    /// `--console-session-hours`: how long a console sign-in lasts.
    pub console_session: std::time::Duration,
    /// Served over TLS: console cookies are marked `Secure`.
    pub tls: bool,
    /// The leader lease epoch this master leads (highly available masters on
    /// PostgreSQL); None for a single master.
    pub leader_epoch: Option<i64>,
}

/// A resource guarded by its own authorisation (see [`auth`]): the template given here
/// is both the router's pattern and the one the role check uses, so they cannot differ.
fn guarded(
    path: &'static str,
) -> actix_web::Resource<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::resource(path)
        .wrap(from_fn(move |req: ServiceRequest, next: Next<actix_web::body::BoxBody>| {
            auth::authorize(path, req, next)
        }))
        .default_service(web::route().to(error::method_not_allowed))
}

fn routes(cfg: &mut web::ServiceConfig, with_metrics: bool) {
    cfg.service(guarded("/nodes/register").route(web::post().to(nodes::register_node)))
        .service(guarded("/nodes").route(web::get().to(nodes::list_nodes)))
        .service(
            guarded("/nodes/{id}").route(web::get().to(nodes::get_node)).route(web::delete().to(nodes::remove_node)),
        )
        .service(guarded("/nodes/{id}/heartbeat").route(web::post().to(nodes::heartbeat)))
        .service(guarded("/nodes/{id}/drain").route(web::post().to(nodes::drain_node)))
        .service(guarded("/nodes/{id}/undrain").route(web::post().to(nodes::undrain_node)))
        .service(guarded("/nodes/{id}/control").route(web::get().to(nodes::poll_control)))
        .service(guarded("/nodes/{id}/progress").route(web::post().to(batches::node_progress)))
        .service(guarded("/jobs/next").route(web::get().to(jobs::next_job)))
        .service(guarded("/jobs").route(web::post().to(jobs::submit_job)).route(web::get().to(jobs::list_jobs)))
        .service(guarded("/jobs/{id}").route(web::get().to(jobs::get_job)))
        .service(guarded("/jobs/{id}/logs").route(web::get().to(jobs::job_logs)))
        .service(guarded("/jobs/{id}/progress").route(web::post().to(jobs::report_progress)))
        .service(guarded("/jobs/{id}/release").route(web::post().to(jobs::release_lease)))
        .service(guarded("/jobs/{id}/control/ack").route(web::post().to(jobs::ack_control)))
        // Before `/jobs/{id}/{action}`, which would otherwise take these paths.
        .service(
            guarded("/jobs/{id}/outputs")
                .route(web::get().to(outputs::list_outputs))
                .route(web::delete().to(outputs::delete_outputs)),
        )
        .service(
            guarded("/jobs/{id}/outputs/{name:.+}")
                .route(web::get().to(outputs::download_output))
                .route(web::put().to(outputs::upload_output)),
        )
        .service(guarded("/jobs/{id}/{action}").route(web::post().to(jobs::control_job)))
        .service(guarded("/results").route(web::post().to(jobs::post_result)))
        .service(guarded("/results/batch").route(web::post().to(batches::post_results)))
        .service(
            guarded("/templates")
                .route(web::get().to(templates::list_templates))
                .route(web::post().to(templates::create_template)),
        )
        .service(
            guarded("/templates/{name}")
                .route(web::get().to(templates::get_template))
                .route(web::put().to(templates::update_template))
                .route(web::delete().to(templates::delete_template)),
        )
        .service(guarded("/events").route(web::get().to(events::stream_events)))
        .service(
            guarded("/webhooks")
                .route(web::get().to(webhooks::list_webhooks))
                .route(web::post().to(webhooks::create_webhook)),
        )
        .service(
            guarded("/webhooks/{id}")
                .route(web::get().to(webhooks::get_webhook))
                .route(web::delete().to(webhooks::delete_webhook)),
        )
        .service(guarded("/webhooks/{id}/deliveries").route(web::get().to(webhooks::list_deliveries)))
        .service(
            guarded("/webhooks/{id}/deliveries/{delivery_id}/redeliver").route(web::post().to(webhooks::redeliver)),
        )
        .service(guarded("/sessions").route(web::delete().to(ui::revoke_sessions)))
        .service(guarded("/uploads").route(web::post().to(uploads::upload_input)))
        .service(guarded("/uploads/{id}/{name:.+}").route(web::get().to(uploads::download_upload)))
        .service(guarded("/health").route(web::get().to(ops::health)))
        .service(guarded("/status").route(web::get().to(ops::status)))
        .service(guarded("/health/score").route(web::get().to(ops::health_score)))
        .service(guarded("/openapi.json").route(web::get().to(ops::openapi)));
    if with_metrics {
        cfg.service(guarded("/metrics").route(web::get().to(ops::metrics)));
    }
}

/// The API's routes, at the root and under /api/v1.
pub fn configure(cfg: &mut web::ServiceConfig, with_metrics: bool) {
    cfg.service(web::scope("/api/v1").configure(|c| routes(c, with_metrics)));
    routes(cfg, with_metrics);
}

/// Count and time every request by route template (never the raw path).
pub async fn record_http(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let metrics = req.app_data::<web::Data<AppState>>().map(|s| s.h.metrics.clone());
    let res = next.call(req).await;
    // The template the dispatched resource recorded; a request no resource took is
    // "unmatched" (never its raw path: that would let clients mint series).
    let route = match &res {
        Ok(r) => auth::route_template(r.request()),
        Err(_) => None,
    }
    .unwrap_or("unmatched")
    .to_string();
    let status = match &res {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    if let Some(m) = metrics {
        let method = if route == "unmatched" { "OTHER".to_string() } else { method };
        m.do_send(MetricRecorded(MetricEvent::HttpServed {
            method,
            route,
            status,
            seconds: started.elapsed().as_secs_f64(),
        }));
    }
    res
}

/// The API app; `serve_metrics` adds `/metrics` (when there is no separate listener).
pub fn build_app(
    state: web::Data<AppState>,
    keys: web::Data<auth::ApiKeys>,
    serve_metrics: bool,
) -> App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state.clone())
        .app_data(keys.clone())
        .app_data(error::json_config())
        .app_data(error::query_config())
        .app_data(error::payload_config())
        .wrap(actix_web::middleware::ErrorHandlers::new().default_handler(error::ensure_json))
        .wrap(from_fn(record_http))
        .configure(ui::configure)
        .configure(|c| configure(c, serve_metrics))
        .default_service(web::route().to(auth::unmatched))
}

/// The separate metrics listener (`--metrics-port`): `/metrics` and `/health`, no auth.
pub fn metrics_app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .route("/metrics", web::get().to(ops::metrics))
        .route("/health", web::get().to(ops::health))
        .default_service(web::route().to(error::not_found))
}
