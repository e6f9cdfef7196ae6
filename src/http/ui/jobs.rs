//! The console's job pages: the filterable list with live progress and bulk actions,
//! and one job's detail (parameters, timeline, attempts, log tail, figures, children,
//! outputs and a player for streaming packages).

use super::pages::{ago, badge, bytes, progress_cell, short_time};
use super::{Viewer, page_error, respond};
use crate::domain::queue::{Priority, QueueName};
use crate::domain::state::JobState;
use crate::error::AppError;
use crate::http::AppState;
use crate::http::jobs::{ListQuery, job_view, list_view};
use crate::wire::{Job, JobOutput};
use actix_web::{HttpRequest, HttpResponse};
use maud::{Markup, html};

/// Jobs per page of the list.
const PAGE_SIZE: i64 = 50;
/// Log lines the detail page starts with (the live tail keeps at most 500).
const LOG_LINES_SHOWN: usize = 200;

/// The list's filters as the form sends them: blank fields mean "any".
fn filters(req: &HttpRequest) -> ListQuery {
    let q =
        actix_web::web::Query::<ListQuery>::from_query(req.query_string()).map(|q| q.into_inner()).unwrap_or_default();
    let set = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    ListQuery {
        status: set(q.status),
        queue: set(q.queue),
        priority: set(q.priority),
        node_id: set(q.node_id).or(set(q.node)),
        node: None,
        parent_id: set(q.parent_id),
        scenario: set(q.scenario),
        limit: Some(PAGE_SIZE),
        cursor: set(q.cursor),
    }
}

fn select(name: &str, label: &str, values: &[&str], current: &Option<String>) -> Markup {
    html! {
        div {
            label for=(format!("f-{name}")) { (label) }
            select id=(format!("f-{name}")) name=(name) {
                option value="" { "any" }
                @for v in values { option value=(v) selected[current.as_deref() == Some(*v)] { (v) } }
            }
        }
    }
}

fn text_filter(name: &str, label: &str, current: &Option<String>, max: usize) -> Markup {
    html! {
        div {
            label for=(format!("f-{name}")) { (label) }
            input id=(format!("f-{name}")) name=(name) type="search" maxlength=(max) value=(current.clone().unwrap_or_default());
        }
    }
}

