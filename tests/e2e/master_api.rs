//! Issue 3: the master's API, scheduling, control, retries, fencing, node loss,
//! restart and bad input, against a real master process on a temp SQLite file.

use crate::harness::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

fn cpu_node() -> Value {
    json!({"cpu_threads": 8, "ram_total_bytes": 8u64 << 30, "encoders": ["libx264", "libvpx-vp9"], "max_concurrent_jobs": 1})
}

#[test]
fn priority_queue_order_and_fifo() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    api.register("n1", cpu_node());
    let order = [
        ("batch", "high"),
        ("default", "low"),
        ("live", "low"),
        ("default", "high"),
        ("live", "high"),
        ("default", "high"),
        ("default", "medium"),
    ];
    let ids: Vec<String> = order.iter().map(|(q, p)| api.submit(json!({"queue": q, "priority": p}))).collect();
    let mut got = Vec::new();
    for _ in 0..ids.len() {
        let job = api.claim("n1", 5.0).expect("a job");
        assert_eq!(job["status"], "processing");
        got.push(job["id"].as_str().unwrap().to_string());
        let (s, r) = api.result(&job, "n1", "completed", json!({}));
        assert_eq!(s, 200, "{r}");
    }
    let want: Vec<String> = [4, 2, 3, 5, 6, 1, 0].iter().map(|&i| ids[i].clone()).collect();
    assert_eq!(got, want, "live > default > batch, then high > medium > low, then FIFO");
}

#[test]
fn encoder_and_gpu_placement_without_head_of_line_blocking() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    api.register("cpu", cpu_node());
    // An H100: NVML says "encoder capacity", the worker's probe found no NVENC.
    api.register(
        "h100",
        json!({"has_gpu": true, "gpu_capabilities": ["h264_nvenc"], "encoders": ["libx264"],
        "gpus": [{"index": 0, "name": "NVIDIA H100", "memory_total_bytes": 85899345920u64}], "max_concurrent_jobs": 4}),
    );
    let nvenc = api.submit(json!({"queue": "live", "priority": "high", "parameters": {"codec": "h264_nvenc"}}));
    let cpu_job = api.submit(json!({"queue": "batch", "priority": "low", "parameters": {"codec": "h264"}}));
    // The CPU node gets the CPU job although a higher-priority GPU job is first.
    let j = api.claim("cpu", 5.0).expect("cpu job");
    assert_eq!(j["id"], cpu_job.as_str());
    // Nobody can run the NVENC job: it stays queued with a visible reason.
    assert!(api.claim("h100", 0.3).is_none(), "no NVENC job may go to an H100");
    let job = api.job(&nvenc);
    assert_eq!(job["status"], "pending");
    let reason = job["queue_reason"].as_str().unwrap();
    assert!(reason.contains("h264_nvenc"), "{reason}");
    // A node whose probe found NVENC gets it at once.
    api.register("l4", json!({"has_gpu": true, "encoders": ["libx264", "h264_nvenc"], "gpus": [{"index": 0, "name": "L4", "memory_total_bytes": 24u64 << 30}]}));
    let j = api.claim("l4", 5.0).expect("nvenc job");
    assert_eq!(j["id"], nvenc.as_str());
}

#[test]
fn reject_unplaceable_when_enabled() {
    let m = TestMaster::start(&["--reject-unplaceable"]);
    let api = m.api();
    api.register("cpu", cpu_node());
    let (s, j) = api.post("/jobs", json!({"parameters": {"codec": "hevc_nvenc"}}));
    assert_eq!(s, 201);
    assert_eq!(j["status"], "rejected");
    assert_eq!(j["failure_reason"], "capability_mismatch");
    let (s, j) = api.post("/jobs", json!({"parameters": {"codec": "vp9"}}));
    assert_eq!((s, j["status"].as_str()), (201, Some("pending")));
}

