//! Webhook subscriptions (`/webhooks`, admin) and a job's own `notify` webhook.

use super::AppState;
use crate::actors::messages::{CreateWebhook, DeleteWebhook, Redeliver};
use crate::db::webhooks::{self as db_webhooks, WebhookRow};
use crate::domain::events::{EventFilter, KindPattern, is_stored};
use crate::error::{AppError, AppResult};
use crate::wire::{DeliveryList, NotifyRequest, Webhook, WebhookList, WebhookRequest};
use actix_web::{HttpResponse, web};
use serde::Deserialize;

/// Operators' webhooks a master keeps at most.
pub const MAX_WEBHOOKS: i64 = 100;
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
const DESCRIPTION_MAX: usize = 256;
/// A job's `notify` webhook hears these unless it names others.
pub const NOTIFY_DEFAULT_EVENTS: [&str; 4] = ["job.completed", "job.failed", "job.canceled", "job.rejected"];

fn invalid(m: impl Into<String>) -> AppError {
    AppError::bad_request("invalid_webhook", m)
}

/// Event types a webhook may ask for: stored ones (progress and log lines are transient,
/// only the event stream carries them).
fn checked_kinds(kinds: &[String]) -> AppResult<Vec<String>> {
    for k in kinds {
        let p = KindPattern::parse(k).map_err(invalid)?;
        if !p.as_str().ends_with('*') && !is_stored(p.as_str()) {
            return Err(invalid(format!(
                "'{k}' events are transient (not stored): webhooks cannot receive them; follow GET /events instead"
            )));
        }
    }
    Ok(kinds.iter().map(|k| k.trim().to_string()).collect())
}

/// The URL must be an http(s) URL to a host `--webhook-allow` admits (resolved now).
async fn checked_url(state: &AppState, url: &str) -> AppResult<String> {
    crate::actors::webhooks::check_destination(url, &state.webhook_allow)
        .await
        .map_err(|m| AppError::bad_request("webhook_not_allowed", m))?;
    Ok(url.to_string())
}

fn checked_secret(secret: &str) -> AppResult<()> {
    if !SECRET_LEN.contains(&secret.len()) || secret.chars().any(char::is_control) {
        return Err(invalid(format!(
            "secret must be {} to {} characters with no control characters",
            SECRET_LEN.start(),
            SECRET_LEN.end()
        )));
    }
    Ok(())
}

fn new_row(url: String, kinds: Vec<String>, job_ids: &[String], parent_ids: &[String], secret: String) -> WebhookRow {
    WebhookRow {
        id: uuid::Uuid::now_v7().to_string(),
        url,
        kinds: serde_json::to_string(&kinds).unwrap_or_else(|_| "[]".into()),
        job_ids: serde_json::to_string(job_ids).unwrap_or_else(|_| "[]".into()),
        parent_ids: serde_json::to_string(parent_ids).unwrap_or_else(|_| "[]".into()),
        secret,
        description: String::new(),
        owner_job: None,
        start_after: 0,
        created_at: crate::db::now_micros(),
        disabled_at: None,
        disabled_reason: None,
        dropped: 0,
    }
}

/// Subscribe a URL to events.
#[utoipa::path(post, path = "/webhooks", request_body = WebhookRequest, responses((status = 201, body = Webhook)))]
pub async fn create_webhook(state: web::Data<AppState>, body: web::Json<WebhookRequest>) -> AppResult<HttpResponse> {
    let b = body.into_inner();
    let kinds = checked_kinds(&b.events)?;
    EventFilter::new(&kinds, &b.job_ids, &b.parent_ids, &[]).map_err(invalid)?;
    checked_secret(&b.secret)?;
    let description = b.description.unwrap_or_default();
    crate::domain::limits::check_text("description", &description, DESCRIPTION_MAX).map_err(|e| invalid(e.message))?;
    let url = checked_url(&state, &b.url).await?;
    let count = state.h.db.read(|c| Ok(db_webhooks::list(c, false, MAX_WEBHOOKS + 1)?.len() as i64)).await?;
    if count >= MAX_WEBHOOKS {
        return Err(AppError::Conflict {
            code: "too_many_webhooks",
            message: format!("this master keeps at most {MAX_WEBHOOKS} webhooks; delete one first"),
        });
    }
    let mut row = new_row(url, kinds, &b.job_ids, &b.parent_ids, b.secret);
    row.description = description;
    let created = state.h.webhooks.send(CreateWebhook(row)).await??;
    Ok(HttpResponse::Created().json(created))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListWebhooksQuery {
    /// Also list jobs' own `notify` webhooks.
    pub include_jobs: Option<bool>,
}

#[utoipa::path(get, path = "/webhooks", params(ListWebhooksQuery), responses((status = 200, body = WebhookList)))]
pub async fn list_webhooks(state: web::Data<AppState>, q: web::Query<ListWebhooksQuery>) -> AppResult<HttpResponse> {
    let with_jobs = q.include_jobs.unwrap_or(false);
    let webhooks = state
        .h
        .db
        .read(move |c| {
            let rows = db_webhooks::list(c, with_jobs, 1000)?;
            let counts = db_webhooks::counts(c, &rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>())?;
            Ok(rows.iter().map(|r| r.to_wire(counts.get(&r.id).copied().unwrap_or_default())).collect::<Vec<_>>())
        })
        .await?;
    Ok(HttpResponse::Ok().json(WebhookList { webhooks }))
}

async fn read_webhook(state: &AppState, id: &str) -> AppResult<Webhook> {
    let key = id.to_string();
    match state
        .h
        .db
        .read(move |c| {
            let row = db_webhooks::get(c, &key)?;
            let counts = db_webhooks::counts(c, std::slice::from_ref(&row.id))?;
            Ok(row.to_wire(counts.get(&row.id).copied().unwrap_or_default()))
        })
        .await
    {
        Err(crate::db::DbError::NotFound) => Err(crate::actors::webhooks::webhook_not_found(id)),
        r => Ok(r?),
    }
}

#[utoipa::path(get, path = "/webhooks/{id}", responses((status = 200, body = Webhook)))]
pub async fn get_webhook(state: web::Data<AppState>, id: web::Path<String>) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(read_webhook(&state, &id).await?))
}

