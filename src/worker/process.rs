//! One wrapper for every encoder process: argv as data (never a shell), its own
//! process group (so signals reach ffmpeg and anything it forks), the parent-death
//! signal, a nice level, pause/resume/terminate on the whole group, and the kill grace:
//! a group told to terminate is SIGKILLed if it has not exited `grace` later. Waiting
//! returns a typed [`Exit`] or [`ProcessError`].

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;

/// SIGKILL this long after SIGTERM if the group is still alive.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How an encoder process exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Success => f.write_str("exit status 0"),
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

impl From<std::process::ExitStatus> for Exit {
    fn from(st: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (st.success(), st.code(), st.signal()) {
            (true, _, _) => Exit::Success,
            (_, Some(c), _) => Exit::Code(c),
            (_, None, Some(s)) => Exit::Signal(s),
            (_, None, None) => Exit::Code(-1),
        }
    }
}

/// The process could not be run or watched.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("waiting for the encoder failed: {0}")]
    Wait(std::io::Error),
}

pub struct EncoderProcess {
    child: Child,
    pgid: Pid,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<tokio::process::ChildStderr>,
    grace: Duration,
    terminated: bool,
    /// When the group gets SIGKILL, once terminated.
    kill_at: Option<Instant>,
}

/// The first `n` CPUs this process may run on, as a CPU set.
fn cpu_set_of_first(n: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain bits; zeroed is the empty set, and the CPU_* helpers
    // only touch bits inside it.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            libc::CPU_SET(0, &mut set);
            return set;
        }
        let mut taken = 0;
        for cpu in 0..libc::CPU_SETSIZE as usize {
            if taken == n {
                break;
            }
            if libc::CPU_ISSET(cpu, &allowed) {
                libc::CPU_SET(cpu, &mut set);
                taken += 1;
            }
        }
        set
    }
}

/// CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl EncoderProcess {
    /// `cpus`: pin the group to this many of the CPUs the worker may use
    /// (`resource_limits.max_cpu_percent`); None = all of them.
    pub fn spawn(
        program: &str,
        argv: &[String],
        cwd: &std::path::Path,
        nice: i32,
        cpus: Option<usize>,
    ) -> Result<EncoderProcess, ProcessError> {
        let spawn_error = |source| ProcessError::Spawn { program: program.to_string(), source };
        let mut cmd = Command::new(program);
        cmd.args(argv)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let affinity = cpus.map(cpu_set_of_first);
        // SAFETY: only async-signal-safe calls (prctl, setpriority, sched_setaffinity)
        // between fork and exec; the CPU set was built before the fork.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::setpriority(libc::PRIO_PROCESS, 0, nice);
                if let Some(set) = &affinity
                    && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(spawn_error)?;
        let pid = child.id().ok_or_else(|| spawn_error(std::io::Error::other("process exited at once")))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let pgid = Pid::from_raw(pid as i32);
        Ok(EncoderProcess { child, pgid, stdout, stderr, grace: KILL_GRACE, terminated: false, kill_at: None })
    }

    /// Wait for the process to exit, SIGKILLing the group once a terminate's grace ran
    /// out. Cancel-safe: it can be one branch of a `select!` that loops.
    pub async fn wait(&mut self) -> Result<Exit, ProcessError> {
        loop {
            let kill_at = self.kill_at;
            let grace_over = async move {
                match kill_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = self.child.wait() => return status.map(Exit::from).map_err(ProcessError::Wait),
                _ = grace_over => {
                    self.kill();
                    self.kill_at = None;
                }
            }
        }
    }

    pub fn signal(&self, sig: Signal) {
        if let Err(e) = killpg(self.pgid, sig) {
            log::debug!("killpg({}, {sig}) failed: {e}", self.pgid);
        }
    }

    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// SIGTERM (with SIGCONT, so a stopped group can act on it); SIGKILL follows after
    /// the grace if the process has not exited by then (see `wait`). Once only.
    pub fn terminate(&mut self) {
        if self.terminated {
            return;
        }
        self.terminated = true;
        self.signal(Signal::SIGTERM);
        self.signal(Signal::SIGCONT);
        self.kill_at = Some(Instant::now() + self.grace);
    }

    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }
}
