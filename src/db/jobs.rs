//! Job rows, their insertion and reads, and the `job_events` log (the guarded state
//! changes are in `db::transitions`).

use super::schema::{job_events, jobs, state_totals};
use super::{Conn, DbError, DbResult};
use crate::domain::params::Engine;
use crate::domain::queue::{Priority, QueueName};
use crate::domain::state::{FailureReason, JobState};
use diesel::prelude::*;
use std::collections::HashMap;

/// A job as stored: the one Rust list of the `jobs` columns. It is read (`Queryable`),
/// inserted whole (`Insertable`, `seq` assigned by the database) and written back by
/// every transition (`AsChangeset`), so a new column is added here, in `schema.rs` and
/// in `wire::Job` (plus `to_wire`), nowhere else. Columns fixed at submission are
/// `skip_update`: SQLite rewrites the index entries of every column an UPDATE sets, even
/// to the same value, and `id`, `queue`, `priority` and `idempotency_key` are indexed.
/// Columns only a placement or a result fills are `skip_insertion`: a new job takes the
/// database's defaults there (0 / NULL, as `Default` has them), and the submit path,
/// the writer's busiest, binds half as many values per row.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset, PartialEq)]
#[diesel(table_name = jobs, primary_key(seq), treat_none_as_default_value = false, treat_none_as_null = true)]
pub struct JobRow {
    #[diesel(skip_insertion)]
    pub seq: i64,
    #[diesel(skip_update)]
    pub id: String,
    #[diesel(skip_update)]
    pub scenario: String,
    #[diesel(skip_update)]
    pub confidence: String,
    #[diesel(skip_update)]
    pub engine: Engine,
    #[diesel(skip_update)]
    pub queue: QueueName,
    #[diesel(skip_update)]
    pub priority: Priority,
    #[diesel(skip_update)]
    pub parameters: String,
    pub status: JobState,
    #[diesel(skip_insertion)]
    pub progress: f64,
    #[diesel(skip_insertion)]
    pub node_id: Option<String>,
    #[diesel(skip_insertion)]
    pub attempt: i32,
    #[diesel(skip_insertion)]
    pub retry_count: i32,
    #[diesel(skip_update)]
    pub max_retries: i32,
    #[diesel(skip_update)]
    pub created_at: i64,
    pub queued_at: i64,
    #[diesel(skip_insertion)]
    pub started_at: Option<i64>,
    #[diesel(skip_insertion)]
    pub last_activity_at: Option<i64>,
    pub completed_at: Option<i64>,
    #[diesel(skip_insertion)]
    pub retry_at: Option<i64>,
    pub error: Option<String>,
    pub failure_reason: Option<FailureReason>,
    #[diesel(skip_insertion)]
    pub logs: Option<String>,
    #[diesel(skip_insertion)]
    pub metrics: Option<String>,
    #[diesel(skip_insertion)]
    pub qoe_score: Option<f64>,
    #[diesel(skip_insertion)]
    pub efficiency_score: Option<f64>,
    #[diesel(skip_insertion)]
    pub energy_joules: Option<f64>,
    #[diesel(skip_insertion)]
    pub vmaf_score: Option<f64>,
    #[diesel(skip_update)]
    pub idempotency_key: Option<String>,
    pub updated_at: i64,
    /// `retry_count` at the last operator retry (automatic retries count from it).
    #[diesel(skip_insertion)]
    pub retry_base: i32,
    /// SHA-256 of the submission its idempotency key first named.
    #[diesel(skip_update)]
    pub idempotency_fingerprint: Option<String>,
}

impl JobRow {
    /// Automatic retries used since the last operator retry.
    pub fn automatic_retries(&self) -> i32 {
        self.retry_count - self.retry_base
    }

    pub fn state(&self) -> JobState {
        self.status
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = job_events)]
pub struct EventRow {
    pub id: i64,
    pub job_id: String,
    pub from_state: Option<JobState>,
    pub to_state: JobState,
    pub reason: String,
    pub attempt: i32,
    pub node_id: Option<String>,
    pub at: i64,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = job_events, treat_none_as_default_value = false)]
pub struct NewEvent {
    pub job_id: String,
    pub from_state: Option<JobState>,
    pub to_state: JobState,
    pub reason: String,
    pub attempt: i32,
    pub node_id: Option<String>,
    pub at: i64,
}

