//! Issue 8: both backends' migrations on PostgreSQL (several masters on one database:
//! `ha.rs`).

use crate::harness::*;
use std::time::Duration;

fn versions(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// A one-connection pool on a new database of the harness's PostgreSQL (None: no server).
fn fresh_pg_pool(name: &str) -> Option<ffrtmp::db::DbPool> {
    let admin = pg_or_skip()?;
    let url = ffrtmp::db::create_postgres_database(&admin, &format!("ffrtmp_{name}_{}", std::process::id())).unwrap();
    Some(ffrtmp::db::open(&ffrtmp::db::DatabaseUrl::Postgres(url), ffrtmp::db::Synchronous::Normal, 1).unwrap())
}

fn round_trip(url: &ffrtmp::db::DatabaseUrl) {
    let pool = ffrtmp::db::open(url, ffrtmp::db::Synchronous::Normal, 1).unwrap();
    let mut c = pool.get().unwrap();
    let reverted = ffrtmp::db::revert_migrations(&mut c).unwrap();
    assert_eq!(reverted.len(), versions("migrations/sqlite").len(), "down.sql of every migration ran");
    let applied = ffrtmp::db::run_migrations(&mut c).unwrap();
    assert_eq!(applied.len(), reverted.len(), "up again");
    assert_eq!(ffrtmp::db::integrity_check(&mut c).unwrap(), "ok");
}

#[test]
fn migrations_match_and_round_trip_on_both_backends() {
    let sqlite = versions("migrations/sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, versions("migrations/postgres"), "both backends hold the same named migrations");
    for v in &sqlite {
        for b in ["sqlite", "postgres"] {
            for f in ["up.sql", "down.sql"] {
                let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("migrations/{b}/{v}/{f}"));
                assert!(p.exists(), "{}", p.display());
            }
        }
    }
    let dir = tmpdir();
    round_trip(&ffrtmp::db::DatabaseUrl::Sqlite(dir.path().join("m.db")));
    if let Some(admin) = pg_or_skip() {
        let url = ffrtmp::db::create_postgres_database(&admin, &format!("ffrtmp_mig_{}", std::process::id())).unwrap();
        round_trip(&ffrtmp::db::DatabaseUrl::Postgres(url));
    }
}

#[test]
fn bad_database_urls_fail_fast_with_the_reason() {
    let cases = [
        ("postgres://nobody@127.0.0.1:1/x", "Connection refused"),
        ("mysql://x/y", "must start with postgres://"),
        ("sqlite://", "needs a file path"),
    ];
    for (url, want) in cases {
        let started = std::time::Instant::now();
        let o = std::process::Command::new(BIN)
            .args(["master", "--port", "0", "--metrics-port", "0", "--database-url", url])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(err.contains(want), "{url}: {err}");
        assert!(started.elapsed() < Duration::from_secs(10), "no 30 s pool timeout");
    }
    // The password never shows in errors.
    let o = std::process::Command::new(BIN)
        .args(["master", "--port", "0", "--metrics-port", "0", "--database-url", "postgres://u:s3cret@127.0.0.1:1/x"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&o.stderr).contains("s3cret"));
}

/// The writer's batch statements on PostgreSQL (claims, the guarded whole-row UPDATE,
/// the job log with the outbox, all one array per column) are parsed once per connection
/// whatever a batch's size — and still write exactly what they say: a row read before
/// another change is not written, log and outbox rows keep their order, outbox rows name
/// the job's graph parent.
#[test]
fn batch_statements_are_prepared_once_per_connection_on_postgres() {
    use diesel::connection::{Connection, InstrumentationEvent};
    use ffrtmp::db::{AnyConnection, jobs, transitions};
    use ffrtmp::domain::state::JobState;
    use std::sync::{Arc, Mutex};
    let Some(pool) = fresh_pg_pool("prep") else { return };
    let mut c = pool.get().unwrap();
    let cached: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = cached.clone();
    let AnyConnection::Postgresql(pg) = &mut *c else { unreachable!() };
    pg.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::CacheQuery { sql, .. } = event {
            seen.lock().unwrap().push(sql.to_string());
        }
    });
    let job = |id: String| jobs::JobRow {
        id,
        parameters: "{}".into(),
        status: JobState::Pending,
        max_retries: 3,
        ..jobs::JobRow::default()
    };
    let first_event = ffrtmp::db::events::head(&mut c).unwrap();
    let mut all = Vec::new();
    for (round, size) in [1usize, 3, 5].into_iter().enumerate() {
        let ids: Vec<String> = (0..size).map(|i| format!("r{round}-j{i}")).collect();
        let rows: Vec<jobs::JobRow> = ids.iter().cloned().map(job).collect();
        let since = ffrtmp::db::events::head(&mut c).unwrap();
        jobs::insert_many(&mut c, &rows).unwrap();
        // The first job of each round is a graph child: its outbox rows name its parent.
        let child = ffrtmp::db::graph::GraphRow {
            job_id: ids[0].clone(),
            parent_id: Some(format!("parent-{round}")),
            after_ids: "[]".into(),
            is_parent: false,
            stage: "encode".into(),
            label: "child".into(),
            weight: 1.0,
        };
        ffrtmp::db::graph::insert(&mut c, since, &[child]).unwrap();
        let claimed: Vec<jobs::JobRow> =
            transitions::claim_many(&mut c, &ids, "n1").unwrap().into_iter().map(Result::unwrap).collect();
        assert!(claimed.iter().all(|r| r.status == JobState::Processing && r.attempt == 1));
        // A claim of a job already placed is refused, and writes nothing.
        assert!(transitions::claim_many(&mut c, &ids[..1], "n2").unwrap()[0].is_err());
        let mut batch: Vec<transitions::Transition> = claimed
            .iter()
            .map(|r| transitions::Transition {
                stored: r.clone(),
                to: JobState::Completed,
                change: Box::new(|r: &mut jobs::JobRow| r.progress = 100.0),
                reason: "done".into(),
            })
            .collect();
        // The same job again, as read before the first transition: not written.
        batch.push(transitions::Transition {
            stored: claimed[0].clone(),
            to: JobState::Failed,
            change: Box::new(|_| {}),
            reason: "stale".into(),
        });
        let answers = transitions::transition_many(&mut c, batch).unwrap();
        assert!(answers[..size].iter().all(|a| a.as_ref().is_ok_and(|r| r.status == JobState::Completed)));
        assert!(answers[size].is_err(), "the stale copy is refused");
        for id in &ids {
            let stored = jobs::get(&mut c, id).unwrap();
            assert_eq!(
                (stored.status, stored.node_id.as_deref(), stored.progress),
                (JobState::Completed, Some("n1"), 100.0)
            );
            let log: Vec<JobState> = jobs::events(&mut c, id).unwrap().iter().map(|e| e.to_state).collect();
            assert_eq!(log, [JobState::Pending, JobState::Processing, JobState::Completed], "{id}");
        }
        all.extend(ids);
    }
    // The outbox holds each job's events in the order they happened.
    let outbox = ffrtmp::db::events::after(&mut c, first_event, 1_000).unwrap();
    for id in &all {
        let kinds: Vec<&str> =
            outbox.iter().filter(|e| e.job_id.as_deref() == Some(id.as_str())).map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["job.submitted", "job.started", "job.completed"], "{id}");
        let parents: Vec<Option<&str>> = outbox
            .iter()
            .filter(|e| e.job_id.as_deref() == Some(id.as_str()) && e.kind != "job.submitted")
            .map(|e| e.parent_id.as_deref())
            .collect();
        let parent = id.strip_suffix("-j0").map(|r| format!("parent-{}", &r[1..]));
        assert_eq!(parents, vec![parent.as_deref(); 2], "{id}: the parent joined from job_graph");
    }
    let cached = cached.lock().unwrap();
    for statement in ["UPDATE jobs AS j SET", "WITH logged AS (INSERT INTO job_events"] {
        let n = cached.iter().filter(|sql| sql.starts_with(statement)).count();
        assert_eq!(n, 1, "{statement}… prepared once, then reused: {cached:?}");
    }
}

