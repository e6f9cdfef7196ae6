//! `EventBus`: fans every event out to the live streams (SSE subscribers) and hands the
//! stored ones to the webhook dispatcher.
//!
//! Stored events arrive from the database writer after their COMMIT, in id order
//! (`EventsCommitted`); transient ones (progress, log lines) from job actors
//! (`PublishTransient`), numbered after the last stored id. Each subscriber has a
//! bounded buffer: a subscriber whose buffer is full is disconnected on the spot (its
//! stream ends with a `stream.dropped` event naming where to resume), so a slow client
//! costs the master one failed `try_send`, never a wait.

use super::event_metrics::EventMetric;
use super::messages::{ConnectWebhooks, EventsCommitted, MetricEvent, MetricRecorded, PublishTransient, Subscribe};
use super::metrics::MetricsActor;
use crate::db::events::EventRow;
use crate::domain::events::{EventFilter, EventId, EventScope, sse_frame};
use crate::error::AppError;
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Events a subscriber may have waiting before it is disconnected.
pub const SUBSCRIBER_BUFFER: usize = 1024;
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 10_000;

/// One event, encoded once for every subscriber.
#[derive(Debug)]
pub struct Published {
    pub id: EventId,
    pub kind: String,
    pub job_id: Option<String>,
    pub parent_id: Option<String>,
    pub node_id: Option<String>,
    /// The whole SSE frame (`id:`, `event:`, `data:`), shared by every subscriber.
    pub frame: actix_web::web::Bytes,
}

impl Published {
    fn scope(&self) -> EventScope<'_> {
        EventScope {
            kind: &self.kind,
            job_id: self.job_id.as_deref(),
            parent_id: self.parent_id.as_deref(),
            node_id: self.node_id.as_deref(),
        }
    }

    pub fn stored(row: &EventRow) -> Published {
        let wire = row.to_wire();
        Published {
            id: EventId::stored(row.id),
            kind: row.kind.clone(),
            job_id: row.job_id.clone(),
            parent_id: row.parent_id.clone(),
            node_id: row.node_id.clone(),
            frame: sse_frame(Some(&wire.id), &wire.kind, &serde_json::to_string(&wire).unwrap_or_default()).into(),
        }
    }
}

/// A live stream's end of the bus.
pub struct Subscription {
    pub events: mpsc::Receiver<Arc<Published>>,
    /// The newest stored event when the subscription began: older ones come from the
    /// outbox, newer ones through `events`.
    pub head: i64,
    /// Set when the bus disconnected this subscriber for falling behind.
    pub lagged: Arc<AtomicBool>,
}

struct Subscriber {
    filter: EventFilter,
    tx: mpsc::Sender<Arc<Published>>,
    lagged: Arc<AtomicBool>,
}

pub struct EventBus {
    head: EventId,
    subscribers: HashMap<u64, Subscriber>,
    next_subscriber: u64,
    max_subscribers: usize,
    /// Graph children's parents, learned from their stored events, so transient events
    /// of a child reach streams filtered by its parent.
    parents: HashMap<String, String>,
    webhooks: Option<Recipient<EventsCommitted>>,
    metrics: Addr<MetricsActor>,
}

impl EventBus {
    pub fn new(metrics: Addr<MetricsActor>, max_subscribers: usize) -> Self {
        EventBus {
            head: EventId::default(),
            subscribers: HashMap::new(),
            next_subscriber: 0,
            max_subscribers: max_subscribers.max(1),
            parents: HashMap::new(),
            webhooks: None,
            metrics,
        }
    }

    fn fan_out(&mut self, event: Arc<Published>) {
        let mut gone = Vec::new();
        for (key, s) in &self.subscribers {
            if !s.filter.matches(&event.scope()) {
                continue;
            }
            match s.tx.try_send(event.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.lagged.store(true, Ordering::Release);
                    self.metrics.do_send(MetricRecorded(MetricEvent::Events(EventMetric::SubscriberDropped)));
                    gone.push(*key);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*key),
            }
        }
        if !gone.is_empty() {
            for key in gone {
                self.subscribers.remove(&key);
            }
            self.count_subscribers();
        }
    }

    fn count_subscribers(&self) {
        let n = self.subscribers.len();
        self.metrics.do_send(MetricRecorded(MetricEvent::Events(EventMetric::Subscribers(n))));
    }
}

