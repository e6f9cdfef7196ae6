//! The database layer's tests on real SQLite files: the writer's statements (their
//! texts, plans and preparation), guarded transitions, placements and retention.

use super::jobs::{self, JobRow};
use super::transitions;
use super::*;
use crate::domain::state::JobState;

fn new_job(id: &str, status: JobState, at: i64) -> JobRow {
    JobRow {
        id: id.into(),
        parameters: "{}".into(),
        status,
        max_retries: 3,
        created_at: at,
        queued_at: at,
        updated_at: at,
        ..JobRow::default()
    }
}

/// The state a refused write found the job in (typed, never parsed from text).
fn conflict_state(err: &DbError) -> Option<JobState> {
    match err {
        DbError::Conflict { current, .. } => *current,
        _ => None,
    }
}

#[test]
fn the_postgres_batch_update_sets_exactly_the_changeset_columns() {
    use super::schema::jobs;
    let row = JobRow::default();
    let q = diesel::update(jobs::table).set(&row);
    let sql = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&q).to_string();
    let set = sql.split(" SET ").nth(1).unwrap().split(" -- ").next().unwrap();
    let mut changeset: Vec<&str> = set.split(", ").map(|a| a.split(' ').next().unwrap().trim_matches('`')).collect();
    let pg = super::transitions::UPDATE_ROWS_PG;
    let set = pg.split(" SET ").nth(1).unwrap().split(" FROM ").next().unwrap();
    let mut batched: Vec<&str> = set.split(", ").map(|a| a.split(" = ").next().unwrap().trim()).collect();
    for a in set.split(", ") {
        let (col, value) = a.split_once(" = ").unwrap();
        assert_eq!(value.trim(), format!("v.{}", col.trim()), "each column from its own array");
    }
    changeset.sort();
    batched.sort();
    assert_eq!(batched, changeset, "a column the whole-row UPDATE writes is missing from the batched one");
}

#[test]
fn the_guarded_update_sets_exactly_the_changeset_columns() {
    use super::schema::jobs;
    let columns = |sql: &str, from: &str, to: &str| -> Vec<String> {
        let set = sql.split(from).nth(1).unwrap().split(to).next().unwrap();
        let mut cols: Vec<String> =
            set.split(", ").map(|a| a.split(' ').next().unwrap().trim_matches('`').to_string()).collect();
        cols.sort();
        cols
    };
    let row = JobRow::default();
    let derived = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&diesel::update(jobs::table).set(&row)).to_string();
    let widest = super::transitions::whole_row_update_sql();
    assert_eq!(
        columns(&widest, " SET ", " WHERE "),
        columns(&derived, " SET ", " -- "),
        "a column the changeset writes is missing from the guarded UPDATE (or one too many)"
    );
    let guard = " WHERE seq = ? AND id = ? AND status = ? AND attempt = ?";
    assert!(widest.contains(guard), "{widest}");
    // The guard finds the row by its rowid, not through the UUID index.
    #[derive(QueryableByName)]
    struct Step {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 1).unwrap();
    let plan: Vec<Step> = diesel::sql_query(format!(
        "EXPLAIN QUERY PLAN UPDATE jobs SET status = 'queued'{}",
        guard.replace("seq = ?", "seq = 1").replace('?', "'x'")
    ))
    .load(&mut *pool.get().unwrap())
    .unwrap();
    assert!(
        plan.iter().any(|s| s.detail.contains("INTEGER PRIMARY KEY (rowid=?)")),
        "{:?}",
        plan.iter().map(|s| &s.detail).collect::<Vec<_>>()
    );
}

#[test]
fn the_bundled_sqlite_plans_without_looking_at_bound_values() {
    // Without the guarantee (`.cargo/config.toml`), every statement with a bound LIMIT
    // is prepared again each time it runs.
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 1).unwrap();
    #[derive(diesel::QueryableByName)]
    struct Opt {
        #[diesel(sql_type = diesel::sql_types::Text)]
        compile_options: String,
    }
    let opts: Vec<Opt> = diesel::sql_query("PRAGMA compile_options").load(&mut *pool.get().unwrap()).unwrap();
    assert!(opts.iter().any(|o| o.compile_options == "ENABLE_QPSG"), "SQLite built without SQLITE_ENABLE_QPSG");
}

