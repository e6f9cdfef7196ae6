//! Issue 19: highly available masters on one PostgreSQL database — a leader lease with
//! epochs, followers that answer reads and redirect the rest, workers and the CLI that
//! follow the leader, and failover under load without losing or doubling a job.

use crate::harness::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn new_database(what: &str) -> Option<String> {
    let admin = pg_or_skip()?;
    let name = format!("ffrtmp_{what}_{}_{}", std::process::id(), free_port());
    Some(ffrtmp::db::create_postgres_database(&admin, &name).unwrap())
}

/// `GET /health` of a master: its role ("leader"/"follower") and the leader it names.
fn role(base: &str) -> Option<(String, Value)> {
    let h: Value =
        ureq::get(&format!("{base}/health")).timeout(Duration::from_secs(2)).call().ok()?.into_json().ok()?;
    Some((h["role"].as_str()?.to_string(), h))
}

fn is_leader(base: &str) -> bool {
    role(base).is_some_and(|(r, _)| r == "leader")
}

/// A request that is answered, not followed: (status, Location, JSON body).
fn unfollowed(method: &str, url: &str, key: Option<&str>, body: Option<Value>) -> (u16, Option<String>, Value) {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let mut req = agent.request(method, url);
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let location = r.header("location").map(str::to_string);
    (r.status(), location, r.into_json().unwrap_or(Value::Null))
}

#[test]
fn a_follower_answers_reads_redirects_the_rest_and_keeps_the_roles() {
    let Some(url) = new_database("follow") else { return };
    let keys = ["--api-key", "admin-key-0123456789", "--read-api-key", "read-key-0123456789"];
    let keys_w = [&keys[..], &["--worker-api-key", "worker-key-0123456789"]].concat();
    let a = TestMaster::start_ha(free_port(), &url, &keys_w);
    assert!(is_leader(&a.url), "the first master leads");
    let b = TestMaster::start_ha(free_port(), &url, &keys_w);
    let (r, health) = role(&b.url).unwrap();
    assert_eq!(r, "follower", "{health}");
    assert_eq!(health["leader"], a.url.as_str(), "{health}");
    let admin = a.api().with_key("admin-key-0123456789");
    let id = admin.submit(json!({"scenario": "read on a follower"}));

    // Reads: the follower answers them from the database, with the API's own roles.
    let read = b.api().with_key("read-key-0123456789");
    let (s, list) = read.get("/jobs?scenario=follower");
    assert_eq!((s, list["count"].as_u64()), (200, Some(1)), "{list}");
    let (s, job) = read.get(&format!("/api/v1/jobs/{id}"));
    assert_eq!((s, job["status"].as_str()), (200, Some("pending")), "{job}");
    assert_eq!(job["state_transitions"].as_array().map(Vec::len), Some(1), "{job}");
    for path in ["/jobs", "/%6Aobs", "/api/v1/jobs", &format!("/jobs/{id}"), &format!("/api/v1/%6Aobs/{id}")] {
        let (s, _, body) = unfollowed("GET", &format!("{}{path}", b.url), None, None);
        assert_eq!(s, 401, "{path} without a key: {body}");
        let (s, _, body) = unfollowed("GET", &format!("{}{path}", b.url), Some("not-a-key"), None);
        assert_eq!(s, 401, "{path} with a wrong key: {body}");
    }
    let (s, _, body) = unfollowed("GET", &format!("{}/jobs/{id}", b.url), Some("worker-key-0123456789"), None);
    assert_eq!(s, 403, "a worker key reads no operator views, on a follower either: {body}");

    // Writes and the leader's own routes: 307 to the same path on the leader, method
    // and body kept — after the same role check as on the leader.
    let (s, location, body) =
        unfollowed("POST", &format!("{}/api/v1/jobs?x=1", b.url), Some("admin-key-0123456789"), Some(json!({})));
    assert_eq!((s, body["error"].as_str()), (307, Some("not_leader")), "{body}");
    assert_eq!(location.as_deref(), Some(format!("{}/api/v1/jobs?x=1", a.url).as_str()));
    let (s, _, body) = unfollowed("POST", &format!("{}/jobs", b.url), Some("read-key-0123456789"), Some(json!({})));
    assert_eq!(s, 403, "a read-only key is refused before any redirect: {body}");
    let (s, _, body) = unfollowed("POST", &format!("{}/%6Aobs", b.url), None, Some(json!({})));
    assert_eq!(s, 401, "{body}");
    for (method, path) in [("GET", "/jobs/next?node_id=n"), ("GET", "/nodes"), ("POST", "/results"), ("GET", "/ui")] {
        let (s, location, body) = unfollowed(method, &format!("{}{path}", b.url), None, None);
        assert_eq!(s, 307, "{method} {path}: {body}");
        assert_eq!(location, Some(format!("{}{path}", a.url)));
    }
    // Our CLI, given both masters, submits through the follower's redirect.
    let both = format!("{},{}", b.url, a.url);
    let out = std::process::Command::new(BIN)
        .args(["jobs", "submit", "--scenario", "via-follower", "--output", "json", "--master", &both])
        .env("MASTER_API_KEY", "admin-key-0123456789")
        .env("HOME", tmpdir().keep())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // …but never sends its key to a master it was not given.
    let out = std::process::Command::new(BIN)
        .args(["jobs", "submit", "--scenario", "only-follower", "--master", &b.url])
        .env("MASTER_API_KEY", "admin-key-0123456789")
        .env("HOME", tmpdir().keep())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not one of the master URLs given"), "{err}");
    let (_, list) = admin.get("/jobs?scenario=via-follower");
    assert_eq!(list["count"], 1, "{list}");
    let (_, list) = admin.get("/jobs?scenario=only-follower");
    assert_eq!(list["count"], 0, "{list}");
}

