//! `JobActor`: one per live job (leased, paused, retrying or timed out).
//!
//! It owns the job's lease (node + attempt), its latest progress, the operator's
//! pending control request and its retry timer. Every state change is written through
//! the group-committed writer before the actor believes it, and every worker report is
//! fenced: only the node holding the current attempt may speak for the job.
//!
//! This file holds the actor, its transitions and timers; [`reports`] the worker's
//! progress and result; [`controls`] the operator's controls and the lease.

use super::db_executor::Db;
use super::messages::*;
use super::metrics::MetricsActor;
use super::node_supervisor::NodeSupervisor;
use super::scheduler::SchedulerActor;
use crate::db::DbError;
use crate::db::jobs::JobRow;
use crate::db::now_micros;
use crate::db::transitions as db_transitions;
use crate::domain::params::parse_job_spec;
use crate::domain::queue::{Priority, QueueName};
use crate::domain::state::{self, FailureReason, JobState, UserAction};
use crate::error::{AppError, AppResult};
use crate::wire::{ControlAction, ControlCommand, ControlResponse, JobResult, ProgressDetail, ResultResponse};
use actix::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

mod controls;
mod reports;

/// Largest log tail kept per job.
pub const MAX_LOG_BYTES: usize = 64 * 1024;

/// Retry, lease and persistence policy shared by every JobActor.
#[derive(Debug, Clone)]
pub struct JobPolicy {
    /// First retry waits about this long; each further retry doubles it.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// A job its worker does not list in a heartbeat this long after placement has lost its lease.
    pub unreported_grace: Duration,
    /// Progress is written to the database at most this often (it is in memory always).
    pub progress_persist_every: Duration,
    /// Extra time past the worker's own wall-clock limit before the master times a job out.
    pub timeout_grace: Duration,
    /// How long a canceled job waits for its worker to confirm the kill.
    pub cancel_ack_wait: Duration,
}

impl Default for JobPolicy {
    fn default() -> Self {
        JobPolicy {
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(300),
            unreported_grace: Duration::from_secs(10),
            progress_persist_every: Duration::from_secs(5),
            timeout_grace: Duration::from_secs(30),
            cancel_ack_wait: Duration::from_secs(30),
        }
    }
}

/// Exponential backoff with ±25 % jitter: base × 2^retry, capped.
pub fn backoff(policy: &JobPolicy, retry: i32) -> Duration {
    let exp = policy.retry_base.saturating_mul(1u32 << retry.clamp(0, 16) as u32);
    let capped = exp.min(policy.retry_cap);
    capped.mul_f64(0.75 + fastrand::f64() * 0.5)
}

pub struct JobActor {
    id: Uuid,
    row: JobRow,
    queue: QueueName,
    priority: Priority,
    db: Db,
    scheduler: Addr<SchedulerActor>,
    nodes: Addr<NodeSupervisor>,
    metrics: Addr<MetricsActor>,
    policy: Arc<JobPolicy>,
    progress: Option<ProgressDetail>,
    last_persist: Instant,
    /// Operator request not yet acknowledged by the worker, with its time.
    pending_control: Option<(ControlAction, Instant)>,
    leased_at: Instant,
    /// Time spent running (not paused) in this attempt.
    run_time: Duration,
    run_since: Option<Instant>,
    timeout: Duration,
    /// Answer a repeat of the last accepted result identically.
    last_result: Option<(String, ResultResponse)>,
    /// The attempt this actor was started for (its registration key in the scheduler).
    placed_attempt: i32,
    /// The node of that attempt, whose slot it holds: kept after the job's own
    /// `node_id` is cleared (a job waiting for its retry belongs to no node).
    placed_node: Option<String>,
    /// The event bus, for progress (at most one event a second) and new log lines.
    events: Option<Recipient<super::messages::PublishTransient>>,
    last_progress_event: Option<Instant>,
    /// The running attempt's latest log lines (attempt, lines): what a reader who
    /// arrives mid-encode sees before the live `job.log` events.
    log_tail: (i32, std::collections::VecDeque<String>),
}

