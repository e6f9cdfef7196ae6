//! The operator's command line: `ffrtmp jobs …` and `ffrtmp nodes …`.
//!
//! Connection settings resolve flag > environment > config file > default:
//! `--master` / `MASTER_URL` (or `FFRTMP_MASTER_URL`) / `master_url` in
//! `~/.config/ffrtmp/config.toml` / `http://127.0.0.1:8080`; the same for the API key
//! (`--api-key` / `MASTER_API_KEY`, `FFRTMP_API_KEY` / `api_key`). Every failure prints
//! one line on stderr and exits non-zero.

mod live;
mod outputs;
mod render;
pub mod templates;

use crate::api_client::{ClientError, MasterClient};
use crate::wire::*;
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_MASTER: &str = "http://127.0.0.1:8080";

/// Exit code of `--follow` when the job ended in failed, canceled or rejected.
pub const EXIT_JOB_UNSUCCESSFUL: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Master URL, or several comma-separated (highly available masters: the CLI
    /// follows the leader) [env: MASTER_URL, FFRTMP_MASTER_URL; config: master_url;
    /// default: http://127.0.0.1:8080]
    #[arg(long, global = true)]
    pub master: Option<String>,
    /// API key [env: MASTER_API_KEY, FFRTMP_API_KEY; config: api_key]
    #[arg(long, global = true)]
    pub api_key: Option<String>,
    /// File holding the API key, kept out of `ps` and shell history [env: FFRTMP_API_KEY_FILE; config: api_key_file]
    #[arg(long, global = true)]
    pub api_key_file: Option<PathBuf>,
    /// Output format [config: output; default: table]
    #[arg(long, short = 'o', global = true, value_enum)]
    pub output: Option<OutputFormat>,
    /// Config file [env: FFRTMP_CONFIG; default: ~/.config/ffrtmp/config.toml]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// CA certificate (PEM) to trust for an https:// master [env: FFRTMP_CA_CERT; config: ca_cert]
    #[arg(long, global = true)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(alias = "master")]
    master_url: Option<String>,
    #[serde(alias = "token")]
    api_key: Option<String>,
    api_key_file: Option<PathBuf>,
    output: Option<OutputFormat>,
    ca_cert: Option<PathBuf>,
}

/// Resolved connection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub master: String,
    pub api_key: Option<String>,
    pub output: OutputFormat,
    pub ca_cert: Option<PathBuf>,
}