/// Insert a job, or return the existing one with the same idempotency key
/// (`true` = newly created).
pub fn insert(conn: &mut Conn, new: &JobRow) -> DbResult<(JobRow, bool)> {
    if let Some(key) = &new.idempotency_key {
        let existing = jobs::table
            .filter(jobs::idempotency_key.eq(key))
            .select(JobRow::as_select())
            .get_result(conn)
            .optional()?;
        if let Some(row) = existing {
            return Ok((row, false));
        }
    }
    let row = insert_many(conn, std::slice::from_ref(new))?.pop().ok_or(DbError::NotFound)?;
    Ok((row, true))
}

/// Insert new jobs (idempotency keys, if any, already looked up) in one multi-row INSERT, and their
/// "Submitted" events in another; rows come back in the order given, with their `seq`.
pub fn insert_many(conn: &mut Conn, new: &[JobRow]) -> DbResult<Vec<JobRow>> {
    // Only (id, seq) come back: decoding whole rows cost more than the insert.
    let seqs: HashMap<String, i64> = crate::on_backend!(conn, |c| diesel::insert_into(jobs::table)
        .values(new)
        .returning((jobs::id, jobs::seq))
        .get_results::<(String, i64)>(c))?
    .into_iter()
    .collect();
    let rows = new
        .iter()
        .map(|n| seqs.get(&n.id).map(|&seq| JobRow { seq, ..n.clone() }).ok_or(DbError::NotFound))
        .collect::<DbResult<Vec<JobRow>>>()?;
    let events: Vec<NewEvent> = rows
        .iter()
        .map(|row| NewEvent {
            job_id: row.id.clone(),
            from_state: None,
            to_state: row.status,
            reason: submitted_reason(row.status).into(),
            attempt: 0,
            node_id: None,
            at: row.created_at,
        })
        .collect();
    let outbox: Vec<super::events::NewEvent> = rows
        .iter()
        .zip(&events)
        .map(|(row, e)| super::events::job_event(row, None, &e.reason, None, &[], row.created_at))
        .collect();
    super::events::log_and_append(conn, &events, &outbox)?;
    Ok(rows)
}

fn submitted_reason(status: JobState) -> &'static str {
    if status == JobState::Rejected { "Rejected at submission" } else { "Submitted" }
}

// Lookups by a unique key use no `LIMIT ?` (`.first()`): SQLite 3.53 plans around a
// bound LIMIT and re-prepares the statement every time it is bound again, which made
// every cached lookup a fresh compile.
pub fn get(conn: &mut Conn, id: &str) -> DbResult<JobRow> {
    Ok(crate::on_backend!(conn, |c| jobs::table.filter(jobs::id.eq(id)).select(JobRow::as_select()).get_result(c))?)
}

pub fn get_by_seq(conn: &mut Conn, seq: i64) -> DbResult<JobRow> {
    Ok(jobs::table.filter(jobs::seq.eq(seq)).select(JobRow::as_select()).get_result(conn)?)
}

/// The newest `limit` transitions of a job (oldest first) and how many there are.
pub fn recent_events(conn: &mut Conn, id: &str, limit: i64) -> DbResult<(Vec<EventRow>, i64)> {
    let total: i64 = job_events::table.filter(job_events::job_id.eq(id)).count().get_result(conn)?;
    let mut rows: Vec<EventRow> = job_events::table
        .filter(job_events::job_id.eq(id))
        .order(job_events::id.desc())
        .limit(limit)
        .select(EventRow::as_select())
        .load(conn)?;
    rows.reverse();
    Ok((rows, total))
}

pub fn events(conn: &mut Conn, id: &str) -> DbResult<Vec<EventRow>> {
    Ok(job_events::table
        .filter(job_events::job_id.eq(id))
        .order(job_events::id.asc())
        .select(EventRow::as_select())
        .load(conn)?)
}

/// Filters and keyset pagination for `GET /jobs` (newest first).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobState>,
    pub queue: Option<QueueName>,
    pub priority: Option<Priority>,
    pub node_id: Option<String>,
    /// Only the children of this graph.
    pub parent_id: Option<String>,
    /// Only jobs whose scenario contains this text (any case).
    pub scenario_contains: Option<String>,
    /// Only jobs with `seq` below this (the previous page's `next_cursor`).
    pub before_seq: Option<i64>,
    pub limit: i64,
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