/// The writer hands a batch's outbox rows on without reading them back only when they
/// are exactly the rows stored: same ids, same columns. A parent set after the INSERT,
/// or ids that skip (AUTOINCREMENT after the newest row was deleted), mean a read.
#[test]
fn appended_outbox_rows_are_handed_on_as_stored_or_not_at_all() {
    use super::events::{self, NewEvent};
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 1).unwrap();
    let mut c = pool.get().unwrap();
    let event = |i: usize| NewEvent {
        kind: if i.is_multiple_of(2) { "job.processing" } else { "job.completed" }.into(),
        job_id: Some(format!("job-{}", i / 2)),
        parent_id: i.is_multiple_of(3).then(|| "parent".to_string()),
        node_id: (!i.is_multiple_of(4)).then(|| format!("node-{}", i % 4)),
        at: 1_000 + i as i64,
        payload: format!("{{\"n\":{i}}}"),
    };
    let read_back = |c: &mut Conn, after: i64, upto: i64| events::between(c, after, upto, 1_000).unwrap();
    // Not capturing: nothing to hand on.
    events::append(&mut c, &[event(0)]).unwrap();
    assert_eq!(events::take_appended(0, 1), None);
    // Several appends (full multi-row statements and single rows): the rows as stored.
    let before = events::head(&mut c).unwrap();
    events::capture_appended();
    let rows: Vec<NewEvent> = (0..37).map(event).collect();
    events::append(&mut c, &rows[..20]).unwrap();
    events::append(&mut c, &rows[20..]).unwrap();
    let upto = events::head(&mut c).unwrap();
    let handed = events::take_appended(before, upto).expect("the rows as appended");
    assert_eq!(handed, read_back(&mut c, before, upto));
    assert_eq!(handed.len(), 37);
    // Taken once: the capture has stopped.
    assert_eq!(events::take_appended(before, upto), None);
    // A parent named on stored rows afterwards: they must be read.
    let before = upto;
    events::capture_appended();
    events::append(&mut c, &[event(3), event(5)]).unwrap();
    events::set_parent(&mut c, before, &["job-1".to_string(), "job-2".to_string()], "late-parent").unwrap();
    let upto = events::head(&mut c).unwrap();
    assert_eq!(events::take_appended(before, upto), None);
    // The newest row deleted before the batch: AUTOINCREMENT skips its id, so the
    // count does not match the range and the rows are read.
    diesel::delete(super::schema::events::table.filter(super::schema::events::id.eq(upto))).execute(&mut c).unwrap();
    let before = events::head(&mut c).unwrap();
    events::capture_appended();
    events::append(&mut c, &[event(7)]).unwrap();
    let upto = events::head(&mut c).unwrap();
    assert_eq!(upto, before + 2, "AUTOINCREMENT never reuses the deleted id");
    assert_eq!(events::take_appended(before, upto), None);
    // A rolled-back batch's capture is dropped.
    events::capture_appended();
    events::append(&mut c, &[event(9)]).unwrap();
    events::discard_appended();
    let head = events::head(&mut c).unwrap();
    assert_eq!(events::take_appended(head - 1, head), None);
}

