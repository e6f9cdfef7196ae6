//! Issue 4: a real master and real workers running real ffmpeg on tiny lavfi inputs.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;

#[test]
fn transcodes_h264_and_vp9_with_probed_encoders() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let w = TestWorker::start(&m, &["--max-concurrent-jobs", "2"]);
    let (_, node) = api.get(&format!("/nodes/{}", w.node_id));
    let encoders: Vec<&str> = node["encoders"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(encoders.contains(&"libx264") && encoders.contains(&"libvpx-vp9"), "{encoders:?}");
    // Debian's ffmpeg lists NVENC everywhere; the probe must not offer it without a GPU.
    if !std::path::Path::new("/dev/nvidia0").exists() {
        assert!(!encoders.iter().any(|e| e.ends_with("_nvenc")), "NVENC offered without a working GPU: {encoders:?}");
    }
    assert!(node["ffmpeg_version"].as_str().unwrap().starts_with("ffmpeg version"));
    let h264 = api.submit(json!({"parameters": {"codec": "h264", "resolution": "160x90", "fps": 15, "duration": 2, "qoe": true, "bitrate": "1M"}}));
    let vp9 = api.submit(json!({"parameters": {"codec": "vp9", "resolution": "160x90", "fps": 15, "duration": 1}}));
    for (id, codec, secs) in [(&h264, "h264", 2.0), (&vp9, "vp9", 1.0)] {
        let j = wait_terminal(&api, id, Duration::from_secs(60));
        assert_eq!(j["status"], "completed", "{j}");
        let (c, wd, ht, d) = probe_video(&fetch_output(&api, id).path);
        assert_eq!((c.as_str(), wd, ht), (codec, 160, 90));
        assert!((d - secs).abs() < 0.2, "duration {d} vs {secs}");
        assert_eq!(j["progress"], 100);
        assert!(j["metrics"]["frames"].as_u64().unwrap() >= (secs * 15.0) as u64 - 1);
        assert!(j["metrics"]["output_bytes"].as_u64().unwrap() > 0);
    }
    let j = api.job(&h264);
    assert!(j["metrics"]["psnr_db"].as_f64().unwrap() > 30.0, "PSNR of a high-bitrate encode: {j}");
    let ssim = j["metrics"]["ssim"].as_f64().unwrap();
    assert!(ssim > 0.9 && ssim <= 1.0);
    assert!(j["qoe_score"].as_f64().unwrap() > 90.0);
    // The worker keeps no copy once the master has stored the output.
    wait_until(Duration::from_secs(10), "attempt directory removed", || {
        !w.work_dir.join(format!("job-{h264}")).exists()
    });
    assert!(!w.work_dir.join("outputs").exists(), "nothing left behind on the worker");
}

#[test]
fn progress_is_live_and_monotonic() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let _w = TestWorker::start(&m, &[]);
    let id = api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 4, "realtime": true}}));
    let mut seen: Vec<i64> = Vec::new();
    let mut detail = Value::Null;
    wait_until(Duration::from_secs(60), "job to complete", || {
        let j = api.job(&id);
        if let Some(p) = j["progress"].as_i64()
            && j["status"] == "processing"
        {
            seen.push(p);
            if j["progress_detail"].is_object() {
                detail = j["progress_detail"].clone();
            }
        }
        j["status"] == "completed"
    });
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "monotonic: {seen:?}");
    assert!(seen.iter().any(|p| *p > 0 && *p < 100), "intermediate progress seen: {seen:?}");
    assert!(detail["speed"].as_f64().is_some() && detail["frames"].as_u64().is_some(), "{detail}");
    assert_eq!(api.job(&id)["progress"], 100);
}

