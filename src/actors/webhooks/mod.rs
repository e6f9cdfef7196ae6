//! `WebhookDispatcher`: owns the webhook subscriptions and delivers the outbox to them.
//!
//! Committed events (from the event bus) are fanned out into delivery rows in one
//! write that also moves the fan-out cursor, so a crash redoes a fan-out, never loses
//! one. Each (webhook, job) pair is a FIFO queue with at most one attempt in flight:
//! one job's events arrive in order, different jobs' in parallel (up to
//! `concurrency` per webhook). 2xx settles a delivery, 410 ends the subscription, any
//! other answer is retried with exponential backoff and jitter until the retry window
//! is spent. Outcomes are written in batches, after the fact: a crash before they are
//! written sends those deliveries again (at least once). Nothing here waits on a
//! receiver except its own queue, and each webhook's backlog is bounded (the oldest
//! pending deliveries are dropped and counted).

mod fan_out;

use super::db_executor::Db;
use super::event_metrics::EventMetric;
use super::messages::{
    CreateWebhook, DeleteWebhook, EventsCommitted, MetricEvent, MetricRecorded, Redeliver, WebhookStored,
};
use super::metrics::MetricsActor;
use crate::db::events::{self as db_events, EventRow};
use crate::db::webhooks::{self as db_webhooks, AttemptOutcome, WebhookRow};
use crate::db::{DbError, now_micros};
use crate::domain::allow::HostPattern;
use crate::domain::events::{
    Answer, EventFilter, HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_SIGNATURE, classify_answer, retry_delay,
    signature_header, webhook_destination,
};
use crate::error::{AppError, AppResult};
use actix::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// First retry waits about this long; each further one doubles it (at most 1 h).
    pub retry_base: Duration,
    /// A delivery still failing this long after its event is given up (`failed`).
    pub retry_window: Duration,
    /// Pending deliveries per webhook before the oldest are dropped.
    pub max_backlog: usize,
    /// Attempts in flight per webhook.
    pub concurrency: usize,
    pub timeout: Duration,
    /// `--webhook-allow`: receiver hosts allowed (an internal address only when named exactly).
    pub allow: Vec<HostPattern>,
    /// Events and settled deliveries are kept this long.
    pub retention: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            retry_base: Duration::from_secs(5),
            retry_window: Duration::from_secs(24 * 3600),
            max_backlog: 100_000,
            concurrency: 64,
            timeout: Duration::from_secs(10),
            allow: Vec::new(),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Is this webhook URL a destination the operator allows? Resolves its host: one that
/// is (or resolves to) a loopback, private or link-local address must be named exactly
/// in `--webhook-allow`, never reached through a wildcard.
pub async fn check_destination(url: &str, allow: &[HostPattern]) -> Result<(), String> {
    let (host, port) = webhook_destination(url)?;
    crate::domain::allow::check_destination("webhook", &host, port, allow, "--webhook-allow")?;
    let addrs = crate::os::resolve_host(&host, port).await;
    crate::domain::media::check_host("webhook", "--webhook-allow", &host, port, &addrs, allow)
}

/// One delivery waiting in its queue.
struct Pending {
    id: i64,
    event_id: i64,
    kind: Arc<str>,
    event_at: i64,
    body: Arc<str>,
    attempts: i32,
    next_at: i64,
}

struct Hook {
    row: WebhookRow,
    filter: EventFilter,
    /// Pending deliveries by id → their ordering key (the oldest first).
    pending: BTreeMap<i64, String>,
    in_flight: usize,
    /// Queues that had a due delivery while the webhook was at its concurrency.
    starved: VecDeque<String>,
    /// The last destination check (re-run every minute: DNS may change).
    checked: Option<(Instant, Result<(), String>)>,
}

type QueueKey = (String, String);

pub struct WebhookDispatcher {
    db: Db,
    metrics: Addr<MetricsActor>,
    cfg: WebhookConfig,
    client: Option<awc::Client>,
    hooks: HashMap<String, Hook>,
    queues: HashMap<QueueKey, VecDeque<Pending>>,
    busy: HashSet<QueueKey>,
    /// Highest event id whose fan-out has started; everything up to it is decided.
    fanned_to: i64,
    /// Committed events waiting for the fan-out in flight (or for the start-up load).
    backlog: VecDeque<Arc<Vec<EventRow>>>,
    fanning: bool,
    /// Caught up with the outbox (start-up's reading is over).
    loaded: bool,
    /// The fan-out cursor as stored, and when it was last written alone.
    stored_cursor: i64,
    cursor_written: Option<Instant>,
    outcomes: Vec<AttemptOutcome>,
    writing: bool,
}

