//! Runs one job: argv from the allow-listed spec, the encoder process with timeout,
//! stall watchdog and control, coalesced progress reports, a classified result, QoE
//! and energy figures, and the output moved into place only once the master accepts.

use super::delivery::{Outcome, report};
use super::process::EncoderProcess;
use super::session::{Effect, Limits, Session};
pub use super::session::{Ending, JobCommand};
use super::{WorkerConfig, WorkerShared};
use crate::domain::argv::{self, InputSource, OutputTarget};
use crate::domain::ladder::Stage;
use crate::domain::params::{Engine, JobSpec, OutputMode, parse_job_spec};
use crate::domain::progress::ProgressBlock;
use crate::domain::state::FailureReason;
use crate::wire::*;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

/// Largest log tail sent with a result.
const LOG_TAIL: usize = 32 * 1024;

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

fn attempt_dir(cfg: &WorkerConfig, job: &Job) -> PathBuf {
    cfg.work_dir.join(format!("job-{}", job.id)).join(format!("attempt-{}", job.attempt))
}

/// Run the job and report its result; returns how it ended.
pub async fn run_job(
    shared: Rc<WorkerShared>,
    job: Job,
    mut commands: mpsc::UnboundedReceiver<JobCommand>,
    tx: mpsc::UnboundedSender<JobCommand>,
) -> Ending {
    let cfg = shared.cfg.clone();
    let started = Instant::now();
    let dir = attempt_dir(&cfg, &job);
    let mut input_info = None;
    // The packaging step's inputs as probed (their codecs go into the playlist).
    let mut step_inputs: Vec<super::input::LocalInput> = Vec::new();
    let stage = parse_job_spec(&job.parameters, job.engine).ok().and_then(|s| s.stage);
    let prepared = match local_input(&shared, &job, &dir, &mut commands).await {
        Ok(local) => {
            let path = local.as_ref().map(|l| l.path.clone());
            input_info = local.map(|l| l.info);
            match stage {
                Some(Stage::Probe) => {
                    return super::stages::run_probe(&shared, &job, path, input_info, &dir, &mut commands).await;
                }
                Some(s) if s.joins() => match super::input::localize_all(&shared, &job, &dir, &mut commands).await {
                    Ok(extra) => {
                        input_info = super::stages::joined_info(s, &extra);
                        let paths: Vec<PathBuf> = extra.iter().map(|l| l.path.clone()).collect();
                        step_inputs = extra;
                        prepare(&shared, &job, &dir, path, &paths, input_info.as_ref())
                    }
                    Err(ending) => Err(ending),
                },
                _ => prepare(&shared, &job, &dir, path, &[], input_info.as_ref()),
            }
        }
        Err(ending) => Err(ending),
    };
    if matches!(prepared, Err(Ending::Discarded | Ending::Abandoned)) {
        remove_attempt_dir(&dir);
        return prepared.expect_err("matched an error");
    }
    let (spec, encoder, program, args, output) = match prepared {
        Ok(p) => p,
        Err(ending) => {
            report(&shared, &job, &ending, Outcome::default(), Some(&dir), Some(&mut commands)).await;
            return ending;
        }
    };
    // A synthetic input runs its duration; a real one its own length (probed), or less
    // when the job cuts it.
    let probed = input_info.as_ref().and_then(|i| i.duration_seconds);
    let expected = match (spec.input.is_none(), spec.duration_seconds, probed) {
        (true, d, _) => d.or(Some(argv::DEFAULT_DURATION)),
        (false, Some(d), Some(p)) => Some(d.min(p)),
        (false, d, p) => d.or(p),
    };
    let energy_start = energy_now(&shared, &encoder, &spec);
    log::info!(
        "job {} attempt {}: {} {}",
        job.id,
        job.attempt,
        program,
        crate::domain::redact::redact_urls(&args.join(" "))
    );
    let cpus = spec.cpu_cap(super::process::available_cpus());
    let mut proc = match EncoderProcess::spawn(&program, &args, &dir, cfg.nice, cpus) {
        Ok(p) => p,
        Err(e) => {
            let ending = Ending::failed(e.to_string(), FailureReason::PlatformError, true);
            report(&shared, &job, &ending, Outcome::default(), Some(&dir), Some(&mut commands)).await;
            return ending;
        }
    };
    shared.metrics.active_jobs.inc();
    // stderr → bounded tail, in the background.
    let stderr_buf = Rc::new(RefCell::new(String::new()));
    // Whole lines not yet sent to the master (they ride on the next progress report).
    let new_lines: Rc<RefCell<Vec<String>>> = Rc::default();
    let mut stderr_task = None;
    if let Some(mut err) = proc.stderr.take() {
        let (buf, lines_out) = (stderr_buf.clone(), new_lines.clone());
        stderr_task = Some(actix_rt::spawn(async move {
            let mut chunk = vec![0u8; 8192];
            let mut partial = String::new();
            while let Ok(n) = err.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&chunk[..n]);
                let mut b = buf.borrow_mut();
                b.push_str(&text);
                if b.len() > 2 * LOG_TAIL {
                    *b = tail(&b, LOG_TAIL);
                }
                partial.push_str(&text);
                if let Some(end) = partial.rfind('\n') {
                    let mut out = lines_out.borrow_mut();
                    out.extend(partial[..end].lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
                    let excess = out.len().saturating_sub(crate::domain::limits::LOG_LINES_PER_REPORT);
                    out.drain(..excess);
                    partial.drain(..=end);
                }
                if partial.len() > crate::domain::limits::LOG_LINE_MAX {
                    partial.clear();
                }
            }
        }));
    }
    let mut lines = proc.stdout.take().map(|o| BufReader::new(o).lines());
    let limits = Limits {
        timeout: crate::domain::params::attempt_timeout(Some(&spec)),
        stall_timeout: cfg.stall_timeout,
        max_disk_bytes: spec.max_disk_mb.map(|mb| mb << 20),
        report_every: Duration::from_millis(450),
    };
    let mut session = Session::new(limits, Instant::now());
    let in_flight = Rc::new(RefCell::new(false));
    // The probe's findings ride on the first report (kept by the master once per job).
    let pending_info = Rc::new(RefCell::new(input_info.clone()));
    let mut cancel_ack = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    // The loop only carries events to the session and its effects out.
    let exit = loop {
        let effects = tokio::select! {
            line = async { match lines.as_mut() { Some(l) => l.next_line().await, None => std::future::pending().await } } => {
                match line {
                    Ok(Some(l)) => session.on_line(&l, Instant::now()),
                    _ => {
                        lines = None;
                        Vec::new()
                    }
                }
            }
            Some(cmd) = commands.recv() => session.on_command(cmd, Instant::now()),
            _ = tick.tick() => session.on_tick(Instant::now()),
            exit = proc.wait() => break exit,
        };
        for effect in effects {
            match effect {
                Effect::Pause => proc.pause(),
                Effect::Resume => proc.resume(),
                Effect::Terminate => proc.terminate(),
                Effect::Acknowledge(ControlAction::Cancel) => {
                    cancel_ack = Some(acknowledge(&shared, &job, ControlAction::Cancel));
                }
                Effect::Acknowledge(action) => drop(acknowledge(&shared, &job, action)),
                Effect::Report(block) => {
                    let live = Live { in_flight: &in_flight, input_info: &pending_info, log_lines: &new_lines };
                    send_progress(&shared, &job, block, expected, live, &tx)
                }
            }
        }
    };
    // ffmpeg writes its final `progress=end` block (and its last stderr lines) as it
    // exits: read both pipes to their end before taking any figure from them, so a
    // completed job reports the frames it really encoded. Bounded, in case something
    // the encoder forked still holds a pipe open.
    let drained = async {
        if let Some(mut l) = lines.take() {
            while let Ok(Some(line)) = l.next_line().await {
                session.absorb(&line, Instant::now());
            }
        }
        if let Some(t) = stderr_task.take() {
            let _ = t.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
    // The group may hold children of ffmpeg; make sure nothing outlives the job.
    proc.kill();
    if let Some(ack) = cancel_ack {
        let _ = ack.await;
    }
    shared.metrics.active_jobs.dec();
    let stderr_text = stderr_buf.borrow().clone();
    let wrote_output = match &output {
        OutputTarget::File(p) => Some(p.metadata().is_ok_and(|m| m.len() > 0)),
        OutputTarget::Dir(d) => Some(!crate::storage::files_under(d).is_empty()),
        OutputTarget::Rtmp(_) => None,
    };
    let mut ending = session.finish(&program, &exit, wrote_output, &stderr_text);
    if ending == Ending::Completed
        && let OutputTarget::Dir(d) = &output
        && let Err(e) = super::stages::finish(&spec, input_info.as_ref(), &step_inputs, d, &dir).await
    {
        ending = Ending::failed(e, FailureReason::ResourceError, true);
    }
    if ending == Ending::Abandoned {
        let release = LeaseRelease { node_id: shared.node_id.clone(), attempt: job.attempt };
        if let Err(e) = shared.client.release(&job.id, &release).await {
            log::warn!("could not hand job {} back: {e}", job.id);
        }
    }
    if matches!(ending, Ending::Discarded | Ending::Abandoned) {
        remove_attempt_dir(&dir);
        return ending;
    }
    let mut metrics = serde_json::Map::new();
    if let Some(b) = &session.figures() {
        if let Some(f) = b.frame {
            metrics.insert("frames".into(), f.into());
        }
        // ffmpeg's end block may say fps=0 for a short encode: frames over encode time.
        let encode_secs = session.run_time(Instant::now()).as_secs_f64();
        if let Some(v) = b.fps.or_else(|| b.frame.filter(|_| encode_secs > 0.0).map(|f| f as f64 / encode_secs)) {
            metrics.insert("fps".into(), v.into());
        }
        if let Some(v) = b.speed {
            metrics.insert("speed".into(), v.into());
        }
        if let Some(v) = b.bitrate_kbps {
            metrics.insert("bitrate_kbps".into(), v.into());
        }
        if let Some(t) = b.out_time_us {
            metrics.insert("duration_seconds".into(), (t as f64 / 1e6).into());
        }
    }
    if let OutputTarget::File(p) = &output
        && let Ok(m) = p.metadata()
    {
        metrics.insert("output_bytes".into(), m.len().into());
    }
    metrics.insert("processing_seconds".into(), started.elapsed().as_secs_f64().into());
    metrics.insert("encoder".into(), encoder.clone().into());
    metrics.insert("engine_used".into(), if program.contains("gst") { "gstreamer" } else { "ffmpeg" }.into());
    if let Some(s) = job.started_at.as_deref().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        && let Ok(c) = chrono::DateTime::parse_from_rfc3339(&job.created_at)
    {
        metrics.insert("queue_wait_seconds".into(), ((s - c).num_milliseconds() as f64 / 1000.0).into());
    }
    let energy = energy_start.and_then(|(start, range, kind)| {
        let (now, _, _) = energy_now(&shared, &encoder, &spec)?;
        let d = if now >= start { now - start } else { now + range - start };
        metrics.insert("energy_source".into(), kind.into());
        Some(d)
    });
    let mut scores = None;
    if ending == Ending::Completed
        && spec.qoe
        && let OutputTarget::File(p) = &output
    {
        scores = super::qoe::measure(&cfg.ffmpeg, p, &spec, &shared.probe, &cfg.input_roots).await;
        if let Some(s) = &scores {
            if let Some(v) = s.psnr {
                metrics.insert("psnr_db".into(), v.into());
            }
            if let Some(v) = s.ssim {
                metrics.insert("ssim".into(), v.into());
            }
        }
    }
    let mut result_metrics = metrics;
    if let Some(e) = energy {
        result_metrics.insert("energy_joules".into(), e.into());
    }
    let (output_file, output_dir) = match &output {
        OutputTarget::File(p) => (Some(p.clone()), None),
        OutputTarget::Dir(d) => (None, Some(d.clone())),
        OutputTarget::Rtmp(_) => (None, None),
    };
    let outcome = Outcome {
        logs: tail(&stderr_text, LOG_TAIL),
        metrics: Some(result_metrics),
        energy,
        scores,
        output: output_file,
        output_dir,
    };
    report(&shared, &job, &ending, outcome, Some(&dir), Some(&mut commands)).await;
    ending
}

/// The noop executor: wait `cfg.noop`, obeying cancel and lease loss, then report
/// completion. Exercises every master path except the encode itself.
pub async fn run_noop(shared: Rc<WorkerShared>, job: Job, mut commands: mpsc::UnboundedReceiver<JobCommand>) -> Ending {
    let started = Instant::now();
    let elapsed = noop_wait(shared.cfg.noop);
    tokio::pin!(elapsed);
    let ending = loop {
        tokio::select! {
            _ = &mut elapsed => break Ending::Completed,
            cmd = commands.recv() => match cmd {
                Some(JobCommand::Control(ControlAction::Cancel)) => {
                    let _ = acknowledge(&shared, &job, ControlAction::Cancel).await;
                    break Ending::Canceled;
                }
                Some(JobCommand::Control(a @ (ControlAction::Pause | ControlAction::Resume))) => {
                    drop(acknowledge(&shared, &job, a));
                }
                Some(JobCommand::Stale) => break Ending::Discarded,
                Some(JobCommand::Abandon) => {
                    let release = LeaseRelease { node_id: shared.node_id.clone(), attempt: job.attempt };
                    let _ = shared.client.release(&job.id, &release).await;
                    break Ending::Abandoned;
                }
                _ => {}
            },
        }
    };
    if matches!(ending, Ending::Discarded | Ending::Abandoned) {
        return ending;
    }
    let mut metrics = serde_json::Map::new();
    metrics.insert("processing_seconds".into(), started.elapsed().as_secs_f64().into());
    metrics.insert("engine_used".into(), "noop".into());
    // No attempt directory: a no-op job makes no files, so its end deletes none.
    report(&shared, &job, &ending, Outcome { metrics: Some(metrics), ..Outcome::default() }, None, Some(&mut commands))
        .await;
    ending
}

/// The no-op executor's wait. A zero duration ends at once: a zero `sleep` is still
/// armed on the timer and fires at its next tick — 1.3 ms median per job, measured in
/// bench P2, where a job's whole round trip through the master takes ~5 ms.
async fn noop_wait(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await
    }
}

