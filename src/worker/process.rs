//! One wrapper for every encoder process: argv as data (never a shell), its own
//! process group (so signals reach ffmpeg and anything it forks), the parent-death
//! signal, a nice level, and pause/resume/terminate on the whole group.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::process::Stdio;
use tokio::process::{Child, ChildStdout, Command};

pub struct EncoderProcess {
    pub child: Child,
    pub pgid: Pid,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<tokio::process::ChildStderr>,
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
    ) -> std::io::Result<EncoderProcess> {
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
        let mut child = cmd.spawn()?;
        let pid = child.id().ok_or_else(|| std::io::Error::other("process exited at once"))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        Ok(EncoderProcess { child, pgid: Pid::from_raw(pid as i32), stdout, stderr })
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

    /// SIGTERM (with SIGCONT, so a stopped group can act on it).
    pub fn terminate(&self) {
        self.signal(Signal::SIGTERM);
        self.signal(Signal::SIGCONT);
    }

    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }
}
