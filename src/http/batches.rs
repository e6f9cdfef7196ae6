//! Batched worker calls: `POST /nodes/{id}/progress` (a node's progress on all of its
//! running jobs) and `POST /results/batch` (many results). A batch is one message to
//! the scheduler (`FromNodeBatch`), which checks each item's node and forwards it to
//! its job's actor exactly as the single routes do; the transitions the results cause
//! meet in the same group commit (`db::transitions::transition_many`: multi-row statements).
//! Every item is answered on its own, in order: `accepted`, `stale` (the lease is gone),
//! `unknown` (no such job), `refused` (as sent; `error`/`message` say why) or
//! `unavailable` (not applied now: send it again). Only a malformed batch as a whole
//! (not JSON, too many items) is refused with a 4xx.

use super::AppState;
use super::auth::node_token;
use super::jobs::CLAIM_COMMIT_WAIT;
use super::jobs::{progress_message, result_message, settle_progress, settle_result};
use crate::actors::messages::{ClaimFreedSlots, FromNodeBatch};
use crate::error::{AppError, AppResult};
use crate::wire::{
    BatchAnswers, ItemAnswer, ItemOutcome, MAX_BATCH_ITEMS, MAX_JOBS_PER_POLL, NodeProgress, ResultBatch,
};
use actix_web::{HttpRequest, HttpResponse, web};
use std::collections::HashSet;
use uuid::Uuid;

fn check_size(n: usize) -> AppResult<()> {
    if n > MAX_BATCH_ITEMS {
        return Err(AppError::bad_request(
            "batch_too_large",
            format!("{n} items in one batch; at most {MAX_BATCH_ITEMS} (send several)"),
        ));
    }
    Ok(())
}

/// An item the single route would have answered with `e`.
fn failed(job_id: String, e: AppError) -> ItemAnswer {
    let outcome = match (e.status(), e.code()) {
        (409, "stale_attempt") => ItemOutcome::Stale,
        (404, _) => ItemOutcome::Unknown,
        (s, _) if s >= 500 || s == 429 => ItemOutcome::Unavailable,
        _ => ItemOutcome::Refused,
    };
    ItemAnswer {
        job_id,
        outcome,
        status: e.status(),
        control: None,
        result: None,
        error: Some(e.code().to_string()),
        message: Some(e.to_string()),
    }
}

fn accepted(job_id: String) -> ItemAnswer {
    ItemAnswer {
        job_id,
        outcome: ItemOutcome::Accepted,
        status: 200,
        control: None,
        result: None,
        error: None,
        message: None,
    }
}

#[utoipa::path(post, path = "/nodes/{id}/progress", params(("id" = String, Path)), request_body = NodeProgress,
    responses((status = 200, body = BatchAnswers), (status = 400, body = crate::wire::ErrorBody)))]
pub async fn node_progress(
    state: web::Data<AppState>,
    req: HttpRequest,
    node: web::Path<String>,
    body: web::Json<NodeProgress>,
) -> AppResult<HttpResponse> {
    let node = node.into_inner();
    let reports = body.into_inner().reports;
    check_size(reports.len())?;
    let token = node_token(&req);
    let mut answers: Vec<Option<ItemAnswer>> = vec![None; reports.len()];
    let (mut sent, mut messages) = (Vec::new(), Vec::new());
    for (i, r) in reports.into_iter().enumerate() {
        let id = r.job_id.clone();
        match progress_message(&id, node.clone(), r.attempt, r.detail, r.input_info, r.log_lines, token.clone()) {
            Ok(m) => {
                sent.push((i, id));
                messages.push(m);
            }
            Err(e) => answers[i] = Some(failed(id, e)),
        }
    }
    let replies = state.h.scheduler.send(FromNodeBatch(messages)).await?;
    let settled = sent.into_iter().zip(replies).map(|((i, id), reply)| {
        let (state, node) = (state.clone(), node.clone());
        async move {
            let control = match reply {
                Ok(answered) => settle_progress(&state, &id, &node, answered).await,
                Err(e) => Err(e),
            };
            let answer = match control {
                Ok(c) => ItemAnswer { control: Some(c), ..accepted(id) },
                Err(e) => failed(id, e),
            };
            (i, answer)
        }
    });
    for (i, a) in futures_util::future::join_all(settled).await {
        answers[i] = Some(a);
    }
    Ok(HttpResponse::Ok().json(BatchAnswers { results: answers.into_iter().flatten().collect(), jobs: Vec::new() }))
}

#[utoipa::path(post, path = "/results/batch", request_body = ResultBatch,
    responses((status = 200, body = BatchAnswers), (status = 400, body = crate::wire::ErrorBody)))]
pub async fn post_results(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<ResultBatch>,
) -> AppResult<HttpResponse> {
    let ResultBatch { results, claim } = body.into_inner();
    check_size(results.len())?;
    if let Some(c) = claim.as_ref().filter(|c| c.max > MAX_JOBS_PER_POLL || c.node_id.is_empty()) {
        return Err(AppError::bad_request(
            "invalid_claim",
            format!("claim needs a node_id and a max between 0 and {MAX_JOBS_PER_POLL} (got {})", c.max),
        ));
    }
    let token = node_token(&req);
    let mut answers: Vec<Option<ItemAnswer>> = vec![None; results.len()];
    let (mut sent, mut messages) = (Vec::new(), Vec::new());
    for (i, r) in results.into_iter().enumerate() {
        let id = r.job_id.clone();
        match result_message(r, token.clone()) {
            Ok(m) => {
                sent.push((i, m.msg.0.clone()));
                messages.push(m);
            }
            Err(e) => answers[i] = Some(failed(id, e)),
        }
    }
    let ending: HashSet<Uuid> = match &claim {
        Some(c) => messages.iter().filter(|m| m.node_id == c.node_id).map(|m| m.job).collect(),
        None => HashSet::new(),
    };
    // Both are queued now, results first: the claim does not wait for the results to
    // commit, so both are written by the same group commit (the claim's write names
    // the results' jobs, and the writer waits for those that reach it after it).
    let replies = state.h.scheduler.send(FromNodeBatch(messages));
    let placed = claim.filter(|c| c.max > 0).map(|c| {
        state.h.scheduler.send(ClaimFreedSlots { node_id: c.node_id, max: c.max, ending, token: token.clone() })
    });
    let replies = replies.await?;
    let settled = sent.into_iter().zip(replies).map(|((i, r), reply)| {
        let state = state.clone();
        async move {
            let id = r.job_id.clone();
            let result = match reply {
                Ok(answered) => settle_result(&state, r, answered).await,
                Err(e) => Err(e),
            };
            let answer = match result {
                Ok(res) => ItemAnswer { result: Some(res), ..accepted(id) },
                Err(e) => failed(id, e),
            };
            (i, answer)
        }
    });
    for (i, a) in futures_util::future::join_all(settled).await {
        answers[i] = Some(a);
    }
    let jobs = match placed {
        // Claims are answered after their COMMIT (bounded, in case the database stalls);
        // jobs whose answer is dropped are handed back by the scheduler.
        Some(placed) => match placed.await? {
            Ok(rx) => tokio::time::timeout(CLAIM_COMMIT_WAIT, rx).await.ok().and_then(Result::ok).unwrap_or_default(),
            // The results are answered all the same; the worker's own poll learns why.
            Err(e) => {
                log::debug!("claim with results refused: {e}");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    Ok(HttpResponse::Ok().json(BatchAnswers { results: answers.into_iter().flatten().collect(), jobs }))
}
