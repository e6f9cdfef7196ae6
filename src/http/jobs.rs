//! Job routes: submit, list, get, control, logs, and the worker-facing next/progress/results.

use super::AppState;
use super::auth::node_token;
use crate::actors::messages::*;
use crate::actors::scheduler::queued_job_from_row;
use crate::db::jobs::{self as db_jobs, JobFilter, JobRow};
use crate::db::{DbError, now_micros};
use crate::domain::limits;
use crate::domain::params::Engine;
use crate::domain::placement::Requirements;
use crate::domain::queue::{Priority, QueueName};
use crate::domain::state::JobState;
use crate::error::{AppError, AppResult};
use crate::wire::*;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use std::time::Duration;
use uuid::Uuid;

/// A job's most recent transitions shown by `GET /jobs/{id}` (a job retried for weeks
/// has thousands); `state_transitions_omitted` counts the older ones.
pub const MAX_TRANSITIONS_SHOWN: i64 = 200;

/// Longest long-poll a worker may ask for.
pub const MAX_WAIT_SECONDS: f64 = 60.0;

/// A job id as written in a path: all digits = sequence number, else a UUID.
pub enum JobRef {
    Seq(i64),
    Id(Uuid),
}

/// An id of any other shape names no job: 404, as the seed answered (its clients and
/// scripts expect `cancel nonexistent-id` to be "not found", not a bad request).
pub fn parse_job_ref(s: &str) -> AppResult<JobRef> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().map(JobRef::Seq).map_err(|_| AppError::job_not_found(s));
    }
    Uuid::parse_str(s).map(JobRef::Id).map_err(|_| AppError::job_not_found(s))
}

pub(crate) async fn load_row(state: &AppState, raw: &str) -> AppResult<JobRow> {
    let r = parse_job_ref(raw)?;
    let res = state.h.db.read(move |c| find_row(c, &r)).await;
    res.map_err(|e| match e {
        DbError::NotFound => AppError::job_not_found(raw),
        other => other.into(),
    })
}

/// The stored row a job reference names.
pub(crate) fn find_row(c: &mut crate::db::Conn, r: &JobRef) -> crate::db::DbResult<JobRow> {
    match r {
        JobRef::Seq(n) => db_jobs::get_by_seq(c, *n),
        JobRef::Id(u) => db_jobs::get(c, &u.to_string()),
    }
}

/// A job as operators and read-only keys see it: stream keys and URL credentials are
/// for the worker that streams (its `/jobs/next` copy is whole), not for every reader.
pub(crate) fn operator_view(mut job: Job) -> Job {
    crate::domain::redact::redact_parameters(&mut job.parameters);
    job
}

/// A job id on a worker route: only the UUID a worker was given. A sequence number is
/// not looked up (that would turn a worker key into a way to map numbers to ids).
pub(crate) fn worker_job_id(raw: &str) -> AppResult<Uuid> {
    Uuid::parse_str(raw)
        .map_err(|_| AppError::NotFound { code: "job_not_found", message: "worker routes take the job's UUID".into() })
}

async fn resolve_uuid(state: &AppState, raw: &str) -> AppResult<Uuid> {
    match parse_job_ref(raw)? {
        JobRef::Id(u) => Ok(u),
        JobRef::Seq(_) => Ok(load_row(state, raw).await?.uuid()),
    }
}

fn bounded(name: &str, v: &Option<String>, max: usize) -> AppResult<()> {
    match v {
        Some(s) => limits::check_text(name, s, max).map_err(|e| AppError::bad_request("invalid_field", e.message)),
        None => Ok(()),
    }
}

