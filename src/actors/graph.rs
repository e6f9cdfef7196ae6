//! The GraphActor: the live index of job graphs. It holds the jobs that wait for
//! others (out of the scheduler's runnable index until every job they wait for has
//! completed), each unfinished parent's children and their states, and the ladders
//! still to be planned (after their probe child). It hears of placements and final
//! states from the scheduler (events, never database polling), queues jobs as they
//! become runnable, fails the dependants of a failed job (`dependency_failed`),
//! derives each parent's state, and applies operators' actions on a parent to its
//! children. Pure decisions are `domain::graph` and `domain::ladder`.

use super::db_executor::Db;
use super::messages::*;
use super::metrics::MetricsActor;
use super::scheduler::{SchedulerActor, queued_job_from_row};
use crate::db::graph::{self as db_graph, GraphRow};
use crate::db::jobs::{self as db_jobs, JobRow};
use crate::db::transitions as db_transitions;
use crate::domain::graph::{DependencyOutcome, dependency_outcome, parent_state};
use crate::domain::ladder::Stage;
use crate::domain::state::{FailureReason, JobState, UserAction};
use crate::error::{AppError, AppResult};
use crate::wire::ControlResponse;
use actix::prelude::*;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

struct Waiting {
    queued: QueuedJob,
    deps: HashSet<Uuid>,
}

struct ParentEntry {
    state: JobState,
    children: HashMap<Uuid, JobState>,
    /// The probe child whose completion plans the ladder.
    expand_on: Option<Uuid>,
}

pub struct GraphActor {
    db: Db,
    scheduler: Addr<SchedulerActor>,
    metrics: Addr<MetricsActor>,
    waiting: HashMap<Uuid, Waiting>,
    /// job → the jobs waiting for it (kept after a failure, so a retry revives them).
    dependants: HashMap<Uuid, Vec<Uuid>>,
    /// Every tracked job's own dependencies.
    after_of: HashMap<Uuid, Vec<Uuid>>,
    parents: HashMap<Uuid, ParentEntry>,
    child_parent: HashMap<Uuid, Uuid>,
}

impl Actor for GraphActor {
    type Context = Context<Self>;
}

impl GraphActor {
    pub fn new(db: Db, scheduler: Addr<SchedulerActor>, metrics: Addr<MetricsActor>) -> Self {
        GraphActor {
            db,
            scheduler,
            metrics,
            waiting: HashMap::new(),
            dependants: HashMap::new(),
            after_of: HashMap::new(),
            parents: HashMap::new(),
            child_parent: HashMap::new(),
        }
    }

    fn changed(&self, from: Option<JobState>, row: &JobRow) {
        self.metrics.do_send(JobStateChanged {
            from,
            to: row.status,
            queue: row.queue,
            priority: row.priority,
            engine: row.engine,
        });
    }

    /// Follow one job; queue it if it waits for nothing (and `enqueue`).
    fn track(&mut self, job: TrackedJob, enqueue: bool, ctx: &mut Context<Self>) {
        let id = job.queued.id;
        if let Some(p) = job.parent {
            self.child_parent.insert(id, p);
            if let Some(entry) = self.parents.get_mut(&p) {
                entry.children.insert(id, job.state);
            }
        }
        if !job.after.is_empty() {
            self.after_of.insert(id, job.after.clone());
        }
        if !job.state.is_runnable() {
            return;
        }
        if job.after.is_empty() {
            if enqueue {
                self.scheduler.do_send(JobsQueued(vec![job.queued]));
            }
            return;
        }
        for d in &job.after {
            let list = self.dependants.entry(*d).or_default();
            if !list.contains(&id) {
                list.push(id);
            }
        }
        self.waiting.insert(id, Waiting { queued: job.queued, deps: job.after.iter().copied().collect() });
        self.check_dependencies(job.after, ctx);
    }

