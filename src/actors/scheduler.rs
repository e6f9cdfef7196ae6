//! `SchedulerActor`: the runnable index and placement.
//!
//! It holds every runnable job as a small index entry (never an actor), a mirror of
//! each node's capabilities and free slots, and the parked `/jobs/next` long-polls of
//! idle workers. Whenever a job becomes runnable, a slot frees or a worker asks, it
//! matches the best compatible (job, node) pairs, claims them in the database (group
//! committed) and answers the parked requests: an idle worker gets new work within
//! milliseconds, with no polling interval.
//!
//! It also knows which JobActor is live for which job, and routes operator controls
//! to wherever a job is: the index, a claim in flight, or its JobActor.
//!
//! This file holds the index, the rounds and the claims; [`routing`] the messages meant
//! for one job (controls, worker reports, reconciliation); [`node_mirror`] the nodes'
//! mirror and the answers read from it.

use super::db_executor::Db;
use super::job::{JobActor, JobPolicy};
use super::messages::*;
use super::metrics::MetricsActor;
use super::node_supervisor::NodeSupervisor;
use crate::db::jobs::JobRow;
use crate::db::transitions as db_transitions;
use crate::db::{DbError, now_micros};
use crate::domain::credentials::{Digest, check_node_token};
use crate::domain::params::parse_job_spec;
use crate::domain::placement::{NodeCaps, Requirements, rank_nodes};
use crate::domain::queue::{Picked, RunnableIndex};
use crate::domain::state::JobState;
use crate::error::{AppError, AppResult};
use crate::wire::{ControlResponse, Job};
use actix::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::oneshot;
use uuid::Uuid;

mod node_mirror;
mod routing;

/// A runnable row as an index entry (requirements from its parameters).
pub fn queued_job_from_row(row: &JobRow) -> QueuedJob {
    let params: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&row.parameters).unwrap_or_default();
    let requirements = parse_job_spec(&params, row.engine).map(|s| Requirements::from_spec(&s)).unwrap_or_default();
    QueuedJob {
        id: row.uuid(),
        seq: row.seq as u64,
        queue: row.queue,
        priority: row.priority,
        requirements,
        enqueued_ms: (row.queued_at / 1000).max(0) as u64,
    }
}

struct NodeView {
    caps: NodeCaps,
    /// Digest of the node's token; its node-scoped calls must present the token.
    token: Option<Digest>,
    max_slots: u32,
    accepting: bool,
    load: f64,
    running: HashSet<Uuid>,
    /// Of `running`, the jobs whose results came with a claim (`ClaimFreedSlots`): their
    /// processes ended, so the worker counts their slots free, but they stay in `running`
    /// until their results commit. Kept across claims, since a worker with two results
    /// batches in flight claims again before the first batch's results commit.
    ended: HashSet<Uuid>,
    claiming: u32,
}

impl NodeView {
    fn free(&self) -> u32 {
        self.max_slots.saturating_sub(self.running.len() as u32 + self.claiming)
    }
}

struct Parked {
    /// Names the long-poll, so its HTTP request can end it (`EndPoll`).
    poll: u64,
    node_id: String,
    max: u32,
    tx: oneshot::Sender<Vec<Job>>,
}

type Deferred = Vec<(UserAction, oneshot::Sender<AppResult<ControlResponse>>)>;

/// Which parked nodes the next dispatch round must look at.
#[derive(Debug, Default)]
enum Dirty {
    #[default]
    Nothing,
    /// Only these nodes changed (a new poll, a freed slot, new capabilities).
    Nodes(HashSet<String>),
    /// The index gained jobs (or the periodic safety-net pass): every parked node.
    All,
}

impl Dirty {
    fn add_node(&mut self, id: &str) {
        match self {
            Dirty::All => {}
            Dirty::Nodes(set) => {
                set.insert(id.to_string());
            }
            Dirty::Nothing => *self = Dirty::Nodes(HashSet::from([id.to_string()])),
        }
    }
}