#[test]
fn pause_stops_the_process_and_resume_finishes_identically() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let _w = TestWorker::start(&m, &[]);
    let params = json!({"resolution": "160x90", "fps": 10, "duration": 3, "realtime": true});
    let id = api.submit(json!({"parameters": params}));
    wait_until(Duration::from_secs(30), "encode running", || {
        !ffmpeg_pids(&id).is_empty() && api.job(&id)["progress"].as_i64().unwrap_or(0) > 0
    });
    let (s, _) = api.post(&format!("/jobs/{id}/pause"), json!({}));
    assert_eq!(s, 200);
    let pid = ffmpeg_pids(&id)[0];
    wait_until(Duration::from_secs(10), "ffmpeg stopped (state T)", || pid_state(pid) == Some('T'));
    let frozen = api.job(&id)["progress"].clone();
    let (s, _) = api.post(&format!("/jobs/{id}/resume"), json!({}));
    assert_eq!(s, 200);
    wait_until(Duration::from_secs(10), "ffmpeg running again", || pid_state(pid) != Some('T'));
    let j = wait_terminal(&api, &id, Duration::from_secs(30));
    assert_eq!(j["status"], "completed", "{j}");
    assert!(frozen.as_i64().unwrap() < 100);
    // Same length as an unpaused run of the same parameters.
    let reference = api.submit(json!({"parameters": params}));
    assert_eq!(wait_terminal(&api, &reference, Duration::from_secs(30))["status"], "completed");
    let (_, _, _, d1) = probe_video(&fetch_output(&api, &id).path);
    let (_, _, _, d2) = probe_video(&fetch_output(&api, &reference).path);
    assert!((d1 - d2).abs() < 0.05, "paused {d1}s vs unpaused {d2}s");
    assert!(api.metric("ffrtmp_control_latency_seconds_count{action=\"pause\"}") >= 1.0);
}

#[test]
fn cancel_kills_the_whole_process_group() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let _w = TestWorker::start(&m, &[]);
    let id = api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 30, "realtime": true}}));
    wait_until(Duration::from_secs(30), "encode running", || !ffmpeg_pids(&id).is_empty());
    let (s, _) = api.post(&format!("/jobs/{id}/cancel"), json!({}));
    assert_eq!(s, 200);
    wait_until(Duration::from_secs(15), "no ffmpeg left for the job", || ffmpeg_pids(&id).is_empty());
    assert_eq!(api.status(&id), "canceled");
    wait_until(Duration::from_secs(10), "cancel acknowledged", || {
        api.metric("ffrtmp_control_latency_seconds_count{action=\"cancel\"}") >= 1.0
    });
}

#[test]
fn killed_worker_job_is_completed_by_another_with_no_orphans() {
    let m = TestMaster::start(&["--heartbeat-interval", "0.3", "--retry-backoff-ms", "100"]);
    let api = m.api();
    let mut first = TestWorker::start(&m, &[]);
    let id = api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 3, "realtime": true}}));
    wait_until(Duration::from_secs(30), "encode running on the first worker", || !ffmpeg_pids(&id).is_empty());
    first.kill9();
    // PR_SET_PDEATHSIG: the encode dies with its worker.
    wait_until(Duration::from_secs(15), "orphan ffmpeg gone", || ffmpeg_pids(&id).is_empty());
    let second = TestWorker::start(&m, &[]);
    let j = wait_terminal(&api, &id, Duration::from_secs(60));
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["node_id"], second.node_id.as_str());
    assert_eq!(j["attempt"], 2);
    let out = fetch_output(&api, &id);
    assert_eq!(out.record["attempt"], 2, "the output of the attempt that completed: {}", out.record);
    // Neither worker keeps a local copy once the master has it.
    wait_until(Duration::from_secs(10), "local copies removed", || !second.work_dir.join(format!("job-{id}")).exists());
}

#[test]
fn restarted_worker_is_the_same_node() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let mut w = TestWorker::start(&m, &[]);
    let id = w.node_id.clone();
    w.restart(&m, &[]);
    assert_eq!(w.node_id, id);
    let (_, nodes) = api.get("/nodes");
    assert_eq!(nodes["count"], 1);
    let w2 = TestWorker::start(&m, &[]);
    assert_ne!(w2.node_id, id, "two workers on one host are two nodes");
    let (_, nodes) = api.get("/nodes");
    assert_eq!(nodes["count"], 2);
}

#[test]
fn worker_metrics_health_and_ready() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let w = TestWorker::start(&m, &[]);
    let id = api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 1}}));
    assert_eq!(wait_terminal(&api, &id, Duration::from_secs(60))["status"], "completed");
    let base = w.metrics_url.trim_end_matches("/metrics").to_string();
    let text = ureq::get(&w.metrics_url).call().unwrap().into_string().unwrap();
    let label = format!("node_id=\"{}\"", w.node_id);
    assert!(text.contains(&format!("ffrtmp_worker_jobs_completed_total{{{label}}} 1")), "{text}");
    assert!(text.contains(&format!("ffrtmp_worker_encoder_available{{encoder=\"libx264\",{label}}} 1")), "{text}");
    assert!(text.contains(&format!("ffrtmp_worker_encoder_available{{encoder=\"h264_nvenc\",{label}}}")));
    let (_, node) = api.get(&format!("/nodes/{}", w.node_id));
    assert_eq!(node["id"], w.node_id.as_str(), "worker series join master series on node_id");
    let h: Value = ureq::get(&format!("{base}/health")).call().unwrap().into_json().unwrap();
    assert_eq!(h["status"], "healthy");
    let r: Value = ureq::get(&format!("{base}/ready")).call().unwrap().into_json().unwrap();
    assert_eq!(r["status"], "ready", "{r}");
    assert_eq!(r["checks"]["master"], "reachable");
}

