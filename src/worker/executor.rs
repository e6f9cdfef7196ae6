//! Runs one job: argv from the allow-listed spec, the encoder process with timeout,
//! stall watchdog and control, coalesced progress reports, a classified result, QoE
//! and energy figures, and the output moved into place only once the master accepts.

use super::process::EncoderProcess;
use super::{WorkerConfig, WorkerShared};
use crate::api_client::ClientError;
use crate::domain::argv::{self, InputSource, OutputTarget};
use crate::domain::params::{Engine, JobSpec, OutputMode, parse_job_spec};
use crate::domain::progress::{ProgressBlock, ProgressParser};
use crate::wire::*;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

/// Largest log tail sent with a result.
const LOG_TAIL: usize = 32 * 1024;
/// SIGKILL this long after SIGTERM if the group is still alive.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Commands into a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCommand {
    Control(ControlAction),
    /// The master says this attempt's lease is gone: kill, discard, report nothing.
    Stale,
    /// The worker is shutting down and its drain deadline passed.
    Abandon,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Completed,
    Failed {
        error: String,
        reason: &'static str,
        retryable: bool,
    },
    Canceled,
    /// Killed because the lease is gone: no report.
    Discarded,
    /// Killed because the worker is shutting down: the lease is handed back.
    Abandoned,
}

/// Classify a failed encode from its exit and stderr (pict-rs style retry/abort).
pub fn classify_failure(code: Option<i32>, signal: Option<i32>, stderr: &str) -> (&'static str, bool) {
    let s = stderr.to_ascii_lowercase();
    let has = |p: &[&str]| p.iter().any(|x| s.contains(x));
    if has(&["no space left on device", "disk quota"]) {
        ("resource_error", true)
    } else if has(&["no element", "erroneous pipeline", "could not link", "no such element or plugin"]) {
        // gst-launch could not build its pipeline: this node lacks a plugin. Running it
        // again here would fail the same way.
        ("capability_mismatch", false)
    } else if has(&["not on whitelist"]) {
        // A playlist or list input (hls, concat, …): refused by design, never retried.
        ("input_error", false)
    } else if has(&[
        "connection refused",
        "connection reset",
        "network is unreachable",
        "timed out",
        "broken pipe",
        "name or service not known",
        "i/o error",
        "input/output error",
    ]) {
        ("network_error", true)
    } else if has(&[
        "unknown encoder",
        "unrecognized option",
        "invalid argument",
        "option not found",
        "error parsing",
        "no such filter",
    ]) {
        ("user_error", false)
    } else if has(&[
        "invalid data found",
        "no such file or directory",
        "could not find codec parameters",
        "moov atom not found",
    ]) {
        ("input_error", false)
    } else if signal.is_some() {
        ("platform_error", true)
    } else {
        let _ = code;
        ("runtime_error", true)
    }
}

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

struct Clock {
    run: Duration,
    since: Option<Instant>,
}