pub struct SchedulerActor {
    /// Handed to each JobActor for its transient events.
    events: Option<Recipient<super::messages::PublishTransient>>,
    index: RunnableIndex,
    nodes: HashMap<String, NodeView>,
    /// At most one parked `/jobs/next` per node: a new poll replaces the old one.
    parked: HashMap<String, Parked>,
    /// Cap on parked polls overall (each holds a connection and a file descriptor).
    max_parked: usize,
    dirty: Dirty,
    /// A `DispatchRound` is queued: triggers until it runs coalesce into it.
    round_queued: bool,
    /// Nodes whose running jobs changed since the supervisor was last told (a
    /// `ReportNodeJobs` is queued while this is not empty).
    node_jobs_changed: HashSet<String>,
    /// `--require-node-tokens`: calls for nodes without a token are refused.
    require_tokens: bool,
    claiming: HashMap<Uuid, Deferred>,
    live: HashMap<Uuid, (Addr<JobActor>, Option<String>, i32)>,
    db: Db,
    node_supervisor: Option<Addr<NodeSupervisor>>,
    /// Told of placements and final states (jobs waiting on them, their parents).
    graph: Option<Addr<super::graph::GraphActor>>,
    metrics: Addr<MetricsActor>,
    policy: Arc<JobPolicy>,
    aging_step_ms: u64,
    reported_waiting: usize,
    next_poll: u64,
    /// Long-polls with a claim in flight → whether their time ran out meanwhile.
    claiming_polls: HashMap<u64, bool>,
}

/// Parked `/jobs/next` polls allowed at once, unless configured otherwise.
pub const DEFAULT_MAX_PARKED_POLLS: usize = 20_000;

impl SchedulerActor {
    pub fn requiring_node_tokens(mut self, require: bool) -> Self {
        self.require_tokens = require;
        self
    }

    /// May this call act as `node_id`? Unknown nodes are left to the caller's own
    /// checks (they hold no lease and get 404 or 409 there).
    fn verify_node(&self, node_id: &str, token: Option<&str>) -> AppResult<()> {
        let Some(n) = self.nodes.get(node_id) else { return Ok(()) };
        check_node_token(n.token.as_ref(), token, self.require_tokens).map_err(|why| AppError::node_token(node_id, why))
    }

    /// Where job actors publish transient events (progress, log lines).
    pub fn with_events(mut self, to: Recipient<super::messages::PublishTransient>) -> Self {
        self.events = Some(to);
        self
    }

    pub fn with_max_parked_polls(mut self, max: usize) -> Self {
        self.max_parked = max.max(1);
        self
    }

    pub fn new(db: Db, metrics: Addr<MetricsActor>, policy: Arc<JobPolicy>, aging_step_ms: u64) -> Self {
        SchedulerActor {
            events: None,
            index: RunnableIndex::new(),
            nodes: HashMap::new(),
            parked: HashMap::new(),
            max_parked: DEFAULT_MAX_PARKED_POLLS,
            dirty: Dirty::Nothing,
            round_queued: false,
            node_jobs_changed: HashSet::new(),
            require_tokens: false,
            claiming: HashMap::new(),
            live: HashMap::new(),
            db,
            node_supervisor: None,
            graph: None,
            metrics,
            policy,
            aging_step_ms,
            reported_waiting: 0,
            next_poll: 0,
            claiming_polls: HashMap::new(),
        }
    }

    fn enqueue(&mut self, j: QueuedJob) {
        self.index.insert(j.id, j.seq, j.queue, j.priority, &j.requirements, j.enqueued_ms);
    }

    fn take(&mut self, id: &Uuid) -> Option<Picked> {
        self.index.remove(id)
    }

    fn notify_node_jobs(&mut self, node_id: &str, ctx: &mut Context<Self>) {
        if self.node_supervisor.is_none() {
            return;
        }
        if self.node_jobs_changed.is_empty() {
            ctx.notify(ReportNodeJobs);
        }
        if !self.node_jobs_changed.contains(node_id) {
            self.node_jobs_changed.insert(node_id.to_string());
        }
    }

