//! `ffrtmp worker`: the agent on every transcoding machine.
//!
//! It keeps a stable node id in its work dir, probes what the machine can really do,
//! registers, heartbeats at the interval the master asks for (with load, RAM, GPU
//! figures and the jobs it runs), long-polls for work up to its free slots, long-polls
//! for control commands, and runs each job through [`executor`]. Everything runs on
//! one actix thread (the HTTP client is not `Send`); shared state is single-threaded.

pub mod batches;
pub mod delivery;
pub mod executor;
pub mod hardware;
pub mod input;
pub mod metrics;
pub mod probe;
pub mod process;
pub mod qoe;
mod recovery;
pub mod session;
mod stages;

use crate::api_client::{self as client, ClientError, MasterClient};
use crate::wire::*;
use clap::Args;
use executor::JobCommand;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Master URL; several comma-separated for highly available masters (the worker
    /// follows whichever leads).
    #[arg(long, env = "FFRTMP_MASTER", default_value = "http://127.0.0.1:8080")]
    pub master: String,
    /// API key (worker or admin role); also FFMPEG_RTMP_API_KEY.
    #[arg(long, env = "FFRTMP_API_KEY")]
    pub api_key: Option<String>,
    /// File holding the API key (it never shows in `ps` or the environment).
    #[arg(long, env = "FFRTMP_API_KEY_FILE", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// PEM file of a CA to trust for an https:// master (besides the public roots).
    #[arg(long, env = "FFRTMP_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Jobs run at once.
    #[arg(long, env = "FFRTMP_MAX_CONCURRENT_JOBS", default_value_t = 1)]
    pub max_concurrent_jobs: u32,
    /// Work dir: node id, attempt dirs, finished outputs.
    #[arg(long, env = "FFRTMP_WORK_DIR", default_value = "ffrtmp-work")]
    pub work_dir: PathBuf,
    /// Port of /metrics, /health, /ready (0 = any free port).
    #[arg(long, env = "FFRTMP_WORKER_METRICS_PORT", default_value_t = 9091)]
    pub metrics_port: u16,
    /// Address of that listener: loopback by default, since it publishes the node id;
    /// 0.0.0.0 (or a private address) to let a Prometheus on another host scrape it.
    #[arg(long, env = "FFRTMP_WORKER_METRICS_BIND", default_value = "127.0.0.1")]
    pub metrics_bind: std::net::IpAddr,
    /// Node name shown by the master (default: host name).
    #[arg(long, env = "FFRTMP_NAME")]
    pub name: Option<String>,
    /// Directory job inputs may be read from (repeatable). Without one, only the synthetic source is allowed.
    #[arg(long = "input-root", env = "FFRTMP_INPUT_ROOTS", value_delimiter = ',')]
    pub input_roots: Vec<PathBuf>,
    #[arg(long, env = "FFRTMP_FFMPEG", default_value = "ffmpeg")]
    pub ffmpeg: String,
    /// Directory `file://` job destinations may write into (repeatable): a shared
    /// library. Without one, outputs go to the master (or a bucket) only.
    #[arg(long = "output-root", env = "FFRTMP_OUTPUT_ROOTS", value_delimiter = ',')]
    pub output_roots: Vec<PathBuf>,
    /// ffprobe, which reads every input once before its encode.
    #[arg(long, env = "FFRTMP_FFPROBE", default_value = "ffprobe")]
    pub ffprobe: String,
    /// Largest input a job may download (URL and artifact:// inputs), in bytes.
    #[arg(long, env = "FFRTMP_MAX_INPUT_BYTES", default_value_t = 20 << 30)]
    pub max_input_bytes: u64,
    #[arg(long, env = "FFRTMP_GST_LAUNCH", default_value = "gst-launch-1.0")]
    pub gst: String,
    /// RTMP base for jobs that stream without their own rtmp_url.
    #[arg(long, env = "FFRTMP_RTMP_BASE", default_value = "rtmp://127.0.0.1:1935/live")]
    pub rtmp_base: String,
    /// Kill an encode whose output time has not advanced for this many seconds.
    #[arg(long, env = "FFRTMP_STALL_TIMEOUT", default_value_t = 60)]
    pub stall_timeout: u64,
    /// Nice level of encoder processes.
    #[arg(long, env = "FFRTMP_NICE", default_value_t = 10)]
    pub nice: i32,
    /// ffmpeg runs real encodes; noop sleeps --noop-ms and reports success (for
    /// scheduler benchmarks and fault tests, independent of encode time).
    #[arg(long, env = "FFRTMP_EXECUTOR", value_enum, default_value = "ffmpeg")]
    pub executor: Executor,
    #[arg(long, env = "FFRTMP_NOOP_MS", default_value_t = 0)]
    pub noop_ms: u64,
    /// On SIGTERM, wait this long for running jobs before abandoning them.
    #[arg(long, env = "FFRTMP_DRAIN_TIMEOUT", default_value_t = 60)]
    pub drain_timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Executor {
    Ffmpeg,
    Noop,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub work_dir: PathBuf,
    pub input_roots: Vec<PathBuf>,
    pub output_roots: Vec<PathBuf>,
    pub ffmpeg: String,
    pub ffprobe: String,
    pub max_input_bytes: u64,
    pub gst: String,
    pub rtmp_base: String,
    pub stall_timeout: Duration,
    pub nice: i32,
    pub executor: Executor,
    pub noop: Duration,
}

struct Running {
    attempt: i32,
    tx: mpsc::UnboundedSender<JobCommand>,
}

/// State shared by the worker's tasks (one thread, no locks).
pub struct WorkerShared {
    pub cfg: Rc<WorkerConfig>,
    pub client: MasterClient,
    pub node_id: String,
    pub probe: probe::Probe,
    pub hw: RefCell<hardware::Hardware>,
    pub metrics: metrics::WorkerMetrics,
    running: RefCell<HashMap<String, Running>>,
    slot_freed: Notify,
    stopping: Cell<bool>,
    /// The claim loop has ended (no poll of this worker is open any more).
    claiming_ended: Cell<bool>,
    registration: RefCell<NodeRegistration>,
    max_jobs: u32,
    /// Running jobs' progress, sent to the master together once per interval.
    pub progress: batches::ProgressBatcher,
    /// Results ready at the same time, sent to the master together.
    pub results: batches::ResultBatcher,
}

/// The node token kept in the work dir (owner-only), if this node was issued one.
fn saved_node_token(work_dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(work_dir.join("node_token")).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Keep a newly issued node token: written owner-only, then renamed into place, so a
/// crash never leaves half a token.
fn save_node_token(work_dir: &std::path::Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = work_dir.join("node_token.tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, work_dir.join("node_token"))
}

/// The node id kept in the work dir (created on first start).
pub fn stable_node_id(work_dir: &std::path::Path) -> std::io::Result<String> {
    let path = work_dir.join("node_id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, &id)?;
    Ok(id)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "worker".into())
}

/// A running worker (for `ffrtmp up` and tests).
pub struct WorkerHandle {
    pub shared: Rc<WorkerShared>,
    pub metrics_addr: std::net::SocketAddr,
}

/// Start the worker's tasks on the current actix System.
pub async fn start(args: WorkerArgs) -> anyhow::Result<WorkerHandle> {
    if args.max_concurrent_jobs == 0 || args.max_concurrent_jobs > 1024 {
        anyhow::bail!("--max-concurrent-jobs must be between 1 and 1024");
    }
    std::fs::create_dir_all(&args.work_dir)
        .map_err(|e| anyhow::anyhow!("cannot create work dir {}: {e}", args.work_dir.display()))?;
    let work_dir = args.work_dir.canonicalize()?;
    let node_id = stable_node_id(&work_dir)?;
    let from_file = args.api_key_file.as_deref().map(|f| crate::os::read_secret("--api-key-file", f)).transpose()?;
    let key = from_file
        .or_else(|| args.api_key.clone())
        .or_else(|| std::env::var("FFMPEG_RTMP_API_KEY").ok())
        .filter(|k| !k.is_empty());
    let client = MasterClient::with_ca(&args.master, key, args.ca_cert.as_deref())
        .map_err(|e| anyhow::anyhow!("--ca-cert: {e}"))?;
    client.set_node_token(saved_node_token(&work_dir));
    let probe = match args.executor {
        Executor::Ffmpeg => probe::probe(&args.ffmpeg, &args.gst).await,
        // A noop worker claims to have every CPU encoder, so it can take any CPU job.
        Executor::Noop => probe::Probe {
            ffmpeg_version: Some("noop executor".into()),
            encoders: crate::domain::params::KNOWN_ENCODERS
                .iter()
                .filter(|e| e.starts_with("lib"))
                .map(|e| e.to_string())
                .collect(),
            ..Default::default()
        },
    };
    log::info!(
        "node {node_id}: encoders {:?}, {}",
        probe.encoders,
        probe.ffmpeg_version.as_deref().unwrap_or("no ffmpeg")
    );
    let mut hw = hardware::Hardware::new();
    let snap = hw.snapshot(&work_dir);
    let gpus = hw.gpus();
    let metrics = metrics::WorkerMetrics::new(&node_id);
    metrics.set_encoders(&probe.encoders);
    metrics.slots.set(args.max_concurrent_jobs as i64);
    let host = hostname();
    let mut labels = serde_json::Map::new();
    labels.insert("os".into(), std::env::consts::OS.into());
    labels.insert("arch".into(), std::env::consts::ARCH.into());
    let registration = NodeRegistration {
        node_id: Some(node_id.clone()),
        name: Some(args.name.clone().unwrap_or_else(|| host.clone())),
        address: host,
        node_type: Some("server".into()),
        cpu_threads: snap.cpu_threads,
        cpu_model: snap.cpu_model.clone(),
        cpu_load_percent: Some(snap.cpu_load_percent),
        has_gpu: !gpus.is_empty(),
        gpu_type: gpus.first().map(|g| g.name.clone()),
        gpu_capabilities: probe.encoders.iter().filter(|e| crate::domain::params::is_gpu_encoder(e)).cloned().collect(),
        ram_total_bytes: snap.ram_total_bytes,
        ram_free_bytes: Some(snap.ram_free_bytes),
        labels,
        max_concurrent_jobs: Some(args.max_concurrent_jobs),
        encoders: Some(probe.encoders.clone()),
        gpus,
        ffmpeg_version: probe.ffmpeg_version.clone(),
        gstreamer_version: probe.gstreamer_version.clone(),
        disk_free_bytes: snap.disk_free_bytes,
        rtmp_base: Some(args.rtmp_base.clone()),
        gstreamer_rtmp: probe.gstreamer_rtmp,
        request_node_token: true,
        heartbeat_interval_seconds: Some(FIRST_HEARTBEAT_INTERVAL.as_secs_f64()),
    };
    let (metrics_addr, server) = metrics::serve(
        metrics.clone(),
        metrics::ReadyInputs {
            ffmpeg_ok: probe.ffmpeg_version.is_some(),
            work_dir: work_dir.clone(),
            masters: client::master_urls(&args.master).map_err(|e| anyhow::anyhow!("--master: {e}"))?,
            tls: std::sync::Arc::new(
                client::tls_config(args.ca_cert.as_deref()).map_err(|e| anyhow::anyhow!("--ca-cert: {e}"))?,
            ),
        },
        std::net::SocketAddr::new(args.metrics_bind, args.metrics_port),
    )?;
    actix_rt::spawn(server);
    let shared = Rc::new(WorkerShared {
        cfg: Rc::new(WorkerConfig {
            work_dir,
            input_roots: args.input_roots.clone(),
            output_roots: args.output_roots.clone(),
            ffmpeg: args.ffmpeg.clone(),
            ffprobe: args.ffprobe.clone(),
            max_input_bytes: args.max_input_bytes,
            gst: args.gst.clone(),
            rtmp_base: args.rtmp_base.clone(),
            stall_timeout: Duration::from_secs(args.stall_timeout.max(1)),
            nice: args.nice,
            executor: args.executor,
            noop: Duration::from_millis(args.noop_ms),
        }),
        client,
        node_id,
        probe,
        hw: RefCell::new(hw),
        metrics,
        running: RefCell::new(HashMap::new()),
        slot_freed: Notify::new(),
        stopping: Cell::new(false),
        claiming_ended: Cell::new(false),
        registration: RefCell::new(registration),
        max_jobs: args.max_concurrent_jobs,
        progress: Default::default(),
        results: Default::default(),
    });
    register(&shared).await;
    // Attempts of a previous run: deleted only once the master says so.
    recovery::recover_attempts(&shared).await;
    actix_rt::spawn(heartbeat_loop(shared.clone()));
    actix_rt::spawn(control_loop(shared.clone()));
    actix_rt::spawn(claim_loop(shared.clone()));
    actix_rt::spawn({
        let s = shared.clone();
        async move { s.progress.run(s.client.clone(), s.node_id.clone()).await }
    });
    actix_rt::spawn({
        let s = shared.clone();
        async move { s.results.run(s.client.clone(), &s).await }
    });
    Ok(WorkerHandle { shared, metrics_addr })
}

/// Register, retrying until the master answers.
async fn register(shared: &WorkerShared) {
    let mut delay = Duration::from_millis(200);
    loop {
        let reg = shared.registration.borrow().clone();
        match shared.client.register(&reg).await {
            Ok(r) => {
                if let Some(t) = r.node_token {
                    if let Err(e) = save_node_token(&shared.cfg.work_dir, &t) {
                        log::error!("cannot keep the node token in {}: {e}", shared.cfg.work_dir.display());
                    }
                    shared.client.set_node_token(Some(t));
                }
                log::info!("registered as node {} ({})", r.node.id, r.node.name);
                return;
            }
            Err(e) => {
                log::warn!("registration failed: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn running_jobs(shared: &WorkerShared) -> Vec<RunningJob> {
    shared.running.borrow().iter().map(|(id, r)| RunningJob { job_id: id.clone(), attempt: r.attempt }).collect()
}

fn send(shared: &WorkerShared, job_id: &str, attempt: Option<i32>, cmd: JobCommand) {
    if let Some(r) = shared.running.borrow().get(job_id)
        && attempt.is_none_or(|a| a == r.attempt)
    {
        let _ = r.tx.send(cmd);
    }
}

/// The heartbeat interval a worker declares until the master asks for another.
const FIRST_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

async fn heartbeat_loop(shared: Rc<WorkerShared>) {
    let mut interval = FIRST_HEARTBEAT_INTERVAL;
    while !(shared.stopping.get() && shared.running.borrow().is_empty()) {
        let (snap, gpus) = {
            let mut hw = shared.hw.borrow_mut();
            (hw.snapshot(&shared.cfg.work_dir), hw.gpus())
        };
        shared.metrics.cpu_usage.set(snap.cpu_load_percent / 100.0);
        shared.metrics.memory_total.set(snap.ram_total_bytes as i64);
        shared.metrics.memory_used.set(snap.ram_total_bytes.saturating_sub(snap.ram_free_bytes) as i64);
        shared.metrics.disk_free.set(snap.disk_free_bytes.unwrap_or(0) as i64);
        shared.metrics.set_gpus(&gpus);
        let hb = Heartbeat {
            cpu_load_percent: Some(snap.cpu_load_percent),
            ram_free_bytes: Some(snap.ram_free_bytes),
            disk_free_bytes: snap.disk_free_bytes,
            gpus: Some(gpus),
            running_jobs: Some(running_jobs(&shared)),
            // The master loses a node after three of the intervals it declared.
            heartbeat_interval_seconds: Some(interval.as_secs_f64()),
        };
        match shared.client.heartbeat(&shared.node_id, &hb).await {
            Ok(r) => {
                shared.metrics.heartbeats.inc();
                for s in r.stale_jobs {
                    log::warn!("master says job {} attempt {} is not ours any more: killing it", s.job_id, s.attempt);
                    send(&shared, &s.job_id, Some(s.attempt), JobCommand::Stale);
                }
                let asked = Duration::from_secs_f64(r.heartbeat_interval_seconds.clamp(0.05, 3600.0));
                if asked != interval {
                    // Declare the new interval at once, before waiting that long.
                    interval = asked;
                    continue;
                }
            }
            Err(ClientError::Status { status: 404, .. }) => register(&shared).await,
            Err(e) => log::warn!("heartbeat failed: {e}"),
        }
        tokio::time::sleep(interval).await;
    }
}

async fn control_loop(shared: Rc<WorkerShared>) {
    // Keeps listening while draining (running jobs may still be canceled).
    while !(shared.stopping.get() && shared.running.borrow().is_empty()) {
        match shared.client.control(&shared.node_id, 25.0).await {
            Ok(c) => {
                for cmd in c.commands {
                    send(&shared, &cmd.job_id, Some(cmd.attempt), JobCommand::Control(cmd.action));
                }
            }
            Err(e) => {
                log::debug!("control poll failed: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn claim_loop(shared: Rc<WorkerShared>) {
    let mut backoff = Duration::from_millis(200);
    while !shared.stopping.get() {
        let free = shared.max_jobs.saturating_sub(shared.running.borrow().len() as u32);
        if free == 0 {
            shared.slot_freed.notified().await;
            continue;
        }
        match shared.client.next_jobs(&shared.node_id, 25.0, free.min(MAX_JOBS_PER_POLL)).await {
            Ok(jobs) => {
                backoff = Duration::from_millis(200);
                for job in jobs {
                    if shared.stopping.get() {
                        // Placed while the drain began: give it back at once rather than
                        // leave it on this node until the master notices.
                        hand_back(&shared, &job).await;
                    } else {
                        start_job(&shared, job);
                    }
                }
            }
            Err(ClientError::Status { status: 404, .. }) => register(&shared).await,
            Err(e) => {
                log::warn!("asking for work failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    shared.claiming_ended.set(true);
}

impl batches::SlotRefill for Rc<WorkerShared> {
    fn slots(&self) -> u32 {
        self.max_jobs
    }

    fn claim_for(&self, results: &[JobResult]) -> Option<ClaimNext> {
        if self.stopping.get() {
            return None;
        }
        // Only this run's jobs hold slots (a recovered attempt's result holds none).
        let running = self.running.borrow();
        let ending = results
            .iter()
            .filter(|r| running.get(&r.job_id).is_some_and(|j| r.attempt.is_none_or(|a| a == j.attempt)))
            .count() as u32;
        (ending > 0).then(|| ClaimNext { node_id: self.node_id.clone(), max: ending.min(MAX_JOBS_PER_POLL) })
    }

    fn placed(&self, jobs: Vec<Job>) {
        for job in jobs {
            if self.stopping.get() {
                let s = self.clone();
                actix_rt::spawn(async move { hand_back(&s, &job).await });
            } else {
                start_job(self, job);
            }
        }
    }
}

/// Return a job placed on this worker that it will not run (it is draining).
async fn hand_back(shared: &WorkerShared, job: &Job) {
    let release = LeaseRelease { node_id: shared.node_id.clone(), attempt: job.attempt };
    match shared.client.release(&job.id, &release).await {
        Ok(_) => log::info!("draining: handed job {} back", job.id),
        Err(e) => {
            log::warn!("draining: job {} not handed back ({e}); the master requeues it when it sees it gone", job.id)
        }
    }
}

fn start_job(shared: &Rc<WorkerShared>, job: Job) {
    // Job ids name directories: only a UUID may become a path.
    if uuid::Uuid::parse_str(&job.id).is_err() {
        log::error!("refusing a job whose id is not a UUID: {:?}", job.id);
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    shared.running.borrow_mut().insert(job.id.clone(), Running { attempt: job.attempt, tx: tx.clone() });
    let s = shared.clone();
    actix_rt::spawn(async move {
        let id = job.id.clone();
        let ending = match s.cfg.executor {
            Executor::Ffmpeg => executor::run_job(s.clone(), job, rx, tx).await,
            Executor::Noop => executor::run_noop(s.clone(), job, rx).await,
        };
        log::info!("job {id} ended: {}", crate::domain::redact::redact_urls(&format!("{ending:?}")));
        s.running.borrow_mut().remove(&id);
        s.slot_freed.notify_one();
    });
}

impl WorkerHandle {
    pub fn running(&self) -> usize {
        self.shared.running.borrow().len()
    }

    /// Stop claiming; wait up to `deadline` for running jobs, then kill the rest.
    pub async fn drain(&self, deadline: Duration) {
        self.shared.stopping.set(true);
        self.shared.slot_freed.notify_one();
        let until = tokio::time::Instant::now() + deadline;
        // Withdraw the parked poll, so the master places nothing more here; a claim that
        // was already committing is handed back by the claim loop.
        let withdrawn = match self.shared.client.next_jobs(&self.shared.node_id, 0.0, 0).await {
            Ok(_) => true,
            Err(e) => {
                // An older master: its poll ends on its own, and what it places is handed back.
                log::debug!("withdrawing the poll failed: {e}");
                false
            }
        };
        while withdrawn && !self.shared.claiming_ended.get() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while self.running() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for r in self.shared.running.borrow().values() {
            let _ = r.tx.send(JobCommand::Abandon);
        }
        while self.running() > 0 && tokio::time::Instant::now() < until + Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Run the worker until SIGTERM/SIGINT, then drain.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let drain = Duration::from_secs(args.drain_timeout);
    let h = start(args).await?;
    let shutdown = crate::os::shutdown_signal();
    println!("ffrtmp worker {} running (metrics: http://{}/metrics)", h.shared.node_id, h.metrics_addr);
    use std::io::Write;
    std::io::stdout().flush().ok();
    crate::os::notify_systemd(true, &format!("node {} registered, taking jobs", h.shared.node_id));
    shutdown.await;
    crate::os::notify_systemd(false, &format!("draining {} running job(s)", h.running()));
    log::info!("draining: no new jobs, waiting up to {drain:?} for {} running", h.running());
    h.drain(drain).await;
    Ok(())
}
