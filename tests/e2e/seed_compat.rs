//! Issue 13: the seed system's clients against ffrtmp's master. A seed agent is played
//! exactly as the reference describes it: it registers without a node id, an interval
//! or GPU capabilities, heartbeats every 30 s with an empty body, polls `/jobs/next`
//! without an attempt, never long-polls for control, and reports results without an
//! attempt.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The registration body of the real seed agent (`worker/cmd/agent`).
fn seed_agent(host: &str, has_gpu: bool) -> Value {
    json!({
        "address": host, "type": "server", "cpu_threads": 8, "cpu_model": "Intel(R) Xeon(R)",
        "has_gpu": has_gpu, "gpu_type": if has_gpu { "NVIDIA GeForce RTX 3090" } else { "" },
        "ram_total_bytes": 16u64 << 30,
        "labels": {"os": "linux", "arch": "amd64", "node_type": "server"},
    })
}

/// Register as the seed agent does; the node id the master gave.
fn register_seed(api: &Api, body: Value) -> String {
    let (s, n) = api.post("/nodes/register", body);
    assert!(s == 201 || s == 200, "{s} {n}");
    n["id"].as_str().unwrap().to_string()
}

/// The seed agent's heartbeat: a POST with no body at all.
fn seed_heartbeat(api: &Api, node: &str) {
    let (s, v) = api.raw("POST", &format!("/nodes/{node}/heartbeat"), &[], "");
    assert_eq!(s, 200, "{v}");
}

/// The seed agent's poll: no wait, no attempt.
fn seed_poll(api: &Api, node: &str) -> Value {
    let (s, j) = api.get(&format!("/jobs/next?node_id={node}"));
    assert_eq!(s, 200, "{j}");
    j["job"].clone()
}

/// Every time the seed's Go clients decode (`*_at`, `last_heartbeat`, `timestamp`,
/// at any depth) must be RFC 3339: they fail on anything else.
fn assert_times_decode(v: &Value, seen: &mut usize) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k.ends_with("_at") || k == "last_heartbeat" || k == "timestamp" {
                    let t = x.as_str().unwrap_or_else(|| panic!("{k} is not a string: {v}"));
                    chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{k} = {t}: {e}"));
                    *seen += 1;
                }
                assert_times_decode(x, seen);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| assert_times_decode(x, seen)),
        _ => {}
    }
}

