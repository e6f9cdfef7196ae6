//! The outbox (`events`): integration events, appended in the transaction of the
//! change they report, read back in id order by the event stream and the webhook
//! dispatcher, and pruned after their retention.

use super::jobs::JobRow;
use super::outputs::OutputRow;
use super::schema::{events, job_graph};
use super::{Conn, DbResult, now_micros};
use crate::domain::events::{EventFilter, EventId, EventScope, job_kind};
use crate::domain::state::JobState;
use diesel::prelude::*;
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct EventRow {
    pub id: i64,
    pub kind: String,
    pub job_id: Option<String>,
    pub parent_id: Option<String>,
    pub node_id: Option<String>,
    pub at: i64,
    pub payload: String,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = events, treat_none_as_default_value = false)]
pub struct NewEvent {
    pub kind: String,
    pub job_id: Option<String>,
    pub parent_id: Option<String>,
    pub node_id: Option<String>,
    pub at: i64,
    pub payload: String,
}

impl EventRow {
    pub fn scope(&self) -> EventScope<'_> {
        EventScope {
            kind: &self.kind,
            job_id: self.job_id.as_deref(),
            parent_id: self.parent_id.as_deref(),
            node_id: self.node_id.as_deref(),
        }
    }

    pub fn to_wire(&self) -> crate::wire::Event {
        crate::wire::Event {
            id: EventId::stored(self.id).to_string(),
            kind: self.kind.clone(),
            at: crate::wire::rfc3339(self.at),
            job_id: self.job_id.clone(),
            parent_id: self.parent_id.clone(),
            node_id: self.node_id.clone(),
            data: serde_json::from_str(&self.payload).unwrap_or(Value::Null),
        }
    }
}

/// Append events, in order (see [`log_and_append`]).
pub fn append(conn: &mut Conn, new: &[NewEvent]) -> DbResult<()> {
    log_and_append(conn, &[], new)
}

/// Rows per multi-row INSERT of the job log and the outbox on SQLite.
const ROWS_PER_INSERT: usize = 16;

/// Append job-log rows and outbox rows, each list in order: on PostgreSQL one prepared
/// statement for both ([`log_and_outbox_pg`]), on SQLite prepared INSERTs of a fixed
/// number of rows, then single rows — a `VALUES` list as long as the batch would have
/// a text that varies with its length, parsed and planned anew at every group commit.
pub fn log_and_append(conn: &mut Conn, log: &[super::jobs::NewEvent], outbox: &[NewEvent]) -> DbResult<()> {
    match conn {
        Conn::Postgresql(c) => {
            log_and_outbox_pg(c, log, outbox)?;
            // Parents joined in by the statement: not the rows as given.
            captured(|c| c.exact = false);
        }
        Conn::Sqlite(c) => {
            // Rows go in statements of `ROWS_PER_INSERT` (one text, prepared once: the
            // array's length is part of its type), the rest one by one; a statement per
            // row cost a group commit more in statement set-up than in the rows it wrote.
            macro_rules! insert_in_chunks {
                ($table:expr, $rows:expr) => {
                    for chunk in $rows.chunks(ROWS_PER_INSERT) {
                        match <&[_; ROWS_PER_INSERT]>::try_from(chunk) {
                            Ok(full) => diesel::insert_into($table).values(full).execute(c)?,
                            Err(_) => chunk
                                .iter()
                                .map(|e| diesel::insert_into($table).values(e).execute(c))
                                .sum::<QueryResult<usize>>()?,
                        };
                    }
                };
            }
            insert_in_chunks!(super::schema::job_events::table, log);
            insert_in_chunks!(events::table, outbox);
            captured(|c| c.rows.extend_from_slice(outbox));
        }
    }
    Ok(())
}