impl WebhookDispatcher {
    pub fn new(db: Db, metrics: Addr<MetricsActor>, cfg: WebhookConfig) -> Self {
        WebhookDispatcher {
            db,
            metrics,
            cfg,
            client: None,
            hooks: HashMap::new(),
            queues: HashMap::new(),
            busy: HashSet::new(),
            fanned_to: 0,
            backlog: VecDeque::new(),
            fanning: false,
            loaded: false,
            stored_cursor: 0,
            cursor_written: None,
            outcomes: Vec::new(),
            writing: false,
        }
    }

    fn metric(&self, m: EventMetric) {
        self.metrics.do_send(MetricRecorded(MetricEvent::Events(m)));
    }

    fn report_pending(&self) {
        self.metric(EventMetric::Pending(self.hooks.values().map(|h| h.pending.len()).sum()));
    }

    fn add_hook(&mut self, row: WebhookRow) {
        let filter = row.filter();
        let hook =
            Hook { row, filter, pending: BTreeMap::new(), in_flight: 0, starved: VecDeque::new(), checked: None };
        self.hooks.insert(hook.row.id.clone(), hook);
    }

    /// Put a delivery at the end of its queue.
    fn enqueue(&mut self, hook_id: &str, key: String, p: Pending) {
        let Some(hook) = self.hooks.get_mut(hook_id) else { return };
        hook.pending.insert(p.id, key.clone());
        self.queues.entry((hook_id.to_string(), key)).or_default().push_back(p);
    }

    /// Send the front of this queue if it is due, idle and its webhook has room.
    fn pump(&mut self, key: &QueueKey, ctx: &mut Context<Self>) {
        if self.busy.contains(key) {
            return;
        }
        let now = now_micros();
        let Some(front) = self.queues.get(key).and_then(|q| q.front()) else {
            self.queues.remove(key);
            return;
        };
        if front.next_at > now {
            return;
        }
        let Some(hook) = self.hooks.get_mut(&key.0) else { return };
        if hook.in_flight >= self.cfg.concurrency.max(1) {
            if !hook.starved.contains(&key.1) {
                hook.starved.push_back(key.1.clone());
            }
            return;
        }
        let Some(client) = self.client.clone() else { return };
        hook.in_flight += 1;
        self.busy.insert(key.clone());
        let (url, secret) = (hook.row.url.clone(), hook.row.secret.clone());
        let (body, kind, event_id) = (front.body.clone(), front.kind.clone(), front.event_id);
        let check = match &hook.checked {
            Some((at, verdict)) if at.elapsed() < Duration::from_secs(60) => Some(verdict.clone()),
            _ => None,
        };
        let allow = self.cfg.allow.clone();
        let send = async move {
            let verdict = match check {
                Some(v) => v,
                None => check_destination(&url, &allow).await,
            };
            if let Err(why) = verdict.clone() {
                return (verdict, Err(why));
            }
            let ts = chrono::Utc::now().timestamp();
            let answer = client
                .post(&*url)
                .insert_header(("content-type", "application/json"))
                .insert_header(("user-agent", concat!("ffrtmp-webhooks/", env!("CARGO_PKG_VERSION"))))
                .insert_header((HEADER_EVENT_ID, event_id.to_string()))
                .insert_header((HEADER_EVENT_TYPE, kind.as_ref()))
                .insert_header((HEADER_SIGNATURE, signature_header(&secret, ts, body.as_bytes())))
                .send_body(body.to_string())
                .await;
            let result = match answer {
                Ok(mut resp) => {
                    // Read (a bounded part of) the body so the connection can be reused.
                    let _ = resp.body().limit(64 * 1024).await;
                    Ok(resp.status().as_u16())
                }
                Err(e) => Err(e.to_string()),
            };
            (verdict, result)
        };
        let key = key.clone();
        ctx.spawn(send.into_actor(self).map(move |(verdict, result), act, ctx| {
            if let Some(h) = act.hooks.get_mut(&key.0) {
                h.checked = Some((Instant::now(), verdict));
            }
            act.settle(&key, result, ctx);
        }));
    }

