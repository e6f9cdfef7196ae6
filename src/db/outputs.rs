//! A job's stored outputs (`job_outputs`) and its probed input (`job_inputs`).
//!
//! An output row is written only after its file is complete and verified, and only
//! for the attempt that holds the job's lease (checked in the same transaction), so
//! a listed output always exists and a stale worker can never replace a live one.

use super::schema::{job_inputs, job_outputs, jobs};
use super::{Conn, DbError, DbResult};
use crate::domain::state::JobState;
use diesel::prelude::*;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = job_outputs)]
pub struct OutputRow {
    pub job_id: String,
    pub name: String,
    pub attempt: i32,
    pub bytes: i64,
    pub sha256: String,
    pub content_type: String,
    /// Where the bytes are: a path relative to the artifact store's root,
    /// `s3://bucket/key`, or `file:///path` in a shared library.
    pub location: String,
    pub created_at: i64,
}

impl OutputRow {
    /// Stored outside the master's artifact store (an S3 object, a library file).
    pub fn is_external(&self) -> bool {
        self.location.starts_with("s3://") || self.location.starts_with("file://")
    }

    pub fn to_wire(&self) -> crate::wire::JobOutput {
        crate::wire::JobOutput {
            name: self.name.clone(),
            bytes: self.bytes.max(0) as u64,
            sha256: self.sha256.clone(),
            content_type: self.content_type.clone(),
            location: if self.is_external() {
                self.location.clone()
            } else {
                format!("artifact://{}/{}", self.job_id, self.name)
            },
            attempt: self.attempt,
            created_at: crate::wire::rfc3339(self.created_at),
        }
    }
}

/// Record a stored output for `node`'s lease on the job. Refused (Conflict) unless the
/// job is still leased by that node for that attempt. Returns the row it replaced
/// (an earlier upload of the same name), whose file the caller removes.
pub fn record(conn: &mut Conn, row: OutputRow, node: &str) -> DbResult<Option<OutputRow>> {
    let (status, attempt, holder): (JobState, i32, Option<String>) = jobs::table
        .filter(jobs::id.eq(&row.job_id))
        .select((jobs::status, jobs::attempt, jobs::node_id))
        .get_result(conn)?;
    if !status.is_leased() || attempt != row.attempt || holder.as_deref() != Some(node) {
        return Err(DbError::job_in(
            status,
            format!(
                "job {} is '{status}' (attempt {attempt}); attempt {} of node {node} may not store outputs",
                row.job_id, row.attempt
            ),
        ));
    }
    let old = get(conn, &row.job_id, &row.name).ok();
    diesel::delete(
        job_outputs::table.filter(job_outputs::job_id.eq(&row.job_id)).filter(job_outputs::name.eq(&row.name)),
    )
    .execute(conn)?;
    diesel::insert_into(job_outputs::table).values(&row).execute(conn)?;
    let parent = super::events::parent_of(conn, &row.job_id)?;
    super::events::append(conn, &[super::events::output_event(&row, node, parent)])?;
    Ok(old.filter(|o| o.location != row.location))
}

pub fn get(conn: &mut Conn, job_id: &str, name: &str) -> DbResult<OutputRow> {
    Ok(job_outputs::table
        .filter(job_outputs::job_id.eq(job_id))
        .filter(job_outputs::name.eq(name))
        .select(OutputRow::as_select())
        .get_result(conn)?)
}

pub fn count(conn: &mut Conn, job_id: &str) -> DbResult<i64> {
    Ok(job_outputs::table.filter(job_outputs::job_id.eq(job_id)).count().get_result(conn)?)
}

pub fn list(conn: &mut Conn, job_id: &str) -> DbResult<Vec<OutputRow>> {
    Ok(job_outputs::table
        .filter(job_outputs::job_id.eq(job_id))
        .order(job_outputs::name.asc())
        .select(OutputRow::as_select())
        .load(conn)?)
}

