//! The worker's side of the batched protocol: its running jobs' progress in one
//! request per interval, and its results in as few requests as arrive together.
//!
//! Progress: each job's executor hands its latest report here (it keeps at most one
//! waiting) and awaits its own answer; every [`INTERVAL`] the reports that arrived go to
//! the master together (`POST /nodes/{id}/progress`), and each job gets its item's
//! answer — the control it should apply, or a refusal as the single route would have
//! given it. Pause and cancel travel on the control long-poll, not here, so their
//! latency does not depend on this interval.
//!
//! Results: up to [`RESULTS_IN_FLIGHT`] batches in flight (`POST /results/batch`), each
//! with at most its share of the worker's slots; the results that become ready meanwhile
//! go in the next, so a busy worker sends one request for many and an idle one waits
//! for nothing. Several smaller batches instead of one big one keep the master's writer
//! busy: it commits one while the others travel, where one batch of every result that
//! ended together made the writer wait for each round trip. Each delivery keeps its own
//! retries (`worker/delivery.rs`). A batch also asks for new work for the slots its
//! results free ([`SlotRefill`]); the master counts the slots of every batch whose
//! results have not committed yet as free for it.
//!
//! A master without the batch routes (404/405: an older one) gets single requests from
//! then on.

use crate::api_client::{ClientError, MasterClient};
use crate::wire::{
    ClaimNext, ItemAnswer, ItemOutcome, Job, JobProgress, JobResult, NodeProgress, ProgressReport, ProgressResponse,
    ResultBatch, ResultResponse,
};
use std::cell::{Cell, RefCell};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// ffmpeg's progress period (`-stats_period 0.5`): a report waits at most this long.
pub const INTERVAL: Duration = Duration::from_millis(500);

type Answer = oneshot::Sender<Result<ProgressResponse, ClientError>>;

#[derive(Default)]
pub struct ProgressBatcher {
    /// At most one report per job: a newer one replaces it (its log lines appended),
    /// and every caller waiting on it gets the answer.
    waiting: RefCell<Vec<(String, ProgressReport, Vec<Answer>)>>,
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
        // The report that carries the probed input goes at once, alone: it must reach
        // the master before the job's result (a short job may end within an interval),
        // and it comes once per job.
        if self.single.get() || report.input_info.is_some() {
            return client.progress(job_id, &report).await;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.waiting.borrow_mut();
            match waiting.iter_mut().find(|(id, ..)| id == job_id) {
                Some((_, older, answers)) => {
                    let mut lines = std::mem::take(&mut older.log_lines);
                    lines.extend(report.log_lines.iter().cloned());
                    *older = ProgressReport { log_lines: lines, ..report };
                    answers.push(tx);
                }
                None => waiting.push((job_id.to_string(), report, vec![tx])),
            }
        }
        self.arrived.notify_one();
        rx.await.unwrap_or_else(|_| Err(ClientError::Transport("the worker is stopping".into())))
    }

    /// Whether reports are coalesced here (a caller need not hold back newer ones).
    pub fn coalesces(&self) -> bool {
        !self.single.get()
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

    async fn flush(&self, client: &MasterClient, node_id: &str, batch: Vec<(String, ProgressReport, Vec<Answer>)>) {
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
                for (id, _, txs) in batch {
                    let answer = item(by_job.remove(&id), &id)
                        .map(|a| ProgressResponse { control: a.control.unwrap_or(crate::wire::ControlAction::Run) });
                    answer_all(txs, answer);
                }
            }
            Err(e) if lacks_route(&e) => {
                log::info!("the master has no batched progress route; reporting job by job");
                self.single.set(true);
                for (id, report, txs) in batch {
                    answer_all(txs, client.progress(&id, &report).await);
                }
            }
            Err(e) => {
                let why = e.to_string();
                for (_, _, txs) in batch {
                    answer_all(txs, Err(ClientError::Transport(why.clone())));
                }
            }
        }
    }
}

/// The same answer to every caller that waited on one job's report.
fn answer_all(txs: Vec<Answer>, answer: Result<ProgressResponse, ClientError>) {
    for tx in txs {
        let _ = tx.send(match &answer {
            Ok(r) => Ok(r.clone()),
            Err(ClientError::Status { status, code, message }) => {
                Err(ClientError::Status { status: *status, code: code.clone(), message: message.clone() })
            }
            Err(e) => Err(ClientError::Transport(e.to_string())),
        });
    }
}

/// An older master answers a route it does not have with 404 `route_not_found` or 405.
fn lacks_route(e: &ClientError) -> bool {
    matches!(e, ClientError::Status { status: 404, code, .. } if code == "route_not_found") || e.status() == Some(405)
}