/// Issue 19: a job's move into `completed` rewrites its row, and PostgreSQL indexes every
/// new row version; the listing indexes by status, queue and priority leave completed
/// jobs out, so that transition writes fewer index entries. Every other listing still
/// reads those indexes (the planner proves `status = 'failed'` implies the predicate),
/// and completed jobs stay listable.
#[test]
fn listing_indexes_leave_completed_jobs_out_but_serve_every_other_status_on_postgres() {
    use diesel::RunQueryDsl;
    use ffrtmp::db::{AnyConnection, jobs};
    use ffrtmp::domain::state::JobState;
    let Some(pool) = fresh_pg_pool("lidx") else { return };
    let mut c = pool.get().unwrap();
    // A farm's table: mostly completed jobs, a few of every other kind.
    let statuses = [JobState::Failed, JobState::Queued, JobState::Processing];
    let status_of = |i: usize| if i % 100 < statuses.len() { statuses[i % 100] } else { JobState::Completed };
    for chunk in (0..3_000).collect::<Vec<usize>>().chunks(500) {
        let rows: Vec<jobs::JobRow> = chunk
            .iter()
            .map(|&i| jobs::JobRow {
                id: format!("j{i}"),
                parameters: "{}".into(),
                status: status_of(i),
                ..jobs::JobRow::default()
            })
            .collect();
        jobs::insert_many(&mut c, &rows).unwrap();
    }
    for (status, n) in [(JobState::Completed, 2_910), (JobState::Failed, 30), (JobState::Queued, 30)] {
        let filter = jobs::JobFilter { status: Some(status), limit: 5_000, ..jobs::JobFilter::default() };
        let listed = jobs::list(&mut c, &filter).unwrap();
        assert_eq!(listed.len(), n, "{status:?}");
        assert!(listed.iter().all(|r| r.status == status));
    }
    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text)]
        line: String,
    }
    let AnyConnection::Postgresql(pg) = &mut *c else { unreachable!() };
    diesel::sql_query(
        "CREATE FUNCTION plan_of(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$ DECLARE r record; \
         BEGIN FOR r IN EXECUTE 'EXPLAIN ' || q LOOP RETURN NEXT r.\"QUERY PLAN\"; END LOOP; END $$",
    )
    .execute(pg)
    .unwrap();
    diesel::sql_query("ANALYZE jobs").execute(pg).unwrap();
    // Whatever the table's size, a plan that can use the index does once scans cost more.
    diesel::sql_query("SET enable_seqscan = off").execute(pg).unwrap();
    let plan = |pg: &mut diesel::PgConnection, query: &str| -> String {
        let lines: Vec<Line> =
            diesel::sql_query("SELECT plan_of($1) AS line").bind::<diesel::sql_types::Text, _>(query).load(pg).unwrap();
        lines.into_iter().map(|l| l.line).collect::<Vec<_>>().join("\n")
    };
    for (query, index) in [
        ("SELECT * FROM jobs WHERE status = 'failed' ORDER BY seq DESC LIMIT 50", "jobs_status_seq"),
        ("SELECT * FROM jobs WHERE status = 'queued' ORDER BY seq DESC LIMIT 50", "jobs_status_seq"),
        ("SELECT * FROM jobs WHERE queue = 'batch' AND status = 'queued' ORDER BY seq DESC LIMIT 50", "jobs_"),
        (
            "SELECT queue, priority, count(*) FROM jobs WHERE status IN ('pending', 'queued') GROUP BY 1, 2",
            "jobs_status_seq",
        ),
    ] {
        let p = plan(pg, query);
        assert!(p.contains(index), "{query}:\n{p}");
        assert!(!p.contains("Seq Scan"), "{query}:\n{p}");
    }
    // The index entries themselves (VACUUM counts them): the completed jobs have none.
    diesel::sql_query("SET enable_seqscan = on").execute(pg).unwrap();
    diesel::sql_query("VACUUM jobs").execute(pg).unwrap();
    #[derive(diesel::QueryableByName)]
    struct Entries {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    for index in ["jobs_status_seq", "jobs_queue_seq", "jobs_priority_seq"] {
        let e: Entries = diesel::sql_query("SELECT reltuples::bigint AS n FROM pg_class WHERE relname = $1")
            .bind::<diesel::sql_types::Text, _>(index)
            .get_result(pg)
            .unwrap();
        assert_eq!(e.n, 90, "{index} holds the 90 jobs that are not completed");
    }
}