/// `text` as a LIKE pattern matching itself anywhere (`%`, `_` and `\` escaped).
pub fn contains_pattern(text: &str) -> String {
    let mut p = String::from("%");
    for ch in text.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

pub fn list(conn: &mut Conn, f: &JobFilter) -> DbResult<Vec<JobRow>> {
    let mut q = jobs::table.select(JobRow::as_select()).into_boxed();
    if let Some(s) = f.status {
        q = q.filter(jobs::status.eq(s));
    }
    if let Some(s) = f.queue {
        q = q.filter(jobs::queue.eq(s));
    }
    if let Some(s) = f.priority {
        q = q.filter(jobs::priority.eq(s));
    }
    if let Some(s) = &f.node_id {
        q = q.filter(jobs::node_id.eq(s.clone()));
    }
    if let Some(p) = &f.parent_id {
        use super::schema::job_graph;
        q = q.filter(
            jobs::id.eq_any(job_graph::table.filter(job_graph::parent_id.eq(p.clone())).select(job_graph::job_id)),
        );
    }
    if let Some(t) = &f.scenario_contains {
        q = q.filter(lower(jobs::scenario).like(contains_pattern(t)).escape('\\'));
    }
    if let Some(c) = f.before_seq {
        q = q.filter(jobs::seq.lt(c));
    }
    Ok(q.order(jobs::seq.desc()).limit(f.limit).load(conn)?)
}

/// Up to `limit` jobs that are not terminal with `seq` above `after`, oldest first, to
/// rebuild the actors at start-up in bounded chunks.
pub fn load_unfinished(conn: &mut Conn, after: i64, limit: i64) -> DbResult<Vec<JobRow>> {
    let terminal: Vec<JobState> = JobState::ALL.iter().copied().filter(|s| s.is_terminal()).collect();
    Ok(jobs::table
        .filter(jobs::status.ne_all(terminal))
        .filter(jobs::seq.gt(after))
        .order(jobs::seq.asc())
        .limit(limit)
        .select(JobRow::as_select())
        .load(conn)?)
}

/// A dispatch run as the database recorded it (bench P2): from the moment every node
/// that placed jobs had placed its first (the latest of the nodes' first placements) to
/// the last completion, and the completions after that start. None before any.
pub fn dispatch_window(conn: &mut Conn) -> DbResult<Option<DispatchWindow>> {
    use diesel::dsl::{count_star, max, min};
    let firsts: Vec<Option<i64>> = job_events::table
        .filter(job_events::to_state.eq(JobState::Processing))
        .group_by(job_events::node_id)
        .select(min(job_events::at))
        .load(conn)?;
    let firsts: Vec<i64> = firsts.into_iter().flatten().collect();
    let (Some(&first), Some(&start)) = (firsts.iter().min(), firsts.iter().max()) else { return Ok(None) };
    let end: Option<i64> = job_events::table
        .filter(job_events::to_state.eq(JobState::Completed))
        .select(max(job_events::at))
        .get_result(conn)?;
    let Some(end) = end else { return Ok(None) };
    let completed: i64 = job_events::table
        .filter(job_events::to_state.eq(JobState::Completed))
        .filter(job_events::at.gt(start))
        .select(count_star())
        .get_result(conn)?;
    Ok(Some(DispatchWindow { first, start, end, completed: completed as u64 }))
}

/// See [`dispatch_window`]; times in µs since the epoch.
pub struct DispatchWindow {
    /// The earliest node's first placement.
    pub first: i64,
    pub start: i64,
    pub end: i64,
    pub completed: u64,
}

/// All-time number of transitions into each state (log + folded totals).
pub fn state_entry_totals(conn: &mut Conn) -> DbResult<Vec<(JobState, i64)>> {
    use diesel::dsl::count_star;
    let mut totals: HashMap<JobState, i64> = job_events::table
        .group_by(job_events::to_state)
        .select((job_events::to_state, count_star()))
        .load::<(JobState, i64)>(conn)?
        .into_iter()
        .collect();
    for (state, n) in
        state_totals::table.select((state_totals::state, state_totals::total)).load::<(JobState, i64)>(conn)?
    {
        *totals.entry(state).or_default() += n;
    }
    Ok(totals.into_iter().collect())
}

/// Runnable jobs per (queue, priority).
pub fn runnable_counts(conn: &mut Conn) -> DbResult<Vec<(QueueName, Priority, i64)>> {
    use diesel::dsl::count_star;
    Ok(jobs::table
        .filter(jobs::status.eq_any([JobState::Pending, JobState::Queued]))
        .group_by((jobs::queue, jobs::priority))
        .select((jobs::queue, jobs::priority, count_star()))
        .load(conn)?)
}

/// Current number of jobs in each state.
pub fn current_counts(conn: &mut Conn) -> DbResult<Vec<(JobState, i64)>> {
    use diesel::dsl::count_star;
    Ok(jobs::table.group_by(jobs::status).select((jobs::status, count_star())).load(conn)?)
}

/// Transitions into `completed` and `failed` logged since `since` (µs), per interval of
/// `bucket` µs aligned to multiples of it: (interval number = time / bucket, completed,
/// failed). Seeds the console's last-hour chart at start; read from the job log, whose
/// ids and times grow together, from the first id at or after `since` (found by a
/// binary search over ids), so it reads the last hour, not the table.
pub fn finished_since(conn: &mut Conn, since: i64, bucket: i64) -> DbResult<Vec<(i64, i64, i64)>> {
    use diesel::sql_types::{BigInt, Text};
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        slot: i64,
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let Some(first) = first_event_since(conn, since)? else {
        return Ok(Vec::new());
    };
    // All four numbers are ours (integers), so formatting them in is safe; the two
    // backends would want different placeholder syntax.
    let bucket = bucket.max(1);
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT at / {bucket} AS slot, to_state AS status, COUNT(*) AS n FROM job_events \
         WHERE id >= {first} AND at >= {since} AND to_state IN ('completed', 'failed') GROUP BY 1, 2"
    ))
    .load(conn)?;
    let mut out: Vec<(i64, i64, i64)> = Vec::new();
    for r in rows {
        let (ok, bad) = if r.status == "completed" { (r.n, 0) } else { (0, r.n) };
        match out.iter_mut().find(|o| o.0 == r.slot) {
            Some(o) => {
                o.1 += ok;
                o.2 += bad;
            }
            None => out.push((r.slot, ok, bad)),
        }
    }
    Ok(out)
}

