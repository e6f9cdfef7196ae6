//! The checkpointer (own thread, SQLite only): copies the write-ahead log into the
//! database file off the writer's thread.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold, on
//! the connection that committed: the writer stalled there for the copy and its two
//! fsyncs while the writes queued behind it waited (a short dispatch burst — bench P2 at
//! 1k queued, ~50 ms — showed 5 ms gaps with no commit at all). Here a passive
//! checkpoint runs on a pool connection after every [`COMMITS_PER_CHECKPOINT`] commits
//! the writer reports; the writer goes on appending meanwhile (WAL mode allows it) and
//! starts the log over once a checkpoint has copied all of it. The writer keeps an
//! automatic checkpoint at a higher threshold (`db::leave_checkpoints_to_another_thread`)
//! as a backstop, should this thread fall behind or stop.

use crate::db::{self, DbPool};
use std::sync::mpsc;

/// Commits between two checkpoints: ~3,000–4,000 log pages under dispatch load (a
/// commit there writes ~50–60), about the threshold the writer's own checkpoint used.
pub const COMMITS_PER_CHECKPOINT: u32 = 64;

/// Where the writer reports its commits.
#[derive(Clone)]
pub struct CheckpointMailbox(mpsc::Sender<()>);

impl CheckpointMailbox {
    /// One more commit is in the log.
    pub fn committed(&self) {
        let _ = self.0.send(());
    }
}

/// Start the checkpointer's thread; it runs until its mailbox is dropped.
pub fn start(pool: DbPool) -> std::io::Result<CheckpointMailbox> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::Builder::new().name("db-checkpoint".into()).spawn(move || {
        let mut since_last = 0u32;
        while rx.recv().is_ok() {
            since_last += 1 + rx.try_iter().count() as u32;
            if since_last < COMMITS_PER_CHECKPOINT {
                continue;
            }
            since_last = 0;
            let copied = pool.get().map_err(db::DbError::from).and_then(|mut c| db::checkpoint_passive(&mut c));
            if let Err(e) = copied {
                // The writer's backstop checkpoint copies the log meanwhile.
                log::warn!("write-ahead log not checkpointed (retried after the next commits): {e}");
            }
        }
    })?;
    Ok(CheckpointMailbox(tx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;
    use std::time::Duration;

    /// Commits whose connection never checkpoints leave the database file as it was;
    /// once the checkpointer has been told of enough of them, the log is in the file.
    #[test]
    fn the_log_reaches_the_database_file_after_the_reported_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.db");
        let pool = db::open_sqlite(&path, db::Synchronous::Full, 2).unwrap();
        let mut writer = pool.get().unwrap();
        writer.batch_execute("PRAGMA wal_autocheckpoint = 0; CREATE TABLE blobs (b BLOB);").unwrap();
        let file_size = || std::fs::metadata(&path).unwrap().len();
        let checkpoints = start(pool.clone()).unwrap();
        let before = file_size();
        for _ in 0..COMMITS_PER_CHECKPOINT - 1 {
            writer.batch_execute("INSERT INTO blobs VALUES (zeroblob(16384));").unwrap();
            checkpoints.committed();
        }
        // One commit short of a checkpoint: nothing has been copied.
        assert_eq!(file_size(), before, "checkpointed before the threshold");
        writer.batch_execute("INSERT INTO blobs VALUES (zeroblob(16384));").unwrap();
        checkpoints.committed();
        let logged = u64::from(COMMITS_PER_CHECKPOINT) * 16384;
        crate::testkit::wait_until(Duration::from_secs(20), "the log copied into the database file", || {
            file_size() >= before + logged
        });
    }
}
