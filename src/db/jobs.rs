//! Job rows, their guarded transitions and the `job_events` log.

use super::schema::{job_events, jobs, state_totals};
use super::{Conn, DbError, DbResult, now_micros};
use crate::domain::state::JobState;
use diesel::prelude::*;
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};
use std::collections::HashMap;

#[derive(Debug, Clone, Queryable, Selectable, PartialEq)]
#[diesel(table_name = jobs)]
pub struct JobRow {
    pub seq: i64,
    pub id: String,
    pub scenario: String,
    pub confidence: String,
    pub engine: String,
    pub queue: String,
    pub priority: String,
    pub parameters: String,
    pub status: String,
    pub progress: f64,
    pub node_id: Option<String>,
    pub attempt: i32,
    pub retry_count: i32,
    pub max_retries: i32,
    pub created_at: i64,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub last_activity_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub retry_at: Option<i64>,
    pub error: Option<String>,
    pub failure_reason: Option<String>,
    pub logs: Option<String>,
    pub metrics: Option<String>,
    pub qoe_score: Option<f64>,
    pub efficiency_score: Option<f64>,
    pub energy_joules: Option<f64>,
    pub vmaf_score: Option<f64>,
    pub idempotency_key: Option<String>,
    pub updated_at: i64,
    /// `retry_count` at the last operator retry (automatic retries count from it).
    pub retry_base: i32,
    /// SHA-256 of the submission its idempotency key first named.
    pub idempotency_fingerprint: Option<String>,
}

impl JobRow {
    /// Automatic retries used since the last operator retry.
    pub fn automatic_retries(&self) -> i32 {
        self.retry_count - self.retry_base
    }

    pub fn state(&self) -> JobState {
        JobState::parse(&self.status).unwrap_or(JobState::Failed)
    }

    /// The row `new` became when it was stored as `seq` (column defaults applied).
    fn inserted(seq: i64, new: &NewJob) -> JobRow {
        JobRow {
            seq,
            id: new.id.clone(),
            scenario: new.scenario.clone(),
            confidence: new.confidence.clone(),
            engine: new.engine.clone(),
            queue: new.queue.clone(),
            priority: new.priority.clone(),
            parameters: new.parameters.clone(),
            status: new.status.clone(),
            progress: 0.0,
            node_id: None,
            attempt: 0,
            retry_count: 0,
            max_retries: new.max_retries,
            created_at: new.created_at,
            queued_at: new.queued_at,
            started_at: None,
            last_activity_at: None,
            completed_at: new.completed_at,
            retry_at: None,
            error: new.error.clone(),
            failure_reason: new.failure_reason.clone(),
            logs: None,
            metrics: None,
            qoe_score: None,
            efficiency_score: None,
            energy_joules: None,
            vmaf_score: None,
            idempotency_key: new.idempotency_key.clone(),
            updated_at: new.updated_at,
            retry_base: 0,
            idempotency_fingerprint: new.idempotency_fingerprint.clone(),
        }
    }
}

// `None` binds NULL instead of dropping the column, so the INSERT's SQL never varies
// and diesel can reuse one prepared statement.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = jobs, treat_none_as_default_value = false)]
pub struct NewJob {
    pub id: String,
    pub scenario: String,
    pub confidence: String,
    pub engine: String,
    pub queue: String,
    pub priority: String,
    pub parameters: String,
    pub status: String,
    pub max_retries: i32,
    pub created_at: i64,
    pub queued_at: i64,
    pub idempotency_key: Option<String>,
    pub failure_reason: Option<String>,
    pub error: Option<String>,
    pub completed_at: Option<i64>,
    pub updated_at: i64,
    pub idempotency_fingerprint: Option<String>,
}