/// The first `job_events` id logged at or after `since`, if any: the smallest `x` whose
/// first row at or after it was logged at or after `since` (the log has gaps where
/// retention removed jobs).
fn first_event_since(conn: &mut Conn, since: i64) -> DbResult<Option<i64>> {
    use diesel::dsl::{max, min};
    let (lo, hi): (Option<i64>, Option<i64>) =
        job_events::table.select((min(job_events::id), max(job_events::id))).get_result(conn)?;
    let (Some(mut lo), Some(hi)) = (lo, hi) else {
        return Ok(None);
    };
    let first_from = |conn: &mut Conn, x: i64| -> DbResult<Option<(i64, i64)>> {
        Ok(job_events::table
            .filter(job_events::id.ge(x))
            .order(job_events::id.asc())
            .select((job_events::id, job_events::at))
            .first(conn)
            .optional()?)
    };
    let mut end = hi + 1;
    while lo < end {
        let mid = lo + (end - lo) / 2;
        match first_from(conn, mid)? {
            Some((_, at)) if at < since => lo = mid + 1,
            _ => end = mid,
        }
    }
    Ok(first_from(conn, lo)?.map(|(id, _)| id))
}

/// Delete up to `batch` terminal jobs finished before `cutoff_micros`, folding their
/// event counts into `state_totals` first. Returns the deleted jobs' states.
pub fn delete_terminal_before(
    conn: &mut Conn,
    cutoff_micros: i64,
    batch: i64,
) -> DbResult<(Vec<JobState>, Vec<super::outputs::OutputRow>)> {
    use diesel::dsl::count_star;
    let terminal: Vec<JobState> = JobState::ALL.iter().copied().filter(|s| s.is_terminal()).collect();
    // Jobs are walked in submission order (the primary key) up to the first one
    // submitted at or after the cutoff: none submitted later can have finished before
    // it, so no index on `completed_at` is needed (every completion paid for one). The
    // old jobs still running, or finished after the cutoff, are read again by each pass;
    // they are few. (Submission times grow with `seq`, one writer; where a clock step
    // broke that, a job past the bound waits for a later pass — never one too young.)
    let bound: Option<i64> = jobs::table
        .filter(jobs::created_at.ge(cutoff_micros))
        .order(jobs::seq.asc())
        .select(jobs::seq)
        .first(conn)
        .optional()?;
    let found: Vec<(String, JobState)> = jobs::table
        .filter(jobs::seq.lt(bound.unwrap_or(i64::MAX)))
        .filter(jobs::status.eq_any(terminal))
        .filter(jobs::completed_at.lt(cutoff_micros))
        .order(jobs::seq.asc())
        .limit(batch)
        .select((jobs::id, jobs::status))
        .load(conn)?;
    if found.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let (ids, states): (Vec<String>, Vec<JobState>) = found.into_iter().unzip();
    // Their outputs go with them (the files once this commits).
    let outputs = super::outputs::forget(conn, &ids)?;
    super::graph::forget(conn, &ids)?;
    let folded: Vec<(JobState, i64)> = job_events::table
        .filter(job_events::job_id.eq_any(&ids))
        .group_by(job_events::to_state)
        .select((job_events::to_state, count_star()))
        .load(conn)?;
    for (state, n) in folded {
        let updated = diesel::update(state_totals::table.filter(state_totals::state.eq(&state)))
            .set(state_totals::total.eq(state_totals::total + n))
            .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(state_totals::table)
                .values((state_totals::state.eq(&state), state_totals::total.eq(n)))
                .execute(conn)?;
        }
    }
    diesel::delete(job_events::table.filter(job_events::job_id.eq_any(&ids))).execute(conn)?;
    diesel::delete(jobs::table.filter(jobs::id.eq_any(&ids))).execute(conn)?;
    Ok((states, outputs))
}