    /// Read the stored states of `deps` and settle those already final (a dependency
    /// may have finished before its dependant was followed).
    fn check_dependencies(&mut self, deps: Vec<Uuid>, ctx: &mut Context<Self>) {
        let ids: Vec<String> = deps.iter().map(Uuid::to_string).collect();
        let db = self.db.clone();
        ctx.spawn(async move { db.read(move |c| db_graph::states(c, &ids)).await }.into_actor(self).map(
            |res, act, ctx| match res {
                Ok(states) => {
                    for (id, s) in states {
                        if let Ok(id) = Uuid::parse_str(&id)
                            && dependency_outcome(s) != DependencyOutcome::Pending
                        {
                            act.settle(id, s, ctx);
                        }
                    }
                }
                Err(e) => log::warn!("cannot read the states of dependencies: {e}"),
            },
        ));
    }

    /// A job reached a final state: release or fail what waits for it, update its parent.
    fn settle(&mut self, id: Uuid, state: JobState, ctx: &mut Context<Self>) {
        if let Some(p) = self.child_parent.get(&id).copied() {
            let expand = match self.parents.get_mut(&p) {
                Some(entry) => {
                    entry.children.insert(id, state);
                    entry.expand_on == Some(id) && state == JobState::Completed
                }
                None => false,
            };
            if expand {
                self.expand(p, id, ctx);
            } else {
                self.recompute(p, ctx);
            }
        }
        match dependency_outcome(state) {
            DependencyOutcome::Pending => {}
            DependencyOutcome::Satisfied => {
                let mut ready = Vec::new();
                for w in self.dependants.remove(&id).unwrap_or_default() {
                    if let Some(entry) = self.waiting.get_mut(&w) {
                        entry.deps.remove(&id);
                        if entry.deps.is_empty() {
                            ready.push(self.waiting.remove(&w).expect("present").queued);
                        }
                    }
                }
                if !ready.is_empty() {
                    self.scheduler.do_send(JobsQueued(ready));
                }
            }
            DependencyOutcome::Broken => {
                let broken: Vec<String> = self
                    .dependants
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .filter(|w| self.waiting.remove(w).is_some())
                    .map(Uuid::to_string)
                    .collect();
                if broken.is_empty() {
                    return;
                }
                let because = format!("({id}) is {state}");
                let db = self.db.clone();
                ctx.spawn(
                    async move { db.write(move |c| db_graph::fail_dependants(c, &broken, &because)).await }
                        .into_actor(self)
                        .map(|res, act, ctx| match res {
                            Ok(rows) => {
                                for (from, row) in rows {
                                    act.changed(Some(from), &row);
                                    act.settle(row.uuid(), row.status, ctx);
                                }
                            }
                            Err(e) => log::error!("cannot fail the dependants of a failed job: {e}"),
                        }),
                );
            }
        }
    }

    /// Derive a parent's state from its children and store it when it changed.
    fn recompute(&mut self, p: Uuid, ctx: &mut Context<Self>) {
        let Some(entry) = self.parents.get_mut(&p) else { return };
        let states: Vec<JobState> = entry.children.values().copied().collect();
        let mut to = parent_state(&states, entry.state);
        // A ladder not planned yet is not done because its probe is.
        if entry.expand_on.is_some() && to == JobState::Completed {
            to = JobState::Processing;
        }
        if to == entry.state {
            return;
        }
        entry.state = to;
        if to.is_terminal() {
            let entry = self.parents.remove(&p).expect("present");
            for c in entry.children.keys() {
                self.child_parent.remove(c);
                self.after_of.remove(c);
            }
        }
        let db = self.db.clone();
        let pid = p.to_string();
        ctx.spawn(
            async move { db.write(move |c| db_graph::derive_parent(c, &pid, to, None)).await }.into_actor(self).map(
                move |res, act, _| match res {
                    Ok((moves, row)) => {
                        for (from, to) in moves {
                            act.changed(Some(from), &JobRow { status: to, ..row.clone() });
                        }
                    }
                    Err(e) => log::warn!("parent {p}: cannot store its derived state {to}: {e}"),
                },
            ),
        );
    }