#[utoipa::path(post, path = "/jobs", request_body = SubmitJobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays return the job first created with this key")),
    responses((status = 201, body = Job), (status = 200, description = "Idempotent replay", body = Job), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn submit_job(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<SubmitJobRequest>,
) -> AppResult<HttpResponse> {
    let b = body.into_inner();
    let queue_s = b.queue.clone().unwrap_or_default();
    let queue = QueueName::parse(&queue_s).ok_or_else(|| {
        AppError::bad_request(
            "invalid_queue",
            format!("invalid queue '{queue_s}'; valid values: {}", QueueName::NAMES.join(", ")),
        )
    })?;
    let prio_s = b.priority.clone().unwrap_or_default();
    let priority = Priority::parse(&prio_s).ok_or_else(|| {
        AppError::bad_request(
            "invalid_priority",
            format!("invalid priority '{prio_s}'; valid values: {}", Priority::NAMES.join(", ")),
        )
    })?;
    let engine_s = b.engine.clone().unwrap_or_else(|| "auto".into());
    let engine = Engine::parse(&engine_s).ok_or_else(|| {
        AppError::bad_request(
            "invalid_engine",
            format!("invalid engine '{engine_s}'; valid values: {}", Engine::NAMES.join(", ")),
        )
    })?;
    bounded("scenario", &b.scenario, limits::SCENARIO_MAX)?;
    bounded("confidence", &b.confidence, limits::CONFIDENCE_MAX)?;
    let children = b.children.clone().unwrap_or_default();
    if !children.is_empty() && (b.parameters.as_ref().is_some_and(|p| !p.is_empty()) || b.template.is_some()) {
        return Err(AppError::bad_request(
            "invalid_field",
            "a job with children runs nothing itself: give parameters and templates to its children",
        ));
    }
    let (spec, params, ignored) = super::admission::checked_parameters(
        &state,
        b.parameters.clone().unwrap_or_default(),
        b.template.as_deref(),
        engine,
    )
    .await?;
    if spec.chunking.is_some() && queue == QueueName::Live {
        return Err(AppError::bad_request(
            "invalid_parameter",
            "live-queue jobs are never chunked (a live stream has no end to split); drop 'chunking'",
        ));
    }
    let max_retries = b.max_retries.unwrap_or(state.default_max_retries);
    if !(0..=100).contains(&max_retries) {
        return Err(AppError::bad_request("invalid_field", "max_retries must be between 0 and 100"));
    }
    let idem = req.headers().get("idempotency-key").map(|v| v.to_str().map(str::to_string));
    let idem = match idem {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 200 => Some(k),
        _ => {
            return Err(AppError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1–200 visible characters",
            ));
        }
    };
    // Keys are scoped per API key (two clients choosing the same key never see each
    // other's jobs), and bound to what they first submitted.
    let scope = match actix_web::HttpMessage::extensions(&req).get::<super::auth::Caller>().and_then(|c| c.key) {
        Some(d) => crate::domain::credentials::to_hex(&d)[..16].to_string(),
        None => "open".to_string(),
    };
    let idem = idem.map(|k| format!("{scope}:{k}"));
    let fingerprint = idem.as_ref().map(|_| {
        let canonical = serde_json::json!([
            queue.as_str(),
            priority.as_str(),
            engine.as_str(),
            b.scenario,
            b.confidence,
            params,
            max_retries
        ]);
        crate::domain::credentials::to_hex(&crate::domain::credentials::digest(&canonical.to_string()))
    });
    let requirements = Requirements::from_spec(&spec);
    let mut status = JobState::Pending;
    let mut reject_reason = None;
    if state.reject_unplaceable
        && children.is_empty()
        && let Some(false) = state.h.scheduler.send(CheckPlaceable(requirements.clone())).await?
    {
        status = JobState::Rejected;
        reject_reason = Some(format!("no registered node can run it (needs {})", requirements.describe()));
    }
    let now = now_micros();
    let new = JobRow {
        // Time-ordered (v7): inserts append to the id indexes instead of dirtying a
        // random B-tree page per job, which dominated the WAL bytes of a commit.
        id: Uuid::now_v7().to_string(),
        scenario: b.scenario.unwrap_or_default(),
        confidence: b.confidence.unwrap_or_default(),
        engine,
        queue,
        priority,
        parameters: serde_json::Value::Object(params).to_string(),
        status,
        max_retries,
        created_at: now,
        queued_at: now,
        idempotency_key: idem,
        failure_reason: reject_reason.as_ref().map(|_| FailureReason::CapabilityMismatch),
        error: reject_reason,
        completed_at: (status == JobState::Rejected).then_some(now),
        updated_at: now,
        idempotency_fingerprint: fingerprint.clone(),
        ..JobRow::default()
    };
    let after = match &b.after {
        Some(a) if !a.is_empty() => Some(super::graphs::check_after(&state, a).await?),
        _ => None,
    };
    let shape = match (spec.package.is_some() || spec.chunking.is_some(), after) {
        _ if !children.is_empty() => {
            Some(super::graphs::GraphShape::Children(super::graphs::checked_children(&state, &children, engine).await?))
        }
        _ if status == JobState::Rejected => None,
        (true, _) => Some(super::graphs::GraphShape::Package),
        (false, Some(a)) => Some(super::graphs::GraphShape::After(a)),
        (false, None) => None,
    };
    let graph = shape.is_some();
    let notify = match &b.notify {
        Some(n) => Some(super::webhooks::store_notify(&state, &new.id, n).await?),
        None => None,
    };
    let stored = match shape {
        Some(shape) => super::graphs::insert_graph_job(&state, new, shape).await,
        None => state.h.db.insert_job(new).await.map_err(AppError::from),
    };
    if let Some(hook) = notify {
        super::webhooks::settle_notify(&state, hook, stored.as_ref().is_ok_and(|(_, created)| *created)).await;
    }
    let (row, created) = stored?;
    if !created {
        if row.idempotency_fingerprint.is_some() && row.idempotency_fingerprint != fingerprint {
            return Err(AppError::Unprocessable {
                code: "idempotency_key_reused",
                message: format!(
                    "this Idempotency-Key already named job {} with a different request; use a new key",
                    row.id
                ),
            });
        }
        return Ok(HttpResponse::Ok()
            .insert_header(("Idempotent-Replayed", "true"))
            .json(operator_view(row.to_wire())));
    }
    if !graph {
        state.h.metrics.do_send(JobStateChanged { from: None, to: status, queue, priority, engine: row.engine });
    }
    if status == JobState::Pending && !graph {
        state.h.scheduler.do_send(JobsQueued(vec![queued_job_from_row(&row)]));
    }
    let mut created = operator_view(row.to_wire());
    // Kept on the job, read by no encode: named so that a typo is still visible.
    created.ignored_parameters = (!ignored.is_empty()).then_some(ignored);
    Ok(HttpResponse::Created().json(created))
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    pub status: Option<String>,
    pub queue: Option<String>,
    pub priority: Option<String>,
    pub node_id: Option<String>,
    pub node: Option<String>,
    /// Only the children of this graph.
    pub parent_id: Option<String>,
    /// Only jobs whose scenario contains this text (any case; at most 200 characters).
    pub scenario: Option<String>,
    /// 1–1000, default 100.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A `GET /jobs` filter value: absent, or exactly one of `T`'s spellings.
fn filter_value<T: std::str::FromStr + strum::VariantNames>(
    v: &Option<String>,
    code: &'static str,
    what: &str,
) -> AppResult<Option<T>> {
    v.as_deref()
        .map(|s| {
            s.parse::<T>().map_err(|_| {
                AppError::bad_request(code, format!("invalid {what} '{s}'; valid values: {}", T::VARIANTS.join(", ")))
            })
        })
        .transpose()
}

#[utoipa::path(get, path = "/jobs", params(ListQuery), responses((status = 200, body = JobList), (status = 400, body = ErrorBody)))]
pub async fn list_jobs(state: web::Data<AppState>, q: web::Query<ListQuery>) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(list_view(&state, q.into_inner()).await?))
}