#[test]
fn event_retention_forgets_the_old_prefix_in_batches_and_keeps_undelivered_ones() {
    use super::events::{self, NewEvent, PRUNE_BATCH};
    use super::schema::events as e;
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 1).unwrap();
    let mut c = pool.get().unwrap();
    let (old, new, cutoff) = (100, 300, 200);
    let event = |at: i64| NewEvent {
        kind: "job.state_changed".into(),
        job_id: None,
        parent_id: None,
        node_id: None,
        at,
        payload: "{}".into(),
    };
    // Ids 1–3 old, 4 new, 5 old again (a clock stepped back), 6 new.
    events::append(&mut c, &[old, old, old, new, old, new].map(event)).unwrap();
    let ids = |c: &mut Conn| -> Vec<i64> { e::table.select(e::id).order(e::id).load(c).unwrap() };
    // Event 2 still owed to a webhook: only what is before it goes.
    diesel::sql_query(
        "INSERT INTO webhook_deliveries (webhook_id, event_id, ordering_key, state, next_attempt_at, created_at) \
         VALUES ('w', 2, '', 'pending', 0, 0)",
    )
    .execute(&mut c)
    .unwrap();
    assert_eq!(events::prune(&mut c, cutoff).unwrap(), 1);
    assert_eq!(ids(&mut c), vec![2, 3, 4, 5, 6]);
    diesel::sql_query("UPDATE webhook_deliveries SET state = 'delivered'").execute(&mut c).unwrap();
    // The old prefix ends at the first event to keep; the stepped-back one waits.
    assert_eq!(events::prune(&mut c, cutoff).unwrap(), 2);
    assert_eq!(ids(&mut c), vec![4, 5, 6]);
    assert_eq!(events::prune(&mut c, cutoff).unwrap(), 0);
    assert_eq!(events::prune(&mut c, new + 1).unwrap(), 3);
    // A backlog goes a batch per pass.
    let backlog: Vec<NewEvent> = (0..PRUNE_BATCH + 5).map(|_| event(old)).collect();
    for chunk in backlog.chunks(1_000) {
        events::append(&mut c, chunk).unwrap();
    }
    assert_eq!(events::prune(&mut c, cutoff).unwrap(), PRUNE_BATCH);
    assert_eq!(events::prune(&mut c, cutoff).unwrap(), 5);
    assert!(ids(&mut c).is_empty());
}

#[test]
fn retention_deletes_old_terminal_jobs_and_keeps_counts() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 2).unwrap();
    let mut c = pool.get().unwrap();
    for (id, age) in [("old", 10_000_000), ("new", 0)] {
        jobs::insert(&mut c, &new_job(id, JobState::Pending, 0)).unwrap();
        let running = transitions::claim(&mut c, id, "n").unwrap();
        let done = move |r: &mut JobRow| r.completed_at = Some(now_micros() - age);
        transitions::transition_row(&mut c, &running, JobState::Completed, done, "done").unwrap();
    }
    jobs::insert(&mut c, &new_job("live", JobState::Pending, 0)).unwrap();
    let before = jobs::state_entry_totals(&mut c).unwrap();
    let output = |job: &str| outputs::OutputRow {
        job_id: job.into(),
        name: "out.mp4".into(),
        attempt: 1,
        bytes: 3,
        sha256: "x".into(),
        content_type: "video/mp4".into(),
        location: format!("{job}/a1/out.mp4"),
        created_at: 0,
    };
    for job in ["old", "new"] {
        diesel::insert_into(schema::job_outputs::table).values(output(job)).execute(&mut c).unwrap();
    }
    let (deleted, forgotten) = jobs::delete_terminal_before(&mut c, now_micros() - 5_000_000, 100).unwrap();
    assert_eq!(deleted, vec![JobState::Completed]);
    assert_eq!(forgotten, vec![output("old")], "the deleted job's outputs go with it (their files are the caller's)");
    assert_eq!(outputs::list(&mut c, "new").unwrap(), vec![output("new")]);
    assert!(jobs::get(&mut c, "old").is_err());
    assert!(jobs::get(&mut c, "new").is_ok() && jobs::get(&mut c, "live").is_ok());
    let mut after = jobs::state_entry_totals(&mut c).unwrap();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(before, after, "all-time counts survive retention");
    assert_eq!(integrity_check(&mut c).unwrap(), "ok");
}