    /// The probe of a ladder completed: plan the renditions, audio, thumbnails and
    /// packaging from what it found, store them as children, and queue them.
    fn expand(&mut self, p: Uuid, probe: Uuid, ctx: &mut Context<Self>) {
        let db = self.db.clone();
        let scheduler = self.scheduler.clone();
        let (pid, probe_id) = (p.to_string(), probe.to_string());
        let fut = async move {
            let (parent, info) = db
                .read({
                    let (pid, probe_id) = (pid.clone(), probe_id.clone());
                    move |c| Ok((db_jobs::get(c, &pid)?, crate::db::outputs::input_info(c, &probe_id)?))
                })
                .await?;
            let info = info.and_then(|i| serde_json::from_str(&i).ok());
            // Auto chunking asks how many nodes could share the chunks now.
            let workers = match super::graph_plan::requirements(&parent) {
                Some(r) => scheduler.send(CountAbleNodes(r)).await.unwrap_or(0),
                None => 0,
            };
            let plan = super::graph_plan::plan_children(&parent, info, workers);
            match plan {
                Ok((jobs, links)) => {
                    let stored = db
                        .write(move |c| {
                            let since = crate::db::events::head(c)?;
                            let rows = db_jobs::insert_many(c, &jobs)?;
                            db_graph::insert(c, since, &links)?;
                            Ok((rows, links))
                        })
                        .await?;
                    Ok(Ok(stored))
                }
                Err(why) => {
                    let failure = Some((FailureReason::InputError, why));
                    Ok(Err(db.write(move |c| db_graph::derive_parent(c, &pid, JobState::Failed, failure)).await?))
                }
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |res: Result<_, crate::db::DbError>, act, ctx| match res {
            Ok(Ok((rows, links))) => {
                if let Some(entry) = act.parents.get_mut(&p) {
                    entry.expand_on = None;
                }
                let after: HashMap<String, Vec<Uuid>> = links
                    .iter()
                    .map(|l| (l.job_id.clone(), l.after().iter().filter_map(|a| Uuid::parse_str(a).ok()).collect()))
                    .collect();
                for row in rows {
                    act.changed(None, &row);
                    let job = TrackedJob {
                        queued: queued_job_from_row(&row),
                        state: row.status,
                        parent: Some(p),
                        after: after.get(&row.id).cloned().unwrap_or_default(),
                    };
                    act.track(job, true, ctx);
                }
                act.recompute(p, ctx);
            }
            Ok(Err((moves, row))) => {
                for (from, to) in moves {
                    act.changed(Some(from), &JobRow { status: to, ..row.clone() });
                }
                act.forget_parent(p);
            }
            Err(e) => log::error!("parent {p}: cannot plan its ladder: {e}"),
        }));
    }

    fn forget_parent(&mut self, p: Uuid) {
        if let Some(entry) = self.parents.remove(&p) {
            for c in entry.children.keys() {
                self.child_parent.remove(c);
            }
        }
    }

    /// Follow an unfinished parent from what is stored (start-up, or a retried parent);
    /// `enqueue`: the runnable children to queue (the rest are in the index already).
    fn load_parent(&mut self, p: Uuid, enqueue: HashSet<Uuid>, ctx: &mut Context<Self>) {
        let db = self.db.clone();
        let pid = p.to_string();
        ctx.spawn(
            async move { db.read(move |c| Ok((db_jobs::get(c, &pid)?, db_graph::children(c, &pid)?))).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let (parent, children) = match res {
                        Ok(x) => x,
                        Err(e) => return log::error!("parent {p}: cannot load its children: {e}"),
                    };
                    let probe_only = children.len() == 1 && children[0].0.stage == Stage::Probe.as_str();
                    act.parents.insert(
                        p,
                        ParentEntry {
                            state: parent.status,
                            children: HashMap::new(),
                            expand_on: probe_only.then(|| children[0].1.uuid()),
                        },
                    );
                    for (g, row) in children {
                        let id = row.uuid();
                        let job = TrackedJob {
                            queued: queued_job_from_row(&row),
                            state: row.status,
                            parent: Some(p),
                            after: g.after().iter().filter_map(|a| Uuid::parse_str(a).ok()).collect(),
                        };
                        act.track(job, enqueue.contains(&id), ctx);
                        if probe_only && row.status == JobState::Completed {
                            act.expand(p, id, ctx);
                        }
                    }
                    act.recompute(p, ctx);
                }),
        );
    }
}