/// A page of jobs as `GET /jobs` (and the console) shows them.
pub(crate) async fn list_view(state: &AppState, q: ListQuery) -> AppResult<JobList> {
    let filter = job_filter(q)?;
    let limit = filter.limit;
    let rows = state.h.db.read(move |c| db_jobs::list(c, &filter)).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.seq.to_string())).flatten();
    let mut jobs: Vec<Job> = rows.iter().map(|r| operator_view(r.to_wire())).collect();
    let mut ids: Vec<String> = jobs.iter().filter_map(|j| j.node_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let names = if ids.is_empty() { Default::default() } else { state.h.nodes.send(GetNodeNames(ids)).await? };
    for j in &mut jobs {
        j.logs = None;
        j.node_name = j.node_id.as_ref().and_then(|id| names.get(id).cloned());
    }
    Ok(JobList { count: jobs.len(), jobs, next_cursor })
}

/// The stored-jobs filter a `GET /jobs` query asks for (400 for what it cannot mean).
pub(crate) fn job_filter(q: ListQuery) -> AppResult<JobFilter> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::bad_request("invalid_query", "limit must be between 1 and 1000"));
    }
    let before_seq = match &q.cursor {
        None => None,
        Some(c) => Some(
            c.parse::<i64>().map_err(|_| AppError::bad_request("invalid_cursor", format!("invalid cursor '{c}'")))?,
        ),
    };
    let filter = JobFilter {
        status: filter_value(&q.status, "invalid_status", "status")?,
        queue: filter_value(&q.queue, "invalid_queue", "queue")?,
        priority: filter_value(&q.priority, "invalid_priority", "priority")?,
        node_id: q.node_id.or(q.node),
        parent_id: match q.parent_id {
            Some(p) if Uuid::parse_str(&p).is_err() => {
                return Err(AppError::bad_request("invalid_parent_id", format!("parent_id '{p:.64}' is not a job id")));
            }
            p => p,
        },
        scenario_contains: match q.scenario {
            Some(t) if t.chars().count() > 200 => {
                return Err(AppError::bad_request("invalid_query", "scenario search is at most 200 characters"));
            }
            t => t.filter(|t| !t.trim().is_empty()),
        },
        before_seq,
        limit,
    };
    Ok(filter)
}