#[utoipa::path(delete, path = "/webhooks/{id}", responses((status = 204)))]
pub async fn delete_webhook(state: web::Data<AppState>, id: web::Path<String>) -> AppResult<HttpResponse> {
    state.h.webhooks.send(DeleteWebhook(id.into_inner())).await??;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DeliveriesQuery {
    /// pending, delivered, failed or dropped.
    pub state: Option<String>,
    /// 1–500, default 100.
    pub limit: Option<i64>,
    /// Deliveries older than this id (the previous page's last).
    pub before: Option<i64>,
}

/// A webhook's deliveries, newest first.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", params(DeliveriesQuery), responses((status = 200, body = DeliveryList)))]
pub async fn list_deliveries(
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<DeliveriesQuery>,
) -> AppResult<HttpResponse> {
    let q = q.into_inner();
    if let Some(s) = &q.state
        && !["pending", "delivered", "failed", "dropped"].contains(&s.as_str())
    {
        return Err(AppError::bad_request(
            "invalid_state",
            format!("state '{s}': pending, delivered, failed or dropped"),
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::bad_request("invalid_limit", "limit must be 1 to 500"));
    }
    read_webhook(&state, &id).await?;
    let key = id.into_inner();
    let hook = key.clone();
    let deliveries = state
        .h
        .db
        .read(move |c| db_webhooks::deliveries(c, &hook, q.state.as_deref(), q.before, limit))
        .await?
        .into_iter()
        .map(|(d, kind)| d.to_wire(&kind))
        .collect();
    Ok(HttpResponse::Ok().json(DeliveryList { webhook_id: key, deliveries }))
}

/// Send a delivery again now (whatever its state), as the next in its job's order.
#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{delivery_id}/redeliver", responses((status = 202, body = crate::wire::Delivery)))]
pub async fn redeliver(state: web::Data<AppState>, path: web::Path<(String, i64)>) -> AppResult<HttpResponse> {
    let (webhook_id, delivery_id) = path.into_inner();
    let d = state.h.webhooks.send(Redeliver { webhook_id, delivery_id }).await??;
    Ok(HttpResponse::Accepted().json(d))
}

/// A job's `notify`, checked and stored before the job is, as a webhook of that job
/// alone (a job never stored leaves a subscription that matches nothing; it is removed).
pub async fn store_notify(state: &AppState, job_id: &str, n: &NotifyRequest) -> AppResult<WebhookRow> {
    let kinds = if n.events.is_empty() {
        NOTIFY_DEFAULT_EVENTS.iter().map(|s| s.to_string()).collect()
    } else {
        checked_kinds(&n.events).map_err(|e| AppError::bad_request("invalid_notify", e.to_string()))?
    };
    EventFilter::new(&kinds, &[], &[], &[]).map_err(|m| AppError::bad_request("invalid_notify", m))?;
    let secret = match (&n.secret, &state.webhook_secret) {
        (Some(s), _) => {
            checked_secret(s).map_err(|e| AppError::bad_request("invalid_notify", e.to_string()))?;
            s.clone()
        }
        (None, Some(s)) => s.clone(),
        (None, None) => {
            return Err(AppError::bad_request(
                "notify_secret_required",
                "notify needs a 'secret' (this master has no --webhook-secret to sign with)",
            ));
        }
    };
    let url = checked_url(state, &n.url).await?;
    let mut row = new_row(url, kinds, &[job_id.to_string()], &[], secret);
    row.owner_job = Some(job_id.to_string());
    row.description = "notify".into();
    Ok(state.h.db.write(move |c| db_webhooks::create(c, row)).await?)
}

/// The job was stored: deliver to its `notify` webhook (or forget it: not stored).
pub async fn settle_notify(state: &AppState, row: WebhookRow, job_created: bool) {
    if job_created {
        state.h.webhooks.do_send(crate::actors::messages::WebhookStored(row));
    } else {
        let id = row.id.clone();
        if let Err(e) = state.h.db.write(move |c| db_webhooks::delete(c, &id)).await {
            log::warn!("notify webhook {} of an unstored job not removed: {e}", row.id);
        }
    }
}