#[test]
fn retention_walks_the_jobs_submitted_before_its_cutoff_and_no_further() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 1).unwrap();
    let mut c = pool.get().unwrap();
    let (old, cutoff, young) = (100, 200, 300);
    // (id, submitted, finished as): in submission order.
    type Made<'a> = (&'a str, i64, Option<(JobState, i64)>);
    let jobs_made: [Made; 6] = [
        ("done-old", old, Some((JobState::Completed, old))),
        ("running-old", old, None),
        ("done-late", old, Some((JobState::Completed, young))),
        ("failed-old", old, Some((JobState::Failed, old + 1))),
        // Submitted after the cutoff, so it cannot have finished before it: the walk
        // stops here, and a (clock-stepped) row like it is left for a later pass.
        ("young", young, Some((JobState::Completed, old))),
        ("done-old-after-young", old, Some((JobState::Completed, old))),
    ];
    for (id, submitted, end) in jobs_made {
        jobs::insert(&mut c, &new_job(id, JobState::Pending, submitted)).unwrap();
        let running = transitions::claim(&mut c, id, "n").unwrap();
        if let Some((state, at)) = end {
            let change = move |r: &mut JobRow| r.completed_at = Some(at);
            transitions::transition_row(&mut c, &running, state, change, "end").unwrap();
        }
    }
    let left = |c: &mut Conn| -> Vec<String> {
        schema::jobs::table.select(schema::jobs::id).order(schema::jobs::seq).load(c).unwrap()
    };
    let (first, _) = jobs::delete_terminal_before(&mut c, cutoff, 1).unwrap();
    assert_eq!(first, vec![JobState::Completed], "a batch at a time, oldest first");
    let (second, _) = jobs::delete_terminal_before(&mut c, cutoff, 10).unwrap();
    assert_eq!(second, vec![JobState::Failed]);
    assert!(jobs::delete_terminal_before(&mut c, cutoff, 10).unwrap().0.is_empty());
    assert_eq!(left(&mut c), ["running-old", "done-late", "young", "done-old-after-young"]);
    // With no job submitted after the cutoff, the walk covers the table.
    let (all, _) = jobs::delete_terminal_before(&mut c, young + 1, 10).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(left(&mut c), ["running-old"]);
}

#[test]
fn the_finished_series_is_read_from_the_log_since_a_time_found_by_id() {
    use super::schema::job_events as je;
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 1).unwrap();
    let mut c = pool.get().unwrap();
    assert!(jobs::finished_since(&mut c, 0, 1000).unwrap().is_empty());
    // Ids 1–10 logged at 100, 200, … 1000; every third one a failure, the others
    // completions, and one start (not a finish) at 950.
    let logged = |i: i64, to_state| jobs::NewEvent {
        job_id: format!("j{i}"),
        from_state: Some(JobState::Processing),
        to_state,
        reason: String::new(),
        attempt: 1,
        node_id: None,
        at: i,
    };
    let mut rows: Vec<jobs::NewEvent> =
        (1..=10).map(|i| logged(100 * i, if i % 3 == 0 { JobState::Failed } else { JobState::Completed })).collect();
    rows.insert(9, logged(950, JobState::Processing));
    for row in &rows {
        diesel::insert_into(je::table).values(row).execute(&mut c).unwrap();
    }
    let sorted = |mut v: Vec<(i64, i64, i64)>| {
        v.sort();
        v
    };
    // since 450: at 500 (ok), 600 (failed), 700, 800 in interval 0; 900 (failed) too;
    // 1000 in interval 1.
    assert_eq!(sorted(jobs::finished_since(&mut c, 450, 1000).unwrap()), [(0, 3, 2), (1, 1, 0)]);
    assert_eq!(sorted(jobs::finished_since(&mut c, 500, 1000).unwrap()), [(0, 3, 2), (1, 1, 0)]);
    assert_eq!(sorted(jobs::finished_since(&mut c, 0, 500).unwrap()), [(0, 3, 1), (1, 3, 2), (2, 1, 0)]);
    assert!(jobs::finished_since(&mut c, 1001, 1000).unwrap().is_empty());
    // Gaps (retention removed jobs) do not change what is found.
    diesel::delete(je::table.filter(je::id.between(4, 6))).execute(&mut c).unwrap();
    assert_eq!(sorted(jobs::finished_since(&mut c, 450, 1000).unwrap()), [(0, 2, 1), (1, 1, 0)]);
}