fn env_any(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

fn key_from_file(f: &std::path::Path) -> Result<String, String> {
    crate::os::read_secret("--api-key-file", f).map_err(|e| e.to_string())
}

pub fn resolve(g: &GlobalOpts) -> Result<Settings, String> {
    let path = g.config.clone().or_else(|| env_any(&["FFRTMP_CONFIG"]).map(PathBuf::from));
    let explicit = path.is_some();
    let path = path.or_else(|| env_any(&["HOME"]).map(|h| PathBuf::from(h).join(".config/ffrtmp/config.toml")));
    let file = match path {
        Some(p) if p.exists() || explicit => {
            let text =
                std::fs::read_to_string(&p).map_err(|e| format!("cannot read config file {}: {e}", p.display()))?;
            toml::from_str::<ConfigFile>(&text)
                .map_err(|e| format!("bad config file {}: {}", p.display(), e.message()))?
        }
        _ => ConfigFile::default(),
    };
    let master = g
        .master
        .clone()
        .or_else(|| env_any(&["MASTER_URL", "FFRTMP_MASTER_URL"]))
        .or(file.master_url)
        .unwrap_or_else(|| DEFAULT_MASTER.to_string());
    if !(master.starts_with("http://") || master.starts_with("https://")) {
        return Err(format!("master URL '{master}' must start with http:// or https://"));
    }
    Ok(Settings {
        master: master.trim_end_matches('/').to_string(),
        api_key: match (&g.api_key, &g.api_key_file) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(f)) => Some(key_from_file(f)?),
            (None, None) => match env_any(&["MASTER_API_KEY", "FFRTMP_API_KEY"]) {
                Some(k) => Some(k),
                None => match env_any(&["FFRTMP_API_KEY_FILE"]).map(PathBuf::from).or(file.api_key_file) {
                    Some(f) => Some(key_from_file(&f)?),
                    None => file.api_key,
                },
            },
        },
        output: g.output.or(file.output).unwrap_or(OutputFormat::Table),
        ca_cert: g.ca_cert.clone().or_else(|| env_any(&["FFRTMP_CA_CERT"]).map(PathBuf::from)).or(file.ca_cert),
    })
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the submit variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
pub enum JobsCommand {
    /// Submit a job.
    Submit(SubmitArgs),
    /// List jobs, newest first.
    List(ListArgs),
    /// Show one job (UUID or sequence number); --follow draws live progress until it ends.
    Status {
        id: String,
        #[arg(long, short)]
        follow: bool,
    },
    /// Cancel a job.
    Cancel { id: String },
    /// Pause a running job (its process is stopped, not killed).
    Pause { id: String },
    /// Resume a paused job.
    Resume { id: String },
    /// Queue a failed or canceled job again.
    Retry { id: String },
    /// Show a job's logs; --follow waits for the job to end.
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
    },
    /// List a job's stored outputs (name, size, type, SHA-256).
    Outputs { id: String },
    /// Download a job's outputs from the master, verified against their SHA-256.
    Download {
        id: String,
        /// Only this output.
        #[arg(long)]
        name: Option<String>,
        /// Directory to write into.
        #[arg(long, short = 'd', default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[arg(long, default_value = "")]
    pub scenario: String,
    /// Input: a file under a worker's input roots, an http(s):// URL the master's
    /// --input-allow admits, or artifact://<job-id>/<name>; default: a synthetic source.
    #[arg(long)]
    pub input: Option<String>,
    /// Output file name.
    #[arg(long)]
    pub output_file: Option<String>,
    /// h264, h265, vp9, av1, h264_nvenc, …
    #[arg(long)]
    pub codec: Option<String>,
    /// e.g. 2500k or 5M.
    #[arg(long)]
    pub bitrate: Option<String>,
    #[arg(long)]
    pub preset: Option<String>,
    /// WxH or 720p/1080p/4k.
    #[arg(long)]
    pub resolution: Option<String>,
    #[arg(long)]
    pub fps: Option<u32>,
    /// Seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// auto, ffmpeg or gstreamer.
    #[arg(long, default_value = "auto")]
    pub engine: String,
    /// live, default or batch.
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// high, medium or low.
    #[arg(long, default_value = "medium")]
    pub priority: String,
    /// file or rtmp.
    #[arg(long)]
    pub output_mode: Option<String>,
    #[arg(long)]
    pub rtmp_url: Option<String>,
    #[arg(long)]
    pub max_retries: Option<i32>,
    #[arg(long, default_value = "auto")]
    pub confidence: String,
    /// Constant quality (x264/x265 CRF, 0–51; lower is better).
    #[arg(long)]
    pub crf: Option<u32>,
    /// Split the encode into chunks of this many seconds run on many workers and
    /// stitched losslessly, or `auto` (only a long input, only with workers to share).
    #[arg(long, value_name = "SECONDS|auto")]
    pub chunk: Option<String>,
    /// Extra parameter, repeatable: --param qoe=true --param threads=4
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Start from this template (`ffrtmp templates list`); other options override it.
    #[arg(long)]
    pub template: Option<String>,
    /// Run only after this job has completed (repeatable).
    #[arg(long, value_name = "JOB_ID")]
    pub after: Vec<String>,
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Follow the job until it ends.
    #[arg(long, short)]
    pub follow: bool,
    /// Follow the job, then download its outputs into this directory.
    #[arg(long, value_name = "DIR")]
    pub download: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub priority: Option<String>,
    #[arg(long)]
    pub node: Option<String>,
    /// Only the children of this graph (job id).
    #[arg(long)]
    pub parent: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// The cursor printed by the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List nodes.
    List,
    /// Hardware, GPUs, probed encoders, running jobs and last heartbeat of a node.
    Describe { id: String },
    /// Let a node finish its jobs and take no new ones.
    Drain { id: String },
    /// Let a drained node take work again.
    Undrain { id: String },
    /// Forget a node (refused while it runs jobs).
    Remove { id: String },
}

/// A CLI failure: message for stderr and the exit code.
#[derive(Debug)]
pub struct CliError(pub String, pub i32);

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Transport(m) => CliError(format!("cannot reach the master: {m}"), 1),
            ClientError::Status { status, code, message } => {
                CliError(format!("master answered {status} {code}: {message}"), 1)
            }
            ClientError::Decode(m) => CliError(format!("unexpected answer from the master: {m}"), 1),
        }
    }
}