impl Clock {
    fn elapsed(&self) -> Duration {
        self.run + self.since.map(|s| s.elapsed()).unwrap_or_default()
    }
    fn stop(&mut self) {
        if let Some(s) = self.since.take() {
            self.run += s.elapsed();
        }
    }
    fn start(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }
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
    let fail = |error: String, reason: &'static str, retryable: bool| Ending::Failed { error, reason, retryable };
    let prepared = prepare(&shared, &job, &dir);
    let (spec, encoder, program, args, output) = match prepared {
        Ok(p) => p,
        Err(ending) => {
            report(&shared, &job, &ending, Outcome::default(), &dir, Some(&mut commands)).await;
            return ending;
        }
    };
    let expected = spec
        .duration_seconds
        .or(Some(argv::DEFAULT_DURATION))
        .filter(|_| spec.input.is_none())
        .or(spec.duration_seconds);
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
            let ending = fail(format!("cannot start {program}: {e}"), "platform_error", true);
            report(&shared, &job, &ending, Outcome::default(), &dir, Some(&mut commands)).await;
            return ending;
        }
    };
    shared.metrics.active_jobs.inc();
    // stderr → bounded tail, in the background.
    let stderr_buf = Rc::new(RefCell::new(String::new()));
    let mut stderr_task = None;
    if let Some(mut err) = proc.stderr.take() {
        let buf = stderr_buf.clone();
        stderr_task = Some(actix_rt::spawn(async move {
            let mut chunk = vec![0u8; 8192];
            while let Ok(n) = err.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let mut b = buf.borrow_mut();
                b.push_str(&String::from_utf8_lossy(&chunk[..n]));
                if b.len() > 2 * LOG_TAIL {
                    *b = tail(&b, LOG_TAIL);
                }
            }
        }));
    }
    let mut lines = proc.stdout.take().map(|o| BufReader::new(o).lines());
    let mut parser = ProgressParser::default();
    let mut last: Option<ProgressBlock> = None;
    let mut before_last: Option<ProgressBlock> = None;
    let mut last_sent = Instant::now() - Duration::from_secs(1);
    let mut last_advance = Instant::now();
    let mut last_out_time: Option<i64> = None;
    let in_flight = Rc::new(RefCell::new(false));
    let mut clock = Clock { run: Duration::ZERO, since: Some(Instant::now()) };
    let timeout = crate::domain::params::attempt_timeout(Some(&spec));
    let mut paused = false;
    let mut kill_at: Option<Instant> = None;
    let mut ending: Option<Ending> = None;
    let mut cancel_ack = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let status = loop {
        tokio::select! {
            line = async { match lines.as_mut() { Some(l) => l.next_line().await, None => std::future::pending().await } } => {
                match line {
                    Ok(Some(l)) => {
                        if let Some(block) = parser.feed(&l) {
                            if block.out_time_us.is_some() && block.out_time_us != last_out_time {
                                last_out_time = block.out_time_us;
                                last_advance = Instant::now();
                            }
                            let over_disk = spec.max_disk_mb.zip(block.total_size).is_some_and(|(mb, size)| size > mb << 20);
                            before_last = last.replace(block);
                            if over_disk && kill_at.is_none() {
                                proc.terminate();
                                kill_at = Some(Instant::now() + KILL_GRACE);
                                let mb = spec.max_disk_mb.unwrap_or(0);
                                ending = Some(fail(format!("the output grew past resource_limits.max_disk_mb ({mb} MiB)"), "resource_error", false));
                            }
                            if last_sent.elapsed() >= Duration::from_millis(450) {
                                last_sent = Instant::now();
                                send_progress(&shared, &job, last.clone().unwrap(), expected, &in_flight, &tx);
                            }
                        }
                    }
                    _ => lines = None,
                }
            }
            cmd = commands.recv() => {
                match cmd {
                    Some(JobCommand::Control(ControlAction::Pause)) if !paused && kill_at.is_none() => {
                        proc.pause();
                        paused = true;
                        clock.stop();
                        drop(acknowledge(&shared, &job, ControlAction::Pause));
                    }
                    Some(JobCommand::Control(ControlAction::Resume | ControlAction::Run)) if paused => {
                        proc.resume();
                        paused = false;
                        clock.start();
                        last_advance = Instant::now();
                        drop(acknowledge(&shared, &job, ControlAction::Resume));
                    }
                    Some(JobCommand::Control(ControlAction::Cancel)) if kill_at.is_none() => {
                        proc.terminate();
                        kill_at = Some(Instant::now() + KILL_GRACE);
                        ending = Some(Ending::Canceled);
                        cancel_ack = Some(acknowledge(&shared, &job, ControlAction::Cancel));
                    }
                    Some(JobCommand::Stale) if kill_at.is_none() => {
                        proc.terminate();
                        kill_at = Some(Instant::now() + KILL_GRACE);
                        ending = Some(Ending::Discarded);
                    }
                    Some(JobCommand::Abandon) if kill_at.is_none() => {
                        proc.terminate();
                        kill_at = Some(Instant::now() + KILL_GRACE);
                        ending = Some(Ending::Abandoned);
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {
                if let Some(k) = kill_at {
                    if Instant::now() >= k {
                        proc.kill();
                    }
                } else if !paused && clock.elapsed() > timeout {
                    proc.terminate();
                    kill_at = Some(Instant::now() + KILL_GRACE);
                    ending = Some(fail(format!("ran past its {}s wall-clock limit", timeout.as_secs()), "timeout", true));
                } else if !paused && last_advance.elapsed() > cfg.stall_timeout {
                    proc.terminate();
                    kill_at = Some(Instant::now() + KILL_GRACE);
                    ending = Some(fail(format!("no progress for {}s (stalled)", cfg.stall_timeout.as_secs()), "timeout", true));
                }
            }
            st = proc.child.wait() => break st,
        }
    };
    // ffmpeg writes its final `progress=end` block (and its last stderr lines) as it
    // exits: read both pipes to their end before taking any figure from them, so a
    // completed job reports the frames it really encoded. Bounded, in case something
    // the encoder forked still holds a pipe open.
    let drained = async {
        if let Some(mut l) = lines.take() {
            while let Ok(Some(line)) = l.next_line().await {
                if let Some(block) = parser.feed(&line) {
                    before_last = last.replace(block);
                }
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
    let ending = match (ending, status) {
        (Some(e), _) => e,
        (None, Ok(st)) if st.success() => match &output {
            OutputTarget::File(p) if !p.metadata().is_ok_and(|m| m.len() > 0) => {
                fail("the encoder exited 0 but wrote no output".into(), "runtime_error", true)
            }
            _ => Ending::Completed,
        },
        (None, Ok(st)) => {
            use std::os::unix::process::ExitStatusExt;
            let (reason, retryable) = classify_failure(st.code(), st.signal(), &stderr_text);
            let what = match (st.code(), st.signal()) {
                (Some(c), _) => format!("exit status {c}"),
                (_, Some(s)) => format!("killed by signal {s}"),
                _ => "failed".into(),
            };
            let first = stderr_text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            let first = crate::domain::redact::redact_urls(&first);
            fail(format!("{program} {what}: {first}"), reason, retryable)
        }
        (None, Err(e)) => fail(format!("waiting for the encoder failed: {e}"), "platform_error", true),
    };
    if ending == Ending::Abandoned {
        let release = LeaseRelease { node_id: shared.node_id.clone(), attempt: job.attempt };
        if let Err(e) = shared.client.release(&job.id, &release).await {
            log::warn!("could not hand job {} back: {e}", job.id);
        }
    }
    if matches!(ending, Ending::Discarded | Ending::Abandoned) {
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        return ending;
    }
    let mut metrics = serde_json::Map::new();
    let figures =
        last.as_ref().map(|l| if l.end { ProgressBlock::finalized(l, before_last.as_ref()) } else { l.clone() });
    if let Some(b) = &figures {
        if let Some(f) = b.frame {
            metrics.insert("frames".into(), f.into());
        }
        // ffmpeg's end block may say fps=0 for a short encode: frames over encode time.
        let encode_secs = clock.elapsed().as_secs_f64();
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
    let output_file = match &output {
        OutputTarget::File(p) => Some(p.clone()),
        OutputTarget::Rtmp(_) => None,
    };
    let outcome = Outcome {
        logs: tail(&stderr_text, LOG_TAIL),
        metrics: Some(result_metrics),
        energy,
        scores,
        output: output_file,
    };
    report(&shared, &job, &ending, outcome, &dir, Some(&mut commands)).await;
    ending
}

/// The noop executor: wait `cfg.noop`, obeying cancel and lease loss, then report
/// completion. Exercises every master path except the encode itself.
pub async fn run_noop(shared: Rc<WorkerShared>, job: Job, mut commands: mpsc::UnboundedReceiver<JobCommand>) -> Ending {
    let started = Instant::now();
    let dir = attempt_dir(&shared.cfg, &job);
    let sleep = tokio::time::sleep(shared.cfg.noop);
    tokio::pin!(sleep);
    let ending = loop {
        tokio::select! {
            _ = &mut sleep => break Ending::Completed,
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
    report(&shared, &job, &ending, Outcome { metrics: Some(metrics), ..Outcome::default() }, &dir, Some(&mut commands))
        .await;
    ending
}

type Prepared = (JobSpec, String, String, Vec<String>, OutputTarget);

fn prepare(shared: &WorkerShared, job: &Job, dir: &Path) -> Result<Prepared, Ending> {
    let cfg = &shared.cfg;
    let user = |e: String| Ending::Failed { error: e, reason: "user_error", retryable: false };
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
                && spec.encoders.contains(&"libx264")
        }
    };
    let encoder = if use_gst {
        "x264enc".to_string()
    } else {
        spec.encoders.iter().find(|e| shared.probe.encoders.iter().any(|p| p == *e)).map(|e| e.to_string()).ok_or_else(
            || Ending::Failed {
                error: format!("this node has no working encoder among {}", spec.encoders.join(", ")),
                reason: "capability_mismatch",
                retryable: true,
            },
        )?
    };
    if use_gst && (!gst_ok || (spec.output_mode == OutputMode::Rtmp && !shared.probe.gstreamer_rtmp)) {
        return Err(Ending::Failed {
            error: "this node cannot build the GStreamer pipeline (elements missing)".into(),
            reason: "capability_mismatch",
            retryable: true,
        });
    }
    let input = match &spec.input {
        None => InputSource::Synthetic,
        Some(i) => InputSource::File(argv::resolve_input(i, &cfg.input_roots).map_err(|e| Ending::Failed {
            error: e,
            reason: "input_error",
            retryable: false,
        })?),
    };
    std::fs::create_dir_all(dir).map_err(|e| Ending::Failed {
        error: format!("cannot create {}: {e}", dir.display()),
        reason: "resource_error",
        retryable: true,
    })?;
    let output = match spec.output_mode {
        OutputMode::File => {
            let name = spec.output.clone().unwrap_or_else(|| argv::default_output_name(&encoder).to_string());
            OutputTarget::File(dir.join(name))
        }
        OutputMode::Rtmp => OutputTarget::Rtmp(argv::rtmp_target(&spec, &cfg.rtmp_base, &job.id)),
    };
    let (program, args) = if use_gst {
        (cfg.gst.clone(), argv::gstreamer_argv(&spec, &output))
    } else {
        (cfg.ffmpeg.clone(), argv::ffmpeg_argv(&spec, &encoder, &input, &output))
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

fn send_progress(
    shared: &Rc<WorkerShared>,
    job: &Job,
    b: ProgressBlock,
    expected: Option<f64>,
    in_flight: &Rc<RefCell<bool>>,
    tx: &mpsc::UnboundedSender<JobCommand>,
) {
    // Coalesce: one report in flight; a newer block simply waits for the next tick.
    if *in_flight.borrow() {
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
        },
    };
    let (client, id, flag, tx) = (shared.client.clone(), job.id.clone(), in_flight.clone(), tx.clone());
    actix_rt::spawn(async move {
        match client.progress(&id, &report).await {
            Ok(r) => {
                let _ = tx.send(JobCommand::Control(r.control));
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
            ("failed", Some(error.clone()), Some(reason.to_string()), Some(*retryable))
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

async fn report(
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

#[cfg(test)]
mod tests {
    use super::classify_failure;

    #[test]
    fn failure_classes() {
        let cases = [
            ("Unknown encoder 'foo'", None, ("user_error", false)),
            ("x.mp4: Invalid data found when processing input", None, ("input_error", false)),
            ("av_interleaved_write_frame(): No space left on device", None, ("resource_error", true)),
            ("rtmp://h/live: Connection refused", None, ("network_error", true)),
            ("", Some(9), ("platform_error", true)),
            ("something odd", None, ("runtime_error", true)),
            ("WARNING: erroneous pipeline: no element \"rtmpsink\"", None, ("capability_mismatch", false)),
            ("[hls @ 0x1] Format not on whitelist 'mov,mp4'", None, ("input_error", false)),
        ];
        for (stderr, sig, want) in cases {
            assert_eq!(classify_failure(Some(1), sig, stderr), want, "{stderr}");
        }
    }
}
