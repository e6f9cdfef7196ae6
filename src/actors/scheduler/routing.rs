//! Where the scheduler sends what is meant for one job: an operator's control (to the
//! job's actor, to the claim in flight that will hand it on, or to the database when
//! no actor holds the job), a worker's report (checked against the node's token and
//! the job's lease first), and the reconciliation of what a node says it runs with the
//! leases the master holds. Also the bookkeeping when a job's actor stops.

use super::{SchedulerActor, queued_job_from_row};
use crate::actors::job::JobActor;
use crate::actors::messages::*;
use crate::db::DbError;
use crate::db::transitions as db_transitions;
use crate::domain::state::JobState;
use crate::error::{AppError, AppResult};
use crate::wire::{ControlResponse, RunningJob};
use actix::prelude::*;
use std::collections::HashMap;
use tokio::sync::oneshot;
use uuid::Uuid;

impl Handler<ControlJob> for SchedulerActor {
    type Result = ResponseActFuture<Self, AppResult<ControlResponse>>;

    fn handle(&mut self, m: ControlJob, _: &mut Context<Self>) -> Self::Result {
        let id = m.id;
        let action = m.action;
        if let Some(addr) = self.live_addr(&id) {
            return Box::pin(
                async move { addr.send(ApplyControl(action)).await.map_err(AppError::from).and_then(|r| r) }
                    .into_actor(self),
            );
        }
        if let Some(deferred) = self.claiming.get_mut(&id) {
            let (tx, rx) = oneshot::channel();
            deferred.push((action, tx));
            return Box::pin(
                async move {
                    rx.await.unwrap_or_else(|_| {
                        Err(AppError::Unavailable {
                            code: "service_unavailable",
                            message: "placement in progress".into(),
                        })
                    })
                }
                .into_actor(self),
            );
        }
        // In the index (runnable) or only in the database (finished, or unknown): the
        // gate decides in the same transaction that writes. A cancel takes the job out
        // of the index first, so no round places it meanwhile.
        let in_index = self.index.contains(&id);
        let taken = if in_index && action == UserAction::Cancel { self.take(&id) } else { None };
        let held_here: fn(JobState) -> bool = if in_index { JobState::is_runnable } else { JobState::is_terminal };
        let db = self.db.clone();
        let sid = id.to_string();
        Box::pin(
            async move { db.write(move |c| db_transitions::control_stored(c, &sid, action, held_here)).await }
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok((from, row)) => {
                        act.metrics.do_send(JobStateChanged {
                            from: Some(from),
                            to: row.status,
                            queue: row.queue,
                            priority: row.priority,
                            engine: row.engine,
                        });
                        let retry_count = (action == UserAction::Retry).then_some(row.retry_count);
                        // (A retry's dependants are revived by the API handler, before it answers.)
                        if let Some(g) = act.graph.as_ref().filter(|_| row.status.is_terminal()) {
                            g.do_send(JobsSettled(vec![(row.uuid(), row.status)]));
                        }
                        if row.status.is_runnable() {
                            act.enqueue(queued_job_from_row(&row));
                            act.want_round(None, ctx);
                        }
                        Ok(ControlResponse { job_id: row.id, status: action.done().into(), retry_count })
                    }
                    Err(e) => {
                        if let Some(entry) = taken.filter(|_| matches!(e, DbError::Unavailable(_))) {
                            act.index.reinsert(&entry);
                            act.want_round(None, ctx);
                        }
                        match e {
                            DbError::NotFound => Err(AppError::job_not_found(&id.to_string())),
                            e => Err(e.into()),
                        }
                    }
                }),
        )
    }
}

impl<M> Handler<SendToLiveJob<M>> for SchedulerActor
where
    M: Message + Send + 'static,
    M::Result: Send,
    JobActor: Handler<M>,
{
    type Result = ResponseFuture<Option<M::Result>>;
    fn handle(&mut self, SendToLiveJob(id, m): SendToLiveJob<M>, _: &mut Context<Self>) -> Self::Result {
        let addr = self.live_addr(&id);
        Box::pin(async move { addr?.send(m).await.ok() })
    }
}

