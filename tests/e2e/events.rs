//! Events end to end: signed webhooks to a real HTTP receiver (ordered per job,
//! retried, unsubscribed by 410, surviving kill -9), the SSE stream resumed with
//! Last-Event-ID, and `jobs logs --follow` printing lines while the job runs.

use crate::harness::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "receiver-shared-secret-0123";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    event_id: String,
    kind: String,
    body: Value,
    signed: bool,
}

/// A webhook receiver on 127.0.0.1 (plain HTTP/1.1 with keep-alive, one thread per
/// connection) that checks every signature and answers what `answer` says for the
/// n-th request (counted from 1).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

type Answer = Arc<dyn Fn(usize, &Received) -> u16 + Send + Sync>;

impl Receiver {
    fn start(answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, st) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (g, answer) = (g.clone(), answer.clone());
                std::thread::spawn(move || serve(conn, g, answer));
            }
        });
        Receiver { url, got, stop }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Every event delivered with a 2xx-worthy signature, deduplicated by id (at least
    /// once: a repeat is allowed, a gap is not), per job in arrival order.
    fn per_job(&self) -> BTreeMap<String, Vec<(i64, String)>> {
        let mut seen = HashSet::new();
        let mut out: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for r in self.received() {
            assert!(r.signed, "every delivery carries a valid signature: {r:?}");
            if !seen.insert(r.event_id.clone()) {
                continue;
            }
            let job = r.body["job_id"].as_str().unwrap_or("").to_string();
            out.entry(job).or_default().push((r.event_id.parse().unwrap(), r.kind.clone()));
        }
        out
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://").trim_end_matches("/hook"));
    }
}