#[utoipa::path(get, path = "/jobs/{id}", params(("id" = String, Path, description = "Job UUID or sequence number")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub async fn get_job(state: web::Data<AppState>, id: web::Path<String>) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(job_view(&state, &id).await?))
}

/// A job with everything `GET /jobs/{id}` shows (live progress, transitions,
/// attempts, outputs, children).
pub(crate) async fn job_view(state: &AppState, id: &str) -> AppResult<Job> {
    let mut row = load_row(state, id).await?;
    let uid = row.uuid();
    let mut live = None;
    if row.state().is_live() {
        match state.h.scheduler.send(SendToLiveJob(uid, GetLiveView)).await? {
            Some(view) => live = Some(view),
            // Its actor finished between our read and the lookup: read what it wrote.
            None => row = load_row(state, &row.id).await?,
        }
    }
    let key = row.id.clone();
    let (events, total) = state.h.db.read(move |c| db_jobs::recent_events(c, &key, MAX_TRANSITIONS_SHOWN)).await?;
    let mut job = operator_view(row.to_wire());
    job.state_transitions = Some(events.iter().map(|e| e.to_wire()).collect());
    job.attempts = Some(db_jobs::attempts_of(&events));
    job.state_transitions_omitted = (total > events.len() as i64).then(|| total - events.len() as i64);
    if let Some(v) = live {
        if job.logs.as_deref().is_none_or(str::is_empty) && !v.log_tail.is_empty() {
            job.logs = Some(v.log_tail.join("\n"));
        }
        if let Some(p) = v.progress {
            job.progress = p.percent.floor() as i64;
            job.progress_detail = Some(p);
        }
    }
    if row.state().is_runnable() {
        job.queue_reason = state.h.scheduler.send(GetQueueReason(uid)).await?;
    }
    if let Some(n) = &job.node_id {
        job.node_name = state.h.nodes.send(GetNode(n.clone())).await?.map(|n| n.name);
    }
    let key = row.id.clone();
    let info = state.h.db.read(move |c| crate::db::outputs::input_info(c, &key)).await?;
    let outputs = super::outputs::outputs_of(state, &row.id).await?;
    job.outputs = Some(outputs.iter().map(|o| o.to_wire()).collect());
    job.input_info = info.and_then(|i| serde_json::from_str(&i).ok());
    super::graphs::enrich(state, &mut job).await?;
    Ok(job)
}