    fn report_waiting(&mut self) {
        if self.parked.len() != self.reported_waiting {
            self.reported_waiting = self.parked.len();
            self.metrics.do_send(MetricRecorded(MetricEvent::WorkersWaiting(self.reported_waiting)));
        }
    }

    /// Ask for a dispatch round covering `node` (or every parked node). Rounds are
    /// coalesced: however many triggers arrive before it runs, one round serves them.
    fn want_round(&mut self, node: Option<&str>, ctx: &mut Context<Self>) {
        match node {
            Some(n) => self.dirty.add_node(n),
            None => self.dirty = Dirty::All,
        }
        if !self.round_queued {
            self.round_queued = true;
            ctx.notify(DispatchRound);
        }
    }

    /// Match parked workers with the best jobs they can run, most free slots first.
    ///
    /// Cost: O(nodes in scope × log) to order them once, plus one index lookup per node
    /// whose capabilities were not already found to fit nothing this round — never
    /// O(parked²). After a round every parked node left waiting can run nothing queued,
    /// so only a change (new jobs, a new poll, a freed slot, new capabilities) needs
    /// another round, and then only for what changed.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let scope = std::mem::take(&mut self.dirty);
        self.dispatch_scope(scope, ctx);
        self.report_waiting();
    }

    fn dispatch_scope(&mut self, scope: Dirty, ctx: &mut Context<Self>) {
        if self.parked.is_empty() || self.index.is_empty() {
            return;
        }
        let ids: Vec<String> = match scope {
            Dirty::Nothing => return,
            Dirty::Nodes(set) => set.into_iter().filter(|id| self.parked.contains_key(id)).collect(),
            Dirty::All => self.parked.keys().cloned().collect(),
        };
        // (node, free slots, load, poll id): the most free slots first, then the least
        // loaded, then the oldest poll — ordered once per round.
        let mut candidates: Vec<(String, u32, f64, u64)> = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(p) = self.parked.get(&id) else { continue };
            if p.tx.is_closed() {
                self.parked.remove(&id);
                continue;
            }
            let Some(n) = self.nodes.get(&id) else { continue };
            if n.accepting {
                let poll = p.poll;
                candidates.push((id, n.free(), n.load, poll));
            }
        }
        let now_ms = (now_micros() / 1000) as u64;
        // Capabilities already found to fit nothing queued in this round: the index
        // only shrinks during a round, so the verdict holds for every node alike.
        let mut fits_nothing: HashSet<NodeCaps> = HashSet::new();
        for (node_id, free) in rank_nodes(candidates) {
            if self.index.is_empty() {
                break;
            }
            let Some(node) = self.nodes.get(&node_id) else { continue };
            if fits_nothing.contains(&node.caps) {
                continue;
            }
            let want = free.min(self.parked[&node_id].max.max(1));
            let picks = self.pick_for(&node_id, want, now_ms);
            if picks.is_empty() {
                fits_nothing.insert(self.nodes[&node_id].caps.clone());
                continue;
            }
            let p = self.parked.remove(&node_id).expect("candidate is parked");
            self.start_claims(p, picks, ctx);
        }
    }

    /// Take up to `want` of the best queued jobs `node_id` can run now out of the index.
    fn pick_for(&mut self, node_id: &str, want: u32, now_ms: u64) -> Vec<Picked> {
        let mut picks = Vec::new();
        for _ in 0..want {
            let caps = &self.nodes[node_id].caps;
            let Some(best) = self.index.best(now_ms, self.aging_step_ms, |r| caps.can_run_now(r)) else { break };
            if let Some(taken) = self.take(&best.id) {
                picks.push(taken);
            }
        }
        picks
    }

    fn start_claims(&mut self, poll: Parked, picks: Vec<Picked>, ctx: &mut Context<Self>) {
        self.start_claims_with(poll, picks, Vec::new(), ctx)
    }

    /// Claim `picks` for `poll` in the group commit that writes the transitions of
    /// `with` (the jobs whose results came with the claim), where the writer can.
    fn start_claims_with(&mut self, poll: Parked, picks: Vec<Picked>, with: Vec<String>, ctx: &mut Context<Self>) {
        let node_id = poll.node_id.clone();
        self.claiming_polls.insert(poll.poll, false);
        if let Some(n) = self.nodes.get_mut(&node_id) {
            n.claiming += picks.len() as u32;
        }
        for p in &picks {
            self.claiming.insert(p.id, Vec::new());
        }
        let ids: Vec<String> = picks.iter().map(|p| p.id.to_string()).collect();
        let db = self.db.clone();
        let node = node_id.clone();
        async move {
            db.write_with(with, move |c| {
                // A claim refused (job no longer runnable) writes nothing; any other
                // failure spoils the whole batch and is reported for every claim.
                db_transitions::claim_many(c, &ids, &node)
            })
            .await
        }
        .into_actor(self)
        .map(move |res, act, ctx| act.finish_claims(poll, picks, res, ctx))
        .spawn(ctx);
    }

    fn finish_claims(
        &mut self,
        poll: Parked,
        picks: Vec<Picked>,
        res: Result<Vec<Result<JobRow, DbError>>, DbError>,
        ctx: &mut Context<Self>,
    ) {
        let Parked { poll, node_id, max, tx } = poll;
        let time_is_up = self.claiming_polls.remove(&poll).unwrap_or(true);
        let mut lost_all = !picks.is_empty();
        if let Some(n) = self.nodes.get_mut(&node_id) {
            n.claiming = n.claiming.saturating_sub(picks.len() as u32);
        }
        let results = match res {
            Ok(r) => r,
            Err(e) => picks.iter().map(|_| Err(DbError::Unavailable(e.to_string()))).collect(),
        };
        let mut jobs = Vec::new();
        let mut started = Vec::new();
        let now = now_micros();
        for (pick, result) in picks.into_iter().zip(results) {
            let deferred = self.claiming.remove(&pick.id).unwrap_or_default();
            match result {
                Ok(row) => {
                    let from =
                        if row.retry_count > 0 || row.attempt > 1 { JobState::Queued } else { JobState::Pending };
                    self.metrics.do_send(JobStateChanged {
                        from: Some(from),
                        to: JobState::Processing,
                        queue: pick.queue(),
                        priority: pick.priority(),
                        engine: row.engine,
                    });
                    self.metrics.do_send(MetricRecorded(MetricEvent::ScheduleAttempt("success")));
                    self.metrics.do_send(MetricRecorded(MetricEvent::QueueWaited(
                        ((now / 1000) as u64).saturating_sub(pick.enqueued_ms) as f64 / 1000.0,
                    )));
                    let addr = self.start_job_actor(row.clone(), ctx);
                    if let Some(n) = self.nodes.get_mut(&node_id) {
                        n.running.insert(pick.id);
                    }
                    for (action, reply) in deferred {
                        let a = addr.clone();
                        actix_rt::spawn(async move {
                            let r = a.send(ApplyControl(action)).await.map_err(AppError::from).and_then(|r| r);
                            let _ = reply.send(r);
                        });
                    }
                    started.push(pick.id);
                    jobs.push(row.to_wire());
                    lost_all = false;
                }
                Err(DbError::Conflict { .. }) | Err(DbError::NotFound) => {
                    // Canceled or gone in the meantime: nothing to place.
                    for (action, reply) in deferred {
                        let _ = reply.send(Err(AppError::bad_request(
                            "invalid_transition",
                            format!("job changed while being placed; {} again", action.as_str()),
                        )));
                    }
                }
                Err(e) => {
                    lost_all = false;
                    log::warn!("claim of job {} failed: {e}; keeping it queued", pick.id);
                    self.metrics.do_send(MetricRecorded(MetricEvent::ScheduleAttempt("error")));
                    self.index.reinsert(&pick);
                    for (action, reply) in deferred {
                        let _ = reply.send(Err(AppError::Unavailable {
                            code: "database_unavailable",
                            message: format!("could not {} now", action.as_str()),
                        }));
                    }
                }
            }
        }
        self.notify_node_jobs(&node_id, ctx);
        if let Some(g) = self.graph.as_ref().filter(|_| !started.is_empty()) {
            g.do_send(JobsStarted(started));
        }
        if lost_all && !time_is_up && !tx.is_closed() {
            // Every pick was canceled or claimed by another master on the same database
            // meanwhile: the worker keeps waiting for other work instead of getting an
            // empty answer while work is still queued.
            if !self.parked.contains_key(&node_id) {
                self.parked.insert(node_id.clone(), Parked { poll, node_id: node_id.clone(), max, tx });
            }
            self.want_round(Some(&node_id), ctx);
            return;
        }
        if let Err(jobs) = tx.send(jobs) {
            // The worker's request ended before the claim committed: give the jobs
            // back without counting a retry.
            log::info!("{} claimed job(s) not delivered to node {node_id}; handing them back", jobs.len());
            for j in jobs {
                if let Some(a) = Uuid::parse_str(&j.id).ok().and_then(|id| self.live_addr(&id)) {
                    a.do_send(HandBackJob { reason: "Placement not delivered to the worker".into() });
                }
            }
        }
        // Picks lost to an error went back into the index.
        self.want_round(None, ctx);
    }

    fn start_job_actor(&mut self, row: JobRow, ctx: &mut Context<Self>) -> Addr<JobActor> {
        let id = row.uuid();
        let node = row.node_id.clone();
        let ns = self.node_supervisor.clone().expect("node supervisor connected at start-up");
        let attempt = row.attempt;
        let addr = JobActor::new(row, self.db.clone(), ctx.address(), ns, self.metrics.clone(), self.policy.clone())
            .with_events(self.events.clone())
            .start();
        self.live.insert(id, (addr.clone(), node, attempt));
        addr
    }

    fn live_addr(&self, id: &Uuid) -> Option<Addr<JobActor>> {
        self.live.get(id).map(|(a, _, _)| a.clone()).filter(|a| a.connected())
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Parked requests may close without telling us, and a safety-net pass over
        // every parked node costs O(parked) once a second.
        ctx.run_interval(std::time::Duration::from_secs(1), |act, ctx| {
            act.parked.retain(|_, p| !p.tx.is_closed());
            act.want_round(None, ctx);
        });
    }
}

