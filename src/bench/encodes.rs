//! P6–P8: figures with real encoders — the farm's overhead on a transcode, control
//! latency to the ffmpeg process, and a lost node's job placed again.

use super::*;

/// P6: transcode overhead of master+worker against the identical argv run directly.
pub(super) async fn p6(r: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    let (secs, pairs) = if r.quick { (2.0, 1) } else { (10.0, 5) };
    let params = json!({"codec": "h264", "resolution": "1280x720", "fps": 30, "duration": secs, "preset": "veryfast"});
    let spec = parse_job_spec(params.as_object().unwrap(), crate::domain::params::Engine::Auto)
        .map_err(|e| anyhow::anyhow!(e.0))?;
    let m = master(&tmp.join("p6.db"), &[])?;
    let _w = worker(&m.url, &tmp.join("p6-w"), &["--nice", "0"])?;
    let c = http();
    let (mut direct, mut farm) = (Vec::new(), Vec::new());
    for i in 0..pairs {
        let out = tmp.join(format!("p6-direct-{i}.mp4"));
        let args = argv::ffmpeg_argv(&spec, "libx264", &InputSource::Synthetic, &OutputTarget::File(out));
        let t = Instant::now();
        let st = tokio::process::Command::new("ffmpeg")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(st.success(), "direct ffmpeg failed");
        direct.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (_, j) = post(&c, &format!("{}/jobs", m.url), &json!({"parameters": params})).await?;
        let submit_s = t.elapsed().as_secs_f64();
        let id = j["id"].as_str().unwrap_or_default().to_string();
        let done = loop {
            let (_, j) = get(&c, &format!("{}/jobs/{id}", m.url)).await?;
            match j["status"].as_str() {
                Some("completed") => break j,
                Some("failed" | "canceled" | "rejected") => anyhow::bail!("farm transcode ended {}", j["status"]),
                // Rarely: frequent polling would steal CPU from the encode it measures.
                _ => actix_rt::time::sleep(Duration::from_millis(250)).await,
            }
        };
        // Submit → completion as the master stamped them (µs), plus the submit's own
        // round trip: how often the bench looks is not part of the farm's cost.
        let at = |k: &str| {
            chrono::DateTime::parse_from_rfc3339(done[k].as_str().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("{k}: {e}"))
        };
        farm.push(
            (at("completed_at")? - at("created_at")?).num_microseconds().unwrap_or_default() as f64 / 1e6 + submit_s,
        );
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (d, f) = (med(direct.clone()), med(farm.clone()));
    r.add(
        "P6",
        format!("transcode overhead, {secs}s 720p x264"),
        (f - d) / d * 100.0,
        "%",
        Some(("<=", 2.0)),
        json!({"direct_s": direct, "farm_s": farm}),
    );
    Ok(())
}

fn ffmpeg_pid(needle: &str) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.starts_with("ffmpeg ") && cmd.contains(needle) {
            return Some(pid);
        }
    }
    None
}

fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

async fn until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<f64> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return Some(t.elapsed().as_secs_f64() * 1000.0);
        }
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// P7: control latency, API call → signal observed on the encoder process.
pub(super) async fn p7(r: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    let reps = if r.quick { 2 } else { 20 };
    let m = master(&tmp.join("p7.db"), &[])?;
    let _w = worker(&m.url, &tmp.join("p7-w"), &[])?;
    let c = http();
    let (mut pause, mut cancel) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let (_, j) = post(
            &c,
            &format!("{}/jobs", m.url),
            &json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 60, "realtime": true}}),
        )
        .await?;
        let id = j["id"].as_str().unwrap_or_default().to_string();
        let mut pid = None;
        until(Duration::from_secs(30), || {
            pid = ffmpeg_pid(&id);
            pid.is_some()
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("encode did not start"))?;
        let pid = pid.unwrap();
        let t = Instant::now();
        post(&c, &format!("{}/jobs/{id}/pause", m.url), &json!({})).await?;
        if until(Duration::from_secs(5), || proc_state(pid) == Some('T')).await.is_some() {
            pause.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        post(&c, &format!("{}/jobs/{id}/resume", m.url), &json!({})).await?;
        until(Duration::from_secs(5), || proc_state(pid) != Some('T')).await;
        let t = Instant::now();
        post(&c, &format!("{}/jobs/{id}/cancel", m.url), &json!({})).await?;
        if until(Duration::from_secs(10), || proc_state(pid).is_none_or(|s| s == 'Z')).await.is_some() {
            cancel.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let (p50, p99, _) = ms_stats(pause);
    r.add("P7", "pause → SIGSTOP observed, p99", p99, "ms", Some(("<=", 500.0)), json!({"p50_ms": p50}));
    let (p50, p99, _) = ms_stats(cancel);
    r.add("P7", "cancel → process gone, p99", p99, "ms", Some(("<=", 500.0)), json!({"p50_ms": p50}));
    Ok(())
}

/// P8: node loss: worker kill -9 → its job placed on another worker.
pub(super) async fn p8(r: &mut Report, tmp: &Path) -> anyhow::Result<()> {
    let hb = if r.quick { "0.5" } else { "3" };
    let m = master(&tmp.join("p8.db"), &["--heartbeat-interval", hb, "--retry-backoff-ms", "100"])?;
    let c = http();
    let a = worker(&m.url, &tmp.join("p8-a"), &["--executor", "noop", "--noop-ms", "600000"])?;
    let (_, j) = post(&c, &format!("{}/jobs", m.url), &json!({})).await?;
    let id = j["id"].as_str().unwrap_or_default().to_string();
    let job_url = format!("{}/jobs/{id}", m.url);
    loop {
        let (_, j) = get(&c, &job_url).await?;
        if j["status"] == "processing" {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let b = worker(&m.url, &tmp.join("p8-b"), &["--executor", "noop", "--noop-ms", "600000"])?;
    let b_id = b.line.split_whitespace().nth(2).unwrap_or_default().to_string();
    drop(a); // kill -9
    let t = Instant::now();
    loop {
        let (_, j) = get(&c, &job_url).await?;
        if j["node_id"] == b_id.as_str() && j["status"] == "processing" {
            break;
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(120), "job never moved");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    r.add(
        "P8",
        format!("worker kill -9 → job running elsewhere (heartbeat {hb}s)"),
        t.elapsed().as_secs_f64(),
        "s",
        Some(("<=", 15.0)),
        json!({}),
    );
    Ok(())
}
