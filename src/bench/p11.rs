//! P11: one 2-rung ladder (720p + 360p of a 30 s 720p source; quick: 360p + 180p of a
//! 3 s 360p source), measured three ways in one run: (a) one ffmpeg process making
//! both rungs with `split`, pinned to core 0 — the single-core limit; (b) ffrtmp with
//! one worker pinned to core 0; (c) ffrtmp with two workers pinned to cores 0 and 1.
//! Goals: (b) within 10 % of (a); (c) at most 0.6 × (b).

use super::{Report, get, http, master, post};
use crate::testkit::{Proc, spawn_ready};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Ladder {
    source: (u32, u32, u32),
    rungs: [(u32, u32); 2],
}

/// A worker (one slot) pinned to `core` with `taskset`, sharing `inputs`.
pub(super) fn worker_on_core(url: &str, dir: &Path, core: u32, inputs: &Path) -> anyhow::Result<Proc> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &core.to_string()])
        .arg(super::subject()?)
        .args(["worker", "--master", url, "--metrics-port", "0", "--metrics-bind", "127.0.0.1"])
        .args(["--max-concurrent-jobs", "1", "--work-dir"])
        .arg(dir)
        .arg("--input-root")
        .arg(inputs)
        .env("RUST_LOG", "error")
        .stderr(Stdio::null());
    spawn_ready(cmd, "ffrtmp worker ", Duration::from_secs(120)).map_err(|e| anyhow::anyhow!("pinned worker: {e}"))
}

/// Seconds from submitting the ladder to its parent completing, with `cores` pinned workers.
async fn farm(tmp: &Path, inputs: &Path, l: &Ladder, cores: &[u32]) -> anyhow::Result<(f64, Value)> {
    let name = format!("p11-{}", cores.len());
    let m = master(
        &tmp.join(format!("{name}.db")),
        &["--artifact-dir", &tmp.join(format!("{name}-art")).to_string_lossy()],
    )?;
    let _workers: Vec<Proc> = cores
        .iter()
        .map(|c| worker_on_core(&m.url, &tmp.join(format!("{name}-w{c}")), *c, inputs))
        .collect::<anyhow::Result<_>>()?;
    let c = http();
    let ladder: Vec<Value> = l.rungs.iter().map(|(h, k)| json!({"height": h, "bitrate": format!("{k}k")})).collect();
    let body = json!({"parameters": {"input": "p11.mp4", "preset": "veryfast",
        "package": {"format": "hls", "segment_seconds": 2, "audio": [], "ladder": ladder}}});
    let t = Instant::now();
    let (s, job) = post(&c, &format!("{}/jobs", m.url), &body).await?;
    anyhow::ensure!(s == 201, "P11: submit answered {s}: {job}");
    let id = job["id"].as_str().unwrap_or_default().to_string();
    loop {
        let (_, j) = get(&c, &format!("{}/jobs/{id}", m.url)).await?;
        match j["status"].as_str() {
            Some("completed") => return Ok((t.elapsed().as_secs_f64(), j["children"].clone())),
            Some("failed" | "canceled") => anyhow::bail!("P11: the ladder ended {}: {}", j["status"], j["error"]),
            _ => actix_rt::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub(super) async fn p11(r: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    if Command::new("taskset").arg("-V").stdout(Stdio::null()).status().is_err() {
        eprintln!("  P11 skipped: taskset is not installed");
        return Ok(());
    }
    let l = if r.quick {
        Ladder { source: (640, 360, 3), rungs: [(360, 800), (180, 300)] }
    } else {
        Ladder { source: (1280, 720, 30), rungs: [(720, 2500), (360, 800)] }
    };
    let inputs = tmp.join("p11-in");
    std::fs::create_dir_all(&inputs)?;
    let src = inputs.join("p11.mp4");
    let (w, h, secs) = l.source;
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", &format!("testsrc2=size={w}x{h}:rate=30:duration={secs}")])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-y"])
        .arg(&src)
        .status()?;
    anyhow::ensure!(made.success(), "P11: cannot make the source");

    // (a) One process, both rungs, one core; the same encoder settings as the renditions.
    let rung_args = |i: usize, (rh, k): (u32, u32)| -> Vec<String> {
        let gop = "60".to_string();
        let mut a: Vec<String> = vec!["-map".into(), format!("[v{i}]"), "-c:v".into(), "libx264".into()];
        a.extend(["-preset", "veryfast", "-b:v"].map(String::from));
        a.extend([format!("{k}k"), "-maxrate".into(), format!("{k}k"), "-bufsize".into(), format!("{}k", 2 * k)]);
        a.extend(["-g".into(), gop.clone(), "-keyint_min".into(), gop, "-sc_threshold".into(), "0".into()]);
        a.extend(["-pix_fmt".into(), "yuv420p".into(), "-an".into(), "-y".into()]);
        a.push(tmp.join(format!("p11-a{i}-{rh}.mp4")).to_string_lossy().into_owned());
        a
    };
    let graph = format!("[0:v]split=2[s0][s1];[s0]scale=-2:{}[v0];[s1]scale=-2:{}[v1]", l.rungs[0].0, l.rungs[1].0);
    let t = Instant::now();
    let st = Command::new("taskset")
        .args(["-c", "0", "ffmpeg", "-v", "error", "-i"])
        .arg(&src)
        .args(["-filter_complex", &graph])
        .args(rung_args(0, l.rungs[0]))
        .args(rung_args(1, l.rungs[1]))
        .status()?;
    anyhow::ensure!(st.success(), "P11: the single ffmpeg failed");
    let single = t.elapsed().as_secs_f64();

    let (one, kids_one) = farm(tmp, &inputs, &l, &[0]).await?;
    let (two, kids_two) = farm(tmp, &inputs, &l, &[0, 1]).await?;
    let label = format!("{}p+{}p of a {secs} s {h}p source", l.rungs[0].0, l.rungs[1].0);
    r.add(
        "P11",
        format!("{label}: one worker on core 0 vs one ffmpeg with split on core 0"),
        one / single,
        "x",
        Some(("<=", 1.1)),
        json!({"single_ffmpeg_seconds": single, "one_worker_seconds": one, "children": kids_one}),
    );
    r.add(
        "P11",
        format!("{label}: two workers (cores 0, 1) vs one worker"),
        two / one,
        "x",
        Some(("<=", 0.6)),
        json!({"one_worker_seconds": one, "two_workers_seconds": two, "children": kids_two}),
    );
    Ok(())
}
