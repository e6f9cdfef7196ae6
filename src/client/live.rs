//! Live views for the CLI over the event stream: `jobs logs --follow` prints ffmpeg's
//! lines as they come (like `pueue follow`), `jobs status --follow` redraws on each
//! event instead of on a timer. Against a master without `/events` (older ones), both
//! fall back to polling.

use super::{CliError, OutputFormat, Settings, urlencode};
use crate::api_client::{EventSource, MasterClient};
use crate::domain::events::SseMessage;
use crate::wire::{Event, Job, JobLogs};
use std::time::Duration;

/// What wakes a follower: the job's events, or a timer when there is no stream.
pub struct Waker {
    stream: Option<EventSource>,
    query: String,
    last_id: Option<String>,
}

impl Waker {
    /// Subscribe to `job_id`'s events (and its children's); polling if the master has
    /// no event stream.
    pub async fn for_job(c: &MasterClient, job_id: &str) -> Waker {
        let query = format!("job_id={}", urlencode(job_id));
        let stream = open(c, &query, None).await;
        Waker { stream, query, last_id: None }
    }

    /// Subscribe to the events of `parent_id`'s children.
    pub async fn for_parent(c: &MasterClient, parent_id: &str) -> Waker {
        let query = format!("parent_id={}", urlencode(parent_id));
        let stream = open(c, &query, None).await;
        Waker { stream, query, last_id: None }
    }

    pub fn is_live(&self) -> bool {
        self.stream.is_some()
    }

    /// The next event (None: a timer tick, polling or after a reconnect).
    pub async fn next(&mut self, c: &MasterClient, poll: Duration) -> Option<Event> {
        let Some(stream) = self.stream.as_mut() else {
            tokio::time::sleep(poll).await;
            return None;
        };
        // Also wake now and then: a state the stream missed still shows.
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Err(_) => None,
            Ok(Some(Ok(SseMessage { id, event, data }))) => {
                if id.is_some() {
                    self.last_id = id;
                }
                if event.starts_with("stream.") {
                    return None;
                }
                serde_json::from_str(&data).ok()
            }
            // The stream ended (dropped, or the master restarted): resume after the
            // last event seen.
            Ok(_) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.stream = open(c, &self.query, self.last_id.as_deref()).await;
                None
            }
        }
    }
}

async fn open(c: &MasterClient, query: &str, last_id: Option<&str>) -> Option<EventSource> {
    match c.events(query, last_id).await {
        Ok(s) => Some(s),
        Err(e) => {
            log::debug!("no event stream ({e}); polling");
            None
        }
    }
}

const FINAL_EVENTS: [&str; 4] = ["job.completed", "job.failed", "job.canceled", "job.rejected"];

/// `jobs logs --follow`: the job's log lines as the encoder prints them, then the
/// stored log's end once the job is over.
pub async fn follow_logs(s: &Settings, c: &MasterClient, id: &str) -> Result<i32, CliError> {
    let path = format!("/jobs/{}", urlencode(id));
    let job: Job = c.get(&path).await?;
    let mut waker = Waker::for_job(c, &job.id).await;
    let mut printed_live = false;
    if waker.is_live() {
        // Subscribed first, then looked again: an end between the two is not missed.
        let job: Job = c.get(&path).await?;
        while !job.status.is_terminal() {
            let Some(ev) = waker.next(c, Duration::from_millis(300)).await else {
                let now: Job = c.get(&path).await?;
                if now.status.is_terminal() {
                    break;
                }
                continue;
            };
            if ev.kind == "job.log" {
                let lines = ev.data.get("lines").and_then(|l| l.as_array()).cloned().unwrap_or_default();
                for l in lines.iter().filter_map(|l| l.as_str()) {
                    match s.output {
                        OutputFormat::Json => println!("{}", serde_json::json!({ "job_id": ev.job_id, "line": l })),
                        OutputFormat::Table => println!("{l}"),
                    }
                    printed_live = true;
                }
            }
            if FINAL_EVENTS.contains(&ev.kind.as_str()) {
                break;
            }
        }
    } else {
        loop {
            let job: Job = c.get(&path).await?;
            if job.status.is_terminal() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let job: Job = c.get(&path).await?;
    if !printed_live {
        let logs: JobLogs = c.get(&format!("{path}/logs")).await?;
        match s.output {
            OutputFormat::Json => super::print_json(&logs),
            OutputFormat::Table => {
                println!("=== Logs for job {} ===", logs.job_id);
                println!("{}", logs.logs);
            }
        }
    } else if s.output == OutputFormat::Table {
        println!("=== job {} {} ===", job.id, job.status);
    }
    Ok(if job.status == crate::domain::state::JobState::Completed { 0 } else { super::EXIT_JOB_UNSUCCESSFUL })
}
