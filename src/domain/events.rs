//! Events: their names, ids, filters, the webhook signature and retry schedule, and
//! the Server-Sent Events framing — pure rules, no IO.
//!
//! An event id is `N` for the N-th stored (outbox) event, or `N-k` for the k-th
//! transient event (progress, log lines) published after stored event N: ids order
//! as the pair (N, k), so they only grow. Resuming after `N` or `N-k` replays every
//! stored event after N; transient events are never replayed.

use super::state::JobState;
use std::time::Duration;

/// Every event type, with what it reports. Stored ones go through the outbox.
pub const KINDS: &[(&str, bool)] = &[
    ("job.submitted", true),
    ("job.rejected", true),
    ("job.queued", true),
    ("job.assigned", true),
    ("job.started", true),
    ("job.paused", true),
    ("job.resumed", true),
    ("job.retrying", true),
    ("job.timed_out", true),
    ("job.completed", true),
    ("job.failed", true),
    ("job.canceled", true),
    ("job.output_stored", true),
    ("job.progress", false),
    ("job.log", false),
    ("node.registered", true),
    ("node.lost", true),
    ("node.revived", true),
    ("node.drained", true),
    ("node.undrained", true),
    ("node.removed", true),
];

/// Event types a webhook or stream may name at most.
pub const MAX_KIND_PATTERNS: usize = 32;
/// Job, parent or node ids one filter may name at most.
pub const MAX_FILTER_IDS: usize = 100;

/// The type of the event a job's move from `from` (None: its creation) to `to` is.
pub fn job_kind(from: Option<JobState>, to: JobState) -> &'static str {
    use JobState::*;
    match (from, to) {
        (_, Rejected) => "job.rejected",
        (None, _) => "job.submitted",
        (Some(Paused), Processing) => "job.resumed",
        (_, Pending | Queued) => "job.queued",
        (_, Assigned) => "job.assigned",
        (_, Processing) => "job.started",
        (_, Paused) => "job.paused",
        (_, Retrying) => "job.retrying",
        (_, TimedOut) => "job.timed_out",
        (_, Completed) => "job.completed",
        (_, Failed) => "job.failed",
        (_, Canceled) => "job.canceled",
    }
}

/// Is `kind` one of the stored (outbox) event types?
pub fn is_stored(kind: &str) -> bool {
    KINDS.iter().any(|(k, stored)| *k == kind && *stored)
}

/// An event type or a family of them: `job.completed`, `job.*`, `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindPattern(String);

impl KindPattern {
    pub fn parse(s: &str) -> Result<KindPattern, String> {
        let s = s.trim();
        let known = |k: &str| KINDS.iter().any(|(name, _)| *name == k);
        let family = |f: &str| KINDS.iter().any(|(name, _)| name.split('.').next() == Some(f));
        let ok = s == "*" || known(s) || s.strip_suffix(".*").is_some_and(family);
        if ok {
            Ok(KindPattern(s.to_string()))
        } else {
            let names: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
            Err(format!("unknown event type '{s}' (one of: {}, a family like 'job.*', or '*')", names.join(", ")))
        }
    }

    pub fn matches(&self, kind: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some("") => true,
            Some(prefix) => kind.starts_with(prefix),
            None => self.0 == kind,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an event is about, as far as filters see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventScope<'a> {
    pub kind: &'a str,
    pub job_id: Option<&'a str>,
    pub parent_id: Option<&'a str>,
    pub node_id: Option<&'a str>,
}

/// Which events a stream or a webhook wants; an empty list means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub kinds: Vec<KindPattern>,
    pub job_ids: Vec<String>,
    pub parent_ids: Vec<String>,
    pub node_ids: Vec<String>,
}