/// The outbox rows this thread's transaction appended, kept for the writer
/// ([`capture_appended`]): after its COMMIT it hands them on with their ids instead of
/// having them read back (~two rows per job of a group commit, read and decoded again
/// on another thread; bench P2). A thread-local, not a parameter: the writes of a batch
/// append through here from eight call sites (jobs, transitions, outputs, nodes) that
/// know nothing of the batch.
struct Capture {
    rows: Vec<NewEvent>,
    /// False once a row was changed or appended other than as given (a parent set
    /// afterwards, or PostgreSQL's INSERT joining them in): the rows must be read back.
    exact: bool,
}

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<Capture>> = const { std::cell::RefCell::new(None) };
}

fn captured(f: impl FnOnce(&mut Capture)) {
    CAPTURE.with(|c| {
        if let Some(c) = c.borrow_mut().as_mut() {
            f(c)
        }
    })
}

/// Start keeping the outbox rows this thread appends (dropping any kept before).
pub fn capture_appended() {
    CAPTURE.with(|c| *c.borrow_mut() = Some(Capture { rows: Vec::new(), exact: true }));
}

/// Stop keeping appended outbox rows (a rolled-back batch's, or ones not taken).
pub fn discard_appended() {
    CAPTURE.with(|c| *c.borrow_mut() = None);
}

/// The outbox rows appended since [`capture_appended`], as stored — ids
/// `after + 1 ..= upto`, given in order — or None when they cannot be known without
/// reading them (a row changed after its INSERT, or not exactly that many appended).
/// Stops the capture.
pub fn take_appended(after: i64, upto: i64) -> Option<Vec<EventRow>> {
    let c = CAPTURE.with(|c| c.borrow_mut().take())?;
    // One writer, AUTOINCREMENT ids in INSERT order: the transaction's rows are
    // exactly the ids above the head before it, if their count matches.
    if !c.exact || upto - after != c.rows.len() as i64 {
        return None;
    }
    Some(
        c.rows
            .into_iter()
            .zip(after + 1..)
            .map(|(e, id)| EventRow {
                id,
                kind: e.kind,
                job_id: e.job_id,
                parent_id: e.parent_id,
                node_id: e.node_id,
                at: e.at,
                payload: e.payload,
            })
            .collect(),
    )
}

/// The job-log rows of a group commit's transitions and their outbox rows, each outbox
/// row naming its job's graph parent (`outbox` is given the parents by job id). On
/// PostgreSQL one round trip, not three (log, parents, outbox): [`log_and_outbox_pg`]
/// joins the parents, so `outbox` gets none. On SQLite, with no round trips, prepared
/// single-id parent lookups and single-row INSERTs.
pub fn record_transitions(
    conn: &mut Conn,
    log: &[super::jobs::NewEvent],
    outbox: impl FnOnce(&std::collections::HashMap<String, String>) -> Vec<NewEvent>,
) -> DbResult<()> {
    let parents = match conn {
        Conn::Postgresql(_) => Default::default(),
        Conn::Sqlite(_) => parents_of(conn, &log.iter().map(|e| e.job_id.clone()).collect::<Vec<_>>())?,
    };
    let outbox = outbox(&parents);
    log_and_append(conn, log, &outbox)
}