/// An item's answer as the single route would have given it.
fn item(answer: Option<ItemAnswer>, job_id: &str) -> Result<ItemAnswer, ClientError> {
    match answer {
        Some(a) if a.outcome == ItemOutcome::Accepted => Ok(a),
        Some(a) => Err(ClientError::Status {
            status: a.status,
            code: a.error.unwrap_or_default(),
            message: a.message.unwrap_or_default(),
        }),
        None => Err(ClientError::Decode(format!("the master's batch answer has no item for job {job_id}"))),
    }
}

/// Results batches one worker keeps in flight. Four, each with a quarter of the slots:
/// with two halves a worker's slots waited a whole round trip (HTTP, the commit, the
/// placed jobs' answer) between batches and the writer sat idle meanwhile: four raised
/// P2 at 1k queued from 17.6k to 22.3k jobs/s (medians of six alternating runs), and
/// eight cost the master ~10 % more CPU per job at 100k for no more.
pub const RESULTS_IN_FLIGHT: usize = 4;

type ResultAnswer = oneshot::Sender<Result<ResultResponse, ClientError>>;

/// The slots a results batch frees on this worker, and where the jobs the master
/// places for them go: asking with the results saves the claim's own request and
/// commit — without it a slot waits for the results' answer, then for a claim.
pub trait SlotRefill {
    /// How many jobs the worker runs at once.
    fn slots(&self) -> u32;
    /// The new work to ask for with `results` (none while draining).
    fn claim_for(&self, results: &[JobResult]) -> Option<ClaimNext>;
    /// Run (or, draining, hand back) the jobs placed for that claim.
    fn placed(&self, jobs: Vec<Job>);
}

#[derive(Default)]
pub struct ResultBatcher {
    waiting: RefCell<Vec<(JobResult, ResultAnswer)>>,
    arrived: Notify,
    single: Cell<bool>,
}

impl ResultBatcher {
    /// Deliver `r` with the results ready at the same time; its own answer.
    pub async fn send(&self, client: &MasterClient, r: &JobResult) -> Result<ResultResponse, ClientError> {
        if self.single.get() {
            return client.result(r).await;
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().push((r.clone(), tx));
        self.arrived.notify_one();
        rx.await.unwrap_or_else(|_| Err(ClientError::Transport("the worker is stopping".into())))
    }

    /// Up to [`RESULTS_IN_FLIGHT`] batches in flight, each with everything that arrived
    /// before it was sent.
    pub async fn run(&self, client: MasterClient, refill: &impl SlotRefill) {
        use futures_util::StreamExt;
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        // Each request carries at most its share of the slots: results that end
        // together (a refill's jobs) go as several requests, so the master commits one
        // while the next is on its way instead of all of them waiting for one commit
        // and then all coming back at once.
        let share = (refill.slots() as usize).div_ceil(RESULTS_IN_FLIGHT).clamp(1, crate::wire::MAX_BATCH_ITEMS);
        loop {
            while in_flight.len() < RESULTS_IN_FLIGHT && !self.waiting.borrow().is_empty() {
                let take = self.waiting.borrow().len().min(share);
                let batch: Vec<_> = self.waiting.borrow_mut().drain(..take).collect();
                in_flight.push(self.flush(&client, batch, refill));
            }
            tokio::select! {
                _ = self.arrived.notified(), if in_flight.len() < RESULTS_IN_FLIGHT => {}
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            }
        }
    }

    async fn flush(&self, client: &MasterClient, batch: Vec<(JobResult, ResultAnswer)>, refill: &impl SlotRefill) {
        if self.single.get() {
            for (r, tx) in batch {
                let _ = tx.send(client.result(&r).await);
            }
            return;
        }
        let results: Vec<JobResult> = batch.iter().map(|(r, _)| r.clone()).collect();
        let claim = refill.claim_for(&results);
        let mut answered = client.results(&ResultBatch { results, claim }).await;
        if let Ok(answers) = &mut answered {
            // Started before the ended jobs give up their slots, so the claim poll never
            // counts those slots free as well.
            refill.placed(std::mem::take(&mut answers.jobs));
        }
        match answered {
            // Answers come in the order sent.
            Ok(answers) if answers.results.len() == batch.len() => {
                for ((r, tx), a) in batch.into_iter().zip(answers.results) {
                    let answer = item(Some(a), &r.job_id).and_then(|a| {
                        a.result.ok_or_else(|| ClientError::Decode("an accepted result without its answer".into()))
                    });
                    let _ = tx.send(answer);
                }
            }
            Ok(answers) => {
                let why = format!("{} answers to {} results", answers.results.len(), batch.len());
                for (_, tx) in batch {
                    let _ = tx.send(Err(ClientError::Decode(why.clone())));
                }
            }
            Err(e) if lacks_route(&e) => {
                log::info!("the master has no batched results route; reporting results one by one");
                self.single.set(true);
                for (r, tx) in batch {
                    let _ = tx.send(client.result(&r).await);
                }
            }
            Err(e) => {
                let why = e.to_string();
                for (_, tx) in batch {
                    let _ = tx.send(Err(ClientError::Transport(why.clone())));
                }
            }
        }
    }
}
