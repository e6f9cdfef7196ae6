//! Webhook subscriptions (`webhooks`), their deliveries (`webhook_deliveries`) and how
//! far the outbox has been fanned out into deliveries (`webhook_cursor`).

use super::schema::{events, webhook_cursor, webhook_deliveries as d, webhooks};
use super::{Conn, DbError, DbResult};
use crate::domain::events::EventFilter;
use diesel::prelude::*;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhooks, treat_none_as_default_value = false)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    /// JSON arrays of strings.
    pub kinds: String,
    pub job_ids: String,
    pub parent_ids: String,
    pub secret: String,
    pub description: String,
    pub owner_job: Option<String>,
    /// The newest event when it was created: it receives only later ones.
    pub start_after: i64,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
    pub dropped: i64,
}

fn list_of(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

impl WebhookRow {
    pub fn filter(&self) -> EventFilter {
        let kinds = list_of(&self.kinds);
        EventFilter::new(&kinds, &list_of(&self.job_ids), &list_of(&self.parent_ids), &[]).unwrap_or_default()
    }

    /// As the API shows it, with its delivery counts (pending, delivered, failed).
    pub fn to_wire(&self, counts: [i64; 3]) -> crate::wire::Webhook {
        crate::wire::Webhook {
            id: self.id.clone(),
            url: crate::domain::redact::redact_urls(&self.url),
            events: list_of(&self.kinds),
            job_ids: list_of(&self.job_ids),
            parent_ids: list_of(&self.parent_ids),
            description: self.description.clone(),
            owner_job: self.owner_job.clone(),
            created_at: crate::wire::rfc3339(self.created_at),
            disabled_at: self.disabled_at.map(crate::wire::rfc3339),
            disabled_reason: self.disabled_reason.clone(),
            pending: counts[0],
            delivered: counts[1],
            failed: counts[2],
            dropped: self.dropped,
        }
    }
}

/// Store a subscription; it starts after the newest event stored so far.
pub fn create(conn: &mut Conn, mut row: WebhookRow) -> DbResult<WebhookRow> {
    row.start_after = super::events::head(conn)?;
    diesel::insert_into(webhooks::table).values(&row).execute(conn)?;
    Ok(row)
}

pub fn get(conn: &mut Conn, id: &str) -> DbResult<WebhookRow> {
    Ok(webhooks::table.filter(webhooks::id.eq(id)).select(WebhookRow::as_select()).get_result(conn)?)
}

/// Every subscription, operators' first; a job's own ones only when `with_jobs`.
pub fn list(conn: &mut Conn, with_jobs: bool, limit: i64) -> DbResult<Vec<WebhookRow>> {
    let mut q = webhooks::table.into_boxed();
    if !with_jobs {
        q = q.filter(webhooks::owner_job.is_null());
    }
    Ok(q.order(webhooks::created_at.asc()).limit(limit).select(WebhookRow::as_select()).load(conn)?)
}

/// The subscriptions still delivering.
pub fn active(conn: &mut Conn) -> DbResult<Vec<WebhookRow>> {
    Ok(webhooks::table.filter(webhooks::disabled_at.is_null()).select(WebhookRow::as_select()).load(conn)?)
}

pub fn delete(conn: &mut Conn, id: &str) -> DbResult<()> {
    if diesel::delete(webhooks::table.filter(webhooks::id.eq(id))).execute(conn)? == 0 {
        return Err(DbError::NotFound);
    }
    diesel::delete(d::table.filter(d::webhook_id.eq(id))).execute(conn)?;
    Ok(())
}

/// The receiver unsubscribed (410): no more deliveries; its pending ones are dropped.
pub fn disable(conn: &mut Conn, id: &str, reason: &str, at: i64) -> DbResult<u64> {
    diesel::update(webhooks::table.filter(webhooks::id.eq(id)))
        .set((webhooks::disabled_at.eq(at), webhooks::disabled_reason.eq(reason)))
        .execute(conn)?;
    let n = diesel::update(d::table.filter(d::webhook_id.eq(id)).filter(d::state.eq("pending")))
        .set((d::state.eq("dropped"), d::last_error.eq(reason)))
        .execute(conn)?;
    Ok(n as u64)
}

/// Pending, delivered and failed deliveries per webhook.
pub fn counts(conn: &mut Conn, ids: &[String]) -> DbResult<std::collections::HashMap<String, [i64; 3]>> {
    let rows: Vec<(String, String, i64)> = d::table
        .filter(d::webhook_id.eq_any(ids))
        .group_by((d::webhook_id, d::state))
        .select((d::webhook_id, d::state, diesel::dsl::count_star()))
        .load(conn)?;
    let mut out: std::collections::HashMap<String, [i64; 3]> = std::collections::HashMap::new();
    for (id, state, n) in rows {
        let slot = match state.as_str() {
            "pending" => 0,
            "delivered" => 1,
            "failed" => 2,
            _ => continue,
        };
        out.entry(id).or_default()[slot] = n;
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = d)]
pub struct DeliveryRow {
    pub id: i64,
    pub webhook_id: String,
    pub event_id: i64,
    pub ordering_key: String,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = d, treat_none_as_default_value = false)]