impl Handler<TrackGraph> for GraphActor {
    type Result = ();
    fn handle(&mut self, m: TrackGraph, ctx: &mut Context<Self>) {
        if let Some(p) = m.parent {
            self.parents.entry(p).or_insert(ParentEntry {
                state: JobState::Pending,
                children: HashMap::new(),
                expand_on: m.expand_on,
            });
        }
        for job in m.jobs {
            self.track(job, true, ctx);
        }
    }
}

impl Handler<JobsSettled> for GraphActor {
    type Result = ();
    fn handle(&mut self, JobsSettled(jobs): JobsSettled, ctx: &mut Context<Self>) {
        for (id, state) in jobs {
            self.settle(id, state, ctx);
        }
    }
}

impl Handler<JobsStarted> for GraphActor {
    type Result = ();
    fn handle(&mut self, JobsStarted(ids): JobsStarted, ctx: &mut Context<Self>) {
        for id in ids {
            if let Some(p) = self.child_parent.get(&id).copied() {
                if let Some(e) = self.parents.get_mut(&p) {
                    e.children.insert(id, JobState::Processing);
                }
                self.recompute(p, ctx);
            }
        }
    }
}

impl Handler<JobRequeued> for GraphActor {
    type Result = ResponseActFuture<Self, ()>;
    /// Jobs that failed only because `id` did (or in turn one of them) wait again,
    /// found in the database (the in-memory index may not have known them: a
    /// restart). Answers once they are stored as waiting.
    fn handle(&mut self, JobRequeued(id): JobRequeued, _: &mut Context<Self>) -> Self::Result {
        let db = self.db.clone();
        let key = id.to_string();
        Box::pin(async move { db.write(move |c| db_graph::revive_chain(c, &key)).await }.into_actor(self).map(
            |res, act, ctx| match res {
                Ok(rows) => {
                    for (row, link) in rows {
                        act.changed(Some(JobState::Failed), &row);
                        let job = TrackedJob {
                            queued: queued_job_from_row(&row),
                            state: row.status,
                            parent: link.parent_id.as_deref().and_then(|p| Uuid::parse_str(p).ok()),
                            after: link.after().iter().filter_map(|a| Uuid::parse_str(a).ok()).collect(),
                        };
                        act.track(job, true, ctx);
                    }
                }
                Err(e) => log::error!("cannot revive the dependants of a retried job: {e}"),
            },
        ))
    }
}

