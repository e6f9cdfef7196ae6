//! `GET /events`: the live event stream (Server-Sent Events), resumable from the outbox.
//!
//! A subscriber first gets the stored events after its `Last-Event-ID` (read from the
//! outbox up to the bus's head when it subscribed), then everything the bus publishes
//! after that head: no gap and no repeat between the two. Keep-alive comments flow
//! while nothing happens; a subscriber that falls behind its buffer gets a final
//! `stream.dropped` event naming the id to resume from.

use super::AppState;
use crate::actors::events::Subscription;
use crate::actors::messages::Subscribe;
use crate::domain::events::{EventFilter, EventId, sse_frame};
use crate::error::{AppError, AppResult};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Only these jobs' events (comma-separated ids).
    pub job_id: Option<String>,
    /// Only events of these graphs' children.
    pub parent_id: Option<String>,
    /// Only these nodes' events.
    pub node_id: Option<String>,
    /// Only these event types or families (`job.completed,node.*`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Resume after this event id (as the `Last-Event-ID` header does).
    pub last_event_id: Option<String>,
}

fn list(s: &Option<String>) -> Vec<String> {
    s.as_deref()
        .map(|v| v.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
        .unwrap_or_default()
}

/// Rows read from the outbox per query while catching up.
const CATCH_UP_PAGE: i64 = 500;

struct Stream {
    state: web::Data<AppState>,
    filter: EventFilter,
    /// Stored events up to here were sent (or did not match).
    cursor: i64,
    head: i64,
    sub: Subscription,
    keepalive: tokio::time::Interval,
    queue: VecDeque<Bytes>,
    last_id: String,
    done: bool,
    last_write: std::time::Instant,
    /// This stream's cadence when busy: 50–100 ms, drawn per stream so that a thousand
    /// streams fed the same events do not all write in the same instant.
    write_every: Duration,
}

impl Stream {
    async fn next(mut self) -> Option<(Result<Bytes, actix_web::Error>, Stream)> {
        loop {
            if let Some(b) = self.queue.pop_front() {
                return Some((Ok(b), self));
            }
            if self.done {
                return None;
            }
            if self.cursor < self.head {
                let (f, after, upto) = (self.filter.clone(), self.cursor, self.head);
                let page =
                    self.state.h.db.read(move |c| crate::db::events::matching(c, &f, after, upto, CATCH_UP_PAGE)).await;
                match page {
                    Ok((rows, read_to)) => {
                        for r in rows {
                            self.last_id = EventId::stored(r.id).to_string();
                            self.queue.push_back(crate::actors::events::Published::stored(&r).frame);
                        }
                        self.cursor = read_to;
                    }
                    Err(e) => {
                        let data = serde_json::json!({ "reason": "storage", "message": e.to_string(), "resume_after": self.last_id });
                        self.queue.push_back(sse_frame(None, "stream.dropped", &data.to_string()).into());
                        self.done = true;
                    }
                }
                continue;
            }
            tokio::select! {
                ev = self.sub.events.recv() => match ev {
                    Some(e) => {
                        // A busy stream writes at most every `write_every`: it sleeps
                        // instead of waking for each event, then sends what gathered in
                        // one write. An idle stream's event goes out at once.
                        let since = self.last_write.elapsed();
                        if since < self.write_every {
                            tokio::time::sleep(self.write_every - since).await;
                        }
                        self.last_write = std::time::Instant::now();
                        let mut more = Vec::new();
                        while more.len() < 1024 {
                            match self.sub.events.try_recv() {
                                Ok(m) => more.push(m),
                                Err(_) => break,
                            }
                        }
                        if more.is_empty() {
                            self.last_id = e.id.to_string();
                            return Some((Ok(e.frame.clone()), self));
                        }
                        let mut chunk = Vec::with_capacity(e.frame.len() * (more.len() + 1));
                        chunk.extend_from_slice(&e.frame);
                        for m in &more {
                            chunk.extend_from_slice(&m.frame);
                        }
                        self.last_id = more.last().map(|m| m.id).unwrap_or(e.id).to_string();
                        return Some((Ok(Bytes::from(chunk)), self));
                    }
                    None => {
                        let reason = if self.sub.lagged.load(Ordering::Acquire) { "slow_consumer" } else { "shutdown" };
                        let data = serde_json::json!({
                            "reason": reason,
                            "message": "the stream ended; reconnect with Last-Event-ID to resume",
                            "resume_after": self.last_id,
                        });
                        self.queue.push_back(sse_frame(None, "stream.dropped", &data.to_string()).into());
                        self.done = true;
                    }
                },
                _ = self.keepalive.tick() => return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), self)),
            }
        }
    }
}

/// Server-Sent Events of jobs and nodes.
#[utoipa::path(get, path = "/events", params(EventsQuery), responses((status = 200, description = "text/event-stream")))]
pub async fn stream_events(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<EventsQuery>,
) -> AppResult<HttpResponse> {
    let q = q.into_inner();
    let filter = EventFilter::new(&list(&q.kind), &list(&q.job_id), &list(&q.parent_id), &list(&q.node_id))
        .map_err(|m| AppError::bad_request("invalid_filter", m))?;
    let resume =
        req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string).or(q.last_event_id);
    let resume = match resume.filter(|s| !s.trim().is_empty()) {
        Some(s) => Some(EventId::parse(&s).ok_or_else(|| {
            AppError::bad_request("invalid_event_id", format!("Last-Event-ID '{s}' is not an event id (N or N-k)"))
        })?),
        None => None,
    };
    let sub = state.h.events.send(Subscribe(filter.clone())).await??;
    let mut queue: VecDeque<Bytes> = VecDeque::new();
    queue.push_back(Bytes::from_static(b"retry: 2000\n: connected\n\n"));
    let cursor = match resume {
        None => sub.head,
        Some(id) => {
            let oldest = state.h.db.read(crate::db::events::oldest).await?;
            if let Some(oldest) = oldest.filter(|o| *o > id.stored + 1) {
                let data = serde_json::json!({ "requested_after": id.to_string(), "oldest_kept": oldest.to_string() });
                queue.push_back(sse_frame(None, "stream.gap", &data.to_string()).into());
            }
            id.stored.min(sub.head)
        }
    };
    let every = state.sse_keepalive;
    let st = Stream {
        filter,
        cursor,
        head: sub.head,
        last_id: EventId::stored(cursor).to_string(),
        sub,
        keepalive: tokio::time::interval_at(tokio::time::Instant::now() + every, every),
        queue,
        done: false,
        last_write: std::time::Instant::now() - Duration::from_millis(100),
        write_every: Duration::from_millis(50 + fastrand::u64(0..50)),
        state,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(futures_util::stream::unfold(st, Stream::next)))
}
