//! Job rows, their guarded transitions and the `job_events` log.

use super::schema::{job_events, jobs, state_totals};
use super::{Conn, DbError, DbResult, now_micros};
use crate::domain::params::Engine;
use crate::domain::queue::{Priority, QueueName};
use crate::domain::state::{self, FailureReason, JobState, UserAction};
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
    crate::on_backend!(conn, |c| diesel::insert_into(job_events::table).values(&events).execute(c))?;
    let outbox: Vec<super::events::NewEvent> = rows
        .iter()
        .zip(&events)
        .map(|(row, e)| super::events::job_event(row, None, &e.reason, None, &[], row.created_at))
        .collect();
    super::events::append(conn, &outbox)?;
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

/// Move a job from the state of `stored` to `to`, changing what `change` changes, and
/// log the transition. `stored` is the job as last stored (read in this transaction, or
/// kept by the job's actor, which is the only writer of a live job).
///
/// The move is first put to the one gate, [`JobState::check_transition`]; an illegal
/// move is a `Conflict` naming the current state and nothing is written. The row is then
/// written back whole with one statement whose text never varies (prepared once per
/// connection), and its `WHERE` repeats the state and attempt of `stored`: if the stored
/// job has moved on since (a stale row, or a second master on the same PostgreSQL
/// database), nothing is written and the `Conflict` names its current state.
pub fn transition_row(
    conn: &mut Conn,
    stored: &JobRow,
    to: JobState,
    change: impl FnOnce(&mut JobRow),
    reason: &str,
) -> DbResult<JobRow> {
    let from = stored.status;
    from.check_transition(to).map_err(|refused| DbError::job_in(from, refused.to_string()))?;
    write_row(conn, stored, to, change, reason)
}

/// One job's transition in a group commit (see [`transition_many`]).
pub struct Transition {
    pub stored: JobRow,
    pub to: JobState,
    pub change: Box<dyn FnOnce(&mut JobRow) + Send>,
    pub reason: String,
}

/// Several jobs' transitions, each gated and guarded exactly as by [`transition_row`]
/// and answered on its own (a refusal or a conflict leaves the others alone), but what
/// follows the UPDATEs costs one statement for all of them: their `job_events` rows,
/// their parents, the completed ones' outputs and their outbox rows. On PostgreSQL, where
/// every statement is a round trip, a batch of N results costs N + 4 of them, not 5 N.
/// An error that is not a refusal is returned whole (the batch is rolled back).
pub fn transition_many(conn: &mut Conn, batch: Vec<Transition>) -> DbResult<Vec<DbResult<JobRow>>> {
    let now = now_micros();
    let mut answers: Vec<DbResult<JobRow>> = Vec::with_capacity(batch.len());
    // (index in `answers`, from, attempt before, reason) of each row to write.
    let mut pending: Vec<(usize, JobState, i32, String)> = Vec::new();
    for t in batch {
        let from = t.stored.status;
        if let Err(refused) = from.check_transition(t.to) {
            answers.push(Err(DbError::job_in(from, refused.to_string())));
            continue;
        }
        let mut row = t.stored.clone();
        (t.change)(&mut row);
        row.status = t.to;
        row.updated_at = now;
        pending.push((answers.len(), from, t.stored.attempt, crate::domain::limits::event_reason(&t.reason)));
        answers.push(Ok(row));
    }
    // The guarded UPDATEs: one statement for all of them on PostgreSQL, one each
    // (prepared once, no round trip) on SQLite. A row whose state or attempt moved on
    // is not written, and its answer names the state it is in.
    let updated: std::collections::HashSet<String> = match conn {
        Conn::Postgresql(c) => {
            let rows: Vec<(&JobRow, JobState, i32)> = pending
                .iter()
                .map(|(i, from, attempt, _)| (answers[*i].as_ref().expect("a row to write"), *from, *attempt))
                .collect();
            update_rows_pg(c, &rows)?
        }
        Conn::Sqlite(c) => {
            let mut done = std::collections::HashSet::new();
            for (i, from, attempt, _) in &pending {
                let row = answers[*i].as_ref().expect("a row to write");
                let update = Cacheable::<_, WholeRowUpdate>::new(
                    diesel::update(
                        jobs::table
                            .filter(jobs::id.eq(&row.id))
                            .filter(jobs::status.eq(*from))
                            .filter(jobs::attempt.eq(*attempt)),
                    )
                    .set(row),
                );
                if update.execute(c)? == 1 {
                    done.insert(row.id.clone());
                }
            }
            done
        }
    };
    let mut written = Vec::with_capacity(pending.len());
    for (i, from, _, reason) in pending {
        let id = answers[i].as_ref().expect("a row to write").id.clone();
        if updated.contains(&id) {
            written.push((i, from, reason));
        } else {
            let current = get(conn, &id)?;
            answers[i] = Err(DbError::job_in(current.status, format!("job is '{}', not '{from}'", current.status)));
        }
    }
    if written.is_empty() {
        return Ok(answers);
    }
    let row_at = |i: usize| answers[i].as_ref().expect("a written row");
    let events: Vec<NewEvent> = written
        .iter()
        .map(|(i, from, reason)| {
            let row = row_at(*i);
            NewEvent {
                job_id: row.id.clone(),
                from_state: Some(*from),
                to_state: row.status,
                reason: reason.clone(),
                attempt: row.attempt,
                node_id: row.node_id.clone(),
                at: now,
            }
        })
        .collect();
    crate::on_backend!(conn, |c| diesel::insert_into(job_events::table).values(&events).execute(c))?;
    let ids: Vec<String> = written.iter().map(|(i, ..)| row_at(*i).id.clone()).collect();
    let parents = super::events::parents_of(conn, &ids)?;
    let completed: Vec<String> = written
        .iter()
        .map(|(i, ..)| row_at(*i))
        .filter(|r| r.status == JobState::Completed)
        .map(|r| r.id.clone())
        .collect();
    let mut outputs = super::outputs::list_many(conn, &completed)?;
    let outbox: Vec<super::events::NewEvent> = written
        .iter()
        .map(|(i, from, reason)| {
            let row = row_at(*i);
            let mine: Vec<super::outputs::OutputRow> = match row.status {
                JobState::Completed => outputs
                    .remove(&row.id)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| o.attempt == row.attempt)
                    .collect(),
                _ => Vec::new(),
            };
            super::events::job_event(row, Some(*from), reason, parents.get(&row.id).cloned(), &mine, now)
        })
        .collect();
    super::events::append(conn, &outbox)?;
    Ok(answers)
}