#[test]
fn a_seed_agent_heartbeating_every_30s_keeps_its_node_and_its_lease() {
    // The master asks for 0.2 s: a node that declares that interval is lost in 0.6 s,
    // a seed agent (which declares none) only after 3 × 30 s.
    let m = TestMaster::start(&["--heartbeat-interval", "0.2"]);
    let api = m.api();
    let quick = api.register("quick", json!({"encoders": ["libx264"]}));
    assert_eq!(quick["status"], "available");
    let seed = register_seed(&api, seed_agent("seed-host", false));
    let id = api.submit(json!({"scenario": "720p30-h264", "parameters": {"duration": 1}}));
    let job = seed_poll(&api, &seed);
    assert_eq!(job["id"], id.as_str());
    let attempt = job["attempt"].clone();
    wait_until(Duration::from_secs(5), "the silent declared node to be lost", || {
        api.node("quick")["status"] == "offline"
    });
    // Two heartbeat periods and a bit: heartbeats at 30 s and 60 s, checked every second.
    let start = Instant::now();
    let mut beats = 0;
    while start.elapsed() < Duration::from_secs(65) {
        if start.elapsed() >= Duration::from_secs(30 * (beats + 1)) {
            seed_heartbeat(&api, &seed);
            beats += 1;
        }
        let node = api.node(&seed);
        assert_ne!(node["status"], "offline", "at {:?}: {node}", start.elapsed());
        assert_eq!(node["current_job_id"], id.as_str(), "the seed CLI's single-job field: {node}");
        let j = api.job(&id);
        assert_eq!((j["status"].as_str(), &j["attempt"]), (Some("processing"), &attempt), "{j}");
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(beats, 2);
    // Its result, without an attempt, completes the job.
    let (s, r) = api.post(
        "/results",
        json!({"job_id": id, "node_id": seed, "status": "completed",
        "completed_at": "0001-01-01T00:00:00Z", "metrics": {"frames_encoded": 30}}),
    );
    assert_eq!((s, r["status"].as_str()), (200, Some("success")), "{r}");
    assert_eq!(api.status(&id), "completed");
    // What the seed CLI shows (`jobs status`, `nodes list|describe`) decodes.
    let mut seen = 0;
    for path in ["/jobs", &format!("/jobs/{id}"), "/nodes", &format!("/nodes/{seed}")] {
        let (s, v) = api.get(path);
        assert_eq!(s, 200, "{path}: {v}");
        assert_times_decode(&v, &mut seen);
    }
    assert!(seen >= 12, "{seen} timestamps checked");
}

#[test]
fn polls_and_results_prove_a_node_alive() {
    let m = TestMaster::start(&["--heartbeat-interval", "0.3"]);
    let api = m.api();
    api.register("poller", json!({"encoders": ["libx264"]}));
    // No heartbeat at all, polls only: alive for 3 s, five of its loss windows.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert!(seed_poll(&api, "poller").is_null());
        assert_ne!(api.node("poller")["status"], "offline", "at {:?}", start.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until(Duration::from_secs(5), "a silent node to be lost", || api.node("poller")["status"] == "offline");
    // One poll brings it back; so does a result.
    seed_poll(&api, "poller");
    assert_eq!(api.node("poller")["status"], "available");
    let id = api.submit(json!({}));
    let job = api.claim("poller", 5.0).unwrap();
    wait_until(Duration::from_secs(5), "lost again", || api.node("poller")["status"] == "offline");
    // A lost node's lease was revoked: its late result is refused, but it proves it alive.
    let (s, _) = api.result(&job, "poller", "completed", json!({}));
    assert_eq!(s, 409);
    assert_ne!(api.node("poller")["status"], "offline");
    assert_ne!(api.status(&id), "completed");
}

#[test]
fn seed_capability_names_and_gpus_without_capabilities() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    // An ffrtmp worker that probed its encoders: the strict rule (no NVENC probed, no
    // NVENC job), and a job no node offers waits with a reason instead of a 400.
    api.register("probed", json!({"encoders": ["libx264"], "has_gpu": true, "gpu_capabilities": []}));
    assert_eq!(api.node("probed")["encoders_source"], "probed");
    let vt = api.submit(json!({"parameters": {"codec": "h264_videotoolbox"}}));
    assert!(api.claim("probed", 0.0).is_none());
    let j = api.job(&vt);
    assert_eq!(j["status"], "pending");
    assert!(j["queue_reason"].as_str().unwrap().contains("h264_videotoolbox"), "{j}");

    // Seed agents: capabilities in the seed's spelling, or none at all with a GPU.
    let mut named = seed_agent("gpu-named", true);
    named["gpu_capabilities"] = json!(["nvenc_h264", "nvenc_h265"]);
    let named = register_seed(&api, named);
    let bare = register_seed(&api, seed_agent("gpu-bare", true));
    let cpu = register_seed(&api, seed_agent("cpu-only", false));
    let n = api.node(&named);
    assert_eq!(
        (n["gpu_capabilities"].clone(), n["encoders_source"].as_str()),
        (json!(["h264_nvenc", "hevc_nvenc"]), Some("declared"))
    );

    let av1 = api.submit(json!({"parameters": {"codec": "av1_nvenc"}}));
    let h264 = api.submit(json!({"parameters": {"codec": "h264_nvenc"}}));
    // The CPU node never gets a GPU job (and the VideoToolbox one waits for a GPU node).
    assert!(seed_poll(&api, &cpu).is_null());
    // The named node gets what it names, not av1.
    assert_eq!(seed_poll(&api, &named)["id"], h264.as_str());
    assert!(seed_poll(&api, &named).is_null(), "no av1_nvenc on a node that names h264/h265 only");
    // The bare GPU node runs hardware encodes by the seed's own rule.
    // (one job at a time, as the seed agent runs by default)
    let first = seed_poll(&api, &bare)["id"].as_str().unwrap().to_string();
    let (s, _) = api.post("/results", json!({"job_id": first, "node_id": bare, "status": "completed"}));
    assert_eq!(s, 200);
    let second = seed_poll(&api, &bare)["id"].as_str().unwrap().to_string();
    let mut got = [first, second];
    got.sort();
    let mut want = [vt, av1];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn unknown_parameters_are_kept_and_listed_unless_strict() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let body = json!({"scenario": "4K60", "classification": "benchmark",
        "parameters": {"codec": "h264", "duration": 1, "customer": {"id": 7}, "note": "-vf drawtext=text=x"}});
    let (s, j) = api.post("/jobs", body.clone());
    assert_eq!(s, 201, "{j}");
    assert_eq!(j["ignored_parameters"], json!(["customer", "note"]));
    let stored = api.job(j["id"].as_str().unwrap());
    assert_eq!(stored["parameters"]["customer"], json!({"id": 7}), "kept on the job: {stored}");
    assert!(stored.get("ignored_parameters").is_none(), "only the submit reply lists them");
    let (s, j) = api.post("/jobs", json!({"parameters": {"codec": "h264"}}));
    assert!(s == 201 && j.get("ignored_parameters").is_none(), "{j}");
    // Known keys keep their strict validation.
    let (s, e) = api.post("/jobs", json!({"parameters": {"codec": "h264; ls", "x": 1}}));
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_parameter")), "{e}");

    let strict = TestMaster::start(&["--strict-parameters"]);
    let (s, e) = strict.api().post("/jobs", body);
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_parameter")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("'customer', 'note'"), "{e}");
}

#[test]
fn ids_that_name_nothing_are_not_found() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    api.register("n1", json!({"encoders": ["libx264"]}));
    for (method, path) in [
        ("GET", "/jobs/nonexistent-id"),
        ("GET", "/jobs/nonexistent-id/logs"),
        ("POST", "/jobs/nonexistent-id/cancel"),
        ("POST", "/jobs/nonexistent-id/pause"),
        ("POST", "/jobs/nonexistent-id/resume"),
        ("POST", "/jobs/nonexistent-id/retry"),
        ("GET", "/jobs/0"),
        ("GET", "/jobs/018f0000-0000-7000-8000-000000000000"),
        ("GET", "/nodes/nonexistent-id"),
        ("POST", "/nodes/nonexistent-id/heartbeat"),
        ("DELETE", "/nodes/nonexistent-id"),
    ] {
        let (s, e) = api.raw(method, path, &[], "");
        assert_eq!(s, 404, "{method} {path}: {e}");
        assert!(e["error"].as_str().unwrap().ends_with("not_found"), "{method} {path}: {e}");
    }
}