fn serve(conn: TcpStream, got: Arc<Mutex<Vec<Received>>>, answer: Answer) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let now = chrono::Utc::now().timestamp();
        let sig = headers.get("ffrtmp-signature").cloned().unwrap_or_default();
        let r = Received {
            at: Instant::now(),
            event_id: headers.get("ffrtmp-event-id").cloned().unwrap_or_default(),
            kind: headers.get("ffrtmp-event-type").cloned().unwrap_or_default(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            signed: ffrtmp::domain::events::verify_signature(SECRET, &sig, &body, now, 300),
        };
        let n = {
            let mut g = got.lock().unwrap();
            g.push(r.clone());
            g.len()
        };
        let status = answer(n, &r);
        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn always(status: u16) -> Answer {
    Arc::new(move |_, _| status)
}

fn subscribe(api: &Api, url: &str, events: Value) -> Value {
    let (code, hook) = api.post("/api/v1/webhooks", json!({"url": url, "events": events, "secret": SECRET}));
    assert_eq!(code, 201, "{hook}");
    hook
}

const WEBHOOK_FLAGS: [&str; 4] = ["--webhook-allow", "127.0.0.1", "--webhook-retry-base-ms", "200"];

#[test]
fn webhooks_deliver_each_jobs_events_in_order_signed_with_outputs() {
    let master = TestMaster::start(&WEBHOOK_FLAGS);
    let api = master.api();
    // Loopback is refused unless named exactly; a wildcard never admits it.
    let wild = TestMaster::start(&["--webhook-allow", "*"]);
    let (code, body) =
        wild.api().post("/api/v1/webhooks", json!({"url": "http://127.0.0.1:9/x", "secret": SECRET, "events": []}));
    assert_eq!((code, body["error"].as_str()), (400, Some("webhook_not_allowed")), "{body}");
    drop(wild);
    for (bad, code) in [
        (json!({"url": "http://127.0.0.1:9/x", "secret": "short"}), "invalid_webhook"),
        (json!({"url": "http://127.0.0.1:9/x", "secret": SECRET, "events": ["job.progress"]}), "invalid_webhook"),
        (json!({"url": "http://127.0.0.1:9/x", "secret": SECRET, "events": ["job.finished"]}), "invalid_webhook"),
        (json!({"url": "ftp://127.0.0.1/x", "secret": SECRET}), "webhook_not_allowed"),
        (json!({"url": "http://10.1.2.3/x", "secret": SECRET}), "webhook_not_allowed"),
    ] {
        let (status, body) = api.post("/api/v1/webhooks", bad.clone());
        assert_eq!((status, body["error"].as_str()), (400, Some(code)), "{bad} → {body}");
    }

    let receiver = Receiver::start(always(204));
    let hook = subscribe(&api, &receiver.url, json!(["job.*"]));
    // A job's own notify: only its final event, to the same receiver.
    let own = Receiver::start(always(200));
    let canceled = api.submit(json!({"parameters": {"duration": 1}, "max_retries": 0,
        "notify": {"url": own.url, "secret": SECRET}}));
    let (code, _) = api.post(&format!("/api/v1/jobs/{canceled}/cancel"), json!({}));
    assert_eq!(code, 200);
    let _worker = TestWorker::start(&master, &[]);
    let completed = api.submit(json!({"parameters": {"duration": 1, "resolution": "160x90", "fps": 10}}));
    let failed = api.submit(json!({"parameters": {"input": "/nonexistent/in.mp4"}, "max_retries": 0}));
    for id in [&completed, &failed] {
        wait_terminal(&api, id, Duration::from_secs(60));
    }
    let expected: HashMap<&str, Vec<&str>> = HashMap::from([
        (completed.as_str(), vec!["job.submitted", "job.started", "job.output_stored", "job.completed"]),
        (failed.as_str(), vec!["job.submitted", "job.started", "job.failed"]),
        (canceled.as_str(), vec!["job.submitted", "job.canceled"]),
    ]);
    wait_until(Duration::from_secs(30), "every event delivered", || {
        let got = receiver.per_job();
        expected.iter().all(|(job, kinds)| got.get(*job).map(|e| e.len()) == Some(kinds.len()))
    });
    let got = receiver.per_job();
    for (job, kinds) in &expected {
        let events = &got[*job];
        assert_eq!(events.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>(), *kinds, "job {job}");
        assert!(events.windows(2).all(|w| w[0].0 < w[1].0), "in order: {events:?}");
    }
    // job.completed says what a consumer needs without another call.
    let done = receiver.received().into_iter().find(|r| r.kind == "job.completed").unwrap().body;
    assert_eq!(done["data"]["status"], "completed", "{done}");
    assert!(done["data"]["duration_seconds"].as_f64().is_some(), "{done}");
    let output = &done["data"]["outputs"][0];
    assert_eq!(output["name"], "output.mp4", "{done}");
    let (code, bytes, _) = api.bytes(output["download_path"].as_str().unwrap(), &[]);
    assert_eq!(code, 200);
    assert_eq!(sha256_hex(&bytes), output["sha256"].as_str().unwrap());
    let failure = receiver.received().into_iter().find(|r| r.kind == "job.failed").unwrap().body;
    assert_eq!(failure["data"]["failure_reason"], "input_error", "{failure}");
    // The notify webhook heard its own job's end, and nothing else.
    wait_until(Duration::from_secs(10), "the notify delivery", || !own.received().is_empty());
    let own_events: Vec<(String, Option<String>)> =
        own.received().iter().map(|r| (r.kind.clone(), r.body["job_id"].as_str().map(String::from))).collect();
    assert_eq!(own_events, [("job.canceled".to_string(), Some(canceled.clone()))]);
    // Deliveries are listed, and the metrics count them.
    let (code, list) =
        api.get(&format!("/api/v1/webhooks/{}/deliveries?state=delivered", hook["id"].as_str().unwrap()));
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["deliveries"].as_array().unwrap().len(), 9, "{list}");
    assert!(api.metric("ffrtmp_webhook_deliveries_total{outcome=\"delivered\"}") >= 10.0);
    // A job's notify without a secret, on a master with no --webhook-secret: refused.
    let (code, body) = api.post("/api/v1/jobs", json!({"notify": {"url": own.url}}));
    assert_eq!((code, body["error"].as_str()), (400, Some("notify_secret_required")), "{body}");
}