fn client(s: &Settings) -> Result<MasterClient, CliError> {
    MasterClient::with_ca(&s.master, s.api_key.clone(), s.ca_cert.as_deref()).map_err(|e| CliError(e, 2))
}

fn parse_value(v: &str) -> Value {
    match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => v
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| v.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(v.to_string())),
    }
}

pub fn submit_body(a: &SubmitArgs) -> Result<SubmitJobRequest, CliError> {
    let mut p = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            p.insert(k.to_string(), v);
        }
    };
    put("input", a.input.clone().map(Value::from));
    put("output", a.output_file.clone().map(Value::from));
    put("codec", a.codec.clone().map(Value::from));
    put("bitrate", a.bitrate.clone().map(Value::from));
    put("preset", a.preset.clone().map(Value::from));
    put("resolution", a.resolution.clone().map(Value::from));
    put("fps", a.fps.map(Value::from));
    put("duration", a.duration.map(Value::from));
    put("output_mode", a.output_mode.clone().map(Value::from));
    put("rtmp_url", a.rtmp_url.clone().map(Value::from));
    put("crf", a.crf.map(Value::from));
    let chunking = match a.chunk.as_deref() {
        None => None,
        Some("auto") => Some(Value::from("auto")),
        Some(s) => match s.parse::<f64>() {
            Ok(secs) if secs > 0.0 => Some(serde_json::json!({"enabled": true, "chunk_seconds": secs})),
            _ => return Err(CliError(format!("--chunk '{s}' must be a number of seconds or 'auto'"), 2)),
        },
    };
    put("chunking", chunking);
    for kv in &a.params {
        let (k, v) = kv.split_once('=').ok_or_else(|| CliError(format!("--param '{kv}' must be KEY=VALUE"), 2))?;
        p.insert(k.trim().to_string(), parse_value(v.trim()));
    }
    Ok(SubmitJobRequest {
        scenario: Some(a.scenario.clone()),
        confidence: Some(a.confidence.clone()),
        engine: Some(a.engine.clone()),
        classification: None,
        parameters: Some(p),
        queue: Some(a.queue.clone()),
        priority: Some(a.priority.clone()),
        max_retries: a.max_retries,
        after: (!a.after.is_empty()).then(|| a.after.clone()),
        template: a.template.clone(),
        children: None,
        notify: None,
    })
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn past_tense(action: &str) -> &'static str {
    match action {
        "pause" => "paused",
        "resume" => "resumed",
        "cancel" => "canceled",
        _ => "queued again",
    }
}