#[test]
fn long_poll_answers_when_a_job_arrives() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    api.register("n1", cpu_node());
    let poller = {
        let api = api.clone();
        std::thread::spawn(move || api.claim("n1", 20.0))
    };
    wait_until(Duration::from_secs(5), "the request is parked", || api.metric("ffrtmp_workers_waiting") == 1.0);
    let started = std::time::Instant::now();
    let id = api.submit(json!({}));
    let job = poller.join().unwrap().expect("long-poll returns the new job");
    assert_eq!(job["id"], id.as_str());
    assert!(started.elapsed() < Duration::from_secs(5), "delivered promptly, not at the poll deadline");
}

#[test]
fn pause_resume_cancel_reach_the_worker() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    api.register("n1", cpu_node());
    let id = api.submit(json!({"parameters": {"duration": 2}}));
    let job = api.claim("n1", 5.0).unwrap();
    let attempt = job["attempt"].as_i64().unwrap();

    // Control long-poll parked before the call.
    let poll = {
        let api = api.clone();
        std::thread::spawn(move || api.get("/nodes/n1/control?wait=20"))
    };
    std::thread::sleep(Duration::from_millis(100));
    let (s, r) = api.post(&format!("/jobs/{id}/pause"), json!({}));
    assert_eq!((s, r["status"].as_str()), (200, Some("paused")), "{r}");
    let (_, cmds) = poll.join().unwrap();
    assert_eq!(cmds["commands"][0]["action"], "pause");
    assert_eq!(cmds["commands"][0]["job_id"], id.as_str());
    assert_eq!(api.status(&id), "paused");
    let (s, _) =
        api.post(&format!("/jobs/{id}/control/ack"), json!({"node_id": "n1", "attempt": attempt, "action": "pause"}));
    assert_eq!(s, 200);
    // Progress replies carry the desired state too.
    let (_, p) =
        api.post(&format!("/jobs/{id}/progress"), json!({"node_id": "n1", "attempt": attempt, "percent": 10.0}));
    assert_eq!(p["control"], "pause");

    // Pausing twice is an illegal transition naming the state.
    let (s, e) = api.post(&format!("/jobs/{id}/pause"), json!({}));
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_transition")));
    assert!(e["message"].as_str().unwrap().contains("paused"));

    let (s, r) = api.post(&format!("/jobs/{id}/resume"), json!({}));
    assert_eq!((s, r["status"].as_str()), (200, Some("resumed")));
    let (_, cmds) = api.get("/nodes/n1/control?wait=5");
    assert_eq!(cmds["commands"][0]["action"], "resume");
    assert_eq!(api.status(&id), "processing");

    let (s, r) = api.post(&format!("/jobs/{id}/cancel"), json!({}));
    assert_eq!((s, r["status"].as_str()), (200, Some("canceled")));
    let (_, cmds) = api.get("/nodes/n1/control?wait=5");
    assert_eq!(cmds["commands"][0]["action"], "cancel");
    let (_, p) =
        api.post(&format!("/jobs/{id}/progress"), json!({"node_id": "n1", "attempt": attempt, "percent": 20.0}));
    assert_eq!(p["control"], "cancel");
    // A late "completed" cannot overwrite "canceled" (seed bug B8).
    let (s, _) = api.result(&job, "n1", "completed", json!({}));
    assert_eq!(s, 200);
    assert_eq!(api.status(&id), "canceled");
    // Finished jobs cannot be paused; a canceled one can be retried.
    let (s, e) = api.post(&format!("/jobs/{id}/pause"), json!({}));
    assert_eq!(s, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("canceled"), "{e}");
    wait_until(Duration::from_secs(10), "retry of a canceled job", || {
        let (s, r) = api.post(&format!("/jobs/{id}/retry"), json!({}));
        s == 200 && r["status"] == "queued"
    });
    assert_eq!(api.status(&id), "queued");
    // Cancel of a queued job.
    let (s, _) = api.post(&format!("/jobs/{id}/cancel"), json!({}));
    assert_eq!(s, 200);
    assert_eq!(api.status(&id), "canceled");
    assert!(api.metric("ffrtmp_control_latency_seconds_count{action=\"pause\"}") >= 1.0);
}