#[test]
fn rtmp_output_reaches_a_listener() {
    let m = TestMaster::start(&["--rtmp-allow", "127.0.0.1"]);
    let api = m.api();
    let _w = TestWorker::start(&m, &["--gst", "/nonexistent-gst"]);
    let dir = tmpdir();
    let received = dir.path().join("received.flv");
    let (mut listener, url) = rtmp_listener(&received, "live/k1");
    let id = api.submit(json!({"queue": "live", "parameters": {"output_mode": "rtmp", "rtmp_url": url,
        "resolution": "160x90", "fps": 10, "duration": 2}}));
    let j = wait_terminal(&api, &id, Duration::from_secs(60));
    let st = listener.wait().unwrap();
    assert_eq!(j["status"], "completed", "{j}");
    assert!(st.success());
    let (codec, w, h, d) = probe_video(&received);
    assert_eq!((codec.as_str(), w, h), ("h264", 160, 90));
    assert!(d > 1.5, "received {d}s");
}

#[test]
fn hostile_parameters_never_execute() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let w = TestWorker::start(&m, &[]);
    let marker = w.work_dir.join("pwned");
    let hostile = [
        json!({"input": format!("x.mp4; touch {}", marker.display())}),
        json!({"codec": format!("libx264 $(touch {})", marker.display())}),
        json!({"output": "`touch pwned`.mp4"}),
        json!({"input": "-f lavfi -i testsrc"}),
        json!({"input": "concat:/etc/passwd|/etc/hosts"}),
        json!({"input": "../../../../etc/passwd"}),
        json!({"rtmp_url": "rtmp://x/$(id)", "output_mode": "rtmp"}),
        json!({"preset": "fast -vf drawtext"}),
        json!({"resolution": "99999x99999"}),
        json!({"duration": 1e9}),
    ];
    for p in hostile {
        let (s, e) = api.post("/jobs", json!({"parameters": p}));
        assert_eq!((s, e["error"].as_str()), (400, Some("invalid_parameter")), "{p}: {e}");
    }
    // An input outside the worker's roots is refused by the worker itself (user_error).
    let id = api.submit(json!({"parameters": {"input": "/etc/hostname"}}));
    let j = wait_terminal(&api, &id, Duration::from_secs(30));
    assert_eq!((j["status"].as_str(), j["failure_reason"].as_str()), (Some("failed"), Some("input_error")), "{j}");
    assert!(!marker.exists());
    let (_, l) = api.get("/jobs");
    assert_eq!(l["count"], 1);
}

#[test]
fn gpu_inventory_and_nvenc_probe_on_a_real_gpu() {
    // Runs only where NVML has a GPU (the lent GPU machine); skipped elsewhere.
    if !std::path::Path::new("/dev/nvidiactl").exists() {
        eprintln!("skipped: no NVIDIA GPU on this machine");
        return;
    }
    let m = TestMaster::start(&[]);
    let api = m.api();
    let w = TestWorker::start(&m, &[]);
    let (_, node) = api.get(&format!("/nodes/{}", w.node_id));
    let gpu = &node["gpus"][0];
    assert!(gpu["name"].as_str().is_some_and(|n| !n.is_empty()), "{node}");
    assert!(gpu["memory_total_bytes"].as_u64().unwrap() > 1 << 30);
    let encoders = node["encoders"].to_string();
    if gpu["name"].as_str().unwrap().contains("H100") {
        assert!(!encoders.contains("nvenc"), "an H100 has no NVENC: {encoders}");
        let id = api.submit(json!({"parameters": {"codec": "h264_nvenc"}}));
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(api.status(&id), "pending", "an nvenc job is never placed on an H100");
    }
}

