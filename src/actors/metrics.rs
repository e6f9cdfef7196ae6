//! `MetricsActor`: owns the Prometheus registry of the master.
//!
//! Every collector is updated from events the other actors send, so rendering
//! `/metrics` never touches the database and costs the same with 10 or 10 million
//! stored jobs. Every known label value is created at zero at start-up, so no series
//! appears late or vanishes, and ratios such as the success rate never go empty.

use super::messages::{JobStateChanged, JobsForgotten, MetricEvent, MetricRecorded, RenderMetrics};
use crate::domain::finished::{FINISHED_INTERVAL_MICROS, FINISHED_INTERVALS, FinishedSeries};
use crate::domain::node::NodeState;
use crate::domain::params::Engine;
use crate::domain::queue::{Priority, QueueName};
use crate::domain::state::JobState;
use actix::prelude::*;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::HashMap;
use std::time::Instant;

/// Route templates served by the API, for pre-created HTTP series.
pub const HTTP_ROUTES: &[(&str, &str)] = &[
    ("POST", "/nodes/register"),
    ("GET", "/nodes"),
    ("GET", "/nodes/{id}"),
    ("DELETE", "/nodes/{id}"),
    ("POST", "/nodes/{id}/heartbeat"),
    ("POST", "/nodes/{id}/drain"),
    ("POST", "/nodes/{id}/undrain"),
    ("GET", "/nodes/{id}/control"),
    ("GET", "/jobs/next"),
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{id}"),
    ("POST", "/jobs/{id}/{action}"),
    ("GET", "/jobs/{id}/logs"),
    ("POST", "/jobs/{id}/progress"),
    ("POST", "/jobs/{id}/control/ack"),
    ("POST", "/jobs/{id}/release"),
    ("POST", "/results"),
    ("POST", "/results/batch"),
    ("POST", "/nodes/{id}/progress"),
    ("GET", "/events"),
    ("GET", "/webhooks"),
    ("POST", "/webhooks"),
    ("GET", "/webhooks/{id}"),
    ("DELETE", "/webhooks/{id}"),
    ("GET", "/webhooks/{id}/deliveries"),
    ("POST", "/webhooks/{id}/deliveries/{delivery_id}/redeliver"),
    ("GET", "/health"),
    ("GET", "/health/score"),
    ("GET", "/status"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("OTHER", "unmatched"),
];
pub const HTTP_CODE_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];
pub const SCHEDULE_RESULTS: [&str; 3] = ["success", "no_jobs", "error"];
pub const CONTROL_ACTIONS: [&str; 3] = ["pause", "resume", "cancel"];

pub struct MetricsActor {
    registry: Registry,
    started: Instant,
    /// `ffrtmp_jobs_total`'s child per state, resolved once: a label lookup hashes its
    /// strings, and this counter moves on every transition of every job.
    entered_counters: Vec<(JobState, IntCounter)>,
    jobs_in_state: IntGaugeVec,
    active_jobs: IntGauge,
    queue_length: IntGauge,
    queue_by_priority: IntGaugeVec,
    queue_by_type: IntGaugeVec,
    nodes_total: IntGauge,
    nodes_by_status: IntGaugeVec,
    queue_wait: Histogram,
    execution: Histogram,
    schedule_attempts: IntCounterVec,
    retries: IntCounter,
    lease_expirations: IntCounter,
    node_losses: IntCounter,
    control_latency: HistogramVec,
    progress_updates: IntCounter,
    completed_by_engine: IntCounterVec,
    /// The per-state and per-queue gauges lag `current`/`queued` until the next render:
    /// recomputing all of them on every transition cost the actor thread (the
    /// scheduler's) more than the transition's own bookkeeping, and only a scrape reads them.
    gauges_stale: bool,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    uptime: Gauge,
    workers_waiting: IntGauge,
    artifact_bytes: IntGauge,
    db_commits: IntCounter,
    db_writes: IntCounter,
    /// Current jobs per state, mirrored so gauges never go negative on odd events.
    current: HashMap<JobState, i64>,
    queued: HashMap<(QueueName, Priority), i64>,
    /// The last RECENT_OUTCOMES final outcomes (true = completed), for the health score.
    recent: std::collections::VecDeque<bool>,
    /// Completions and failures per five minutes over the last hour (the console's chart).
    finished: FinishedSeries,
    events: super::event_metrics::EventMetrics,
}

const RECENT_OUTCOMES: usize = 200;

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