#[test]
fn retries_with_backoff_then_final_failure() {
    let m = TestMaster::start(&["--retry-backoff-ms", "200"]);
    let api = m.api();
    api.register("n1", cpu_node());
    let id = api.submit(json!({"max_retries": 2}));
    let mut attempts = Vec::new();
    for round in 0..3 {
        let job = api.claim("n1", 10.0).expect("job comes back after backoff");
        assert_eq!(job["id"], id.as_str());
        attempts.push(job["attempt"].as_i64().unwrap());
        let (s, r) = api.result(&job, "n1", "failed", json!({"error": "exit status 1", "logs": "boom"}));
        assert_eq!(s, 200, "{r}");
        if round < 2 {
            assert_eq!(r["status"], "retrying");
            assert_eq!(r["retry"], round + 1);
            let j = api.job(&id);
            assert_eq!(j["status"], "retrying");
            assert!(j["retry_at"].is_string());
        } else {
            assert_eq!(r["job_status"], "failed");
        }
    }
    assert_eq!(attempts, vec![1, 2, 3]);
    let j = api.job(&id);
    assert_eq!(j["status"], "failed");
    assert_eq!(j["retry_count"], 2);
    assert_eq!(j["logs"], "boom", "logs are persisted (seed bug B5)");
    let (_, l) = api.get(&format!("/jobs/{id}/logs"));
    assert_eq!(l["logs"], "boom");
    assert_eq!(api.metric("ffrtmp_job_retries_total"), 2.0);

    // A permanent error fails at once.
    let id2 = api.submit(json!({"max_retries": 3}));
    let job = api.claim("n1", 5.0).unwrap();
    assert_eq!(job["id"], id2.as_str());
    let (_, r) = api.result(
        &job,
        "n1",
        "failed",
        json!({"error": "Unknown encoder", "failure_reason": "user_error", "retryable": false}),
    );
    assert_eq!(r["job_status"], "failed");
    assert_eq!(api.job(&id2)["failure_reason"], "user_error");
}

#[test]
fn fencing_stale_attempts_get_409_and_repeats_are_idempotent() {
    let m = TestMaster::start(&["--retry-backoff-ms", "50"]);
    let api = m.api();
    api.register("n1", cpu_node());
    api.register("n2", cpu_node());
    let id = api.submit(json!({}));
    let first = api.claim("n1", 5.0).unwrap();
    // Another node cannot report for it.
    let (s, e) = api.result(&first, "n2", "completed", json!({}));
    assert_eq!((s, e["error"].as_str()), (409, Some("stale_attempt")));
    // Attempt 1 fails and is retried; attempt 2 goes to n2.
    let (_, r) = api.result(&first, "n1", "failed", json!({"error": "x"}));
    assert_eq!(r["status"], "retrying");
    // The same failure report again (a client retry after a lost reply): same answer, no double count.
    let (s, r2) = api.result(&first, "n1", "failed", json!({"error": "x"}));
    assert_eq!((s, r2["retry"].clone()), (200, r["retry"].clone()));
    let second = api.claim("n2", 10.0).unwrap();
    assert_eq!(second["attempt"], 2);
    // The zombie attempt 1 reports late: 409, and the job is untouched.
    let (s, e) = api.result(&first, "n1", "completed", json!({}));
    assert_eq!((s, e["error"].as_str()), (409, Some("stale_attempt")), "{e}");
    let (s, _) = api.post(&format!("/jobs/{id}/progress"), json!({"node_id": "n1", "attempt": 1, "percent": 50}));
    assert_eq!(s, 409);
    // Seed-style report without attempt is checked by node ownership.
    let (s, _) = api.post("/results", json!({"job_id": id, "node_id": "n1", "status": "completed"}));
    assert_eq!(s, 409);
    let (s, _) = api.result(&second, "n2", "completed", json!({"metrics": {"frames": 60}, "vmaf_score": 95.5}));
    assert_eq!(s, 200);
    let (s, r) = api.result(&second, "n2", "completed", json!({}));
    assert_eq!((s, r["job_status"].as_str()), (200, Some("completed")), "identical repeat is idempotent");
    let j = api.job(&id);
    assert_eq!(j["status"], "completed");
    assert_eq!(j["retry_count"], 1);
    assert_eq!(j["vmaf_score"], 95.5);
    assert_eq!(j["metrics"]["frames"], 60);
}