pub async fn run_jobs(s: &Settings, cmd: JobsCommand) -> Result<i32, CliError> {
    let c = client(s)?;
    match cmd {
        JobsCommand::Submit(a) => {
            let body = submit_body(&a)?;
            // A key of our own when none was given: a submission whose answer was lost
            // (its master died mid-reply) can be sent again without running twice.
            let key = a.idempotency_key.clone().unwrap_or_else(|| format!("cli-{}", uuid::Uuid::new_v4()));
            let job: Job = c.post_idempotent("/jobs", &body, &[("Idempotency-Key", key)]).await?;
            if a.follow || a.download.is_some() {
                if s.output == OutputFormat::Table {
                    println!("Job #{} submitted ({})", job.sequence_number, job.id);
                }
                let ended = follow(s, &c, &job.id).await?;
                return match &a.download {
                    Some(dir) if ended == 0 => outputs::download_all(s, &c, &job.id, None, dir).await,
                    _ => Ok(ended),
                };
            }
            match s.output {
                OutputFormat::Json => print_json(&job),
                OutputFormat::Table => {
                    println!("{}", render::job_table(&job));
                    println!("Job submitted: #{} ({})", job.sequence_number, job.id);
                }
            }
            Ok(0)
        }
        JobsCommand::List(a) => {
            let mut q = vec![format!("limit={}", a.limit)];
            for (k, v) in [
                ("status", &a.status),
                ("queue", &a.queue),
                ("priority", &a.priority),
                ("node_id", &a.node),
                ("parent_id", &a.parent),
                ("cursor", &a.cursor),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", urlencode(v)));
                }
            }
            let list: JobList = c.get(&format!("/jobs?{}", q.join("&"))).await?;
            match s.output {
                OutputFormat::Json => print_json(&list),
                OutputFormat::Table => {
                    println!("{}", render::jobs_table(&list.jobs));
                    println!("Total jobs: {}", list.count);
                    if let Some(cur) = &list.next_cursor {
                        println!("More: --cursor {cur}");
                    }
                }
            }
            Ok(0)
        }
        JobsCommand::Status { id, follow: true } => follow(s, &c, &id).await,
        JobsCommand::Status { id, follow: false } => {
            let job: Job = c.get(&format!("/jobs/{}", urlencode(&id))).await?;
            match s.output {
                OutputFormat::Json => print_json(&job),
                OutputFormat::Table => println!("{}", render::job_table(&job)),
            }
            Ok(0)
        }
        JobsCommand::Outputs { id } => outputs::list(s, &c, &id).await,
        JobsCommand::Download { id, name, dir } => outputs::download_all(s, &c, &id, name.as_deref(), &dir).await,
        JobsCommand::Cancel { id } => control(s, &c, &id, "cancel").await,
        JobsCommand::Pause { id } => control(s, &c, &id, "pause").await,
        JobsCommand::Resume { id } => control(s, &c, &id, "resume").await,
        JobsCommand::Retry { id } => control(s, &c, &id, "retry").await,
        JobsCommand::Logs { id, follow: true } => live::follow_logs(s, &c, &id).await,
        JobsCommand::Logs { id, follow: false } => {
            let logs: JobLogs = c.get(&format!("/jobs/{}/logs", urlencode(&id))).await?;
            match s.output {
                OutputFormat::Json => print_json(&logs),
                OutputFormat::Table => {
                    println!("=== Logs for job {} ===", logs.job_id);
                    println!("{}", logs.logs);
                }
            }
            Ok(0)
        }
    }
}

async fn control(s: &Settings, c: &MasterClient, id: &str, action: &str) -> Result<i32, CliError> {
    let r: ControlResponse = c.post(&format!("/jobs/{}/{action}", urlencode(id)), &serde_json::json!({})).await?;
    match s.output {
        OutputFormat::Json => print_json(&r),
        OutputFormat::Table => println!("✓ Job {} {}", r.job_id, past_tense(action)),
    }
    Ok(0)
}

