//! `ffrtmp jobs outputs` and `ffrtmp jobs download`: a job's stored outputs, listed and
//! fetched from the master (resumed on a broken connection, verified against the
//! recorded SHA-256, renamed into place only when whole).

use super::{CliError, OutputFormat, Settings, print_json, render, urlencode};
use crate::api_client::MasterClient;
use crate::storage::transfer::{DownloadLimits, download};
use crate::wire::{JobOutput, JobOutputs};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

pub async fn list(s: &Settings, c: &MasterClient, id: &str) -> Result<i32, CliError> {
    let outputs: JobOutputs = c.get(&format!("/jobs/{}/outputs", urlencode(id))).await?;
    match s.output {
        OutputFormat::Json => print_json(&outputs),
        OutputFormat::Table if outputs.outputs.is_empty() => println!("Job {} has no stored outputs", outputs.job_id),
        OutputFormat::Table => {
            println!("{}", render::outputs_table(&outputs.outputs));
            println!("Download: ffrtmp jobs download {}", outputs.job_id);
        }
    }
    Ok(0)
}

/// Download every output of job `id` (or only `name`) into `dir`; prints the paths.
pub async fn download_all(
    s: &Settings,
    c: &MasterClient,
    id: &str,
    name: Option<&str>,
    dir: &Path,
) -> Result<i32, CliError> {
    let listed: JobOutputs = c.get(&format!("/jobs/{}/outputs", urlencode(id))).await?;
    let chosen: Vec<&JobOutput> = listed.outputs.iter().filter(|o| name.is_none_or(|n| o.name == n)).collect();
    if chosen.is_empty() {
        let what = name.map(|n| format!("no output named '{n}'")).unwrap_or_else(|| "no stored outputs".into());
        return Err(CliError(format!("job {} has {what}", listed.job_id), 1));
    }
    std::fs::create_dir_all(dir).map_err(|e| CliError(format!("cannot create {}: {e}", dir.display()), 1))?;
    let mut saved = Vec::new();
    for o in chosen {
        saved.push(fetch_one(s, c, &listed.job_id, o, dir).await?);
    }
    match s.output {
        OutputFormat::Json => print_json(&saved.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()),
        OutputFormat::Table => {
            for p in &saved {
                println!("✓ {}", p.display());
            }
        }
    }
    Ok(0)
}

async fn fetch_one(
    s: &Settings,
    c: &MasterClient,
    job_id: &str,
    o: &JobOutput,
    dir: &Path,
) -> Result<PathBuf, CliError> {
    // A package's files keep their place in it (`hls/360p/seg_00001.m4s`); the
    // master checked every part of the name (no `..`, nothing hidden).
    let dest = dir.join(&o.name);
    let parent = dest.parent().unwrap_or(dir).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| CliError(format!("cannot create {}: {e}", parent.display()), 1))?;
    let file = dest.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let part = parent.join(format!(".{file}.part"));
    let bar = indicatif::ProgressBar::new(o.bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(o.name.clone());
    if s.output == OutputFormat::Json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let path = format!("/jobs/{job_id}/outputs/{}", o.name);
    let got = Rc::new(Cell::new(0u64));
    let limits = DownloadLimits { max_bytes: o.bytes, stall: Duration::from_secs(60), tries: 5, follow_redirect: true };
    let fetch = download(|_| c.request(awc::http::Method::GET, &path), &part, limits, got.clone());
    tokio::pin!(fetch);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let done = loop {
        tokio::select! {
            r = &mut fetch => break r,
            _ = tick.tick() => bar.set_position(got.get()),
        }
    };
    bar.finish_and_clear();
    let fail = |m: String| {
        let _ = std::fs::remove_file(&part);
        CliError(m, 1)
    };
    done.map_err(|e| fail(format!("download of {} failed: {e}", o.name)))?;
    let (_, sha) =
        crate::storage::file_digest(&part).await.map_err(|e| fail(format!("cannot read {}: {e}", part.display())))?;
    if sha != o.sha256 {
        return Err(fail(format!("{} arrived corrupted: SHA-256 {sha}, the master recorded {}", o.name, o.sha256)));
    }
    std::fs::rename(&part, &dest).map_err(|e| fail(format!("cannot move into {}: {e}", dest.display())))?;
    Ok(dest)
}