/// See `update_rows_pg`; its `SET` list is the whole-row changeset's columns (tested).
pub(crate) const UPDATE_ROWS_PG: &str = "UPDATE jobs AS j SET status = v.status, progress = v.progress, node_id = v.node_id, \
         attempt = v.attempt, retry_count = v.retry_count, queued_at = v.queued_at, started_at = v.started_at, \
         last_activity_at = v.last_activity_at, completed_at = v.completed_at, retry_at = v.retry_at, \
         error = v.error, failure_reason = v.failure_reason, logs = v.logs, metrics = v.metrics, \
         qoe_score = v.qoe_score, efficiency_score = v.efficiency_score, energy_joules = v.energy_joules, \
         vmaf_score = v.vmaf_score, updated_at = v.updated_at, retry_base = v.retry_base \
         FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::float8[], $6::text[], $7::int[], \
           $8::int[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::text[], \
           $15::text[], $16::text[], $17::text[], $18::float8[], $19::float8[], $20::float8[], $21::float8[], \
           $22::bigint[], $23::int[]) \
           AS v(id, from_status, from_attempt, status, progress, node_id, attempt, retry_count, queued_at, \
           started_at, last_activity_at, completed_at, retry_at, error, failure_reason, logs, metrics, qoe_score, \
           efficiency_score, energy_joules, vmaf_score, updated_at, retry_base) \
         WHERE j.id = v.id AND j.status = v.from_status AND j.attempt = v.from_attempt \
         RETURNING j.id";

