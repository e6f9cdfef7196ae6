//! `DbExecutor`: the database's only writer, on a thread of its own.
//!
//! Every write of the master is a [`WriteOp`] sent to the writer's mailbox
//! ([`WriterMailbox`]). The writer takes the first that arrives and every other already
//! waiting (up to [`MAX_BATCH`]), applies them in one `BEGIN IMMEDIATE … COMMIT`
//! (`BEGIN` on PostgreSQL), and answers every caller only after the COMMIT returned.
//! Writes arriving while a batch commits form the next one: under load N fsyncs become
//! one per batch without any timer, and a write arriving while the writer is idle goes
//! at once — except a claim that rides on a worker's results, which waits up to
//! [`COMPANION_WAIT`] for those results' transitions to commit with them. The writer
//! drains its mailbox itself the moment a transaction ends: when a group-commit actor
//! on the actor thread handed it each batch, the writer sat idle for that thread's turn
//! (~0.45 ms per commit, a fifth of its time, under dispatch load).
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
use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};
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
        let mut written_last: HashSet<String> = HashSet::new();
        while let Ok(first) = rx.recv() {
            let mut ops = vec![first];
            ops.extend(rx.try_iter().take(MAX_BATCH - 1));
            written_last = gather_companions(&rx, &mut ops, &written_last, COMPANION_WAIT);
            metrics.do_send(MetricRecorded(MetricEvent::Committed { writes: ops.len() }));
            writer.commit_batch(ops);
        }
    })?;
    Ok(WriterMailbox(tx))
}

/// How long a write waits for the transitions it should commit with (the jobs a
/// [`WriteOp::Apply`] names) before it is committed without them. A worker's results
/// reach the writer through their jobs' actors, one hop after the claim that rides on
/// them: an idle writer used to commit the claim alone and the results right after, so
/// the request that carried both waited for two commits (bench P2: a fifth of the
/// commits at 1k queued held only claims).
const COMPANION_WAIT: Duration = Duration::from_millis(1);

/// Wait, up to `wait`, for the transitions that the batch's `Apply` writes name and
/// that neither the batch nor the one before it (`written_last`) holds; writes arriving
/// meanwhile join the batch. Never past [`MAX_BATCH`] writes. Returns the jobs whose
/// transitions the batch holds (the next batch's `written_last`).
fn gather_companions(
    rx: &mpsc::Receiver<WriteOp>,
    ops: &mut Vec<WriteOp>,
    written_last: &HashSet<String>,
    wait: Duration,
) -> HashSet<String> {
    // In batch order: a transition after its claim clears what the claim awaited.
    let mut present: HashSet<String> = HashSet::new();
    let mut awaited: HashSet<String> = HashSet::new();
    let note = |op: &WriteOp, present: &mut HashSet<String>, awaited: &mut HashSet<String>| match op {
        WriteOp::Transition(t, _) => {
            awaited.remove(&t.stored.id);
            present.insert(t.stored.id.clone());
        }
        WriteOp::Apply(_, jobs) => {
            awaited.extend(jobs.iter().filter(|id| !present.contains(*id) && !written_last.contains(*id)).cloned())
        }
        _ => {}
    };
    for op in ops.iter() {
        note(op, &mut present, &mut awaited);
    }
    let deadline = Instant::now() + wait;
    while !awaited.is_empty() && ops.len() < MAX_BATCH {
        let Ok(op) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else { break };
        note(&op, &mut present, &mut awaited);
        ops.push(op);
    }
    present
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
                WriteOp::Apply(f, _) => applies.push(Applied::Write(f)),
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
        self.write_with(Vec::new(), f).await
    }

    /// [`Db::write`], committed with the transitions of `jobs` that are on their way
    /// to the writer where it can ([`WriteOp::Apply`]).
    pub async fn write_with<T, F>(&self, jobs: Vec<String>, f: F) -> DbResult<T>
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
        self.writer.send(WriteOp::Apply(op, jobs));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_with(jobs: &[&str]) -> WriteOp {
        let write: super::super::messages::WriteFn = Box::new(|_| (false, Box::new(|_| ())));
        WriteOp::Apply(write, jobs.iter().map(|j| j.to_string()).collect())
    }

    fn transition(job: &str) -> WriteOp {
        let stored = JobRow { id: job.into(), ..JobRow::default() };
        let t = db::transitions::Transition {
            stored,
            to: crate::domain::state::JobState::Completed,
            change: Box::new(|_| ()),
            reason: String::new(),
        };
        WriteOp::Transition(Box::new(t), oneshot::channel().0)
    }

    fn jobs_of(ops: &[WriteOp]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                WriteOp::Apply(_, jobs) => format!("claim with {}", jobs.join(",")),
                WriteOp::Transition(t, _) => t.stored.id.clone(),
                _ => "other".to_string(),
            })
            .collect()
    }

    /// Far longer than any case below should wait: a case that waited it out would
    /// still pass on its contents, so each also checks it returned well before it.
    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn a_claim_waits_for_the_results_it_rides_on_and_no_longer() {
        // The results arrive after the claim, one of them with an unrelated write:
        // all of them join the claim's batch, and the wait ends with the last result.
        let (tx, rx) = mpsc::channel();
        let mut ops = vec![apply_with(&["a", "b"])];
        let sender = std::thread::spawn(move || {
            tx.send(transition("a")).unwrap();
            tx.send(transition("x")).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            tx.send(transition("b")).unwrap();
            tx.send(transition("after")).unwrap();
            tx
        });
        let started = Instant::now();
        gather_companions(&rx, &mut ops, &HashSet::new(), LONG);
        assert!(started.elapsed() < LONG / 2, "waited out the deadline");
        assert_eq!(jobs_of(&ops), ["claim with a,b", "a", "x", "b"]);
        // What came after the last awaited result is left for the next batch.
        drop(sender.join().unwrap());
        assert_eq!(jobs_of(&rx.try_iter().collect::<Vec<_>>()), ["after"]);
    }

    #[test]
    fn results_already_in_the_batch_or_the_one_before_are_not_awaited() {
        let (_tx, rx) = mpsc::channel();
        let mut ops = vec![transition("a"), apply_with(&["a", "b"])];
        let written_last = HashSet::from(["b".to_string()]);
        let started = Instant::now();
        let written = gather_companions(&rx, &mut ops, &written_last, LONG);
        assert!(started.elapsed() < LONG / 2, "waited for results already written");
        assert_eq!(jobs_of(&ops), ["a", "claim with a,b"]);
        assert_eq!(written, HashSet::from(["a".to_string()]));
    }

    #[test]
    fn a_claim_whose_results_never_come_goes_after_the_wait() {
        // Refused results (stale, unknown) write nothing: the claim is not held for them.
        let (_tx, rx) = mpsc::channel();
        let mut ops = vec![apply_with(&["refused"])];
        gather_companions(&rx, &mut ops, &HashSet::new(), Duration::from_millis(5));
        assert_eq!(jobs_of(&ops), ["claim with refused"]);
    }

    #[test]
    fn plain_writes_do_not_wait() {
        let (_tx, rx) = mpsc::channel();
        let mut ops = vec![transition("a")];
        let started = Instant::now();
        gather_companions(&rx, &mut ops, &HashSet::new(), LONG);
        assert!(started.elapsed() < LONG / 2, "a batch without claims waited");
        assert_eq!(jobs_of(&ops), ["a"]);
    }
}