impl Actor for EventBus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Streams that ended without an event since are noticed here.
        ctx.run_interval(Duration::from_secs(5), |act, _| {
            let before = act.subscribers.len();
            act.subscribers.retain(|_, s| !s.tx.is_closed());
            if act.subscribers.len() != before {
                act.count_subscribers();
            }
        });
    }
}

impl Handler<EventsCommitted> for EventBus {
    type Result = ();

    fn handle(&mut self, EventsCommitted(rows): EventsCommitted, _: &mut Context<Self>) {
        for row in rows.iter() {
            if let (Some(job), Some(parent)) = (&row.job_id, &row.parent_id) {
                if row.kind == "job.completed" || row.kind == "job.failed" || row.kind == "job.canceled" {
                    self.parents.remove(job);
                } else {
                    self.parents.insert(job.clone(), parent.clone());
                }
            }
            self.head = EventId::stored(row.id.max(self.head.stored));
            if !self.subscribers.is_empty() {
                self.fan_out(Arc::new(Published::stored(row)));
            }
        }
        let stored = rows.len();
        self.metrics.do_send(MetricRecorded(MetricEvent::Events(EventMetric::Published { stored, transient: 0 })));
        if let Some(w) = &self.webhooks {
            w.do_send(EventsCommitted(rows));
        }
    }
}

impl Handler<PublishTransient> for EventBus {
    type Result = ();

    fn handle(&mut self, m: PublishTransient, _: &mut Context<Self>) {
        self.head.transient = self.head.transient.saturating_add(1);
        self.metrics.do_send(MetricRecorded(MetricEvent::Events(EventMetric::Published { stored: 0, transient: 1 })));
        if self.subscribers.is_empty() {
            return;
        }
        let parent_id = self.parents.get(&m.job_id).cloned();
        let wire = crate::wire::Event {
            id: self.head.to_string(),
            kind: m.kind.to_string(),
            at: crate::wire::rfc3339(crate::db::now_micros()),
            job_id: Some(m.job_id.clone()),
            parent_id: parent_id.clone(),
            node_id: m.node_id.clone(),
            data: m.data,
        };
        let frame = sse_frame(Some(&wire.id), &wire.kind, &serde_json::to_string(&wire).unwrap_or_default());
        self.fan_out(Arc::new(Published {
            id: self.head,
            kind: wire.kind,
            job_id: Some(m.job_id),
            parent_id,
            node_id: m.node_id,
            frame: frame.into(),
        }));
    }
}

impl Handler<Subscribe> for EventBus {
    type Result = Result<Subscription, AppError>;

    fn handle(&mut self, Subscribe(filter): Subscribe, _: &mut Context<Self>) -> Self::Result {
        self.subscribers.retain(|_, s| !s.tx.is_closed());
        if self.subscribers.len() >= self.max_subscribers {
            return Err(AppError::Unavailable {
                code: "too_many_streams",
                message: format!(
                    "{} event streams are open, the most this master serves (--max-event-streams)",
                    self.subscribers.len()
                ),
            });
        }
        let (tx, events) = mpsc::channel(SUBSCRIBER_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        self.next_subscriber += 1;
        self.subscribers.insert(self.next_subscriber, Subscriber { filter, tx, lagged: lagged.clone() });
        self.count_subscribers();
        Ok(Subscription { events, head: self.head.stored, lagged })
    }
}

impl Handler<ConnectWebhooks> for EventBus {
    type Result = ();

    fn handle(&mut self, ConnectWebhooks(to): ConnectWebhooks, _: &mut Context<Self>) {
        self.webhooks = Some(to);
    }
}