impl EventFilter {
    /// A filter from its parts, each bounded; `kinds` as written (`job.completed`, `job.*`).
    pub fn new(
        kinds: &[String],
        job_ids: &[String],
        parent_ids: &[String],
        node_ids: &[String],
    ) -> Result<Self, String> {
        if kinds.len() > MAX_KIND_PATTERNS {
            return Err(format!("at most {MAX_KIND_PATTERNS} event types"));
        }
        for (what, ids) in [("job", job_ids), ("parent", parent_ids), ("node", node_ids)] {
            if ids.len() > MAX_FILTER_IDS {
                return Err(format!("at most {MAX_FILTER_IDS} {what} ids"));
            }
            if let Some(bad) = ids.iter().find(|i| i.is_empty() || i.len() > 128) {
                return Err(format!("{what} id '{bad}' is empty or longer than 128 characters"));
            }
        }
        Ok(EventFilter {
            kinds: kinds.iter().map(|k| KindPattern::parse(k)).collect::<Result<_, _>>()?,
            job_ids: job_ids.to_vec(),
            parent_ids: parent_ids.to_vec(),
            node_ids: node_ids.to_vec(),
        })
    }

    pub fn matches(&self, e: &EventScope) -> bool {
        let any_of =
            |want: &[String], got: Option<&str>| want.is_empty() || got.is_some_and(|g| want.iter().any(|w| w == g));
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k.matches(e.kind)))
            && any_of(&self.job_ids, e.job_id)
            && any_of(&self.parent_ids, e.parent_id)
            && any_of(&self.node_ids, e.node_id)
    }
}

/// An event's place in the one order of events (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    pub stored: i64,
    pub transient: u32,
}

impl EventId {
    pub fn stored(id: i64) -> EventId {
        EventId { stored: id, transient: 0 }
    }

    /// `N` or `N-k`; anything else is refused.
    pub fn parse(s: &str) -> Option<EventId> {
        let (n, k) = match s.trim().split_once('-') {
            Some((n, k)) => (n, k.parse().ok()?),
            None => (s.trim(), 0),
        };
        let stored: i64 = n.parse().ok()?;
        (stored >= 0).then_some(EventId { stored, transient: k })
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.transient {
            0 => write!(f, "{}", self.stored),
            k => write!(f, "{}-{k}", self.stored),
        }
    }
}

/// One Server-Sent Events frame. `data` is one JSON line (no newlines inside).
pub fn sse_frame(id: Option<&str>, event: &str, data: &str) -> String {
    let mut s = String::with_capacity(data.len() + 48);
    if let Some(id) = id {
        s.push_str("id: ");
        s.push_str(id);
        s.push('\n');
    }
    s.push_str("event: ");
    s.push_str(event);
    s.push_str("\ndata: ");
    s.push_str(data);
    s.push_str("\n\n");
    s
}

/// One message of an event stream, as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// A client's incremental reader of `text/event-stream` (comments and `retry:` skipped).
#[derive(Debug, Default)]
pub struct SseParser {
    line: String,
    current: SseMessage,
    has_data: bool,
}

/// The longest line a reader keeps (a longer one is cut).
const SSE_LINE_MAX: usize = 1 << 20;

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        let mut out = Vec::new();
        for chunk in String::from_utf8_lossy(bytes).split_inclusive('\n') {
            if self.line.len() < SSE_LINE_MAX {
                self.line.push_str(chunk);
            }
            if !self.line.ends_with('\n') {
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data {
                    out.push(std::mem::take(&mut self.current));
                }
                self.current = SseMessage::default();
                self.has_data = false;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_string()),
                "event" => self.current.event = value.to_string(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        out
    }
}

/// What a webhook receiver's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Delivered,
    /// 410 Gone: the receiver wants no more; the subscription ends.
    Unsubscribe,
    Retry,
}

pub fn classify_answer(status: u16) -> Answer {
    match status {
        200..=299 => Answer::Delivered,
        410 => Answer::Unsubscribe,
        _ => Answer::Retry,
    }
}