/// Columns a transition may change besides the status; `None` leaves a column alone.
#[derive(Debug, Clone, Default)]
pub struct JobChanges {
    pub status: Option<String>,
    pub progress: Option<f64>,
    pub node_id: Option<Option<String>>,
    pub attempt: Option<i32>,
    pub retry_count: Option<i32>,
    pub retry_base: Option<i32>,
    pub queued_at: Option<i64>,
    pub started_at: Option<Option<i64>>,
    pub last_activity_at: Option<Option<i64>>,
    pub completed_at: Option<Option<i64>>,
    pub retry_at: Option<Option<i64>>,
    pub error: Option<Option<String>>,
    pub failure_reason: Option<Option<String>>,
    pub logs: Option<Option<String>>,
    pub metrics: Option<Option<String>>,
    pub qoe_score: Option<Option<f64>>,
    pub efficiency_score: Option<Option<f64>>,
    pub energy_joules: Option<Option<f64>>,
    pub vmaf_score: Option<Option<f64>>,
    pub updated_at: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = job_events)]
pub struct EventRow {
    pub id: i64,
    pub job_id: String,
    pub from_state: Option<String>,
    pub to_state: String,
    pub reason: String,
    pub attempt: i32,
    pub node_id: Option<String>,
    pub at: i64,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = job_events, treat_none_as_default_value = false)]
pub struct NewEvent {
    pub job_id: String,
    pub from_state: Option<String>,
    pub to_state: String,
    pub reason: String,
    pub attempt: i32,
    pub node_id: Option<String>,
    pub at: i64,
}

/// Insert a job, or return the existing one with the same idempotency key
/// (`true` = newly created).
pub fn insert(conn: &mut Conn, new: &NewJob) -> DbResult<(JobRow, bool)> {
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
/// "Submitted" events in another; rows come back in the order given.
pub fn insert_many(conn: &mut Conn, new: &[NewJob]) -> DbResult<Vec<JobRow>> {
    // Only (id, seq) come back: decoding whole rows cost more than the insert.
    let seqs: HashMap<String, i64> = crate::on_backend!(conn, |c| diesel::insert_into(jobs::table)
        .values(new)
        .returning((jobs::id, jobs::seq))
        .get_results::<(String, i64)>(c))?
    .into_iter()
    .collect();
    let rows = new
        .iter()
        .map(|n| seqs.get(&n.id).map(|&seq| JobRow::inserted(seq, n)).ok_or(DbError::NotFound))
        .collect::<DbResult<Vec<JobRow>>>()?;
    let events: Vec<NewEvent> = rows
        .iter()
        .map(|row| NewEvent {
            job_id: row.id.clone(),
            from_state: None,
            to_state: row.status.clone(),
            reason: submitted_reason(&row.status).into(),
            attempt: 0,
            node_id: None,
            at: row.created_at,
        })
        .collect();
    crate::on_backend!(conn, |c| diesel::insert_into(job_events::table).values(&events).execute(c))?;
    Ok(rows)
}

fn submitted_reason(status: &str) -> &'static str {
    if status == "rejected" { "Rejected at submission" } else { "Submitted" }
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

/// Move a job from the state of `row` to `to`, applying `changes`, and log the
/// transition. `row` is the job as last stored (read in this transaction, or kept by the
/// job's actor, which is the only writer of a live job); if the stored job has moved on
/// since, nothing is written and the `Conflict` names its current state.
///
/// The row is changed in memory and written back whole with one fixed UPDATE, where a
/// changeset of optional columns made new SQL for every write. The `WHERE` repeats the
/// state and attempt of `row`, so a stale row (or a second master on the same
/// PostgreSQL database) is a `Conflict`, never an overwrite.
pub fn transition_row(
    conn: &mut Conn,
    mut row: JobRow,
    to: JobState,
    changes: JobChanges,
    reason: &str,
) -> DbResult<JobRow> {
    let (from, read_attempt) = (row.status.clone(), row.attempt);
    let now = now_micros();
    changes.apply_to(&mut row);
    row.status = to.as_str().to_string();
    row.updated_at = now;
    let update = WholeRowUpdate { row: &row, from: &from, attempt: read_attempt };
    let written = crate::on_backend!(conn, |c| update.execute(c))?;
    if written == 0 {
        let current = get(conn, &row.id)?;
        let message = format!("job is '{}', not '{}'", current.status, from);
        return Err(match JobState::parse(&current.status) {
            Some(state) => DbError::job_in(state, message),
            None => DbError::Conflict { current: None, message },
        });
    }
    let event = NewEvent {
        job_id: row.id.clone(),
        from_state: Some(from),
        to_state: row.status.clone(),
        // Reasons quote worker errors: bounded and single-line before they are stored.
        reason: crate::domain::limits::event_reason(reason),
        attempt: row.attempt,
        node_id: row.node_id.clone(),
        at: now,
    };
    crate::on_backend!(conn, |c| diesel::insert_into(job_events::table).values(&event).execute(c))?;
    Ok(row)
}

/// `UPDATE jobs SET <every mutable column> … WHERE id = ? AND status = ? AND attempt = ?`,
/// assembled as a diesel query fragment because diesel never caches its own UPDATE
/// statements (a changeset's columns may vary), and this is the master's most frequent
/// statement: with a fixed text and a static query id, it is prepared once per
/// connection instead of once per transition.
struct WholeRowUpdate<'a> {
    row: &'a JobRow,
    from: &'a str,
    attempt: i32,
}

