//! The event stream's and the webhooks' collectors, registered in the `MetricsActor`'s
//! registry and fed by its `MetricEvent::Events`.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// What the event bus and the webhook dispatcher report.
#[derive(Debug, Clone)]
pub enum EventMetric {
    /// Events published (stored and transient).
    Published { stored: usize, transient: usize },
    /// SSE subscribers connected now.
    Subscribers(usize),
    /// A subscriber too slow for its buffer was disconnected.
    SubscriberDropped,
    /// A delivery was answered 2xx, this long after its event happened.
    Delivered { seconds: f64 },
    /// An attempt failed and will be retried.
    Retried,
    /// A delivery ran out of its retry window.
    Failed,
    /// Deliveries given up unsent (backlog full, or the receiver unsubscribed).
    Dropped(u64),
    /// Deliveries waiting now, over every webhook.
    Pending(usize),
}

pub struct EventMetrics {
    published: IntCounterVec,
    subscribers: IntGauge,
    subscribers_dropped: IntCounter,
    deliveries: IntCounterVec,
    pending: IntGauge,
    latency: Histogram,
}

impl EventMetrics {
    pub fn register(r: &Registry) -> EventMetrics {
        let published = IntCounterVec::new(
            Opts::new("ffrtmp_events_published_total", "Events published, stored (outbox) or transient"),
            &["kind"],
        )
        .unwrap();
        let subscribers = IntGauge::new("ffrtmp_event_subscribers", "Server-Sent Events streams open now").unwrap();
        let subscribers_dropped = IntCounter::new(
            "ffrtmp_event_subscribers_dropped_total",
            "Event streams disconnected because the client fell behind its buffer",
        )
        .unwrap();
        let deliveries = IntCounterVec::new(
            Opts::new(
                "ffrtmp_webhook_deliveries_total",
                "Webhook delivery outcomes: delivered, retried (an attempt failed), failed (retry window spent), dropped",
            ),
            &["outcome"],
        )
        .unwrap();
        let pending = IntGauge::new("ffrtmp_webhook_deliveries_pending", "Webhook deliveries waiting now").unwrap();
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "ffrtmp_webhook_delivery_latency_seconds",
                "From an event's change to the receiver's 2xx answer",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0]),
        )
        .unwrap();
        r.register(Box::new(published.clone())).expect("unique");
        r.register(Box::new(subscribers.clone())).expect("unique");
        r.register(Box::new(subscribers_dropped.clone())).expect("unique");
        r.register(Box::new(deliveries.clone())).expect("unique");
        r.register(Box::new(pending.clone())).expect("unique");
        r.register(Box::new(latency.clone())).expect("unique");
        for kind in ["stored", "transient"] {
            published.with_label_values(&[kind]);
        }
        for outcome in ["delivered", "retried", "failed", "dropped"] {
            deliveries.with_label_values(&[outcome]);
        }
        EventMetrics { published, subscribers, subscribers_dropped, deliveries, pending, latency }
    }

    pub fn record(&self, m: EventMetric) {
        match m {
            EventMetric::Published { stored, transient } => {
                self.published.with_label_values(&["stored"]).inc_by(stored as u64);
                self.published.with_label_values(&["transient"]).inc_by(transient as u64);
            }
            EventMetric::Subscribers(n) => self.subscribers.set(n as i64),
            EventMetric::SubscriberDropped => self.subscribers_dropped.inc(),
            EventMetric::Delivered { seconds } => {
                self.deliveries.with_label_values(&["delivered"]).inc();
                self.latency.observe(seconds.max(0.0));
            }
            EventMetric::Retried => self.deliveries.with_label_values(&["retried"]).inc(),
            EventMetric::Failed => self.deliveries.with_label_values(&["failed"]).inc(),
            EventMetric::Dropped(n) => self.deliveries.with_label_values(&["dropped"]).inc_by(n),
            EventMetric::Pending(n) => self.pending.set(n as i64),
        }
    }
}