impl JobActor {
    pub fn with_events(mut self, to: Option<Recipient<PublishTransient>>) -> Self {
        self.events = to;
        self
    }

    pub fn new(
        row: JobRow,
        db: Db,
        scheduler: Addr<SchedulerActor>,
        nodes: Addr<NodeSupervisor>,
        metrics: Addr<MetricsActor>,
        policy: Arc<JobPolicy>,
    ) -> Self {
        let params: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&row.parameters).unwrap_or_default();
        let spec = parse_job_spec(&params, row.engine).ok();
        let timeout = crate::domain::params::attempt_timeout(spec.as_ref()) + policy.timeout_grace;
        let running = row.state() == JobState::Processing;
        let placed_attempt = row.attempt;
        let placed_node = row.node_id.clone();
        JobActor {
            id: row.uuid(),
            queue: row.queue,
            priority: row.priority,
            row,
            db,
            scheduler,
            nodes,
            metrics,
            policy,
            progress: None,
            last_persist: Instant::now(),
            pending_control: None,
            leased_at: Instant::now(),
            run_time: Duration::ZERO,
            run_since: running.then(Instant::now),
            timeout,
            last_result: None,
            placed_attempt,
            placed_node,
            events: None,
            last_progress_event: None,
            log_tail: (0, Default::default()),
        }
    }

    fn state(&self) -> JobState {
        self.row.state()
    }

    /// The node this actor's attempt was placed on.
    fn node_id(&self) -> Option<String> {
        self.placed_node.clone()
    }

    fn check_owner(&self, node_id: &str, attempt: Option<i32>) -> AppResult<()> {
        if self.row.node_id.as_deref() != Some(node_id) {
            return Err(AppError::stale_attempt(format!(
                "node {node_id} does not hold the lease of job {}; stop it and discard its output",
                self.id
            )));
        }
        if let Some(a) = attempt
            && a != self.row.attempt
        {
            return Err(AppError::stale_attempt(format!(
                "attempt {a} of job {} is stale (current attempt is {}); stop it and discard its output",
                self.id, self.row.attempt
            )));
        }
        Ok(())
    }

    /// Persist `self.state() → to` (with what `change` changes) and adopt the new row;
    /// emits the metrics event. The database write asks the transition gate first.
    fn transition<F: FnOnce(&mut JobRow) + Send + 'static>(
        &mut self,
        to: JobState,
        change: F,
        reason: String,
    ) -> impl ActorFuture<Self, Output = AppResult<()>> + use<F> {
        let from = self.state();
        let db = self.db.clone();
        // This actor is the only writer of its job, so its row is what is stored: no
        // read-back before the write (the write is still guarded by state and attempt).
        let row = self.row.clone();
        async move { db.transition(row, to, change, reason).await }.into_actor(self).map(move |res, act, _| {
            let row = res.map_err(|e| match e {
                DbError::Conflict { current: Some(current), .. } => {
                    AppError::InvalidTransition { current, action: "change" }
                }
                e => AppError::from(e),
            })?;
            act.row = row;
            act.metrics.do_send(JobStateChanged {
                from: Some(from),
                to,
                queue: act.queue,
                priority: act.priority,
                engine: act.row.engine,
            });
            Ok(())
        })
    }

    /// Runnable again: free the lease's slot on `node`, give the job to the scheduler's
    /// index, and stop (the index, not an actor, holds a runnable job).
    fn hand_to_index(&mut self, node: Option<String>, ctx: &mut Context<Self>) {
        self.scheduler.do_send(JobActorStopped {
            id: self.id,
            node_id: node,
            stopping: false,
            attempt: self.placed_attempt,
            settled: None,
        });
        self.scheduler.do_send(JobsQueued(vec![super::scheduler::queued_job_from_row(&self.row)]));
        ctx.stop();
    }

    fn release_slot(&self) {
        self.scheduler.do_send(JobActorStopped {
            id: self.id,
            node_id: self.node_id(),
            stopping: false,
            attempt: self.placed_attempt,
            settled: None,
        });
    }

    /// Record the attempt's success and stop (the lease's slot is freed first).
    fn complete(
        &mut self,
        record: impl FnOnce(&mut JobRow) + Send + 'static,
    ) -> ResponseActFuture<Self, AppResult<ResultResponse>> {
        self.pause_clock();
        let now = now_micros();
        let change = move |row: &mut JobRow| {
            record(row);
            row.completed_at = Some(now);
            row.progress = 100.0;
            // Earlier attempts' errors stay in `attempts`; the job succeeded.
            row.error = None;
            row.failure_reason = None;
        };
        let exec = self.row.started_at.map(|s| (now - s) as f64 / 1e6);
        Box::pin(self.transition(JobState::Completed, change, "Completed".into()).map(move |res, act, ctx| {
            res?;
            if let Some(s) = exec {
                act.metrics.do_send(MetricRecorded(MetricEvent::Executed(s)));
            }
            act.stop_with_release(ctx);
            Ok(ResultResponse {
                status: "success".into(),
                job_status: JobState::Completed,
                retry: None,
                max_retries: None,
            })
        }))
    }

    fn stop_with_release(&mut self, ctx: &mut Context<Self>) {
        self.release_slot();
        ctx.stop();
    }

    fn deliver(&self, action: ControlAction) {
        if let Some(node_id) = self.node_id() {
            self.nodes.do_send(DeliverControl {
                node_id,
                command: ControlCommand { job_id: self.row.id.clone(), attempt: self.row.attempt, action },
            });
        }
    }

    /// The worker confirmed `action`: record the API-call → effect latency once.
    fn control_took_effect(&mut self, action: ControlAction) {
        if let Some((pending, at)) = self.pending_control
            && pending == action
        {
            let name = match action {
                ControlAction::Pause => "pause",
                ControlAction::Resume => "resume",
                _ => "cancel",
            };
            self.metrics.do_send(MetricRecorded(MetricEvent::ControlAcknowledged {
                action: name,
                seconds: at.elapsed().as_secs_f64(),
            }));
            self.pending_control = None;
        }
    }

    fn pause_clock(&mut self) {
        if let Some(since) = self.run_since.take() {
            self.run_time += since.elapsed();
        }
    }

    /// Fail the attempt: retry after a backoff if allowed, else fail the job.
    fn fail_or_retry<F: FnOnce(&mut JobRow) + Send + 'static>(
        &mut self,
        error: String,
        failure_reason: FailureReason,
        retryable: bool,
        extra: F,
    ) -> impl ActorFuture<Self, Output = AppResult<ResultResponse>> + use<F> {
        self.pause_clock();
        let can_retry = retryable && self.row.automatic_retries() < self.row.max_retries;
        let now = now_micros();
        let retry_at = can_retry.then(|| now + backoff(&self.policy, self.row.automatic_retries()).as_micros() as i64);
        let stored_error = error.clone();
        let change = move |row: &mut JobRow| {
            extra(row);
            row.error = Some(stored_error);
            row.failure_reason = Some(failure_reason);
            match retry_at {
                Some(at) => {
                    row.retry_count += 1;
                    row.retry_at = Some(at);
                    // Waiting for its retry, the job is on no node (the attempt's node
                    // stays in its transitions and `attempts`).
                    row.node_id = None;
                }
                None => row.completed_at = Some(now),
            }
        };
        let (to, reason) = if let Some(at) = retry_at {
            let wait = Duration::from_micros((at - now).max(0) as u64);
            (
                JobState::Retrying,
                format!(
                    "Retry {} of {} in {:.1}s: {error}",
                    self.row.automatic_retries() + 1,
                    self.row.max_retries,
                    wait.as_secs_f64()
                ),
            )
        } else {
            (JobState::Failed, format!("Failed: {error}"))
        };
        let was_leased = self.state().is_leased();
        let exec = self.row.started_at.map(|s| (now - s) as f64 / 1e6);
        self.transition(to, change, reason).map(move |res, act, ctx| {
            res?;
            if let Some(s) = exec.filter(|_| was_leased) {
                act.metrics.do_send(MetricRecorded(MetricEvent::Executed(s)));
            }
            if to == JobState::Retrying {
                act.metrics.do_send(MetricRecorded(MetricEvent::Retried));
                // The slot is free while the job waits; the actor stays for the timer.
                act.release_slot();
                act.schedule_retry(ctx);
                Ok(ResultResponse {
                    status: "retrying".into(),
                    job_status: to,
                    retry: Some(act.row.retry_count),
                    max_retries: Some(act.row.max_retries),
                })
            } else {
                act.stop_with_release(ctx);
                Ok(ResultResponse { status: "success".into(), job_status: to, retry: None, max_retries: None })
            }
        })
    }

    fn schedule_retry(&mut self, ctx: &mut Context<Self>) {
        let due = self.row.retry_at.unwrap_or_else(now_micros);
        let wait = Duration::from_micros((due - now_micros()).max(0) as u64);
        ctx.run_later(wait, |act, ctx| act.requeue(ctx));
    }

    /// Retrying → queued: hand the job back to the scheduler's index and stop.
    fn requeue(&mut self, ctx: &mut Context<Self>) {
        if self.state() != JobState::Retrying {
            return;
        }
        let fut = self.transition(JobState::Queued, queued_again, "Backoff elapsed; queued again".into()).map(
            |res, act, ctx| match res {
                Ok(()) => {
                    act.scheduler.do_send(JobsQueued(vec![super::scheduler::queued_job_from_row(&act.row)]));
                    ctx.stop();
                }
                Err(e) => {
                    log::warn!("job {}: requeue failed ({e}); trying again in 1s", act.id);
                    ctx.run_later(Duration::from_secs(1), |act, ctx| act.requeue(ctx));
                }
            },
        );
        ctx.wait(fut);
    }

    fn check_timeout(&mut self, ctx: &mut Context<Self>) {
        if self.state() != JobState::Processing {
            return;
        }
        let ran = self.run_time + self.run_since.map(|s| s.elapsed()).unwrap_or_default();
        if ran < self.timeout {
            return;
        }
        self.deliver(ControlAction::Cancel);
        let secs = self.timeout.as_secs();
        let fut = self.transition(JobState::TimedOut, unchanged, format!("Ran past its {secs}s limit")).then(
            move |res, act, _| {
                let after: Box<dyn ActorFuture<Self, Output = ()>> = match res {
                    Ok(()) => Box::new(
                        act.fail_or_retry(format!("timed out after {secs}s"), FailureReason::Timeout, true, unchanged)
                            .map(|_, _, _| ()),
                    ),
                    Err(_) => Box::new(actix::fut::ready(())),
                };
                Box::into_pin(after)
            },
        );
        ctx.wait(fut);
    }
}

