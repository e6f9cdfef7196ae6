//! A finished attempt's result: built once, kept beside its output (`result.json`)
//! until the master answers, and delivered with capped backoff. A completed attempt
//! first stores its output (uploaded to the master's artifact store, checksummed),
//! then reports; the local copy is deleted only once the master has recorded it (or
//! definitely refused the attempt). Used by the executor and by start-up recovery.

use super::WorkerShared;
use super::session::{Ending, JobCommand};
use crate::api_client::{ClientError, UploadTarget};
use crate::domain::state::FailureReason;
use crate::wire::*;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
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
    /// A directory of outputs (a package, thumbnails): every file in it, named by its
    /// path inside.
    pub output_dir: Option<PathBuf>,
}

/// A result waiting for the master's answer, kept beside the output (`result.json`)
/// so that a worker restarted meanwhile can still deliver it.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct PendingResult {
    pub result: JobResult,
    pub output: Option<PathBuf>,
    /// `s3://bucket/prefix/` or `file:///dir/` when the job's outputs go to a bucket or a
    /// library (else to the master).
    #[serde(default)]
    pub destination: Option<String>,
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
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
        outputs: None,
    };
    let output = if *ending == Ending::Completed { o.output } else { None };
    let output_dir = if *ending == Ending::Completed { o.output_dir } else { None };
    let destination = crate::domain::params::parse_job_spec(&job.parameters, job.engine)
        .ok()
        .and_then(|s| s.destination.location_of(""));
    Some(PendingResult { result, output, destination, output_dir })
}

pub async fn report(
    shared: &WorkerShared,
    job: &Job,
    ending: &Ending,
    outcome: Outcome,
    dir: Option<&Path>,
    commands: Option<&mut mpsc::UnboundedReceiver<JobCommand>>,
) {
    let Some(pending) = result_of(shared, job, ending, outcome) else { return };
    match ending {
        Ending::Completed => shared.metrics.jobs_completed.inc(),
        Ending::Failed { .. } => shared.metrics.jobs_failed.inc(),
        _ => shared.metrics.jobs_canceled.inc(),
    }
    if let Some(dir) = dir.filter(|_| pending.output.is_some() || pending.output_dir.is_some()) {
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

/// Post a result until the master answers it. `dir` is the attempt's directory (`None`:
/// the attempt made no files, so there is nothing to delete or keep). Transport errors,
/// 5xx and 429 are the master being briefly unavailable (restarting, its database
/// busy): retried with capped backoff for as long as the lease may still be valid — the
/// worker keeps listing the job in its heartbeats, so the lease lives until the master
/// answers or a heartbeat names it stale. Output is deleted only after a definite
/// refusal, and moved into `outputs/` only after acceptance.
pub async fn deliver(
    shared: &WorkerShared,
    pending: &PendingResult,
    dir: Option<&Path>,
    mut commands: Option<&mut mpsc::UnboundedReceiver<JobCommand>>,
) -> Delivery {
    let mut pending = pending.clone();
    if let Some(dir) = pending.output_dir.clone() {
        let mut names = Vec::new();
        for (name, file) in crate::storage::files_under(&dir) {
            match store_output(shared, &pending.result, &file, &name, pending.destination.as_deref()).await {
                Stored::Yes(name) => names.push(name),
                Stored::Stale => return finish(&pending, Some(dir.parent().unwrap_or(&dir)), Delivery::Refused),
                Stored::No(error, reason, retryable) => {
                    log::error!("job {}: output {name} not stored: {error}", pending.result.job_id);
                    let r = &mut pending.result;
                    (r.status, r.error, r.failure_reason, r.retryable) =
                        ("failed".into(), Some(error), Some(reason.as_str().into()), Some(retryable));
                    pending.output_dir = None;
                    names.clear();
                    break;
                }
            }
        }
        if pending.output_dir.is_some() {
            pending.result.outputs = Some(names);
        }
    }
    if let Some(file) = pending.output.clone() {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match store_output(shared, &pending.result, &file, &name, pending.destination.as_deref()).await {
            Stored::Yes(name) => pending.result.outputs = Some(vec![name]),
            Stored::Stale => return finish(&pending, dir, Delivery::Refused),
            Stored::No(error, reason, retryable) => {
                // The encode is reported failed (and run again if retryable) rather
                // than completed without its file.
                log::error!("job {}: output not stored: {error}", pending.result.job_id);
                let r = &mut pending.result;
                (r.status, r.error, r.failure_reason, r.retryable) =
                    ("failed".into(), Some(error), Some(reason.as_str().into()), Some(retryable));
                pending.output = None;
            }
        }
    }
    let pending = &pending;
    let r = &pending.result;
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    let delivery = loop {
        let err = match shared.results.send(&shared.client, r).await {
            Ok(_) => break Delivery::Accepted,
            Err(e) => e,
        };
        let transient = match &err {
            ClientError::Transport(_) | ClientError::Decode(_) => true,
            // The master lost track of the stored file (deleted meanwhile): store it again.
            ClientError::Status { status: 409, code, .. } if code == "outputs_missing" => {
                let mut files: Vec<(String, PathBuf)> =
                    pending.output_dir.as_deref().map(crate::storage::files_under).unwrap_or_default();
                if let Some(file) = &pending.output {
                    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    files.push((name, file.clone()));
                }
                for (name, file) in files {
                    if let Stored::Stale = store_output(shared, r, &file, &name, pending.destination.as_deref()).await {
                        return finish(pending, dir, Delivery::Refused);
                    }
                }
                true
            }
            ClientError::Status { status, .. } => *status >= 500 || *status == 429,
        };
        if !transient {
            log::warn!("result for job {} refused: {err}; discarding its output", r.job_id);
            break Delivery::Refused;
        }
        if started.elapsed() > DELIVERY_PATIENCE {
            match dir {
                Some(dir) => log::error!(
                    "result for job {} undelivered for {:?}; keeping {} for the next start",
                    r.job_id,
                    DELIVERY_PATIENCE,
                    dir.display()
                ),
                None => log::error!("result for job {} undelivered for {:?}; giving up", r.job_id, DELIVERY_PATIENCE),
            }
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
                        return finish(pending, dir, Delivery::Refused);
                    }
                    // Shutting down: keep everything for the next start.
                    Some(JobCommand::Abandon) => return finish(pending, dir, Delivery::Kept),
                    None => commands = None,
                    _ => {}
                },
            }
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    };
    finish(pending, dir, delivery)
}