#[test]
fn the_dispatch_window_runs_from_the_last_node_to_start_placing_to_the_last_completion() {
    use super::schema::job_events as je;
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 1).unwrap();
    let mut c = pool.get().unwrap();
    assert!(jobs::dispatch_window(&mut c).unwrap().is_none());
    let logged = |job: &str, to_state, node: &str, at| jobs::NewEvent {
        job_id: job.into(),
        from_state: None,
        to_state,
        reason: String::new(),
        attempt: 1,
        node_id: Some(node.into()),
        at,
    };
    // n1 places at 100 and 300, n2 first at 250: the window starts at 250. The
    // completion at 200 is before it; the failure at 900 is not a completion.
    let rows = [
        logged("a", JobState::Processing, "n1", 100),
        logged("a", JobState::Completed, "n1", 200),
        logged("b", JobState::Processing, "n2", 250),
        logged("c", JobState::Processing, "n1", 300),
        logged("b", JobState::Completed, "n2", 400),
        logged("c", JobState::Completed, "n1", 700),
        logged("d", JobState::Failed, "n2", 900),
    ];
    for row in &rows {
        diesel::insert_into(je::table).values(row).execute(&mut c).unwrap();
    }
    let w = jobs::dispatch_window(&mut c).unwrap().unwrap();
    assert_eq!((w.first, w.start, w.end, w.completed), (100, 250, 700, 2));
}

/// A fresh SQLite connection that notes the text of every statement it prepares
/// into its cache (diesel's `CacheQuery` event).
fn sqlite_noting_prepared_statements() -> (tempfile::TempDir, PooledConn, std::sync::Arc<std::sync::Mutex<Vec<String>>>)
{
    use diesel::connection::InstrumentationEvent;
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 1).unwrap();
    let mut c = pool.get().unwrap();
    let cached: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let seen = cached.clone();
    let AnyConnection::Sqlite(sqlite) = &mut *c else { unreachable!() };
    sqlite.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::CacheQuery { sql, .. } = event {
            seen.lock().unwrap().push(sql.to_string());
        }
    });
    (dir, c, cached)
}

#[test]
fn the_whole_row_update_is_prepared_once_per_connection() {
    let (_dir, mut c, cached) = sqlite_noting_prepared_statements();
    for id in ["a", "b", "c"] {
        jobs::insert(&mut c, &new_job(id, JobState::Pending, 0)).unwrap();
        let running = transitions::claim(&mut c, id, "n").unwrap();
        transitions::transition_row(&mut c, &running, JobState::Completed, |_| {}, "done").unwrap();
    }
    // Six UPDATEs in two shapes (a placement sets the node, a result keeps it):
    // each shape prepared once, then reused.
    let updates: Vec<String> =
        cached.lock().unwrap().iter().filter(|sql| sql.starts_with("UPDATE jobs SET status")).cloned().collect();
    assert_eq!(updates.len(), 2, "cached once per shape, then reused: {:?}", cached.lock().unwrap());
    assert!(updates[0].contains(" node_id = ") && !updates[1].contains(" node_id = "), "{updates:?}");
}

#[test]
fn a_placement_reads_and_logs_its_rows_in_prepared_multi_row_statements_in_order() {
    let (_dir, mut c, cached) = sqlite_noting_prepared_statements();
    // Two placements of 37 jobs each: 2 × 16 rows in multi-row statements, 5 alone.
    let ids: Vec<String> = (0..74).map(|i| format!("j{i:03}")).collect();
    for id in &ids {
        jobs::insert(&mut c, &new_job(id, JobState::Pending, 0)).unwrap();
    }
    let submitted = events::head(&mut c).unwrap();
    for round in ids.chunks(37) {
        for answer in transitions::claim_many(&mut c, round, "n").unwrap() {
            answer.unwrap();
        }
    }
    // A copy: the statements below report to the same lock.
    let cached = cached.lock().unwrap().clone();
    for table in ["job_events", "events"] {
        let mut inserts: Vec<usize> = cached
            .iter()
            .filter(|sql| sql.starts_with(&format!("INSERT INTO `{table}` ")))
            .map(|sql| sql.matches("(?").count())
            .collect();
        inserts.sort();
        assert_eq!(inserts, vec![1, 16], "{table}: each shape (one row, 16 rows) prepared once: {cached:?}");
    }
    // The rows and their graph parents are read 16 ids at a time (the last chunk
    // padded), one text each.
    let lookups: Vec<&String> =
        cached.iter().filter(|sql| sql.starts_with("SELECT") && sql.contains(" IN (")).collect();
    assert_eq!(lookups.len(), 2, "{cached:?}");
    assert!(["`jobs`", "`job_graph`"].iter().all(|t| lookups.iter().any(|sql| sql.contains(&format!("FROM {t}")))));
    // Every placement logged once, in order, in both the log and the outbox.
    for id in &ids {
        let log = jobs::events(&mut c, id).unwrap();
        let placed = log.iter().filter(|e| e.to_state == JobState::Processing).count();
        assert_eq!(placed, 1, "{id}: {log:?}");
    }
    let outbox = events::after(&mut c, submitted, 1_000).unwrap();
    let placed: Vec<&str> = outbox.iter().filter_map(|e| e.job_id.as_deref()).collect();
    assert_eq!(placed, ids.iter().map(String::as_str).collect::<Vec<_>>(), "outbox order");
}

