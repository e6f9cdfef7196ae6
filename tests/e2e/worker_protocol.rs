//! Issue 20: the batched worker protocol — a node's progress for all of its jobs in one
//! request per interval, many results in one request with an answer per item — and
//! the single-job routes older workers and seed agents use.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn requests(api: &Api, method: &str, route: &str) -> f64 {
    api.metric(&format!("ffrtmp_http_requests_total{{code=\"2xx\",method=\"{method}\",route=\"{route}\"}}"))
}

#[test]
fn a_worker_running_four_jobs_reports_their_progress_in_one_request_per_interval() {
    let master = TestMaster::start(&[]);
    let api = master.api();
    let _w = TestWorker::start(&master, &["--max-concurrent-jobs", "4"]);
    let params = json!({"resolution": "160x90", "fps": 10, "duration": 5, "realtime": true});
    let ids: Vec<String> = (0..4).map(|_| api.submit(json!({"parameters": params}))).collect();
    wait_until(Duration::from_secs(30), "all four running", || {
        ids.iter().all(|id| api.job(id)["progress"].as_f64() > Some(0.0))
    });
    // Measure over a stretch where all four run.
    let (single0, batched0) =
        (requests(&api, "POST", "/jobs/{id}/progress"), requests(&api, "POST", "/nodes/{id}/progress"));
    let started = Instant::now();
    let seen_before: Vec<f64> = ids.iter().map(|id| api.job(id)["progress"].as_f64().unwrap()).collect();
    std::thread::sleep(Duration::from_secs(2));
    let elapsed = started.elapsed().as_secs_f64();
    let (single, batched) = (
        requests(&api, "POST", "/jobs/{id}/progress") - single0,
        requests(&api, "POST", "/nodes/{id}/progress") - batched0,
    );
    assert_eq!(single, 0.0, "running jobs' progress goes in the node's batches");
    // One request per 0.5 s interval for all four jobs (plus one of slack at each end),
    // where job-by-job reports would have been four per interval.
    let intervals = elapsed / 0.5;
    assert!(batched >= 1.0 && batched <= intervals + 2.0, "{batched} batched requests in {elapsed:.1} s");
    // Live progress still reaches the master for every job.
    let after: Vec<f64> = ids.iter().map(|id| api.job(id)["progress"].as_f64().unwrap()).collect();
    for ((id, before), after) in ids.iter().zip(seen_before).zip(after) {
        assert!(after > before || after >= 100.0, "{id}: progress {before} → {after}");
    }
    for id in &ids {
        api.post(&format!("/jobs/{id}/cancel"), json!({}));
    }
}