/// Submit through the CLI, given both masters, until told to stop: the ids it
/// acknowledged, and every failure it printed.
fn submit_until(stop: Arc<AtomicBool>, masters: String) -> (Vec<String>, Vec<String>) {
    let home = tmpdir().keep();
    let (mut acked, mut failures) = (Vec::new(), Vec::new());
    while !stop.load(Ordering::Relaxed) {
        let out = std::process::Command::new(BIN)
            .args(["jobs", "submit", "--scenario", "failover", "--output", "json", "--master", &masters])
            .env_remove("MASTER_API_KEY")
            .env_remove("FFRTMP_API_KEY")
            .env("HOME", &home)
            .output()
            .unwrap();
        match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(j) if out.status.success() => acked.push(j["id"].as_str().unwrap().to_string()),
            _ => failures.push(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }
    (acked, failures)
}

#[test]
fn killing_the_leader_under_load_loses_and_doubles_nothing() {
    let Some(url) = new_database("failover") else { return };
    let flags = ["--heartbeat-interval", "1"];
    let mut masters =
        [TestMaster::start_ha(free_port(), &url, &flags), TestMaster::start_ha(free_port(), &url, &flags)];
    assert!(is_leader(&masters[0].url));
    let both = format!("{},{}", masters[0].url, masters[1].url);
    let noop = ["--executor", "noop", "--noop-ms", "150", "--max-concurrent-jobs", "4"];
    let _workers = [TestWorker::start_on(&both, &noop), TestWorker::start_on(&both, &noop)];
    let stop = Arc::new(AtomicBool::new(false));
    let submitter = std::thread::spawn({
        let (stop, both) = (stop.clone(), both.clone());
        move || submit_until(stop, both)
    });
    let completed = |base: &str| -> u64 {
        let (s, j) =
            Api { base: base.into(), key: None, heartbeat_interval: 1.0 }.get("/jobs?status=completed&limit=1000");
        if s == 200 { j["count"].as_u64().unwrap_or(0) } else { 0 }
    };
    let mut failovers = Vec::new();
    for round in 0..10 {
        let leader = (0..2).find(|&i| is_leader(&masters[i].url)).expect("a leader");
        let other = 1 - leader;
        // Under load: jobs are being submitted and completed on the leader right now.
        let before = completed(&masters[leader].url);
        wait_until(Duration::from_secs(30), "jobs completing before the kill", || {
            completed(&masters[leader].url) >= before + 3
        });
        let killed = Instant::now();
        masters[leader].kill9();
        wait_until(Duration::from_secs(30), "the follower to take over", || is_leader(&masters[other].url));
        let took = killed.elapsed();
        eprintln!("round {round}: failover {:.2} s", took.as_secs_f64());
        failovers.push(took);
        masters[leader].start_again();
        assert_eq!(role(&masters[leader].url).map(|r| r.0).as_deref(), Some("follower"));
    }
    // The farm goes on after the last failover, then the load stops.
    let leader = (0..2).find(|&i| is_leader(&masters[i].url)).unwrap();
    let before = completed(&masters[leader].url);
    wait_until(Duration::from_secs(30), "jobs completing after the last failover", || {
        completed(&masters[leader].url) >= before + 3
    });
    stop.store(true, Ordering::Relaxed);
    let (acked, failures) = submitter.join().unwrap();
    assert!(failures.is_empty(), "the CLI given both masters kept working: {failures:?}");
    assert!(acked.len() >= 30, "{} jobs acknowledged", acked.len());
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len());

    // Every acknowledged job reaches exactly one terminal state, and no two attempts of
    // one job ever overlapped (the job_events attempt log, as GET /jobs/{id} shows it).
    let api = masters[leader].api();
    wait_until(Duration::from_secs(120), "every acknowledged job to complete", || {
        acked.iter().all(|id| api.status(id) == "completed")
    });
    let (s, list) = api.get("/jobs?scenario=failover&limit=1000");
    assert_eq!(s, 200);
    assert_eq!(list["count"].as_u64(), Some(acked.len() as u64), "no job was stored twice or lost");
    for id in &acked {
        let job = api.job(id);
        let transitions = job["state_transitions"].as_array().unwrap();
        let terminal = transitions
            .iter()
            .filter(|t| matches!(t["to"].as_str(), Some("completed" | "failed" | "canceled")))
            .count();
        assert_eq!(terminal, 1, "{id}: {job}");
        let attempts = job["attempts"].as_array().unwrap();
        let numbers: HashSet<i64> = attempts.iter().map(|a| a["attempt"].as_i64().unwrap()).collect();
        assert_eq!(numbers.len(), attempts.len(), "{id}: an attempt number handed out twice: {job}");
        for a in &attempts[..attempts.len() - 1] {
            assert!(!a["ended_at"].is_null(), "{id}: an attempt began before the previous one ended: {job}");
        }
        assert_eq!(attempts.last().unwrap()["outcome"], "completed", "{id}: {job}");
    }
    failovers.sort();
    eprintln!(
        "failover over {} rounds: min {:.2} s, median {:.2} s, max {:.2} s",
        failovers.len(),
        failovers[0].as_secs_f64(),
        failovers[failovers.len() / 2].as_secs_f64(),
        failovers[failovers.len() - 1].as_secs_f64()
    );
}

