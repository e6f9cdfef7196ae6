//! One attempt's decisions, with no IO: what to do when a progress line, a control
//! command or a clock tick arrives, and how the attempt ended once its process exited.
//!
//! The executor feeds a [`Session`] events with the time they happened and carries out
//! the [`Effect`]s it returns (signals, progress reports, acknowledgements); the process
//! wrapper owns the kill grace after a terminate. Every way an attempt stops early (a
//! cancel, a stale lease, a shutdown, the wall-clock limit, a stall, the disk limit)
//! goes through one place, [`Session::stop`], so the first reason wins and the rest are
//! ignored. Tested table-driven below, without ffmpeg.

use super::process::{Exit, ProcessError};
use crate::domain::progress::{ProgressBlock, ProgressParser};
use crate::domain::state::FailureReason;
use crate::wire::ControlAction;
use std::time::{Duration, Instant};

/// Commands into a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCommand {
    /// A command of the control long-poll: the operator's latest word.
    Control(ControlAction),
    /// The state a progress reply asked for, that report having left at `asked_at`: a
    /// backstop for a lost command, ignored when a control command arrived since (the
    /// reply may predate it: a resume must not be undone by an older "pause").
    Desired { control: ControlAction, asked_at: Instant },
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
        reason: FailureReason,
        retryable: bool,
    },
    Canceled,
    /// Killed because the lease is gone: no report.
    Discarded,
    /// Killed because the worker is shutting down: the lease is handed back.
    Abandoned,
}

impl Ending {
    pub fn failed(error: impl Into<String>, reason: FailureReason, retryable: bool) -> Ending {
        Ending::Failed { error: error.into(), reason, retryable }
    }
}

/// What the executor must do for the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// SIGSTOP the process group.
    Pause,
    /// SIGCONT the process group.
    Resume,
    /// SIGTERM the group; the process wrapper SIGKILLs it after its grace.
    Terminate,
    /// Tell the master a control request took effect.
    Acknowledge(ControlAction),
    /// Send this progress to the master.
    Report(ProgressBlock),
}

/// The limits one attempt runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Running time (pauses excluded) before the attempt is timed out.
    pub timeout: Duration,
    /// Running time without the output clock advancing before it counts as stalled.
    pub stall_timeout: Duration,
    /// `resource_limits.max_disk_mb`, in bytes.
    pub max_disk_bytes: Option<u64>,
    /// Shortest gap between two progress reports.
    pub report_every: Duration,
}

pub struct Session {
    limits: Limits,
    parser: ProgressParser,
    last: Option<ProgressBlock>,
    before_last: Option<ProgressBlock>,
    last_out_time: Option<i64>,
    last_advance: Instant,
    last_report: Option<Instant>,
    /// When the control long-poll last delivered a command.
    last_command: Option<Instant>,
    ran: Duration,
    running_since: Option<Instant>,
    /// Decided early: the process has been told to stop, and this is why.
    stopping: Option<Ending>,
}

impl Session {
    pub fn new(limits: Limits, now: Instant) -> Session {
        Session {
            limits,
            parser: ProgressParser::default(),
            last: None,
            before_last: None,
            last_out_time: None,
            last_advance: now,
            last_report: None,
            last_command: None,
            ran: Duration::ZERO,
            running_since: Some(now),
            stopping: None,
        }
    }

    fn paused(&self) -> bool {
        self.running_since.is_none()
    }

    /// Time spent running (not paused) up to `now`.
    pub fn run_time(&self, now: Instant) -> Duration {
        self.ran + self.running_since.map(|s| now.saturating_duration_since(s)).unwrap_or_default()
    }

    /// The one stop sequence: the first reason is kept, later ones change nothing.
    fn stop(&mut self, why: Ending) -> Vec<Effect> {
        if self.stopping.is_some() {
            return Vec::new();
        }
        self.stopping = Some(why);
        vec![Effect::Terminate]
    }