impl<DB> diesel::query_builder::QueryFragment<DB> for WholeRowUpdate<'_>
where
    DB: diesel::backend::Backend
        + diesel::sql_types::HasSqlType<Text>
        + diesel::sql_types::HasSqlType<Double>
        + diesel::sql_types::HasSqlType<Integer>
        + diesel::sql_types::HasSqlType<BigInt>,
    String: ToSql<Text, DB>,
    str: ToSql<Text, DB>,
    f64: ToSql<Double, DB>,
    i32: ToSql<Integer, DB>,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let r = self.row;
        macro_rules! set {
            ($($sep:literal $column:ident: $st:ty),*) => {$(
                out.push_sql(concat!($sep, stringify!($column), " = "));
                out.push_bind_param::<$st, _>(&r.$column)?;
            )*};
        }
        set!(
            "UPDATE jobs SET " status: Text, ", " progress: Double, ", " node_id: Nullable<Text>, ", " attempt: Integer,
            ", " retry_count: Integer, ", " retry_base: Integer, ", " queued_at: BigInt, ", " started_at: Nullable<BigInt>,
            ", " last_activity_at: Nullable<BigInt>, ", " completed_at: Nullable<BigInt>, ", " retry_at: Nullable<BigInt>,
            ", " error: Nullable<Text>, ", " failure_reason: Nullable<Text>, ", " logs: Nullable<Text>,
            ", " metrics: Nullable<Text>, ", " qoe_score: Nullable<Double>, ", " efficiency_score: Nullable<Double>,
            ", " energy_joules: Nullable<Double>, ", " vmaf_score: Nullable<Double>, ", " updated_at: BigInt,
            " WHERE " id: Text
        );
        out.push_sql(" AND status = ");
        out.push_bind_param::<Text, _>(self.from)?;
        out.push_sql(" AND attempt = ");
        out.push_bind_param::<Integer, _>(&self.attempt)?;
        Ok(())
    }
}

impl diesel::query_builder::QueryId for WholeRowUpdate<'_> {
    type QueryId = WholeRowUpdate<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<C> RunQueryDsl<C> for WholeRowUpdate<'_> {}

impl JobChanges {
    /// Set on `row` every column this changeset names.
    pub fn apply_to(self, row: &mut JobRow) {
        macro_rules! set {
            ($($column:ident),*) => { $( if let Some(v) = self.$column { row.$column = v; } )* };
        }
        set!(
            status,
            progress,
            node_id,
            attempt,
            retry_count,
            retry_base,
            queued_at,
            started_at,
            last_activity_at,
            completed_at,
            retry_at,
            error,
            failure_reason,
            logs,
            metrics,
            qoe_score,
            efficiency_score,
            energy_joules,
            vmaf_score,
            updated_at
        );
    }
}

