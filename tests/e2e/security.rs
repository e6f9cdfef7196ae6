//! Attacks on a real master, one test per finding of the security review (issue 11):
//! each reproduces the attack and asserts the refusal.

use crate::harness::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

/// Send one request with the path exactly as written (no client-side normalisation of
/// percent-escapes, dot segments or double slashes) and return (status, JSON body).
pub fn raw_request(base: &str, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("Authorization", a)).into_iter().collect();
    let (status, _, payload) = raw_exchange(base, method, path, &headers, body.unwrap_or(""));
    (status, serde_json::from_str(&payload).unwrap_or(Value::String(payload)))
}

/// One HTTP/1.1 exchange exactly as written (no redirects followed, no path
/// normalised): (status, head, body).
pub fn raw_exchange(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    let typed = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if !body.is_empty() && !typed {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let payload = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    (status, head.to_string(), payload)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Spellings of one route that a router may decode to the same resource, or that a
/// naive check might treat differently: percent-encoded letters, an encoded slash,
/// double and trailing slashes, dot segments, mixed case, and the /api/v1 prefix.
pub(crate) fn spellings(path: &str) -> Vec<String> {
    let mut v = vec![path.to_string()];
    // Percent-encode the first letter of each segment.
    let enc: String = path
        .split('/')
        .map(|seg| match seg.chars().next() {
            Some(c) if c.is_ascii_alphabetic() => format!("%{:02X}{}", c as u8, &seg[1..]),
            _ => seg.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/");
    v.push(enc.clone());
    v.push(enc.to_lowercase().replace("%6a", "%6A").replace("%6e", "%6E"));
    v.push(path.replacen('/', "//", 1));
    v.push(format!("{path}/"));
    v.push(format!("/x/..{path}"));
    v.push(format!("/.{path}"));
    v.push(path.to_uppercase());
    if let Some(rest) = path.strip_prefix('/')
        && let Some((first, tail)) = rest.split_once('/')
    {
        v.push(format!("/{first}%2F{tail}"));
        v.push(format!("/{first}%2f{tail}"));
    }
    let more: Vec<String> = v.iter().map(|p| format!("/api/v1{p}")).collect();
    v.extend(more);
    v.push(format!("/api/%761{path}"));
    v.push(format!("/API/V1{path}"));
    v
}

#[test]
fn percent_encoded_and_odd_paths_never_skip_authentication() {
    let m = TestMaster::start(&[
        "--api-key",
        "adm",
        "--worker-api-key",
        "wrk",
        "--read-api-key",
        "ro",
        "--max-long-poll",
        "0.2",
    ]);
    let admin = m.api().with_key("adm");
    admin.register("n1", json!({"encoders": ["libx264"]}));
    let id = admin.submit(json!({"parameters": {"duration": 1}}));
    let before = admin.get("/jobs").1["count"].as_u64().unwrap();
    // (method, path, body, who may call it: "worker" | "read" | "worker+read" | "admin")
    let routes: Vec<(&str, String, &str, &str)> = vec![
        ("POST", "/jobs".into(), r#"{"parameters":{"duration":1}}"#, "admin"),
        ("GET", "/jobs".into(), "", "read"),
        ("GET", format!("/jobs/{id}"), "", "read"),
        ("POST", format!("/jobs/{id}/cancel"), "{}", "admin"),
        ("POST", "/nodes/n1/drain".into(), "{}", "admin"),
        ("DELETE", "/nodes/n1".into(), "", "admin"),
        ("POST", "/nodes/register".into(), r#"{"node_id":"evil","address":"evil"}"#, "worker"),
        ("GET", "/nodes".into(), "", "read"),
        ("GET", "/jobs/next?node_id=n1&wait=0".into(), "", "worker"),
        ("POST", "/results".into(), "{}", "worker"),
        ("POST", "/results/batch".into(), r#"{"results":[]}"#, "worker"),
        ("POST", "/nodes/n1/progress".into(), r#"{"reports":[]}"#, "worker"),
        ("GET", "/status".into(), "", "read"),
        ("GET", "/metrics".into(), "", "read"),
        ("GET", format!("/jobs/{id}/outputs"), "", "read"),
        ("DELETE", format!("/jobs/{id}/outputs"), "", "admin"),
        ("PUT", format!("/jobs/{id}/outputs/out.mp4?node_id=n1&attempt=1"), "data", "worker"),
        ("GET", format!("/jobs/{id}/outputs/out.mp4"), "", "worker+read"),
        ("PUT", format!("/jobs/{id}/outputs/hls/360p/seg_00001.m4s?node_id=n1&attempt=1"), "data", "worker"),
        ("GET", format!("/jobs/{id}/outputs/hls/master.m3u8"), "", "worker+read"),
        ("GET", "/templates".into(), "", "read"),
        ("POST", "/templates".into(), r#"{"name":"evil","parameters":{}}"#, "admin"),
        ("GET", "/templates/hls-ladder".into(), "", "read"),
        ("PUT", "/templates/evil".into(), r#"{"parameters":{}}"#, "admin"),
        ("DELETE", "/templates/hls-ladder".into(), "", "admin"),
        // An invalid filter: a 400 once authorised (a valid one would stream forever).
        ("GET", "/events?type=nope".into(), "", "read"),
        ("POST", "/webhooks".into(), r#"{"url":"http://127.0.0.1:9/x","secret":"0123456789abcdefXYZ"}"#, "admin"),
        ("GET", "/webhooks".into(), "", "admin"),
        ("GET", "/webhooks/ghost".into(), "", "admin"),
        ("DELETE", "/webhooks/ghost".into(), "", "admin"),
        ("GET", "/webhooks/ghost/deliveries".into(), "", "admin"),
        ("POST", "/webhooks/ghost/deliveries/1/redeliver".into(), "{}", "admin"),
        ("DELETE", "/sessions".into(), "", "admin"),
        ("POST", "/uploads?name=evil.mp4".into(), "data", "admin"),
        ("GET", "/uploads/0190c7a4-0000-7000-8000-000000000001/a.mp4".into(), "", "worker+read"),
    ];
    for (method, path, body, who) in &routes {
        for p in spellings(path) {
            let call = |key: Option<&str>| raw_request(&m.url, method, &p, key, Some(body)).0;
            let anon = call(None);
            assert_eq!(anon, 401, "{method} {p} without a key");
            assert_eq!(call(Some("wrong")), 401, "{method} {p} with a wrong key");
            // A valid key with too small a role: 403 when the router dispatched it to
            // the route, 404 when it matched nothing — never served.
            let ro = call(Some("ro"));
            if !who.contains("read") {
                assert!(ro == 403 || ro == 404, "{method} {p} as read-only got {ro}");
            }
            if *who == "admin" || *who == "read" {
                let w = call(Some("wrk"));
                assert!(w == 403 || w == 404, "{method} {p} as worker got {w}");
            }
        }
    }
    // Nothing above changed anything.
    assert_eq!(admin.get("/jobs").1["count"].as_u64().unwrap(), before, "no job was created");
    assert_eq!(admin.status(&id), "pending", "the job was not canceled");
    let (s, node) = admin.get("/nodes/n1");
    assert_eq!(s, 200, "the node was not removed");
    assert_eq!(node["status"], "available", "the node was not drained");
    assert_eq!(admin.get("/nodes/evil").0, 404, "no node was registered");
    assert_eq!(admin.get("/templates/evil").0, 404, "no template was stored");
    assert_eq!(admin.get("/webhooks").1["webhooks"], json!([]), "no webhook was stored");
    // Unknown paths: 401 without a key (they reveal nothing), 404 with any valid key.
    assert_eq!(raw_request(&m.url, "GET", "/no/such/route", None, None).0, 401);
    assert_eq!(raw_request(&m.url, "GET", "/no/such/route", Some("ro"), None).0, 404);
    let (s, body) = raw_request(&m.url, "GET", "/%6Aobs", Some("ro"), None);
    assert_eq!(s, 200, "the decoded route is served to a key allowed to call it: {body}");
    // The open routes stay open under any spelling the router accepts.
    assert_eq!(raw_request(&m.url, "GET", "/%68ealth", None, None).0, 200);
    assert_eq!(raw_request(&m.url, "GET", "/api/v1/health", None, None).0, 200);
}

#[test]
fn read_only_key_cannot_reach_worker_routes_by_encoding() {
    let m = TestMaster::start(&["--api-key", "adm", "--read-api-key", "ro", "--max-long-poll", "0.2"]);
    m.api().with_key("adm").register("n1", json!({"encoders": ["libx264"]}));
    for p in
        ["/jobs/%6Eext?node_id=n1&wait=0", "/api/v1/jobs/%6Eext?node_id=n1&wait=0", "/%6Aobs/next?node_id=n1&wait=0"]
    {
        assert_eq!(raw_request(&m.url, "GET", p, Some("ro"), None).0, 403, "GET {p} as read-only");
    }
    assert_eq!(raw_request(&m.url, "GET", "/api/v1/%6Eodes", None, None).0, 401);
}

/// A token-bound node's identity, as a test plays it.
struct TokenNode {
    api: Api,
    token: String,
}

impl TokenNode {
    fn register(api: &Api, id: &str, token: Option<&str>) -> (u16, Value) {
        let body = json!({"node_id": id, "address": id, "encoders": ["libx264"], "request_node_token": true});
        let headers: Vec<(&str, &str)> = token.map(|t| ("X-Node-Token", t)).into_iter().collect();
        call(api, "POST", "/nodes/register", &headers, Some(body))
    }

    fn new(api: &Api, id: &str) -> TokenNode {
        let (s, v) = Self::register(api, id, None);
        assert_eq!(s, 201, "{v}");
        let token = v["node_token"].as_str().expect("a token is issued when asked for").to_string();
        TokenNode { api: api.clone(), token }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.api, method, path, &[("X-Node-Token", &self.token)], body)
    }
}

/// A request with extra headers, as the given API key.
fn call(api: &Api, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> (u16, Value) {
    let mut req = ureq::request(method, &format!("{}{}", api.base, path)).timeout(Duration::from_secs(30));
    if let Some(k) = &api.key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[test]
fn a_worker_key_cannot_act_as_another_node() {
    let m = TestMaster::start(&["--api-key", "adm", "--worker-api-key", "wrk", "--max-long-poll", "0.3"]);
    let (admin, wrk) = (m.api().with_key("adm"), m.api().with_key("wrk"));
    let victim = TokenNode::new(&wrk, "victim");
    let id = admin.submit(json!({"parameters": {"duration": 1, "stream_key": "secret-key"}}));
    // The attacker holds the shared worker key but not the victim's token.
    for token in [None, Some("guess")] {
        let h: Vec<(&str, &str)> = token.map(|t| ("X-Node-Token", t)).into_iter().collect();
        for (method, path) in [("GET", "/jobs/next?node_id=victim&wait=0"), ("GET", "/nodes/victim/control?wait=0")] {
            let (s, v) = call(&wrk, method, path, &h, None);
            assert_eq!(
                (s, v["error"].as_str()),
                (403, Some("invalid_node_token")),
                "{method} {path} with {token:?}: {v}"
            );
        }
        let (s, v) = call(&wrk, "POST", "/nodes/victim/heartbeat", &h, Some(json!({})));
        assert_eq!(s, 403, "heartbeat as the victim: {v}");
        // Nor can it take the identity over by registering again, with or without asking for a token.
        let (s, v) = TokenNode::register(&wrk, "victim", token);
        assert_eq!(s, 403, "re-registration without the token: {v}");
        let (s, v) = call(&wrk, "POST", "/nodes/register", &h, Some(json!({"node_id": "victim", "address": "victim"})));
        assert_eq!(s, 403, "seed-style re-registration of a token node: {v}");
        let (s, v) = call(&wrk, "POST", "/nodes/register", &h, Some(json!({"address": "victim"})));
        assert_eq!(s, 403, "registration by the victim's address: {v}");
    }
    assert_eq!(admin.status(&id), "pending", "nobody received the job");
    // The real node gets its job (and the stream key) …
    let (s, v) = victim.call("GET", "/jobs/next?node_id=victim&wait=5", None);
    assert_eq!(s, 200, "{v}");
    let job = v["job"].clone();
    assert_eq!(job["id"], id.as_str());
    let attempt = job["attempt"].clone();
    // … and nobody else can report on it, hand it back or acknowledge for it.
    let forged: Vec<(&str, String, Value)> = vec![
        (
            "POST",
            "/results".into(),
            json!({"job_id": id, "node_id": "victim", "attempt": attempt, "status": "completed"}),
        ),
        ("POST", format!("/jobs/{id}/progress"), json!({"node_id": "victim", "attempt": attempt, "percent": 50.0})),
        ("POST", format!("/jobs/{id}/release"), json!({"node_id": "victim", "attempt": attempt})),
        (
            "POST",
            format!("/jobs/{id}/control/ack"),
            json!({"node_id": "victim", "attempt": attempt, "action": "cancel"}),
        ),
    ];
    for (method, path, body) in &forged {
        let (s, v) = call(&wrk, method, path, &[], Some(body.clone()));
        assert_eq!((s, v["error"].as_str()), (403, Some("invalid_node_token")), "{method} {path}: {v}");
    }
    assert_eq!(admin.status(&id), "processing", "the forged calls changed nothing");
    // A token node's result must name its attempt.
    let (s, v) =
        victim.call("POST", "/results", Some(json!({"job_id": id, "node_id": "victim", "status": "completed"})));
    assert_eq!((s, v["error"].as_str()), (400, Some("missing_attempt")), "{v}");
    let (s, v) = victim.call(
        "POST",
        "/results",
        Some(json!({"job_id": id, "node_id": "victim", "attempt": attempt, "status": "completed"})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(admin.status(&id), "completed");
}

#[test]
fn node_tokens_rotate_are_stored_hashed_and_can_be_required() {
    let m = TestMaster::start(&["--worker-api-key", "wrk", "--api-key", "adm", "--max-long-poll", "0.3"]);
    let wrk = m.api().with_key("wrk");
    let mut node = TokenNode::new(&wrk, "rot");
    let first = node.token.clone();
    // Re-registration with the token rotates it; the old one stops working.
    let (s, v) = TokenNode::register(&wrk, "rot", Some(&first));
    assert_eq!(s, 200, "{v}");
    let second = v["node_token"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let (s, _) = node.call("POST", "/nodes/rot/heartbeat", Some(json!({})));
    assert_eq!(s, 403, "the rotated-out token is refused");
    node.token = second.clone();
    assert_eq!(node.call("POST", "/nodes/rot/heartbeat", Some(json!({}))).0, 200);
    // A worker whose registration reply was lost still holds the previous token: it may
    // register with it once more.
    let (s, v) = TokenNode::register(&wrk, "rot", Some(&first));
    assert_eq!(s, 200, "re-registration with the token before the last rotation: {v}");
    let third = v["node_token"].as_str().unwrap().to_string();
    // Only a digest is stored.
    let pool = ffrtmp::db::open(&m.database(), ffrtmp::db::Synchronous::Full, 1).unwrap();
    let rows = ffrtmp::db::nodes::load_all(&mut pool.get().unwrap()).unwrap();
    let stored = rows.iter().find(|r| r.id == "rot").unwrap().token_hash.clone().unwrap();
    assert!(!stored.contains(&third) && !stored.contains(&second));
    assert_eq!(stored, ffrtmp::domain::credentials::to_hex(&ffrtmp::domain::credentials::digest(&third)));
    // Seed-style nodes keep working on the shared key …
    wrk.register("seed", json!({"encoders": ["libx264"]}));
    assert_eq!(wrk.post("/nodes/seed/heartbeat", json!({})).0, 200);
    assert_eq!(wrk.get("/jobs/next?node_id=seed&wait=0").0, 200);
    // … unless the master requires node tokens.
    drop(pool);
    let strict = TestMaster::start(&["--worker-api-key", "wrk", "--require-node-tokens"]);
    let w = strict.api().with_key("wrk");
    let (s, v) = w.post("/nodes/register", json!({"node_id": "seed", "address": "seed"}));
    assert_eq!((s, v["error"].as_str()), (403, Some("invalid_node_token")), "{v}");
    let n = TokenNode::new(&w, "modern");
    assert_eq!(n.call("POST", "/nodes/modern/heartbeat", Some(json!({}))).0, 200);
}

#[test]
fn real_workers_use_node_tokens_and_keep_metrics_on_loopback() {
    let m = TestMaster::start(&["--worker-api-key", "wrk", "--api-key", "adm", "--require-node-tokens"]);
    let admin = m.api().with_key("adm");
    let mut w = TestWorker::start(&m, &["--api-key", "wrk", "--executor", "noop"]);
    let id = admin.submit(json!({"parameters": {"duration": 1}}));
    assert_eq!(wait_terminal(&admin, &id, Duration::from_secs(30))["status"], "completed");
    let token = std::fs::read_to_string(w.work_dir.join("node_token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(w.work_dir.join("node_token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the token file is private to its owner");
    // After a restart the worker proves its identity with the saved token (and gets a new one).
    w.restart(&m, &["--api-key", "wrk", "--executor", "noop"]);
    let id = admin.submit(json!({"parameters": {"duration": 1}}));
    assert_eq!(wait_terminal(&admin, &id, Duration::from_secs(30))["status"], "completed");
    assert_ne!(std::fs::read_to_string(w.work_dir.join("node_token")).unwrap(), token, "rotated at re-registration");
    // The worker's metrics listener is bound to loopback by default.
    let port: u16 = w.metrics_url.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap();
    let hex = format!("0100007F:{port:04X}");
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    assert!(tcp.lines().any(|l| l.split_whitespace().nth(1) == Some(hex.as_str())), "metrics on 127.0.0.1:{port}");
}

#[test]
fn nul_and_control_characters_fail_alone_and_never_spoil_a_batch() {
    // On PostgreSQL a NUL in text aborted the whole group commit: innocent submits that
    // shared the transaction got 503. Now such input is refused (or cleaned) before it
    // reaches a write, on both backends.
    let m = TestMaster::start(&[]);
    let api = m.api();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let api = api.clone();
            std::thread::spawn(move || {
                let scenario = if i % 4 == 0 { format!("evil\u{0}{i}") } else { format!("innocent-{i}") };
                (i, api.post("/jobs", json!({"scenario": scenario})))
            })
        })
        .collect();
    for h in handles {
        let (i, (s, v)) = h.join().unwrap();
        if i % 4 == 0 {
            assert_eq!((s, v["error"].as_str()), (400, Some("invalid_field")), "NUL scenario: {v}");
            assert!(v["message"].as_str().unwrap().contains("scenario"), "the message names the field: {v}");
        } else {
            assert_eq!(s, 201, "innocent submit {i}: {v}");
        }
    }
    for (field, value) in [("name", "node\u{0}"), ("cpu_model", "cpu\u{1b}[31m")] {
        let (s, v) = api.post("/nodes/register", json!({"node_id": "n", "address": "n", field: value}));
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_registration")), "{field}: {v}");
        assert!(v["message"].as_str().unwrap().contains(field), "{v}");
    }
    let (s, v) = api.post("/jobs", json!({"parameters": {"input": "/in/a\u{0}.mp4"}}));
    assert_eq!(s, 400, "NUL in a parameter: {v}");
    // A worker's error and logs with NUL bytes are kept, cleaned, and fail nothing else.
    api.register("n", json!({"encoders": ["libx264"]}));
    let job = api.claim("n", 5.0).unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let (s, v) = api.result(
        &job,
        "n",
        "failed",
        json!({"error": "bad\u{0}thing", "logs": "line\u{0}1\nline 2", "retryable": false}),
    );
    assert_eq!(s, 200, "{v}");
    let j = api.job(&id);
    assert_eq!(j["status"], "failed");
    assert_eq!(j["error"], "badthing");
    assert_eq!(api.get(&format!("/jobs/{id}/logs")).1["logs"], "line1\nline 2");
}

#[test]
fn every_stored_string_and_list_is_bounded() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    // 900 KB of cpu_model (× 300 registrations grew the master by 294 MB before).
    let (s, v) =
        api.post("/nodes/register", json!({"node_id": "big", "address": "big", "cpu_model": "x".repeat(900_000)}));
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("cpu_model"), "{v}");
    let (s, _) = api.post(
        "/nodes/register",
        json!({"node_id": "caps", "address": "caps", "gpu_capabilities": vec!["h264_nvenc"; 500]}),
    );
    assert_eq!(s, 400);
    let (s, _) =
        api.post("/nodes/register", json!({"node_id": "lab", "address": "lab", "labels": {"k": "v".repeat(10_000)}}));
    assert_eq!(s, 400);
    // A 1 MB fps string was stored verbatim; numbers are stored parsed.
    let (s, v) = api.post("/jobs", json!({"parameters": {"fps": format!("30{}", " ".repeat(1_000_000))}}));
    assert_eq!(s, 400, "{v}");
    let id = api.submit(json!({"parameters": {"fps": " 30 ", "duration": "2.5"}}));
    let p = &api.job(&id)["parameters"];
    assert_eq!((p["fps"].clone(), p["duration"].clone()), (json!(30), json!(2.5)), "{p}");
    // A worker's error of almost 1 MiB (the body limit) is cut to the documented bound, in the job and its events.
    api.register("n", json!({"encoders": ["libx264"]}));
    let job = api.claim("n", 5.0).unwrap();
    let (s, v) = api.result(&job, "n", "failed", json!({"error": "E".repeat(1_000_000), "retryable": false}));
    assert_eq!(s, 200, "{v}");
    let j = api.job(&id);
    assert_eq!(j["error"].as_str().unwrap().len(), ffrtmp::domain::limits::RESULT_ERROR_MAX);
    for t in j["state_transitions"].as_array().unwrap() {
        assert!(t["reason"].as_str().unwrap().len() <= ffrtmp::domain::limits::EVENT_REASON_MAX, "{t}");
    }
    // A heartbeat with thousands of GPUs is refused.
    let gpus: Vec<Value> = (0..1000).map(|i| json!({"index": i, "name": "g", "memory_total_bytes": 1})).collect();
    assert_eq!(api.post("/nodes/n/heartbeat", json!({"gpus": gpus})).0, 400);
}

#[test]
fn results_are_range_checked() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    api.register("n", json!({"encoders": ["libx264"]}));
    let id = api.submit(json!({}));
    let job = api.claim("n", 5.0).unwrap();
    for bad in [
        json!({"qoe_score": 1e308}),
        json!({"vmaf_score": 101}),
        json!({"energy_joules": -1}),
        json!({"metrics": {"frames": -10}}),
        json!({"metrics": {"junk": "x".repeat(900_000)}}),
        json!({"failure_reason": "made_up"}),
    ] {
        let (s, v) = api.result(&job, "n", "completed", bad.clone());
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_result")), "{bad}: {v}");
    }
    assert_eq!(api.status(&id), "processing", "refused results changed nothing");
    let (s, v) = api.result(&job, "n", "completed", json!({"qoe_score": 97.5, "metrics": {"frames": 30}}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(api.job(&id)["qoe_score"], 97.5);
}

#[test]
fn rtmp_destinations_must_be_allowed() {
    let rtmp = |url: &str| json!({"parameters": {"output_mode": "rtmp", "rtmp_url": url, "duration": 1}});
    // Default: only the hosts the workers name as their --rtmp-base.
    let m = TestMaster::start(&[]);
    let api = m.api();
    let (s, v) = api.post("/jobs", rtmp("rtmp://127.0.0.1:22/live/x"));
    assert_eq!((s, v["error"].as_str()), (400, Some("rtmp_destination_not_allowed")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("--rtmp-base"), "the message names the rule: {v}");
    api.post(
        "/nodes/register",
        json!({"node_id": "w", "address": "w", "rtmp_base": "rtmp://media.internal:1935/live"}),
    );
    assert_eq!(api.post("/jobs", rtmp("rtmp://media.internal/live/key")).0, 201, "the worker's own RTMP server");
    assert_eq!(api.post("/jobs", rtmp("rtmp://media.internal:8080/live/key")).0, 400, "another port of it");
    assert_eq!(api.post("/jobs", rtmp("rtmp://user:pw@169.254.169.254/live/key")).0, 400);
    // Explicit patterns.
    let m = TestMaster::start(&["--rtmp-allow", "*.cdn.example,ingest.example:1935"]);
    let api = m.api();
    assert_eq!(api.post("/jobs", rtmp("rtmps://a.cdn.example/app/k")).0, 201);
    assert_eq!(api.post("/jobs", rtmp("rtmp://ingest.example/app/k")).0, 201);
    let (s, v) = api.post("/jobs", rtmp("rtmp://ingest.example:6379/app/k"));
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("--rtmp-allow"), "{v}");
    assert_eq!(api.post("/jobs", rtmp("rtmp://cdn.example.evil/app/k")).0, 400);
}

#[test]
fn playlist_inputs_cannot_escape_the_input_root() {
    // A playlist under the root (named .mp4) that lists a segment outside it.
    let dir = tmpdir();
    let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let seg = outside.join("secret.ts");
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x90:rate=10:duration=1",
            "-c:v",
            "libx264",
            "-f",
            "mpegts",
            "-y",
        ])
        .arg(&seg)
        .status()
        .unwrap();
    assert!(ok.success());
    let playlist = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{}\n#EXT-X-ENDLIST\n", seg.display());
    std::fs::write(root.join("evil.mp4"), &playlist).unwrap();
    std::fs::write(root.join("evil.m3u8"), &playlist).unwrap();
    let m = TestMaster::start(&[]);
    let api = m.api();
    let w = TestWorker::start(&m, &["--input-root", root.to_str().unwrap()]);
    for name in ["evil.mp4", "evil.m3u8"] {
        let id = api.submit(json!({"max_retries": 0, "parameters": {"input": name, "resolution": "160x90"}}));
        let j = wait_terminal(&api, &id, Duration::from_secs(30));
        assert_eq!(
            (j["status"].as_str(), j["failure_reason"].as_str()),
            (Some("failed"), Some("input_error")),
            "{name}: {j}"
        );
        assert!(api.outputs(&id).is_empty(), "{name} produced no output");
        let _ = &w;
    }
}

#[test]
fn a_finished_encode_survives_a_master_outage_and_a_worker_restart() {
    let port = free_port();
    let db = tmpdir();
    let mut m = TestMaster::start_on(port, db.path(), &[]);
    let api = m.api();
    let mut w = TestWorker::start(&m, &[]);
    let encode = |api: &Api| {
        api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 2, "realtime": true}}))
    };
    // 1. The master dies mid-encode and comes back after the encode has finished: the
    //    worker keeps the output and delivers its result then.
    let id = encode(&api);
    wait_until(Duration::from_secs(20), "encode running", || api.status(&id) == "processing");
    m.kill9();
    let pending = w.work_dir.join(format!("job-{id}/attempt-1/result.json"));
    wait_until(Duration::from_secs(30), "the encode to finish while the master is down", || pending.exists());
    m.restart();
    let j = wait_terminal(&api, &id, Duration::from_secs(60));
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["attempt"], 1, "not encoded again");
    fetch_output(&api, &id);
    // 2. Same, but the worker is also killed before it could deliver: its next start
    //    asks the master, then delivers the kept result.
    let id = encode(&api);
    wait_until(Duration::from_secs(20), "encode running", || api.status(&id) == "processing");
    m.kill9();
    let pending = w.work_dir.join(format!("job-{id}/attempt-1/result.json"));
    wait_until(Duration::from_secs(30), "the encode to finish while the master is down", || pending.exists());
    w.kill9();
    m.restart();
    w.restart(&m, &[]);
    let j = wait_terminal(&api, &id, Duration::from_secs(60));
    assert_eq!((j["status"].as_str(), j["attempt"].as_i64()), (Some("completed"), Some(1)), "{j}");
    let (codec, ..) = probe_video(&fetch_output(&api, &id).path);
    assert_eq!(codec, "h264");
    // 3. An attempt the master no longer wants is deleted at start-up, and only then.
    let stale = w.work_dir.join(format!("job-{}/attempt-7", uuid_like()));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("partial.mp4"), b"x").unwrap();
    w.restart(&m, &[]);
    wait_until(Duration::from_secs(20), "the unwanted attempt to be removed", || !stale.exists());
}

fn uuid_like() -> String {
    format!("00000000-0000-4000-8000-{:012x}", std::process::id())
}

#[test]
fn resource_limits_are_enforced_not_ignored() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    let _w = TestWorker::start(&m, &[]);
    // max_disk_mb: an output growing past it is stopped (a permanent resource error).
    let id = api.submit(json!({"parameters": {"resolution": "640x360", "fps": 30, "duration": 20, "bitrate": "8M", "preset": "ultrafast",
        "resource_limits": {"max_disk_mb": 1}}}));
    let j = wait_terminal(&api, &id, Duration::from_secs(60));
    assert_eq!((j["status"].as_str(), j["failure_reason"].as_str()), (Some("failed"), Some("resource_error")), "{j}");
    assert!(j["error"].as_str().unwrap().contains("max_disk_mb"), "{j}");
    // max_cpu_percent: the encoder is pinned to that share of the node's CPUs.
    let cpus = std::thread::available_parallelism().unwrap().get();
    let id = api.submit(json!({"parameters": {"resolution": "160x90", "fps": 10, "duration": 3, "realtime": true,
        "resource_limits": {"max_cpu_percent": 1}}}));
    let mut allowed = String::new();
    wait_until(Duration::from_secs(20), "the encoder to run", || {
        let pids = ffmpeg_pids(&format!("job-{id}"));
        allowed = pids
            .first()
            .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Cpus_allowed_list:"))
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            })
            .unwrap_or_default();
        !allowed.is_empty()
    });
    assert!(!allowed.contains(',') && !allowed.contains('-'), "pinned to one of {cpus} CPUs: {allowed}");
    assert_eq!(wait_terminal(&api, &id, Duration::from_secs(30))["status"], "completed");
}

#[test]
fn every_error_is_json_even_from_extractors() {
    let m = TestMaster::start(&[]);
    let api = m.api();
    api.register("n1", json!({"encoders": ["libx264"]}));
    let big = format!("{{\"cpu_load_percent\": 1, \"pad\": \"{}\"}}", "x".repeat(2 << 20));
    for (method, path, body) in [
        ("POST", "/nodes/n1/heartbeat", big.as_str()),
        ("POST", "/jobs", big.as_str()),
        ("POST", "/jobs", "{not json"),
        ("GET", "/jobs?limit=abc", ""),
    ] {
        let (s, v) = raw_request(&m.url, method, path, None, Some(body));
        assert!(s >= 400, "{method} {path}: {s}");
        assert!(v["error"].is_string() && v["message"].is_string(), "{method} {path} → {s}: {v}");
    }
    let (s, v) = raw_request(&m.url, "POST", "/nodes/n1/heartbeat", None, Some(&big));
    assert_eq!((s, v["error"].as_str()), (413, Some("payload_too_large")), "{v}");
}

/// A CA and a server certificate for 127.0.0.1 signed by it (openssl); returns
/// (ca.pem, server cert, server key).
fn make_ca(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |n: &str| dir.join(n);
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
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
        "/CN=ffrtmp test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

#[test]
fn workers_and_the_cli_reach_a_tls_master_through_a_private_ca() {
    let dir = tmpdir();
    let (ca, cert, key) = make_ca(dir.path());
    let m = TestMaster::start(&["--tls", "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(m.url.starts_with("https://"), "{}", m.url);
    // The worker registers, heartbeats and runs a job over TLS.
    let _w = TestWorker::start(&m, &["--ca-cert", ca.to_str().unwrap(), "--executor", "noop"]);
    // The CLI submits and follows it over TLS.
    let out = std::process::Command::new(BIN)
        .args([
            "jobs",
            "submit",
            "--duration",
            "1",
            "--follow",
            "-o",
            "json",
            "--master",
            &m.url,
            "--ca-cert",
            ca.to_str().unwrap(),
        ])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "CLI over TLS: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(BIN)
        .args(["jobs", "list", "-o", "json", "--master", &m.url, "--ca-cert", ca.to_str().unwrap()])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["jobs"][0]["status"], "completed", "{list}");
    // Without the CA the certificate is refused — a TLS error, not "SSL is not supported".
    let out = std::process::Command::new(BIN)
        .args(["nodes", "list", "--master", &m.url])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("ssl is not supported") && (err.contains("certificate") || err.contains("issuer")), "{err}");
    // Browsers get HTTP/2 over TLS (ALPN): one connection carries every event stream of
    // every console tab, instead of six HTTP/1.1 connections per host.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http2", "-o", "/dev/null", "-w", "%{http_version}", "--cacert", ca.to_str().unwrap()])
        .arg(format!("{}/health", m.url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2", "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn each_key_has_a_request_budget() {
    let m = TestMaster::start(&[
        "--api-key",
        "a1",
        "--api-key",
        "a2",
        "--worker-api-key",
        "wrk",
        "--rate-limit",
        "5",
        "--rate-limit-burst",
        "5",
        "--max-long-poll",
        "0.1",
    ]);
    let get = |key: &str, path: &str| match ureq::get(&format!("{}{path}", m.url))
        .set("Authorization", &format!("Bearer {key}"))
        .call()
    {
        Ok(r) => (r.status(), None, Value::Null),
        Err(ureq::Error::Status(s, r)) => {
            (s, r.header("Retry-After").map(str::to_string), r.into_json::<Value>().unwrap_or(Value::Null))
        }
        Err(e) => panic!("{e}"),
    };
    let answers: Vec<_> = (0..20).map(|_| get("a1", "/jobs")).collect();
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert!(!limited.is_empty() && answers.iter().filter(|a| a.0 == 200).count() >= 5, "{answers:?}");
    let (_, retry_after, body) = limited[0];
    assert!(
        retry_after.as_deref().is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)),
        "Retry-After: {retry_after:?}"
    );
    assert_eq!(body["error"], "rate_limited");
    // Another key has its own budget; workers and their long-polls are not limited.
    assert_eq!(get("a2", "/jobs").0, 200);
    m.api().with_key("a2").register("n1", json!({"encoders": ["libx264"]}));
    for _ in 0..20 {
        assert_eq!(get("wrk", "/jobs/next?node_id=n1&wait=0").0, 200);
    }
}

#[test]
fn gstreamer_is_chosen_only_when_its_pipeline_can_be_built() {
    let m = TestMaster::start(&["--rtmp-allow", "127.0.0.1"]);
    let api = m.api();
    // What the GStreamer pipeline cannot honour is refused at the door, not "completed"
    // as a test pattern in another codec and container.
    for p in [json!({"input": "in.mp4"}), json!({"codec": "vp9", "output": "x.webm"}), json!({"output": "x.webm"})] {
        let (s, v) = api.post("/jobs", json!({"engine": "gstreamer", "parameters": p}));
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_parameter")), "{p}: {v}");
    }
    let w = TestWorker::start(&m, &[]);
    let inspect =
        |e: &str| std::process::Command::new("gst-inspect-1.0").arg(e).output().is_ok_and(|o| o.status.success());
    let can_stream = ["x264enc", "flvmux", "rtmpsink"].iter().all(|e| inspect(e));
    let node = api.node(&w.node_id);
    assert_eq!(node["gstreamer_rtmp"].as_bool().unwrap_or(false), can_stream, "{node}");
    // engine=auto + RTMP: GStreamer only where rtmpsink exists, else ffmpeg — never a
    // pipeline that fails on every retry.
    let dir = tmpdir();
    let (mut listener, url) = rtmp_listener(&dir.path().join("received.flv"), "live/k");
    let id = api.submit(json!({"queue": "live", "max_retries": 0, "parameters": {"output_mode": "rtmp",
        "rtmp_url": url, "resolution": "160x90", "fps": 10, "duration": 2}}));
    let j = wait_terminal(&api, &id, Duration::from_secs(60));
    let _ = listener.wait();
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["metrics"]["engine_used"], if can_stream { "gstreamer" } else { "ffmpeg" }, "{j}");
}

#[test]
fn idempotency_keys_are_scoped_per_api_key_and_bound_to_their_body() {
    let m = TestMaster::start(&["--api-key", "team-a", "--api-key", "team-b"]);
    let post = |key: &str, body: Value| {
        call(&m.api().with_key(key), "POST", "/jobs", &[("Idempotency-Key", "nightly-42")], Some(body))
    };
    let (s, first) = post("team-a", json!({"scenario": "one"}));
    assert_eq!(s, 201, "{first}");
    let (s, again) = post("team-a", json!({"scenario": "one"}));
    assert_eq!((s, &again["id"]), (200, &first["id"]), "a replay returns the first job");
    let (s, v) = post("team-a", json!({"scenario": "two"}));
    assert_eq!((s, v["error"].as_str()), (422, Some("idempotency_key_reused")), "{v}");
    let (s, other) = post("team-b", json!({"scenario": "one"}));
    assert_eq!(s, 201, "another key's namespace: {other}");
    assert_ne!(other["id"], first["id"]);
}

#[test]
fn operator_retries_get_a_fresh_automatic_budget() {
    let m = TestMaster::start(&["--retry-backoff-ms", "10"]);
    let api = m.api();
    api.register("n", json!({"encoders": ["libx264"]}));
    let id = api.submit(json!({"max_retries": 1}));
    let fail_once = |api: &Api| {
        let job = api.claim("n", 5.0).expect("placed");
        let (s, v) = api.result(&job, "n", "failed", json!({"error": "transient", "failure_reason": "runtime_error"}));
        assert_eq!(s, 200, "{v}");
    };
    fail_once(&api); // automatic retry 1 of 1
    fail_once(&api); // budget spent: failed
    assert_eq!(api.status(&id), "failed");
    assert_eq!(api.post(&format!("/jobs/{id}/retry"), json!({})).0, 200);
    fail_once(&api);
    let j = api.job(&id);
    let after_operator: Vec<&Value> = j["state_transitions"]
        .as_array()
        .unwrap()
        .iter()
        .skip_while(|t| t["reason"] != "User requested retry")
        .collect();
    assert!(
        after_operator.iter().any(|t| t["to"] == "retrying") && j["status"] != "failed",
        "the operator's retry did not use up the automatic retry: {j}"
    );
    // UUID-only worker routes: a sequence number there is not resolved.
    let seq = j["sequence_number"].as_i64().unwrap();
    let (s, v) = api.post(&format!("/jobs/{seq}/progress"), json!({"node_id": "n", "percent": 1.0}));
    assert_eq!(s, 404, "{v}");
    assert!(!v.to_string().contains(&id), "the error does not reveal the job's UUID: {v}");
}

#[test]
fn long_histories_are_capped_and_stream_keys_never_stored() {
    let m = TestMaster::start(&["--retry-backoff-ms", "1", "--rtmp-allow", "*"]);
    let api = m.api();
    api.register("n", json!({"encoders": ["libx264"]}));
    let id = api.submit(json!({"max_retries": 0, "parameters": {"output_mode": "rtmp", "rtmp_url": "rtmp://user:hunter2@live.example/app", "stream_key": "sk_live_secret"}}));
    // Each round: placed, failed, retried by the operator (three transitions).
    for i in 0..75 {
        let job = api.claim("n", 5.0).expect("placed");
        let err = "[flv @ 0x1] rtmp://user:hunter2@live.example/app/sk_live_secret: Connection refused";
        api.result(
            &job,
            "n",
            "failed",
            json!({"error": err, "logs": format!("attempt {i}: {err}"), "failure_reason": "network_error"}),
        );
        if i < 74 {
            assert_eq!(api.post(&format!("/jobs/{id}/retry"), json!({})).0, 200);
        }
    }
    let j = api.job(&id);
    assert_eq!(
        j["state_transitions"].as_array().unwrap().len() as i64,
        ffrtmp::http::jobs::MAX_TRANSITIONS_SHOWN,
        "{}",
        j["status"]
    );
    assert!(j["state_transitions_omitted"].as_i64().unwrap() > 0);
    let text = format!("{j}{}", api.get(&format!("/jobs/{id}/logs")).1);
    assert!(
        !text.contains("hunter2") && !text.contains("sk_live_secret"),
        "credentials leaked: {}",
        &text[..text.len().min(2000)]
    );
    assert!(text.contains("rtmp://***@live.example/app/***"), "redacted, not dropped");
}

/// The console's pages: never rendered without a session or a key, never to a worker
/// key, admin-only pages never to read-only keys, under any spelling; a session
/// stands for its key only with its CSRF token on state-changing requests; sign-in
/// refuses other sites, unknown keys and worker keys.
#[test]
fn console_pages_and_sessions_keep_the_api_roles() {
    let m = TestMaster::start(&["--api-key", "adm", "--worker-api-key", "wrk", "--read-api-key", "ro"]);
    let admin = m.api().with_key("adm");
    let id = admin.submit(json!({"parameters": {"duration": 1}}));
    let pages = [
        ("/ui".to_string(), "read"),
        ("/ui/jobs".into(), "read"),
        (format!("/ui/jobs/{id}"), "read"),
        ("/ui/jobs?status=pending&scenario=x".into(), "read"),
        ("/ui/nodes".into(), "read"),
        ("/ui/submit".into(), "admin"),
        ("/ui/webhooks".into(), "admin"),
    ];
    let get = |p: &str, key: Option<&str>| raw_request(&m.url, "GET", p, key, None).0;
    for (path, who) in &pages {
        assert_eq!(get(path, Some("adm")), 200, "{path} as admin");
        assert_eq!(get(path, Some("ro")), if *who == "read" { 200 } else { 403 }, "{path} as read-only");
        for p in spellings(path) {
            for key in [None, Some("wrong")] {
                let s = get(&p, key);
                assert!(s == 303 || s == 401, "{p} with {key:?} got {s}: only a sign-in redirect or 401");
            }
            let w = get(&p, Some("wrk"));
            assert!(w == 403 || w == 404, "{p} as worker got {w}");
            if *who == "admin" {
                let r = get(&p, Some("ro"));
                assert!(r == 403 || r == 404, "{p} as read-only got {r}");
            }
        }
    }
    assert_eq!(get("/ui/assets/app.js", None), 200, "assets hold no secrets");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let login = |key: &str, extra: &[(&str, &str)]| {
        let headers: Vec<(&str, &str)> = form.iter().chain(extra).copied().collect();
        raw_exchange(&m.url, "POST", "/ui/login", &headers, &format!("key={key}&next=/ui/jobs"))
    };
    assert_eq!(login("wrong", &[]).0, 401);
    assert_eq!(login("wrk", &[]).0, 403, "worker keys cannot sign in");
    assert_eq!(login("adm", &[("Origin", "http://evil.example")]).0, 403, "sign-in from another site");
    let session = |key: &str| {
        let (s, head, _) = login(key, &[]);
        assert_eq!(s, 303, "{head}");
        assert!(head.contains("HttpOnly") && head.contains("SameSite=Strict"), "{head}");
        let cookie = head.lines().find_map(|l| l.split_once("ffrtmp_session=")).unwrap().1;
        let cookie = format!("ffrtmp_session={}", cookie.split(';').next().unwrap());
        let (_, _, page) = raw_exchange(&m.url, "GET", "/ui/jobs", &[("Cookie", &cookie)], "");
        let csrf = page.split("name=\"csrf-token\" content=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
        (cookie, csrf)
    };
    let (cookie, csrf) = session("adm");
    let call = |method: &str, path: &str, headers: &[(&str, &str)]| raw_request_as(&m.url, method, path, headers);
    assert_eq!(call("GET", "/jobs", &[("Cookie", &cookie)]).0, 200, "the cookie stands for the key");
    let cancel = format!("/jobs/{id}/cancel");
    let refused = call("POST", &cancel, &[("Cookie", &cookie)]);
    assert_eq!((refused.0, refused.1["error"].as_str()), (403, Some("csrf_token_invalid")));
    assert_eq!(call("POST", &cancel, &[("Cookie", &cookie), ("X-CSRF-Token", "0123")]).0, 403);
    assert_eq!(admin.status(&id), "pending", "nothing happened");
    let (ro_cookie, ro_csrf) = session("ro");
    let (s, v) = call("POST", &cancel, &[("Cookie", &ro_cookie), ("X-CSRF-Token", &ro_csrf)]);
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")), "a read-only session stays read-only");
    assert_eq!(call("POST", &cancel, &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)]).0, 200);
    assert_eq!(admin.status(&id), "canceled");
    // Signed out (with its token), the cookie opens nothing.
    let body = format!("csrf={csrf}");
    let (s, _, _) = raw_exchange(&m.url, "POST", "/ui/logout", &[form[0], ("Cookie", &cookie)], &body);
    assert_eq!(s, 303);
    assert_eq!(call("GET", "/jobs", &[("Cookie", &cookie)]).0, 401);
    assert_eq!(get("/ui/jobs", None), 303);
}

fn raw_request_as(base: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, _, payload) = raw_exchange(base, method, path, headers, "");
    (status, serde_json::from_str(&payload).unwrap_or(Value::String(payload)))
}

/// Keys, the webhook secret and the database URL may come from files (`--…-file`), so
/// they never appear in `ps` or a process's environment; a file with no secret stops
/// the process with the reason.
#[test]
fn secrets_come_from_files_and_stay_out_of_ps() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmpdir();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p.to_str().unwrap().to_string()
    };
    let admin = write("admin", "# rotated keys: both work\nadm-old-from-file\nadm-new-from-file\n");
    let worker = write("worker", "wrk-from-file\n");
    let read = write("read", "ro-from-file\n");
    let hook = write("hook", "a-webhook-secret-from-a-file\n");
    let m = TestMaster::start(&[
        "--api-key-file",
        &admin,
        "--worker-api-key-file",
        &worker,
        "--read-api-key-file",
        &read,
        "--webhook-secret-file",
        &hook,
    ]);
    for k in ["adm-old-from-file", "adm-new-from-file"] {
        assert_eq!(m.api().with_key(k).get("/jobs").0, 200, "{k}");
    }
    assert_eq!(m.api().with_key("ro-from-file").post("/jobs", json!({})).0, 403);
    assert_eq!(m.api().get("/jobs").0, 401);
    let admin_api = m.api().with_key("adm-new-from-file");
    let w = TestWorker::start(&m, &["--api-key-file", &worker, "--executor", "noop"]);
    let id = admin_api.submit(json!({"parameters": {"duration": 1}}));
    assert_eq!(wait_terminal(&admin_api, &id, Duration::from_secs(30))["status"], "completed");
    // The CLI reads its key from a file too.
    let out = std::process::Command::new(BIN)
        .args(["jobs", "list", "--master", &m.url, "--api-key-file", &admin, "-o", "json"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a file of two keys is refused where one key is wanted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("takes one secret"));
    let one = write("one", "adm-new-from-file\n");
    let out = std::process::Command::new(BIN)
        .args(["jobs", "list", "--master", &m.url, "--api-key-file", &one, "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Nothing secret in the processes' command lines or environments.
    let pid = m.child.as_ref().unwrap().id();
    for pid in [pid, w.pid()] {
        for what in ["cmdline", "environ"] {
            let text = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/{what}")).unwrap()).to_string();
            for secret in ["adm-new-from-file", "wrk-from-file", "ro-from-file", "a-webhook-secret-from-a-file"] {
                assert!(!text.contains(secret), "{secret} in /proc/{pid}/{what}");
            }
        }
    }
    // A file without a secret, or a missing one, stops the master with the reason.
    let empty = write("empty", "# nothing yet\n");
    for (file, why) in [(empty.as_str(), "holds no secret"), ("/nonexistent/keys", "No such file")] {
        let out = std::process::Command::new(BIN)
            .args(["master", "--port", "0", "--db"])
            .arg(dir.path().join("refused.db"))
            .args(["--api-key-file", file])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--api-key-file") && err.contains(why), "{err}");
    }
    // The database URL from a file.
    let url = write("db-url", &format!("sqlite://{}\n", dir.path().join("from-file.db").display()));
    let mut child = std::process::Command::new(BIN)
        .args(["master", "--port", "0", "--metrics-port", "0", "--database-url-file", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("listening on"), "{line}");
    assert!(dir.path().join("from-file.db").exists(), "the database the file names was opened");
}
