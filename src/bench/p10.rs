//! P10: a large output through the master's artifact store and back, side by side with
//! a plain upload and download of the same file to a static file server, both driven by
//! the same `curl` over loopback; and the master's memory while the bytes stream.

use super::{Report, get, http, master, post};
use crate::testkit::rss_bytes;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Seconds `curl args…` took (it must succeed).
fn timed_curl(args: &[&str]) -> anyhow::Result<f64> {
    let t = Instant::now();
    let st = Command::new("curl").args(["-sS", "-f", "-o", "/dev/null"]).args(args).status()?;
    anyhow::ensure!(st.success(), "curl {args:?} failed: {st}");
    Ok(t.elapsed().as_secs_f64())
}

/// Peak resident size of a process so far (VmHWM), bytes.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

pub(super) async fn p10(r: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    if Command::new("curl").arg("--version").stdout(Stdio::null()).status().is_err() {
        eprintln!("  P10 skipped: curl is not installed");
        return Ok(());
    }
    let size: usize = if r.quick { 20 << 20 } else { 200 << 20 };
    let src = tmp.join("p10.bin");
    {
        // Incompressible-looking bytes, written once.
        let mut block = vec![0u8; 1 << 20];
        let mut rng = fastrand::Rng::with_seed(10);
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            rng.fill(&mut block);
            data.extend_from_slice(&block);
        }
        std::fs::write(&src, &data)?;
    }
    let (_, sha) = crate::storage::file_digest(&src).await?;
    let src_s = src.to_string_lossy().to_string();

    let m = master(&tmp.join("p10.db"), &["--artifact-dir", &tmp.join("p10-artifacts").to_string_lossy()])?;
    let c = http();
    post(&c, &format!("{}/nodes/register", m.url), &json!({"node_id": "p10", "encoders": ["libx264"]})).await?;
    post(&c, &format!("{}/jobs", m.url), &json!({})).await?;
    let (_, next) = get(&c, &format!("{}/jobs/next?node_id=p10&wait=5", m.url)).await?;
    let job = next["job"]["id"].as_str().ok_or_else(|| anyhow::anyhow!("P10: no job claimed: {next}"))?.to_string();
    let rss_before = rss_bytes(m.proc.pid());
    let put_url = format!("{}/jobs/{job}/outputs/p10.bin?node_id=p10&attempt=1", m.url);
    let sha_header = format!("x-content-sha256: {sha}");
    let up = timed_curl(&["-X", "PUT", "-T", &src_s, "-H", &sha_header, "-H", "Expect:", &put_url])?;
    let down = timed_curl(&[&format!("{}/jobs/{job}/outputs/p10.bin", m.url)])?;
    let peak = peak_rss(m.proc.pid());

    let root = tmp.join("p10-static");
    std::fs::create_dir_all(&root)?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/media_server.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(&root);
    let server = crate::testkit::spawn_ready(cmd, "", std::time::Duration::from_secs(30))
        .map_err(|e| anyhow::anyhow!("P10: the static file server did not start: {e}"))?;
    let base = format!("http://127.0.0.1:{}", server.line.trim());
    let plain_up = timed_curl(&["-X", "PUT", "-T", &src_s, "-H", "Expect:", &format!("{base}/p10.bin")])?;
    let plain_down = timed_curl(&[&format!("{base}/p10.bin")])?;
    drop(server);

    let mb = size as f64 / 1e6;
    r.add(
        "P10",
        format!("artifact upload of {} MB vs plain upload", size >> 20),
        100.0 * plain_up / up,
        "%",
        Some((">=", 80.0)),
        json!({"ffrtmp_mb_per_s": mb / up, "plain_mb_per_s": mb / plain_up}),
    );
    r.add(
        "P10",
        format!("artifact download of {} MB vs plain download", size >> 20),
        100.0 * plain_down / down,
        "%",
        Some((">=", 80.0)),
        json!({"ffrtmp_mb_per_s": mb / down, "plain_mb_per_s": mb / plain_down}),
    );
    r.add(
        "P10",
        "master resident memory growth while streaming it",
        peak.saturating_sub(rss_before) as f64 / (1 << 20) as f64,
        "MiB",
        Some(("<=", 64.0)),
        json!({"file_mib": size >> 20, "rss_before_mib": rss_before >> 20, "peak_mib": peak >> 20}),
    );
    Ok(())
}
