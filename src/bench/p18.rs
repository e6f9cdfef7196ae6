//! P18: the writer's cost of one dispatched job, alone. P2 measures dispatch through
//! HTTP, actors and two workers sharing the machine's cores with the master, so its
//! rate moves ±30 % between identical runs; this figure takes the writer's own work
//! out of that noise. One thread does what `DbExecutor` does for a busy farm: each
//! group commit claims 32 queued jobs for a node (`claim_many`), completes the 32 it
//! claimed in the previous one (`transition_many`), commits (durably, as the master's
//! default `--sqlite-synchronous full`), and reads the outbox's newest id (the rows
//! themselves are read back by the `OutboxReader`, on another thread). Reported: µs per job of wall time and of the thread's CPU (the
//! difference is mostly waiting for fsync), over 100,000 queued jobs.

use super::{Report, Store, prefill};
use crate::db::jobs::JobRow;
use crate::db::{self, transitions};
use crate::domain::state::JobState;
use serde_json::json;
use std::path::Path;
use std::time::Instant;

/// Jobs per group commit (about what P2's commits carry) — claimed, and completed.
const PER_COMMIT: usize = 32;

/// Bytes this thread has passed to write(2) and friends (WAL frames, checkpoints).
fn thread_bytes_written() -> f64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("wchar: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// CPU seconds this thread has used.
fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

pub(super) async fn p18(r: &mut Report, tmp: &Path, store: &Store) -> anyhow::Result<()> {
    let n = if r.quick { 2_000 } else { 100_000 };
    let database = store.database(tmp, "p18")?;
    let d = database.clone();
    let (wall, cpu, written, commits) = actix_rt::task::spawn_blocking(move || writer_loop(&d, n)).await??;
    r.add(
        "P18",
        format!("[{}] writer µs per dispatched job (claim + complete), {n} queued", store.label()),
        wall * 1e6 / n as f64,
        "µs/job",
        None,
        json!({
            "cpu_us_per_job": cpu * 1e6 / n as f64,
            "bytes_written_per_job": written / n as f64,
            "commits": commits,
            "jobs_per_commit": PER_COMMIT,
        }),
    );
    Ok(())
}

/// (wall seconds, thread CPU seconds, bytes written, commits) to claim and complete
/// every queued job.
fn writer_loop(database: &db::DatabaseUrl, n: usize) -> anyhow::Result<(f64, f64, f64, usize)> {
    use diesel::prelude::*;
    prefill(database, n, n)?;
    let pool = db::open(database, db::Synchronous::Full, 1)?;
    let mut conn = pool.get()?;
    db::tune_writer(&mut conn)?;
    let ids: Vec<String> = db::schema::jobs::table
        .filter(db::schema::jobs::status.eq(JobState::Pending))
        .order(db::schema::jobs::seq)
        .select(db::schema::jobs::id)
        .load(&mut *conn)?;
    anyhow::ensure!(ids.len() == n, "P18: {} of {n} jobs queued", ids.len());
    let mut last_event = db::events::head(&mut conn)?;
    let mut running: Vec<JobRow> = Vec::new();
    let (started, cpu0, written0) = (Instant::now(), thread_cpu_seconds(), thread_bytes_written());
    let mut commits = 0;
    let mut next = ids.chunks(PER_COMMIT);
    loop {
        let claim = next.next();
        if claim.is_none() && running.is_empty() {
            break;
        }
        db::begin_write(&mut conn)?;
        let claimed = match claim {
            Some(ids) => transitions::claim_many(&mut conn, ids, "p18-node")?,
            None => Vec::new(),
        };
        let done: Vec<transitions::Transition> = std::mem::take(&mut running)
            .into_iter()
            .map(|stored| transitions::Transition {
                stored,
                to: JobState::Completed,
                change: Box::new(|row: &mut JobRow| {
                    row.completed_at = Some(db::now_micros());
                    row.progress = 100.0;
                }),
                reason: "Completed".into(),
            })
            .collect();
        for answer in transitions::transition_many(&mut conn, done)? {
            answer?;
        }
        db::commit_write(&mut conn)?;
        commits += 1;
        for row in claimed {
            running.push(row?);
        }
        // What the writer tells the outbox reader: the ids this commit stored.
        last_event = last_event.max(db::events::head(&mut conn)?);
    }
    let written = thread_bytes_written() - written0;
    Ok((started.elapsed().as_secs_f64(), thread_cpu_seconds() - cpu0, written, commits))
}