/// Follow a job with a progress bar until it is terminal: 0 for completed,
/// [`EXIT_JOB_UNSUCCESSFUL`] for failed/canceled/rejected.
pub async fn follow(s: &Settings, c: &MasterClient, id: &str) -> Result<i32, CliError> {
    let path = format!("/jobs/{}", urlencode(id));
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix:>10} [{bar:30}] {pos:>3}% {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    if s.output == OutputFormat::Json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut last_status = None;
    // A parent draws one bar per child under its total.
    let multi = indicatif::MultiProgress::new();
    if s.output == OutputFormat::Json {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let bar = multi.add(bar);
    let mut child_bars: std::collections::HashMap<String, indicatif::ProgressBar> = Default::default();
    let first: Job = c.get(&path).await?;
    // Redrawn on each of the job's events (its children's too); polled without a stream.
    let mut waker = live::Waker::for_job(c, &first.id).await;
    let mut children_waker = match first.children.as_ref().is_some_and(|c| !c.is_empty()) {
        true => Some(live::Waker::for_parent(c, &first.id).await),
        false => None,
    };
    let job = loop {
        let job: Job = c.get(&path).await?;
        for child in job.children.iter().flatten() {
            let b = child_bars.entry(child.id.clone()).or_insert_with(|| {
                let b = multi.add(indicatif::ProgressBar::new(100));
                b.set_style(
                    indicatif::ProgressStyle::with_template("  {prefix:>12} [{bar:28}] {pos:>3}% {msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                b.set_prefix(child.label.clone().unwrap_or_else(|| child.stage.clone()));
                b
            });
            b.set_position(child.progress.clamp(0, 100) as u64);
            b.set_message(child.status.as_str());
        }
        if Some(job.status) != last_status {
            if let Some(last) = last_status.filter(|_| s.output == OutputFormat::Table) {
                bar.println(format!("status: {last} → {}", job.status));
            }
            last_status = Some(job.status);
            bar.set_prefix(job.status.as_str());
        }
        bar.set_position(job.progress.clamp(0, 100) as u64);
        if let Some(d) = &job.progress_detail {
            let mut parts = Vec::new();
            if let Some(f) = d.fps {
                parts.push(format!("{f:.0} fps"));
            }
            if let Some(sp) = d.speed {
                parts.push(format!("{sp:.2}x"));
            }
            if let Some(e) = d.eta_seconds {
                parts.push(format!("ETA {e:.0}s"));
            }
            bar.set_message(parts.join("  "));
        }
        if job.status.is_terminal() {
            break job;
        }
        match children_waker.as_mut() {
            Some(w) => {
                tokio::select! {
                    _ = waker.next(c, Duration::from_millis(250)) => {}
                    _ = w.next(c, Duration::from_millis(250)) => {}
                }
            }
            None => drop(waker.next(c, Duration::from_millis(250)).await),
        }
    };
    for b in child_bars.values() {
        b.finish_and_clear();
    }
    bar.finish_and_clear();
    match s.output {
        OutputFormat::Json => print_json(&job),
        OutputFormat::Table => {
            println!("{}", render::job_table(&job));
            println!("Job #{} {}", job.sequence_number, job.status);
        }
    }
    Ok(if job.status == JobState::Completed { 0 } else { EXIT_JOB_UNSUCCESSFUL })
}

pub async fn run_nodes(s: &Settings, cmd: NodesCommand) -> Result<i32, CliError> {
    let c = client(s)?;
    match cmd {
        NodesCommand::List => {
            let list: NodeList = c.get("/nodes").await?;
            match s.output {
                OutputFormat::Json => print_json(&list),
                OutputFormat::Table if list.nodes.is_empty() => println!("No nodes registered"),
                OutputFormat::Table => {
                    println!("{}", render::nodes_table(&list.nodes));
                    println!("Total nodes: {}", list.count);
                }
            }
        }
        NodesCommand::Describe { id } => {
            let node: Node = c.get(&format!("/nodes/{}", urlencode(&id))).await?;
            match s.output {
                OutputFormat::Json => print_json(&node),
                OutputFormat::Table => println!("{}", render::node_table(&node)),
            }
        }
        NodesCommand::Drain { id } => {
            let node: Node = c.post(&format!("/nodes/{}/drain", urlencode(&id)), &serde_json::json!({})).await?;
            match s.output {
                OutputFormat::Json => print_json(&node),
                OutputFormat::Table => {
                    println!("✓ Node {} is draining ({} running job(s) will finish)", node.id, node.running_jobs.len())
                }
            }
        }
        NodesCommand::Undrain { id } => {
            let node: Node = c.post(&format!("/nodes/{}/undrain", urlencode(&id)), &serde_json::json!({})).await?;
            match s.output {
                OutputFormat::Json => print_json(&node),
                OutputFormat::Table => println!("✓ Node {} takes work again", node.id),
            }
        }
        NodesCommand::Remove { id } => {
            let v: Value = c.delete(&format!("/nodes/{}", urlencode(&id))).await?;
            match s.output {
                OutputFormat::Json => print_json(&v),
                OutputFormat::Table => println!("✓ Node {id} removed"),
            }
        }
    }
    Ok(0)
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_and_encoding() {
        assert_eq!(parse_value("true"), Value::Bool(true));
        assert_eq!(parse_value("4"), Value::from(4));
        assert_eq!(parse_value("2.5"), Value::from(2.5));
        assert_eq!(parse_value("5M"), Value::from("5M"));
        assert_eq!(urlencode("a b/c"), "a%20b%2Fc");
        assert_eq!(past_tense("pause"), "paused");
        assert_eq!(past_tense("resume"), "resumed");
    }

    #[test]
    fn chunk_and_crf_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            submit: SubmitArgs,
        }
        let body = |args: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("submit").chain(args.iter().copied())).unwrap();
            submit_body(&cli.submit).map(|b| Value::Object(b.parameters.unwrap()))
        };
        let p = body(&["--input", "film.mov", "--crf", "20", "--chunk", "10"]).unwrap();
        assert_eq!(p["chunking"], serde_json::json!({"enabled": true, "chunk_seconds": 10.0}));
        assert_eq!(p["crf"], 20);
        assert_eq!(body(&["--chunk", "auto"]).unwrap()["chunking"], "auto");
        assert!(body(&["--chunk", "soon"]).unwrap_err().0.contains("--chunk 'soon'"));
    }
}