/// Progress and activity of a running attempt (no state change), guarded by the attempt.
pub fn record_activity(conn: &mut Conn, id: &str, attempt: i32, progress: f64, at: i64) -> DbResult<usize> {
    let now = now_micros();
    Ok(crate::on_backend!(conn, |c| diesel::update(
        jobs::table.filter(jobs::id.eq(id)).filter(jobs::attempt.eq(attempt))
    )
    .set((jobs::progress.eq(progress), jobs::last_activity_at.eq(at), jobs::updated_at.eq(now)))
    .execute(c))?)
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
    pub status: Option<String>,
    pub queue: Option<String>,
    pub priority: Option<String>,
    pub node_id: Option<String>,
    /// Only jobs with `seq` below this (the previous page's `next_cursor`).
    pub before_seq: Option<i64>,
    pub limit: i64,
}

pub fn list(conn: &mut Conn, f: &JobFilter) -> DbResult<Vec<JobRow>> {
    let mut q = jobs::table.select(JobRow::as_select()).into_boxed();
    if let Some(s) = &f.status {
        q = q.filter(jobs::status.eq(s.clone()));
    }
    if let Some(s) = &f.queue {
        q = q.filter(jobs::queue.eq(s.clone()));
    }
    if let Some(s) = &f.priority {
        q = q.filter(jobs::priority.eq(s.clone()));
    }
    if let Some(s) = &f.node_id {
        q = q.filter(jobs::node_id.eq(s.clone()));
    }
    if let Some(c) = f.before_seq {
        q = q.filter(jobs::seq.lt(c));
    }
    Ok(q.order(jobs::seq.desc()).limit(f.limit).load(conn)?)
}

/// Up to `limit` jobs that are not terminal with `seq` above `after`, oldest first, to
/// rebuild the actors at start-up in bounded chunks.
pub fn load_unfinished(conn: &mut Conn, after: i64, limit: i64) -> DbResult<Vec<JobRow>> {
    let terminal: Vec<&str> = JobState::ALL.iter().filter(|s| s.is_terminal()).map(|s| s.as_str()).collect();
    Ok(jobs::table
        .filter(jobs::status.ne_all(terminal))
        .filter(jobs::seq.gt(after))
        .order(jobs::seq.asc())
        .limit(limit)
        .select(JobRow::as_select())
        .load(conn)?)
}

/// Time of the first transition into `first` and of the last into `last` (bench: the
/// span of a dispatch run as the database recorded it).
pub fn event_span(conn: &mut Conn, first: JobState, last: JobState) -> DbResult<(Option<i64>, Option<i64>)> {
    use diesel::dsl::{max, min};
    let start = job_events::table
        .filter(job_events::to_state.eq(first.as_str()))
        .select(min(job_events::at))
        .get_result(conn)?;
    let end = job_events::table
        .filter(job_events::to_state.eq(last.as_str()))
        .select(max(job_events::at))
        .get_result(conn)?;
    Ok((start, end))
}

/// All-time number of transitions into each state (log + folded totals).
pub fn state_entry_totals(conn: &mut Conn) -> DbResult<Vec<(String, i64)>> {
    use diesel::dsl::count_star;
    let mut totals: std::collections::HashMap<String, i64> = job_events::table
        .group_by(job_events::to_state)
        .select((job_events::to_state, count_star()))
        .load::<(String, i64)>(conn)?
        .into_iter()
        .collect();
    for (state, n) in
        state_totals::table.select((state_totals::state, state_totals::total)).load::<(String, i64)>(conn)?
    {
        *totals.entry(state).or_default() += n;
    }
    Ok(totals.into_iter().collect())
}

/// Runnable jobs per (queue, priority).
pub fn runnable_counts(conn: &mut Conn) -> DbResult<Vec<(String, String, i64)>> {
    use diesel::dsl::count_star;
    Ok(jobs::table
        .filter(jobs::status.eq_any([JobState::Pending.as_str(), JobState::Queued.as_str()]))
        .group_by((jobs::queue, jobs::priority))
        .select((jobs::queue, jobs::priority, count_star()))
        .load(conn)?)
}

