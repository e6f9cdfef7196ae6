//! The master's actors. Who owns what (no mutex around shared state):
//!
//! - [`db_executor::DbExecutor`] (own thread): the only database writer; it drains its
//!   mailbox of writes into one transaction at a time (group commit).
//! - [`checkpointer`] (own thread, SQLite): copies the write-ahead log into the
//!   database file, off the writer's thread.
//! - [`scheduler::SchedulerActor`]: runnable index, placement, parked long-polls, and
//!   the routing table of live jobs.
//! - [`job::JobActor`]: one per live job: lease, progress, control, retries.
//! - [`node_supervisor::NodeSupervisor`]: nodes, heartbeats, drain, control queues.
//! - [`metrics::MetricsActor`]: the Prometheus registry, updated from events.
//! - [`graph::GraphActor`]: jobs waiting for others, parents and their children.
//! - [`outbox_reader::OutboxReader`] (SyncArbiter, one thread): reads each COMMIT's
//!   outbox rows back for the bus, off the writer's thread.
//! - [`events::EventBus`] (own thread): live event streams and their buffers.
//! - [`webhooks::WebhookDispatcher`] (own thread): webhook subscriptions and deliveries.
//! - [`leader::LeaderActor`] (own thread, PostgreSQL only): the leader lease; the
//!   others start only on the master that holds it.
//!
//! A job is in exactly one place: the runnable index, a JobActor, or (terminal) only
//! in the database.

pub mod checkpointer;
pub mod db_executor;
pub mod event_metrics;
pub mod events;
pub mod graph;
pub mod graph_plan;
pub mod job;
pub mod leader;
pub mod messages;
pub mod metrics;
pub mod node_supervisor;
pub mod outbox_reader;
pub mod scheduler;
pub mod webhooks;

use crate::db::DbPool;
use crate::db::jobs as db_jobs;
use crate::db::nodes as db_nodes;
use crate::domain::queue::{Priority, QueueName};
use crate::domain::state::JobState;
use actix::prelude::*;
use db_executor::Db;
use job::JobPolicy;
use messages::{AdoptLiveJobs, AdoptNodes, ConnectNodeSupervisor, JobsQueued};
use metrics::MetricsActor;
use node_supervisor::NodeSupervisor;
use scheduler::{SchedulerActor, queued_job_from_row};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ActorConfig {
    pub heartbeat_interval: Duration,
    /// Waiting this long raises a queued job's level by one (0 = no aging).
    pub aging_step: Duration,
    pub policy: JobPolicy,
    /// Parked `/jobs/next` polls allowed at once (one per node at most).
    pub max_parked_polls: usize,
    /// Refuse nodes that register without asking for a node token.
    pub require_node_tokens: bool,
    pub webhooks: webhooks::WebhookConfig,
    /// Event streams (SSE) open at once.
    pub max_event_streams: usize,
    /// Offline nodes silent this long are removed (None: kept until removed by hand).
    pub forget_offline_after: Option<Duration>,
    /// The leader lease's epoch this master writes under (PostgreSQL with several
    /// masters); every write transaction checks it is still current.
    pub fence_epoch: Option<i64>,
}

/// Addresses of the running actors, shared by the HTTP handlers.
#[derive(Clone)]
pub struct MasterHandles {
    pub db: Db,
    pub scheduler: Addr<SchedulerActor>,
    pub nodes: Addr<NodeSupervisor>,
    pub metrics: Addr<MetricsActor>,
    pub graph: Addr<graph::GraphActor>,
    pub events: Addr<events::EventBus>,
    pub webhooks: Addr<webhooks::WebhookDispatcher>,
}