/// The longest wait between two attempts at one delivery.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// The wait before attempt `attempts + 1` of a delivery that failed `attempts` times:
/// `base · 2^(attempts-1)`, at most an hour, spread by ±25 % (`jitter` in [0, 1)) so
/// that many deliveries failing together do not retry together.
pub fn retry_delay(base: Duration, attempts: u32, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let plain = base.saturating_mul(1u32 << exp.min(20)).min(MAX_RETRY_DELAY);
    plain.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Header names of a webhook delivery.
pub const HEADER_EVENT_ID: &str = "ffrtmp-event-id";
pub const HEADER_EVENT_TYPE: &str = "ffrtmp-event-type";
pub const HEADER_SIGNATURE: &str = "ffrtmp-signature";

/// The `ffrtmp-signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
/// keyed with the webhook's secret (the scheme Stripe uses: the timestamp is signed too,
/// so a receiver can refuse replays older than a few minutes).
pub fn signature_header(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    format!("t={unix_seconds},v1={}", sign(secret, unix_seconds, body))
}

fn sign(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(unix_seconds.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let mut tag = [0u8; 32];
    tag.copy_from_slice(ctx.sign().as_ref());
    super::credentials::to_hex(&tag)
}

/// A receiver's check of a signature header (what the README shows in Python): the
/// HMAC must match (compared in constant time) and the timestamp be within `tolerance`.
pub fn verify_signature(secret: &str, header: &str, body: &[u8], now_unix: i64, tolerance: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    let expected = sign(secret, t, body);
    (now_unix - t).abs() <= tolerance && subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), v1.as_bytes()).into()
}

