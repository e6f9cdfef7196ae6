//! Attempts a previous run of this worker left in its work dir. Nothing is deleted
//! before the master says it no longer wants it: one heartbeat lists every attempt
//! found, and its `stale_jobs` answer names the ones to drop. A finished attempt
//! (its `result.json` beside the output) is delivered now — the encode is not lost
//! because the worker restarted before the master heard of it; one interrupted
//! mid-encode is reported failed (retryable), so it runs again at once instead of
//! after the master's unreported-lease grace.

use super::delivery::{self, PENDING_RESULT_FILE, PendingResult};
use super::{Running, WorkerShared};
use crate::wire::{Heartbeat, JobResult, RunningJob};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tokio::sync::mpsc;

struct Found {
    job_id: String,
    attempt: i32,
    dir: PathBuf,
}

/// `job-<uuid>/attempt-<n>` directories under the work dir.
fn find_attempts(work_dir: &Path) -> Vec<Found> {
    let mut out = Vec::new();
    for job in std::fs::read_dir(work_dir).into_iter().flatten().flatten() {
        let name = job.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix("job-") else { continue };
        if uuid::Uuid::parse_str(id).is_err() {
            // Names no job, so nobody can want it.
            let _ = std::fs::remove_dir_all(job.path());
            continue;
        }
        for a in std::fs::read_dir(job.path()).into_iter().flatten().flatten() {
            let an = a.file_name().to_string_lossy().into_owned();
            if let Some(n) = an.strip_prefix("attempt-").and_then(|n| n.parse::<i32>().ok()) {
                out.push(Found { job_id: id.to_string(), attempt: n, dir: a.path() });
            }
        }
    }
    out
}

fn remove_attempt(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

pub async fn recover_attempts(shared: &Rc<WorkerShared>) {
    let found = find_attempts(&shared.cfg.work_dir);
    if found.is_empty() {
        return;
    }
    let listed = found.iter().map(|f| RunningJob { job_id: f.job_id.clone(), attempt: f.attempt }).collect();
    let hb = Heartbeat { running_jobs: Some(listed), ..Default::default() };
    let stale = match shared.client.heartbeat(&shared.node_id, &hb).await {
        Ok(r) => r.stale_jobs,
        Err(e) => {
            log::warn!(
                "cannot ask the master about {} earlier attempt(s): {e}; keeping them for the next start",
                found.len()
            );
            return;
        }
    };
    for f in found {
        if stale.iter().any(|s| s.job_id == f.job_id && s.attempt == f.attempt) {
            log::info!("job {} attempt {}: no longer wanted by the master; removing it", f.job_id, f.attempt);
            remove_attempt(&f.dir);
            continue;
        }
        let pending: Option<PendingResult> =
            std::fs::read(f.dir.join(PENDING_RESULT_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        match pending {
            Some(p) => {
                log::info!("job {} attempt {}: delivering the result of a finished encode", f.job_id, f.attempt);
                // Listed as running while it is delivered, so heartbeats keep its lease.
                let (tx, mut rx) = mpsc::unbounded_channel();
                shared.running.borrow_mut().insert(f.job_id.clone(), Running { attempt: f.attempt, tx });
                let s = shared.clone();
                actix_rt::spawn(async move {
                    delivery::deliver(&s, &p, Some(&f.dir), Some(&mut rx)).await;
                    s.running.borrow_mut().remove(&f.job_id);
                    s.slot_freed.notify_one();
                });
            }
            None => {
                let r = JobResult {
                    job_id: f.job_id.clone(),
                    node_id: shared.node_id.clone(),
                    attempt: Some(f.attempt),
                    status: "failed".into(),
                    progress: None,
                    metrics: None,
                    analyzer_output: None,
                    error: Some("the worker restarted during the encode".into()),
                    failure_reason: Some(crate::domain::state::FailureReason::PlatformError.as_str().into()),
                    retryable: Some(true),
                    logs: None,
                    completed_at: None,
                    qoe_score: None,
                    efficiency_score: None,
                    energy_joules: None,
                    vmaf_score: None,
                    outputs: None,
                };
                if let Err(e) = shared.client.result(&r).await {
                    log::info!("job {} attempt {}: interrupted attempt not reported ({e})", f.job_id, f.attempt);
                }
                remove_attempt(&f.dir);
            }
        }
    }
}