impl Handler<AdoptGraphs> for GraphActor {
    type Result = ();
    fn handle(&mut self, AdoptGraphs(rows): AdoptGraphs, ctx: &mut Context<Self>) {
        let parents: HashSet<Uuid> =
            rows.iter().filter(|(g, _)| g.is_parent).filter_map(|(g, _)| Uuid::parse_str(&g.job_id).ok()).collect();
        for (g, state) in rows {
            let Ok(id) = Uuid::parse_str(&g.job_id) else { continue };
            if g.is_parent {
                // Its waiting children are queued by the parent's load once their
                // dependencies are seen complete.
                let waiting: HashSet<Uuid> = HashSet::new();
                self.load_parent(id, waiting, ctx);
            } else if g.parent_id.as_deref().and_then(|p| Uuid::parse_str(p).ok()).is_none_or(|p| !parents.contains(&p))
                && !g.after().is_empty()
                && state.is_runnable()
            {
                // A job outside any open graph that waits for others.
                let db = self.db.clone();
                let jid = g.job_id.clone();
                let after: Vec<Uuid> = g.after().iter().filter_map(|a| Uuid::parse_str(a).ok()).collect();
                ctx.spawn(async move { db.read(move |c| db_jobs::get(c, &jid)).await }.into_actor(self).map(
                    move |res, act, ctx| {
                        if let Ok(row) = res {
                            let job = TrackedJob { queued: queued_job_from_row(&row), state, parent: None, after };
                            act.track(job, true, ctx);
                        }
                    },
                ));
            }
        }
    }
}

impl Handler<ControlGraph> for GraphActor {
    type Result = ResponseActFuture<Self, AppResult<ControlResponse>>;

