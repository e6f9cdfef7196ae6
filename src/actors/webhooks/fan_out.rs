//! The dispatcher's fan-out: committed outbox events become stored deliveries (and the
//! cursor moves in the same write), read back from the outbox at start-up or after a
//! failed write, given to a webhook created while fan-outs were in flight, and bounded
//! per webhook (the oldest pending ones dropped).

use super::{Pending, WebhookDispatcher};
use crate::actors::event_metrics::EventMetric;
use crate::db::events::{self as db_events, EventRow};
use crate::db::webhooks::{self as db_webhooks, NewDelivery};
use crate::db::{DbError, now_micros};
use actix::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl WebhookDispatcher {
    /// Fan out the next batch of committed events (one write in flight at a time).
    pub(super) fn fan_out_next(&mut self, ctx: &mut Context<Self>) {
        while self.loaded && !self.fanning && !self.backlog.is_empty() {
            let mut events: Vec<EventRow> = Vec::new();
            while let Some(batch) = self.backlog.pop_front() {
                events.extend(batch.iter().filter(|e| e.id > self.fanned_to).cloned());
                if events.len() >= 2000 {
                    break;
                }
            }
            if !events.is_empty() {
                self.fan_out_events(events, ctx);
            }
        }
    }

    pub(super) fn fan_out_events(&mut self, events: Vec<EventRow>, ctx: &mut Context<Self>) {
        let until = events.last().map(|e| e.id).unwrap_or(self.fanned_to);
        self.fanned_to = until;
        let plan = self.plan(&events, None);
        if plan.is_empty() && self.loaded {
            // Nothing to deliver: the stored cursor catches up on the next tick.
            return;
        }
        self.fanning = true;
        self.store_deliveries(plan, Some(until), ctx);
    }

    /// With nothing to deliver, the stored cursor follows at most once a second.
    pub(super) fn store_cursor(&mut self, ctx: &mut Context<Self>) {
        if self.fanning || !self.loaded || self.fanned_to <= self.stored_cursor {
            return;
        }
        if self.cursor_written.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.cursor_written = Some(Instant::now());
        self.fanning = true;
        self.store_deliveries(Vec::new(), Some(self.fanned_to), ctx);
    }

    /// The deliveries these events make: to every active webhook whose filter admits
    /// them (or only to `only`).
    pub(super) fn plan(&self, events: &[EventRow], only: Option<&str>) -> Vec<(NewDelivery, Pending)> {
        let now = now_micros();
        let mut out = Vec::new();
        for e in events {
            let mut body: Option<Arc<str>> = None;
            let mut kind: Option<Arc<str>> = None;
            for (id, hook) in &self.hooks {
                if only.is_some_and(|o| o != id) || e.id <= hook.row.start_after || !hook.filter.matches(&e.scope()) {
                    continue;
                }
                let body = body
                    .get_or_insert_with(|| Arc::from(serde_json::to_string(&e.to_wire()).unwrap_or_default()))
                    .clone();
                let kind = kind.get_or_insert_with(|| Arc::from(e.kind.as_str())).clone();
                let key = e.job_id.clone().or_else(|| e.node_id.clone()).unwrap_or_default();
                out.push((
                    NewDelivery {
                        webhook_id: id.clone(),
                        event_id: e.id,
                        ordering_key: key,
                        state: "pending".into(),
                        next_attempt_at: now,
                        created_at: e.at,
                    },
                    Pending { id: 0, event_id: e.id, kind, event_at: e.at, body, attempts: 0, next_at: now },
                ));
            }
        }
        out
    }

    /// Store planned deliveries (and move the cursor, for a fan-out), then queue them.
    pub(super) fn store_deliveries(
        &mut self,
        plan: Vec<(NewDelivery, Pending)>,
        cursor: Option<i64>,
        ctx: &mut Context<Self>,
    ) {
        let rows: Vec<NewDelivery> = plan.iter().map(|(n, _)| n.clone()).collect();
        let db = self.db.clone();
        let write = async move {
            db.write(move |c| {
                let cursor = match cursor {
                    Some(c) => c,
                    None => db_webhooks::cursor(c)?,
                };
                db_webhooks::fan_out(c, &rows, cursor)
            })
            .await
        };
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            if let Some(c) = cursor {
                act.fanning = false;
                if res.is_ok() {
                    act.stored_cursor = act.stored_cursor.max(c);
                }
            }
            match res {
                Ok(ids) => {
                    let mut touched = Vec::new();
                    for ((new, mut p), id) in plan.into_iter().zip(ids) {
                        p.id = id;
                        touched.push((new.webhook_id.clone(), new.ordering_key.clone()));
                        act.enqueue(&new.webhook_id, new.ordering_key, p);
                    }
                    act.enforce_backlogs(ctx);
                    act.report_pending();
                    for key in touched {
                        act.pump(&key, ctx);
                    }
                }
                Err(e) => {
                    // Not stored, so not fanned out: go over these events again.
                    log::warn!("webhook fan-out not stored ({e}); retrying from the outbox");
                    if cursor.is_some() {
                        ctx.run_later(Duration::from_secs(1), |act, ctx| act.reload_from_outbox(ctx));
                    }
                    return;
                }
            }
            if act.loaded {
                act.fan_out_next(ctx);
            } else if cursor.is_some() {
                act.read_page(ctx);
            }
        }));
    }

    /// Read the outbox from the stored cursor up to now (start-up, or after a failed
    /// fan-out) and fan it out, a page at a time; live events wait meanwhile.
    pub(super) fn reload_from_outbox(&mut self, ctx: &mut Context<Self>) {
        self.loaded = false;
        let db = self.db.clone();
        ctx.spawn(async move { db.read(db_webhooks::cursor).await }.into_actor(self).map(|res, act, ctx| match res {
            Ok(cursor) => {
                act.fanned_to = cursor;
                act.stored_cursor = cursor;
                act.read_page(ctx);
            }
            Err(e) => {
                log::warn!("webhook dispatcher cannot read its cursor ({e}); trying again in 5 s");
                ctx.run_later(Duration::from_secs(5), |act, ctx| act.reload_from_outbox(ctx));
            }
        }));
    }

    pub(super) fn read_page(&mut self, ctx: &mut Context<Self>) {
        let (db, after) = (self.db.clone(), self.fanned_to);
        ctx.spawn(async move { db.read(move |c| db_events::after(c, after, 2000)).await }.into_actor(self).map(
            |res, act, ctx| match res {
                Ok(page) if page.is_empty() => {
                    act.loaded = true;
                    act.fan_out_next(ctx);
                }
                Ok(page) => act.fan_out_events(page, ctx),
                Err(e) => {
                    log::warn!("webhook dispatcher cannot read the outbox ({e}); trying again in 5 s");
                    ctx.run_later(Duration::from_secs(5), |act, ctx| act.reload_from_outbox(ctx));
                }
            },
        ));
    }

    /// A webhook stored after some events past its start were already fanned out:
    /// give it those events.
    pub(super) fn catch_up(&mut self, hook_id: String, ctx: &mut Context<Self>) {
        let Some(start) = self.hooks.get(&hook_id).map(|h| h.row.start_after) else { return };
        let until = self.fanned_to;
        if until <= start {
            return;
        }
        let db = self.db.clone();
        let read = async move {
            let mut events = Vec::new();
            let mut after = start;
            while after < until {
                let page = db.read(move |c| db_events::after(c, after, 5000)).await?;
                let Some(last) = page.last() else { break };
                after = last.id;
                events.extend(page.into_iter().filter(|e| e.id <= until));
            }
            Ok::<_, DbError>(events)
        };
        ctx.spawn(read.into_actor(self).map(move |res, act, ctx| match res {
            Ok(events) => {
                let plan = act.plan(&events, Some(&hook_id));
                if !plan.is_empty() {
                    act.store_deliveries(plan, None, ctx);
                }
            }
            Err(e) => log::warn!("webhook {hook_id}: events before its start not read: {e}"),
        }));
    }

    /// Drop the oldest pending deliveries of webhooks over their backlog bound.
    pub(super) fn enforce_backlogs(&mut self, ctx: &mut Context<Self>) {
        let max = self.cfg.max_backlog.max(1);
        let mut dropped: Vec<(String, Vec<i64>)> = Vec::new();
        for (hook_id, hook) in self.hooks.iter_mut() {
            let mut ids = Vec::new();
            let mut candidates =
                hook.pending.iter().map(|(id, key)| (*id, key.clone())).collect::<Vec<_>>().into_iter();
            while hook.pending.len() > max {
                let Some((id, key)) = candidates.next() else { break };
                let qk = (hook_id.clone(), key);
                let Some(q) = self.queues.get_mut(&qk) else { continue };
                // The front of a busy queue is in flight: leave it to its answer.
                let in_flight = self.busy.contains(&qk) && q.front().is_some_and(|p| p.id == id);
                if in_flight {
                    continue;
                }
                q.retain(|p| p.id != id);
                if q.is_empty() && !self.busy.contains(&qk) {
                    self.queues.remove(&qk);
                }
                hook.pending.remove(&id);
                ids.push(id);
            }
            if !ids.is_empty() {
                hook.row.dropped += ids.len() as i64;
                dropped.push((hook_id.clone(), ids));
            }
        }
        for (hook_id, ids) in dropped {
            log::warn!("webhook {hook_id}: backlog over {max}; dropped the {} oldest undelivered events", ids.len());
            self.metric(EventMetric::Dropped(ids.len() as u64));
            let db = self.db.clone();
            ctx.spawn(
                async move { db.write(move |c| db_webhooks::drop_deliveries(c, &hook_id, &ids)).await }
                    .into_actor(self)
                    .map(|res, _, _| {
                        if let Err(e) = res {
                            log::warn!("dropped deliveries not recorded: {e}");
                        }
                    }),
            );
        }
    }
}