pub struct NewDelivery {
    pub webhook_id: String,
    pub event_id: i64,
    pub ordering_key: String,
    pub state: String,
    pub next_attempt_at: i64,
    pub created_at: i64,
}

impl DeliveryRow {
    pub fn to_wire(&self, kind: &str) -> crate::wire::Delivery {
        crate::wire::Delivery {
            id: self.id,
            event_id: self.event_id,
            kind: kind.to_string(),
            state: self.state.clone(),
            attempts: self.attempts,
            next_attempt_at: (self.state == "pending").then(|| crate::wire::rfc3339(self.next_attempt_at)),
            last_status: self.last_status,
            last_error: self.last_error.clone(),
            created_at: crate::wire::rfc3339(self.created_at),
            delivered_at: self.delivered_at.map(crate::wire::rfc3339),
        }
    }
}

/// Fan out: store these deliveries and move the cursor to `cursor`, in one transaction
/// (so after a crash the fan-out is redone from the old cursor, never half-done).
/// Returns the deliveries' ids, in order.
pub fn fan_out(conn: &mut Conn, new: &[NewDelivery], cursor: i64) -> DbResult<Vec<i64>> {
    let ids = if new.is_empty() {
        Vec::new()
    } else {
        crate::on_backend!(conn, |c| diesel::insert_into(d::table).values(new).returning(d::id).get_results(c))?
    };
    diesel::update(webhook_cursor::table.filter(webhook_cursor::id.eq(1)))
        .set(webhook_cursor::last_event_id.eq(cursor))
        .execute(conn)?;
    Ok(ids)
}

pub fn cursor(conn: &mut Conn) -> DbResult<i64> {
    Ok(webhook_cursor::table.filter(webhook_cursor::id.eq(1)).select(webhook_cursor::last_event_id).get_result(conn)?)
}

/// Every pending delivery, oldest first, with its event's type, time and JSON.
pub fn pending(conn: &mut Conn) -> DbResult<Vec<(DeliveryRow, super::events::EventRow)>> {
    let rows: Vec<DeliveryRow> =
        d::table.filter(d::state.eq("pending")).order(d::id.asc()).select(DeliveryRow::as_select()).load(conn)?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.event_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut events = std::collections::HashMap::new();
    for chunk in ids.chunks(10_000) {
        for e in super::events::get_many(conn, chunk)? {
            events.insert(e.id, e);
        }
    }
    Ok(rows.into_iter().filter_map(|r| Some((events.get(&r.event_id)?.clone(), r))).map(|(e, r)| (r, e)).collect())
}

/// What became of one attempt at a delivery.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub id: i64,
    /// pending (retry at `next_attempt_at`), delivered, failed or dropped.
    pub state: &'static str,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub status: Option<i32>,
    pub error: Option<String>,
    pub at: i64,
}