#[test]
fn a_requeued_job_has_no_node_and_a_success_clears_old_errors() {
    let m = TestMaster::start(&["--retry-backoff-ms", "50"]);
    let api = m.api();
    api.register("n1", json!({"encoders": ["libx264"]}));
    let id = api.submit(json!({}));
    let job = api.claim("n1", 5.0).unwrap();
    let (s, r) =
        api.result(&job, "n1", "failed", json!({"error": "Connection refused", "failure_reason": "network_error"}));
    assert_eq!((s, r["status"].as_str()), (200, Some("retrying")), "{r}");
    let waiting = api.job(&id);
    assert!(waiting.get("node_id").is_none(), "a job waiting for its retry is on no node: {waiting}");
    wait_until(Duration::from_secs(5), "queued again", || api.status(&id) == "queued");
    let queued = api.job(&id);
    assert!(queued.get("node_id").is_none(), "{queued}");
    let attempts = queued["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{queued}");
    assert_eq!((attempts[0]["node_id"].as_str(), attempts[0]["outcome"].as_str()), (Some("n1"), Some("retrying")));
    assert!(attempts[0]["reason"].as_str().unwrap().contains("Connection refused"), "{queued}");
    assert!(attempts[0]["ended_at"].is_string());

    api.register("n2", json!({"encoders": ["libx264"]}));
    let again = api.claim("n2", 5.0).unwrap();
    assert_eq!(again["attempt"], 2);
    let running = api.job(&id);
    assert_eq!(running["attempts"][1]["node_id"], "n2");
    assert!(running["attempts"][1].get("outcome").is_none(), "still running: {running}");
    assert_eq!(api.result(&again, "n2", "completed", json!({})).0, 200);
    let done = api.job(&id);
    assert_eq!(done["status"], "completed");
    assert!(done.get("error").is_none() && done.get("failure_reason").is_none(), "{done}");
    assert_eq!(done["attempts"][0]["outcome"], "retrying", "the earlier failure stays in attempts: {done}");
    assert_eq!(done["attempts"][1]["outcome"], "completed");
}