impl<M> Handler<FromNode<M>> for SchedulerActor
where
    M: Message + Send + 'static,
    M::Result: Send,
    JobActor: Handler<M>,
{
    type Result = ResponseFuture<AppResult<Option<M::Result>>>;
    fn handle(&mut self, m: FromNode<M>, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.verify_node(&m.node_id, m.token.as_deref()) {
            return Box::pin(async move { Err(e) });
        }
        if !m.attempt_given && self.nodes.get(&m.node_id).is_some_and(|n| n.token.is_some()) {
            let e = AppError::bad_request(
                "missing_attempt",
                "a node with a node token must send the attempt its lease is for",
            );
            return Box::pin(async move { Err(e) });
        }
        let addr = self.live_addr(&m.job);
        let msg = m.msg;
        Box::pin(async move {
            let Some(addr) = addr else { return Ok(None) };
            Ok(addr.send(msg).await.ok())
        })
    }
}

impl<M> Handler<FromNodeBatch<M>> for SchedulerActor
where
    M: Message + Send + 'static,
    M::Result: Send,
    JobActor: Handler<M>,
{
    type Result = ResponseFuture<Vec<AppResult<Option<M::Result>>>>;
    fn handle(&mut self, m: FromNodeBatch<M>, ctx: &mut Context<Self>) -> Self::Result {
        let each: Vec<_> = m.0.into_iter().map(|one| <Self as Handler<FromNode<M>>>::handle(self, one, ctx)).collect();
        Box::pin(futures_util::future::join_all(each))
    }
}

impl Handler<JobActorStopped> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, m: JobActorStopped, ctx: &mut Context<Self>) {
        // The actor's row may already have dropped its node: release by job id.
        let holders: Vec<String> = match &m.node_id {
            Some(n) if self.nodes.get(n).is_some_and(|v| v.running.contains(&m.id)) => vec![n.clone()],
            _ => self.nodes.iter().filter(|(_, v)| v.running.contains(&m.id)).map(|(k, _)| k.clone()).collect(),
        };
        for node in holders {
            if let Some(n) = self.nodes.get_mut(&node) {
                n.running.remove(&m.id);
                n.ended.remove(&m.id);
            }
            self.notify_node_jobs(&node, ctx);
            self.want_round(Some(&node), ctx);
        }
        if m.stopping && self.live.get(&m.id).is_some_and(|(_, _, a)| *a == m.attempt) {
            self.live.remove(&m.id);
        }
        if let (Some(state), Some(g)) = (m.settled, &self.graph) {
            g.do_send(JobsSettled(vec![(m.id, state)]));
        }
    }
}

impl Handler<ReconcileNodeJobs> for SchedulerActor {
    type Result = ResponseFuture<Vec<RunningJob>>;
    fn handle(&mut self, m: ReconcileNodeJobs, _: &mut Context<Self>) -> Self::Result {
        let reported: HashMap<Uuid, i32> =
            m.reported.iter().filter_map(|r| Some((Uuid::parse_str(&r.job_id).ok()?, r.attempt))).collect();
        let mut stale: Vec<RunningJob> = Vec::new();
        let mut checks = Vec::new();
        for r in &m.reported {
            match Uuid::parse_str(&r.job_id)
                .ok()
                .and_then(|id| self.live.get(&id).map(|(a, n, _)| (a.clone(), n.clone())))
            {
                Some((addr, Some(node))) if node == m.node_id => checks.push((r.clone(), addr)),
                _ => stale.push(r.clone()),
            }
        }
        // Jobs leased to this node that it did not report.
        let mut unreported = Vec::new();
        if let Some(n) = self.nodes.get(&m.node_id) {
            for id in &n.running {
                if !reported.contains_key(id)
                    && let Some((a, _, _)) = self.live.get(id)
                {
                    unreported.push(a.clone());
                }
            }
        }
        Box::pin(async move {
            for a in unreported {
                let _ = a.send(CheckLease { reported_attempt: None }).await;
            }
            for (r, addr) in checks {
                if !addr.send(CheckLease { reported_attempt: Some(r.attempt) }).await.unwrap_or(false) {
                    stale.push(r);
                }
            }
            stale
        })
    }
}