/// Current number of jobs in each state.
pub fn current_counts(conn: &mut Conn) -> DbResult<Vec<(String, i64)>> {
    use diesel::dsl::count_star;
    Ok(jobs::table.group_by(jobs::status).select((jobs::status, count_star())).load(conn)?)
}

/// Delete up to `batch` terminal jobs finished before `cutoff_micros`, folding their
/// event counts into `state_totals` first. Returns the deleted jobs' states.
pub fn delete_terminal_before(conn: &mut Conn, cutoff_micros: i64, batch: i64) -> DbResult<Vec<String>> {
    use diesel::dsl::count_star;
    let terminal: Vec<&str> = JobState::ALL.iter().filter(|s| s.is_terminal()).map(|s| s.as_str()).collect();
    let found: Vec<(String, String)> = jobs::table
        .filter(jobs::status.eq_any(terminal))
        .filter(jobs::completed_at.lt(cutoff_micros))
        .order(jobs::completed_at.asc())
        .limit(batch)
        .select((jobs::id, jobs::status))
        .load(conn)?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, states): (Vec<String>, Vec<String>) = found.into_iter().unzip();
    let folded: Vec<(String, i64)> = job_events::table
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
    Ok(states)
}

/// Map a conflict from `transition` into the state the job is really in, when known.
pub fn conflict_state(err: &DbError) -> Option<JobState> {
    match err {
        DbError::Conflict { current, .. } => *current,
        _ => None,
    }
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
            engine: self.engine.clone(),
            parameters: parse_obj(&self.parameters).unwrap_or_default(),
            status: self.status.clone(),
            queue: self.queue.clone(),
            priority: self.priority.clone(),
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
            failure_reason: self.failure_reason.clone(),
            logs: self.logs.clone(),
            qoe_score: self.qoe_score,
            efficiency_score: self.efficiency_score,
            energy_joules: self.energy_joules,
            vmaf_score: self.vmaf_score,
            metrics: self.metrics.as_deref().and_then(parse_obj),
            queue_reason: None,
            state_transitions: None,
            state_transitions_omitted: None,
        }
    }

    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::parse_str(&self.id).unwrap_or_default()
    }
}

impl EventRow {
    pub fn to_wire(&self) -> crate::wire::StateTransition {
        crate::wire::StateTransition {
            from: self.from_state.clone().unwrap_or_default(),
            to: self.to_state.clone(),
            timestamp: crate::wire::rfc3339(self.at),
            reason: self.reason.clone(),
        }
    }
}

/// Place a runnable job on a node: pending/queued → processing with a new attempt.
pub fn claim(conn: &mut Conn, id: &str, node_id: &str) -> DbResult<JobRow> {
    claim_many(conn, &[id.to_string()], node_id)?.pop().unwrap_or(Err(DbError::NotFound))
}

