//! A finished attempt's result: built once, kept beside its output (`result.json`)
//! until the master answers, and delivered with capped backoff; the output moves into
//! `outputs/` only after the master accepted it, and is deleted only after a definite
//! refusal. Used by the executor and by start-up recovery.

use super::WorkerShared;
use super::session::{Ending, JobCommand};
use crate::api_client::ClientError;
use crate::wire::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What a finished attempt has to report besides how it ended.
#[derive(Default)]
pub struct Outcome {
    pub logs: String,
    pub metrics: Option<serde_json::Map<String, serde_json::Value>>,
    pub energy: Option<f64>,
    pub scores: Option<super::qoe::Scores>,
    /// The output file in the attempt dir (None for streams and failures).
    pub output: Option<PathBuf>,
}

/// A result waiting for the master's answer, kept beside the output (`result.json`)
/// so that a worker restarted meanwhile can still deliver it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PendingResult {
    pub result: JobResult,
    pub output: Option<PathBuf>,
}

pub const PENDING_RESULT_FILE: &str = "result.json";

/// Longest a finished attempt keeps trying to reach the master before it gives up
/// (its directory is kept for the next start either way).
const DELIVERY_PATIENCE: Duration = Duration::from_secs(24 * 3600);

fn result_of(shared: &WorkerShared, job: &Job, ending: &Ending, o: Outcome) -> Option<PendingResult> {
    let (status, error, reason, retryable) = match ending {
        Ending::Completed => ("completed", None, None, None),
        Ending::Failed { error, reason, retryable } => {
            ("failed", Some(error.clone()), Some(reason.as_str().to_string()), Some(*retryable))
        }
        Ending::Canceled => ("canceled", None, None, Some(false)),
        Ending::Discarded | Ending::Abandoned => return None,
    };
    let result = JobResult {
        job_id: job.id.clone(),
        node_id: shared.node_id.clone(),
        attempt: Some(job.attempt),
        status: status.into(),
        progress: Some(if status == "completed" { 100.0 } else { 0.0 }),
        metrics: o.metrics,
        analyzer_output: None,
        error: error.map(|e| crate::domain::redact::redact_urls(&e)),
        failure_reason: reason,
        retryable,
        logs: (!o.logs.is_empty()).then(|| crate::domain::redact::redact_urls(&o.logs)),
        completed_at: Some(chrono::Utc::now().to_rfc3339()),
        qoe_score: o.scores.as_ref().and_then(|s| s.qoe_score()),
        efficiency_score: None,
        energy_joules: o.energy,
        vmaf_score: o.scores.as_ref().and_then(|s| s.vmaf),
    };
    let output = if *ending == Ending::Completed { o.output } else { None };
    Some(PendingResult { result, output })
}

pub async fn report(
    shared: &WorkerShared,
    job: &Job,
    ending: &Ending,
    outcome: Outcome,
    dir: &Path,
    commands: Option<&mut mpsc::UnboundedReceiver<JobCommand>>,
) {
    let Some(pending) = result_of(shared, job, ending, outcome) else { return };
    match ending {
        Ending::Completed => shared.metrics.jobs_completed.inc(),
        Ending::Failed { .. } => shared.metrics.jobs_failed.inc(),
        _ => shared.metrics.jobs_canceled.inc(),
    }
    if pending.output.is_some() {
        // Written before the first delivery attempt: from here on a restart delivers it.
        if let Err(e) = std::fs::write(dir.join(PENDING_RESULT_FILE), serde_json::to_vec(&pending).unwrap_or_default())
        {
            log::warn!("cannot keep the result of job {} beside its output: {e}", job.id);
        }
    }
    deliver(shared, &pending, dir, commands).await;
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Accepted,
    /// The master definitely refused it (409 stale attempt, or another 4xx).
    Refused,
    /// Never answered (shutting down, or out of patience): the attempt dir is kept.
    Kept,
}

/// Post a result until the master answers it. Transport errors, 5xx and 429 are the
/// master being briefly unavailable (restarting, its database busy): retried with
/// capped backoff for as long as the lease may still be valid — the worker keeps
/// listing the job in its heartbeats, so the lease lives until the master answers or
/// a heartbeat names it stale. Output is deleted only after a definite refusal, and
/// moved into `outputs/` only after acceptance.
pub async fn deliver(
    shared: &WorkerShared,
    pending: &PendingResult,
    dir: &Path,
    mut commands: Option<&mut mpsc::UnboundedReceiver<JobCommand>>,
) -> Delivery {
    let r = &pending.result;
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    let delivery = loop {
        let err = match shared.client.result(r).await {
            Ok(_) => break Delivery::Accepted,
            Err(e) => e,
        };
        let transient = match &err {
            ClientError::Transport(_) | ClientError::Decode(_) => true,
            ClientError::Status { status, .. } => *status >= 500 || *status == 429,
        };
        if !transient {
            log::warn!("result for job {} refused: {err}; discarding its output", r.job_id);
            break Delivery::Refused;
        }
        if started.elapsed() > DELIVERY_PATIENCE {
            log::error!(
                "result for job {} undelivered for {:?}; keeping {} for the next start",
                r.job_id,
                DELIVERY_PATIENCE,
                dir.display()
            );
            break Delivery::Kept;
        }
        log::warn!("result for job {} not delivered ({err}); retrying in {delay:?}", r.job_id);
        let wait = tokio::time::sleep(delay);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                cmd = async { match commands.as_deref_mut() { Some(c) => c.recv().await, None => std::future::pending().await } } => match cmd {
                    // A heartbeat says the lease moved on: the output is nobody's now.
                    Some(JobCommand::Stale) => {
                        log::warn!("job {} attempt {:?} went stale while its result waited", r.job_id, r.attempt);
                        return finish(shared, pending, dir, Delivery::Refused);
                    }
                    // Shutting down: keep everything for the next start.
                    Some(JobCommand::Abandon) => return finish(shared, pending, dir, Delivery::Kept),
                    None => commands = None,
                    _ => {}
                },
            }
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    };
    finish(shared, pending, dir, delivery)
}

fn finish(shared: &WorkerShared, pending: &PendingResult, dir: &Path, delivery: Delivery) -> Delivery {
    let job_id = &pending.result.job_id;
    if delivery == Delivery::Kept {
        return delivery;
    }
    if delivery == Delivery::Accepted
        && let Some(p) = &pending.output
    {
        let final_dir = shared.cfg.work_dir.join("outputs").join(format!("job-{job_id}"));
        let moved = std::fs::create_dir_all(&final_dir).and_then(|_| {
            let name = p.file_name().ok_or_else(|| std::io::Error::other("output has no file name"))?;
            std::fs::rename(p, final_dir.join(name)).map(|_| final_dir.join(name))
        });
        match moved {
            Ok(dest) => log::info!("job {job_id} output: {}", dest.display()),
            Err(e) => {
                // The master has accepted this output: never delete it.
                log::error!(
                    "cannot move the output of job {job_id} into {}: {e}; it stays in {}",
                    final_dir.display(),
                    dir.display()
                );
                return delivery;
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    delivery
}
