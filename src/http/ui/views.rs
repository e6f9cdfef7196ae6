//! Console pages other than the jobs': overview, submit, nodes, webhooks. Each reads
//! what the API's own handlers read and renders it; live refreshes come from `app.js`.

use super::pages::{self, ago, badge, bar_chart, bytes, column_chart};
use super::{Viewer, page_error, respond};
use crate::actors::messages::{GetFinishedSeries, GetNodeCounts, GetSchedulerSnapshot, ListNodes};
use crate::db::jobs as db_jobs;
use crate::db::webhooks as db_webhooks;
use crate::domain::queue::{Priority, QueueName};
use crate::domain::state::JobState;
use crate::error::AppError;
use crate::http::AppState;
use actix_web::{HttpRequest, HttpResponse};
use maud::{Markup, html};

fn failed(e: AppError) -> HttpResponse {
    page_error(503, &format!("The master could not answer: {e}"))
}

pub async fn overview(req: &HttpRequest, state: &AppState, viewer: &Viewer) -> HttpResponse {
    match overview_main(state).await {
        Ok(main) => respond(req, "Overview", "overview", viewer, main),
        Err(e) => failed(e),
    }
}

async fn overview_main(state: &AppState) -> Result<Markup, AppError> {
    let snap = state.h.scheduler.send(GetSchedulerSnapshot).await?;
    let node_counts = state.h.nodes.send(GetNodeCounts).await?;
    let series: Vec<(i64, i64)> =
        state.h.metrics.send(GetFinishedSeries).await?.into_iter().map(|(a, b)| (a as i64, b as i64)).collect();
    let by_state = state.h.db.read(db_jobs::current_counts).await?;
    let depth = |q: QueueName, p: Priority| {
        snap.queued.iter().filter(|(a, b, _)| *a == q && *b == p).map(|x| x.2).sum::<usize>()
    };
    let states: Vec<(String, i64)> = JobState::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), by_state.iter().filter(|(x, _)| x == s).map(|x| x.1).sum()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let (ok, bad): (i64, i64) = series.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let rate = if ok + bad > 0 { format!("{:.1} %", 100.0 * ok as f64 / (ok + bad) as f64) } else { "—".into() };
    let node_rows: Vec<(String, i64)> = ["available", "busy", "draining", "offline"]
        .iter()
        .zip(node_counts)
        .map(|(n, c)| (n.to_string(), c as i64))
        .collect();
    Ok(html! {
        h1 { "Overview" }
        div.grid data-live="overview" {
            section.card aria-labelledby="q-h" {
                h2 #q-h { "Queued" }
                table.compact {
                    thead { tr { th scope="col" { "Queue" } @for p in Priority::ALL { th scope="col" { (p.as_str()) } } } }
                    tbody {
                        @for q in QueueName::ALL {
                            tr { th scope="row" { (q.as_str()) } @for p in Priority::ALL { td.num { (depth(*q, *p)) } } }
                        }
                    }
                }
                p.hint {
                    @if let Some(w) = snap.oldest_wait_seconds { "Oldest has waited " (pages::duration(w)) ". " }
                    @if !snap.unplaceable.is_empty() { "Unplaceable: " (snap.unplaceable.join(", ")) }
                }
            }
            section.card aria-labelledby="s-h" {
                h2 #s-h { "Jobs by state" }
                (bar_chart("Jobs by state", &states))
            }
            section.card aria-labelledby="h-h" {
                h2 #h-h { "Last hour" }
                dl.figures {
                    div { dt { "Completed" } dd #done-hour { (ok) } }
                    div { dt { "Failed" } dd { (bad) } }
                    div { dt { "Success rate" } dd { (rate) } }
                    div { dt { "Throughput" } dd { (ok) " jobs/h" } }
                }
                (column_chart("Jobs finished per five minutes over the last hour (failed stacked on completed)", &series))
                p.hint { "Finished per 5 minutes, oldest left; failed stacked on completed." }
            }
            section.card aria-labelledby="n-h" {
                h2 #n-h { "Nodes" }
                (bar_chart("Nodes by status", &node_rows))
            }
        }
    })
}