impl MetricsActor {
    /// `entered`: all-time transition counts per state from the database; `current`:
    /// jobs per state now; `queued`: runnable jobs per queue and priority now.
    pub fn new(
        entered: &[(JobState, i64)],
        current: &[(JobState, i64)],
        queued: &[((QueueName, Priority), i64)],
    ) -> Self {
        let r = Registry::new();
        let jobs_total = reg(
            &r,
            IntCounterVec::new(
                Opts::new("ffrtmp_jobs_total", "Jobs that entered each state, all time (counter; survives restarts)"),
                &["state"],
            )
            .unwrap(),
        );
        let jobs_in_state = reg(
            &r,
            IntGaugeVec::new(Opts::new("ffrtmp_jobs_in_state", "Jobs currently in each state"), &["state"]).unwrap(),
        );
        let active_jobs = reg(
            &r,
            IntGauge::new("ffrtmp_active_jobs", "Jobs leased to workers (assigned, processing or paused)").unwrap(),
        );
        let queue_length = reg(
            &r,
            IntGauge::new("ffrtmp_queue_length", "Runnable jobs waiting for a worker (pending + queued)").unwrap(),
        );
        let queue_by_priority = reg(
            &r,
            IntGaugeVec::new(Opts::new("ffrtmp_queue_by_priority", "Runnable jobs by priority"), &["priority"])
                .unwrap(),
        );
        let queue_by_type =
            reg(&r, IntGaugeVec::new(Opts::new("ffrtmp_queue_by_type", "Runnable jobs by queue"), &["type"]).unwrap());
        let nodes_total = reg(&r, IntGauge::new("ffrtmp_nodes_registered", "Registered nodes").unwrap());
        let nodes_by_status = reg(
            &r,
            IntGaugeVec::new(Opts::new("ffrtmp_nodes_by_status", "Registered nodes by status"), &["status"]).unwrap(),
        );
        let buckets = vec![0.005, 0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0];
        let queue_wait = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new("ffrtmp_job_queue_wait_seconds", "Time from runnable to placed on a worker")
                    .buckets(buckets.clone()),
            )
            .unwrap(),
        );
        let execution = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "ffrtmp_job_execution_seconds",
                    "Time from placement to a final result, per attempt",
                )
                .buckets(buckets),
            )
            .unwrap(),
        );
        let schedule_attempts = reg(
            &r,
            IntCounterVec::new(Opts::new("ffrtmp_schedule_attempts_total", "Worker claims by outcome"), &["result"])
                .unwrap(),
        );
        let retries = reg(&r, IntCounter::new("ffrtmp_job_retries_total", "Automatic retries scheduled").unwrap());
        let lease_expirations = reg(
            &r,
            IntCounter::new(
                "ffrtmp_lease_expirations_total",
                "Leases lost (node lost or worker no longer running the job)",
            )
            .unwrap(),
        );
        let node_losses = reg(
            &r,
            IntCounter::new("ffrtmp_node_losses_total", "Nodes declared offline after missed heartbeats").unwrap(),
        );
        let control_latency = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "ffrtmp_control_latency_seconds",
                    "From a pause/resume/cancel API call to the worker's acknowledgement",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
                &["action"],
            )
            .unwrap(),
        );
        let progress_updates = reg(
            &r,
            IntCounter::new("ffrtmp_progress_updates_total", "Progress reports accepted from workers").unwrap(),
        );
        let completed_by_engine = reg(
            &r,
            IntCounterVec::new(
                Opts::new("ffrtmp_jobs_completed_by_engine_total", "Completed jobs by requested engine"),
                &["engine"],
            )
            .unwrap(),
        );
        let http_requests = reg(
            &r,
            IntCounterVec::new(
                Opts::new("ffrtmp_http_requests_total", "API requests by route template and status class"),
                &["method", "route", "code"],
            )
            .unwrap(),
        );
        let http_duration = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new("ffrtmp_http_request_duration_seconds", "API request latency by route template")
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0]),
                &["method", "route"],
            )
            .unwrap(),
        );
        let uptime = reg(&r, Gauge::new("ffrtmp_master_uptime_seconds", "Seconds since the master started").unwrap());
        let db_commits =
            reg(&r, IntCounter::new("ffrtmp_db_commits_total", "Group-committed write transactions").unwrap());
        let db_writes = reg(
            &r,
            IntCounter::new("ffrtmp_db_writes_total", "Writes applied (several per commit under load)").unwrap(),
        );
        let workers_waiting = reg(
            &r,
            IntGauge::new("ffrtmp_workers_waiting", "Worker requests parked in /jobs/next waiting for work").unwrap(),
        );
        let artifact_bytes = reg(
            &r,
            IntGauge::new("ffrtmp_artifact_bytes_stored", "Bytes of job outputs in the master's artifact store")
                .unwrap(),
        );
        let build = reg(
            &r,
            IntGaugeVec::new(Opts::new("ffrtmp_build_info", "Build information (always 1)"), &["version"]).unwrap(),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        for s in JobState::ALL {
            jobs_total.with_label_values(&[s.as_str()]);
            jobs_in_state.with_label_values(&[s.as_str()]).set(0);
        }
        for (s, n) in entered {
            if *n > 0 {
                jobs_total.with_label_values(&[s.as_str()]).inc_by(*n as u64);
            }
        }
        for p in Priority::NAMES {
            queue_by_priority.with_label_values(&[p]).set(0);
        }
        for q in QueueName::NAMES {
            queue_by_type.with_label_values(&[q]).set(0);
        }
        for s in NodeState::ALL {
            nodes_by_status.with_label_values(&[s.as_str()]).set(0);
        }
        for r in SCHEDULE_RESULTS {
            schedule_attempts.with_label_values(&[r]);
        }
        for a in CONTROL_ACTIONS {
            control_latency.with_label_values(&[a]);
        }
        for e in Engine::NAMES {
            completed_by_engine.with_label_values(&[e]);
        }
        for (m, route) in HTTP_ROUTES {
            for c in HTTP_CODE_CLASSES {
                http_requests.with_label_values(&[m, route, c]);
            }
            http_duration.with_label_values(&[m, route]);
        }
        let events = super::event_metrics::EventMetrics::register(&r);
        let mut me = MetricsActor {
            registry: r,
            started: Instant::now(),
            entered_counters: JobState::ALL.iter().map(|&s| (s, jobs_total.with_label_values(&[s.as_str()]))).collect(),
            jobs_in_state,
            active_jobs,
            queue_length,
            queue_by_priority,
            queue_by_type,
            nodes_total,
            nodes_by_status,
            queue_wait,
            execution,
            schedule_attempts,
            retries,
            lease_expirations,
            node_losses,
            control_latency,
            progress_updates,
            completed_by_engine,
            gauges_stale: false,
            http_requests,
            http_duration,
            uptime,
            workers_waiting,
            artifact_bytes,
            db_commits,
            db_writes,
            current: HashMap::new(),
            queued: HashMap::new(),
            recent: std::collections::VecDeque::with_capacity(RECENT_OUTCOMES),
            finished: FinishedSeries::new(FINISHED_INTERVAL_MICROS, FINISHED_INTERVALS),
            events,
        };
        me.current.extend(current.iter().copied());
        for (k, n) in queued {
            me.queued.insert(*k, *n);
        }
        me.refresh_job_gauges();
        me
    }

    /// Start the last-hour chart from the job log: (interval number, completed, failed)
    /// as `db::jobs::finished_since` reads them.
    pub fn with_finished(mut self, seed: &[(i64, i64, i64)]) -> Self {
        for &(slot, ok, bad) in seed {
            self.finished.add(slot, ok.max(0) as u64, bad.max(0) as u64);
        }
        self
    }

    /// Every family the master exports (all are pre-created, so gathering sees them all).
    pub fn family_names(&self) -> Vec<String> {
        self.registry.gather().iter().map(|f| f.name().to_string()).collect()
    }

    fn refresh_job_gauges(&mut self) {
        let get = |s: JobState| self.current.get(&s).copied().unwrap_or(0).max(0);
        for &s in JobState::ALL {
            self.jobs_in_state.with_label_values(&[s.as_str()]).set(get(s));
        }
        self.active_jobs.set(get(JobState::Assigned) + get(JobState::Processing) + get(JobState::Paused));
        self.queue_length.set(get(JobState::Pending) + get(JobState::Queued));
        for q in [QueueName::Live, QueueName::Default, QueueName::Batch] {
            let n: i64 = self.queued.iter().filter(|((qq, _), _)| *qq == q).map(|(_, n)| (*n).max(0)).sum();
            self.queue_by_type.with_label_values(&[q.as_str()]).set(n);
        }
        for p in [Priority::High, Priority::Medium, Priority::Low] {
            let n: i64 = self.queued.iter().filter(|((_, pp), _)| *pp == p).map(|(_, n)| (*n).max(0)).sum();
            self.queue_by_priority.with_label_values(&[p.as_str()]).set(n);
        }
    }
}