#[test]
fn a_paused_job_on_a_lost_node_stays_paused_until_resumed() {
    let m = TestMaster::start(&["--heartbeat-interval", "0.2"]);
    let api = m.api();
    api.register("lost", json!({"encoders": ["libx264"]}));
    let id = api.submit(json!({}));
    let job = api.claim("lost", 5.0).unwrap();
    assert_eq!(api.post(&format!("/jobs/{id}/pause"), json!({})).0, 200);
    // The node goes silent and is lost; the job stays paused, on no node.
    wait_until(Duration::from_secs(5), "the node to be lost", || api.node("lost")["status"] == "offline");
    wait_until(Duration::from_secs(5), "the job to leave the node", || api.job(&id).get("node_id").is_none());
    let paused = api.job(&id);
    assert_eq!((paused["status"].as_str(), paused["retry_count"].as_i64()), (Some("paused"), Some(0)), "{paused}");
    assert_eq!(paused["attempts"][0]["outcome"], "paused", "{paused}");
    // Not handed out while paused.
    api.register("other", json!({"encoders": ["libx264"]}));
    assert!(api.claim("other", 0.5).is_none());
    // The lost node's late result changes nothing.
    assert_eq!(api.result(&job, "lost", "completed", json!({})).0, 409);
    // Resumed: queued, and run anew elsewhere.
    let (s, r) = api.post(&format!("/jobs/{id}/resume"), json!({}));
    assert_eq!((s, r["status"].as_str()), (200, Some("resumed")), "{r}");
    let next = api.claim("other", 5.0).unwrap();
    assert_eq!((next["id"].as_str(), next["attempt"].as_i64()), (Some(id.as_str()), Some(2)));
}

#[test]
fn seed_lavfi_inputs_and_rtmp_outputs_run_on_a_real_worker() {
    let dir = tmpdir();
    let (mut listener, url) = rtmp_listener(&dir.path().join("got.flv"), "live/seed");
    let m = TestMaster::start(&["--rtmp-allow", "127.0.0.1"]);
    let api = m.api();
    let w = TestWorker::start(&m, &[]);
    // The seed's submit scripts: a lavfi source as `input`, an rtmp:// URL as `output`.
    let (s, j) = api.post(
        "/jobs",
        json!({"parameters": {
        "input": "testsrc=duration=1:size=160x120:rate=10", "output": url, "codec": "h264",
        "bitrate": "300k", "note": "-f null /dev/null"}}),
    );
    assert_eq!(s, 201, "{j}");
    assert_eq!(j["ignored_parameters"], json!(["note"]));
    let id = j["id"].as_str().unwrap().to_string();
    let done = wait_terminal(&api, &id, Duration::from_secs(60));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["node_id"], w.node_id.as_str());
    let _ = listener.wait();
    let (codec, width, height, _) = probe_video(&dir.path().join("got.flv"));
    assert_eq!((codec.as_str(), width, height), ("h264", 160, 120), "the stream has the lavfi source's size");
    // Sources and options outside the allow-list are refused at the door.
    for input in ["testsrc=size=640x360,drawtext=text=x", "color=c=red;id", "sine=size=1x1", "testsrc=filename=x"] {
        let (s, e) = api.post("/jobs", json!({"parameters": {"input": input}}));
        assert_eq!((s, e["error"].as_str()), (400, Some("invalid_parameter")), "{input}: {e}");
    }
}

#[test]
fn the_seed_masters_flags_start_an_in_memory_master() {
    let scratch = tmpdir();
    let cwd = tmpdir();
    let metrics_port = free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ffrtmp"));
    cmd.args(["master", "--port", "0", "--db", "", "--tls=false", "--metrics=false"])
        .args(["--metrics-port", &metrics_port.to_string()])
        .current_dir(cwd.path())
        .env("TMPDIR", scratch.path())
        .env("RUST_LOG", "warn")
        .env_remove("MASTER_API_KEY")
        .env_remove("DATABASE_URL");
    let mut master = ffrtmp::testkit::spawn_ready(cmd, "ffrtmp master listening on", Duration::from_secs(30)).unwrap();
    let base = ffrtmp::testkit::url_after(&master.line, "listening on ").unwrap();
    assert!(master.line.contains("(metrics: off)"), "{}", master.line);
    let api = Api { base, key: None, heartbeat_interval: 5.0 };
    let id = api.submit(json!({"scenario": "in-memory"}));
    assert_eq!(api.status(&id), "pending");
    let stores = || std::fs::read_dir(scratch.path()).unwrap().count();
    assert_eq!(stores(), 1, "one scratch store");
    assert!(!cwd.path().join("ffrtmp.db").exists(), "no database file where it was started");
    assert_eq!(api.get("/metrics").0, 404, "--metrics=false: no /metrics route");
    assert!(!port_listening(metrics_port), "--metrics=false: no metrics listener");
    // A clean stop deletes the store.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(master.pid() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(master.child.wait().unwrap().success());
    assert_eq!(stores(), 0, "the in-memory store is gone with the master");
}