#[test]
fn gstreamer_engine_transcodes() {
    let has_x264enc =
        std::process::Command::new("gst-inspect-1.0").arg("x264enc").output().is_ok_and(|o| o.status.success());
    if !has_x264enc {
        eprintln!("skipped: GStreamer with x264enc is not installed");
        return;
    }
    let m = TestMaster::start(&[]);
    let api = m.api();
    let w = TestWorker::start(&m, &[]);
    let (_, node) = api.get(&format!("/nodes/{}", w.node_id));
    assert!(node["gstreamer_version"].as_str().is_some(), "{node}");
    let id =
        api.submit(json!({"engine": "gstreamer", "parameters": {"resolution": "160x90", "fps": 10, "duration": 1}}));
    let j = wait_terminal(&api, &id, Duration::from_secs(60));
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["metrics"]["engine_used"], "gstreamer");
    let (codec, wd, ht, _) = probe_video(&fetch_output(&api, &id).path);
    assert_eq!((codec.as_str(), wd, ht), ("h264", 160, 90));
}

#[test]
fn sigterm_drains_finishing_or_handing_back() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    // A short job finishes during the drain.
    let mut w = TestWorker::start(&m, &["--drain-timeout", "30"]);
    let short = api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 2, "realtime": true}}));
    wait_until(Duration::from_secs(30), "short job running", || !ffmpeg_pids(&short).is_empty());
    assert!(w.terminate().success(), "clean exit after draining");
    assert_eq!(api.status(&short), "completed");
    // A long job is handed back when the drain deadline passes: queued, no retry counted.
    let mut w = TestWorker::start(&m, &["--drain-timeout", "1"]);
    let long = api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 60, "realtime": true}}));
    wait_until(Duration::from_secs(30), "long job running", || !ffmpeg_pids(&long).is_empty());
    assert!(w.terminate().success());
    assert!(ffmpeg_pids(&long).is_empty(), "no encode outlives its worker");
    let j = api.job(&long);
    assert_eq!((j["status"].as_str(), j["retry_count"].as_i64()), (Some("queued"), Some(0)), "{j}");
    assert!(!w.work_dir.join(format!("job-{long}")).exists());
}

#[test]
fn stale_attempt_dirs_are_removed_at_start() {
    let m = TestMaster::start(&[]);
    let mut w = TestWorker::start(&m, &[]);
    let stale = w.work_dir.join("job-0000/attempt-1");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("output.mp4"), b"partial").unwrap();
    w.restart(&m, &[]);
    assert!(!w.work_dir.join("job-0000").exists());
    assert!(w.work_dir.join("node_id").exists());
}

/// VMAF needs an ffmpeg built with libvmaf (Debian's is not): the imageio-ffmpeg wheel
/// ships one, which CI installs.
fn libvmaf_ffmpeg() -> Option<String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then_some(path)
}

#[test]
fn qoe_includes_vmaf_when_the_ffmpeg_has_libvmaf() {
    let Some(ffmpeg) = libvmaf_ffmpeg() else {
        assert!(std::env::var_os("CI").is_none(), "CI installs imageio-ffmpeg (.ci/run)");
        eprintln!("skipped: pip install imageio-ffmpeg for an ffmpeg with libvmaf");
        return;
    };
    let m = TestMaster::start(&[]);
    let api = m.api();
    let _w = TestWorker::start(&m, &["--ffmpeg", &ffmpeg]);
    let id = api.submit(
        json!({"parameters": {"resolution": "160x90", "fps": 15, "duration": 2, "bitrate": "1M", "qoe": true}}),
    );
    let j = wait_terminal(&api, &id, Duration::from_secs(120));
    assert_eq!(j["status"], "completed", "{j}");
    let vmaf = j["vmaf_score"].as_f64().unwrap_or_else(|| panic!("vmaf_score missing: {j}"));
    assert!(vmaf > 80.0 && vmaf <= 100.0, "{vmaf}");
    assert_eq!(j["qoe_score"].as_f64(), Some(vmaf), "qoe_score is VMAF when measured");
    assert!(j["metrics"]["psnr_db"].as_f64().unwrap() > 30.0);
}

#[test]
fn wall_clock_limit_kills_and_fails_with_timeout() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let _w = TestWorker::start(&m, &[]);
    let id = api.submit(json!({"max_retries": 0, "parameters": {"resolution": "160x90", "fps": 10, "duration": 30, "realtime": true, "timeout_seconds": 1}}));
    let j = wait_terminal(&api, &id, Duration::from_secs(30));
    assert_eq!((j["status"].as_str(), j["failure_reason"].as_str()), (Some("failed"), Some("timeout")), "{j}");
    assert!(j["error"].as_str().unwrap().contains("wall-clock limit"), "{j}");
    assert!(ffmpeg_pids(&id).is_empty());
}