    /// A line of the encoder's `-progress` output.
    pub fn on_line(&mut self, line: &str, now: Instant) -> Vec<Effect> {
        let Some(block) = self.absorb(line, now) else { return Vec::new() };
        let mut effects = Vec::new();
        if let Some(max) = self.limits.max_disk_bytes
            && block.total_size.is_some_and(|size| size > max)
        {
            let mb = max >> 20;
            let why = format!("the output grew past resource_limits.max_disk_mb ({mb} MiB)");
            effects.extend(self.stop(Ending::failed(why, FailureReason::ResourceError, false)));
        }
        if self.last_report.is_none_or(|at| now.saturating_duration_since(at) >= self.limits.report_every) {
            self.last_report = Some(now);
            effects.push(Effect::Report(block));
        }
        effects
    }

    /// Take a progress line into the figures only (the pipe's tail after the exit).
    pub fn absorb(&mut self, line: &str, now: Instant) -> Option<ProgressBlock> {
        let block = self.parser.feed(line)?;
        if block.out_time_us.is_some() && block.out_time_us != self.last_out_time {
            self.last_out_time = block.out_time_us;
            self.last_advance = now;
        }
        self.before_last = self.last.replace(block.clone());
        Some(block)
    }

    pub fn on_command(&mut self, command: JobCommand, now: Instant) -> Vec<Effect> {
        let stopping = self.stopping.is_some();
        let command = match command {
            JobCommand::Desired { control, asked_at } => {
                if self.last_command.is_some_and(|at| at >= asked_at) {
                    return Vec::new();
                }
                JobCommand::Control(control)
            }
            JobCommand::Control(c) => {
                self.last_command = Some(now);
                JobCommand::Control(c)
            }
            other => other,
        };
        match command {
            JobCommand::Control(ControlAction::Pause) if !self.paused() && !stopping => {
                self.ran = self.run_time(now);
                self.running_since = None;
                vec![Effect::Pause, Effect::Acknowledge(ControlAction::Pause)]
            }
            JobCommand::Control(ControlAction::Resume | ControlAction::Run) if self.paused() => {
                self.running_since = Some(now);
                // A pause is not a stall.
                self.last_advance = now;
                vec![Effect::Resume, Effect::Acknowledge(ControlAction::Resume)]
            }
            JobCommand::Control(ControlAction::Cancel) if !stopping => {
                let mut effects = self.stop(Ending::Canceled);
                effects.push(Effect::Acknowledge(ControlAction::Cancel));
                effects
            }
            JobCommand::Stale => self.stop(Ending::Discarded),
            JobCommand::Abandon => self.stop(Ending::Abandoned),
            _ => Vec::new(),
        }
    }

    /// The clock: the wall-clock limit and the stall watchdog (neither runs while paused).
    pub fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        if self.paused() || self.stopping.is_some() {
            return Vec::new();
        }
        let limits = self.limits;
        if self.run_time(now) > limits.timeout {
            let why = format!("ran past its {}s wall-clock limit", limits.timeout.as_secs());
            self.stop(Ending::failed(why, FailureReason::Timeout, true))
        } else if now.saturating_duration_since(self.last_advance) > limits.stall_timeout {
            let why = format!("no progress for {}s (stalled)", limits.stall_timeout.as_secs());
            self.stop(Ending::failed(why, FailureReason::Timeout, true))
        } else {
            Vec::new()
        }
    }

    /// The encode's figures: the `progress=end` block's, completed by the block before.
    pub fn figures(&self) -> Option<ProgressBlock> {
        let last = self.last.as_ref()?;
        Some(if last.end { ProgressBlock::finalized(last, self.before_last.as_ref()) } else { last.clone() })
    }

    /// How the attempt ended, once `program` exited. `wrote_output`: whether the output
    /// file exists and is not empty (None for streams); `stderr`: its tail.
    pub fn finish(
        &self,
        program: &str,
        exit: &Result<Exit, ProcessError>,
        wrote_output: Option<bool>,
        stderr: &str,
    ) -> Ending {
        if let Some(why) = &self.stopping {
            return why.clone();
        }
        match exit {
            Ok(Exit::Success) if wrote_output == Some(false) => {
                Ending::failed("the encoder exited 0 but wrote no output", FailureReason::RuntimeError, true)
            }
            Ok(Exit::Success) => Ending::Completed,
            Ok(exit) => {
                let errors = error_lines(stderr);
                let (reason, retryable) = classify_failure(exit, &errors);
                let last_line = errors.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
                let error = format!("{program} {exit}: {}", crate::domain::redact::redact_urls(last_line));
                Ending::failed(error, reason, retryable)
            }
            Err(e) => Ending::failed(e.to_string(), FailureReason::PlatformError, true),
        }
    }
}