#[test]
fn failing_receivers_are_retried_with_growing_delays_and_410_unsubscribes() {
    let master = TestMaster::start(&WEBHOOK_FLAGS);
    let api = master.api();
    let flaky = Receiver::start(Arc::new(|n, _| if n <= 3 { 500 } else { 200 }));
    let hook = subscribe(&api, &flaky.url, json!(["job.canceled"]));
    let gone = Receiver::start(always(410));
    let gone_hook = subscribe(&api, &gone.url, json!(["job.*"]));
    let id = api.submit(json!({"parameters": {"duration": 1}}));
    api.post(&format!("/api/v1/jobs/{id}/cancel"), json!({}));
    wait_until(Duration::from_secs(20), "the fourth attempt", || flaky.received().len() >= 4);
    let attempts = flaky.received();
    assert!(attempts.iter().all(|a| a.event_id == attempts[0].event_id && a.signed));
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].at - w[0].at).collect();
    // 200 ms, 400 ms, 800 ms, each ±25 %: every wait is longer than the one before.
    assert!(gaps.windows(2).all(|g| g[1] > g[0]), "growing delays: {gaps:?}");
    assert!(gaps[0] >= Duration::from_millis(140), "{gaps:?}");
    let hook_id = hook["id"].as_str().unwrap();
    wait_until(Duration::from_secs(10), "the delivery recorded", || {
        let (_, list) = api.get(&format!("/api/v1/webhooks/{hook_id}/deliveries"));
        list["deliveries"][0]["state"] == "delivered"
    });
    let (_, list) = api.get(&format!("/api/v1/webhooks/{hook_id}/deliveries"));
    let d = &list["deliveries"][0];
    assert_eq!((d["attempts"].as_i64(), d["last_status"].as_i64()), (Some(4), Some(200)), "{list}");
    assert!(api.metric("ffrtmp_webhook_deliveries_total{outcome=\"retried\"}") >= 3.0);
    // Redeliver: the same event again, on request.
    let (code, again) =
        api.post(&format!("/api/v1/webhooks/{hook_id}/deliveries/{}/redeliver", d["id"].as_i64().unwrap()), json!({}));
    assert_eq!(code, 202, "{again}");
    wait_until(Duration::from_secs(10), "the redelivery", || flaky.received().len() == 5);
    assert_eq!(flaky.received()[4].event_id, attempts[0].event_id);
    let (code, missing) = api.post(&format!("/api/v1/webhooks/{hook_id}/deliveries/999999/redeliver"), json!({}));
    assert_eq!((code, missing["error"].as_str()), (404, Some("delivery_not_found")), "{missing}");

    // 410 Gone: unsubscribed at once; later events never reach it.
    let gone_id = gone_hook["id"].as_str().unwrap();
    wait_until(Duration::from_secs(10), "the unsubscription", || {
        api.get(&format!("/api/v1/webhooks/{gone_id}")).1["disabled_at"].is_string()
    });
    let asked = gone.received().len();
    assert_eq!(asked, 1, "one 410 is enough");
    let later = api.submit(json!({"parameters": {"duration": 1}}));
    api.post(&format!("/api/v1/jobs/{later}/cancel"), json!({}));
    wait_until(Duration::from_secs(10), "the next job's event", || flaky.received().len() == 6);
    assert_eq!(gone.received().len(), asked, "an unsubscribed receiver hears nothing more");
    // Deleting a webhook; a second delete is a 404 in the API's error shape.
    assert_eq!(api.call("DELETE", &format!("/api/v1/webhooks/{hook_id}"), None).0, 204);
    let (code, body) = api.call("DELETE", &format!("/api/v1/webhooks/{hook_id}"), None);
    assert_eq!((code, body["error"].as_str()), (404, Some("webhook_not_found")));
}

