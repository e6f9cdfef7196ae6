//! A job's input, made local and known before the encode starts: a path under an
//! `--input-root` is resolved, a URL, an object (`s3://`, with the worker's own
//! credentials) or another job's output (`artifact://`) is downloaded into the attempt dir (streamed, capped, resumed), and every input is
//! probed once with ffprobe. ffmpeg itself only ever opens a local file.

use super::WorkerShared;
use super::session::{Ending, JobCommand};
use crate::domain::argv;
use crate::domain::media::{InputInfo, InputRef, parse_ffprobe};
use crate::domain::state::FailureReason;
use crate::storage::transfer::{DownloadError, DownloadLimits, download};
use crate::wire::*;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The input, local and probed.
pub struct LocalInput {
    pub path: PathBuf,
    pub info: InputInfo,
}

fn input_error(e: impl Into<String>) -> Ending {
    Ending::failed(e.into(), FailureReason::InputError, false)
}

/// Make `input` a probed local file in `dir`, obeying cancel and lease loss meanwhile.
pub async fn localize(
    shared: &Rc<WorkerShared>,
    job: &Job,
    input: &str,
    dir: &Path,
    commands: &mut mpsc::UnboundedReceiver<JobCommand>,
) -> Result<LocalInput, Ending> {
    localize_named(shared, job, input, dir, None, commands).await
}

/// [`localize`], a download kept under `name` (several inputs in one attempt dir).
async fn localize_named(
    shared: &Rc<WorkerShared>,
    job: &Job,
    input: &str,
    dir: &Path,
    name: Option<String>,
    commands: &mut mpsc::UnboundedReceiver<JobCommand>,
) -> Result<LocalInput, Ending> {
    let source = InputRef::parse(input).map_err(input_error)?;
    let path = match &source {
        InputRef::Local(p) => argv::resolve_input(p, &shared.cfg.input_roots).map_err(input_error)?,
        remote => {
            let dest = dir.join(name.clone().unwrap_or_else(|| remote.local_name()));
            let got = Rc::new(Cell::new(0u64));
            download_watched(shared, job, remote, &dest, got, commands).await?;
            dest
        }
    };
    // A package's subtitle tracks are text the packaging step copies, not media.
    if path.extension().is_some_and(|e| e == "vtt") && name.is_some() {
        return Ok(LocalInput { path, info: InputInfo::default() });
    }
    let info = probe(&shared.cfg.ffprobe, &path)
        .await
        .map_err(|e| input_error(format!("the input is not readable media: {e}")))?;
    Ok(LocalInput { path, info })
}

/// Download while reporting the phase and obeying commands.
async fn download_watched(
    shared: &Rc<WorkerShared>,
    job: &Job,
    remote: &InputRef,
    dest: &Path,
    got: Rc<Cell<u64>>,
    commands: &mut mpsc::UnboundedReceiver<JobCommand>,
) -> Result<(), Ending> {
    let fetch = fetch(shared, remote, dest, got.clone());
    tokio::pin!(fetch);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            done = &mut fetch => {
                done.map_err(|e| if e.permanent {
                    input_error(format!("cannot download the input: {e}"))
                } else {
                    Ending::failed(format!("cannot download the input: {e}"), FailureReason::NetworkError, true)
                })?;
                return Ok(());
            }
            _ = tick.tick() => report_phase(shared, &job.id, job.attempt, "downloading", got.get(), None),
            cmd = commands.recv() => if let Some(ending) = interrupted(shared, job, cmd).await {
                return Err(ending);
            },
        }
    }
}

async fn fetch(
    shared: &Rc<WorkerShared>,
    source: &InputRef,
    dest: &Path,
    got: Rc<Cell<u64>>,
) -> Result<u64, DownloadError> {
    let limits = DownloadLimits {
        max_bytes: shared.cfg.max_input_bytes,
        stall: Duration::from_secs(30),
        tries: 5,
        follow_redirect: false,
    };
    match source {
        InputRef::Http { url, .. } => {
            // Another client than the master's: the worker's key never goes to an input server,
            // and redirects are not followed (they could lead past the master's allow-list).
            let http = awc::Client::builder().disable_redirects().finish();
            download(|_| http.get(url.as_str()), dest, limits, got).await
        }
        InputRef::Artifact { .. } | InputRef::Upload { .. } => {
            // A file in a bucket answers with a presigned URL: followed, keyless.
            let path = match source {
                InputRef::Upload { id, name } => format!("/uploads/{id}/{name}"),
                InputRef::Artifact { job_id, name } => format!("/jobs/{job_id}/outputs/{name}"),
                _ => unreachable!(),
            };
            let limits = DownloadLimits { follow_redirect: true, ..limits };
            download(|_| shared.client.request(awc::http::Method::GET, &path), dest, limits, got).await
        }
        InputRef::S3 { bucket, key } => crate::storage::objects::fetch(bucket, key, dest, limits.max_bytes, got).await,
        InputRef::Local(_) => unreachable!("local inputs are not fetched"),
    }
}