/// The lines of an encoder's stderr that report errors: ffmpeg's (run with
/// `-loglevel level+info`) tagged `[error]`, `[fatal]` or `[panic]`, with the tag
/// removed; lines with another level tag (info, warning, …) are left out; untagged
/// lines (another encoder's) are kept as they are.
pub fn error_lines(stderr: &str) -> String {
    const QUIET: [&str; 5] = ["[info] ", "[warning] ", "[verbose] ", "[debug] ", "[trace] "];
    const LOUD: [&str; 3] = ["[error] ", "[fatal] ", "[panic] "];
    let mut out = String::new();
    for line in stderr.lines() {
        if QUIET.iter().any(|t| line.starts_with(t) || line.contains(&format!("] {t}"))) {
            continue;
        }
        let mut l = line.to_string();
        for t in LOUD {
            if let Some(rest) = l.strip_prefix(t) {
                l = rest.to_string();
            } else {
                l = l.replacen(&format!("] {t}"), "] ", 1);
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Classify a failed encode from its exit and stderr (pict-rs style retry/abort).
pub fn classify_failure(exit: &Exit, stderr: &str) -> (FailureReason, bool) {
    use FailureReason::*;
    let s = stderr.to_ascii_lowercase();
    let has = |p: &[&str]| p.iter().any(|x| s.contains(x));
    if has(&["no space left on device", "disk quota"]) {
        (ResourceError, true)
    } else if has(&["no element", "erroneous pipeline", "could not link", "no such element or plugin"]) {
        // gst-launch could not build its pipeline: this node lacks a plugin. Running it
        // again here would fail the same way.
        (CapabilityMismatch, false)
    } else if has(&["not on whitelist"]) {
        // A playlist or list input (hls, concat, …): refused by design, never retried.
        (InputError, false)
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
        (NetworkError, true)
    } else if has(&[
        "unknown encoder",
        "unrecognized option",
        "invalid argument",
        "option not found",
        "error parsing",
        "no such filter",
    ]) {
        (UserError, false)
    } else if has(&[
        "invalid data found",
        "no such file or directory",
        "could not find codec parameters",
        "moov atom not found",
    ]) {
        (InputError, false)
    } else if matches!(exit, Exit::Signal(_)) {
        (PlatformError, true)
    } else {
        (RuntimeError, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ControlAction::*;
    use FailureReason::*;

    const LIMITS: Limits = Limits {
        timeout: Duration::from_secs(60),
        stall_timeout: Duration::from_secs(10),
        max_disk_bytes: Some(1 << 20),
        report_every: Duration::from_millis(450),
    };

    /// One progress block of ffmpeg's `-progress` stream.
    fn block(out_time_us: i64, total_size: u64, end: bool) -> Vec<String> {
        vec![
            "frame=25".into(),
            format!("out_time_us={out_time_us}"),
            format!("total_size={total_size}"),
            format!("progress={}", if end { "end" } else { "continue" }),
        ]
    }

    enum Step {
        Lines(Vec<String>),
        Command(JobCommand),
        Tick,
    }
    use Step::*;

    /// Steps at offsets (ms) from the start.
    type Script = Vec<(u64, Step)>;

    /// Run `steps` at the given offsets (ms) from the start; the effects of each.
    fn run(steps: Script) -> (Session, Vec<Vec<Effect>>, Instant) {
        let t0 = Instant::now();
        let mut s = Session::new(LIMITS, t0);
        let mut out = Vec::new();
        let mut now = t0;
        for (ms, step) in steps {
            now = t0 + Duration::from_millis(ms);
            out.push(match step {
                Lines(lines) => lines.iter().flat_map(|l| s.on_line(l, now)).collect(),
                Command(c) => s.on_command(c, now),
                Tick => s.on_tick(now),
            });
        }
        (s, out, now)
    }

    fn reported(effects: &[Effect]) -> bool {
        effects.iter().any(|e| matches!(e, Effect::Report(_)))
    }

    #[test]
    fn progress_is_reported_at_most_every_interval() {
        let (_, out, _) = run(vec![
            (0, Lines(block(1, 10, false))),
            (200, Lines(block(2, 10, false))),
            (500, Lines(block(3, 10, false))),
        ]);
        assert_eq!(out.iter().map(|e| reported(e)).collect::<Vec<_>>(), [true, false, true]);
    }

    #[test]
    fn the_first_stop_reason_wins() {
        let cases: Vec<(Script, Ending, usize)> = vec![
            // (steps, how it ends, terminates sent)
            (vec![(10, Command(JobCommand::Control(Cancel))), (20, Command(JobCommand::Stale))], Ending::Canceled, 1),
            (vec![(10, Command(JobCommand::Stale)), (20, Command(JobCommand::Control(Cancel)))], Ending::Discarded, 1),
            (vec![(10, Command(JobCommand::Abandon)), (61_000, Tick)], Ending::Abandoned, 1),
            (
                vec![(0, Lines(block(1, 2 << 20, false))), (10, Command(JobCommand::Control(Cancel)))],
                Ending::failed("the output grew past resource_limits.max_disk_mb (1 MiB)", ResourceError, false),
                1,
            ),
            (
                vec![(0, Lines(block(1, 0, false))), (11_000, Tick), (12_000, Command(JobCommand::Stale))],
                Ending::failed("no progress for 10s (stalled)", Timeout, true),
                1,
            ),
        ];
        for (steps, want, terminates) in cases {
            let (s, out, _) = run(steps);
            let sent = out.iter().flatten().filter(|e| **e == Effect::Terminate).count();
            assert_eq!((s.finish("ffmpeg", &Ok(Exit::Code(1)), None, ""), sent), (want, terminates));
        }
    }

    #[test]
    fn pause_stops_both_clocks_and_resume_restarts_them() {
        // Progress advances every 5 s while running, the job is paused for 100 s: neither
        // the 60 s limit nor the 10 s stall watchdog fires for the paused time.
        let mut steps = vec![(0, Lines(block(1, 0, false)))];
        steps.push((5_000, Command(JobCommand::Control(Pause))));
        steps.push((50_000, Tick));
        steps.push((105_000, Command(JobCommand::Control(Resume))));
        steps.push((106_000, Tick));
        steps.push((109_000, Lines(block(2, 0, false))));
        steps.push((115_000, Tick));
        let (s, out, now) = run(steps);
        assert_eq!(out[1], [Effect::Pause, Effect::Acknowledge(Pause)]);
        assert_eq!(out[3], [Effect::Resume, Effect::Acknowledge(Resume)]);
        assert!(out.iter().all(|e| !e.contains(&Effect::Terminate)), "{out:?}");
        assert_eq!(s.run_time(now), Duration::from_secs(15));
        // A second pause while paused, a resume while running: nothing.
        let (_, out, _) = run(vec![(0, Command(JobCommand::Control(Resume))), (1, Command(JobCommand::Control(Run)))]);
        assert!(out.iter().all(|e| e.is_empty()));
    }

    #[test]
    fn a_progress_reply_older_than_the_last_command_changes_nothing() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Session::new(LIMITS, t0);
        // A report leaves at 100 ms; the operator pauses (200) and resumes (300); the
        // report's reply, computed while paused, says "pause" at 400: ignored.
        assert_eq!(s.on_command(JobCommand::Control(Pause), at(200)), [Effect::Pause, Effect::Acknowledge(Pause)]);
        assert_eq!(s.on_command(JobCommand::Control(Resume), at(300)), [Effect::Resume, Effect::Acknowledge(Resume)]);
        assert!(s.on_command(JobCommand::Desired { control: Pause, asked_at: at(100) }, at(400)).is_empty());
        // A reply to a report sent after the last command is the backstop it was.
        assert_eq!(
            s.on_command(JobCommand::Desired { control: Pause, asked_at: at(500) }, at(600)),
            [Effect::Pause, Effect::Acknowledge(Pause)]
        );
        assert!(matches!(
            s.on_command(JobCommand::Desired { control: Cancel, asked_at: at(700) }, at(800))[..],
            [.., Effect::Acknowledge(Cancel)]
        ));
    }

    #[test]
    fn the_wall_clock_limit_counts_running_time() {
        let mut steps = vec![];
        for t in (0..=61).map(|s| s * 1000) {
            steps.push((t, Lines(block(t as i64 * 1000, 0, false))));
            steps.push((t, Tick));
        }
        let (s, out, _) = run(steps);
        let at = out.iter().position(|e| e.contains(&Effect::Terminate)).unwrap();
        assert_eq!(at, 2 * 61 + 1, "stopped at the first tick past 60 s");
        assert_eq!(
            s.finish("ffmpeg", &Ok(Exit::Signal(15)), None, ""),
            Ending::failed("ran past its 60s wall-clock limit", Timeout, true)
        );
    }

    #[test]
    fn no_pause_once_stopping_and_cancel_is_acknowledged() {
        let (_, out, _) =
            run(vec![(0, Command(JobCommand::Control(Cancel))), (1, Command(JobCommand::Control(Pause)))]);
        assert_eq!(out, [vec![Effect::Terminate, Effect::Acknowledge(Cancel)], vec![]]);
    }

    #[test]
    fn endings_from_the_exit() {
        let s = Session::new(LIMITS, Instant::now());
        let lost = ProcessError::Wait(std::io::Error::other("gone"));
        type Case = (Result<Exit, ProcessError>, Option<bool>, &'static str, Ending);
        let cases: Vec<Case> = vec![
            (Ok(Exit::Success), Some(true), "", Ending::Completed),
            (Ok(Exit::Success), None, "", Ending::Completed),
            (
                Ok(Exit::Success),
                Some(false),
                "",
                Ending::failed("the encoder exited 0 but wrote no output", RuntimeError, true),
            ),
            (
                Ok(Exit::Code(1)),
                Some(true),
                "frame=1\nrtmp://u:secret@h/live: Connection refused\n\n",
                Ending::failed("ffmpeg exit status 1: rtmp://***@h/live: Connection refused", NetworkError, true),
            ),
            (Ok(Exit::Signal(9)), None, "", Ending::failed("ffmpeg killed by signal 9: ", PlatformError, true)),
            (Err(lost), None, "", Ending::failed("waiting for the encoder failed: gone", PlatformError, true)),
        ];
        for (exit, wrote, stderr, want) in cases {
            assert_eq!(s.finish("ffmpeg", &exit, wrote, stderr), want, "{exit:?}");
        }
    }

    #[test]
    fn figures_come_from_the_end_block() {
        let t0 = Instant::now();
        let mut s = Session::new(LIMITS, t0);
        for l in ["frame=50", "fps=25", "out_time_us=2000000", "progress=continue"] {
            s.on_line(l, t0);
        }
        for l in ["frame=60", "fps=0", "out_time_us=N/A", "progress=end"] {
            s.absorb(l, t0);
        }
        let f = s.figures().unwrap();
        assert_eq!((f.frame, f.fps, f.out_time_us, f.end), (Some(60), Some(25.0), Some(2_000_000), true));
    }

    #[test]
    fn failures_are_classified() {
        let cases = [
            ("Unknown encoder 'foo'", Exit::Code(1), (UserError, false)),
            ("x.mp4: Invalid data found when processing input", Exit::Code(1), (InputError, false)),
            ("av_interleaved_write_frame(): No space left on device", Exit::Code(1), (ResourceError, true)),
            ("rtmp://h/live: Connection refused", Exit::Code(1), (NetworkError, true)),
            ("", Exit::Signal(9), (PlatformError, true)),
            ("something odd", Exit::Code(1), (RuntimeError, true)),
            ("WARNING: erroneous pipeline: no element \"rtmpsink\"", Exit::Code(1), (CapabilityMismatch, false)),
            ("[hls @ 0x1] Format not on whitelist 'mov,mp4'", Exit::Code(1), (InputError, false)),
        ];
        for (stderr, exit, want) in cases {
            assert_eq!(classify_failure(&exit, &error_lines(stderr)), want, "{stderr}");
        }
    }

    #[test]
    fn only_error_level_lines_classify() {
        let stderr = "[info] Input #0, lavfi, from 'x':\n[libx264 @ 0x1] [info] frame I:1 error_resilience\n\
                      [warning] deprecated pixel format\n[error] /in.mp4: No such file or directory\n\
                      [h264 @ 0x2] [fatal] out of memory\nplain gst line\n";
        assert_eq!(
            error_lines(stderr),
            "/in.mp4: No such file or directory\n[h264 @ 0x2] out of memory\nplain gst line\n"
        );
    }
}