#[test]
fn undelivered_events_are_delivered_after_a_kill_9() {
    let mut master = TestMaster::start(&WEBHOOK_FLAGS);
    let api = master.api();
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = up.clone();
    let receiver =
        Receiver::start(Arc::new(move |_, _| if flag.load(std::sync::atomic::Ordering::Relaxed) { 200 } else { 503 }));
    subscribe(&api, &receiver.url, json!(["job.submitted", "job.canceled"]));
    let ids: Vec<String> = (0..10).map(|_| api.submit(json!({"parameters": {"duration": 1}}))).collect();
    for id in &ids {
        api.post(&format!("/api/v1/jobs/{id}/cancel"), json!({}));
    }
    wait_until(Duration::from_secs(10), "attempts at every job", || {
        receiver.received().iter().map(|r| r.body["job_id"].to_string()).collect::<HashSet<_>>().len() == ids.len()
    });
    master.kill9();
    up.store(true, std::sync::atomic::Ordering::Relaxed);
    master.restart();
    let api = master.api();
    wait_until(Duration::from_secs(30), "every event after the restart", || {
        receiver.per_job().values().map(Vec::len).sum::<usize>() == 2 * ids.len()
    });
    let got = receiver.per_job();
    for id in &ids {
        let kinds: Vec<&str> = got[id].iter().map(|(_, k)| k.as_str()).collect();
        assert_eq!(kinds, ["job.submitted", "job.canceled"], "job {id}");
    }
    assert_eq!(api.status(&ids[0]), "canceled");
}

/// Read an event stream until `done` says so: (id, type, job) of each event.
fn read_stream(
    url: &str,
    last_event_id: Option<&str>,
    mut done: impl FnMut(&[(String, String, String)]) -> bool,
) -> Vec<(String, String, String)> {
    let mut req = ureq::get(url).timeout(Duration::from_secs(30));
    if let Some(id) = last_event_id {
        req = req.set("Last-Event-ID", id);
    }
    let resp = req.call().expect("the stream opens");
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let mut parser = ffrtmp::domain::events::SseParser::default();
    let mut reader = resp.into_reader();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&out) {
        let n = reader.read(&mut buf).expect("the stream stays open");
        assert!(n > 0, "the stream ended early");
        for m in parser.feed(&buf[..n]) {
            let v: Value = serde_json::from_str(&m.data).unwrap();
            out.push((m.id.unwrap_or_default(), m.event, v["job_id"].as_str().unwrap_or("").to_string()));
        }
    }
    out
}