    fn handle(&mut self, ControlGraph { id, action }: ControlGraph, _: &mut Context<Self>) -> Self::Result {
        let db = self.db.clone();
        let scheduler = self.scheduler.clone();
        let sid = id.to_string();
        let waiting_here: HashSet<Uuid> = self.waiting.keys().copied().collect();
        let fut = async move {
            let (me, link, children): (JobRow, Option<GraphRow>, _) = db
                .read(move |c| Ok((db_jobs::get(c, &sid)?, db_graph::get(c, &sid)?, db_graph::children(c, &sid)?)))
                .await
                .map_err(|e| match e {
                    crate::db::DbError::NotFound => AppError::job_not_found(&id.to_string()),
                    e => e.into(),
                })?;
            let is_parent = link.as_ref().is_some_and(|l| l.is_parent);
            let link = link.filter(|_| !is_parent);
            let mut targets: Vec<JobRow> =
                if is_parent { children.into_iter().map(|(_, j)| j).collect() } else { vec![me] };
            // Waiting children first: canceled before the running ones end, they are not
            // failed as dependants of a canceled job meanwhile.
            targets.sort_by_key(|j| !waiting_here.contains(&j.uuid()));
            let mut acted = Vec::new();
            for child in targets {
                let cid = child.uuid();
                let applies = match action {
                    UserAction::Cancel => !child.status.is_terminal(),
                    UserAction::Pause => child.status == JobState::Processing,
                    UserAction::Resume => child.status == JobState::Paused,
                    // Dependants failed for a dependency come back with it.
                    UserAction::Retry => {
                        matches!(child.status, JobState::Failed | JobState::Canceled)
                            && child.failure_reason != Some(FailureReason::DependencyFailed)
                    }
                };
                if !applies {
                    continue;
                }
                let by_db = action == UserAction::Retry || waiting_here.contains(&cid);
                let answer = if by_db {
                    let held: fn(JobState) -> bool =
                        if action == UserAction::Retry { JobState::is_terminal } else { JobState::is_runnable };
                    let cid_s = child.id.clone();
                    db.write(move |c| db_transitions::control_stored(c, &cid_s, action, held))
                        .await
                        .map(|(from, row)| (cid, Some((from, row))))
                        .map_err(AppError::from)
                } else {
                    scheduler.send(ControlJob { id: cid, action }).await?.map(|_| (cid, None))
                };
                match answer {
                    Ok(a) => acted.push(a),
                    Err(e) if !is_parent => return Err(e),
                    Err(e) => log::info!("{action} of child {cid}: {e}"),
                }
            }
            if acted.is_empty() {
                return Err(AppError::Conflict {
                    code: "invalid_transition",
                    message: format!("no job of this graph can be {}", action.done()),
                });
            }
            // A retry answers once its effects are stored: the retried jobs queued, the
            // jobs that failed waiting for them waiting again, the parent queued.
            let mut retried = Retried::default();
            if action == UserAction::Retry {
                let parent = if is_parent { Some(id) } else { link.and_then(|l| l.parent_id?.parse().ok()) };
                let ids: Vec<String> = acted.iter().map(|(c, _)| c.to_string()).collect();
                retried = db
                    .write(move |c| {
                        let mut revived = Vec::new();
                        for i in &ids {
                            revived.extend(db_graph::revive_chain(c, i)?);
                        }
                        let parent_moves = match parent {
                            Some(p) => Some(db_graph::derive_parent(c, &p.to_string(), JobState::Queued, None)?),
                            None => None,
                        };
                        Ok(Retried { parent, revived, parent_moves })
                    })
                    .await?;
            }
            Ok((acted, retried))
        };
        Box::pin(fut.into_actor(self).map(move |res, act, ctx| {
            let (acted, retried) = res?;
            let mut requeued = HashSet::new();
            for (cid, stored) in acted {
                if let Some((from, row)) = stored {
                    act.changed(Some(from), &row);
                    if row.status.is_terminal() {
                        act.waiting.remove(&cid);
                        act.settle(cid, row.status, ctx);
                    } else {
                        requeued.insert(cid);
                    }
                } else if let Some(p) = act.child_parent.get(&cid).copied() {
                    let to = match action {
                        UserAction::Pause => JobState::Paused,
                        UserAction::Resume => JobState::Processing,
                        _ => continue,
                    };
                    if let Some(e) = act.parents.get_mut(&p) {
                        e.children.insert(cid, to);
                    }
                    act.recompute(p, ctx);
                }
            }
            if action == UserAction::Retry {
                for (row, _) in &retried.revived {
                    act.changed(Some(JobState::Failed), row);
                }
                if let Some((moves, row)) = &retried.parent_moves {
                    for (from, to) in moves {
                        act.changed(Some(*from), &JobRow { status: *to, ..row.clone() });
                    }
                }
                match retried.parent {
                    // The parent is followed again from what is stored: the retried
                    // children are queued, the revived ones wait.
                    Some(p) => {
                        act.forget_parent(p);
                        act.load_parent(p, requeued, ctx);
                    }
                    None => {
                        for (row, link) in retried.revived {
                            let job = TrackedJob {
                                queued: queued_job_from_row(&row),
                                state: row.status,
                                parent: None,
                                after: link.after().iter().filter_map(|a| Uuid::parse_str(a).ok()).collect(),
                            };
                            act.track(job, true, ctx);
                        }
                        for r in requeued {
                            ctx.notify(Requeue(r));
                        }
                    }
                }
            }
            Ok(ControlResponse { job_id: id.to_string(), status: action.done().into(), retry_count: None })
        }))
    }
}

/// What a retry stored besides the retried jobs.
#[derive(Default)]
struct Retried {
    parent: Option<Uuid>,
    revived: Vec<(JobRow, GraphRow)>,
    parent_moves: Option<(Vec<(JobState, JobState)>, JobRow)>,
}

/// A retried job outside a parent: queue it, or make it wait for its dependencies.
#[derive(Message)]
#[rtype(result = "()")]
struct Requeue(Uuid);

impl Handler<Requeue> for GraphActor {
    type Result = ();
    fn handle(&mut self, Requeue(id): Requeue, ctx: &mut Context<Self>) {
        let db = self.db.clone();
        let sid = id.to_string();
        ctx.spawn(
            async move { db.read(move |c| Ok((db_jobs::get(c, &sid)?, db_graph::get(c, &sid)?))).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    if let Ok((row, link)) = res {
                        let after = link
                            .map(|l| l.after().iter().filter_map(|a| Uuid::parse_str(a).ok()).collect())
                            .unwrap_or_default();
                        let job =
                            TrackedJob { queued: queued_job_from_row(&row), state: row.status, parent: None, after };
                        act.track(job, true, ctx);
                    }
                }),
        );
    }
}
