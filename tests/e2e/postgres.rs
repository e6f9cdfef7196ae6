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