#[test]
fn node_loss_requeues_its_jobs_and_heartbeat_revives() {
    let m = TestMaster::start(&["--heartbeat-interval", "0.2", "--retry-backoff-ms", "50"]);
    let api = m.api();
    api.register("dies", cpu_node());
    let id = api.submit(json!({}));
    let job = api.claim("dies", 5.0).unwrap();
    assert_eq!(job["attempt"], 1);
    api.register("lives", cpu_node());
    // Keep "lives" alive with heartbeats while "dies" goes silent.
    let hb = {
        let api = api.clone();
        std::thread::spawn(move || {
            let mut got = None;
            for _ in 0..200 {
                api.post("/nodes/lives/heartbeat", json!({}));
                let (_, j) = api.get("/jobs/next?node_id=lives&wait=0.1");
                if !j["job"].is_null() {
                    got = Some(j["job"].clone());
                    break;
                }
            }
            got
        })
    };
    let second = hb.join().unwrap().expect("the lost node's job is placed elsewhere");
    assert_eq!(second["id"], id.as_str());
    assert_eq!(second["attempt"], 2);
    let (_, n) = api.get("/nodes/dies");
    assert_eq!(n["status"], "offline");
    assert!(api.metric("ffrtmp_node_losses_total") >= 1.0);
    // The dead node's late report is refused.
    let (s, _) = api.result(&job, "dies", "completed", json!({}));
    assert_eq!(s, 409);
    // Its next heartbeat revives it.
    let (s, _) = api.post("/nodes/dies/heartbeat", json!({}));
    assert_eq!(s, 200);
    let (_, n) = api.get("/nodes/dies");
    assert_eq!(n["status"], "available");
}

#[test]
fn heartbeat_reconciles_jobs_the_worker_does_not_run() {
    let m = TestMaster::start(&["--unreported-grace", "0.2", "--retry-backoff-ms", "50"]);
    let api = m.api();
    api.register("n1", cpu_node());
    let id = api.submit(json!({}));
    let job = api.claim("n1", 5.0).unwrap();
    // The worker reports a job it should not run (stale) and omits the real one.
    let (_, r) = api.post("/nodes/n1/heartbeat", json!({"running_jobs": [{"job_id": id, "attempt": 99}]}));
    assert_eq!(r["stale_jobs"][0]["attempt"], 99);
    wait_until(Duration::from_secs(10), "lease revoked for an unreported job", || {
        api.post("/nodes/n1/heartbeat", json!({"running_jobs": []}));
        api.status(&id) != "processing"
    });
    let again = api.claim("n1", 10.0).unwrap();
    assert_eq!(again["attempt"], job["attempt"].as_i64().unwrap() + 1);
}

#[test]
fn drain_and_remove_nodes() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    api.register("n1", cpu_node());
    let id = api.submit(json!({}));
    let job = api.claim("n1", 5.0).unwrap();
    let (s, n) = api.post("/nodes/n1/drain", json!({}));
    assert_eq!((s, n["status"].as_str()), (200, Some("draining")));
    let (s, e) = api.call("DELETE", "/nodes/n1", None);
    assert_eq!((s, e["error"].as_str()), (409, Some("node_busy")));
    api.result(&job, "n1", "completed", json!({}));
    api.submit(json!({}));
    assert!(api.claim("n1", 0.3).is_none(), "a draining node takes no new work");
    assert_eq!(api.status(&id), "completed");
    let (s, _) = api.call("DELETE", "/nodes/n1", None);
    assert_eq!(s, 200);
    let (s, e) = api.get("/nodes/n1");
    assert_eq!((s, e["error"].as_str()), (404, Some("node_not_found")));
}