/// The job-log rows and outbox rows as one prepared PostgreSQL statement (either may be
/// empty): the log INSERT as a data-modifying CTE, each outbox row's `parent_id`, where
/// not given, joined from `job_graph`, both in order. One text for any number of rows.
fn log_and_outbox_pg(
    c: &mut diesel::PgConnection,
    log: &[super::jobs::NewEvent],
    outbox: &[NewEvent],
) -> QueryResult<()> {
    use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
    if log.is_empty() && outbox.is_empty() {
        return Ok(());
    }
    /// Names the statement below as a prepared one.
    struct LogAndOutbox;
    super::prepared::Prepared::<LogAndOutbox>::new(
        "WITH logged AS (INSERT INTO job_events (job_id, from_state, to_state, reason, attempt, node_id, at) \
         SELECT job_id, from_state, to_state, reason, attempt, node_id, at \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::bigint[]) \
         WITH ORDINALITY AS v(job_id, from_state, to_state, reason, attempt, node_id, at, n) ORDER BY n) \
         INSERT INTO events (kind, job_id, parent_id, node_id, at, payload) \
         SELECT v.kind, v.job_id, COALESCE(v.parent_id, g.parent_id), v.node_id, v.at, v.payload \
         FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], $13::text[]) \
         WITH ORDINALITY AS v(kind, job_id, parent_id, node_id, at, payload, n) \
         LEFT JOIN job_graph g ON g.job_id = v.job_id ORDER BY v.n",
    )
    .bind::<Array<Text>, _>(log.iter().map(|e| e.job_id.as_str()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(log.iter().map(|e| e.from_state.map(|s| s.as_str())).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(log.iter().map(|e| e.to_state.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(log.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(log.iter().map(|e| e.attempt).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(log.iter().map(|e| e.node_id.as_deref()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(log.iter().map(|e| e.at).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(outbox.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(outbox.iter().map(|e| e.job_id.as_deref()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(outbox.iter().map(|e| e.parent_id.as_deref()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(outbox.iter().map(|e| e.node_id.as_deref()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(outbox.iter().map(|e| e.at).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(outbox.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>())
    .execute(c)?;
    Ok(())
}

/// A job event's `data`, serialized straight to text (no `Value` tree per event: the
/// writer builds one per transition). Fields in name order, as a JSON object's keys
/// come out of `serde_json::Value`, so the stored text is what it was (tested);
/// absent ones are left out, `node_id` and `previous_status` are always there.
#[derive(serde::Serialize)]
struct JobEventData<'a> {
    attempt: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    efficiency_score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    energy_joules: Option<f64>,
    engine: &'a crate::domain::params::Engine,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<&'a crate::domain::state::FailureReason>,
    max_retries: i32,
    node_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<Vec<Value>>,
    previous_status: Option<JobState>,
    priority: &'a crate::domain::queue::Priority,
    #[serde(skip_serializing_if = "Option::is_none")]
    qoe_score: Option<f64>,
    queue: &'a crate::domain::queue::QueueName,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_seconds: Option<f64>,
    reason: &'a str,
    retry_count: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    status: JobState,
    #[serde(skip_serializing_if = "Option::is_none")]
    vmaf_score: Option<f64>,
}

/// The event of a job's move from `from` (None: its submission) to the state of `row`.
/// A final state carries what an integration acts on: timing, error, scores and, when
/// completed, the outputs with where to download them.
pub fn job_event(
    row: &JobRow,
    from: Option<JobState>,
    reason: &str,
    parent_id: Option<String>,
    outputs: &[OutputRow],
    at: i64,
) -> NewEvent {
    let ended = row.status.is_terminal() || row.status == JobState::Retrying;
    let end = row.completed_at.unwrap_or(at);
    let ended_with = |v: Option<f64>| v.filter(|_| ended);
    let data = JobEventData {
        attempt: row.attempt,
        completed_at: ended.then(|| crate::wire::rfc3339(end)),
        created_at: crate::wire::rfc3339(row.created_at),
        duration_seconds: row.started_at.filter(|_| ended).map(|start| (end - start).max(0) as f64 / 1e6),
        efficiency_score: ended_with(row.efficiency_score),
        energy_joules: ended_with(row.energy_joules),
        engine: &row.engine,
        error: row.error.as_deref().filter(|_| ended),
        failure_reason: row.failure_reason.as_ref().filter(|_| ended),
        max_retries: row.max_retries,
        node_id: row.node_id.as_deref(),
        outputs: (row.status == JobState::Completed).then(|| outputs.iter().map(output_json).collect()),
        previous_status: from,
        priority: &row.priority,
        qoe_score: ended_with(row.qoe_score),
        queue: &row.queue,
        queue_seconds: ended.then(|| (row.started_at.unwrap_or(end) - row.queued_at).max(0) as f64 / 1e6),
        reason,
        retry_count: row.retry_count,
        started_at: row.started_at.map(crate::wire::rfc3339),
        status: row.status,
        vmaf_score: ended_with(row.vmaf_score),
    };
    NewEvent {
        kind: job_kind(from, row.status).into(),
        job_id: Some(row.id.clone()),
        parent_id,
        node_id: row.node_id.clone(),
        at,
        payload: serde_json::to_string(&data).unwrap_or_else(|_| "{}".into()),
    }
}

/// An output as events show it: its metadata, where it lives and the API path that
/// downloads it (an artifact, or a presigned redirect for a bucket object).
pub fn output_json(o: &OutputRow) -> Value {
    let mut v = serde_json::to_value(o.to_wire()).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("download_path".into(), json!(format!("/api/v1/jobs/{}/outputs/{}", o.job_id, o.name)));
    }
    v
}

/// A stored output's event.
pub fn output_event(o: &OutputRow, node_id: &str, parent_id: Option<String>) -> NewEvent {
    NewEvent {
        kind: "job.output_stored".into(),
        job_id: Some(o.job_id.clone()),
        parent_id,
        node_id: Some(node_id.to_string()),
        at: now_micros(),
        payload: json!({ "output": output_json(o) }).to_string(),
    }
}

/// A node's event (`node.registered`, `node.lost`, …) with the node as the API shows it.
pub fn node_event(kind: &str, node_id: &str, node: Value) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        job_id: None,
        parent_id: None,
        node_id: Some(node_id.to_string()),
        at: now_micros(),
        payload: json!({ "node": node }).to_string(),
    }
}

/// The parent of a graph job, if it has one (for the event's `parent_id`).
pub fn parent_of(conn: &mut Conn, job_id: &str) -> DbResult<Option<String>> {
    Ok(crate::on_backend!(conn, |c| job_graph::table
        .filter(job_graph::job_id.eq(job_id))
        .select(job_graph::parent_id)
        .get_result::<Option<String>>(c)
        .optional())?
    .flatten())
}

/// Parents of many jobs (jobs with none are absent). Sixteen jobs per prepared lookup on
/// SQLite (`db::lookup`): an `IN (…)` list as long as the batch has a text that varies
/// with its length, prepared anew at every group commit. (PostgreSQL joins the parents
/// in `log_and_outbox_pg` instead; this is its fallback.)
pub fn parents_of(conn: &mut Conn, ids: &[String]) -> DbResult<std::collections::HashMap<String, String>> {
    let pairs: Vec<(String, Option<String>)> = match conn {
        Conn::Sqlite(c) => super::lookup::load_in_chunks(ids, |chunk| {
            job_graph::table
                .filter(super::lookup::InIds::new(job_graph::job_id, chunk))
                .select((job_graph::job_id, job_graph::parent_id))
                .load(c)
        })?,
        Conn::Postgresql(c) => job_graph::table
            .filter(job_graph::job_id.eq_any(ids))
            .select((job_graph::job_id, job_graph::parent_id))
            .load(c)?,
    };
    Ok(pairs.into_iter().filter_map(|(job, parent)| Some((job, parent?))).collect())
}

/// Name the parent on the events of jobs stored with their graph rows in this
/// transaction: their submission events, appended before the graph rows and after
/// `since` (the outbox's [`head`] when the transaction began its submission). The id
/// range finds them; the outbox keeps no index on `job_id`.
pub fn set_parent(conn: &mut Conn, since: i64, job_ids: &[String], parent_id: &str) -> DbResult<()> {
    diesel::update(
        events::table
            .filter(events::id.gt(since))
            .filter(events::job_id.eq_any(job_ids))
            .filter(events::parent_id.is_null()),
    )
    .set(events::parent_id.eq(parent_id))
    .execute(conn)?;
    captured(|c| c.exact = false);
    Ok(())
}

/// The newest event id (0 when there is none).
pub fn head(conn: &mut Conn) -> DbResult<i64> {
    Ok(events::table.select(diesel::dsl::max(events::id)).get_result::<Option<i64>>(conn)?.unwrap_or(0))
}

/// Events after `after` up to `upto`, oldest first, at most `limit`.
pub fn between(conn: &mut Conn, after: i64, upto: i64, limit: i64) -> DbResult<Vec<EventRow>> {
    Ok(crate::on_backend!(conn, |c| events::table
        .filter(events::id.gt(after))
        .filter(events::id.le(upto))
        .order(events::id.asc())
        .limit(limit)
        .select(EventRow::as_select())
        .load(c))?)
}

/// Events after `after`, oldest first, at most `limit`.
pub fn after(conn: &mut Conn, after: i64, limit: i64) -> DbResult<Vec<EventRow>> {
    Ok(crate::on_backend!(conn, |c| events::table
        .filter(events::id.gt(after))
        .order(events::id.asc())
        .limit(limit)
        .select(EventRow::as_select())
        .load(c))?)
}

/// Ids one filtered read of the outbox looks through at most: no index serves a
/// filter (by job, node or parent), so a stream catching up on a long stretch reads it
/// in bounded steps instead of scanning to the head in one query.
pub const SCAN_PER_READ: i64 = 20_000;

/// Events after `after` up to `upto` that `filter` admits, oldest first, at most `limit`
/// of them from at most [`SCAN_PER_READ`] ids, and the id read up to (the caller resumes
/// after it).
pub fn matching(
    conn: &mut Conn,
    filter: &EventFilter,
    after: i64,
    upto: i64,
    limit: i64,
) -> DbResult<(Vec<EventRow>, i64)> {
    let upto = upto.min(after.saturating_add(SCAN_PER_READ));
    let mut q = events::table.filter(events::id.gt(after)).filter(events::id.le(upto)).into_boxed();
    if !filter.job_ids.is_empty() {
        q = q.filter(events::job_id.eq_any(&filter.job_ids));
    }
    if !filter.node_ids.is_empty() {
        q = q.filter(events::node_id.eq_any(&filter.node_ids));
    }
    if !filter.parent_ids.is_empty() {
        q = q.filter(events::parent_id.eq_any(&filter.parent_ids));
    }
    let rows: Vec<EventRow> = q.order(events::id.asc()).limit(limit).select(EventRow::as_select()).load(conn)?;
    // Fewer rows than asked for: nothing else up to `upto` matches the SQL filters.
    let read_to = if (rows.len() as i64) < limit { upto } else { rows.last().map(|r| r.id).unwrap_or(upto) };
    Ok((rows.into_iter().filter(|r| filter.matches(&r.scope())).collect(), read_to))
}

pub fn get_many(conn: &mut Conn, ids: &[i64]) -> DbResult<Vec<EventRow>> {
    Ok(events::table.filter(events::id.eq_any(ids)).select(EventRow::as_select()).load(conn)?)
}

/// The oldest event id still kept (resuming from before it has a gap).
pub fn oldest(conn: &mut Conn) -> DbResult<Option<i64>> {
    Ok(events::table.select(diesel::dsl::min(events::id)).get_result(conn)?)
}

/// Most events one retention pass forgets: its write transaction stays short, and the
/// caller runs passes until one forgets fewer.
pub const PRUNE_BATCH: usize = 10_000;

/// Forget up to [`PRUNE_BATCH`] events older than `before` (µs), except those a webhook
/// has still to deliver; how many.
pub fn prune(conn: &mut Conn, before: i64) -> DbResult<usize> {
    use super::schema::webhook_deliveries as d;
    // Kept from the oldest pending one on, so a webhook's backlog keeps its order.
    let floor: Option<i64> =
        d::table.filter(d::state.eq("pending")).select(diesel::dsl::min(d::event_id)).get_result(conn)?;
    // Ids and times grow together, so what is old enough is the start of the table in
    // id order: read from there and stop at the first event to keep. No index on `at`
    // is kept for this (every event would pay for it); an `at` that stepped back (a
    // clock, a failover) only keeps the events after it a little longer.
    let oldest: Vec<(i64, i64)> = events::table
        .filter(events::id.lt(floor.unwrap_or(i64::MAX)))
        .order(events::id.asc())
        .select((events::id, events::at))
        .limit(PRUNE_BATCH as i64)
        .load(conn)?;
    match oldest.iter().take_while(|(_, at)| *at < before).last() {
        Some(&(last, _)) => Ok(diesel::delete(events::table.filter(events::id.le(last))).execute(conn)?),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::state::FailureReason;

    fn row(status: JobState) -> JobRow {
        JobRow {
            id: "j".into(),
            status,
            attempt: 2,
            node_id: Some("n1".into()),
            created_at: 1_000_000,
            queued_at: 2_000_000,
            started_at: Some(3_000_000),
            updated_at: 3_000_000,
            ..JobRow::default()
        }
    }

    fn keys(payload: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(payload).unwrap();
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn job_event_data_is_canonical_json_with_the_fields_of_its_state() {
        let output = OutputRow {
            job_id: "j".into(),
            name: "out.mp4".into(),
            attempt: 2,
            bytes: 10,
            sha256: "ab".into(),
            content_type: "video/mp4".into(),
            location: "j/out.mp4".into(),
            created_at: 4_000_000,
        };
        let completed = JobRow { completed_at: Some(5_500_000), vmaf_score: Some(93.5), ..row(JobState::Completed) };
        let failed = JobRow {
            error: Some("ffmpeg exited 1".into()),
            failure_reason: Some(FailureReason::RuntimeError),
            completed_at: Some(4_000_000),
            ..row(JobState::Failed)
        };
        let always = [
            "attempt",
            "created_at",
            "engine",
            "max_retries",
            "node_id",
            "previous_status",
            "priority",
            "queue",
            "reason",
            "retry_count",
            "started_at",
            "status",
        ];
        let ended = ["completed_at", "duration_seconds", "queue_seconds"];
        let cases: Vec<(NewEvent, Vec<&str>)> = vec![
            (job_event(&row(JobState::Processing), Some(JobState::Pending), "placed", None, &[], 9), vec![]),
            (
                job_event(&completed, Some(JobState::Processing), "done", None, std::slice::from_ref(&output), 9),
                [&ended[..], &["outputs", "vmaf_score"]].concat(),
            ),
            (
                job_event(&failed, Some(JobState::Processing), "boom", None, &[], 9),
                [&ended[..], &["error", "failure_reason"]].concat(),
            ),
        ];
        for (event, extra) in cases {
            // Keys in name order and the text exactly as a `Value` writes it.
            let value: Value = serde_json::from_str(&event.payload).unwrap();
            assert_eq!(value.to_string(), event.payload);
            let mut want: Vec<String> = always.iter().chain(&extra).map(|k| k.to_string()).collect();
            want.sort();
            assert_eq!(keys(&event.payload), want, "{}", event.kind);
        }
        let done: Value = serde_json::from_str(
            &job_event(&completed, Some(JobState::Processing), "done", None, std::slice::from_ref(&output), 9).payload,
        )
        .unwrap();
        assert_eq!(done["duration_seconds"], json!(2.5));
        assert_eq!(done["queue_seconds"], json!(1.0));
        assert_eq!(done["completed_at"], json!(crate::wire::rfc3339(5_500_000)));
        assert_eq!(done["outputs"][0]["download_path"], json!("/api/v1/jobs/j/outputs/out.mp4"));
        assert_eq!(done["previous_status"], json!("processing"));
        let failed: Value =
            serde_json::from_str(&job_event(&failed, Some(JobState::Processing), "boom", None, &[], 9).payload)
                .unwrap();
        assert_eq!((failed["error"].as_str(), failed["status"].as_str()), (Some("ffmpeg exited 1"), Some("failed")));
    }
}