impl Handler<ConnectGraph> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, m: ConnectGraph, _: &mut Context<Self>) {
        self.graph = Some(m.0);
    }
}

impl Handler<ConnectNodeSupervisor> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, m: ConnectNodeSupervisor, _: &mut Context<Self>) {
        self.node_supervisor = Some(m.0);
    }
}

impl Handler<AdoptLiveJobs> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, m: AdoptLiveJobs, ctx: &mut Context<Self>) {
        for row in m.0 {
            let node = row.node_id.clone();
            let leased = row.state().is_leased();
            let id = row.uuid();
            self.start_job_actor(row, ctx);
            if let (true, Some(n)) = (leased, node) {
                if let Some(v) = self.nodes.get_mut(&n) {
                    v.running.insert(id);
                }
                self.notify_node_jobs(&n, ctx);
            }
        }
    }
}

impl Handler<JobsQueued> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, JobsQueued(jobs): JobsQueued, ctx: &mut Context<Self>) {
        for j in jobs {
            self.enqueue(j);
        }
        self.want_round(None, ctx);
    }
}

impl Handler<ClaimJobs> for SchedulerActor {
    type Result = AppResult<(u64, oneshot::Receiver<Vec<Job>>)>;
    fn handle(&mut self, m: ClaimJobs, ctx: &mut Context<Self>) -> Self::Result {
        if !self.nodes.contains_key(&m.node_id) {
            return Err(AppError::node_not_found(&m.node_id));
        }
        self.verify_node(&m.node_id, m.token.as_deref())?;
        // A poll proves the node alive (seed agents poll every 10 s, heartbeat every 30 s).
        if let Some(ns) = &self.node_supervisor {
            ns.do_send(NodeSeen(m.node_id.clone()));
        }
        if m.max == 0 {
            // A draining worker: its parked poll (if any) is answered empty, and nothing is
            // placed on the node until it asks again.
            if let Some(old) = self.parked.remove(&m.node_id) {
                let _ = old.tx.send(Vec::new());
                self.report_waiting();
            }
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Vec::new());
            return Ok((0, rx));
        }
        if !self.parked.contains_key(&m.node_id) && self.parked.len() >= self.max_parked {
            return Err(AppError::Unavailable {
                code: "too_many_polls",
                message: format!("{} workers are already waiting for work; retry shortly", self.parked.len()),
            });
        }
        let (tx, rx) = oneshot::channel();
        self.next_poll += 1;
        let poll = self.next_poll;
        let node_id = m.node_id.clone();
        // One parked poll per node: the one it replaces is answered empty.
        if let Some(old) = self.parked.insert(m.node_id.clone(), Parked { poll, node_id: m.node_id, max: m.max, tx }) {
            let _ = old.tx.send(Vec::new());
        }
        // Matched now, not in a later round: a poll that does not wait (the seed agent's
        // `GET /jobs/next` has no `wait`) ends right after this message, and must find
        // its claim already in flight.
        self.dispatch_scope(Dirty::Nodes(HashSet::from([node_id])), ctx);
        self.report_waiting();
        Ok((poll, rx))
    }
}