#[test]
fn a_stale_second_copy_in_one_batch_is_refused_not_reported_written() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 1).unwrap();
    let mut c = pool.get().unwrap();
    jobs::insert(&mut c, &new_job("a", JobState::Pending, 0)).unwrap();
    let running = transitions::claim(&mut c, "a", "n").unwrap();
    let copy = |to: JobState| transitions::Transition {
        stored: running.clone(),
        to,
        change: Box::new(|_| {}),
        reason: "x".into(),
    };
    let answers =
        transitions::transition_many(&mut c, vec![copy(JobState::Completed), copy(JobState::Failed)]).unwrap();
    assert_eq!(answers[0].as_ref().unwrap().status, JobState::Completed);
    assert_eq!(conflict_state(answers[1].as_ref().unwrap_err()), Some(JobState::Completed));
    assert_eq!(jobs::events(&mut c, "a").unwrap().len(), 3, "one event per written transition");
}

#[test]
fn guarded_transition_names_the_current_state() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 2).unwrap();
    let mut c = pool.get().unwrap();
    let (pending, _) = jobs::insert(&mut c, &new_job("a", JobState::Pending, 0)).unwrap();
    transitions::claim(&mut c, "a", "n").unwrap();
    // A row read before the claim: writing it back is refused and writes nothing.
    let err = transitions::transition_row(&mut c, &pending, JobState::Canceled, |_| {}, "x").unwrap_err();
    assert_eq!(conflict_state(&err), Some(JobState::Processing));
    assert_eq!(jobs::get(&mut c, "a").unwrap().status, JobState::Processing);
    assert_eq!(jobs::events(&mut c, "a").unwrap().len(), 2);
}

#[test]
fn rows_kept_in_memory_match_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 2).unwrap();
    let mut c = pool.get().unwrap();
    let mut new = new_job("a", JobState::Pending, 7);
    new.idempotency_key = Some("k".into());
    let (inserted, created) = jobs::insert(&mut c, &new).unwrap();
    assert!(created);
    assert_eq!(inserted, jobs::get(&mut c, "a").unwrap(), "insert builds the stored row");
    let claimed = transitions::claim(&mut c, "a", "n1").unwrap();
    assert_eq!(claimed, jobs::get(&mut c, "a").unwrap(), "a claim returns the stored row");
    assert_eq!((claimed.status.as_str(), claimed.attempt, claimed.node_id.as_deref()), ("processing", 1, Some("n1")));
    let done = |r: &mut JobRow| {
        r.logs = Some("tail".into());
        r.progress = 100.0;
    };
    let completed = transitions::transition_row(&mut c, &claimed, JobState::Completed, done, "done").unwrap();
    assert_eq!(completed, jobs::get(&mut c, "a").unwrap(), "a transition returns the stored row");
    assert_eq!(completed.logs.as_deref(), Some("tail"));
    let events: Vec<_> = jobs::events(&mut c, "a").unwrap().into_iter().map(|e| (e.from_state, e.to_state)).collect();
    assert_eq!(
        events,
        vec![
            (None, JobState::Pending),
            (Some(JobState::Pending), JobState::Processing),
            (Some(JobState::Processing), JobState::Completed)
        ]
    );
    // A row kept from before a change is stale: writing it back is refused.
    let err = transitions::transition_row(&mut c, &claimed, JobState::Failed, |_| {}, "stale").unwrap_err();
    assert_eq!(conflict_state(&err), Some(JobState::Completed));
}

