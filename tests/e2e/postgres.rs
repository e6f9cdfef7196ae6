//! Issue 8: both backends' migrations, and two masters on one PostgreSQL database.

use crate::harness::*;
use serde_json::json;
use std::collections::HashSet;
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

fn pg_or_skip() -> Option<String> {
    let url = pg_admin_url();
    if url.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must be able to start PostgreSQL (root + postgresql-15)");
        eprintln!("skipped: no PostgreSQL (needs root and PostgreSQL 15, or FFRTMP_TEST_PG_URL)");
    }
    url
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

#[test]
fn two_masters_on_one_database_never_hand_a_job_twice() {
    let Some(admin) = pg_or_skip() else { return };
    let url = ffrtmp::db::create_postgres_database(&admin, &format!("ffrtmp_two_{}", std::process::id())).unwrap();
    let a = TestMaster::start(&["--database-url", &url]);
    for _ in 0..120 {
        a.api().submit(json!({}));
    }
    // B starts on the same database and indexes the same queued jobs.
    let b = TestMaster::start(&["--database-url", &url]);
    let masters = [a.api(), b.api()];
    for (i, api) in masters.iter().enumerate() {
        for n in 0..4 {
            api.register(&format!("m{i}-n{n}"), json!({"encoders": ["libx264"], "max_concurrent_jobs": 64}));
        }
    }
    let handles: Vec<_> = (0..8)
        .map(|k| {
            let api = masters[k % 2].clone();
            let node = format!("m{}-n{}", k % 2, k / 2);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let (_, j) = api.get(&format!("/jobs/next?node_id={node}&wait=0.5&max=8"));
                    let batch: Vec<String> =
                        j["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()).collect();
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(batch);
                }
            })
        })
        .collect();
    let all: Vec<String> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a job was handed to two workers");
    assert_eq!(all.len(), 120, "every job placed exactly once");
}