impl JobRow {
    /// The API view of this row (no transitions, no live overlay).
    pub fn to_wire(&self) -> crate::wire::Job {
        use crate::wire::rfc3339;
        let parse_obj = |s: &str| match serde_json::from_str::<serde_json::Value>(s) {
            Ok(serde_json::Value::Object(m)) => Some(m),
            _ => None,
        };
        crate::wire::Job {
            id: self.id.clone(),
            sequence_number: self.seq,
            scenario: self.scenario.clone(),
            confidence: self.confidence.clone(),
            engine: self.engine,
            parameters: parse_obj(&self.parameters).unwrap_or_default(),
            status: self.status,
            queue: self.queue,
            priority: self.priority,
            progress: self.progress.clamp(0.0, 100.0).floor() as i64,
            progress_detail: None,
            node_id: self.node_id.clone(),
            node_name: None,
            attempt: self.attempt,
            created_at: rfc3339(self.created_at),
            started_at: self.started_at.map(rfc3339),
            last_activity_at: self.last_activity_at.map(rfc3339),
            completed_at: self.completed_at.map(rfc3339),
            retry_at: self.retry_at.map(rfc3339),
            retry_count: self.retry_count,
            max_retries: self.max_retries,
            error: self.error.clone(),
            failure_reason: self.failure_reason,
            logs: self.logs.clone(),
            qoe_score: self.qoe_score,
            efficiency_score: self.efficiency_score,
            energy_joules: self.energy_joules,
            vmaf_score: self.vmaf_score,
            metrics: self.metrics.as_deref().and_then(parse_obj),
            queue_reason: None,
            state_transitions: None,
            state_transitions_omitted: None,
            attempts: None,
            ignored_parameters: None,
            input_info: None,
            outputs: None,
            parent_id: None,
            after: None,
            children: None,
        }
    }

    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::parse_str(&self.id).unwrap_or_default()
    }
}

/// Each placement of a job, read from its transitions (oldest first): a claim
/// (pending/queued → processing) opens one; the first move out of the lease (anything
/// but pause and resume), or a paused job losing its node, ends it with that state.
pub fn attempts_of(events: &[EventRow]) -> Vec<crate::wire::Attempt> {
    use crate::wire::{Attempt, rfc3339};
    let mut out: Vec<Attempt> = Vec::new();
    for e in events {
        let from = e.from_state;
        let claimed = e.to_state == JobState::Processing && from.is_none_or(JobState::is_runnable);
        if claimed {
            out.push(Attempt {
                attempt: e.attempt,
                node_id: e.node_id.clone(),
                started_at: rfc3339(e.at),
                ended_at: None,
                outcome: None,
                reason: None,
            });
            continue;
        }
        let leased_before = from.is_some_and(JobState::is_leased);
        let still_leased =
            matches!(e.to_state, JobState::Processing | JobState::Paused) && e.from_state != Some(e.to_state);
        if let Some(open) = out.last_mut().filter(|a| a.ended_at.is_none() && leased_before && !still_leased) {
            open.ended_at = Some(rfc3339(e.at));
            open.outcome = Some(e.to_state.as_str().to_string());
            open.reason = Some(e.reason.clone());
        }
    }
    out
}

impl EventRow {
    pub fn to_wire(&self) -> crate::wire::StateTransition {
        crate::wire::StateTransition {
            from: self.from_state.map(JobState::as_str).unwrap_or_default().to_string(),
            to: self.to_state.as_str().to_string(),
            timestamp: crate::wire::rfc3339(self.at),
            reason: self.reason.clone(),
        }
    }
}