fn remove_attempt_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

/// The job's input made local and probed (None: a synthetic input).
async fn local_input(
    shared: &Rc<WorkerShared>,
    job: &Job,
    dir: &Path,
    commands: &mut mpsc::UnboundedReceiver<JobCommand>,
) -> Result<Option<super::input::LocalInput>, Ending> {
    let spec = parse_job_spec(&job.parameters, job.engine)
        .map_err(|e| Ending::failed(e.0, FailureReason::UserError, false))?;
    let Some(input) = spec.input.as_deref() else { return Ok(None) };
    std::fs::create_dir_all(dir).map_err(|e| Ending::Failed {
        error: format!("cannot create {}: {e}", dir.display()),
        reason: FailureReason::ResourceError,
        retryable: true,
    })?;
    super::input::localize(shared, job, input, dir, commands).await.map(Some)
}

type Prepared = (JobSpec, String, String, Vec<String>, OutputTarget);

fn prepare(
    shared: &WorkerShared,
    job: &Job,
    dir: &Path,
    input: Option<PathBuf>,
    extra_inputs: &[PathBuf],
    info: Option<&crate::domain::media::InputInfo>,
) -> Result<Prepared, Ending> {
    let cfg = &shared.cfg;
    let user = |e: String| Ending::failed(e, FailureReason::UserError, false);
    let spec = parse_job_spec(&job.parameters, job.engine).map_err(|e| user(e.0))?;
    let gst_ok = shared.probe.gstreamer_version.is_some();
    let use_gst = match spec.engine {
        Engine::Gstreamer => true,
        Engine::Ffmpeg => false,
        // The seed's rule: GStreamer for live/RTMP output when it can stream there.
        Engine::Auto => {
            spec.output_mode == OutputMode::Rtmp
                && shared.probe.gstreamer_rtmp
                && spec.input.is_none()
                && spec.pattern == Default::default()
                && spec.tone == Default::default()
                && spec.encoders.contains(&"libx264")
        }
    };
    let encoder = if use_gst {
        "x264enc".to_string()
    } else {
        spec.encoders.iter().find(|e| shared.probe.encoders.iter().any(|p| p == *e)).map(|e| e.to_string()).ok_or_else(
            || Ending::Failed {
                error: format!("this node has no working encoder among {}", spec.encoders.join(", ")),
                reason: FailureReason::CapabilityMismatch,
                retryable: true,
            },
        )?
    };
    if use_gst && (!gst_ok || (spec.output_mode == OutputMode::Rtmp && !shared.probe.gstreamer_rtmp)) {
        return Err(Ending::Failed {
            error: "this node cannot build the GStreamer pipeline (elements missing)".into(),
            reason: FailureReason::CapabilityMismatch,
            retryable: true,
        });
    }
    let input = match input {
        None => InputSource::Synthetic,
        Some(p) => InputSource::File(p),
    };
    std::fs::create_dir_all(dir).map_err(|e| Ending::Failed {
        error: format!("cannot create {}: {e}", dir.display()),
        reason: FailureReason::ResourceError,
        retryable: true,
    })?;
    if let crate::domain::media::Destination::Path { dir } = &spec.destination
        && !crate::storage::under_roots(Path::new(dir), &cfg.output_roots)
    {
        return Err(Ending::Failed {
            error: format!("destination {dir} is not under this worker's --output-root"),
            reason: FailureReason::UserError,
            retryable: false,
        });
    }
    let output = match spec.output_mode {
        OutputMode::File => {
            let name = spec.output.clone().unwrap_or_else(|| argv::default_output_name(&encoder).to_string());
            OutputTarget::File(dir.join(name))
        }
        OutputMode::Rtmp => OutputTarget::Rtmp(argv::rtmp_target(&spec, &cfg.rtmp_base, &job.id)),
    };
    if let Some(step) = super::stages::argv(&spec, &input, extra_inputs, info, dir, &cfg.ffmpeg) {
        let (program, args, output) = step?;
        return Ok((spec, encoder, program, args, output));
    }
    let (program, args) = if use_gst {
        (cfg.gst.clone(), argv::gstreamer_argv(&spec, &output))
    } else {
        let deep = info.is_some_and(crate::domain::ladder::is_high_bit_depth);
        (cfg.ffmpeg.clone(), argv::ffmpeg_argv_for(&spec, &encoder, &input, &output, deep))
    };
    Ok((spec, encoder, program, args, output))
}