/// The outputs of several jobs, by job (each job's in name order).
pub fn list_many(conn: &mut Conn, job_ids: &[String]) -> DbResult<std::collections::HashMap<String, Vec<OutputRow>>> {
    let mut by_job: std::collections::HashMap<String, Vec<OutputRow>> = std::collections::HashMap::new();
    if job_ids.is_empty() {
        return Ok(by_job);
    }
    // Sixteen jobs per prepared lookup on SQLite (`db::lookup`): an `IN (…)` list as
    // long as the batch has a text that varies with its length, prepared anew each time.
    let rows: Vec<OutputRow> = match conn {
        Conn::Postgresql(c) => job_outputs::table
            .filter(job_outputs::job_id.eq_any(job_ids))
            .order((job_outputs::job_id.asc(), job_outputs::name.asc()))
            .select(OutputRow::as_select())
            .load(c)?,
        Conn::Sqlite(c) => super::lookup::load_in_chunks(job_ids, |chunk| {
            job_outputs::table
                .filter(super::lookup::InIds::new(job_outputs::job_id, chunk))
                .order((job_outputs::job_id.asc(), job_outputs::name.asc()))
                .select(OutputRow::as_select())
                .load(c)
        })?,
    };
    for r in rows {
        by_job.entry(r.job_id.clone()).or_default().push(r);
    }
    Ok(by_job)
}

/// Forget every output of the given jobs; returns what was forgotten (its files are
/// the caller's to remove, after the commit).
pub fn forget(conn: &mut Conn, job_ids: &[String]) -> DbResult<Vec<OutputRow>> {
    let rows: Vec<OutputRow> =
        job_outputs::table.filter(job_outputs::job_id.eq_any(job_ids)).select(OutputRow::as_select()).load(conn)?;
    diesel::delete(job_outputs::table.filter(job_outputs::job_id.eq_any(job_ids))).execute(conn)?;
    diesel::delete(job_inputs::table.filter(job_inputs::job_id.eq_any(job_ids))).execute(conn)?;
    Ok(rows)
}

/// Outputs of attempts other than the job's current one (left by an attempt that failed
/// after uploading): forgotten when a later attempt completes.
pub fn forget_other_attempts(conn: &mut Conn, job_id: &str, attempt: i32) -> DbResult<Vec<OutputRow>> {
    let rows: Vec<OutputRow> = job_outputs::table
        .filter(job_outputs::job_id.eq(job_id))
        .filter(job_outputs::attempt.ne(attempt))
        .select(OutputRow::as_select())
        .load(conn)?;
    diesel::delete(job_outputs::table.filter(job_outputs::job_id.eq(job_id)).filter(job_outputs::attempt.ne(attempt)))
        .execute(conn)?;
    Ok(rows)
}

/// Names of the outputs `attempt` stored.
pub fn names_of_attempt(conn: &mut Conn, job_id: &str, attempt: i32) -> DbResult<Vec<String>> {
    Ok(job_outputs::table
        .filter(job_outputs::job_id.eq(job_id))
        .filter(job_outputs::attempt.eq(attempt))
        .select(job_outputs::name)
        .load(conn)?)
}

/// Bytes of every stored output (the artifact-bytes gauge at start-up). Cast: a
/// PostgreSQL SUM of BIGINT is NUMERIC.
pub fn total_bytes(conn: &mut Conn) -> DbResult<i64> {
    Ok(job_outputs::table
        .filter(job_outputs::location.not_like("s3://%"))
        .filter(job_outputs::location.not_like("file://%"))
        .select(diesel::dsl::sql::<diesel::sql_types::BigInt>("CAST(COALESCE(SUM(bytes), 0) AS BIGINT)"))
        .get_result(conn)?)
}

/// Keep what ffprobe found in a job's input (the first probe wins; a retried attempt
/// probes the same input).
pub fn record_input_info(conn: &mut Conn, job_id: &str, info: &str, now: i64) -> DbResult<()> {
    let exists: i64 = job_inputs::table.filter(job_inputs::job_id.eq(job_id)).count().get_result(conn)?;
    if exists == 0 {
        diesel::insert_into(job_inputs::table)
            .values((job_inputs::job_id.eq(job_id), job_inputs::info.eq(info), job_inputs::probed_at.eq(now)))
            .execute(conn)?;
    }
    Ok(())
}

pub fn input_info(conn: &mut Conn, job_id: &str) -> DbResult<Option<String>> {
    Ok(job_inputs::table.filter(job_inputs::job_id.eq(job_id)).select(job_inputs::info).first(conn).optional()?)
}