pub async fn list(req: &HttpRequest, state: &AppState, viewer: &Viewer) -> HttpResponse {
    let f = filters(req);
    let shown = f.clone();
    let page = match list_view(state, f).await {
        Ok(p) => p,
        Err(e @ AppError::BadRequest { .. }) => return page_error(400, &e.to_string()),
        Err(e) => return page_error(503, &e.to_string()),
    };
    let older = page.next_cursor.as_ref().map(|c| {
        let mut q: Vec<(String, String)> = Vec::new();
        for (k, v) in [
            ("status", &shown.status),
            ("queue", &shown.queue),
            ("priority", &shown.priority),
            ("node_id", &shown.node_id),
            ("parent_id", &shown.parent_id),
            ("scenario", &shown.scenario),
        ] {
            if let Some(v) = v {
                q.push((k.into(), v.clone()));
            }
        }
        q.push(("cursor".into(), c.clone()));
        let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", super::percent_encode(v))).collect();
        format!("/ui/jobs?{}", query.join("&"))
    });
    let main = html! {
        h1 { "Jobs" }
        form.filters.card method="get" action="/ui/jobs" role="search" aria-label="Filter jobs" {
            (select("status", "Status", JobState::NAMES, &shown.status))
            (select("queue", "Queue", QueueName::NAMES, &shown.queue))
            (select("priority", "Priority", Priority::NAMES, &shown.priority))
            (text_filter("node_id", "Node id", &shown.node_id, 100))
            (text_filter("parent_id", "Parent id", &shown.parent_id, 36))
            (text_filter("scenario", "Scenario contains", &shown.scenario, 200))
            button type="submit" { "Filter" }
        }
        @if viewer.can_control() {
            div.bulk role="group" aria-label="Actions on the selected jobs" {
                button type="button" data-bulk="cancel" { "Cancel selected" }
                button type="button" data-bulk="retry" { "Retry selected" }
                span #bulk-result.hint aria-live="polite" {}
            }
        }
        div.table-wrap data-live="jobs" data-first-page=(shown.cursor.is_none()) {
            table.jobs {
                thead { tr {
                    @if viewer.can_control() { th scope="col".c-sel { input type="checkbox" #select-all aria-label="Select all jobs on this page"; } }
                    th scope="col".c-seq { "#" } th scope="col" { "Scenario" } th scope="col".c-st { "Status" }
                    th scope="col".opt.c-q { "Queue" } th scope="col".opt.c-q { "Priority" } th scope="col".opt.c-node { "Node" }
                    th scope="col".progress-col { "Progress" } th scope="col".opt.c-at { "Created" }
                } }
                tbody {
                    @for j in &page.jobs {
                        tr data-job-id=(j.id) {
                            @if viewer.can_control() { td { input type="checkbox" name="job" value=(j.id) aria-label=(format!("Select job {}", j.sequence_number)); } }
                            td.num { a href=(format!("/ui/jobs/{}", j.id)) { (j.sequence_number) } }
                            td.scenario { (j.scenario) }
                            td.status { (badge(j.status.as_str())) }
                            td.opt { (j.queue.as_str()) }
                            td.opt { (j.priority.as_str()) }
                            td.opt.node { (j.node_name.clone().or(j.node_id.clone()).unwrap_or_default()) }
                            td { (progress_cell(&j.id, j.progress as f64, j.progress_detail.as_ref())) }
                            td.opt { (ago(&j.created_at)) }
                        }
                    }
                }
            }
            @if page.jobs.is_empty() { p { "No jobs match." } }
        }
        @if let Some(href) = older { nav.pager aria-label="Pages" { a href=(href) { "Older jobs →" } } }
    };
    respond(req, "Jobs", "jobs", viewer, main)
}

fn figure(label: &str, value: Option<String>) -> Markup {
    html! { @if let Some(v) = value { div { dt { (label) } dd { (v) } } } }
}

/// The `<video>` for a job's outputs: the HLS master playlist natively, the MP4
/// rendition as the fallback; None when there is nothing playable.
fn player(job_id: &str, outputs: &[JobOutput]) -> Option<Markup> {
    let url = |o: &JobOutput| format!("/jobs/{job_id}/outputs/{}", o.name);
    let hls = outputs
        .iter()
        .filter(|o| o.name.ends_with(".m3u8"))
        .min_by_key(|o| (!o.name.ends_with("master.m3u8"), o.name.matches('/').count()));
    let mp4 = outputs.iter().find(|o| o.name.ends_with(".mp4") || o.name.ends_with(".m4v"));
    if hls.is_none() && mp4.is_none() {
        return None;
    }
    Some(html! {
        section.card aria-labelledby="play-h" {
            h2 #play-h { "Play" }
            video #player controls muted playsinline preload="none" {
                @if let Some(h) = hls { source src=(url(h)) type="application/vnd.apple.mpegurl"; }
                @if let Some(m) = mp4 { source src=(url(m)) type="video/mp4"; }
                "This browser cannot play the package; download it below."
            }
        }
    })
}

fn controls(job: &Job) -> Markup {
    let s = job.status;
    let can = |action: &str| match action {
        "pause" => s == JobState::Processing,
        "resume" => s == JobState::Paused,
        "cancel" => !s.is_terminal(),
        _ => matches!(s, JobState::Failed | JobState::Canceled | JobState::TimedOut),
    };
    html! {
        div.actions role="group" aria-label="Job actions" {
            @for a in ["pause", "resume", "cancel", "retry"] {
                button type="button" data-action=(a) data-job=(job.id) disabled[!can(a)] { (a[..1].to_uppercase()) (&a[1..]) }
            }
        }
    }
}

pub async fn detail(req: &HttpRequest, state: &AppState, viewer: &Viewer) -> HttpResponse {
    let id = req.match_info().get("id").unwrap_or_default().to_string();
    let job = match job_view(state, &id).await {
        Ok(j) => j,
        Err(e @ AppError::NotFound { .. }) => return page_error(404, &e.to_string()),
        Err(e) => return page_error(503, &e.to_string()),
    };
    let logs = tail(job.logs.as_deref().unwrap_or_default());
    let params = serde_json::to_string_pretty(&job.parameters).unwrap_or_default();
    let outputs = job.outputs.clone().unwrap_or_default();
    let children = job.children.clone().unwrap_or_default();
    let main = html! {
        div.title-row {
            h1 { "Job " (job.sequence_number) }
            span.scenario { (job.scenario) }
        }
        div.card data-live="job" data-job-id=(job.id) data-has-children=(!children.is_empty()) {
            div.row {
                span.status { (badge(job.status.as_str())) }
                (progress_cell(&job.id, job.progress as f64, job.progress_detail.as_ref()))
            }
            @if viewer.can_control() { (controls(&job)) }
            dl.figures {
                (figure("Id", Some(job.id.clone())))
                (figure("Queue", Some(format!("{} · {}", job.queue.as_str(), job.priority.as_str()))))
                (figure("Node", job.node_name.clone().or(job.node_id.clone())))
                (figure("Attempt", Some(format!("{} (retries {} of {})", job.attempt, job.retry_count, job.max_retries))))
                (figure("Created", Some(short_time(&job.created_at))))
                (figure("Completed", job.completed_at.as_deref().map(short_time)))
                (figure("Waiting because", job.queue_reason.clone()))
                (figure("Error", job.error.clone()))
                (figure("Failure reason", job.failure_reason.map(|r| r.as_str().to_string())))
                (figure("QoE score", job.qoe_score.map(|v| format!("{v:.2}"))))
                (figure("VMAF", job.vmaf_score.map(|v| format!("{v:.2}"))))
                (figure("Efficiency", job.efficiency_score.map(|v| format!("{v:.3}"))))
                (figure("Energy", job.energy_joules.map(|v| format!("{v:.1} J"))))
                (figure("Parent", job.parent_id.clone()))
            }
        }
        @if let Some(p) = player(&job.id, &outputs) { (p) }
        div.grid {
            section.card aria-labelledby="params-h" {
                h2 #params-h { "Parameters (resolved)" }
                pre.params { (params) }
            }
            section.card aria-labelledby="tl-h" {
                h2 #tl-h { "Timeline" }
                ol.timeline {
                    @for t in job.state_transitions.iter().flatten() {
                        li { time datetime=(t.timestamp) { (t.timestamp.get(11..19).unwrap_or(&t.timestamp)) } " " (t.from) " → " strong { (t.to) } @if !t.reason.is_empty() { " — " (t.reason) } }
                    }
                }
                @if let Some(n) = job.state_transitions_omitted { p.hint { (n) " older transitions omitted" } }
            }
        }
        @if let Some(attempts) = job.attempts.as_ref().filter(|a| !a.is_empty()) {
            section.card aria-labelledby="att-h" {
                h2 #att-h { "Attempts" }
                table.compact {
                    thead { tr { th scope="col" { "#" } th scope="col" { "Node" } th scope="col" { "Started" } th scope="col" { "Ended" } th scope="col" { "Outcome" } } }
                    tbody { @for a in attempts { tr {
                        td.num { (a.attempt) } td { (a.node_id.clone().unwrap_or_default()) } td { (short_time(&a.started_at)) }
                        td { (a.ended_at.as_deref().map(short_time).unwrap_or_default()) }
                        td { (a.outcome.clone().unwrap_or_default()) @if let Some(r) = &a.reason { " (" (r) ")" } }
                    } } }
                }
            }
        }
        @if !children.is_empty() {
            section.card aria-labelledby="ch-h" {
                h2 #ch-h { "Children" }
                table.compact {
                    thead { tr { th scope="col" { "Step" } th scope="col" { "Status" } th scope="col".progress-col { "Progress" } } }
                    tbody { @for c in &children { tr data-job-id=(c.id) {
                        td { a href=(format!("/ui/jobs/{}", c.id)) { (c.stage) @if let Some(l) = &c.label { " " (l) } } }
                        td.status { (badge(c.status.as_str())) }
                        td { (progress_cell(&c.id, c.progress as f64, None)) }
                    } } }
                }
            }
        }
        section.card aria-labelledby="out-h" {
            h2 #out-h { "Outputs" }
            @if outputs.is_empty() { p.hint { "None stored yet." } }
            @else {
                table.compact.outputs {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Size" } th scope="col" { "SHA-256" } } }
                    tbody { @for o in &outputs { tr {
                        td { a href=(format!("/jobs/{}/outputs/{}", job.id, o.name)) download=(o.name.rsplit('/').next().unwrap_or(&o.name)) { (o.name) } }
                        td.num { (bytes(o.bytes)) }
                        td { code.hash { (o.sha256) } }
                    } } }
                }
            }
        }
        section.card aria-labelledby="log-h" {
            h2 #log-h { "Log" }
            pre #log data-job-id=(job.id) tabindex="0" aria-label="Log tail" { (logs) }
        }
    };
    respond(req, &format!("Job {}", job.sequence_number), "job", viewer, main)
}

/// The last lines of a log, at most `LOG_LINES_SHOWN`.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_LINES_SHOWN)..].join("\n")
}