#[utoipa::path(post, path = "/jobs/{id}/{action}",
    params(("id" = String, Path, description = "Job UUID or sequence number"), ("action" = String, Path, description = "pause, resume, cancel or retry")),
    responses((status = 200, body = ControlResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn control_job(state: web::Data<AppState>, path: web::Path<(String, String)>) -> AppResult<HttpResponse> {
    let (raw, action) = path.into_inner();
    let action = match action.as_str() {
        "pause" => UserAction::Pause,
        "resume" => UserAction::Resume,
        "cancel" => UserAction::Cancel,
        "retry" => UserAction::Retry,
        other => {
            return Err(AppError::NotFound {
                code: "route_not_found",
                message: format!("unknown job action '{other}'; valid actions: pause, resume, cancel, retry"),
            });
        }
    };
    let id = resolve_uuid(&state, &raw).await?;
    if let Some(resp) = super::graphs::control(&state, id, action).await? {
        return Ok(HttpResponse::Ok().json(resp));
    }
    let resp = state.h.scheduler.send(ControlJob { id, action }).await??;
    if action == UserAction::Retry {
        // Jobs that failed waiting for this one wait again.
        state.h.graph.send(crate::actors::messages::JobRequeued(id)).await?;
    }
    Ok(HttpResponse::Ok().json(resp))
}

#[utoipa::path(get, path = "/jobs/{id}/logs", params(("id" = String, Path)), responses((status = 200, body = JobLogs), (status = 404, body = ErrorBody)))]
pub async fn job_logs(state: web::Data<AppState>, id: web::Path<String>) -> AppResult<HttpResponse> {
    let row = load_row(&state, &id).await?;
    let logs = match (&row.logs, &row.error) {
        (Some(l), _) if !l.is_empty() => l.clone(),
        (_, Some(e)) if !e.is_empty() => format!("Error: {e}"),
        _ => "No logs available for this job".to_string(),
    };
    Ok(HttpResponse::Ok().json(JobLogs { job_id: row.id, logs }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct NextQuery {
    pub node_id: Option<String>,
    /// Seconds to hold the request open when nothing fits (0–60, default 0).
    pub wait: Option<f64>,
    /// Jobs to take at most (1–64, default 1; bounded by the node's free slots). `0`
    /// withdraws the node's parked poll (answered empty) and takes nothing: a draining
    /// worker sends it so no job is placed on it while its own poll is still open.
    pub max: Option<u32>,
}

/// How long a long-poll whose jobs are being claimed waits for that COMMIT.
pub(crate) const CLAIM_COMMIT_WAIT: Duration = Duration::from_secs(30);

#[utoipa::path(get, path = "/jobs/next", params(NextQuery), responses((status = 200, body = NextJobResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn next_job(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<NextQuery>,
) -> AppResult<HttpResponse> {
    let node_id = q
        .node_id
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| AppError::bad_request("missing_node_id", "node_id parameter is required"))?;
    let wait = q.wait.unwrap_or(0.0);
    if !(0.0..=MAX_WAIT_SECONDS).contains(&wait) || wait.is_nan() {
        return Err(AppError::bad_request(
            "invalid_query",
            format!("wait must be between 0 and {MAX_WAIT_SECONDS} seconds"),
        ));
    }
    let max = q.max.unwrap_or(1);
    if max > MAX_JOBS_PER_POLL {
        return Err(AppError::bad_request("invalid_query", format!("max must be between 0 and {MAX_JOBS_PER_POLL}")));
    }
    let (poll, mut rx) =
        state.h.scheduler.send(ClaimJobs { node_id: node_id.clone(), max, token: node_token(&req) }).await??;
    let wait = Duration::from_secs_f64(wait.min(state.max_long_poll));
    let jobs = match tokio::time::timeout(wait, &mut rx).await {
        Ok(answer) => answer.unwrap_or_default(),
        // Time is up, unless jobs are already being claimed for this poll: those are
        // delivered after their COMMIT (bounded, in case the database stalls). A claim
        // that committed between the timeout and `EndPoll` already sent its jobs (the
        // scheduler answers in order): they are this node's now and must not be dropped.
        Err(_) if state.h.scheduler.send(EndPoll { node_id, poll }).await? => rx.try_recv().unwrap_or_default(),
        Err(_) => tokio::time::timeout(CLAIM_COMMIT_WAIT, rx).await.ok().and_then(Result::ok).unwrap_or_default(),
    };
    if jobs.is_empty() {
        state.h.metrics.do_send(MetricRecorded(MetricEvent::ScheduleAttempt("no_jobs")));
    }
    Ok(HttpResponse::Ok().json(NextJobResponse { job: jobs.first().cloned(), jobs }))
}

#[utoipa::path(post, path = "/jobs/{id}/progress", params(("id" = String, Path)), request_body = ProgressReport,
    responses((status = 200, body = ProgressResponse), (status = 409, body = ErrorBody)))]
pub async fn report_progress(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<ProgressReport>,
) -> AppResult<HttpResponse> {
    let b = body.into_inner();
    let from = progress_message(&id, b.node_id, b.attempt, b.detail, b.input_info, b.log_lines, node_token(&req))?;
    let node = from.node_id.clone();
    let answered = state.h.scheduler.send(from).await??;
    Ok(HttpResponse::Ok().json(ProgressResponse { control: settle_progress(&state, &id, &node, answered).await? }))
}

/// A worker's progress report on job `id`, checked, as the message its actor takes.
pub(crate) fn progress_message(
    id: &str,
    node_id: String,
    attempt: Option<i32>,
    detail: crate::wire::ProgressDetail,
    input_info: Option<crate::domain::media::InputInfo>,
    log_lines: Vec<String>,
    token: Option<String>,
) -> AppResult<FromNode<ReportProgress>> {
    let uid = worker_job_id(id)?;
    if !detail.percent.is_finite() {
        return Err(AppError::bad_request("invalid_progress", "percent must be a number"));
    }
    if let Some(i) = &input_info {
        crate::domain::limits::check_input_info(i).map_err(|e| AppError::bad_request("invalid_progress", e.message))?;
    }
    let report = ReportProgress { node_id: node_id.clone(), attempt, detail, input_info, log_lines };
    Ok(FromNode { job: uid, node_id, token, attempt_given: attempt.is_some(), msg: report })
}

/// What a node is told to do with job `id` after a progress report: its live actor's
/// answer, or — with none — cancel (a canceled job it held) or stale.
pub(crate) async fn settle_progress(
    state: &AppState,
    id: &str,
    node_id: &str,
    answered: Option<AppResult<ControlAction>>,
) -> AppResult<ControlAction> {
    if let Some(control) = answered {
        return control;
    }
    let row = load_row(state, id).await?;
    if row.state() == JobState::Canceled && row.node_id.as_deref() == Some(node_id) {
        return Ok(ControlAction::Cancel);
    }
    Err(AppError::stale_attempt(format!(
        "job {} is '{}'; node {node_id} holds no lease on it: stop it and discard its output",
        row.id, row.status
    )))
}

#[utoipa::path(post, path = "/jobs/{id}/control/ack", params(("id" = String, Path)), request_body = ControlAck,
    responses((status = 200, description = "Acknowledged"), (status = 409, body = ErrorBody)))]