#[test]
fn a_deposed_leader_stops_before_it_writes_again() {
    use diesel::RunQueryDsl;
    let Some(url) = new_database("fence") else { return };
    let mut a = TestMaster::start_ha(free_port(), &url, &[]);
    let api = a.api();
    let kept = api.submit(json!({"scenario": "before"}));
    // Another master's take-over, as the database sees it: a newer epoch (A still
    // holds its lock, as a leader cut off from the database for a while would).
    let pool =
        ffrtmp::db::open(&ffrtmp::db::DatabaseUrl::Postgres(url.clone()), ffrtmp::db::Synchronous::Full, 1).unwrap();
    let mut c = pool.get().unwrap();
    diesel::sql_query("UPDATE leader_lease SET epoch = epoch + 1, leader_url = 'http://127.0.0.1:9'")
        .execute(&mut *c)
        .unwrap();
    // Whatever A is doing, it writes nothing more: a submission is refused or unanswered…
    match ureq::post(&format!("{}/jobs", a.url)).send_json(json!({"scenario": "after"})) {
        Ok(r) => panic!("a deposed leader stored a job: {} {:?}", r.status(), r.into_string()),
        Err(ureq::Error::Status(s, _)) => assert_eq!(s, 503),
        Err(_) => {} // it exited while answering
    }
    // …and it stops (exit 3) so that its supervisor restarts it as a follower.
    let mut code = None;
    wait_until(Duration::from_secs(10), "the deposed leader to exit", || {
        code = a.exit_code();
        code.is_some()
    });
    assert_eq!(code, Some(3));
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let jobs: Count = diesel::sql_query("SELECT COUNT(*) AS n FROM jobs").get_result(&mut *c).unwrap();
    assert_eq!(jobs.n, 1, "only the job accepted before the take-over ({kept}) is stored");
}