/// Record many attempts' outcomes in one transaction: deliveries that succeeded at
/// their first attempt (nearly all) with one statement per answer status, the rest one
/// statement each.
pub fn record_attempts(conn: &mut Conn, outcomes: &[AttemptOutcome]) -> DbResult<()> {
    let mut first_try: std::collections::BTreeMap<Option<i32>, Vec<i64>> = Default::default();
    let mut others = Vec::new();
    for o in outcomes {
        if o.state == "delivered" && o.attempts == 1 {
            first_try.entry(o.status).or_default().push(o.id);
        } else {
            others.push(o);
        }
    }
    let at = outcomes.iter().map(|o| o.at).max().unwrap_or(0);
    for (status, ids) in first_try {
        for chunk in ids.chunks(1000) {
            diesel::update(d::table.filter(d::id.eq_any(chunk)))
                .set((
                    d::state.eq("delivered"),
                    d::attempts.eq(1),
                    d::last_status.eq(status),
                    d::last_error.eq(None::<String>),
                    d::delivered_at.eq(Some(at)),
                ))
                .execute(conn)?;
        }
    }
    for o in others {
        diesel::update(d::table.filter(d::id.eq(o.id)))
            .set((
                d::state.eq(o.state),
                d::attempts.eq(o.attempts),
                d::next_attempt_at.eq(o.next_attempt_at),
                d::last_status.eq(o.status),
                d::last_error.eq(o.error.as_deref().map(crate::domain::limits::event_reason)),
                d::delivered_at.eq((o.state == "delivered").then_some(o.at)),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// The backlog was full: these deliveries are given up, and counted on the webhook.
pub fn drop_deliveries(conn: &mut Conn, webhook_id: &str, ids: &[i64]) -> DbResult<()> {
    diesel::update(d::table.filter(d::id.eq_any(ids)).filter(d::state.eq("pending")))
        .set((d::state.eq("dropped"), d::last_error.eq("backlog full: the oldest undelivered events were dropped")))
        .execute(conn)?;
    diesel::update(webhooks::table.filter(webhooks::id.eq(webhook_id)))
        .set(webhooks::dropped.eq(webhooks::dropped + ids.len() as i64))
        .execute(conn)?;
    Ok(())
}

/// A webhook's deliveries, newest first (optionally one state), with their event types.
pub fn deliveries(
    conn: &mut Conn,
    webhook_id: &str,
    state: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> DbResult<Vec<(DeliveryRow, String)>> {
    let mut q = d::table.inner_join(events::table.on(events::id.eq(d::event_id))).into_boxed();
    q = q.filter(d::webhook_id.eq(webhook_id));
    if let Some(s) = state {
        q = q.filter(d::state.eq(s.to_string()));
    }
    if let Some(b) = before {
        q = q.filter(d::id.lt(b));
    }
    Ok(q.order(d::id.desc()).limit(limit).select((DeliveryRow::as_select(), events::kind)).load(conn)?)
}

/// Pending again, due now (an operator's redeliver).
pub fn reset(conn: &mut Conn, webhook_id: &str, id: i64, now: i64) -> DbResult<(DeliveryRow, super::events::EventRow)> {
    let row: DeliveryRow = d::table
        .filter(d::id.eq(id))
        .filter(d::webhook_id.eq(webhook_id))
        .select(DeliveryRow::as_select())
        .get_result(conn)?;
    let event = super::events::get_many(conn, &[row.event_id])?.pop().ok_or_else(|| DbError::Conflict {
        current: None,
        message: format!("event {} of delivery {id} is no longer kept (retention)", row.event_id),
    })?;
    diesel::update(d::table.filter(d::id.eq(id)))
        .set((d::state.eq("pending"), d::next_attempt_at.eq(now), d::delivered_at.eq(None::<i64>)))
        .execute(conn)?;
    let row = d::table.filter(d::id.eq(id)).select(DeliveryRow::as_select()).get_result(conn)?;
    Ok((row, event))
}

/// Forget settled deliveries older than `before` (µs).
pub fn prune(conn: &mut Conn, before: i64) -> DbResult<usize> {
    Ok(diesel::delete(d::table.filter(d::state.ne("pending")).filter(d::created_at.lt(before))).execute(conn)?)
}