#[test]
fn a_result_batch_answers_each_item_and_applies_only_the_valid_one() {
    let master = TestMaster::start(&[]);
    let api = master.api();
    api.register("n1", json!({"encoders": ["libx264"], "max_concurrent_jobs": 4}));
    let a = api.submit(json!({}));
    let b = api.submit(json!({}));
    let (s, got) = api.get("/jobs/next?node_id=n1&max=2&wait=2");
    assert_eq!(s, 200, "{got}");
    let jobs = got["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{got}");
    let attempt = |id: &str| jobs.iter().find(|j| j["id"] == id).unwrap()["attempt"].as_i64().unwrap();
    let unknown = "0190c7a4-0000-7000-8000-0000000000ff";
    let batch = json!({"results": [
        {"job_id": a, "node_id": "n1", "attempt": attempt(&a), "status": "completed"},
        {"job_id": b, "node_id": "n1", "attempt": attempt(&b) + 1, "status": "completed"},
        {"job_id": unknown, "node_id": "n1", "attempt": 1, "status": "completed"},
        {"job_id": "not-a-uuid", "node_id": "n1", "status": "completed"},
    ]});
    let (s, answers) = api.post("/results/batch", batch.clone());
    assert_eq!(s, 200, "{answers}");
    let r = answers["results"].as_array().unwrap();
    let outcomes: Vec<&str> = r.iter().map(|x| x["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["accepted", "stale", "unknown", "refused"], "{answers}");
    assert_eq!(r[0]["result"]["job_status"], "completed");
    assert_eq!((r[1]["status"].as_u64(), r[1]["error"].as_str()), (Some(409), Some("stale_attempt")));
    assert_eq!(r[2]["status"], 404);
    assert_eq!(r[3]["error"], "invalid_job_id");
    // Only the valid one changed state.
    assert_eq!(api.status(&a), "completed");
    assert_eq!(api.status(&b), "processing");
    // The same batch again: the applied one is a repeat (accepted, nothing new).
    let (_, again) = api.post("/results/batch", batch);
    assert_eq!(again["results"][0]["outcome"], "accepted", "{again}");
    assert_eq!(api.job(&a)["state_transitions"].as_array().unwrap().len(), 3, "submitted, claimed, completed once");
    // A batch's progress items are fenced the same way, item by item.
    let (s, p) = api.post(
        "/nodes/n1/progress",
        json!({"reports": [
            {"job_id": b, "attempt": attempt(&b), "percent": 40.0},
            {"job_id": a, "attempt": attempt(&a), "percent": 10.0},
            {"job_id": unknown, "attempt": 1, "percent": 1.0},
        ]}),
    );
    assert_eq!(s, 200, "{p}");
    let outcomes: Vec<&str> = p["results"].as_array().unwrap().iter().map(|x| x["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["accepted", "stale", "unknown"], "{p}");
    assert_eq!(p["results"][0]["control"], "run");
    // Too many items at once is the batch's own error.
    let many: Vec<Value> =
        (0..1001).map(|_| json!({"job_id": unknown, "node_id": "n1", "status": "completed"})).collect();
    let (s, e) = api.post("/results/batch", json!({"results": many}));
    assert_eq!((s, e["error"].as_str()), (400, Some("batch_too_large")), "{e}");
    // The single-result route of older workers and seed agents still works.
    let (s, r) = api.result(&json!({"id": b, "attempt": attempt(&b)}), "n1", "completed", json!({}));
    assert_eq!((s, r["job_status"].as_str()), (200, Some("completed")), "{r}");
}

#[test]
fn a_results_batch_brings_new_work_for_the_slots_it_frees_and_never_more() {
    let master = TestMaster::start(&[]);
    let api = master.api();
    api.register("n1", json!({"encoders": ["libx264"], "max_concurrent_jobs": 2}));
    let ids: Vec<String> = (0..5).map(|_| api.submit(json!({}))).collect();
    let (s, got) = api.get("/jobs/next?node_id=n1&max=2&wait=2");
    assert_eq!(s, 200, "{got}");
    let first: Vec<(String, i64)> = got["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["id"].as_str().unwrap().to_string(), j["attempt"].as_i64().unwrap()))
        .collect();
    assert_eq!(first.len(), 2, "{got}");
    // Both slots taken: a claim that frees none gets nothing.
    let (s, none) = api.post("/results/batch", json!({"results": [], "claim": {"node_id": "n1", "max": 2}}));
    assert_eq!(s, 200, "{none}");
    assert!(none.get("jobs").is_none(), "no free slot, no job: {none}");
    // One result frees one slot; asking for two brings one.
    let result = |(id, attempt): &(String, i64)| json!({"job_id": id, "node_id": "n1", "attempt": attempt, "status": "completed"});
    let (s, one) =
        api.post("/results/batch", json!({"results": [result(&first[0])], "claim": {"node_id": "n1", "max": 2}}));
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["results"][0]["outcome"], "accepted", "{one}");
    let placed = one["jobs"].as_array().unwrap();
    assert_eq!(placed.len(), 1, "{one}");
    let next = placed[0]["id"].as_str().unwrap().to_string();
    assert!(ids.contains(&next) && !first.iter().any(|(id, _)| *id == next), "{one}");
    assert_eq!(api.status(&first[0].0), "completed");
    let job = api.job(&next);
    assert_eq!((job["status"].as_str(), job["node_id"].as_str()), (Some("processing"), Some("n1")), "{job}");
    // A result of another node's job frees nothing of n1's.
    let stranger = json!({"job_id": first[1].0, "node_id": "n2", "attempt": first[1].1, "status": "completed"});
    let (_, r) = api.post("/results/batch", json!({"results": [stranger], "claim": {"node_id": "n1", "max": 2}}));
    assert!(r.get("jobs").is_none(), "{r}");
    // A claim beyond what one poll may take is the batch's own error, and applies nothing.
    let (s, e) =
        api.post("/results/batch", json!({"results": [result(&first[1])], "claim": {"node_id": "n1", "max": 65}}));
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_claim")), "{e}");
    assert_eq!(api.status(&first[1].0), "processing");
}

#[test]
fn a_busy_worker_gets_its_next_jobs_with_its_results_instead_of_polling() {
    let master = TestMaster::start(&[]);
    let api = master.api();
    let ids: Vec<String> = (0..20).map(|_| api.submit(json!({}))).collect();
    let w = TestWorker::start(&master, &["--executor", "noop", "--noop-ms", "30", "--max-concurrent-jobs", "2"]);
    for id in &ids {
        assert_eq!(wait_terminal(&api, id, Duration::from_secs(30))["status"], "completed");
    }
    // Job by job, each freed slot would have cost a poll (≥ 10 for 20 jobs on 2 slots);
    // refilled with the results, the worker polls at its start and once the queue is empty.
    let polls = requests(&api, "GET", "/jobs/next");
    assert!(polls <= 5.0, "{polls} claim polls for 20 jobs");
    // Both processes run without transparent huge pages (zeroing 2 MiB per first touch
    // cost the master over a quarter of its CPU while it placed a burst of jobs).
    for pid in [master.child.as_ref().unwrap().id(), w.pid()] {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let thp = status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(str::trim);
        assert_eq!(thp, Some("0"), "process {pid}: {status}");
    }
}

#[test]
fn a_draining_worker_withdraws_its_poll_and_a_big_worker_asks_in_polls_it_may_send() {
    let master = TestMaster::start(&[]);
    let api = master.api();
    // More slots than one poll may ask for (64): the worker asks for 64 at a time.
    let mut draining = TestWorker::start(
        &master,
        &["--executor", "noop", "--noop-ms", "60000", "--max-concurrent-jobs", "100", "--drain-timeout", "60"],
    );
    let long = api.submit(json!({}));
    wait_until(Duration::from_secs(20), "the long job running", || api.status(&long) == "processing");
    wait_until(Duration::from_secs(20), "its poll parked for the other 99 slots", || {
        api.metric("ffrtmp_workers_waiting") == 1.0
    });
    // SIGTERM: it drains (the long job keeps running) and withdraws its poll at once.
    unsafe { libc::kill(draining.pid() as i32, libc::SIGTERM) };
    wait_until(Duration::from_secs(10), "the draining worker's poll withdrawn", || {
        api.metric("ffrtmp_workers_waiting") == 0.0
    });
    let next = api.submit(json!({}));
    let other = TestWorker::start(&master, &["--executor", "noop"]);
    let done = wait_terminal(&api, &next, Duration::from_secs(30));
    assert_eq!(done["status"], "completed", "{done}");
    let attempts = done["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "never placed on the draining worker: {done}");
    assert_eq!(attempts[0]["node_id"], other.node_id.as_str(), "{done}");
    assert_eq!(api.status(&long), "processing", "the draining worker keeps its running job");
    api.post(&format!("/jobs/{long}/cancel"), json!({}));
    let status = draining.child.as_mut().unwrap().wait().unwrap();
    assert!(status.success(), "drained and exited once its job ended: {status:?}");
    draining.child = None;
}