/// The whole-row UPDATE of `transition_many` for many rows in one PostgreSQL statement:
/// the new values travel as one array per column (`unnest`), each row guarded by the
/// state and attempt it was read in. Returns the ids written.
fn update_rows_pg(
    c: &mut diesel::PgConnection,
    rows: &[(&JobRow, JobState, i32)],
) -> QueryResult<std::collections::HashSet<String>> {
    use diesel::sql_types::{Array, BigInt, Double, Integer, Nullable, Text};
    if rows.is_empty() {
        return Ok(Default::default());
    }
    #[derive(QueryableByName)]
    struct Written {
        #[diesel(sql_type = Text)]
        id: String,
    }
    macro_rules! column {
        ($f:expr) => {
            rows.iter().map($f).collect::<Vec<_>>()
        };
    }
    let written: Vec<Written> = diesel::sql_query(UPDATE_ROWS_PG)
        .bind::<Array<Text>, _>(column!(|(r, ..)| r.id.clone()))
        .bind::<Array<Text>, _>(column!(|(_, from, _)| from.as_str()))
        .bind::<Array<Integer>, _>(column!(|(_, _, attempt)| *attempt))
        .bind::<Array<Text>, _>(column!(|(r, ..)| r.status.as_str()))
        .bind::<Array<Double>, _>(column!(|(r, ..)| r.progress))
        .bind::<Array<Nullable<Text>>, _>(column!(|(r, ..)| r.node_id.clone()))
        .bind::<Array<Integer>, _>(column!(|(r, ..)| r.attempt))
        .bind::<Array<Integer>, _>(column!(|(r, ..)| r.retry_count))
        .bind::<Array<BigInt>, _>(column!(|(r, ..)| r.queued_at))
        .bind::<Array<Nullable<BigInt>>, _>(column!(|(r, ..)| r.started_at))
        .bind::<Array<Nullable<BigInt>>, _>(column!(|(r, ..)| r.last_activity_at))
        .bind::<Array<Nullable<BigInt>>, _>(column!(|(r, ..)| r.completed_at))
        .bind::<Array<Nullable<BigInt>>, _>(column!(|(r, ..)| r.retry_at))
        .bind::<Array<Nullable<Text>>, _>(column!(|(r, ..)| r.error.clone()))
        .bind::<Array<Nullable<Text>>, _>(column!(|(r, ..)| r.failure_reason.map(|f| f.as_str())))
        .bind::<Array<Nullable<Text>>, _>(column!(|(r, ..)| r.logs.clone()))
        .bind::<Array<Nullable<Text>>, _>(column!(|(r, ..)| r.metrics.clone()))
        .bind::<Array<Nullable<Double>>, _>(column!(|(r, ..)| r.qoe_score))
        .bind::<Array<Nullable<Double>>, _>(column!(|(r, ..)| r.efficiency_score))
        .bind::<Array<Nullable<Double>>, _>(column!(|(r, ..)| r.energy_joules))
        .bind::<Array<Nullable<Double>>, _>(column!(|(r, ..)| r.vmaf_score))
        .bind::<Array<BigInt>, _>(column!(|(r, ..)| r.updated_at))
        .bind::<Array<Integer>, _>(column!(|(r, ..)| r.retry_base))
        .load(c)?;
    Ok(written.into_iter().map(|w| w.id).collect())
}

/// A paused job whose node was lost: it leaves the node and stays paused (logged as a
/// paused → paused event), so it is not run again until an operator resumes it.
pub fn leave_node_paused(conn: &mut Conn, stored: &JobRow, reason: &str) -> DbResult<JobRow> {
    if stored.status != JobState::Paused {
        return Err(DbError::job_in(stored.status, format!("job is '{}', not 'paused'", stored.status)));
    }
    write_row(conn, stored, JobState::Paused, |r| r.node_id = None, reason)
}

/// The guarded whole-row write and its event (see `transition_row`).
fn write_row(
    conn: &mut Conn,
    stored: &JobRow,
    to: JobState,
    change: impl FnOnce(&mut JobRow),
    reason: &str,
) -> DbResult<JobRow> {
    let from = stored.status;
    let now = now_micros();
    let mut row = stored.clone();
    change(&mut row);
    row.status = to;
    row.updated_at = now;
    let update = Cacheable::<_, WholeRowUpdate>::new(
        diesel::update(
            jobs::table
                .filter(jobs::id.eq(&row.id))
                .filter(jobs::status.eq(from))
                .filter(jobs::attempt.eq(stored.attempt)),
        )
        .set(&row),
    );
    let written = crate::on_backend!(conn, |c| update.execute(c))?;
    if written == 0 {
        let current = get(conn, &row.id)?;
        return Err(DbError::job_in(current.status, format!("job is '{}', not '{from}'", current.status)));
    }
    let event = NewEvent {
        job_id: row.id.clone(),
        from_state: Some(from),
        to_state: row.status,
        // Reasons quote worker errors: bounded and single-line before they are stored.
        reason: crate::domain::limits::event_reason(reason),
        attempt: row.attempt,
        node_id: row.node_id.clone(),
        at: now,
    };
    crate::on_backend!(conn, |c| diesel::insert_into(job_events::table).values(&event).execute(c))?;
    // The integration event, in this same transaction (the outbox).
    let parent = super::events::parent_of(conn, &row.id)?;
    let outputs = match row.status {
        JobState::Completed => {
            super::outputs::list(conn, &row.id)?.into_iter().filter(|o| o.attempt == row.attempt).collect()
        }
        _ => Vec::new(),
    };
    super::events::append(conn, &[super::events::job_event(&row, Some(from), &event.reason, parent, &outputs, now)])?;
    Ok(row)
}

