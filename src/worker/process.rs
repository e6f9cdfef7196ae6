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

impl EncoderProcess {
    pub fn spawn(program: &str, argv: &[String], cwd: &std::path::Path, nice: i32) -> std::io::Result<EncoderProcess> {
        let mut cmd = Command::new(program);
        cmd.args(argv)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        // SAFETY: only async-signal-safe calls (prctl, setpriority) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::setpriority(libc::PRIO_PROCESS, 0, nice);
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
