//! Persistence: diesel over an r2d2 pool, SQLite embedded by default.
//!
//! Reads run on pool connections (WAL lets them proceed beside the writer); every
//! write goes through the `DbExecutor` actor, the database's only writer, which
//! applies them in group-committed transactions.

pub mod jobs;
pub mod nodes;
pub mod schema;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use std::path::Path;
use std::time::Duration;

pub type Conn = SqliteConnection;
pub type DbPool = Pool<ConnectionManager<Conn>>;
pub type PooledConn = PooledConnection<ConnectionManager<Conn>>;

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// A storage failure, classified for the API: unavailable (503) vs the rest.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    /// Disk full, database locked past the busy timeout, I/O error, pool exhausted.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A guarded write found the row in another state than expected.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<diesel::result::Error> for DbError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::NotFound => DbError::NotFound,
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                DbError::Conflict(info.message().to_string())
            }
            Error::DatabaseError(_, info) => classify_message(info.message()),
            other => classify_message(&other.to_string()),
        }
    }
}

impl From<r2d2::Error> for DbError {
    fn from(e: r2d2::Error) -> Self {
        DbError::Unavailable(e.to_string())
    }
}

fn classify_message(msg: &str) -> DbError {
    let m = msg.to_ascii_lowercase();
    let unavailable = ["full", "locked", "busy", "disk i/o", "unable to open", "readonly", "read-only", "no space", "out of memory"];
    if unavailable.iter().any(|p| m.contains(p)) {
        DbError::Unavailable(msg.to_string())
    } else {
        DbError::Other(msg.to_string())
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// Microseconds since the Unix epoch: the one time format stored.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// How durable a COMMIT is on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Synchronous {
    /// fsync the WAL at every commit: survives power loss.
    Full,
    /// fsync at checkpoints only: survives a crash of the master, not of the machine.
    Normal,
}

#[derive(Debug)]
struct SqlitePragmas {
    synchronous: Synchronous,
}

impl CustomizeConnection<Conn, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut Conn) -> Result<(), diesel::r2d2::Error> {
        let sync = match self.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = 5000; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Open (creating if needed) the SQLite database at `path`: WAL switched on once on a
/// lone connection, migrations applied, then the pool built.
pub fn open_sqlite(path: &Path, synchronous: Synchronous, pool_size: u32) -> anyhow::Result<DbPool> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .map_err(|e| anyhow::anyhow!("cannot create database directory {}: {e}", parent.display()))?;
        }
    }
    let url = path.to_string_lossy().to_string();
    {
        let mut conn = Conn::establish(&url)
            .map_err(|e| anyhow::anyhow!("cannot open SQLite database {url}: {e}"))?;
        conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;")
            .map_err(|e| anyhow::anyhow!("cannot switch {url} to WAL: {e}"))?;
        conn.run_pending_migrations(SQLITE_MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("migrations failed on {url}: {e}"))?;
    }
    let pool = Pool::builder()
        .max_size(pool_size)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(5))
        .connection_customizer(Box::new(SqlitePragmas { synchronous }))
        .build(ConnectionManager::<Conn>::new(url.clone()))
        .map_err(|e| anyhow::anyhow!("cannot open a connection pool on {url}: {e}"))?;
    Ok(pool)
}

/// A trivial read, for health checks.
pub fn ping(conn: &mut Conn) -> DbResult<()> {
    diesel::sql_query("SELECT 1").execute(conn)?;
    Ok(())
}

/// `PRAGMA integrity_check`, for start-up logs and tests.
pub fn integrity_check(conn: &mut Conn) -> DbResult<String> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }
    let rows: Vec<Row> = diesel::sql_query("PRAGMA integrity_check").load(conn)?;
    Ok(rows.into_iter().map(|r| r.integrity_check).collect::<Vec<_>>().join("; "))
}

#[cfg(test)]
mod tests {
    use super::jobs::{self, JobChanges, NewJob};
    use super::*;
    use crate::domain::state::JobState;

    fn new_job(id: &str, status: JobState, at: i64) -> NewJob {
        NewJob {
            id: id.into(),
            scenario: String::new(),
            confidence: String::new(),
            engine: "auto".into(),
            queue: "default".into(),
            priority: "medium".into(),
            parameters: "{}".into(),
            status: status.as_str().into(),
            max_retries: 3,
            created_at: at,
            queued_at: at,
            idempotency_key: None,
            failure_reason: None,
            error: None,
            completed_at: None,
            updated_at: at,
        }
    }

    #[test]
    fn retention_deletes_old_terminal_jobs_and_keeps_counts() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 2).unwrap();
        let mut c = pool.get().unwrap();
        for (id, age) in [("old", 10_000_000), ("new", 0)] {
            jobs::insert(&mut c, &new_job(id, JobState::Pending, 0)).unwrap();
            jobs::claim(&mut c, id, "n").unwrap();
            let done = JobChanges { completed_at: Some(Some(now_micros() - age)), ..Default::default() };
            jobs::transition(&mut c, id, JobState::Processing, JobState::Completed, done, "done").unwrap();
        }
        jobs::insert(&mut c, &new_job("live", JobState::Pending, 0)).unwrap();
        let before = jobs::state_entry_totals(&mut c).unwrap();
        let deleted = jobs::delete_terminal_before(&mut c, now_micros() - 5_000_000, 100).unwrap();
        assert_eq!(deleted, vec!["completed".to_string()]);
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
    fn guarded_transition_names_the_current_state() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open_sqlite(&dir.path().join("t.db"), Synchronous::Normal, 2).unwrap();
        let mut c = pool.get().unwrap();
        jobs::insert(&mut c, &new_job("a", JobState::Pending, 0)).unwrap();
        let err = jobs::transition(&mut c, "a", JobState::Processing, JobState::Completed, JobChanges::default(), "x").unwrap_err();
        assert_eq!(jobs::conflict_state(&err), Some(JobState::Pending));
        assert_eq!(jobs::events(&mut c, "a").unwrap().len(), 1);
    }
}
