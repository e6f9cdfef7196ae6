//! `DbExecutor`: the database's only writer, on a thread of its own.
//!
//! Every write of the master is a [`WriteOp`] sent to the writer's mailbox
//! ([`WriterMailbox`]). The writer takes the first that arrives and every other already
//! waiting (up to [`MAX_BATCH`]), applies them in one `BEGIN IMMEDIATE … COMMIT`
//! (`BEGIN` on PostgreSQL), and answers every caller only after the COMMIT returned.
//! Writes arriving while a batch commits form the next one: under load N fsyncs become
//! one per batch without any timer, and a write arriving while the writer is idle goes
//! at once. The writer drains its mailbox itself the moment a transaction ends: when a
//! group-commit actor on the actor thread handed it each batch, the writer sat idle for
//! that thread's turn (~0.45 ms per commit, a fifth of its time, under dispatch load).
//!
//! A write that is refused for a logical reason (`DbError::is_refusal`) has written
//! nothing — every function in `db` checks before it writes — so its neighbours commit
//! normally; any other error spoils the transaction, which is rolled back whole. (No
//! savepoint per write: on PostgreSQL those are two extra round trips each.) A batch's
//! new jobs (`WriteOp::InsertJob`) are stored first, all with one multi-row INSERT.

use super::messages::{MetricEvent, MetricRecorded, OutboxCommitted, WriteOp};
use super::metrics::MetricsActor;
use crate::db::jobs::JobRow;
use crate::db::{self, Conn, DbError, DbPool, DbResult, PooledConn};
use actix::prelude::*;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Upper bound on writes per transaction, so one batch never holds the lock for long.
const MAX_BATCH: usize = 512;

/// The writer's mailbox: where every write of the master is sent.
#[derive(Clone)]
pub struct WriterMailbox(mpsc::Sender<WriteOp>);

impl WriterMailbox {
    /// Queue `op` for the next transaction. If the writer has stopped, `op` is dropped
    /// with its reply channel, and its caller is answered "unavailable".
    fn send(&self, op: WriteOp) {
        let _ = self.0.send(op);
    }
}

/// Start the writer's thread; it runs until every [`WriterMailbox`] is dropped.
pub fn start_writer(
    pool: DbPool,
    events: Option<Recipient<OutboxCommitted>>,
    fence: Option<i64>,
    metrics: Addr<MetricsActor>,
) -> std::io::Result<WriterMailbox> {
    let (tx, rx) = mpsc::channel::<WriteOp>();
    let checkpoints = super::checkpointer::start(pool.clone())?;
    let mut writer = DbExecutor::new(pool, events, fence, checkpoints);
    std::thread::Builder::new().name("db-writer".into()).spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut ops = vec![first];
            ops.extend(rx.try_iter().take(MAX_BATCH - 1));
            metrics.do_send(MetricRecorded(MetricEvent::Committed { writes: ops.len() }));
            writer.commit_batch(ops);
        }
    })?;
    Ok(WriterMailbox(tx))
}

pub struct DbExecutor {
    pool: DbPool,
    /// Told of every COMMIT's outbox ids, in id order.
    events: Option<Recipient<OutboxCommitted>>,
    /// The newest outbox id already told (read once, before the first batch).
    last_event: Option<i64>,
    /// The writer keeps one connection between batches: its prepared statements and
    /// page cache stay warm, and no pool check-out (a `SELECT 1`) precedes each batch.
    /// Dropped after a failed batch, so the next one starts on a fresh connection.
    conn: Option<PooledConn>,
    /// The leader lease epoch every transaction must still hold (highly available
    /// masters on PostgreSQL; see `db/leader.rs`).
    fence: Option<i64>,
    /// Told of every COMMIT on SQLite (see `actors::checkpointer`).
    checkpoints: super::checkpointer::CheckpointMailbox,
}

impl DbExecutor {
    fn new(
        pool: DbPool,
        events: Option<Recipient<OutboxCommitted>>,
        fence: Option<i64>,
        checkpoints: super::checkpointer::CheckpointMailbox,
    ) -> Self {
        DbExecutor { pool, events, last_event: None, conn: None, fence, checkpoints }
    }

    /// Tell the outbox reader which events this COMMIT stored: the ids after the last
    /// newest id told up to the newest now (one writer assigns them in commit order, so
    /// whichever write made them, they are exactly the new ones), with the rows
    /// themselves as this batch appended them when they are exactly those
    /// (`db::events::take_appended`); otherwise the reader reads them on its own thread.
    fn tell_committed(&mut self, conn: &mut Conn) {
        let (Some(to), Some(last)) = (&self.events, self.last_event) else { return };
        match db::events::head(conn) {
            Ok(head) if head > last => {
                let rows = db::events::take_appended(last, head).map(std::sync::Arc::new);
                to.do_send(OutboxCommitted { after: last, upto: head, rows });
                self.last_event = Some(head);
            }
            Ok(_) => {}
            Err(e) => log::warn!("the outbox's newest id not read after a commit: {e}"),
        }
    }