pub async fn submit(req: &HttpRequest, state: &AppState, viewer: &Viewer) -> HttpResponse {
    if !viewer.can_control() {
        return page_error(403, "This key's role may not submit jobs.");
    }
    let templates = match crate::http::templates::all_templates(state).await {
        Ok(t) => t,
        Err(e) => return failed(e),
    };
    let catalog: serde_json::Map<String, serde_json::Value> = templates
        .iter()
        .map(|t| (t.name.clone(), serde_json::json!({"description": t.description, "parameters": t.parameters})))
        .collect();
    // JSON in a data block (never executed, so the CSP allows it); `<` escaped so no
    // template text can end the element.
    let catalog = serde_json::to_string(&catalog).unwrap_or_default().replace('<', "\\u003c");
    let main = html! {
        h1 { "Submit a job" }
        script #templates type="application/json" { (maud::PreEscaped(catalog)) }
        form #submit-form.card novalidate {
            div #submit-error.error role="alert" hidden {}
            label for="template" { "Template" }
            select #template name="template" {
                option value="" { "(none: parameters below only)" }
                @for t in &templates { option value=(t.name) { (t.name) @if !t.builtin { " (v" (t.version) ")" } } }
            }
            p #template-description.hint {}
            pre #template-parameters.params aria-label="The template's parameters" {}
            label for="input" { "Input (path under the input root, or URL)" }
            input #input name="input" type="text" maxlength="2048" placeholder="leave empty for a synthetic test source";
            label for="upload" { "…or upload a file (stored on the master, read by the worker as upload://…)" }
            input #upload name="upload" type="file" accept="video/*,audio/*,image/*,.mkv,.mxf,.ts,.y4m";
            p #upload-status.hint aria-live="polite" {}
            label for="scenario" { "Scenario" }
            input #scenario name="scenario" type="text" maxlength="200" placeholder="e.g. 720p30-h264";
            div.row {
                div { label for="queue" { "Queue" }
                    select #queue name="queue" { @for q in QueueName::ALL { option value=(q.as_str()) selected[*q == QueueName::Default] { (q.as_str()) } } } }
                div { label for="priority" { "Priority" }
                    select #priority name="priority" { @for p in Priority::ALL { option value=(p.as_str()) selected[*p == Priority::Medium] { (p.as_str()) } } } }
            }
            label for="overrides" { "Overrides (JSON object; they win over the template's parameters)" }
            textarea #overrides name="overrides" rows="5" maxlength="65536" placeholder="{\"duration\": 5}" {}
            button type="submit" { "Submit" }
        }
    };
    respond(req, "Submit", "submit", viewer, main)
}