    /// The answer to the attempt at the front of `key`'s queue.
    fn settle(&mut self, key: &QueueKey, result: Result<u16, String>, ctx: &mut Context<Self>) {
        self.busy.remove(key);
        if let Some(h) = self.hooks.get_mut(&key.0) {
            h.in_flight = h.in_flight.saturating_sub(1);
        }
        let now = now_micros();
        let answer = match &result {
            Ok(status) => classify_answer(*status),
            Err(_) => Answer::Retry,
        };
        if answer == Answer::Unsubscribe {
            self.unsubscribe(&key.0, ctx);
            return;
        }
        let Some(q) = self.queues.get_mut(key) else { return };
        let Some(front) = q.front_mut() else { return };
        front.attempts += 1;
        let (status, error) = match &result {
            Ok(s) => (Some(*s as i32), (answer != Answer::Delivered).then(|| format!("receiver answered {s}"))),
            Err(e) => (None, Some(e.clone())),
        };
        let delay = retry_delay(self.cfg.retry_base, front.attempts as u32, fastrand::f64());
        let retry_at = now + delay.as_micros() as i64;
        let state = match answer {
            Answer::Delivered => "delivered",
            _ if retry_at - front.event_at > self.cfg.retry_window.as_micros() as i64 => "failed",
            _ => "pending",
        };
        self.outcomes.push(AttemptOutcome {
            id: front.id,
            state,
            attempts: front.attempts,
            next_attempt_at: retry_at,
            status,
            error,
            at: now,
        });
        match state {
            "pending" => {
                front.next_at = retry_at;
                self.metrics.do_send(MetricRecorded(MetricEvent::Events(EventMetric::Retried)));
            }
            settled => {
                let p = q.pop_front().expect("the front exists");
                if settled == "delivered" {
                    let m = EventMetric::Delivered { seconds: (now - p.event_at) as f64 / 1e6 };
                    self.metrics.do_send(MetricRecorded(MetricEvent::Events(m)));
                } else {
                    log::warn!("webhook {}: event {} undelivered after its retry window", key.0, p.event_id);
                    self.metrics.do_send(MetricRecorded(MetricEvent::Events(EventMetric::Failed)));
                }
                if let Some(h) = self.hooks.get_mut(&key.0) {
                    h.pending.remove(&p.id);
                }
                if q.is_empty() {
                    self.queues.remove(key);
                }
            }
        }
        self.write_outcomes(ctx);
        self.pump(key, ctx);
        // Room freed on this webhook: queues that waited for it go next.
        while let Some(next) = self.hooks.get_mut(&key.0).and_then(|h| h.starved.pop_front()) {
            let k = (key.0.clone(), next);
            self.pump(&k, ctx);
            if self.hooks.get(&key.0).is_none_or(|h| h.in_flight >= self.cfg.concurrency.max(1)) {
                break;
            }
        }
    }

    /// Outcomes are written in batches: one write in flight, the rest wait for it.
    fn write_outcomes(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.outcomes.is_empty() {
            return;
        }
        self.writing = true;
        let batch = std::mem::take(&mut self.outcomes);
        let db = self.db.clone();
        ctx.spawn(
            async move { db.write(move |c| db_webhooks::record_attempts(c, &batch)).await }.into_actor(self).map(
                |res, act, ctx| {
                    act.writing = false;
                    if let Err(e) = res {
                        log::warn!("webhook outcomes not recorded (they will be sent again): {e}");
                    }
                    act.report_pending();
                    act.write_outcomes(ctx);
                },
            ),
        );
    }