impl Actor for MetricsActor {
    type Context = Context<Self>;
}

impl Handler<JobStateChanged> for MetricsActor {
    type Result = ();

    fn handle(&mut self, ev: JobStateChanged, _: &mut Context<Self>) {
        if let Some((_, c)) = self.entered_counters.iter().find(|(s, _)| *s == ev.to) {
            c.inc();
        }
        if let Some(from) = ev.from {
            *self.current.entry(from).or_default() -= 1;
            if from.is_runnable() {
                *self.queued.entry((ev.queue, ev.priority)).or_default() -= 1;
            }
        }
        *self.current.entry(ev.to).or_default() += 1;
        if ev.to.is_runnable() {
            *self.queued.entry((ev.queue, ev.priority)).or_default() += 1;
        }
        if matches!(ev.to, JobState::Completed | JobState::Failed) {
            if self.recent.len() == RECENT_OUTCOMES {
                self.recent.pop_front();
            }
            self.recent.push_back(ev.to == JobState::Completed);
            self.finished.record(crate::db::now_micros(), ev.to == JobState::Completed);
        }
        if ev.to == JobState::Completed {
            self.completed_by_engine.with_label_values(&[ev.engine.as_str()]).inc();
        }
        self.gauges_stale = true;
    }
}

impl Handler<JobsForgotten> for MetricsActor {
    type Result = ();
    fn handle(&mut self, m: JobsForgotten, _: &mut Context<Self>) {
        for (s, n) in m.0 {
            *self.current.entry(s).or_default() -= n;
        }
        self.gauges_stale = true;
    }
}