/// A webhook's URL: `http(s)://host[:port]/…`, no credentials. Returns (host, port).
pub fn webhook_destination(url: &str) -> Result<(String, u16), String> {
    let bad = || format!("webhook url '{url}' must be http(s)://host[:port]/path");
    if url.len() > 2048 {
        return Err("webhook url is longer than 2048 characters".into());
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(bad()),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("webhook url may not carry credentials (user:password@); sign with the secret instead".into());
    }
    let authority = authority.to_ascii_lowercase();
    let (host, port) = super::allow::split_host_port(&authority).ok_or_else(bad)?;
    if host.contains('*') {
        return Err(bad());
    }
    let host = host.to_string();
    Ok((host, port.unwrap_or(default)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_name_their_events() {
        use JobState::*;
        let cases = [
            (None, Pending, "job.submitted"),
            (None, Rejected, "job.rejected"),
            (Some(Pending), Processing, "job.started"),
            (Some(Paused), Processing, "job.resumed"),
            (Some(Processing), Paused, "job.paused"),
            (Some(Paused), Paused, "job.paused"),
            (Some(Processing), Retrying, "job.retrying"),
            (Some(Retrying), Queued, "job.queued"),
            (Some(Processing), Completed, "job.completed"),
            (Some(Processing), Failed, "job.failed"),
            (Some(Queued), Canceled, "job.canceled"),
            (Some(Processing), TimedOut, "job.timed_out"),
            (Some(Failed), Queued, "job.queued"),
        ];
        for (from, to, want) in cases {
            assert_eq!(job_kind(from, to), want, "{from:?} → {to:?}");
            assert!(is_stored(want));
        }
        assert!(!is_stored("job.progress") && !is_stored("job.log") && !is_stored("nope"));
    }

    #[test]
    fn filters_match_kinds_and_ids() {
        let f = EventFilter::new(&["job.completed".into(), "node.*".into()], &["j1".into()], &[], &[]).unwrap();
        let ev = |kind, job| EventScope { kind, job_id: job, ..Default::default() };
        assert!(f.matches(&ev("job.completed", Some("j1"))));
        assert!(!f.matches(&ev("job.completed", Some("j2"))));
        assert!(!f.matches(&ev("job.failed", Some("j1"))));
        // A job filter excludes events about no job (node events).
        assert!(!f.matches(&ev("node.lost", None)));
        let any = EventFilter::default();
        assert!(any.matches(&ev("node.lost", None)));
        let star = EventFilter::new(&["*".into()], &[], &["p".into()], &[]).unwrap();
        assert!(star.matches(&EventScope { kind: "job.log", job_id: Some("c"), parent_id: Some("p"), node_id: None }));
        for bad in ["job.finished", "jobs.*", "job.complete*", ""] {
            assert!(KindPattern::parse(bad).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_FILTER_IDS).map(|i| i.to_string()).collect();
        assert!(EventFilter::new(&[], &many, &[], &[]).is_err());
    }

    #[test]
    fn event_ids_order_as_pairs() {
        let cases = [("7", Some((7, 0))), ("7-3", Some((7, 3))), (" 12 ", Some((12, 0))), ("x", None), ("-1", None)];
        for (s, want) in cases {
            assert_eq!(EventId::parse(s).map(|e| (e.stored, e.transient)), want, "{s}");
        }
        let mut ids = ["8", "7-10", "7-9", "7"].map(|s| EventId::parse(s).unwrap());
        ids.sort();
        assert_eq!(ids.map(|e| e.to_string()), ["7", "7-9", "7-10", "8"]);
    }

    #[test]
    fn retries_grow_with_jitter_and_a_ceiling() {
        let base = Duration::from_secs(1);
        assert_eq!(retry_delay(base, 1, 0.5), Duration::from_secs(1));
        assert_eq!(retry_delay(base, 3, 0.5), Duration::from_secs(4));
        assert_eq!(retry_delay(base, 2, 0.0), Duration::from_millis(1500));
        assert_eq!(retry_delay(base, 2, 1.0), Duration::from_millis(2500));
        assert_eq!(retry_delay(base, 40, 0.5), MAX_RETRY_DELAY);
        let answers = [(200, Answer::Delivered), (204, Answer::Delivered), (410, Answer::Unsubscribe)];
        for (status, want) in answers {
            assert_eq!(classify_answer(status), want);
        }
        for status in [301, 400, 404, 429, 500, 503] {
            assert_eq!(classify_answer(status), Answer::Retry, "{status}");
        }
    }

    #[test]
    fn signatures_verify_and_expire() {
        let body = br#"{"id":"1"}"#;
        let h = signature_header("s3cret", 1_700_000_000, body);
        // The value Python's hmac module computes for the README's recipe.
        assert_eq!(h, "t=1700000000,v1=2b9dee6c893e4bf012ad34ee7b89d492b9567b4f47740ccbf0f161ba3717dc08");
        assert!(verify_signature("s3cret", &h, body, 1_700_000_100, 300));
        assert!(!verify_signature("other", &h, body, 1_700_000_100, 300));
        assert!(!verify_signature("s3cret", &h, b"{}", 1_700_000_100, 300));
        assert!(!verify_signature("s3cret", &h, body, 1_700_001_000, 300));
        assert!(!verify_signature("s3cret", "v1=abc", body, 1_700_000_000, 300));
    }

    #[test]
    fn webhook_urls() {
        let cases = [
            ("https://hooks.example.com/ffrtmp", Ok(("hooks.example.com", 443))),
            ("http://127.0.0.1:8080/x?y", Ok(("127.0.0.1", 8080))),
            ("http://[::1]:9000/", Ok(("::1", 9000))),
            ("HTTP://Example.COM", Ok(("example.com", 80))),
        ];
        for (url, want) in cases {
            assert_eq!(webhook_destination(url), want.map(|(h, p): (&str, u16)| (h.to_string(), p)), "{url}");
        }
        for bad in ["ftp://x/", "http://u:p@x/", "http:///x", "http://*.x/", "notaurl", "http://x:99999/"] {
            assert!(webhook_destination(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_reader_reassembles_frames_split_anywhere() {
        let text = format!(
            "retry: 2000\n: connected\n\n{}: keep-alive\n\n{}",
            sse_frame(Some("4"), "job.completed", "{\"a\":1}"),
            sse_frame(None, "stream.dropped", "{}")
        );
        for split in [1, 3, 7, 1000] {
            let mut p = SseParser::default();
            let mut got = Vec::new();
            for chunk in text.as_bytes().chunks(split) {
                got.extend(p.feed(chunk));
            }
            assert_eq!(
                got,
                [
                    SseMessage { id: Some("4".into()), event: "job.completed".into(), data: "{\"a\":1}".into() },
                    SseMessage { id: None, event: "stream.dropped".into(), data: "{}".into() },
                ],
                "split {split}"
            );
        }
    }

    #[test]
    fn frames() {
        assert_eq!(sse_frame(Some("4"), "job.completed", "{}"), "id: 4\nevent: job.completed\ndata: {}\n\n");
        assert_eq!(sse_frame(None, "x", "1"), "event: x\ndata: 1\n\n");
    }
}
