//! Guarded state changes of stored jobs: one job's transition (`transition_row`), a
//! group commit's transitions together (`transition_many`), placements (`claim_many`),
//! progress stamps and an operator's control of a job no actor holds. Every change is
//! put to the one gate, [`JobState::check_transition`], and written with a `WHERE` on the
//! state and attempt it was read in, so a stale writer changes nothing.

use super::jobs::{JobRow, NewEvent, get};
use super::prepared::Prepared;
use super::schema::{job_events, jobs};
use super::{Conn, DbError, DbResult, now_micros};
use crate::domain::state::{self, JobState, UserAction};
use diesel::prelude::*;
use std::collections::HashMap;

/// Run the guarded UPDATE of `row` over the stored job it was made from (`from` and
/// `attempt` guard the write), in the narrowest shape: `node_id` and `completed_at` only
/// where `row` changes the stored ones. Returns the rows written (0: the job moved on).
/// A macro, not a function: each backend's connection runs the same four shapes.
macro_rules! update_guarded {
    ($c:expr, $row:expr, $from:expr, $attempt:expr, $stored_node:expr, $stored_end:expr) => {{
        let (row, from, attempt): (&JobRow, JobState, i32) = ($row, $from, $attempt);
        match (row.node_id != *$stored_node, row.completed_at != $stored_end) {
            (true, true) => WholeRowUpdate::<true, true> { row, from, attempt }.execute($c),
            (true, false) => WholeRowUpdate::<true, false> { row, from, attempt }.execute($c),
            (false, true) => WholeRowUpdate::<false, true> { row, from, attempt }.execute($c),
            (false, false) => WholeRowUpdate::<false, false> { row, from, attempt }.execute($c),
        }
    }};
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
    // Each row to write: its index in `answers`, and what the guarded UPDATE needs of the
    // row as stored (its state, attempt, node and end), with the event's reason.
    struct Pending {
        at: usize,
        from: JobState,
        attempt: i32,
        node: Option<String>,
        ended: Option<i64>,
        reason: String,
    }
    let mut pending: Vec<Pending> = Vec::new();
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
        pending.push(Pending {
            at: answers.len(),
            from,
            attempt: t.stored.attempt,
            node: t.stored.node_id,
            ended: t.stored.completed_at,
            reason: crate::domain::limits::event_reason(&t.reason),
        });
        answers.push(Ok(row));
    }
    // The guarded UPDATEs: one statement for all of them on PostgreSQL (per wave, below),
    // one each (prepared once, no round trip) on SQLite. A row whose state or attempt
    // moved on is not written, and its answer names the state it is in. Which of
    // `pending` were written is kept by position: one batch may hold a job twice.
    let updated: std::collections::HashSet<usize> = match conn {
        Conn::Postgresql(c) => {
            // One statement per wave, each job at most once per wave and in batch order:
            // within one UPDATE every copy of a row would be guarded by the row as it was
            // before the statement, so a stale second copy would pass as written.
            let mut done = std::collections::HashSet::new();
            let mut left: Vec<usize> = (0..pending.len()).collect();
            while !left.is_empty() {
                let mut wave: HashMap<&str, usize> = HashMap::new();
                let mut later = Vec::new();
                for k in left {
                    let id = answers[pending[k].at].as_ref().expect("a row to write").id.as_str();
                    if wave.contains_key(id) {
                        later.push(k);
                    } else {
                        wave.insert(id, k);
                    }
                }
                let rows: Vec<(&JobRow, JobState, i32)> = wave
                    .values()
                    .map(|&k| {
                        let p = &pending[k];
                        (answers[p.at].as_ref().expect("a row to write"), p.from, p.attempt)
                    })
                    .collect();
                done.extend(update_rows_pg(c, &rows)?.iter().map(|id| wave[id.as_str()]));
                left = later;
            }
            done
        }
        Conn::Sqlite(c) => {
            let mut done = std::collections::HashSet::new();
            for (k, p) in pending.iter().enumerate() {
                let row = answers[p.at].as_ref().expect("a row to write");
                if update_guarded!(c, row, p.from, p.attempt, &p.node, p.ended)? == 1 {
                    done.insert(k);
                }
            }
            done
        }
    };
    let mut written = Vec::with_capacity(pending.len());
    for (k, Pending { at: i, from, reason, .. }) in pending.into_iter().enumerate() {
        if updated.contains(&k) {
            written.push((i, from, reason));
        } else {
            let id = answers[i].as_ref().expect("a row to write").id.clone();
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
    let completed: Vec<String> = written
        .iter()
        .map(|(i, ..)| row_at(*i))
        .filter(|r| r.status == JobState::Completed)
        .map(|r| r.id.clone())
        .collect();
    let mut outputs = super::outputs::list_many(conn, &completed)?;
    super::events::record_transitions(conn, &events, |parents| {
        written
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
            .collect()
    })?;
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
    /// Names `UPDATE_ROWS_PG` as a prepared statement.
    struct UpdateRows;
    let written: Vec<Written> = Prepared::<UpdateRows>::new(UPDATE_ROWS_PG)
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
    let written = crate::on_backend!(conn, |c| update_guarded!(
        c,
        &row,
        from,
        stored.attempt,
        &stored.node_id,
        stored.completed_at
    ))?;
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

/// The guarded UPDATE of every transition: `UPDATE jobs SET <changeset columns> WHERE
/// seq = ? AND id = ? AND status = ? AND attempt = ?`.
///
/// The master's most frequent statement, so it must be prepared once per connection.
/// diesel's own UPDATE never is: it calls every UPDATE unsafe to cache (a changeset's
/// columns may vary), and was parsed and planned anew for every write. This one renders
/// the whole-row changeset's columns (NULLs bound as values, so the text never varies
/// with the row) under a static query id per shape.
///
/// Two indexed columns are left out when the transition keeps them: SQLite deletes and
/// re-inserts the index entries of every column an UPDATE sets, even to the same value,
/// and a placement never sets `completed_at` while a result never moves `node_id`.
/// Setting them anyway cost every group commit a delete and an insert per job in each
/// of those indexes (the pages written stayed the same: the neighbouring entries change
/// in the same commit). Hence four shapes, `NODE` and `ENDED` saying
/// whether `node_id` and `completed_at` are set; each is its own prepared statement.
struct WholeRowUpdate<'a, const NODE: bool, const ENDED: bool> {
    row: &'a JobRow,
    from: JobState,
    attempt: i32,
}

macro_rules! whole_row_update_sql {
    ($($db:ty),*) => {$(
        impl<const NODE: bool, const ENDED: bool> diesel::query_builder::QueryFragment<$db>
            for WholeRowUpdate<'_, NODE, ENDED>
        {
            fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, $db>) -> QueryResult<()> {
                use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};
                let r = self.row;
                out.push_sql("UPDATE jobs SET status = ");
                out.push_bind_param::<Text, _>(&r.status)?;
                out.push_sql(", progress = ");
                out.push_bind_param::<Double, _>(&r.progress)?;
                if NODE {
                    out.push_sql(", node_id = ");
                    out.push_bind_param::<Nullable<Text>, _>(&r.node_id)?;
                }
                out.push_sql(", attempt = ");
                out.push_bind_param::<Integer, _>(&r.attempt)?;
                out.push_sql(", retry_count = ");
                out.push_bind_param::<Integer, _>(&r.retry_count)?;
                out.push_sql(", queued_at = ");
                out.push_bind_param::<BigInt, _>(&r.queued_at)?;
                out.push_sql(", started_at = ");
                out.push_bind_param::<Nullable<BigInt>, _>(&r.started_at)?;
                out.push_sql(", last_activity_at = ");
                out.push_bind_param::<Nullable<BigInt>, _>(&r.last_activity_at)?;
                if ENDED {
                    out.push_sql(", completed_at = ");
                    out.push_bind_param::<Nullable<BigInt>, _>(&r.completed_at)?;
                }
                out.push_sql(", retry_at = ");
                out.push_bind_param::<Nullable<BigInt>, _>(&r.retry_at)?;
                out.push_sql(", error = ");
                out.push_bind_param::<Nullable<Text>, _>(&r.error)?;
                out.push_sql(", failure_reason = ");
                out.push_bind_param::<Nullable<Text>, _>(&r.failure_reason)?;
                out.push_sql(", logs = ");
                out.push_bind_param::<Nullable<Text>, _>(&r.logs)?;
                out.push_sql(", metrics = ");
                out.push_bind_param::<Nullable<Text>, _>(&r.metrics)?;
                out.push_sql(", qoe_score = ");
                out.push_bind_param::<Nullable<Double>, _>(&r.qoe_score)?;
                out.push_sql(", efficiency_score = ");
                out.push_bind_param::<Nullable<Double>, _>(&r.efficiency_score)?;
                out.push_sql(", energy_joules = ");
                out.push_bind_param::<Nullable<Double>, _>(&r.energy_joules)?;
                out.push_sql(", vmaf_score = ");
                out.push_bind_param::<Nullable<Double>, _>(&r.vmaf_score)?;
                out.push_sql(", updated_at = ");
                out.push_bind_param::<BigInt, _>(&r.updated_at)?;
                out.push_sql(", retry_base = ");
                out.push_bind_param::<Integer, _>(&r.retry_base)?;
                // The row is found by its rowid (`seq`), one B-tree descent; `id` is
                // still checked, the UUID index is not searched.
                out.push_sql(" WHERE seq = ");
                out.push_bind_param::<BigInt, _>(&r.seq)?;
                out.push_sql(" AND id = ");
                out.push_bind_param::<Text, _>(&r.id)?;
                out.push_sql(" AND status = ");
                out.push_bind_param::<Text, _>(&self.from)?;
                out.push_sql(" AND attempt = ");
                out.push_bind_param::<Integer, _>(&self.attempt)?;
                Ok(())
            }
        }
    )*};
}
whole_row_update_sql!(diesel::sqlite::Sqlite, diesel::pg::Pg);

