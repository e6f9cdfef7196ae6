//! Process handling shared by the bench harness (`ffrtmp bench`) and the e2e test
//! harness: start this binary (or another program) and wait for the line that says it
//! is ready, kill it when its handle drops, read a process's state, memory and CPU
//! from /proc, and wait on a condition with a deadline (never a fixed sleep).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) when dropped.
pub struct Proc {
    pub child: Child,
    /// The stdout line that announced it ready.
    pub line: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `cmd` with stdout piped and wait up to `timeout` for a stdout line starting
/// with `ready_prefix` (its stdout keeps being drained afterwards).
pub fn spawn_ready(mut cmd: Command, ready_prefix: &str, timeout: Duration) -> std::io::Result<Proc> {
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = ready_prefix.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with(&prefix) {
                let _ = tx.send(line);
            }
        }
    });
    match rx.recv_timeout(timeout) {
        Ok(line) => Ok(Proc { child, line }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(std::io::Error::other(format!("no line starting with {ready_prefix:?} within {timeout:?}")))
        }
    }
}

/// The URL a process printed after `marker` in its ready line
/// (e.g. "ffrtmp master listening on http://127.0.0.1:41234 (metrics: …)").
pub fn url_after(line: &str, marker: &str) -> Option<String> {
    let i = line.find(marker)?;
    line[i + marker.len()..].split_whitespace().next().map(str::to_string)
}

/// Poll `cond` until it holds or `timeout` passes; panics naming `what` if it never does.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Resident memory of a process, bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) / hz.max(1.0)
}

/// What a process's live threads have spent, in seconds, from the scheduler's own
/// nanosecond counters (`/proc/<pid>/task/*/schedstat`): on a CPU, and runnable but
/// waiting for one. Precise where [`cpu_seconds`] counts 10 ms ticks (a 50 ms bench
/// window read ±20 % from those); threads that have exited are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SchedTimes {
    pub on_cpu: f64,
    pub waiting: f64,
}

impl std::ops::Sub for SchedTimes {
    type Output = SchedTimes;
    fn sub(self, before: SchedTimes) -> SchedTimes {
        SchedTimes { on_cpu: self.on_cpu - before.on_cpu, waiting: self.waiting - before.waiting }
    }
}

impl std::iter::Sum for SchedTimes {
    fn sum<I: Iterator<Item = SchedTimes>>(it: I) -> SchedTimes {
        it.fold(SchedTimes::default(), |a, b| SchedTimes {
            on_cpu: a.on_cpu + b.on_cpu,
            waiting: a.waiting + b.waiting,
        })
    }
}

/// [`SchedTimes`] of the process `pid`: the sum over its live threads.
pub fn sched_times(pid: u32) -> SchedTimes {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .map(|line| parse_schedstat(&line))
        .sum()
}

/// `<ns on cpu> <ns runnable, waiting> <timeslices>`.
fn parse_schedstat(line: &str) -> SchedTimes {
    let mut f = line.split_whitespace().map(|v| v.parse::<f64>().unwrap_or(0.0) / 1e9);
    SchedTimes { on_cpu: f.next().unwrap_or(0.0), waiting: f.next().unwrap_or(0.0) }
}

/// The state letter of a /proc/<pid>/stat text (R, S, T, Z, …).
pub fn process_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next())
}

pub fn pid_state(pid: i32) -> Option<char> {
    process_state(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Is something listening on this TCP port (from /proc/net/tcp*, without connecting)?
pub fn port_listening(port: u16) -> bool {
    let hex = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).unwrap_or_default().lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && format!("{} ", &cols[1][cols[1].len() - 5..]) == hex && cols[3] == "0A"
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me) > 0);
        assert!(cpu_seconds(me) >= 0.0);
        // This test's own thread has run, so the live threads' time is above zero.
        assert!(sched_times(me).on_cpu > 0.0);
        assert_eq!(parse_schedstat("2500000000 500000000 7\n"), SchedTimes { on_cpu: 2.5, waiting: 0.5 });
        assert!(pid_state(me as i32).is_some());
        assert_eq!(process_state("12 (a (b)) S 1"), Some('S'));
        assert_eq!(url_after("x listening on http://h:1 (m)", "listening on ").as_deref(), Some("http://h:1"));
    }

    #[test]
    fn spawns_and_waits_for_ready() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo starting; echo ready at 42; sleep 30"]);
        let p = spawn_ready(c, "ready at", Duration::from_secs(10)).unwrap();
        assert_eq!(p.line, "ready at 42");
        let pid = p.pid() as i32;
        drop(p);
        assert!(pid_state(pid).is_none(), "killed and reaped on drop");
        let mut c = Command::new("true");
        c.arg("x");
        assert!(spawn_ready(c, "never", Duration::from_millis(200)).is_err());
    }
}