/// A command that ends the job while its input downloads.
async fn interrupted(shared: &Rc<WorkerShared>, job: &Job, cmd: Option<JobCommand>) -> Option<Ending> {
    match cmd {
        Some(JobCommand::Control(ControlAction::Cancel)) => {
            let ack =
                ControlAck { node_id: shared.node_id.clone(), attempt: job.attempt, action: ControlAction::Cancel };
            let _ = shared.client.ack(&job.id, &ack).await;
            Some(Ending::Canceled)
        }
        Some(JobCommand::Stale) => Some(Ending::Discarded),
        Some(JobCommand::Abandon) => {
            let release = LeaseRelease { node_id: shared.node_id.clone(), attempt: job.attempt };
            let _ = shared.client.release(&job.id, &release).await;
            Some(Ending::Abandoned)
        }
        _ => None,
    }
}

/// Tell the master which phase the attempt is in (downloading, uploading), without
/// holding up the transfer.
pub fn report_phase(shared: &WorkerShared, job_id: &str, attempt: i32, phase: &str, bytes: u64, total: Option<u64>) {
    let report = ProgressReport {
        node_id: shared.node_id.clone(),
        attempt: Some(attempt),
        detail: ProgressDetail {
            // Uploading follows a finished encode.
            percent: if phase == "uploading" { 100.0 } else { 0.0 },
            phase: Some(phase.to_string()),
            transfer_bytes: Some(bytes),
            transfer_total: total,
            ..Default::default()
        },
        input_info: None,
        log_lines: Vec::new(),
    };
    let (client, id) = (shared.client.clone(), job_id.to_string());
    actix_rt::spawn(async move {
        if let Err(e) = client.progress(&id, &report).await {
            log::debug!("{} report for {id} not delivered: {e}", report.detail.phase.as_deref().unwrap_or(""));
        }
    });
}

/// ffprobe's view of a local file.
pub async fn probe(ffprobe: &str, path: &Path) -> Result<InputInfo, String> {
    let args = ["-v", "error", "-print_format", "json", "-show_format", "-show_streams"];
    parse_ffprobe(&run_ffprobe(ffprobe, &args, path, Duration::from_secs(60)).await?)
}

/// ffprobe's standard output for `args` and a local file, within `limit`; its last
/// error line when it fails.
pub async fn run_ffprobe(ffprobe: &str, args: &[&str], path: &Path, limit: Duration) -> Result<Vec<u8>, String> {
    let out = tokio::process::Command::new(ffprobe).args(args).arg(path).kill_on_drop(true).output();
    let out = tokio::time::timeout(limit, out)
        .await
        .map_err(|_| format!("ffprobe took over {} s", limit.as_secs()))?
        .map_err(|e| format!("cannot run {ffprobe}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("ffprobe failed").trim().to_string());
    }
    Ok(out.stdout)
}

/// The job's further inputs (`inputs`: the packaging step's renditions), each made
/// local and probed, in order.
pub async fn localize_all(
    shared: &Rc<WorkerShared>,
    job: &Job,
    dir: &Path,
    commands: &mut mpsc::UnboundedReceiver<JobCommand>,
) -> Result<Vec<LocalInput>, Ending> {
    let spec = crate::domain::params::parse_job_spec(&job.parameters, job.engine).map_err(|e| input_error(e.0))?;
    std::fs::create_dir_all(dir).map_err(|e| {
        Ending::failed(format!("cannot create {}: {e}", dir.display()), FailureReason::ResourceError, true)
    })?;
    let mut out = Vec::with_capacity(spec.inputs.len());
    for input in &spec.inputs {
        // Each keeps its own name (a rendition's label names its variant).
        let name = match InputRef::parse(input) {
            Ok(InputRef::Artifact { name, .. } | InputRef::Upload { name, .. }) => Some(name.replace('/', "_")),
            _ => None,
        };
        out.push(localize_named(shared, job, input, dir, name, commands).await?);
    }
    Ok(out)
}