/// (joules so far, counter range for wrap-around, source) for this job's device.
fn energy_now(shared: &WorkerShared, encoder: &str, spec: &JobSpec) -> Option<(f64, f64, &'static str)> {
    if encoder.ends_with("_nvenc") {
        let j = shared.hw.borrow().gpu_energy_joules(spec.gpu_index.unwrap_or(0))?;
        Some((j, f64::MAX, "nvml"))
    } else {
        super::hardware::rapl_energy_joules().map(|(j, r)| (j, r, "rapl"))
    }
}

/// What rides on a progress report besides the figures.
struct Live<'a> {
    /// A report is on its way (a newer block waits for the next tick).
    in_flight: &'a Rc<RefCell<bool>>,
    /// The probe's findings, until a report carrying them is accepted.
    input_info: &'a Rc<RefCell<Option<crate::domain::media::InputInfo>>>,
    /// Encoder lines not yet sent.
    log_lines: &'a Rc<RefCell<Vec<String>>>,
}

fn send_progress(
    shared: &Rc<WorkerShared>,
    job: &Job,
    b: ProgressBlock,
    expected: Option<f64>,
    live: Live<'_>,
    tx: &mpsc::UnboundedSender<JobCommand>,
) {
    let Live { in_flight, input_info, log_lines } = live;
    // Coalesce: one report in flight; a newer block simply waits for the next tick —
    // unless the node's batcher coalesces (it keeps the newest report of each job).
    if *in_flight.borrow() && !shared.progress.coalesces() {
        return;
    }
    *in_flight.borrow_mut() = true;
    let report = ProgressReport {
        node_id: shared.node_id.clone(),
        attempt: Some(job.attempt),
        detail: ProgressDetail {
            percent: b.percent(expected).unwrap_or(0.0),
            fps: b.fps,
            speed: b.speed,
            bitrate_kbps: b.bitrate_kbps,
            frames: b.frame,
            out_time_seconds: b.out_time_us.map(|t| t as f64 / 1e6),
            eta_seconds: b.eta_seconds(expected),
            ..Default::default()
        },
        input_info: input_info.borrow().clone(),
        log_lines: std::mem::take(&mut *log_lines.borrow_mut()),
    };
    let (shared, id, flag, tx) = (shared.clone(), job.id.clone(), in_flight.clone(), tx.clone());
    let info = input_info.clone();
    actix_rt::spawn(async move {
        // With the node's other jobs' reports, in one request per interval.
        let asked_at = std::time::Instant::now();
        let sent = shared.progress.send(&shared.client, &id, report).await;
        if sent.is_ok() {
            info.borrow_mut().take();
        }
        match sent {
            Ok(r) => {
                let _ = tx.send(JobCommand::Desired { control: r.control, asked_at });
            }
            Err(e) if e.status() == Some(409) => {
                let _ = tx.send(JobCommand::Stale);
            }
            Err(e) => log::debug!("progress for {id} not delivered: {e}"),
        }
        *flag.borrow_mut() = false;
    });
}

/// Tell the master a control request took effect, without holding up the job's loop.
/// The handle lets a cancel's ack be awaited before the result goes out: the result
/// ends the master's job actor, and an ack arriving after it would find no one to
/// record the control latency.
fn acknowledge(shared: &Rc<WorkerShared>, job: &Job, action: ControlAction) -> actix_rt::task::JoinHandle<()> {
    let ack = ControlAck { node_id: shared.node_id.clone(), attempt: job.attempt, action };
    let (client, id) = (shared.client.clone(), job.id.clone());
    actix_rt::spawn(async move {
        if let Err(e) = client.ack(&id, &ack).await {
            log::debug!("control ack for {id} not delivered: {e}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[actix_rt::test]
    async fn a_zero_noop_wait_ends_at_its_first_poll() {
        assert_eq!(noop_wait(Duration::ZERO).now_or_never(), Some(()));
        assert_eq!(noop_wait(Duration::from_millis(50)).now_or_never(), None);
    }
}
