//! Job graphs as stored: one `job_graph` row per job that is a parent, a child or
//! waits for other jobs, and the writes that move a graph along (a parent's derived
//! state, dependants failed or revived). Every state change goes through
//! `transitions::transition_row`, so the one gate still decides.

use super::jobs::{self as db_jobs, JobRow};
use super::schema::{job_graph, jobs};
use super::transitions as db_transitions;
use super::{Conn, DbResult, now_micros};
use crate::domain::state::{FailureReason, JobState};
use diesel::prelude::*;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = job_graph)]
pub struct GraphRow {
    pub job_id: String,
    pub parent_id: Option<String>,
    /// JSON array of the ids this job waits for.
    pub after_ids: String,
    pub is_parent: bool,
    /// encode, probe, rendition, audio, thumbnails, package; `graph` for a parent.
    pub stage: String,
    pub label: String,
    /// Expected work, relative to its siblings (the parent's progress weights).
    pub weight: f64,
}

impl GraphRow {
    /// The row of a graph's parent.
    pub fn parent(job_id: &str, label: &str) -> GraphRow {
        GraphRow {
            job_id: job_id.into(),
            parent_id: None,
            after_ids: "[]".into(),
            is_parent: true,
            stage: "graph".into(),
            label: label.into(),
            weight: 0.0,
        }
    }

    pub fn after(&self) -> Vec<String> {
        serde_json::from_str(&self.after_ids).unwrap_or_default()
    }
}

/// Store graph rows of jobs inserted in this transaction after the outbox's head was
/// `events_since` (its [`super::events::head`] before their submissions were stored).
pub fn insert(conn: &mut Conn, events_since: i64, rows: &[GraphRow]) -> DbResult<()> {
    if !rows.is_empty() {
        crate::on_backend!(conn, |c| diesel::insert_into(job_graph::table).values(rows).execute(c))?;
    }
    // Their submission events were stored before these rows: name the parent on them.
    let mut by_parent: HashMap<&str, Vec<String>> = HashMap::new();
    for r in rows {
        if let Some(p) = &r.parent_id {
            by_parent.entry(p).or_default().push(r.job_id.clone());
        }
    }
    for (parent, ids) in by_parent {
        super::events::set_parent(conn, events_since, &ids, parent)?;
    }
    Ok(())
}

pub fn get(conn: &mut Conn, id: &str) -> DbResult<Option<GraphRow>> {
    Ok(job_graph::table.find(id).select(GraphRow::as_select()).first(conn).optional()?)
}

/// A parent's children with their jobs, in submission order.
pub fn children(conn: &mut Conn, parent: &str) -> DbResult<Vec<(GraphRow, JobRow)>> {
    Ok(job_graph::table
        .inner_join(jobs::table.on(jobs::id.eq(job_graph::job_id)))
        .filter(job_graph::parent_id.eq(parent))
        .order(jobs::seq.asc())
        .select((GraphRow::as_select(), JobRow::as_select()))
        .load(conn)?)
}

/// The states of `ids` (missing ids are absent).
pub fn states(conn: &mut Conn, ids: &[String]) -> DbResult<HashMap<String, JobState>> {
    Ok(jobs::table
        .filter(jobs::id.eq_any(ids))
        .select((jobs::id, jobs::status))
        .load::<(String, JobState)>(conn)?
        .into_iter()
        .collect())
}

/// Graph rows of unfinished jobs (start-up: parents to follow, jobs still waiting).
pub fn open_rows(conn: &mut Conn) -> DbResult<Vec<(GraphRow, JobState)>> {
    let terminal: Vec<JobState> = JobState::ALL.iter().copied().filter(|s| s.is_terminal()).collect();
    Ok(job_graph::table
        .inner_join(jobs::table.on(jobs::id.eq(job_graph::job_id)))
        .filter(jobs::status.ne_all(terminal))
        .select((GraphRow::as_select(), jobs::status))
        .load(conn)?)
}

pub fn forget(conn: &mut Conn, ids: &[String]) -> DbResult<()> {
    diesel::delete(job_graph::table.filter(job_graph::job_id.eq_any(ids))).execute(conn)?;
    Ok(())
}

/// Move a parent to its derived state `to` through legal steps; returns the moves made
/// (from, to) and the row as stored.
pub fn derive_parent(
    conn: &mut Conn,
    parent: &str,
    to: JobState,
    failure: Option<(FailureReason, String)>,
) -> DbResult<(Vec<(JobState, JobState)>, JobRow)> {
    let mut row = db_jobs::get(conn, parent)?;
    let failure = match failure {
        None if to == JobState::Failed => first_failure(conn, parent)?,
        f => f,
    };
    let mut moves = Vec::new();
    for step in crate::domain::graph::parent_path(row.status, to) {
        let from = row.status;
        let now = now_micros();
        let failure = failure.clone();
        row = db_transitions::transition_row(
            conn,
            &row,
            step,
            |r| {
                match step {
                    JobState::Processing if r.started_at.is_none() => r.started_at = Some(now),
                    JobState::Queued => {
                        r.completed_at = None;
                        r.error = None;
                        r.failure_reason = None;
                    }
                    _ => {}
                }
                if step.is_terminal() {
                    r.completed_at = Some(now);
                    r.progress = if step == JobState::Completed { 100.0 } else { r.progress };
                    if let Some((reason, error)) = failure.filter(|_| step == JobState::Failed) {
                        r.failure_reason = Some(reason);
                        r.error = Some(error);
                    }
                }
            },
            "derived from its children",
        )?;
        moves.push((from, step));
    }
    Ok((moves, row))
}

