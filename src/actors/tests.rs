//! The actors' message handling, driven directly: a real actix system on a temp SQLite
//! database, no HTTP. Covers the races the scheduler's notes describe (a poll whose time
//! runs out while its claim commits; a cancel that arrives while a claim is in flight).

use super::job::JobPolicy;
use super::messages::*;
use super::scheduler::queued_job_from_row;
use super::{ActorConfig, MasterHandles};
use crate::db::jobs::{self as db_jobs, JobRow};
use crate::db::{self, DatabaseUrl, Synchronous, now_micros};
use crate::domain::state::JobState;
use crate::error::AppError;
use crate::wire::{ControlAction, JobResult, NodeRegistration, ProgressDetail};
use std::time::Duration;
use uuid::Uuid;

struct Farm {
    h: MasterHandles,
    /// The interval its nodes declare (as ffrtmp workers declare the master's).
    heartbeat: Duration,
    _dir: tempfile::TempDir,
}

async fn farm(heartbeat: Duration) -> Farm {
    let dir = tempfile::tempdir().unwrap();
    let pool = db::open(&DatabaseUrl::Sqlite(dir.path().join("t.db")), Synchronous::Normal, 4).unwrap();
    let cfg = ActorConfig {
        heartbeat_interval: heartbeat,
        aging_step: Duration::from_secs(120),
        policy: JobPolicy { retry_base: Duration::from_millis(10), ..JobPolicy::default() },
        max_parked_polls: 100,
        require_node_tokens: false,
        webhooks: Default::default(),
        max_event_streams: 100,
        forget_offline_after: None,
        fence_epoch: None,
    };
    Farm { h: super::start(pool, cfg).await.unwrap(), heartbeat, _dir: dir }
}

impl Farm {
    async fn register(&self, id: &str, token: bool) -> Registered {
        let registration = NodeRegistration {
            node_id: Some(id.into()),
            address: id.into(),
            encoders: Some(vec!["libx264".into()]),
            max_concurrent_jobs: Some(4),
            request_node_token: token,
            heartbeat_interval_seconds: Some(self.heartbeat.as_secs_f64()),
            ..Default::default()
        };
        self.h.nodes.send(RegisterNode { registration, token: None }).await.unwrap().unwrap()
    }

    /// Store a job and tell the scheduler, the way `POST /jobs` does (without waiting).
    async fn submit(&self) -> JobRow {
        let now = now_micros();
        let new = JobRow {
            id: Uuid::now_v7().to_string(),
            parameters: "{}".into(),
            max_retries: 1,
            created_at: now,
            queued_at: now,
            updated_at: now,
            ..JobRow::default()
        };
        let (row, _) = self.h.db.insert_job(new).await.unwrap();
        self.h.scheduler.do_send(JobsQueued(vec![queued_job_from_row(&row)]));
        row
    }

    async fn claim(&self, node: &str) -> (u64, tokio::sync::oneshot::Receiver<Vec<crate::wire::Job>>) {
        self.h.scheduler.send(ClaimJobs { node_id: node.into(), max: 1, token: None }).await.unwrap().unwrap()
    }

