//! Attacks on a real master, one test per finding of the security review (issue 11):
//! each reproduces the attack and asserts the refusal.

use crate::harness::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

/// Send one request with the path exactly as written (no client-side normalisation of
/// percent-escapes, dot segments or double slashes) and return (status, JSON body).
pub fn raw_request(base: &str, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some(k) = key {
        req.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let payload = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(payload) } else { payload.to_string() };
    (status, serde_json::from_str(&payload).unwrap_or(Value::String(payload)))
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
fn spellings(path: &str) -> Vec<String> {
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
    let m = TestMaster::start(&["--api-key", "adm", "--worker-api-key", "wrk", "--read-api-key", "ro", "--max-long-poll", "0.2"]);
    let admin = m.api().with_key("adm");
    admin.register("n1", json!({"encoders": ["libx264"]}));
    let id = admin.submit(json!({"parameters": {"duration": 1}}));
    let before = admin.get("/jobs").1["count"].as_u64().unwrap();
    // (method, path, body, who may call it: "worker" | "read" | "admin")
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
        ("GET", "/status".into(), "", "read"),
        ("GET", "/metrics".into(), "", "read"),
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
            if *who != "read" {
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
    for p in ["/jobs/%6Eext?node_id=n1&wait=0", "/api/v1/jobs/%6Eext?node_id=n1&wait=0", "/%6Aobs/next?node_id=n1&wait=0"] {
        assert_eq!(raw_request(&m.url, "GET", p, Some("ro"), None).0, 403, "GET {p} as read-only");
    }
    assert_eq!(raw_request(&m.url, "GET", "/api/v1/%6Eodes", None, None).0, 401);
}