#[test]
fn restart_preserves_every_state_and_running_leases() {
    let mut m = TestMaster::start(&["--retry-backoff-ms", "600000", "--heartbeat-interval", "5"]);
    let api = m.api();
    api.register("n1", json!({"cpu_threads": 8, "encoders": ["libx264"], "max_concurrent_jobs": 8}));
    let completed = api.submit(json!({"priority": "high"}));
    let failed = api.submit(json!({"priority": "high", "max_retries": 0}));
    let canceled = api.submit(json!({"priority": "high"}));
    let retrying = api.submit(json!({"priority": "high", "max_retries": 5}));
    let paused = api.submit(json!({"priority": "high"}));
    let processing = api.submit(json!({"priority": "high"}));
    let mut leased = std::collections::HashMap::new();
    for _ in 0..6 {
        let j = api.claim("n1", 5.0).unwrap();
        leased.insert(j["id"].as_str().unwrap().to_string(), j);
    }
    let pending = api.submit(json!({"priority": "low"}));
    api.result(&leased[&completed], "n1", "completed", json!({}));
    api.result(&leased[&failed], "n1", "failed", json!({"error": "bad"}));
    api.post(&format!("/jobs/{canceled}/cancel"), json!({}));
    api.result(&leased[&retrying], "n1", "failed", json!({"error": "flaky"}));
    api.post(&format!("/jobs/{paused}/pause"), json!({}));
    let before: Vec<(String, String)> = [&completed, &failed, &canceled, &retrying, &paused, &processing, &pending]
        .iter()
        .map(|id| (id.to_string(), api.status(id)))
        .collect();
    let states: Vec<&str> = before.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(states, vec!["completed", "failed", "canceled", "retrying", "paused", "processing", "pending"]);
    let completed_total = api.metric("ffrtmp_jobs_total{state=\"completed\"}");

    m.restart();
    let api = m.api();
    for (id, s) in &before {
        assert_eq!(&api.status(id), s, "job {id} keeps its state across kill -9");
    }
    assert_eq!(
        api.metric("ffrtmp_jobs_total{state=\"completed\"}"),
        completed_total,
        "all-time counter survives restart"
    );
    assert_eq!(api.metric("ffrtmp_jobs_in_state{state=\"pending\"}"), 1.0);
    // The worker re-attaches within the grace period: its reports are accepted.
    let (s, r) = api.result(&leased[&processing], "n1", "completed", json!({}));
    assert_eq!(s, 200, "{r}");
    let (s, _) = api.post(&format!("/jobs/{paused}/resume"), json!({}));
    assert_eq!(s, 200);
    assert_eq!(api.status(&paused), "processing");
    // The pending job is still dispatchable.
    let j = api.claim("n1", 5.0).unwrap();
    assert_eq!(j["id"], pending.as_str());
    let (_, list) = api.get("/jobs?limit=100");
    assert_eq!(list["count"], 7);
}