    async fn row(&self, id: &str) -> JobRow {
        let id = id.to_string();
        self.h.db.read(move |c| db_jobs::get(c, &id)).await.unwrap()
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[actix_rt::test]
async fn a_parked_poll_gets_a_job_as_soon_as_it_is_queued() {
    let f = farm(Duration::from_secs(5)).await;
    f.register("n1", false).await;
    let (_, rx) = f.claim("n1").await;
    let row = f.submit().await;
    let jobs = within("placement", rx).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, row.id);
    let stored = f.row(&row.id).await;
    assert_eq!((stored.status.as_str(), stored.attempt, stored.node_id.as_deref()), ("processing", 1, Some("n1")));
}

#[actix_rt::test]
async fn a_node_holds_one_parked_poll() {
    let f = farm(Duration::from_secs(5)).await;
    f.register("n1", false).await;
    let (_, first) = f.claim("n1").await;
    let (_, mut second) = f.claim("n1").await;
    assert_eq!(within("the replaced poll", first).await.unwrap().len(), 0, "the replaced poll is answered empty");
    assert!(second.try_recv().is_err(), "the new one stays parked");
    let row = f.submit().await;
    assert_eq!(within("placement", second).await.unwrap()[0].id, row.id);
}

#[actix_rt::test]
async fn a_poll_deadline_racing_its_claim_never_loses_or_doubles_a_job() {
    let f = farm(Duration::from_secs(5)).await;
    f.register("n1", false).await;
    for _ in 0..20 {
        let (poll, rx) = f.claim("n1").await;
        let row = f.submit().await;
        // The request's time runs out while the job may be mid-claim.
        let withdrawn = f.h.scheduler.send(EndPoll { node_id: "n1".into(), poll }).await.unwrap();
        let delivered = if withdrawn { Vec::new() } else { within("claimed jobs after COMMIT", rx).await.unwrap() };
        if delivered.is_empty() {
            // Not delivered: it must still be runnable, and the next poll gets it.
            let (_, rx) = f.claim("n1").await;
            let again = within("re-placement", rx).await.unwrap();
            assert_eq!(again[0].id, row.id);
        } else {
            assert_eq!(delivered[0].id, row.id);
        }
        let stored = f.row(&row.id).await;
        assert_eq!((stored.status.as_str(), stored.attempt), ("processing", 1), "claimed exactly once");
        // Free the slot for the next round.
        let r = result(&row, "completed");
        f.h.scheduler.send(SendToLiveJob(row.uuid(), ReportResult(r))).await.unwrap().unwrap().unwrap();
    }
}

/// The result node n1 reports for its first attempt of `row`.
fn result(row: &JobRow, status: &str) -> JobResult {
    serde_json::from_value(serde_json::json!({"job_id": row.id, "node_id": "n1", "attempt": 1, "status": status}))
        .unwrap()
}

#[actix_rt::test]
async fn a_cancel_racing_a_claim_is_applied_exactly_once() {
    let f = farm(Duration::from_secs(5)).await;
    f.register("n1", false).await;
    for _ in 0..10 {
        let (poll, rx) = f.claim("n1").await;
        let row = f.submit().await;
        let answer = f.h.scheduler.send(ControlJob { id: row.uuid(), action: UserAction::Cancel }).await.unwrap();
        assert_eq!(answer.unwrap().status, "canceled", "the cancel succeeds wherever the job was");
        let stored = f.row(&row.id).await;
        assert_eq!(stored.status, JobState::Canceled);
        if !f.h.scheduler.send(EndPoll { node_id: "n1".into(), poll }).await.unwrap() {
            // It was placed first: the node is told to cancel it, and its end frees the slot.
            let jobs = within("the claimed job", rx).await.unwrap();
            assert_eq!(jobs[0].id, row.id);
            let cmds = f.h.nodes.send(PollControl { node_id: "n1".into(), token: None }).await.unwrap().unwrap();
            let cmds = within("the cancel command", cmds).await.unwrap();
            assert_eq!((cmds[0].job_id.as_str(), cmds[0].action), (row.id.as_str(), ControlAction::Cancel));
            let r = result(&row, "canceled");
            let _ = f.h.scheduler.send(SendToLiveJob(row.uuid(), ReportResult(r))).await.unwrap();
        }
    }
}

#[actix_rt::test]
async fn the_job_actor_fences_reports_by_node_and_attempt() {
    let f = farm(Duration::from_secs(5)).await;
    f.register("n1", false).await;
    let (_, rx) = f.claim("n1").await;
    let row = f.submit().await;
    within("placement", rx).await.unwrap();
    let progress = |node: &str, attempt: i32| ReportProgress {
        node_id: node.into(),
        attempt: Some(attempt),
        detail: ProgressDetail { percent: 50.0, ..Default::default() },
        input_info: None,
        log_lines: Vec::new(),
    };
    let s = &f.h.scheduler;
    let stale = s.send(SendToLiveJob(row.uuid(), progress("other", 1))).await.unwrap().unwrap();
    assert!(matches!(stale, Err(AppError::Conflict { code: "stale_attempt", .. })), "{stale:?}");
    let stale = s.send(SendToLiveJob(row.uuid(), progress("n1", 2))).await.unwrap().unwrap();
    assert!(matches!(stale, Err(AppError::Conflict { code: "stale_attempt", .. })), "{stale:?}");
    assert_eq!(
        s.send(SendToLiveJob(row.uuid(), progress("n1", 1))).await.unwrap().unwrap().unwrap(),
        ControlAction::Run
    );
    let view = s.send(SendToLiveJob(row.uuid(), GetLiveView)).await.unwrap().unwrap();
    assert_eq!(view.progress.map(|p| p.percent), Some(50.0));
    let r = result(&row, "completed");
    s.send(SendToLiveJob(row.uuid(), ReportResult(r))).await.unwrap().unwrap().unwrap();
    assert_eq!(f.row(&row.id).await.status, JobState::Completed);
    // The actor has stopped: nothing live answers for the job any more.
    let gone = within("the actor to stop", async {
        loop {
            if s.send(SendToLiveJob(row.uuid(), GetLiveView)).await.unwrap().is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(gone);
}

#[actix_rt::test]
async fn the_node_supervisor_checks_tokens_and_revokes_leases_of_lost_nodes() {
    let f = farm(Duration::from_millis(100)).await;
    let reg = f.register("n1", true).await;
    let token = reg.token.expect("a token when asked for");
    let hb = |token: Option<String>| RecordHeartbeat { node_id: "n1".into(), heartbeat: Default::default(), token };
    let refused = f.h.nodes.send(hb(None)).await.unwrap();
    assert!(matches!(refused, Err(AppError::NodeToken(_))), "{refused:?}");
    f.h.nodes.send(hb(Some(token.clone()))).await.unwrap().unwrap();
    let missing = f.h.scheduler.send(ClaimJobs { node_id: "n1".into(), max: 1, token: None }).await.unwrap();
    assert!(matches!(missing, Err(AppError::NodeToken(_))));
    let (_, rx) =
        f.h.scheduler.send(ClaimJobs { node_id: "n1".into(), max: 1, token: Some(token) }).await.unwrap().unwrap();
    let row = f.submit().await;
    within("placement", rx).await.unwrap();
    // No more heartbeats: after 3 intervals the node is lost and its lease revoked.
    within("the lease to be revoked", async {
        loop {
            let r = f.row(&row.id).await;
            if r.status != JobState::Processing {
                assert!(matches!(r.status.as_str(), "retrying" | "queued"), "{}", r.status);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let node = f.h.nodes.send(GetNode("n1".into())).await.unwrap().unwrap();
    assert_eq!(node.status, crate::domain::node::NodeState::Offline);
}

#[actix_rt::test]
async fn the_bus_streams_committed_events_and_drops_a_subscriber_that_falls_behind() {
    use super::messages::{PublishTransient, Subscribe};
    let f = farm(Duration::from_secs(5)).await;
    let filter = crate::domain::events::EventFilter::default();
    let mut sub = f.h.events.send(Subscribe(filter.clone())).await.unwrap().unwrap();
    let mut slow = f.h.events.send(Subscribe(filter)).await.unwrap().unwrap();
    let row = f.submit().await;
    // The submission's outbox row reaches the stream after its COMMIT, with its id.
    let first = within("the stored event", sub.events.recv()).await.unwrap();
    assert_eq!((first.kind.as_str(), first.job_id.as_deref()), ("job.submitted", Some(row.id.as_str())));
    assert_eq!(first.id.transient, 0);
    // Transient events are numbered after it: (N, 1), (N, 2)…
    // One more than the slow subscriber's buffer holds (it also holds the stored one).
    for _ in 0..super::events::SUBSCRIBER_BUFFER {
        let data = serde_json::json!({});
        f.h.events.do_send(PublishTransient { kind: "job.progress", job_id: row.id.clone(), node_id: None, data });
    }
    let next = within("a transient event", sub.events.recv()).await.unwrap();
    assert_eq!((next.id.stored, next.id.transient), (first.id.stored, 1));
    // The subscriber that read nothing overflowed its buffer: disconnected, marked lagged,
    // and the bus went on without waiting for it.
    // The bus runs on its own thread: wait until it has published the whole burst.
    within("the burst to be published", async {
        while sub.events.len() < super::events::SUBSCRIBER_BUFFER - 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let mut drained = 0;
    while within("the slow stream to end", slow.events.recv()).await.is_some() {
        drained += 1;
    }
    assert_eq!(drained, super::events::SUBSCRIBER_BUFFER);
    assert!(slow.lagged.load(std::sync::atomic::Ordering::Acquire));
    assert!(!sub.lagged.load(std::sync::atomic::Ordering::Acquire));
}

/// A worker with two results batches in flight claims with the second before the first
/// one's results commit: the slots the first batch freed stay free for that claim too.
#[actix_rt::test]
async fn a_claim_counts_the_slots_freed_by_an_earlier_batch_whose_results_have_not_committed() {
    let f = farm(Duration::from_secs(5)).await;
    f.register("n1", false).await; // 4 slots
    for _ in 0..7 {
        f.submit().await;
    }
    let (_, rx) = f.h.scheduler.send(ClaimJobs { node_id: "n1".into(), max: 4, token: None }).await.unwrap().unwrap();
    let running = within("the first placement", rx).await.unwrap();
    assert_eq!(running.len(), 4);
    let ids: Vec<Uuid> = running.iter().map(|j| j.id.parse().unwrap()).collect();
    let claim = |ending: &[Uuid], max: u32| ClaimFreedSlots {
        node_id: "n1".into(),
        max,
        ending: ending.iter().copied().collect(),
        token: None,
    };
    // The first batch's results (two jobs) are on their way to the writer; not committed.
    let rx = f.h.scheduler.send(claim(&ids[..2], 2)).await.unwrap().unwrap();
    assert_eq!(within("the first batch's claim", rx).await.unwrap().len(), 2);
    // The second batch ends one more job: one slot is free on the worker, though the
    // master still holds the first batch's two jobs as running.
    let rx = f.h.scheduler.send(claim(&ids[2..3], 1)).await.unwrap().unwrap();
    assert_eq!(within("the second batch's claim", rx).await.unwrap().len(), 1, "the freed slot is filled");
    // Nothing more: all four slots hold a job the worker runs.
    let rx = f.h.scheduler.send(claim(&[], 1)).await.unwrap().unwrap();
    assert_eq!(within("a claim with no slot free", rx).await.unwrap().len(), 0);
}

#[actix_rt::test]
async fn the_job_gauges_a_scrape_reads_follow_every_transition_before_it() {
    use crate::domain::params::Engine;
    use crate::domain::queue::{Priority, QueueName};
    use actix::Actor;
    let metrics =
        super::metrics::MetricsActor::new(&[], &[(JobState::Pending, 2)], &[((QueueName::Batch, Priority::Low), 2)])
            .start();
    let changed = |from, to| JobStateChanged {
        from: Some(from),
        to,
        queue: QueueName::Batch,
        priority: Priority::Low,
        engine: Engine::Auto,
    };
    let value = |text: &str, series: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{series} "))).unwrap_or_else(|| panic!("{series}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let before = metrics.send(RenderMetrics).await.unwrap();
    assert_eq!(value(&before, "ffrtmp_queue_length"), 2.0);
    // Placed, then finished: the gauges move at the next scrape, the counters at once.
    metrics.do_send(changed(JobState::Pending, JobState::Processing));
    metrics.do_send(changed(JobState::Processing, JobState::Completed));
    let text = metrics.send(RenderMetrics).await.unwrap();
    assert_eq!(value(&text, "ffrtmp_queue_length"), 1.0);
    assert_eq!(value(&text, "ffrtmp_queue_by_type{type=\"batch\"}"), 1.0);
    assert_eq!(value(&text, "ffrtmp_queue_by_priority{priority=\"low\"}"), 1.0);
    assert_eq!(value(&text, "ffrtmp_jobs_in_state{state=\"pending\"}"), 1.0);
    assert_eq!(value(&text, "ffrtmp_jobs_in_state{state=\"completed\"}"), 1.0);
    assert_eq!(value(&text, "ffrtmp_active_jobs"), 0.0);
    assert_eq!(value(&text, "ffrtmp_jobs_total{state=\"processing\"}"), 1.0);
    assert_eq!(value(&text, "ffrtmp_jobs_total{state=\"completed\"}"), 1.0);
    // Forgotten (retention): the state's gauge follows at the next scrape too.
    metrics.do_send(JobsForgotten(vec![(JobState::Completed, 1)]));
    let text = metrics.send(RenderMetrics).await.unwrap();
    assert_eq!(value(&text, "ffrtmp_jobs_in_state{state=\"completed\"}"), 0.0);
}