impl Actor for JobActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.state() {
            JobState::Retrying => self.schedule_retry(ctx),
            JobState::TimedOut => {
                // Restarted between "timed out" and its retry decision.
                let fut =
                    self.fail_or_retry("timed out".into(), FailureReason::Timeout, true, unchanged).map(|_, _, _| ());
                ctx.wait(fut);
            }
            _ => {}
        }
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.check_timeout(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.scheduler.do_send(JobActorStopped {
            id: self.id,
            node_id: self.node_id(),
            stopping: true,
            attempt: self.placed_attempt,
            settled: self.state().is_terminal().then(|| self.state()),
        });
    }
}

impl Handler<GetLiveView> for JobActor {
    type Result = MessageResult<GetLiveView>;
    fn handle(&mut self, _: GetLiveView, _: &mut Context<Self>) -> Self::Result {
        MessageResult(LiveView {
            state: self.state(),
            attempt: self.row.attempt,
            node_id: self.node_id(),
            progress: self.progress.clone(),
            log_tail: if self.log_tail.0 == self.row.attempt {
                self.log_tail.1.iter().cloned().collect()
            } else {
                vec![]
            },
        })
    }
}

/// A transition that changes nothing but the state.
fn unchanged(_: &mut JobRow) {}

/// Back in the queue: no node, no start, no pending retry, no progress.
fn queued_again(row: &mut JobRow) {
    row.node_id = None;
    row.queued_at = now_micros();
    row.started_at = None;
    row.retry_at = None;
    row.progress = 0.0;
}