/// Delete the attempt's files once the master has the result (and the output), or
/// has refused the attempt; keep them when it never answered.
fn finish(pending: &PendingResult, dir: Option<&Path>, delivery: Delivery) -> Delivery {
    if delivery == Delivery::Kept {
        return delivery;
    }
    if delivery == Delivery::Accepted && (pending.output.is_some() || pending.output_dir.is_some()) {
        log::info!("job {}: output stored on the master", pending.result.job_id);
    }
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    delivery
}

/// How storing an output ended.
enum Stored {
    /// Recorded by the master under this name.
    Yes(String),
    /// The attempt's lease is gone: nobody wants the file.
    Stale,
    /// Not stored: why, as what failure, retryable or not.
    No(String, FailureReason, bool),
}

/// Failures of the store itself (the master's artifact store unable to write, a body
/// corrupted on the way) before the attempt is failed as `storage_error`. An
/// unreachable master is not one: that is waited out, as results are.
const STORE_FAILURES: u32 = 6;

/// Upload `file` to the master's artifact store, retrying with capped backoff while
/// reporting the `uploading` phase.
async fn store_output(
    shared: &WorkerShared,
    r: &JobResult,
    file: &Path,
    name: &str,
    destination: Option<&str>,
) -> Stored {
    if name.is_empty() {
        return Stored::No("output has no file name".into(), FailureReason::PlatformError, true);
    }
    let name = name.to_string();
    let (bytes, sha) = match crate::storage::file_digest(file).await {
        Ok(d) => d,
        Err(e) => {
            return Stored::No(
                format!("cannot read the output {}: {e}", file.display()),
                FailureReason::ResourceError,
                true,
            );
        }
    };
    let target =
        UploadTarget { job_id: &r.job_id, node_id: &shared.node_id, attempt: r.attempt.unwrap_or(1), name: &name };
    let started = Instant::now();
    let mut delay = Duration::from_millis(500);
    let mut store_failures = 0;
    loop {
        let sent = Rc::new(Cell::new(0u64));
        let upload = async {
            match destination {
                None => shared.client.upload_output(&target, file, &sha, sent.clone()).await,
                // A bucket: the worker writes the object with its own credentials, then
                // the master records where it is.
                Some(prefix) => {
                    let location = format!("{prefix}{name}");
                    let unavailable =
                        |m: String| ClientError::Status { status: 503, code: "storage_unavailable".into(), message: m };
                    if let Some((bucket, key)) = crate::domain::media::split_s3(&location) {
                        crate::storage::objects::put(bucket, key, file).await.map_err(unavailable)?;
                    } else if let Some(path) = crate::domain::media::file_path(&location) {
                        crate::storage::place_atomically(file, Path::new(path))
                            .await
                            .map_err(|e| unavailable(format!("cannot write {path}: {e}")))?;
                    }
                    sent.set(bytes);
                    shared.client.record_output(&target, &location, bytes, &sha).await
                }
            }
        };
        tokio::pin!(upload);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let answer = loop {
            tokio::select! {
                a = &mut upload => break a,
                _ = tick.tick() => super::input::report_phase(shared, &r.job_id, target.attempt, "uploading", sent.get(), Some(bytes)),
            }
        };
        let err = match answer {
            Ok(_) => return Stored::Yes(name.clone()),
            Err(e) => e,
        };
        let store_failed = match &err {
            ClientError::Status { status: 409, .. } => return Stored::Stale,
            ClientError::Status { status: 413, message, .. } => {
                return Stored::No(
                    format!("the master refused the output: {message}"),
                    FailureReason::ResourceError,
                    false,
                );
            }
            ClientError::Status { code, .. } if code == "storage_unavailable" || code == "checksum_mismatch" => true,
            ClientError::Status { code, .. } if code == "incomplete_upload" => false,
            ClientError::Status { status, .. } if (400..500).contains(status) && *status != 429 => {
                return Stored::No(format!("the master refused the output: {err}"), FailureReason::StorageError, false);
            }
            _ => false,
        };
        store_failures += u32::from(store_failed);
        if store_failures >= STORE_FAILURES || started.elapsed() > DELIVERY_PATIENCE {
            return Stored::No(format!("the output could not be stored: {err}"), FailureReason::StorageError, true);
        }
        log::warn!("job {}: upload of {name} failed ({err}); retrying in {delay:?}", r.job_id);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