impl Handler<ClaimFreedSlots> for SchedulerActor {
    type Result = AppResult<oneshot::Receiver<Vec<Job>>>;
    fn handle(&mut self, m: ClaimFreedSlots, ctx: &mut Context<Self>) -> Self::Result {
        self.verify_node(&m.node_id, m.token.as_deref())?;
        let Some(node) = self.nodes.get_mut(&m.node_id) else { return Err(AppError::node_not_found(&m.node_id)) };
        let (tx, rx) = oneshot::channel();
        // The slots of this node's jobs whose results came with this claim or an earlier
        // one are free from the worker's side (their processes ended); the master frees
        // them when those results commit, which this claim does not wait for.
        let ending: Vec<Uuid> = m.ending.into_iter().filter(|id| node.running.contains(id)).collect();
        node.ended.extend(ending.iter().copied());
        let busy = (node.running.len() - node.ended.len()) as u32 + node.claiming;
        let free = node.max_slots.saturating_sub(busy);
        let want = if node.accepting { m.max.min(free) } else { 0 };
        // Nodes parked before this one were offered everything they can run, so these
        // picks take nothing another waiting node could have had.
        let picks = self.pick_for(&m.node_id, want, (now_micros() / 1000) as u64);
        if picks.is_empty() {
            let _ = tx.send(Vec::new());
            return Ok(rx);
        }
        self.next_poll += 1;
        let poll = Parked { poll: self.next_poll, node_id: m.node_id, max: want, tx };
        let id = poll.poll;
        self.start_claims_with(poll, picks, ending.iter().map(Uuid::to_string).collect(), ctx);
        // Not a long-poll: if every pick is lost meanwhile it is answered empty, not parked.
        self.claiming_polls.insert(id, true);
        Ok(rx)
    }
}

impl Handler<EndPoll> for SchedulerActor {
    type Result = bool;
    fn handle(&mut self, EndPoll { node_id, poll }: EndPoll, _: &mut Context<Self>) -> bool {
        if self.parked.get(&node_id).is_some_and(|p| p.poll == poll) {
            self.parked.remove(&node_id);
            self.report_waiting();
            return true;
        }
        if !self.claiming_polls.contains_key(&poll) {
            // Replaced by a newer poll of the same node (and answered empty then).
            return true;
        }
        if let Some(time_is_up) = self.claiming_polls.get_mut(&poll) {
            *time_is_up = true;
        }
        false
    }
}

impl Handler<DispatchRound> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, _: DispatchRound, ctx: &mut Context<Self>) {
        self.round_queued = false;
        self.dispatch(ctx);
    }
}