#[test]
fn the_event_stream_resumes_exactly_once_in_order() {
    let master = TestMaster::start(&[]);
    let api = master.api();
    let url = format!("{}/api/v1/events?type=job.*", master.url);
    let first: Vec<String> = (0..5).map(|_| api.submit(json!({"parameters": {"duration": 1}}))).collect();
    // From the beginning: the five submissions, from the outbox.
    let seen = read_stream(&format!("{url}&last_event_id=0"), None, |e| e.len() >= 5);
    assert_eq!(seen.iter().map(|e| e.2.clone()).collect::<Vec<_>>(), first);
    // Disconnected; meanwhile more happens; resumed after the last id seen.
    let last = seen.last().unwrap().0.clone();
    let more: Vec<String> = (0..5).map(|_| api.submit(json!({"parameters": {"duration": 1}}))).collect();
    for id in &first {
        api.post(&format!("/api/v1/jobs/{id}/cancel"), json!({}));
    }
    let resumed = read_stream(&url, Some(&last), |e| e.len() >= 10);
    let all: Vec<&(String, String, String)> = seen.iter().chain(resumed.iter()).collect();
    let ids: Vec<i64> = all.iter().map(|e| e.0.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "every event once, in order: {ids:?}");
    let submitted: Vec<&str> = resumed.iter().filter(|e| e.1 == "job.submitted").map(|e| e.2.as_str()).collect();
    assert_eq!(submitted, more.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(resumed.iter().filter(|e| e.1 == "job.canceled").count(), 5);
    // Filters: one job's events only, live.
    let one = &more[0];
    let stream_url = format!("{}/api/v1/events?job_id={one}", master.url);
    let watcher =
        std::thread::spawn(move || read_stream(&stream_url, Some("0"), |e| e.iter().any(|x| x.1 == "job.canceled")));
    api.post(&format!("/api/v1/jobs/{one}/cancel"), json!({}));
    let mine = watcher.join().unwrap();
    assert!(mine.iter().all(|e| &e.2 == one), "{mine:?}");
    assert_eq!(mine.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(), ["job.submitted", "job.canceled"]);
    // Bad input is a 400 in the API's error shape.
    for (q, code) in [("type=job.finished", "invalid_filter"), ("last_event_id=abc", "invalid_event_id")] {
        let (status, body) = api.get(&format!("/api/v1/events?{q}"));
        assert_eq!((status, body["error"].as_str()), (400, Some(code)), "{q}: {body}");
    }
}

#[test]
fn cli_logs_follow_prints_lines_while_the_job_runs() {
    let master = TestMaster::start(&[]);
    let api = master.api();
    // Realtime: it runs for 30 s unless canceled.
    let id = api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 30, "realtime": true}}));
    let mut follow = std::process::Command::new(BIN)
        .args(["jobs", "logs", &id, "--follow"])
        .env("MASTER_URL", &master.url)
        .env_remove("MASTER_API_KEY")
        .env_remove("FFRTMP_API_KEY")
        .env("HOME", tmpdir().keep())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the CLI to subscribe", || api.metric("ffrtmp_event_subscribers") >= 1.0);
    let _worker = TestWorker::start(&master, &[]);
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30)).expect("a log line while the job runs");
    assert!(first.contains("[info]"), "{first}");
    assert_eq!(api.status(&id), "processing", "the line came before the job ended");
    api.post(&format!("/api/v1/jobs/{id}/cancel"), json!({}));
    let status = follow.wait().unwrap();
    assert_eq!(status.code(), Some(3), "a canceled job's follow exits 3");
    // The CLI has exited, but the reader thread may not have passed on its last lines yet: read to the end.
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        rest.push(line);
    }
    assert!(rest.iter().any(|l| l.contains("canceled")), "{rest:?}");
}

#[test]
fn a_dead_receivers_backlog_is_bounded_and_the_oldest_are_dropped() {
    let master = TestMaster::start(&[
        "--webhook-allow",
        "127.0.0.1",
        "--webhook-retry-base-ms",
        "60000",
        "--webhook-backlog",
        "3",
    ]);
    let api = master.api();
    let dead = Receiver::start(always(503));
    let hook = subscribe(&api, &dead.url, json!(["job.submitted"]));
    let id = hook["id"].as_str().unwrap().to_string();
    let jobs: Vec<String> = (0..8).map(|_| api.submit(json!({"parameters": {"duration": 1}}))).collect();
    // Jobs go on being accepted and queued whatever the receiver does.
    assert!(jobs.iter().all(|j| api.status(j) == "pending"));
    wait_until(Duration::from_secs(10), "the oldest undelivered events dropped", || {
        let (_, h) = api.get(&format!("/api/v1/webhooks/{id}"));
        h["dropped"].as_i64().unwrap_or(0) >= 5 && h["pending"].as_i64() == Some(3)
    });
    let (_, dropped) = api.get(&format!("/api/v1/webhooks/{id}/deliveries?state=dropped"));
    let (_, pending) = api.get(&format!("/api/v1/webhooks/{id}/deliveries?state=pending"));
    let newest = |list: &Value| {
        list["deliveries"].as_array().unwrap().iter().map(|d| d["event_id"].as_i64().unwrap()).collect::<Vec<_>>()
    };
    let (dropped, pending) = (newest(&dropped), newest(&pending));
    // The oldest go (a delivery in flight at that moment is left to its answer): the
    // newest event is always among those kept.
    assert!(pending.iter().max() > dropped.iter().max(), "the oldest were dropped: {dropped:?} vs {pending:?}");
    assert!(api.metric("ffrtmp_webhook_deliveries_total{outcome=\"dropped\"}") >= 5.0);
}
