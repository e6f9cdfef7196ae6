//! Persistence: diesel over an r2d2 pool, SQLite embedded by default.
//!
//! Reads run on pool connections (WAL lets them proceed beside the writer); every
//! write goes through the `DbExecutor` actor, the database's only writer, which
//! applies them in group-committed transactions.

/// Run the same diesel code on the concrete connection of either backend.
///
/// For the hot write paths, and for what the multi-backend type cannot express (batch
/// inserts): on a concrete connection a statement has a static query id, so diesel
/// finds its cached prepared statement by type instead of rebuilding the SQL text on
/// every execution to look it up.
#[macro_export]
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::AnyConnection::Sqlite($c) => $body,
            $crate::db::AnyConnection::Postgresql($c) => $body,
        }
    };
}

pub mod events;
pub mod graph;
pub mod jobs;
pub mod leader;
pub(crate) mod lookup;
pub mod nodes;
pub mod outputs;
pub(crate) mod prepared;
pub mod schema;
pub mod sessions;
pub mod templates;
pub mod transitions;
pub mod types;
pub mod uploads;
pub mod webhooks;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::r2d2::{Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One connection type for both backends; backend-specific SQL matches on the variant.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

pub type Conn = AnyConnection;
pub type DbPool = Pool<ConnManager>;
pub type PooledConn = PooledConnection<ConnManager>;

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    /// `postgres://…`/`postgresql://…` → PostgreSQL; `sqlite://PATH` → SQLite; anything
    /// else is refused with a sentence saying what is accepted.
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.to_string()))
        } else if let Some(p) = url.strip_prefix("sqlite://") {
            if p.is_empty() {
                Err("sqlite:// needs a file path, e.g. sqlite:///var/lib/ffrtmp/ffrtmp.db".into())
            } else {
                Ok(DatabaseUrl::Sqlite(PathBuf::from(p)))
            }
        } else {
            Err(format!("database URL '{}' must start with postgres://, postgresql:// or sqlite://", redact(url)))
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, DatabaseUrl::Postgres(_))
    }

    /// Printable form (password hidden).
    pub fn display(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            DatabaseUrl::Postgres(u) => redact(u),
        }
    }
}

/// Hide the password of a URL for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A storage failure, classified for the API: unavailable (503) vs the rest.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    /// Disk full, database locked past the busy timeout, I/O error, pool exhausted.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A guarded write found the row in another state than expected: `current` is the
    /// state the job is really in, when the write knows it (typed, never parsed back out
    /// of `message`).
    #[error("conflict: {message}")]
    Conflict { current: Option<crate::domain::state::JobState>, message: String },
    /// The transition gate refused an operator's action; nothing was written.
    #[error("{0}")]
    Refused(crate::domain::state::Refusal),
    #[error("database error: {0}")]
    Other(String),
}

impl DbError {
    /// A logical refusal (not found, a conflict, the transition gate): checked before
    /// anything was written, so the rest of its transaction can still commit.
    pub fn is_refusal(&self) -> bool {
        matches!(self, DbError::NotFound | DbError::Conflict { .. } | DbError::Refused(_))
    }

    /// A job was found in `current` where the write expected something else.
    pub fn job_in(current: crate::domain::state::JobState, message: impl Into<String>) -> Self {
        DbError::Conflict { current: Some(current), message: message.into() }
    }
}

impl From<diesel::result::Error> for DbError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::NotFound => DbError::NotFound,
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                DbError::Conflict { current: None, message: info.message().to_string() }
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
    let unavailable =
        ["full", "locked", "busy", "disk i/o", "unable to open", "readonly", "read-only", "no space", "out of memory"];
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

/// r2d2 manager that opens the right backend for the URL (diesel's derived
/// `establish` would try each backend and hide the real error).
#[derive(Debug, Clone)]
pub struct ConnManager {
    url: DatabaseUrl,
    synchronous: Synchronous,
}