impl<const NODE: bool, const ENDED: bool> diesel::query_builder::QueryId for WholeRowUpdate<'_, NODE, ENDED> {
    type QueryId = WholeRowUpdate<'static, NODE, ENDED>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<C, const NODE: bool, const ENDED: bool> RunQueryDsl<C> for WholeRowUpdate<'_, NODE, ENDED> {}

/// The text of the widest shape, for the test that holds it to the changeset's columns.
#[cfg(test)]
pub(crate) fn whole_row_update_sql() -> String {
    let row = JobRow::default();
    let q = WholeRowUpdate::<true, true> { row: &row, from: JobState::Queued, attempt: 0 };
    diesel::debug_query::<diesel::sqlite::Sqlite, _>(&q).to_string()
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

/// Place a runnable job on a node: pending/queued → processing with a new attempt.
pub fn claim(conn: &mut Conn, id: &str, node_id: &str) -> DbResult<JobRow> {
    claim_many(conn, &[id.to_string()], node_id)?.pop().unwrap_or(Err(DbError::NotFound))
}

/// `claim` for a whole placement round: the rows placed (per backend, below), then one
/// multi-row event INSERT, one parents read and one outbox INSERT for all of them. Answers per id,
/// in order: the claimed row, `NotFound`, or `Conflict` when the job is not runnable
/// (or another master on the same database claimed it first).
pub fn claim_many(conn: &mut Conn, ids: &[String], node_id: &str) -> DbResult<Vec<DbResult<JobRow>>> {
    let now = now_micros();
    let (before, mut claimed) = match conn {
        Conn::Sqlite(c) => claim_rows_sqlite(c, ids, node_id, now)?,
        Conn::Postgresql(c) => claim_rows_pg(c, ids, node_id, now)?,
    };
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
        super::events::record_transitions(conn, &events, |parents| {
            events
                .iter()
                .filter_map(|e| {
                    let row = claimed.get(&e.job_id)?;
                    Some(super::events::job_event(
                        row,
                        e.from_state,
                        &e.reason,
                        parents.get(&e.job_id).cloned(),
                        &[],
                        now,
                    ))
                })
                .collect()
        })?;
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

/// What a claim found (each existing job's state before) and placed (the rows written).
type ClaimedRows = QueryResult<(HashMap<String, JobState>, HashMap<String, JobRow>)>;

/// The placement of `claim_many` on SQLite: the jobs read sixteen at a time
/// (`db::lookup`) and each written back with the guarded UPDATE every transition uses —
/// statements of fixed text, prepared once per connection. One `IN (…)` statement per
/// claim, whose text varies with its length, was parsed and planned anew each time and
/// cost more than the rows it changed.
fn claim_rows_sqlite(c: &mut diesel::SqliteConnection, ids: &[String], node_id: &str, now: i64) -> ClaimedRows {
    use super::lookup::{InIds, load_in_chunks};
    let (mut before, mut claimed) = (HashMap::new(), HashMap::new());
    let mut stored_rows: HashMap<String, JobRow> = load_in_chunks(ids, |chunk| {
        jobs::table.filter(InIds::new(jobs::id, chunk)).select(JobRow::as_select()).load(c)
    })?
    .into_iter()
    .map(|r| (r.id.clone(), r))
    .collect();
    for id in ids {
        // Taken: a repeated id is answered as the first copy left it.
        let Some(stored) = stored_rows.remove(id) else {
            continue;
        };
        before.insert(id.clone(), stored.status);
        if !stored.status.is_runnable() {
            continue;
        }
        let row = placed_row(&stored, node_id, now);
        if update_guarded!(c, &row, stored.status, stored.attempt, &stored.node_id, stored.completed_at)? == 1 {
            claimed.insert(id.clone(), row);
        }
    }
    Ok((before, claimed))
}

/// The placement of `claim_many` on PostgreSQL: one SELECT of the rows and one guarded
/// whole-row UPDATE for all of them (every statement is a round trip), the prepared one
/// `transition_many` writes with. Each row is guarded by the state and attempt it was
/// read in: under READ COMMITTED another master may change a job in between, and such a
/// job is not written (it is answered as claimed elsewhere).
fn claim_rows_pg(c: &mut diesel::PgConnection, ids: &[String], node_id: &str, now: i64) -> ClaimedRows {
    let stored: Vec<JobRow> = jobs::table.filter(jobs::id.eq_any(ids)).select(JobRow::as_select()).load(c)?;
    let before: HashMap<String, JobState> = stored.iter().map(|r| (r.id.clone(), r.status)).collect();
    let rows: Vec<(JobRow, JobState, i32)> = stored
        .into_iter()
        .filter(|r| r.status.is_runnable())
        .map(|r| (placed_row(&r, node_id, now), r.status, r.attempt))
        .collect();
    let written = update_rows_pg(c, &rows.iter().map(|(r, from, attempt)| (r, *from, *attempt)).collect::<Vec<_>>())?;
    let claimed = rows.into_iter().filter(|(r, ..)| written.contains(&r.id)).map(|(r, ..)| (r.id.clone(), r)).collect();
    Ok((before, claimed))
}

/// `stored` placed on `node_id` now: processing, in a new attempt.
fn placed_row(stored: &JobRow, node_id: &str, now: i64) -> JobRow {
    JobRow {
        status: JobState::Processing,
        node_id: Some(node_id.to_string()),
        attempt: stored.attempt + 1,
        started_at: Some(now),
        last_activity_at: Some(now),
        progress: 0.0,
        retry_at: None,
        updated_at: now,
        ..stored.clone()
    }
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
