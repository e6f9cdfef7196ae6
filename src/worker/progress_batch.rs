//! One progress request per interval for all of this worker's running jobs.
//!
//! Each job's executor hands its latest report here (it keeps at most one waiting) and
//! awaits its own answer; every [`INTERVAL`] the reports that arrived go to the master
//! together (`POST /nodes/{id}/progress`), and each job gets its item's answer — the
//! control it should apply, or a refusal as the single route would have given it. A
//! master without the batch route (404/405: an older one) gets single reports from then
//! on. Pause and cancel travel on the control long-poll, not here, so their latency does
//! not depend on this interval.

use crate::api_client::{ClientError, MasterClient};
use crate::wire::{ItemOutcome, JobProgress, NodeProgress, ProgressReport, ProgressResponse};
use std::cell::{Cell, RefCell};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// ffmpeg's progress period (`-stats_period 0.5`): a report waits at most this long.
pub const INTERVAL: Duration = Duration::from_millis(500);

type Answer = oneshot::Sender<Result<ProgressResponse, ClientError>>;

#[derive(Default)]
pub struct ProgressBatcher {
    waiting: RefCell<Vec<(String, ProgressReport, Answer)>>,
    arrived: Notify,
    /// The master refused the batch route: single reports from then on.
    single: Cell<bool>,
}

impl ProgressBatcher {
    /// Report `job_id`'s progress with the node's next batch; its own answer.
    pub async fn send(
        &self,
        client: &MasterClient,
        job_id: &str,
        report: ProgressReport,
    ) -> Result<ProgressResponse, ClientError> {
        if self.single.get() {
            return client.progress(job_id, &report).await;
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().push((job_id.to_string(), report, tx));
        self.arrived.notify_one();
        rx.await.unwrap_or_else(|_| Err(ClientError::Transport("the worker is stopping".into())))
    }

    /// Send what arrived, once per interval, for as long as the worker runs.
    pub async fn run(&self, client: MasterClient, node_id: String) {
        loop {
            self.arrived.notified().await;
            // The other jobs' reports of this interval join the first one.
            tokio::time::sleep(INTERVAL).await;
            let batch = std::mem::take(&mut *self.waiting.borrow_mut());
            if !batch.is_empty() {
                self.flush(&client, &node_id, batch).await;
            }
        }
    }

    async fn flush(&self, client: &MasterClient, node_id: &str, batch: Vec<(String, ProgressReport, Answer)>) {
        let body = NodeProgress {
            reports: batch
                .iter()
                .map(|(id, r, _)| JobProgress {
                    job_id: id.clone(),
                    attempt: r.attempt,
                    detail: r.detail.clone(),
                    input_info: r.input_info.clone(),
                    log_lines: r.log_lines.clone(),
                })
                .collect(),
        };
        match client.node_progress(node_id, &body).await {
            Ok(answers) => {
                let mut by_job: std::collections::HashMap<String, crate::wire::ItemAnswer> =
                    answers.results.into_iter().map(|a| (a.job_id.clone(), a)).collect();
                for (id, _, tx) in batch {
                    let answer = match by_job.remove(&id) {
                        Some(a) if a.outcome == ItemOutcome::Accepted => {
                            Ok(ProgressResponse { control: a.control.unwrap_or(crate::wire::ControlAction::Run) })
                        }
                        Some(a) => Err(ClientError::Status {
                            status: a.status,
                            code: a.error.unwrap_or_default(),
                            message: a.message.unwrap_or_default(),
                        }),
                        None => Err(ClientError::Decode(format!("the master's batch answer has no item for job {id}"))),
                    };
                    let _ = tx.send(answer);
                }
            }
            Err(ClientError::Status { status: 404 | 405, code, .. }) if code != "node_not_found" => {
                log::info!("the master has no batched progress route; reporting job by job");
                self.single.set(true);
                for (id, report, tx) in batch {
                    let _ = tx.send(client.progress(&id, &report).await);
                }
            }
            Err(e) => {
                let why = e.to_string();
                for (_, _, tx) in batch {
                    let _ = tx.send(Err(ClientError::Transport(why.clone())));
                }
            }
        }
    }
}