/// Query id of the whole-row UPDATE of `transition_row`.
struct WholeRowUpdate;

/// A statement whose SQL text depends only on its type, marked so: diesel caches no
/// UPDATE on its own (a changeset's columns may vary), but a whole-row changeset with
/// NULLs bound as values always renders the same text, and this is the master's most
/// frequent statement, so it is prepared once per connection instead of once per write.
struct Cacheable<Q, Id> {
    query: Q,
    id: std::marker::PhantomData<Id>,
}

impl<Q, Id> Cacheable<Q, Id> {
    fn new(query: Q) -> Self {
        Cacheable { query, id: std::marker::PhantomData }
    }
}

impl<Q: diesel::query_builder::QueryFragment<DB>, Id, DB: diesel::backend::Backend>
    diesel::query_builder::QueryFragment<DB> for Cacheable<Q, Id>
{
    fn walk_ast<'b>(&'b self, pass: diesel::query_builder::AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.query.walk_ast(pass)
    }
}

impl<Q, Id: 'static> diesel::query_builder::QueryId for Cacheable<Q, Id> {
    type QueryId = Id;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Q, Id, C> RunQueryDsl<C> for Cacheable<Q, Id> {}

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

/// Time of the first transition into `first` and of the last into `last` (bench: the
/// span of a dispatch run as the database recorded it).
pub fn event_span(conn: &mut Conn, first: JobState, last: JobState) -> DbResult<(Option<i64>, Option<i64>)> {
    use diesel::dsl::{max, min};
    let start =
        job_events::table.filter(job_events::to_state.eq(first)).select(min(job_events::at)).get_result(conn)?;
    let end = job_events::table.filter(job_events::to_state.eq(last)).select(max(job_events::at)).get_result(conn)?;
    Ok((start, end))
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

/// Jobs that completed or failed since `since` (micros), per `bucket`-long interval:
/// (interval index from `since`, completed, failed). What the console charts.
pub fn finished_per_interval(conn: &mut Conn, since: i64, bucket: i64) -> DbResult<Vec<(i64, i64, i64)>> {
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
    // Both numbers are ours (integers), so formatting them in is safe; the two
    // backends would want different placeholder syntax.
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT (completed_at - {since}) / {bucket} AS slot, status, COUNT(*) AS n FROM jobs \
         WHERE completed_at >= {since} AND status IN ('completed', 'failed') GROUP BY 1, 2"
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

/// Delete up to `batch` terminal jobs finished before `cutoff_micros`, folding their
/// event counts into `state_totals` first. Returns the deleted jobs' states.
pub fn delete_terminal_before(
    conn: &mut Conn,
    cutoff_micros: i64,
    batch: i64,
) -> DbResult<(Vec<JobState>, Vec<super::outputs::OutputRow>)> {
    use diesel::dsl::count_star;
    let terminal: Vec<JobState> = JobState::ALL.iter().copied().filter(|s| s.is_terminal()).collect();
    let found: Vec<(String, JobState)> = jobs::table
        .filter(jobs::status.eq_any(terminal))
        .filter(jobs::completed_at.lt(cutoff_micros))
        .order(jobs::completed_at.asc())
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

/// Place a runnable job on a node: pending/queued → processing with a new attempt.
pub fn claim(conn: &mut Conn, id: &str, node_id: &str) -> DbResult<JobRow> {
    claim_many(conn, &[id.to_string()], node_id)?.pop().unwrap_or(Err(DbError::NotFound))
}

/// `claim` for a whole placement round: one SELECT, one UPDATE and one multi-row event
/// INSERT for any number of jobs, instead of three statements per job. Answers per id,
/// in order: the claimed row, `NotFound`, or `Conflict` when the job is not runnable
/// (or another master on the same database claimed it first).
pub fn claim_many(conn: &mut Conn, ids: &[String], node_id: &str) -> DbResult<Vec<DbResult<JobRow>>> {
    let before: HashMap<String, JobState> = crate::on_backend!(conn, |c| jobs::table
        .filter(jobs::id.eq_any(ids))
        .select((jobs::id, jobs::status))
        .load::<(String, JobState)>(c))?
    .into_iter()
    .collect();
    let candidates: Vec<&String> = ids.iter().filter(|id| before.get(*id).is_some_and(|s| s.is_runnable())).collect();
    let now = now_micros();
    let mut claimed: HashMap<String, JobRow> = HashMap::new();
    if !candidates.is_empty() {
        // RETURNING the rows as updated: under PostgreSQL's READ COMMITTED another master
        // may have changed a job between the SELECT and this UPDATE. The state guard is
        // written as NOT IN: with `status IN (pending, queued)` SQLite preferred the
        // status index for more than a few ids and walked every queued job.
        let not_runnable: Vec<JobState> = JobState::ALL.iter().copied().filter(|s| !s.is_runnable()).collect();
        let rows: Vec<JobRow> = crate::on_backend!(conn, |c| diesel::update(
            jobs::table.filter(jobs::id.eq_any(&candidates)).filter(jobs::status.ne_all(&not_runnable))
        )
        .set((
            jobs::status.eq(JobState::Processing),
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
                from_state: before.get(id).copied(),
                to_state: row.status,
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
        let parents = super::events::parents_of(conn, &events.iter().map(|e| e.job_id.clone()).collect::<Vec<_>>())?;
        let outbox: Vec<super::events::NewEvent> = events
            .iter()
            .filter_map(|e| {
                let row = claimed.get(&e.job_id)?;
                Some(super::events::job_event(row, e.from_state, &e.reason, parents.get(&e.job_id).cloned(), &[], now))
            })
            .collect();
        super::events::append(conn, &outbox)?;
    }
    Ok(ids
        .iter()
        .map(|id| match (claimed.remove(id), before.get(id)) {
            (Some(row), _) => Ok(row),
            (None, None) => Err(DbError::NotFound),
            (None, Some(status)) if status.is_runnable() => {
                Err(DbError::job_in(JobState::Processing, "job is 'processing', not runnable (claimed elsewhere)"))
            }
            (None, Some(&status)) => Err(DbError::job_in(status, format!("job is '{status}', not runnable"))),
        })
        .collect())
}

/// An operator's control of a job that no actor holds (runnable in the index, or
/// finished): read it, put the action to the one gate, and apply it. Returns the state
/// it left and the row as stored.
///
/// `held_here` says which states the caller expects the job in (runnable for a job in
/// the scheduler's index, terminal for one only in the database); a job found in another
/// state is held elsewhere (a claim by another master, an actor not yet adopted) and is
/// a `Conflict`, never changed behind its holder's back.
pub fn control_stored(
    conn: &mut Conn,
    id: &str,
    action: UserAction,
    held_here: fn(JobState) -> bool,
) -> DbResult<(JobState, JobRow)> {
    let row = get(conn, id)?;
    let from = row.state();
    let to = state::control(from, row.node_id.is_some(), action).map_err(DbError::Refused)?;
    if !held_here(from) {
        return Err(DbError::job_in(from, format!("job is '{from}' and held elsewhere; try again")));
    }
    let stored = transition_row(conn, &row, to, |r| apply_control(r, action), action.reason())?;
    Ok((from, stored))
}

/// The columns an operator's action resets besides the state: a cancel finishes the job;
/// a retry makes it a fresh runnable job that remembers its retries.
pub fn apply_control(row: &mut JobRow, action: UserAction) {
    match action {
        UserAction::Cancel => row.completed_at = Some(now_micros()),
        UserAction::Retry => {
            row.node_id = None;
            row.retry_count += 1;
            // A fresh automatic budget: the operator has looked at the job.
            row.retry_base = row.retry_count;
            row.queued_at = now_micros();
            row.started_at = None;
            row.completed_at = None;
            row.error = None;
            row.failure_reason = None;
            row.progress = 0.0;
        }
        UserAction::Pause | UserAction::Resume => {}
    }
}