pub async fn ack_control(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<ControlAck>,
) -> AppResult<HttpResponse> {
    let uid = worker_job_id(&id)?;
    let b = body.into_inner();
    let ack = AcknowledgeControl { node_id: b.node_id.clone(), attempt: b.attempt, action: b.action };
    let from = FromNode { job: uid, node_id: b.node_id, token: node_token(&req), attempt_given: true, msg: ack };
    if let Some(acked) = state.h.scheduler.send(from).await?? {
        acked?;
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "acknowledged": true })))
}

#[utoipa::path(post, path = "/results", request_body = JobResult,
    responses((status = 200, body = ResultResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn post_result(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<JobResult>,
) -> AppResult<HttpResponse> {
    let from = result_message(body.into_inner(), node_token(&req))?;
    let r = from.msg.0.clone();
    let answered = state.h.scheduler.send(from).await??;
    Ok(HttpResponse::Ok().json(settle_result(&state, r, answered).await?))
}

/// A worker's result, checked and bounded, as the message its job's actor takes.
pub(crate) fn result_message(mut r: JobResult, token: Option<String>) -> AppResult<FromNode<ReportResult>> {
    limits::check_result(&mut r).map_err(|e| AppError::bad_request("invalid_result", e.message))?;
    let uid = Uuid::parse_str(&r.job_id)
        .map_err(|_| AppError::bad_request("invalid_job_id", format!("job_id '{}' is not a job UUID", r.job_id)))?;
    if r.node_id.is_empty() {
        return Err(AppError::bad_request("missing_node_id", "node_id is required"));
    }
    Ok(FromNode {
        job: uid,
        node_id: r.node_id.clone(),
        token,
        attempt_given: r.attempt.is_some(),
        msg: ReportResult(r),
    })
}

/// The answer to a result whose node passed the token check: its live actor's, or —
/// with none — a repeat of what was already applied, or stale.
pub(crate) async fn settle_result(
    state: &AppState,
    r: JobResult,
    answered: Option<AppResult<ResultResponse>>,
) -> AppResult<ResultResponse> {
    // The node's identity is checked: a result proves it alive (seed agents heartbeat
    // only every 30 s).
    state.h.nodes.do_send(NodeSeen(r.node_id.clone()));
    if let Some(res) = answered {
        return res;
    }
    // No live actor: the job is queued, finished or unknown.
    let row = load_row(state, &r.job_id).await?;
    let same_holder = row.node_id.as_deref() == Some(r.node_id.as_str()) && r.attempt.is_none_or(|a| a == row.attempt);
    if row.state().is_terminal()
        && same_holder
        && (row.status.as_str() == r.status || row.state() == JobState::Canceled)
    {
        // A repeat of a report already applied (or a late one for a canceled job).
        return Ok(ResultResponse { status: "success".into(), job_status: row.status, retry: None, max_retries: None });
    }
    Err(AppError::stale_attempt(format!(
        "job {} is '{}' (attempt {}); this report's lease is gone: discard its output",
        row.id, row.status, row.attempt
    )))
}

#[utoipa::path(post, path = "/jobs/{id}/release", params(("id" = String, Path)), request_body = LeaseRelease,
    responses((status = 200, description = "Handed back to the queue"), (status = 409, body = ErrorBody)))]
pub async fn release_lease(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<LeaseRelease>,
) -> AppResult<HttpResponse> {
    let uid = worker_job_id(&id)?;
    let b = body.into_inner();
    let release = ReturnLease { node_id: b.node_id.clone(), attempt: b.attempt };
    match state
        .h
        .scheduler
        .send(FromNode { job: uid, node_id: b.node_id, token: node_token(&req), attempt_given: true, msg: release })
        .await??
    {
        Some(released) => released?,
        None => return Err(AppError::stale_attempt(format!("job {uid} holds no lease"))),
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "released": true })))
}