/// Fail jobs that wait for a job that failed (`dependency_failed`); those no longer
/// waiting (already failed, canceled, or running) are left alone.
pub fn fail_dependants(conn: &mut Conn, ids: &[String], because: &str) -> DbResult<Vec<(JobState, JobRow)>> {
    let mut out = Vec::new();
    for id in ids {
        let row = db_jobs::get(conn, id)?;
        if !row.status.is_runnable() {
            continue;
        }
        let from = row.status;
        let now = now_micros();
        let message = format!("a job it waits for {because}");
        let stored = db_transitions::transition_row(
            conn,
            &row,
            JobState::Failed,
            |r| {
                r.completed_at = Some(now);
                r.failure_reason = Some(FailureReason::DependencyFailed);
                r.error = Some(message.clone());
            },
            &message,
        )?;
        out.push((from, stored));
    }
    Ok(out)
}

/// Jobs that failed only because a dependency did, made to wait again (the dependency
/// was retried).
pub fn revive_dependants(conn: &mut Conn, ids: &[String]) -> DbResult<Vec<JobRow>> {
    let mut out = Vec::new();
    for id in ids {
        let row = db_jobs::get(conn, id)?;
        if row.status != JobState::Failed || row.failure_reason != Some(FailureReason::DependencyFailed) {
            continue;
        }
        let now = now_micros();
        out.push(db_transitions::transition_row(
            conn,
            &row,
            JobState::Queued,
            |r| {
                r.completed_at = None;
                r.error = None;
                r.failure_reason = None;
                r.queued_at = now;
            },
            "a job it waits for was retried",
        )?);
    }
    Ok(out)
}

/// A new child job of `parent`: its queue, priority, engine and retry budget, with
/// `params` of its own.
pub fn child_job(parent: &JobRow, id: uuid::Uuid, params: serde_json::Map<String, serde_json::Value>) -> JobRow {
    let now = now_micros();
    JobRow {
        id: id.to_string(),
        scenario: parent.scenario.clone(),
        confidence: parent.confidence.clone(),
        engine: parent.engine,
        queue: parent.queue,
        priority: parent.priority,
        parameters: serde_json::Value::Object(params).to_string(),
        status: JobState::Pending,
        max_retries: parent.max_retries,
        created_at: now,
        queued_at: now,
        updated_at: now,
        ..JobRow::default()
    }
}

/// The first child that failed on its own (not for a dependency), as the parent's
/// failure: (reason, "stage label: error").
pub fn first_failure(conn: &mut Conn, parent: &str) -> DbResult<Option<(FailureReason, String)>> {
    Ok(children(conn, parent)?
        .into_iter()
        .filter(|(_, j)| matches!(j.status, JobState::Failed | JobState::Rejected))
        .min_by_key(|(_, j)| j.failure_reason == Some(FailureReason::DependencyFailed))
        .map(|(g, j)| {
            (
                j.failure_reason.unwrap_or(FailureReason::RuntimeError),
                format!("{} {} failed: {}", g.stage, g.label, j.error.unwrap_or_default()),
            )
        }))
}

/// The jobs that wait for `id` (their `after` names it).
pub fn dependants_of(conn: &mut Conn, id: &str) -> DbResult<Vec<GraphRow>> {
    let rows: Vec<GraphRow> = job_graph::table
        .filter(job_graph::after_ids.like(format!("%{id}%")))
        .select(GraphRow::as_select())
        .load(conn)?;
    Ok(rows.into_iter().filter(|r| r.after().iter().any(|a| a == id)).collect())
}

/// Jobs that failed only because `id` (or, in turn, one of them) did, made to wait
/// again: `id` was retried. Returns each revived job with its graph row.
pub fn revive_chain(conn: &mut Conn, id: &str) -> DbResult<Vec<(JobRow, GraphRow)>> {
    let mut out = Vec::new();
    let mut todo = vec![id.to_string()];
    while let Some(next) = todo.pop() {
        for g in dependants_of(conn, &next)? {
            if let Some(row) = revive_dependants(conn, std::slice::from_ref(&g.job_id))?.pop() {
                todo.push(row.id.clone());
                out.push((row, g));
            }
        }
    }
    Ok(out)
}
