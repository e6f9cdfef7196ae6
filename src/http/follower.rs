//! The API of a follower master (highly available masters on PostgreSQL).
//!
//! A follower runs no actors: it answers `GET /health`, `GET /metrics` and the job
//! reads (`GET /jobs`, `GET /jobs/{id}`) from the database — progress there is what the
//! leader last wrote, at most 5 s old — and sends every other request to the leader:
//! `307 Temporary Redirect` to the leader's advertised URL with the same path and query
//! (method and body are kept), and a JSON body naming it (`not_leader`), or `503
//! no_leader` with `Retry-After` while no master leads. Our clients follow such a
//! redirect only to a master URL they were given (their key never goes elsewhere).
//! Authentication and roles are the leader's (`auth::authorize`, same templates).

use super::auth::ApiKeys;
use super::jobs::{ListQuery, MAX_TRANSITIONS_SHOWN, find_row, job_filter, operator_view, parse_job_ref};
use crate::actors::leader::LeaderActor;
use crate::actors::messages::GetLeadership;
use crate::db::{self, DbError, DbPool, jobs as db_jobs};
use crate::error::{AppError, AppResult};
use crate::wire::{Job, JobList};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{App, HttpRequest, HttpResponse, web};

pub struct FollowerState {
    pub leader: actix::Addr<LeaderActor>,
    pub pool: DbPool,
}

/// The follower's app (the API port; `/metrics` too when it has no listener of its own).
pub fn follower_app(
    state: web::Data<FollowerState>,
    keys: web::Data<ApiKeys>,
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
        .app_data(state)
        .app_data(keys)
        .app_data(super::error::query_config())
        .wrap(actix_web::middleware::ErrorHandlers::new().default_handler(super::error::ensure_json))
        .service(web::scope("/api/v1").configure(|c| routes(c, serve_metrics)))
        .configure(|c| routes(c, serve_metrics))
        .default_service(web::route().to(to_leader))
}

/// The follower's metrics listener (`--metrics-port`).
pub fn follower_metrics_app(
    state: web::Data<FollowerState>,
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
        .route("/metrics", web::get().to(metrics))
        .route("/health", web::get().to(health))
        .default_service(web::route().to(super::error::not_found))
}

/// A resource the follower serves itself for GET (with the API's own authorisation, as
/// the leader's [`super::guarded`] resources); any other method of it goes to the leader.
fn read_only(
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
    super::guarded(path).default_service(web::route().to(to_leader))
}

fn routes(cfg: &mut web::ServiceConfig, serve_metrics: bool) {
    cfg.service(read_only("/health").route(web::get().to(health)))
        // Before `/jobs/{id}`: the leader's own routes, never a job read.
        .service(web::resource("/jobs/next").to(to_leader))
        .service(read_only("/jobs").route(web::get().to(list_jobs)))
        .service(read_only("/jobs/{id}").route(web::get().to(get_job)));
    if serve_metrics {
        cfg.service(read_only("/metrics").route(web::get().to(metrics)));
    }
}

/// Open, like the leader's: the role says which master to send writes to.
async fn health(state: web::Data<FollowerState>) -> AppResult<HttpResponse> {
    let l = state.leader.send(GetLeadership).await?;
    // Elected but still starting its actors: not the leader's API yet.
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "healthy",
        "role": if l.leading { "taking_over" } else { "follower" },
        "leader": l.leader_url,
        "epoch": l.epoch,
    })))
}

async fn metrics(state: web::Data<FollowerState>) -> AppResult<HttpResponse> {
    let l = state.leader.send(GetLeadership).await?;
    let body = format!(
        "# HELP ffrtmp_master_leader Whether this master holds the leader lease (1) or follows (0).\n\
         # TYPE ffrtmp_master_leader gauge\nffrtmp_master_leader {}\n",
        u8::from(l.leading)
    );
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(body))
}

/// Everything a follower does not answer itself: to the leader, method and body kept.
pub async fn to_leader(req: HttpRequest, state: web::Data<FollowerState>) -> AppResult<HttpResponse> {
    let l = state.leader.send(GetLeadership).await?;
    // Elected, its actors still starting (a fraction of a second): ask to come back.
    let leader = l.leader_url.filter(|_| !l.leading);
    let Some(leader) = leader else {
        return Ok(HttpResponse::ServiceUnavailable().insert_header(("Retry-After", "1")).json(serde_json::json!({
            "error": "no_leader",
            "message": "no master leads the farm at the moment; retry shortly",
        })));
    };
    let target = format!("{}{}", leader.trim_end_matches('/'), req.uri().path_and_query().map_or("/", |p| p.as_str()));
    Ok(HttpResponse::TemporaryRedirect().insert_header(("Location", target.as_str())).json(serde_json::json!({
        "error": "not_leader",
        "message": format!("this master follows; the leader is {leader}"),
        "leader": leader,
    })))
}

async fn read<T: Send + 'static>(
    state: &FollowerState,
    f: impl FnOnce(&mut db::Conn) -> db::DbResult<T> + Send + 'static,
) -> db::DbResult<T> {
    let pool = state.pool.clone();
    web::block(move || f(&mut *pool.get()?)).await.unwrap_or_else(|e| Err(DbError::Other(e.to_string())))
}

async fn list_jobs(state: web::Data<FollowerState>, q: web::Query<ListQuery>) -> AppResult<HttpResponse> {
    let filter = job_filter(q.into_inner())?;
    let limit = filter.limit;
    let rows = read(&state, move |c| db_jobs::list(c, &filter)).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.seq.to_string())).flatten();
    let jobs: Vec<Job> = rows
        .iter()
        .map(|r| {
            let mut j = operator_view(r.to_wire());
            j.logs = None;
            j
        })
        .collect();
    Ok(HttpResponse::Ok().json(JobList { count: jobs.len(), jobs, next_cursor }))
}

async fn get_job(state: web::Data<FollowerState>, id: web::Path<String>) -> AppResult<HttpResponse> {
    let raw = id.into_inner();
    let r = parse_job_ref(&raw)?;
    let (row, events, total) = read(&state, move |c| {
        let row = find_row(c, &r)?;
        let (events, total) = db_jobs::recent_events(c, &row.id, MAX_TRANSITIONS_SHOWN)?;
        Ok((row, events, total))
    })
    .await
    .map_err(|e| match e {
        DbError::NotFound => AppError::job_not_found(&raw),
        other => other.into(),
    })?;
    let mut job = operator_view(row.to_wire());
    job.state_transitions = Some(events.iter().map(|e| e.to_wire()).collect());
    job.attempts = Some(db_jobs::attempts_of(&events));
    job.state_transitions_omitted = (total > events.len() as i64).then(|| total - events.len() as i64);
    Ok(HttpResponse::Ok().json(job))
}