/// `claim` for a whole placement round: one SELECT, one UPDATE and one multi-row event
/// INSERT for any number of jobs, instead of three statements per job. Answers per id,
/// in order: the claimed row, `NotFound`, or `Conflict` when the job is not runnable
/// (or another master on the same database claimed it first).
pub fn claim_many(conn: &mut Conn, ids: &[String], node_id: &str) -> DbResult<Vec<DbResult<JobRow>>> {
    let runnable = [JobState::Pending.as_str(), JobState::Queued.as_str()];
    let before: HashMap<String, String> = crate::on_backend!(conn, |c| jobs::table
        .filter(jobs::id.eq_any(ids))
        .select((jobs::id, jobs::status))
        .load::<(String, String)>(c))?
    .into_iter()
    .collect();
    let candidates: Vec<&String> =
        ids.iter().filter(|id| before.get(*id).is_some_and(|s| runnable.contains(&s.as_str()))).collect();
    let now = now_micros();
    let mut claimed: HashMap<String, JobRow> = HashMap::new();
    if !candidates.is_empty() {
        // RETURNING the rows as updated: under PostgreSQL's READ COMMITTED another master
        // may have changed a job between the SELECT and this UPDATE. The state guard is
        // written as NOT IN: with `status IN (pending, queued)` SQLite preferred the
        // status index for more than a few ids and walked every queued job.
        let not_runnable: Vec<&str> = JobState::ALL.iter().filter(|s| !s.is_runnable()).map(|s| s.as_str()).collect();
        let rows: Vec<JobRow> = crate::on_backend!(conn, |c| diesel::update(
            jobs::table.filter(jobs::id.eq_any(&candidates)).filter(jobs::status.ne_all(&not_runnable))
        )
        .set((
            jobs::status.eq(JobState::Processing.as_str()),
            jobs::node_id.eq(node_id),
            jobs::attempt.eq(jobs::attempt + 1),
            jobs::started_at.eq(now),
            jobs::last_activity_at.eq(now),
            jobs::progress.eq(0.0),
            jobs::retry_at.eq(None::<i64>),
            jobs::updated_at.eq(now),
        ))
        .returning(JobRow::as_returning())
        .get_results(c))?;
        claimed.extend(rows.into_iter().map(|r| (r.id.clone(), r)));
    }
    let events: Vec<NewEvent> = ids
        .iter()
        .filter_map(|id| {
            let row = claimed.get(id)?;
            Some(NewEvent {
                job_id: id.clone(),
                from_state: before.get(id).cloned(),
                to_state: row.status.clone(),
                reason: format!("Assigned to node {node_id} (attempt {})", row.attempt),
                attempt: row.attempt,
                node_id: row.node_id.clone(),
                at: now,
            })
        })
        .collect();
    if !events.is_empty() {
        // Multi-row INSERT: only on the concrete connections in diesel.
        crate::on_backend!(conn, |c| diesel::insert_into(job_events::table).values(&events).execute(c))?;
    }
    Ok(ids
        .iter()
        .map(|id| match (claimed.remove(id), before.get(id)) {
            (Some(row), _) => Ok(row),
            (None, None) => Err(DbError::NotFound),
            (None, Some(status)) if runnable.contains(&status.as_str()) => {
                Err(DbError::job_in(JobState::Processing, "job is 'processing', not runnable (claimed elsewhere)"))
            }
            (None, Some(status)) => {
                let message = format!("job is '{status}', not runnable");
                Err(DbError::Conflict { current: JobState::parse(status), message })
            }
        })
        .collect())
}

/// Cancel a runnable job (pending/queued → canceled). Returns the state it left.
pub fn cancel_runnable(conn: &mut Conn, id: &str) -> DbResult<(JobState, JobRow)> {
    let row = get(conn, id)?;
    let from = row.state();
    if !from.is_runnable() {
        return Err(DbError::job_in(from, format!("job is '{from}', not '{}'", JobState::Queued)));
    }
    let changes = JobChanges { completed_at: Some(Some(now_micros())), ..Default::default() };
    Ok((from, transition_row(conn, row, JobState::Canceled, changes, "User requested cancel")?))
}

/// Columns an operator's retry resets: a fresh runnable job that remembers its retries.
pub fn operator_retry_changes(row: &JobRow) -> JobChanges {
    JobChanges {
        node_id: Some(None),
        retry_count: Some(row.retry_count + 1),
        // A fresh automatic budget: the operator has looked at the job.
        retry_base: Some(row.retry_count + 1),
        queued_at: Some(now_micros()),
        started_at: Some(None),
        completed_at: Some(None),
        error: Some(None),
        failure_reason: Some(None),
        progress: Some(0.0),
        ..Default::default()
    }
}

/// An operator's retry of a finished job: failed/canceled → queued.
pub fn retry_finished(conn: &mut Conn, id: &str) -> DbResult<(JobState, JobRow)> {
    let row = get(conn, id)?;
    let from = row.state();
    if !matches!(from, JobState::Failed | JobState::Canceled) {
        return Err(DbError::job_in(from, format!("job is '{from}', not '{}'", JobState::Failed)));
    }
    let changes = operator_retry_changes(&row);
    Ok((from, transition_row(conn, row, JobState::Queued, changes, "User requested retry")?))
}