/// SQLite's library-wide settings, once per process, before its first connection:
/// - Multi-thread mode: no mutex around each connection. The library is built
///   serialized, so every `bind`, `step` and `column` call locked and unlocked one; but a
///   pooled connection is only ever used by one thread at a time (diesel's connection is
///   `!Sync`), so those locks guard nothing here.
/// - No memory statistics: kept by default, they take a process-wide mutex around
///   every allocation SQLite makes, and nothing reads them.
///
/// Together the two locks were a tenth of the writer's CPU (bench P18, `perf`). Called
/// after SQLite started (some other code opened a connection first), the settings are
/// refused and SQLite stays serialized — slower, never wrong.
fn configure_sqlite_library() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use libsqlite3_sys as ffi;
        // SAFETY: sqlite3_config before sqlite3_initialize, with the argument each
        // option documents (none; one int); from one thread (`Once`).
        let codes = unsafe {
            [ffi::sqlite3_config(ffi::SQLITE_CONFIG_MULTITHREAD), ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0)]
        };
        if codes.iter().any(|&c| c != ffi::SQLITE_OK) {
            log::debug!("SQLite was started before it could be configured (codes {codes:?}); it stays serialized");
        }
    });
}

pub(crate) fn connect(url: &DatabaseUrl, synchronous: Synchronous) -> Result<AnyConnection, diesel::ConnectionError> {
    match url {
        DatabaseUrl::Postgres(u) => Ok(AnyConnection::Postgresql(diesel::PgConnection::establish(u)?)),
        DatabaseUrl::Sqlite(p) => {
            configure_sqlite_library();
            let mut c = diesel::SqliteConnection::establish(&p.to_string_lossy())?;
            let sync = match synchronous {
                Synchronous::Full => "FULL",
                Synchronous::Normal => "NORMAL",
            };
            c.batch_execute(&format!(
                "PRAGMA busy_timeout = 5000; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
            ))
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(AnyConnection::Sqlite(c))
        }
    }
}

impl r2d2::ManageConnection for ConnManager {
    type Connection = AnyConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, Self::Error> {
        connect(&self.url, self.synchronous).map_err(diesel::r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), Self::Error> {
        conn.batch_execute("SELECT 1").map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, _: &mut AnyConnection) -> bool {
        false
    }
}

/// Run the embedded migrations of the connection's backend.
pub fn run_migrations(conn: &mut AnyConnection) -> anyhow::Result<Vec<String>> {
    let applied = match conn {
        AnyConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS),
        AnyConnection::Postgresql(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(applied.iter().map(|v| v.to_string()).collect())
}

/// Revert every migration (down.sql), for the migration round-trip test.
pub fn revert_migrations(conn: &mut AnyConnection) -> anyhow::Result<Vec<String>> {
    let reverted = match conn {
        AnyConnection::Sqlite(c) => c.revert_all_migrations(SQLITE_MIGRATIONS),
        AnyConnection::Postgresql(c) => c.revert_all_migrations(POSTGRES_MIGRATIONS),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(reverted.iter().map(|v| v.to_string()).collect())
}

/// Open a database: connect once (a clear error naming the URL if that fails, not a
/// pool timeout), switch SQLite to WAL on that lone connection, apply migrations, then
/// build the pool.
pub fn open(url: &DatabaseUrl, synchronous: Synchronous, pool_size: u32) -> anyhow::Result<DbPool> {
    if let DatabaseUrl::Sqlite(path) = url
        && let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow::anyhow!("cannot create database directory {}: {e}", parent.display()))?;
    }
    let shown = url.display();
    {
        let mut conn = connect(url, synchronous)
            .map_err(|e| anyhow::anyhow!("cannot connect to {shown}: {}", e.to_string().trim()))?;
        if let AnyConnection::Sqlite(c) = &mut conn {
            c.batch_execute("PRAGMA journal_mode = WAL;")
                .map_err(|e| anyhow::anyhow!("cannot switch {shown} to WAL: {e}"))?;
        }
        // Masters starting together on one PostgreSQL database migrate one at a time
        // (the lock ends with this connection).
        if let AnyConnection::Postgresql(c) = &mut conn {
            c.batch_execute(&format!("SELECT pg_advisory_lock({})", leader::MIGRATION_LOCK))
                .map_err(|e| anyhow::anyhow!("cannot lock {shown} for its migrations: {e}"))?;
        }
        run_migrations(&mut conn).map_err(|e| anyhow::anyhow!("migrations failed on {shown}: {e}"))?;
    }
    Pool::builder()
        .max_size(pool_size)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(5))
        .build(ConnManager { url: url.clone(), synchronous })
        .map_err(|e| anyhow::anyhow!("cannot open a connection pool on {shown}: {e}"))
}

/// SQLite at `path` (tests, tools).
pub fn open_sqlite(path: &Path, synchronous: Synchronous, pool_size: u32) -> anyhow::Result<DbPool> {
    open(&DatabaseUrl::Sqlite(path.to_path_buf()), synchronous, pool_size)
}