#[test]
fn concurrent_submits_are_all_persisted() {
    let mut m = TestMaster::start(&[]);
    let api = m.api();
    let handles: Vec<_> = (0..20)
        .map(|t| {
            let api = api.clone();
            std::thread::spawn(move || {
                (0..10).map(|i| api.submit(json!({"scenario": format!("c{t}-{i}")}))).collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: HashSet<String> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert_eq!(ids.len(), 200);
    m.restart();
    let api = m.api();
    let mut seen = HashSet::new();
    let mut cursor = String::new();
    loop {
        let (s, page) = api.get(&format!("/jobs?limit=64{cursor}"));
        assert_eq!(s, 200);
        for j in page["jobs"].as_array().unwrap() {
            seen.insert(j["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every 201 survived kill -9");
}

#[test]
fn concurrent_claims_never_share_a_job() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    for i in 0..10 {
        api.register(&format!("w{i}"), json!({"encoders": ["libx264"], "max_concurrent_jobs": 3}));
    }
    for _ in 0..30 {
        api.submit(json!({}));
    }
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let api = api.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..3 {
                    if let Some(j) = api.claim(&format!("w{i}"), 2.0) {
                        got.push(j["id"].as_str().unwrap().to_string());
                    }
                }
                got
            })
        })
        .collect();
    let all: Vec<String> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 30);
    assert_eq!(unique.len(), 30, "no job handed to two nodes");
}

#[test]
fn list_filters_pagination_ids_and_idempotency() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    for q in ["live", "batch", "live"] {
        api.submit(json!({"queue": q}));
    }
    let (_, l) = api.get("/jobs?queue=live");
    assert_eq!(l["count"], 2);
    let (_, l) = api.get("/api/v1/jobs?queue=batch&status=pending");
    assert_eq!(l["count"], 1);
    let (_, p1) = api.get("/jobs?limit=2");
    assert_eq!(p1["count"], 2);
    let (_, p2) = api.get(&format!("/jobs?limit=2&cursor={}", p1["next_cursor"].as_str().unwrap()));
    assert_eq!(p2["count"], 1);
    assert!(p2["next_cursor"].is_null());
    // Sequence numbers and UUIDs both resolve; /api/v1 serves the same.
    let (_, j1) = api.get("/jobs/1");
    let (_, j1b) = api.get(&format!("/api/v1/jobs/{}", j1["id"].as_str().unwrap()));
    assert_eq!(j1["id"], j1b["id"]);
    // A UUID that starts with a digit is a UUID, not sequence number 7 (seed bug B1).
    let (s, e) = api.get("/jobs/7d9f0c3e-1111-4222-8333-444455556666");
    assert_eq!((s, e["error"].as_str()), (404, Some("job_not_found")));
    // Idempotency-Key: one job however often it is sent.
    let hdr = [("Idempotency-Key", "abc-1"), ("Content-Type", "application/json")];
    let (s1, a) = api.raw("POST", "/jobs", &hdr, r#"{"scenario":"once"}"#);
    let (s2, b) = api.raw("POST", "/jobs", &hdr, r#"{"scenario":"once"}"#);
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(a["id"], b["id"]);
    let (_, l) = api.get("/jobs");
    assert_eq!(l["count"], 4);
}

#[test]
fn bad_input_gets_clear_4xx_json() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let cases: Vec<(&str, &str, &str, u16, &str)> = vec![
        ("POST", "/jobs", "{not json", 400, "invalid_json"),
        ("POST", "/jobs", r#"{"queue":"urgent"}"#, 400, "invalid_queue"),
        ("POST", "/jobs", r#"{"priority":"p0"}"#, 400, "invalid_priority"),
        ("POST", "/jobs", r#"{"engine":"vlc"}"#, 400, "invalid_engine"),
        ("POST", "/jobs", r#"{"parameters":{"input":"http://evil/x"}}"#, 400, "input_not_allowed"),
        ("POST", "/jobs", r#"{"parameters":{"codec":"libx264; rm -rf /"}}"#, 400, "invalid_parameter"),
        ("POST", "/jobs", r#"{"parameters":{"output":"../../etc/x.mp4"}}"#, 400, "invalid_parameter"),
        ("POST", "/jobs", r#"{"scenario": 5}"#, 400, "invalid_json"),
        ("GET", "/jobs/not-a-uuid", "", 404, "job_not_found"),
        ("GET", "/jobs/99999", "", 404, "job_not_found"),
        ("GET", "/jobs?status=running", "", 400, "invalid_status"),
        ("GET", "/jobs?limit=0", "", 400, "invalid_query"),
        ("GET", "/jobs/next", "", 400, "missing_node_id"),
        ("GET", "/jobs/next?node_id=ghost", "", 404, "node_not_found"),
        ("POST", "/jobs/1/explode", "", 404, "route_not_found"),
        ("GET", "/nowhere", "", 404, "route_not_found"),
        ("DELETE", "/jobs", "", 405, "method_not_allowed"),
        ("POST", "/results", r#"{"job_id":"x","node_id":"n","status":"completed"}"#, 400, "invalid_job_id"),
        ("POST", "/nodes/register", r#"{"node_id":"bad id!"}"#, 400, "invalid_node_id"),
        ("POST", "/nodes/ghost/heartbeat", "", 404, "node_not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let (s, e) = api.raw(method, path, &[("Content-Type", "application/json")], body);
        assert_eq!((s, e["error"].as_str()), (status, Some(code)), "{method} {path} {body}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    let (_, e) = api.raw("POST", "/jobs", &[], r#"{"queue":"urgent"}"#);
    assert!(e["message"].as_str().unwrap().contains("live, default, batch"));
    let big = format!(r#"{{"scenario":"{}"}}"#, "x".repeat(1_100_000));
    let (s, e) = api.raw("POST", "/jobs", &[("Content-Type", "application/json")], &big);
    assert_eq!((s, e["error"].as_str()), (413, Some("payload_too_large")));
    // Nothing bad was stored.
    let (_, l) = api.get("/jobs");
    assert_eq!(l["count"], 0);
}

#[test]
fn api_keys_and_roles() {
    let m = TestMaster::start(&["--api-key", "adm", "--worker-api-key", "wrk", "--read-api-key", "ro"]);
    let open = m.api();
    let (s, _) = open.get("/health");
    assert_eq!(s, 200, "/health is open");
    let (s, e) = open.get("/jobs");
    assert_eq!((s, e["error"].as_str()), (401, Some("unauthorized")));
    let (s, _) = open.with_key("nope").get("/jobs");
    assert_eq!(s, 401);
    let admin = open.with_key("adm");
    let worker = open.with_key("wrk");
    let ro = open.with_key("ro");
    let (s, _) = admin.post("/jobs", json!({}));
    assert_eq!(s, 201);
    let (s, e) = worker.post("/jobs", json!({}));
    assert_eq!((s, e["error"].as_str()), (403, Some("forbidden")));
    let (s, _) = ro.post("/jobs", json!({}));
    assert_eq!(s, 403);
    let (s, _) = ro.get("/jobs");
    assert_eq!(s, 200);
    let (s, _) = worker.post("/nodes/register", json!({"node_id": "w", "encoders": ["libx264"]}));
    assert_eq!(s, 201);
    let (s, j) = worker.get("/jobs/next?node_id=w&wait=2");
    assert_eq!(s, 200);
    assert!(!j["job"].is_null());
    let (s, _) = ro.get("/jobs/next?node_id=w");
    assert_eq!(s, 403);
    let (s, _) = admin.get("/api/v1/nodes");
    assert_eq!(s, 200);
}

#[test]
fn refuses_public_bind_without_key() {
    let out = std::process::Command::new(BIN)
        .args(["master", "--bind", "0.0.0.0", "--port", "0", "--metrics-port", "0", "--db"])
        .arg(tmpdir().path().join("x.db"))
        .env_remove("MASTER_API_KEY")
        .env_remove("FFMPEG_RTMP_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without an API key"), "{err}");
}

#[test]
fn openapi_and_metrics_are_served() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let (s, doc) = api.get("/openapi.json");
    assert_eq!(s, 200);
    for p in ["/jobs", "/jobs/next", "/results", "/nodes/register", "/jobs/{id}/progress"] {
        assert!(doc["paths"].get(p).is_some(), "openapi documents {p}");
    }
    let text = api.text("/metrics");
    for state in [
        "pending",
        "queued",
        "processing",
        "paused",
        "completed",
        "failed",
        "canceled",
        "retrying",
        "rejected",
        "timed_out",
    ] {
        assert!(text.contains(&format!("ffrtmp_jobs_total{{state=\"{state}\"}} 0")), "{state} exported at 0");
    }
    assert!(text.contains("ffrtmp_nodes_by_status{status=\"offline\"} 0"));
    // Route templates, never raw ids.
    api.get("/jobs/123");
    let text = api.text("/metrics");
    assert!(text.contains("route=\"/jobs/{id}\""));
    assert!(!text.contains("/jobs/123"));
}

#[test]
fn serves_https_with_rustls() {
    let dir = tmpdir();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(ok.status.success());
    let m = TestMaster::start(&["--tls", "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(m.url.starts_with("https://"), "{}", m.url);
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&cert)
        .arg(format!("{}/health", m.url))
        .output()
        .expect("curl");
    let health: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON over TLS");
    assert_eq!(health["status"], "healthy", "{health}");
    let plain = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/health", m.url.replace("https", "http")))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200", "plain HTTP is not served on a TLS port");
}

#[test]
fn idle_cpu_node_never_stalls_placement_for_a_gpu_node() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    // A roomy CPU node parks first; the only work is for a GPU node with one slot.
    api.register("cpu", json!({"encoders": ["libx264"], "max_concurrent_jobs": 8}));
    api.register("gpu", json!({"has_gpu": true, "encoders": ["h264_nvenc"], "gpus": [{"index": 0, "name": "L4", "memory_total_bytes": 1u64 << 34}], "max_concurrent_jobs": 1}));
    let cpu_poll = {
        let api = api.clone();
        std::thread::spawn(move || api.claim("cpu", 3.0))
    };
    wait_until(Duration::from_secs(5), "cpu node parked", || api.metric("ffrtmp_workers_waiting") == 1.0);
    let gpu_poll = {
        let api = api.clone();
        std::thread::spawn(move || api.claim("gpu", 10.0))
    };
    wait_until(Duration::from_secs(5), "gpu node parked", || api.metric("ffrtmp_workers_waiting") == 2.0);
    let id = api.submit(json!({"parameters": {"codec": "h264_nvenc"}}));
    let got = gpu_poll.join().unwrap().expect("the GPU node gets the NVENC job");
    assert_eq!(got["id"], id.as_str());
    assert!(cpu_poll.join().unwrap().is_none());
    // The scheduler is still responsive.
    let (s, _) = api.get("/api/v1/status");
    assert_eq!(s, 200);
}

/// An offline node silent past `--forget-offline-after` is removed (workers scaled away
/// leave no dead nodes behind); a node that keeps heartbeating stays.
#[test]
fn offline_nodes_are_forgotten_after_the_configured_delay() {
    let m = TestMaster::start(&["--heartbeat-interval", "0.2", "--forget-offline-after", "2s"]);
    let api = m.api();
    let w = TestWorker::start(&m, &["--executor", "noop"]);
    let registered = std::time::Instant::now();
    api.register("scaled-away", json!({"encoders": ["libx264"]}));
    wait_until(Duration::from_secs(10), "the silent node offline", || api.node("scaled-away")["status"] == "offline");
    wait_until(Duration::from_secs(15), "the silent node forgotten", || api.get("/nodes/scaled-away").0 == 404);
    assert!(registered.elapsed() >= Duration::from_secs(2), "not before 2 s of silence");
    let (s, live) = api.get(&format!("/nodes/{}", w.node_id));
    assert_eq!(s, 200, "a heartbeating worker stays");
    assert_ne!(live["status"], "offline");
    // `0` keeps offline nodes; a malformed delay stops the master with the reason.
    let dir = tmpdir();
    let out = std::process::Command::new(BIN)
        .args(["master", "--port", "0", "--forget-offline-after", "1w", "--db"])
        .arg(dir.path().join("refused.db"))
        .output()
        .unwrap();
    assert!(!dir.path().join("refused.db").exists(), "refused before any database is opened");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--forget-offline-after"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