    fn connection(&mut self) -> Result<PooledConn, DbError> {
        match self.conn.take() {
            Some(c) => Ok(c),
            None => {
                let mut c = self.pool.get()?;
                db::tune_writer(&mut c)?;
                db::leave_checkpoints_to_another_thread(&mut c)?;
                Ok(c)
            }
        }
    }

    /// Apply `ops` in one transaction and answer each of them.
    fn commit_batch(&mut self, ops: Vec<WriteOp>) {
        let n = ops.len();
        let mut conn = match self.connection() {
            Ok(c) => c,
            Err(e) => {
                // Dropping the writes drops their reply channels: every caller gets
                // "unavailable" (503), nothing half-applied.
                drop(ops);
                log::error!("database writer cannot get a connection: {e}");
                return;
            }
        };
        let mut finishers = Vec::with_capacity(n);
        let mut new_jobs = Vec::new();
        let mut new_job_replies = Vec::new();
        let mut applies = Vec::with_capacity(n);
        for op in ops {
            match op {
                WriteOp::Apply(f) => applies.push(Applied::Write(f)),
                WriteOp::Transition(t, reply) => applies.push(Applied::Transition(t, reply)),
                WriteOp::InsertJob(job, reply) => {
                    new_jobs.push(*job);
                    new_job_replies.push(reply);
                }
            }
        }
        if self.events.is_some() && self.last_event.is_none() {
            match db::events::head(&mut conn) {
                Ok(head) => self.last_event = Some(head),
                Err(e) => log::warn!("outbox head not read: {e}"),
            }
        }
        if self.events.is_some() {
            db::events::capture_appended();
        }
        let mut inserted = Ok(Vec::new());
        let outcome: Result<(), DbError> = (|| {
            db::begin_write(&mut conn)?;
            if let Some(mine) = self.fence {
                let now = db::leader::epoch_for_write(&mut conn)?;
                if now != mine {
                    // Another master took the lease: nothing of this batch is written.
                    let _ = db::rollback_write(&mut conn);
                    super::leader::deposed(&format!("this master led epoch {mine}; the lease is at epoch {now}"));
                }
            }
            let mut spoiled = false;
            if !new_jobs.is_empty() {
                inserted = db::jobs::insert_many(&mut conn, &new_jobs);
                spoiled |= inserted.is_err();
            }
            // In arrival order; a run of transitions of distinct jobs is written together.
            let mut run: Vec<(Box<db::transitions::Transition>, Reply)> = Vec::new();
            for op in applies {
                match op {
                    Applied::Transition(t, reply) if !run.iter().any(|(r, _)| r.stored.id == t.stored.id) => {
                        run.push((t, reply))
                    }
                    op => {
                        spoiled |= write_transitions(&mut conn, std::mem::take(&mut run), &mut finishers);
                        match op {
                            Applied::Write(f) => {
                                let (failed, finish) = f(&mut conn);
                                spoiled |= failed;
                                finishers.push(finish);
                            }
                            Applied::Transition(t, reply) => run.push((t, reply)),
                        }
                    }
                }
            }
            spoiled |= write_transitions(&mut conn, run, &mut finishers);
            if spoiled {
                let _ = db::rollback_write(&mut conn);
                return Err(DbError::Unavailable("a write in this batch failed; the batch was rolled back".into()));
            }
            if let Err(e) = db::commit_write(&mut conn) {
                let _ = db::rollback_write(&mut conn);
                return Err(e.into());
            }
            Ok(())
        })();
        let err = outcome.err();
        if let Some(e) = &err {
            log::error!("group commit of {n} writes failed: {e}");
        }
        for fin in finishers {
            fin(err.as_ref());
        }
        match (err.as_ref(), inserted) {
            (None, Ok(rows)) => {
                for (reply, row) in new_job_replies.into_iter().zip(rows) {
                    let _ = reply.send(Ok(row));
                }
            }
            (batch_error, result) => {
                // Rolled back with the batch: say the insert's own error if it failed.
                let why = match result {
                    Err(e) => e.to_string(),
                    Ok(_) => batch_error.map(|e| e.to_string()).unwrap_or_default(),
                };
                for reply in new_job_replies {
                    let _ = reply.send(Err(DbError::Unavailable(why.clone())));
                }
            }
        }
        // After the answers: no caller waits for the events to reach the bus. A stream
        // that subscribes in between gets the bus's older head, so it reads these
        // events from the database and then live — none is missed or doubled.
        if err.is_none() {
            if let Conn::Sqlite(_) = &*conn {
                self.checkpoints.committed();
            }
            self.tell_committed(&mut conn);
            self.conn = Some(conn);
        }
        // Whatever the batch's outcome, its appended rows are not kept past it.
        db::events::discard_appended();
    }
}

