//! The scheduler's mirror of the farm's nodes — what each can run, its slots and the
//! jobs it holds, kept current by the node supervisor — and the answers read from it
//! and the runnable index: why a job waits, whether any node could ever run it, and
//! the snapshot the console and the health check show.

use super::{NodeView, SchedulerActor};
use crate::actors::messages::*;
use crate::db::now_micros;
use crate::domain::placement::NodeCaps;
use crate::domain::queue::{Priority, QueueName};
use actix::prelude::*;
use std::collections::HashSet;

impl Handler<NodeChanged> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, m: NodeChanged, ctx: &mut Context<Self>) {
        let id = m.node_id.clone();
        let v = self.nodes.entry(m.node_id).or_insert_with(|| NodeView {
            caps: NodeCaps::default(),
            token: None,
            max_slots: 1,
            accepting: false,
            load: 0.0,
            running: HashSet::new(),
            ended: HashSet::new(),
            claiming: 0,
        });
        // Load only orders nodes; a change of what the node can take needs a round.
        let placement_changed = v.caps != m.caps || v.max_slots != m.max_slots || v.accepting != m.accepting;
        v.token = m.token;
        v.caps = m.caps;
        v.max_slots = m.max_slots;
        v.accepting = m.accepting;
        v.load = m.load;
        if placement_changed {
            self.want_round(Some(&id), ctx);
        }
    }
}

impl Handler<NodeRemoved> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, m: NodeRemoved, _: &mut Context<Self>) {
        self.nodes.remove(&m.0);
        self.parked.remove(&m.0);
        self.report_waiting();
    }
}

impl Handler<NodeLost> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, m: NodeLost, _: &mut Context<Self>) {
        self.parked.remove(&m.0);
        self.report_waiting();
        for (addr, node, _) in self.live.values() {
            if node.as_deref() == Some(m.0.as_str()) {
                addr.do_send(LeaseLost { reason: format!("node {} lost (missed heartbeats)", m.0), node_lost: true });
            }
        }
    }
}

impl Handler<ReleaseWaiters> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, _: ReleaseWaiters, _: &mut Context<Self>) {
        for (_, p) in self.parked.drain() {
            let _ = p.tx.send(Vec::new());
        }
        self.report_waiting();
    }
}

impl Handler<ReportNodeJobs> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, _: ReportNodeJobs, _: &mut Context<Self>) {
        let Some(ns) = &self.node_supervisor else { return };
        for node_id in std::mem::take(&mut self.node_jobs_changed) {
            if let Some(n) = self.nodes.get(&node_id) {
                ns.do_send(NodeJobsChanged { running: n.running.iter().copied().collect(), node_id });
            }
        }
    }
}

impl Handler<GetQueueReason> for SchedulerActor {
    type Result = Option<String>;
    fn handle(&mut self, m: GetQueueReason, _: &mut Context<Self>) -> Self::Result {
        let req = self.index.requirements_of(&m.0)?;
        let able: Vec<&NodeView> = self.nodes.values().filter(|n| n.caps.can_ever_run(req)).collect();
        let needs = req.describe();
        Some(if self.nodes.is_empty() {
            "no worker node is registered".into()
        } else if able.is_empty() {
            format!("no registered node can run it (needs {needs})")
        } else if !able.iter().any(|n| n.accepting) {
            "every node that can run it is offline or draining".into()
        } else {
            "waiting for a free slot".into()
        })
    }
}

impl Handler<CheckPlaceable> for SchedulerActor {
    type Result = Option<bool>;
    fn handle(&mut self, m: CheckPlaceable, _: &mut Context<Self>) -> Self::Result {
        (!self.nodes.is_empty()).then(|| self.nodes.values().any(|n| n.caps.can_ever_run(&m.0)))
    }
}

impl Handler<CountAbleNodes> for SchedulerActor {
    type Result = usize;
    fn handle(&mut self, m: CountAbleNodes, _: &mut Context<Self>) -> Self::Result {
        self.nodes.values().filter(|n| n.accepting && n.caps.can_ever_run(&m.0)).count()
    }
}

impl Handler<GetSchedulerSnapshot> for SchedulerActor {
    type Result = MessageResult<GetSchedulerSnapshot>;
    fn handle(&mut self, _: GetSchedulerSnapshot, _: &mut Context<Self>) -> Self::Result {
        let mut queued = Vec::new();
        for q in [QueueName::Live, QueueName::Default, QueueName::Batch] {
            for p in [Priority::High, Priority::Medium, Priority::Low] {
                queued.push((q, p, self.index.count(q, p)));
            }
        }
        let unplaceable = self
            .index
            .classes_present()
            .into_iter()
            .filter(|r| !self.nodes.values().any(|n| n.caps.can_ever_run(r)))
            .map(|r| r.describe())
            .collect();
        let now_ms = (now_micros() / 1000) as u64;
        MessageResult(SchedulerSnapshot {
            queued,
            unplaceable,
            oldest_wait_seconds: self.index.oldest_enqueued_ms().map(|t| now_ms.saturating_sub(t) as f64 / 1000.0),
            live: self.live.values().map(|(a, _, _)| a.clone()).filter(|a| a.connected()).collect(),
        })
    }
}