    /// The receiver answered 410 Gone: the subscription ends, its backlog is dropped.
    fn unsubscribe(&mut self, hook_id: &str, ctx: &mut Context<Self>) {
        let Some(hook) = self.hooks.remove(hook_id) else { return };
        log::info!("webhook {hook_id} ({}) answered 410 Gone: unsubscribed", hook.row.url);
        self.queues.retain(|(h, _), _| h != hook_id);
        self.busy.retain(|(h, _)| h != hook_id);
        self.metric(EventMetric::Dropped(hook.pending.len() as u64));
        self.report_pending();
        let (db, id) = (self.db.clone(), hook_id.to_string());
        ctx.spawn(
            async move {
                db.write(move |c| db_webhooks::disable(c, &id, "the receiver answered 410 Gone", now_micros())).await
            }
            .into_actor(self)
            .map(|res, _, _| {
                if let Err(e) = res {
                    log::warn!("unsubscription not recorded: {e}");
                }
            }),
        );
    }

    /// Every 100 ms: retries that came due, and the stored cursor.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = now_micros();
        let due: Vec<QueueKey> = self
            .queues
            .iter()
            .filter(|(k, q)| !self.busy.contains(*k) && q.front().is_some_and(|p| p.next_at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.pump(&k, ctx);
        }
        self.store_cursor(ctx);
    }

    fn prune(&mut self, ctx: &mut Context<Self>) {
        let before = now_micros() - self.cfg.retention.as_micros() as i64;
        let db = self.db.clone();
        ctx.spawn(
            async move { db.write(move |c| Ok((db_webhooks::prune(c, before)?, db_events::prune(c, before)?))).await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok((0, 0)) => {}
                    Ok((d, e)) => {
                        log::info!("event retention removed {e} events and {d} settled deliveries");
                        if e == db_events::PRUNE_BATCH {
                            // More to forget: another pass, behind the writes queued meanwhile.
                            act.prune(ctx);
                        }
                    }
                    Err(e) => log::warn!("event retention failed: {e}"),
                }),
        );
    }
}

impl Actor for WebhookDispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match crate::api_client::tls_config(None) {
            Ok(tls) => {
                let connector = awc::Connector::new()
                    .rustls_0_23(Arc::new(tls))
                    .limit(self.cfg.concurrency.max(1) * 4)
                    .timeout(self.cfg.timeout);
                // Redirects are not followed: a receiver could point one at an internal host.
                self.client = Some(
                    awc::Client::builder().timeout(self.cfg.timeout).disable_redirects().connector(connector).finish(),
                );
            }
            Err(e) => log::error!("webhooks disabled: no TLS configuration ({e})"),
        }
        let db = self.db.clone();
        let load = async move {
            let hooks = db.read(db_webhooks::active).await?;
            let pending = db.read(db_webhooks::pending).await?;
            Ok::<_, DbError>((hooks, pending))
        };
        ctx.wait(load.into_actor(self).map(|res, act, ctx| {
            match res {
                Ok((hooks, pending)) => {
                    for h in hooks {
                        act.add_hook(h);
                    }
                    let n = pending.len();
                    for (d, e) in pending {
                        let p = Pending {
                            id: d.id,
                            event_id: e.id,
                            kind: Arc::from(e.kind.as_str()),
                            event_at: e.at,
                            body: Arc::from(serde_json::to_string(&e.to_wire()).unwrap_or_default()),
                            attempts: d.attempts,
                            next_at: d.next_attempt_at,
                        };
                        act.enqueue(&d.webhook_id, d.ordering_key, p);
                    }
                    if n > 0 {
                        log::info!("{n} webhook deliveries pending from before the restart");
                    }
                    act.report_pending();
                }
                Err(e) => log::error!("webhook subscriptions not loaded: {e}"),
            }
            act.reload_from_outbox(ctx);
            act.tick(ctx);
        }));
        ctx.run_interval(Duration::from_millis(100), |act, ctx| act.tick(ctx));
        ctx.run_interval(Duration::from_secs(600), |act, ctx| act.prune(ctx));
    }
}

impl Handler<EventsCommitted> for WebhookDispatcher {
    type Result = ();

    fn handle(&mut self, EventsCommitted(rows): EventsCommitted, ctx: &mut Context<Self>) {
        self.backlog.push_back(rows);
        self.fan_out_next(ctx);
    }
}

impl Handler<CreateWebhook> for WebhookDispatcher {
    type Result = ResponseActFuture<Self, AppResult<crate::wire::Webhook>>;