#[test]
fn a_placement_round_claims_only_runnable_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 2).unwrap();
    let mut c = pool.get().unwrap();
    for id in ["a", "b", "c"] {
        jobs::insert(&mut c, &new_job(id, JobState::Pending, 0)).unwrap();
    }
    transitions::claim(&mut c, "b", "n0").unwrap();
    let ids: Vec<String> = ["a", "b", "missing", "c"].iter().map(|s| s.to_string()).collect();
    let out = transitions::claim_many(&mut c, &ids, "n1").unwrap();
    assert_eq!(out[0].as_ref().unwrap().node_id.as_deref(), Some("n1"));
    assert_eq!(conflict_state(out[1].as_ref().unwrap_err()), Some(JobState::Processing));
    assert!(matches!(out[2], Err(DbError::NotFound)));
    assert_eq!(out[3].as_ref().unwrap().attempt, 1);
    assert_eq!(jobs::get(&mut c, "b").unwrap().node_id.as_deref(), Some("n0"), "a refused claim writes nothing");
    let last = jobs::events(&mut c, "c").unwrap().pop().unwrap();
    assert_eq!(
        (last.from_state.map(JobState::as_str), last.to_state.as_str(), last.node_id.as_deref()),
        (Some("pending"), "processing", Some("n1"))
    );
}

#[test]
fn a_batch_of_new_jobs_is_stored_in_order_with_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 2).unwrap();
    let mut c = pool.get().unwrap();
    let mut rejected = new_job("r", JobState::Rejected, 3);
    rejected.error = Some("no node".into());
    let batch = vec![new_job("x", JobState::Pending, 1), new_job("y", JobState::Pending, 2), rejected];
    let rows = jobs::insert_many(&mut c, &batch).unwrap();
    assert_eq!(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["x", "y", "r"]);
    assert!(rows[0].seq < rows[1].seq && rows[1].seq < rows[2].seq);
    for row in &rows {
        assert_eq!(row, &jobs::get(&mut c, &row.id).unwrap(), "the returned row is the stored row");
    }
    let reasons: Vec<String> = rows.iter().map(|r| jobs::events(&mut c, &r.id).unwrap()[0].reason.clone()).collect();
    assert_eq!(reasons, ["Submitted", "Submitted", "Rejected at submission"]);
}

#[test]
fn a_job_filtered_read_of_the_outbox_looks_through_a_bounded_stretch_and_misses_nothing() {
    use crate::domain::events::EventFilter;
    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 1).unwrap();
    let mut c = pool.get().unwrap();
    let event = |job: &str| events::NewEvent {
        kind: "job.progressed".into(),
        job_id: Some(job.into()),
        parent_id: None,
        node_id: None,
        at: 0,
        payload: "{}".into(),
    };
    // The followed job's events at the start, in the middle and at the end of a stretch
    // longer than one read looks through; other jobs' events everywhere else.
    let total = 2 * events::SCAN_PER_READ + 10;
    let rows: Vec<events::NewEvent> = (0..total)
        .map(|i| event(if i == 0 || i == events::SCAN_PER_READ + 3 || i == total - 1 { "followed" } else { "other" }))
        .collect();
    events::append(&mut c, &rows).unwrap();
    let head = events::head(&mut c).unwrap();
    let filter = EventFilter::new(&[], &["followed".into()], &[], &[]).unwrap();
    let (mut cursor, mut found, mut reads) = (0, Vec::new(), 0);
    while cursor < head {
        let (page, read_to) = events::matching(&mut c, &filter, cursor, head, 500).unwrap();
        assert!(read_to > cursor && read_to - cursor <= events::SCAN_PER_READ, "{cursor} → {read_to}");
        found.extend(page.iter().map(|e| e.id));
        cursor = read_to;
        reads += 1;
    }
    assert_eq!(found, vec![1, events::SCAN_PER_READ + 4, total]);
    assert_eq!(reads, 3);
}