/// Settings for the one writer connection: on SQLite an 8 MiB page cache (default 2 MiB),
/// so the index pages a busy farm touches stay in memory instead of being re-read. Not
/// more: a commit whose inserts split a B-tree page walks the whole cache's hash table
/// (SQLite renumbers the split pages through the never-used lock page's number, and the
/// commit's cache truncation then cannot tell which pages to drop), so at 32 MiB that walk
/// took a tenth of the writer's time under dispatch load and bench P18 ran ~8 % slower.
/// And a checkpoint every 4,000 WAL pages (16 MiB) instead of 1,000: the index and tail
/// pages every commit rewrites are copied into the database once per checkpoint, so
/// fewer checkpoints copy fewer pages (P18 ~3 % faster, alternating).
pub fn tune_writer(conn: &mut AnyConnection) -> QueryResult<()> {
    match conn {
        AnyConnection::Sqlite(c) => c.batch_execute("PRAGMA cache_size = -8192; PRAGMA wal_autocheckpoint = 4000;"),
        AnyConnection::Postgresql(_) => Ok(()),
    }
}

/// The writer's settings when a checkpointer thread copies the log
/// (`actors::checkpointer`): its own automatic checkpoint only as a backstop, at 16,000
/// pages (64 MiB) instead of 4,000.
pub fn leave_checkpoints_to_another_thread(conn: &mut AnyConnection) -> QueryResult<()> {
    match conn {
        AnyConnection::Sqlite(c) => c.batch_execute("PRAGMA wal_autocheckpoint = 16000;"),
        AnyConnection::Postgresql(_) => Ok(()),
    }
}

/// Copy what the write-ahead log holds into the database file without waiting for
/// readers or the writer (SQLite's passive checkpoint); PostgreSQL checkpoints itself.
pub fn checkpoint_passive(conn: &mut AnyConnection) -> DbResult<()> {
    match conn {
        AnyConnection::Sqlite(c) => Ok(c.batch_execute("PRAGMA wal_checkpoint(PASSIVE);")?),
        AnyConnection::Postgresql(_) => Ok(()),
    }
}

/// Begin the write transaction of a group commit: `BEGIN IMMEDIATE` on SQLite (take the
/// write lock now, not at the first write), `BEGIN` on PostgreSQL, through diesel's
/// transaction manager so its bookkeeping stays right.
pub fn begin_write(conn: &mut AnyConnection) -> QueryResult<()> {
    match conn {
        AnyConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE"),
        AnyConnection::Postgresql(c) => AnsiTransactionManager::begin_transaction(c),
    }
}

pub fn commit_write(conn: &mut AnyConnection) -> QueryResult<()> {
    <AnyConnection as Connection>::TransactionManager::commit_transaction(conn)
}

pub fn rollback_write(conn: &mut AnyConnection) -> QueryResult<()> {
    <AnyConnection as Connection>::TransactionManager::rollback_transaction(conn)
}

/// Create a fresh PostgreSQL database next to `admin_url` (tests, bench); returns its URL.
pub fn create_postgres_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let mut c = diesel::PgConnection::establish(admin_url)
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", redact(admin_url)))?;
    c.batch_execute(&format!("CREATE DATABASE \"{name}\""))?;
    let base = match admin_url.rfind('/') {
        Some(i) if i > admin_url.find("://").map(|s| s + 2).unwrap_or(0) => &admin_url[..i],
        _ => admin_url,
    };
    Ok(format!("{base}/{name}"))
}

/// A trivial read, for health checks.
pub fn ping(conn: &mut Conn) -> DbResult<()> {
    diesel::sql_query("SELECT 1").execute(conn)?;
    Ok(())
}

/// `PRAGMA integrity_check` on SQLite; PostgreSQL checks its own pages, so a query that
/// reads every table must simply succeed there.
pub fn integrity_check(conn: &mut Conn) -> DbResult<String> {
    if let AnyConnection::Postgresql(_) = conn {
        diesel::sql_query(
            "SELECT count(*) FROM jobs, (SELECT count(*) FROM job_events) e, (SELECT count(*) FROM nodes) n",
        )
        .execute(conn)?;
        return Ok("ok".into());
    }
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }
    let rows: Vec<Row> = diesel::sql_query("PRAGMA integrity_check").load(conn)?;
    Ok(rows.into_iter().map(|r| r.integrity_check).collect::<Vec<_>>().join("; "))
}

#[cfg(test)]
mod tests;
