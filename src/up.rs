//! `ffrtmp up`: a whole farm in one process (master on the embedded SQLite database
//! plus one local worker). With `--demo` it submits a sample transcode of a synthetic
//! source, follows it with the progress bar, prints where the master stored the output
//! and how to download it, and exits.

use crate::client::{self, OutputFormat, Settings};
use crate::master::{self, MasterArgs};
use crate::wire::{Job, SubmitJobRequest};
use crate::worker::{self, WorkerArgs};
use clap::{Args, Parser};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// API port (0 = any free port).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Where the database and the worker's files live.
    #[arg(long, default_value = "ffrtmp-data")]
    pub data_dir: PathBuf,
    /// Jobs the local worker runs at once.
    #[arg(long, default_value_t = 1)]
    pub max_concurrent_jobs: u32,
    /// Submit a sample transcode, follow it to the end, print the output path, exit.
    #[arg(long)]
    pub demo: bool,
}

#[derive(Parser)]
struct MasterOnly {
    #[command(flatten)]
    a: MasterArgs,
}

#[derive(Parser)]
struct WorkerOnly {
    #[command(flatten)]
    a: WorkerArgs,
}

/// The sample job `--demo` submits: 8 s of 720p30 test pattern to H.264, with QoE.
pub fn demo_job() -> SubmitJobRequest {
    let params = serde_json::json!({"codec": "h264", "resolution": "1280x720", "fps": 30, "duration": 8, "bitrate": "3M", "preset": "veryfast", "qoe": true});
    SubmitJobRequest {
        scenario: Some("demo-720p30-h264".into()),
        parameters: params.as_object().cloned(),
        ..Default::default()
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&args.data_dir)?;
    let db = args.data_dir.join("ffrtmp.db");
    let port = args.port.to_string();
    let m =
        MasterOnly::try_parse_from(["master", "--port", &port, "--metrics-port", "0", "--db", &db.to_string_lossy()])?
            .a;
    let running = master::start(&m).await?;
    let url = running.api_url();
    let work = args.data_dir.join("work");
    let slots = args.max_concurrent_jobs.to_string();
    let w = WorkerOnly::try_parse_from([
        "worker",
        "--master",
        &url,
        "--work-dir",
        &work.to_string_lossy(),
        "--metrics-port",
        "0",
        "--metrics-bind",
        "127.0.0.1",
        "--max-concurrent-jobs",
        &slots,
    ])?
    .a;
    let worker = worker::start(w).await?;
    println!("ffrtmp is up");
    println!("  API:            {url}   (OpenAPI: {url}/openapi.json)");
    println!("  Master metrics: {}", running.metrics_url());
    println!("  Worker:         node {} (metrics: http://{}/metrics)", worker.shared.node_id, worker.metrics_addr);
    println!("  Database:       {}", db.display());
    let code = if args.demo {
        let settings = Settings { master: url.clone(), api_key: None, output: OutputFormat::Table, ca_cert: None };
        let c = crate::api_client::MasterClient::new(&url, None);
        let job: Job =
            c.post("/jobs", &demo_job()).await.map_err(|e| anyhow::anyhow!("submitting the demo job failed: {e}"))?;
        println!("Submitted demo job #{} ({}): 8 s of 720p30 test pattern → H.264", job.sequence_number, job.id);
        let code = client::follow(&settings, &c, &job.id).await.map_err(|e| anyhow::anyhow!(e.0))?;
        if code == 0 {
            let stored: crate::wire::JobOutputs = c
                .get(&format!("/jobs/{}/outputs", job.id))
                .await
                .map_err(|e| anyhow::anyhow!("listing the demo's outputs failed: {e}"))?;
            for o in &stored.outputs {
                let location = crate::storage::ArtifactStore::location(&job.id, o.attempt, &o.name);
                println!("Output: {}", args.data_dir.join("artifacts").join(location).display());
            }
            println!("Download (while the farm runs): ffrtmp jobs download {} --master {url} --dir .", job.id);
        }
        code
    } else {
        println!("Press Ctrl-C to stop.");
        crate::os::wait_for_shutdown_signal().await;
        0
    };
    worker.drain(Duration::from_secs(if args.demo { 5 } else { 60 })).await;
    running.stop().await;
    Ok(code)
}