    fn handle(&mut self, CreateWebhook(row): CreateWebhook, _: &mut Context<Self>) -> Self::Result {
        let db = self.db.clone();
        Box::pin(async move { db.write(move |c| db_webhooks::create(c, row)).await }.into_actor(self).map(
            |res, act, ctx| {
                let row = res?;
                let wire = row.to_wire([0; 3]);
                let id = row.id.clone();
                act.add_hook(row);
                act.catch_up(id, ctx);
                Ok(wire)
            },
        ))
    }
}

impl Handler<WebhookStored> for WebhookDispatcher {
    type Result = ();

    fn handle(&mut self, WebhookStored(row): WebhookStored, ctx: &mut Context<Self>) {
        let id = row.id.clone();
        self.add_hook(row);
        self.catch_up(id, ctx);
    }
}

impl Handler<DeleteWebhook> for WebhookDispatcher {
    type Result = ResponseActFuture<Self, AppResult<()>>;

    fn handle(&mut self, DeleteWebhook(id): DeleteWebhook, _: &mut Context<Self>) -> Self::Result {
        let db = self.db.clone();
        let key = id.clone();
        Box::pin(async move { db.write(move |c| db_webhooks::delete(c, &key)).await }.into_actor(self).map(
            move |res, act, _| {
                match res {
                    Err(DbError::NotFound) => return Err(webhook_not_found(&id)),
                    r => r?,
                }
                act.hooks.remove(&id);
                act.queues.retain(|(h, _), _| *h != id);
                act.busy.retain(|(h, _)| *h != id);
                act.report_pending();
                Ok(())
            },
        ))
    }
}

impl Handler<Redeliver> for WebhookDispatcher {
    type Result = ResponseActFuture<Self, AppResult<crate::wire::Delivery>>;

    fn handle(&mut self, m: Redeliver, _: &mut Context<Self>) -> Self::Result {
        if !self.hooks.contains_key(&m.webhook_id) {
            let missing = webhook_not_found(&m.webhook_id);
            let (db, id) = (self.db.clone(), m.webhook_id.clone());
            // A known but unsubscribed webhook is a conflict, not a 404.
            return Box::pin(async move { db.read(move |c| db_webhooks::get(c, &id)).await }.into_actor(self).map(
                move |res, _, _| match res {
                    Ok(row) => Err(AppError::Conflict {
                        code: "webhook_disabled",
                        message: format!(
                            "webhook {} is disabled ({}); create a new subscription",
                            row.id,
                            row.disabled_reason.unwrap_or_default()
                        ),
                    }),
                    Err(_) => Err(missing),
                },
            ));
        }
        let db = self.db.clone();
        let (hook, id) = (m.webhook_id.clone(), m.delivery_id);
        Box::pin(
            async move { db.write(move |c| db_webhooks::reset(c, &hook, id, now_micros())).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let (row, event) = match res {
                        Err(DbError::NotFound) => {
                            return Err(AppError::NotFound {
                                code: "delivery_not_found",
                                message: format!("webhook {} has no delivery {}", m.webhook_id, m.delivery_id),
                            });
                        }
                        r => r?,
                    };
                    let key = (row.webhook_id.clone(), row.ordering_key.clone());
                    let queued = act.queues.get(&key).is_some_and(|q| q.iter().any(|p| p.id == row.id));
                    if !queued {
                        let p = Pending {
                            id: row.id,
                            event_id: event.id,
                            kind: Arc::from(event.kind.as_str()),
                            event_at: now_micros(),
                            body: Arc::from(serde_json::to_string(&event.to_wire()).unwrap_or_default()),
                            attempts: row.attempts,
                            next_at: row.next_attempt_at,
                        };
                        act.enqueue(&row.webhook_id, row.ordering_key.clone(), p);
                    } else if let Some(p) = act.queues.get_mut(&key).and_then(|q| q.iter_mut().find(|p| p.id == row.id))
                    {
                        p.next_at = row.next_attempt_at;
                    }
                    act.report_pending();
                    act.pump(&key, ctx);
                    Ok(row.to_wire(&event.kind))
                }),
        )
    }
}

pub fn webhook_not_found(id: &str) -> AppError {
    AppError::NotFound { code: "webhook_not_found", message: format!("no webhook with id '{id}'") }
}