fn code_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl Handler<MetricRecorded> for MetricsActor {
    type Result = ();

    fn handle(&mut self, MetricRecorded(ev): MetricRecorded, _: &mut Context<Self>) {
        match ev {
            MetricEvent::ScheduleAttempt(r) => self.schedule_attempts.with_label_values(&[r]).inc(),
            MetricEvent::Retried => self.retries.inc(),
            MetricEvent::LeaseExpired => self.lease_expirations.inc(),
            MetricEvent::NodeLost => self.node_losses.inc(),
            MetricEvent::ProgressUpdated => self.progress_updates.inc(),
            MetricEvent::ControlAcknowledged { action, seconds } => {
                self.control_latency.with_label_values(&[action]).observe(seconds)
            }
            MetricEvent::QueueWaited(s) => self.queue_wait.observe(s),
            MetricEvent::Executed(s) => self.execution.observe(s),
            MetricEvent::HttpServed { method, route, status, seconds } => {
                // Only known templates become label values: cardinality stays fixed.
                let known = HTTP_ROUTES.iter().any(|(m, r)| *m == method && *r == route);
                let (m, r) = if known { (method.as_str(), route.as_str()) } else { ("OTHER", "unmatched") };
                self.http_requests.with_label_values(&[m, r, code_class(status)]).inc();
                self.http_duration.with_label_values(&[m, r]).observe(seconds);
            }
            MetricEvent::Committed { writes } => {
                self.db_commits.inc();
                self.db_writes.inc_by(writes as u64);
            }
            MetricEvent::WorkersWaiting(n) => self.workers_waiting.set(n as i64),
            MetricEvent::ArtifactBytesChanged(delta) => self.artifact_bytes.add(delta),
            MetricEvent::Events(m) => self.events.record(m),
            MetricEvent::NodesCounted(counts) => {
                for (s, n) in NodeState::ALL.iter().zip(counts) {
                    self.nodes_by_status.with_label_values(&[s.as_str()]).set(n as i64);
                }
                self.nodes_total.set(counts.iter().sum::<usize>() as i64);
            }
        }
    }
}

impl Handler<RenderMetrics> for MetricsActor {
    type Result = String;

    fn handle(&mut self, _: RenderMetrics, _: &mut Context<Self>) -> String {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        if std::mem::take(&mut self.gauges_stale) {
            self.refresh_job_gauges();
        }
        let mut buf = Vec::with_capacity(32 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            log::error!("metrics encoding failed: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Handler<super::messages::GetFinishedSeries> for MetricsActor {
    type Result = MessageResult<super::messages::GetFinishedSeries>;
    fn handle(&mut self, _: super::messages::GetFinishedSeries, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.finished.window(crate::db::now_micros()))
    }
}

impl Handler<super::messages::GetRecentOutcomes> for MetricsActor {
    type Result = MessageResult<super::messages::GetRecentOutcomes>;
    fn handle(&mut self, _: super::messages::GetRecentOutcomes, _: &mut Context<Self>) -> Self::Result {
        let ok = self.recent.iter().filter(|c| **c).count() as u32;
        MessageResult((ok, self.recent.len() as u32 - ok))
    }
}