/// Rebuild the master's state from the database and start its actors. Must run inside
/// an actix System.
pub async fn start(pool: DbPool, cfg: ActorConfig) -> anyhow::Result<MasterHandles> {
    let load_pool = pool.clone();
    let (entered, finished, current, queued_counts, node_rows) =
        actix_rt::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut conn = load_pool.get()?;
            use crate::domain::finished::{FINISHED_INTERVAL_MICROS, FINISHED_INTERVALS};
            let hour = FINISHED_INTERVALS as i64 * FINISHED_INTERVAL_MICROS;
            Ok((
                db_jobs::state_entry_totals(&mut conn)?,
                db_jobs::finished_since(&mut conn, crate::db::now_micros() - hour, FINISHED_INTERVAL_MICROS)?,
                db_jobs::current_counts(&mut conn)?,
                db_jobs::runnable_counts(&mut conn)?,
                db_nodes::load_all(&mut conn)?,
            ))
        })
        .await??;
    let queued_counts: Vec<((QueueName, Priority), i64)> =
        queued_counts.into_iter().map(|(q, p, n)| ((q, p), n)).collect();

    let exec_pool = pool.clone();
    let metrics = MetricsActor::new(&entered, &current, &queued_counts).with_finished(&finished).start();
    // The bus and the dispatcher each have a thread of their own: fanning an event out
    // to a thousand streams, or a thousand webhook requests, never delays a placement.
    let max_streams = cfg.max_event_streams;
    let bus_metrics = metrics.clone();
    let events = events::EventBus::start_in_arbiter(&Arbiter::new().handle(), move |_| {
        events::EventBus::new(bus_metrics, max_streams)
    });
    let (reader_pool, to_bus) = (pool.clone(), events.clone().recipient());
    let committed =
        SyncArbiter::start(1, move || outbox_reader::OutboxReader::new(reader_pool.clone(), to_bus.clone()))
            .recipient();
    let writer = db_executor::start_writer(exec_pool, Some(committed), cfg.fence_epoch, metrics.clone())?;
    let db = Db::new(pool.clone(), writer);
    let (hook_db, hook_metrics, hook_cfg) = (db.clone(), metrics.clone(), cfg.webhooks.clone());
    let webhooks = webhooks::WebhookDispatcher::start_in_arbiter(&Arbiter::new().handle(), move |_| {
        webhooks::WebhookDispatcher::new(hook_db, hook_metrics, hook_cfg)
    });
    events.send(messages::ConnectWebhooks(webhooks.clone().recipient())).await?;
    let scheduler = SchedulerActor::new(
        db.clone(),
        metrics.clone(),
        Arc::new(cfg.policy.clone()),
        cfg.aging_step.as_millis() as u64,
    )
    .with_max_parked_polls(cfg.max_parked_polls)
    .requiring_node_tokens(cfg.require_node_tokens)
    .with_events(events.clone().recipient())
    .start();
    let nodes = NodeSupervisor::new(db.clone(), scheduler.clone(), metrics.clone(), cfg.heartbeat_interval)
        .requiring_node_tokens(cfg.require_node_tokens)
        .forgetting_offline_after(cfg.forget_offline_after)
        .start();
    scheduler.send(ConnectNodeSupervisor(nodes.clone())).await?;
    // The graph actor lives on the scheduler's thread: their events are local sends.
    let graph = graph::GraphActor::new(db.clone(), scheduler.clone(), metrics.clone()).start();
    scheduler.send(messages::ConnectGraph(graph.clone())).await?;
    let graph_rows = {
        let p = pool.clone();
        actix_rt::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut conn = p.get()?;
            Ok(crate::db::graph::open_rows(&mut conn)?)
        })
        .await??
    };
    // Parents run nothing, and jobs waiting for others are queued by the graph actor.
    let held_by_graph: std::collections::HashSet<String> = graph_rows
        .iter()
        .filter(|(g, s)| g.is_parent || (s.is_runnable() && !g.after().is_empty()))
        .map(|(g, _)| g.job_id.clone())
        .collect();
    let node_count = node_rows.len();
    nodes.send(AdoptNodes(node_rows)).await?;

    // Unfinished jobs stream in, a chunk at a time, as small index entries (runnable) or
    // JobActors (live): start-up memory stays near the index's own size.
    let (mut after, mut runnable_total, mut live_total) = (0i64, 0usize, 0usize);
    loop {
        let load_pool = pool.clone();
        let chunk = actix_rt::task::spawn_blocking(move || -> anyhow::Result<Vec<db_jobs::JobRow>> {
            let mut conn = load_pool.get()?;
            Ok(db_jobs::load_unfinished(&mut conn, after, 10_000)?)
        })
        .await??;
        let Some(last) = chunk.last() else { break };
        after = last.seq;
        let mut runnable = Vec::new();
        let mut live = Vec::new();
        for row in chunk {
            if held_by_graph.contains(&row.id) {
                continue;
            }
            if row.state().is_runnable() {
                runnable.push(queued_job_from_row(&row));
            } else if row.state() != JobState::Assigned || row.node_id.is_some() {
                live.push(row);
            }
        }
        runnable_total += runnable.len();
        live_total += live.len();
        scheduler.send(AdoptLiveJobs(live)).await?;
        scheduler.send(JobsQueued(runnable)).await?;
    }
    let graphs = graph_rows.len();
    graph.send(messages::AdoptGraphs(graph_rows)).await?;
    log::info!(
        "recovered {runnable_total} runnable and {live_total} live jobs, {graphs} graph jobs, {node_count} nodes"
    );
    release_freed_heap();
    Ok(MasterHandles { db, scheduler, nodes, metrics, graph, events, webhooks })
}

/// Recovery allocates and frees a lot on several threads; give the freed pages back so
/// the resident size reflects what the master keeps (the index), not what it read.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Delete terminal jobs older than `retention` in batches, forever (every `every`),
/// with their stored outputs.
pub async fn run_retention(
    handles: MasterHandles,
    artifacts: crate::storage::ArtifactStore,
    retention: Duration,
    every: Duration,
) {
    loop {
        let cutoff = crate::db::now_micros() - retention.as_micros() as i64;
        loop {
            match handles.db.write(move |c| db_jobs::delete_terminal_before(c, cutoff, 1000)).await {
                Ok((states, _)) if states.is_empty() => break,
                Ok((states, outputs)) => {
                    let mut by: HashMap<JobState, i64> = HashMap::new();
                    for s in states {
                        *by.entry(s).or_default() += 1;
                    }
                    log::info!(
                        "retention removed {} finished jobs and {} outputs",
                        by.values().sum::<i64>(),
                        outputs.len()
                    );
                    crate::http::outputs::forget_files(&artifacts, &handles.metrics, &outputs).await;
                    handles.metrics.do_send(messages::JobsForgotten(by.into_iter().collect()));
                }
                Err(e) => {
                    log::warn!("retention cleanup failed: {e}");
                    break;
                }
            }
        }
        // Uploaded inputs go with the finished jobs of their time.
        loop {
            match handles.db.write(move |c| crate::db::uploads::delete_before(c, cutoff, 1000)).await {
                Ok(gone) if gone.is_empty() => break,
                Ok(gone) => {
                    log::info!("retention removed {} uploads", gone.len());
                    let files: Vec<_> = gone.iter().map(|u| u.as_output()).collect();
                    crate::http::outputs::forget_files(&artifacts, &handles.metrics, &files).await;
                }
                Err(e) => {
                    log::warn!("retention cleanup of uploads failed: {e}");
                    break;
                }
            }
        }
        actix_rt::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests;