type Reply = oneshot::Sender<DbResult<JobRow>>;

/// A write of a batch, in arrival order.
enum Applied {
    Write(super::messages::WriteFn),
    Transition(Box<db::transitions::Transition>, Reply),
}

/// Write a run of transitions together; queue each caller's answer (given after the
/// COMMIT, as for any write). True when the batch is spoiled (a database error).
fn write_transitions(
    conn: &mut Conn,
    run: Vec<(Box<db::transitions::Transition>, Reply)>,
    finishers: &mut Vec<super::messages::AnswerFn>,
) -> bool {
    if run.is_empty() {
        return false;
    }
    let (batch, replies): (Vec<db::transitions::Transition>, Vec<Reply>) =
        run.into_iter().map(|(t, r)| (*t, r)).unzip();
    let results = match db::transitions::transition_many(conn, batch) {
        Ok(results) => results,
        Err(e) => {
            let why = e.to_string();
            for reply in replies {
                let why = why.clone();
                finishers.push(Box::new(move |_| {
                    let _ = reply.send(Err(DbError::Unavailable(why)));
                }));
            }
            return true;
        }
    };
    for (reply, result) in replies.into_iter().zip(results) {
        finishers.push(Box::new(move |commit_error: Option<&DbError>| {
            let answer = match (commit_error, result) {
                // A logical refusal is the caller's answer even if the batch failed.
                (_, Err(e)) if e.is_refusal() => Err(e),
                (Some(e), _) => Err(DbError::Unavailable(e.to_string())),
                (None, r) => r,
            };
            let _ = reply.send(answer);
        }));
    }
    false
}

/// The handle the rest of the master uses for storage: reads on the pool, writes
/// through the group-commit pipeline.
#[derive(Clone)]
pub struct Db {
    pub pool: DbPool,
    writer: WriterMailbox,
}

impl Db {
    pub fn new(pool: DbPool, writer: WriterMailbox) -> Self {
        Db { pool, writer }
    }

    /// Run `f` inside the next group-committed transaction; resolves after COMMIT.
    pub async fn write<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> DbResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<DbResult<T>>();
        let op: super::messages::WriteFn = Box::new(move |conn: &mut Conn| {
            let result = f(conn);
            let spoils = matches!(&result, Err(e) if !e.is_refusal());
            let finish: super::messages::AnswerFn = Box::new(move |commit_error: Option<&DbError>| {
                let answer = match (commit_error, result) {
                    // A logical refusal is the caller's answer even if the batch failed.
                    (_, Err(e)) if e.is_refusal() => Err(e),
                    (Some(e), _) => Err(DbError::Unavailable(e.to_string())),
                    (None, r) => r,
                };
                let _ = tx.send(answer);
            });
            (spoils, finish)
        });
        self.writer.send(WriteOp::Apply(op));
        rx.await.unwrap_or_else(|_| Err(DbError::Unavailable("the database writer could not apply the write".into())))
    }

    /// Write a live job's transition (gated and guarded as `db::transitions::transition_row`);
    /// transitions arriving together share their statements (`transition_many`).
    pub async fn transition(
        &self,
        stored: JobRow,
        to: crate::domain::state::JobState,
        change: impl FnOnce(&mut JobRow) + Send + 'static,
        reason: String,
    ) -> DbResult<JobRow> {
        let (tx, rx) = oneshot::channel();
        let t = db::transitions::Transition { stored, to, change: Box::new(change), reason };
        self.writer.send(WriteOp::Transition(Box::new(t), tx));
        rx.await.unwrap_or_else(|_| Err(DbError::Unavailable("the database writer could not apply the write".into())))
    }

    /// Store a new job (`true`: created; `false`: the job its idempotency key names).
    /// Keyless jobs of one group commit share one multi-row INSERT.
    pub async fn insert_job(&self, new: JobRow) -> DbResult<(JobRow, bool)> {
        if new.idempotency_key.is_some() {
            // The key is looked up in the same transaction, one job at a time.
            return self.write(move |c| db::jobs::insert(c, &new)).await;
        }
        let (tx, rx) = oneshot::channel();
        self.writer.send(WriteOp::InsertJob(Box::new(new), tx));
        let row = rx
            .await
            .unwrap_or_else(|_| Err(DbError::Unavailable("the database writer could not apply the write".into())))?;
        Ok((row, true))
    }

    /// Run a read on a pool connection off the actor threads.
    pub async fn read<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> DbResult<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        actix_rt::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await
        .unwrap_or_else(|e| Err(DbError::Other(format!("read task failed: {e}"))))
    }
}
