//! P12: one long encode (a 60 s 720p source, x264 medium, CRF 23; quick: 6 s 360p)
//! measured two ways in one run: (a) one ffmpeg pinned to core 0; (b) ffrtmp chunked (30 s chunks)
//! over two workers pinned to cores 0 and 1. Reports both wall times, the speed-up,
//! PSNR/SSIM of both outputs against the source, and the speed-up expected for N
//! workers from the measured split and stitch overheads. Goals: speed-up ≥ 1.8× with
//! PSNR within 0.2 dB of the single encode.

use super::{Report, get, http, master, p11::worker_on_core, post};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// PSNR and SSIM (both averages) of `a` against `reference`.
fn quality(a: &Path, reference: &Path) -> anyhow::Result<(f64, f64)> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-i"])
        .arg(a)
        .arg("-i")
        .arg(reference)
        .args(["-lavfi", "[0:v]split[a0][a1];[1:v]split[b0][b1];[a0][b0]psnr;[a1][b1]ssim", "-f", "null", "-"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let after = |key: &str| -> Option<f64> {
        let at = text.rfind(key)? + key.len();
        text[at..].split_whitespace().next()?.parse().ok()
    };
    let psnr = after("average:").ok_or_else(|| anyhow::anyhow!("P12: no PSNR in {text}"))?;
    let ssim = after("All:").ok_or_else(|| anyhow::anyhow!("P12: no SSIM in {text}"))?;
    Ok((psnr, ssim))
}

fn seconds_between(a: &Value, b: &Value) -> f64 {
    let t = |v: &Value| v.as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    match (t(a), t(b)) {
        (Some(a), Some(b)) => (b - a).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => 0.0,
    }
}

pub(super) async fn p12(r: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    if Command::new("taskset").arg("-V").stdout(Stdio::null()).status().is_err() {
        eprintln!("  P12 skipped: taskset is not installed");
        return Ok(());
    }
    let ((w, h, secs), chunk) = if r.quick { ((640, 360, 6), 2) } else { ((1280, 720, 60), 30) };
    let inputs = tmp.join("p12-in");
    std::fs::create_dir_all(&inputs)?;
    let src = inputs.join("p12.mp4");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", &format!("testsrc2=size={w}x{h}:rate=30:duration={secs}")])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0"])
        .args(["-pix_fmt", "yuv420p", "-y"])
        .arg(&src)
        .status()?;
    anyhow::ensure!(made.success(), "P12: cannot make the source");

    // (a) One ffmpeg on one core, the settings the chunks use.
    let single_out = tmp.join("p12-single.mp4");
    let t = Instant::now();
    let st = Command::new("taskset")
        .args(["-c", "0", "ffmpeg", "-v", "error", "-i"])
        .arg(&src)
        .args(["-map", "0:v:0", "-c:v", "libx264", "-preset", "medium", "-crf", "23", "-pix_fmt", "yuv420p", "-an"])
        .arg("-y")
        .arg(&single_out)
        .status()?;
    anyhow::ensure!(st.success(), "P12: the single ffmpeg failed");
    let single = t.elapsed().as_secs_f64();

    // (b) The farm: two workers, each pinned to its own core.
    let m = master(&tmp.join("p12.db"), &["--artifact-dir", &tmp.join("p12-art").to_string_lossy()])?;
    let _workers = [0u32, 1]
        .iter()
        .map(|c| worker_on_core(&m.url, &tmp.join(format!("p12-w{c}")), *c, &inputs))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let c = http();
    let body = json!({"parameters": {"input": "p12.mp4", "codec": "h264", "preset": "medium", "crf": 23,
        "output": "p12.mp4", "chunking": {"enabled": true, "chunk_seconds": chunk}}});
    let t = Instant::now();
    let (s, job) = post(&c, &format!("{}/jobs", m.url), &body).await?;
    anyhow::ensure!(s == 201, "P12: submit answered {s}: {job}");
    let id = job["id"].as_str().unwrap_or_default().to_string();
    let done = loop {
        let (_, j) = get(&c, &format!("{}/jobs/{id}", m.url)).await?;
        match j["status"].as_str() {
            Some("completed") => break j,
            Some("failed" | "canceled") => anyhow::bail!("P12: the chunked job ended {}: {}", j["status"], j["error"]),
            _ => actix_rt::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let chunked = t.elapsed().as_secs_f64();
    let chunked_out = tmp.join("p12-chunked.mp4");
    let mut resp = c
        .get(format!("{}/jobs/{id}/outputs/p12.mp4", m.url))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("P12: download: {e}"))?;
    let bytes = resp.body().limit(1 << 30).await.map_err(|e| anyhow::anyhow!("P12: download: {e}"))?;
    std::fs::write(&chunked_out, &bytes)?;

    // Where the farm's time went: the serial split (probe) and stitch, and the chunks.
    let kids = done["children"].as_array().cloned().unwrap_or_default();
    let span = |label: &str| {
        kids.iter().find(|k| k["label"] == label).map_or(0.0, |k| seconds_between(&k["started_at"], &k["completed_at"]))
    };
    let (split, stitch) = (span("probe"), span("stitch"));
    let chunk_work: f64 = kids
        .iter()
        .filter(|k| k["label"].as_str().is_some_and(|l| l.starts_with("chunk_")))
        .map(|k| seconds_between(&k["started_at"], &k["completed_at"]))
        .sum();
    let overhead = (chunked - chunk_work / 2.0).max(split + stitch);
    let estimate: Value = [1u32, 2, 4, 8, 16]
        .iter()
        .map(|n| (format!("{n}_workers"), json!(single / (overhead + chunk_work / f64::from(*n)))))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let (psnr_single, ssim_single) = quality(&single_out, &src)?;
    let (psnr_chunked, ssim_chunked) = quality(&chunked_out, &src)?;
    let label = format!("{secs} s {h}p x264 medium CRF 23, {chunk} s chunks");
    let detail = json!({
        "single_ffmpeg_seconds": single, "chunked_two_workers_seconds": chunked,
        "psnr_single_db": psnr_single, "psnr_chunked_db": psnr_chunked,
        "ssim_single": ssim_single, "ssim_chunked": ssim_chunked,
        "split_seconds": split, "stitch_seconds": stitch, "chunk_work_seconds": chunk_work,
        "serial_overhead_seconds": overhead, "estimated_speedup": estimate,
    });
    r.add(
        "P12",
        format!("{label}: one ffmpeg on core 0 / chunked over two workers (cores 0, 1)"),
        single / chunked,
        "x",
        Some((">=", 1.8)),
        detail,
    );
    r.add(
        "P12",
        format!("{label}: PSNR lost to chunking"),
        psnr_single - psnr_chunked,
        "dB",
        Some(("<=", 0.2)),
        json!({"psnr_single_db": psnr_single, "psnr_chunked_db": psnr_chunked}),
    );
    Ok(())
}