pub async fn nodes(req: &HttpRequest, state: &AppState, viewer: &Viewer) -> HttpResponse {
    let mut list = match state.h.nodes.send(ListNodes).await {
        Ok(l) => l,
        Err(e) => return failed(e.into()),
    };
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let main = html! {
        h1 { "Nodes" }
        div data-live="nodes" {
            @if list.is_empty() { p { "No node has registered yet." } }
            @for n in &list {
                section.card.node data-node-id=(n.id) aria-label=(format!("Node {}", n.name)) {
                    header.row {
                        h2 { (n.name) }
                        (badge(n.status.as_str()))
                        span.hint { "heartbeat " (ago(&n.last_heartbeat)) }
                    }
                    dl.figures {
                        div { dt { "CPU" } dd { (n.cpu_model) " · " (n.cpu_threads) " threads · " (format!("{:.0} %", n.cpu_load_percent)) } }
                        div { dt { "RAM" } dd { (bytes(n.ram_total_bytes.saturating_sub(n.ram_free_bytes))) " of " (bytes(n.ram_total_bytes)) } }
                        div { dt { "Jobs" } dd { (n.running_jobs.len()) " of " (n.max_concurrent_jobs) } }
                        div { dt { "Encoders" } dd { (n.encoders.as_ref().map(|e| e.join(", ")).unwrap_or_else(|| "—".into())) } }
                    }
                    @if !n.gpus.is_empty() {
                        table.compact {
                            caption { "GPUs" }
                            thead { tr { th scope="col" { "GPU" } th scope="col" { "Use" } th scope="col" { "Memory" } th scope="col" { "Temp." } th scope="col" { "Encoder sessions" } } }
                            tbody { @for g in &n.gpus { tr {
                                td { (g.index) ": " (g.name) }
                                td.num { (g.utilization_percent.map(|u| format!("{u:.0} %")).unwrap_or_else(|| "—".into())) }
                                td.num { (g.memory_used_bytes.map(bytes).unwrap_or_else(|| "—".into())) " / " (bytes(g.memory_total_bytes)) }
                                td.num { (g.temperature_celsius.map(|t| format!("{t:.0} °C")).unwrap_or_else(|| "—".into())) }
                                td.num { (g.encoder_sessions.map(|s| s.to_string()).unwrap_or_else(|| "—".into())) }
                            } } }
                        }
                    }
                    @if !n.running_jobs.is_empty() {
                        p { "Running: " @for j in &n.running_jobs { a href=(format!("/ui/jobs/{j}")) { (j.get(..8).unwrap_or(j)) } " " } }
                    }
                    @if viewer.can_control() {
                        div.actions {
                            @if n.status.as_str() == "draining" {
                                button type="button" data-post=(format!("/nodes/{}/undrain", n.id)) { "Undrain" }
                            } @else {
                                button type="button" data-post=(format!("/nodes/{}/drain", n.id)) { "Drain" }
                            }
                            button type="button" data-delete=(format!("/nodes/{}", n.id)) data-confirm=(format!("Remove node {}?", n.name)) { "Remove" }
                        }
                    }
                }
            }
        }
    };
    respond(req, "Nodes", "nodes", viewer, main)
}

/// Deliveries shown per webhook.
const DELIVERIES_SHOWN: i64 = 10;

pub async fn webhooks(req: &HttpRequest, state: &AppState, viewer: &Viewer) -> HttpResponse {
    if !viewer.can_control() {
        return page_error(403, "Webhook subscriptions are for admin keys only.");
    }
    let hooks = state
        .h
        .db
        .read(|c| {
            let rows = db_webhooks::list(c, false, 200)?;
            let counts = db_webhooks::counts(c, &rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>())?;
            let mut out = Vec::new();
            for r in rows {
                let deliveries = db_webhooks::deliveries(c, &r.id, None, None, DELIVERIES_SHOWN)?;
                let wire = r.to_wire(counts.get(&r.id).copied().unwrap_or_default());
                out.push((wire, deliveries.into_iter().map(|(d, kind)| d.to_wire(&kind)).collect::<Vec<_>>()));
            }
            Ok(out)
        })
        .await;
    let hooks = match hooks {
        Ok(h) => h,
        Err(e) => return failed(e.into()),
    };
    let main = html! {
        h1 { "Webhooks" }
        div data-live="webhooks" {
            @if hooks.is_empty() { p { "No webhook subscriptions. Create one with " code { "POST /webhooks" } "." } }
            @for (h, deliveries) in &hooks {
                section.card aria-label=(format!("Webhook {}", h.id)) {
                    header.row {
                        h2 { code { (h.url) } }
                        @if h.disabled_at.is_some() { (badge("disabled")) } @else { (badge("active")) }
                    }
                    p.hint { (h.events.join(", ")) " · pending " (h.pending) " · delivered " (h.delivered) " · failed " (h.failed) " · dropped " (h.dropped) }
                    table.compact {
                        thead { tr { th scope="col" { "Event" } th scope="col" { "Type" } th scope="col" { "State" } th scope="col" { "Tries" } th scope="col" { "Last answer" } th scope="col" { span.sr-only { "Action" } } } }
                        tbody { @for d in deliveries { tr {
                            td.num { (d.event_id) }
                            td { (d.kind) }
                            td { (badge(&d.state)) }
                            td.num { (d.attempts) }
                            td { (d.last_status.map(|s| s.to_string()).or(d.last_error.clone()).unwrap_or_default()) }
                            td { button type="button" data-post=(format!("/webhooks/{}/deliveries/{}/redeliver", h.id, d.id)) { "Redeliver" } }
                        } } }
                    }
                }
            }
        }
    };
    respond(req, "Webhooks", "webhooks", viewer, main)
}
