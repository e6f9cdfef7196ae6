//! `NodeSupervisor`: the node registry.
//!
//! It owns every node's registration, hardware and heartbeat deadline, drains, and
//! the per-node queue of control commands that workers long-poll for. A node that
//! misses three heartbeat intervals is declared offline and its leases are revoked
//! (the scheduler tells each JobActor); its next heartbeat revives it. Listing nodes
//! is served from memory.
//!
//! [`registration`] holds a worker's registration; [`views`] the readers' answers.

use super::db_executor::Db;
use super::messages::*;
use super::metrics::MetricsActor;
use super::scheduler::SchedulerActor;
use crate::db::events as db_events;
use crate::db::nodes::{self as db_nodes, NodeRow};
use crate::db::now_micros;
use crate::domain::credentials::{self, Digest, check_node_token};
use crate::domain::node::{NodeState, heartbeat_interval_ms, loss_window};
use crate::domain::placement::capability_as_encoder;
use crate::domain::placement::{GpuCaps, NodeCaps};
use crate::error::{AppError, AppResult};
use crate::wire::{ControlCommand, GpuInfo, HeartbeatResponse, Node, rfc3339};
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use uuid::Uuid;

mod registration;
mod views;

/// What the worker probed, stored as JSON in `nodes.hardware`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hardware {
    #[serde(default)]
    pub encoders: Option<Vec<String>>,
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
    #[serde(default)]
    pub ffmpeg_version: Option<String>,
    #[serde(default)]
    pub gstreamer_version: Option<String>,
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gstreamer_rtmp: bool,
    /// The worker's `--rtmp-base` (default RTMP destinations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmp_base: Option<String>,
}

struct NodeEntry {
    row: NodeRow,
    hw: Hardware,
    deadline: Instant,
    offline: bool,
    /// In no order (it changes with every job that starts or ends; readers sort).
    running: Vec<Uuid>,
    commands: Vec<ControlCommand>,
    waiters: Vec<oneshot::Sender<Vec<ControlCommand>>>,
    last_persist: Instant,
    /// What the scheduler was last told, so unchanged heartbeats tell it nothing.
    published: Option<Published>,
    /// Digest of the node's token (None: a seed-style node on the shared worker key).
    token: Option<Digest>,
    /// The token before the last rotation, accepted for re-registration only: a worker
    /// whose registration reply was lost still holds it.
    previous_token: Option<Digest>,
    /// The row's JSON columns, parsed once: listings and placement read them often.
    gpu_capabilities: Vec<String>,
    labels: serde_json::Map<String, serde_json::Value>,
}

#[derive(PartialEq)]
struct Published {
    caps: NodeCaps,
    max_slots: u32,
    accepting: bool,
    load: f64,
    token: Option<Digest>,
}

impl Published {
    /// Load only orders nodes; small moves are not worth a message per heartbeat.
    fn same_as(&self, other: &Published) -> bool {
        self.caps == other.caps
            && self.max_slots == other.max_slots
            && self.accepting == other.accepting
            && self.token == other.token
            && (self.load - other.load).abs() < 5.0
    }
}

impl NodeEntry {
    fn new(row: NodeRow, hw: Hardware, deadline: Instant, offline: bool) -> Self {
        let token = row.token_hash.as_deref().and_then(credentials::from_hex);
        let gpu_capabilities = serde_json::from_str(&row.gpu_capabilities).unwrap_or_default();
        let labels = serde_json::from_str(&row.labels).unwrap_or_default();
        NodeEntry {
            gpu_capabilities,
            labels,
            row,
            hw,
            deadline,
            offline,
            running: Vec::new(),
            commands: Vec::new(),
            waiters: Vec::new(),
            last_persist: Instant::now(),
            published: None,
            token,
            previous_token: None,
        }
    }

    /// Any contact from the node (a heartbeat, a poll, a result) proves it alive: a new
    /// deadline of three of its own intervals, and back from offline. True if it was.
    fn heard_from(&mut self) -> bool {
        let revived = self.offline;
        self.offline = false;
        self.deadline = Instant::now() + loss_window(self.row.heartbeat_interval_ms);
        self.row.last_heartbeat = now_micros();
        revived
    }

    fn status(&self) -> NodeState {
        NodeState::of(self.offline, self.row.draining, self.running.len(), self.row.max_concurrent_jobs)
    }

    fn caps(&self) -> NodeCaps {
        NodeCaps {
            cpu_threads: self.row.cpu_threads.max(0) as u32,
            ram_total_mb: (self.row.ram_total_bytes.max(0) as u64) >> 20,
            ram_free_mb: (self.row.ram_free_bytes > 0).then_some((self.row.ram_free_bytes as u64) >> 20),
            gpus: self
                .hw
                .gpus
                .iter()
                .map(|g| GpuCaps { index: g.index, memory_total_mb: g.memory_total_bytes >> 20 })
                .collect(),
            has_gpu: self.row.has_gpu,
            encoders: self.hw.encoders.clone(),
            gpu_capabilities: self.gpu_capabilities.clone(),
            has_gstreamer: self.hw.gstreamer_version.is_some(),
            has_gstreamer_rtmp: self.hw.gstreamer_rtmp,
            max_concurrent_jobs: self.row.max_concurrent_jobs.max(1) as u32,
        }
    }

    fn running_sorted(&self) -> Vec<String> {
        let mut ids = self.running.clone();
        ids.sort_unstable();
        ids.iter().map(|u| u.to_string()).collect()
    }

    fn to_wire(&self) -> Node {
        let r = &self.row;
        Node {
            id: r.id.clone(),
            name: r.name.clone(),
            address: r.address.clone(),
            node_type: r.node_type.clone(),
            cpu_threads: r.cpu_threads.max(0) as u32,
            cpu_model: r.cpu_model.clone(),
            cpu_load_percent: r.cpu_load_percent,
            has_gpu: r.has_gpu,
            gpu_type: (!r.gpu_type.is_empty()).then(|| r.gpu_type.clone()),
            gpu_capabilities: self.gpu_capabilities.clone(),
            ram_total_bytes: r.ram_total_bytes.max(0) as u64,
            ram_free_bytes: r.ram_free_bytes.max(0) as u64,
            labels: self.labels.clone(),
            status: self.status(),
            last_heartbeat: rfc3339(r.last_heartbeat),
            registered_at: rfc3339(r.registered_at),
            current_job_id: self.running.iter().min().map(|u| u.to_string()),
            running_jobs: self.running_sorted(),
            max_concurrent_jobs: r.max_concurrent_jobs.max(1) as u32,
            encoders: self.hw.encoders.clone(),
            encoders_source: if self.hw.encoders.is_some() { "probed" } else { "declared" }.into(),
            gpus: self.hw.gpus.clone(),
            ffmpeg_version: self.hw.ffmpeg_version.clone(),
            gstreamer_version: self.hw.gstreamer_version.clone(),
            gstreamer_rtmp: self.hw.gstreamer_rtmp,
            disk_free_bytes: self.hw.disk_free_bytes,
        }
    }
}

pub struct NodeSupervisor {
    nodes: HashMap<String, NodeEntry>,
    db: Db,
    scheduler: Addr<SchedulerActor>,
    metrics: Addr<MetricsActor>,
    heartbeat_interval: Duration,
    /// Nodes by status (available, busy, draining, offline), kept up to date per change.
    counts: [usize; 4],
    /// `--require-node-tokens`: refuse nodes without a token (seed-style registration).
    require_tokens: bool,
    /// `--forget-offline-after`: offline nodes silent this long are removed (None: kept).
    forget_after: Option<Duration>,
}

impl NodeSupervisor {
    pub fn new(
        db: Db,
        scheduler: Addr<SchedulerActor>,
        metrics: Addr<MetricsActor>,
        heartbeat_interval: Duration,
    ) -> Self {
        NodeSupervisor {
            nodes: HashMap::new(),
            db,
            scheduler,
            metrics,
            heartbeat_interval,
            counts: [0; 4],
            require_tokens: false,
            forget_after: None,
        }
    }

    pub fn requiring_node_tokens(mut self, require: bool) -> Self {
        self.require_tokens = require;
        self
    }

    pub fn forgetting_offline_after(mut self, after: Option<Duration>) -> Self {
        self.forget_after = after;
        self
    }

    /// Remove offline nodes silent past `--forget-offline-after`, so workers scaled
    /// away (a new node id per pod) do not pile up as dead nodes and firing alerts.
    fn forget_gone(&mut self, ctx: &mut Context<Self>) {
        let Some(after) = self.forget_after else { return };
        let now = now_micros();
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                crate::domain::node::forgettable(n.offline, n.running.len(), n.row.last_heartbeat, now, after)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            log::info!("forgetting node {id}: offline for longer than --forget-offline-after ({after:?})");
            ctx.address().do_send(RemoveNode(id));
        }
    }

    /// Refuse a node-scoped call that does not present the node's token.
    fn verify(&self, id: &str, presented: Option<&str>) -> AppResult<()> {
        let bound = self.nodes.get(id).and_then(|n| n.token.as_ref());
        check_node_token(bound, presented, self.require_tokens).map_err(|why| AppError::node_token(id, why))
    }

    /// Tell the scheduler what changed about a node's placement view, and recount.
    fn publish(&mut self, id: &str) {
        self.publish_quiet(id);
        self.count();
    }

    /// Tell the scheduler what changed about a node's placement view (nothing when
    /// nothing did), for a change whose status counts are already kept.
    fn publish_quiet(&mut self, id: &str) {
        if let Some(n) = self.nodes.get_mut(id) {
            let now = Published {
                caps: n.caps(),
                max_slots: n.row.max_concurrent_jobs.max(1) as u32,
                accepting: !n.offline && !n.row.draining,
                load: n.row.cpu_load_percent,
                token: n.token,
            };
            if !n.published.as_ref().is_some_and(|p| p.same_as(&now)) {
                self.scheduler.do_send(NodeChanged {
                    node_id: id.to_string(),
                    caps: now.caps.clone(),
                    max_slots: now.max_slots,
                    accepting: now.accepting,
                    load: now.load,
                    token: now.token,
                });
                n.published = Some(now);
            }
        }
    }

    /// Recount every node's status: O(nodes), for rare changes (registration, loss,
    /// drain, removal). Frequent ones go through [`Self::update_counted`].
    fn count(&mut self) {
        let mut c = [0usize; 4];
        for n in self.nodes.values() {
            c[n.status().slot()] += 1;
        }
        if c != self.counts {
            self.counts = c;
            self.metrics.do_send(MetricRecorded(MetricEvent::NodesCounted(c)));
        }
    }

    /// Change one node and move it between status counts in O(1).
    fn update_counted<R>(&mut self, id: &str, f: impl FnOnce(&mut NodeEntry) -> R) -> Option<R> {
        let n = self.nodes.get_mut(id)?;
        let before = n.status().slot();
        let r = f(n);
        let after = n.status().slot();
        if before != after {
            self.counts[before] = self.counts[before].saturating_sub(1);
            self.counts[after] += 1;
            self.metrics.do_send(MetricRecorded(MetricEvent::NodesCounted(self.counts)));
        }
        Some(r)
    }

    /// Store the node, and with it (same transaction) the event of what changed.
    fn persist_with_event(&mut self, id: &str, event: Option<&'static str>, ctx: &mut Context<Self>) {
        let Some(n) = self.nodes.get_mut(id) else { return };
        n.last_persist = Instant::now();
        n.row.status = n.status();
        let row = n.row.clone();
        let event =
            event.map(|kind| db_events::node_event(kind, id, serde_json::to_value(n.to_wire()).unwrap_or_default()));
        let db = self.db.clone();
        ctx.spawn(
            async move {
                db.write(move |c| {
                    db_nodes::upsert(c, &row)?;
                    db_events::append(c, event.as_slice())
                })
                .await
            }
            .into_actor(self)
            .map(|res, _, _| {
                if let Err(e) = res {
                    log::warn!("node state not persisted: {e}");
                }
            }),
        );
    }

    fn check_deadlines(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let lost: Vec<String> =
            self.nodes.iter().filter(|(_, n)| !n.offline && n.deadline <= now).map(|(id, _)| id.clone()).collect();
        for id in lost {
            log::warn!("node {id} missed {} heartbeats: offline, its leases are revoked", 3);
            if let Some(n) = self.nodes.get_mut(&id) {
                n.offline = true;
                n.waiters.clear();
            }
            self.metrics.do_send(MetricRecorded(MetricEvent::NodeLost));
            self.scheduler.do_send(NodeLost(id.clone()));
            self.publish(&id);
            self.persist_with_event(&id, Some("node.lost"), ctx);
        }
    }

    fn flush_commands(n: &mut NodeEntry) {
        if n.commands.is_empty() {
            return;
        }
        while let Some(w) = n.waiters.pop() {
            if w.is_closed() {
                continue;
            }
            let cmds = std::mem::take(&mut n.commands);
            if let Err(cmds) = w.send(cmds) {
                n.commands = cmds;
                continue;
            }
            return;
        }
    }
}

impl Actor for NodeSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let tick = (self.heartbeat_interval / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
        ctx.run_interval(tick, |act, ctx| act.check_deadlines(ctx));
        if let Some(after) = self.forget_after {
            let every = (after / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
            ctx.run_interval(every, |act, ctx| act.forget_gone(ctx));
        }
        self.metrics.do_send(MetricRecorded(MetricEvent::NodesCounted(self.counts)));
    }
}

impl Handler<AdoptNodes> for NodeSupervisor {
    type Result = ();
    fn handle(&mut self, m: AdoptNodes, _: &mut Context<Self>) {
        for row in m.0 {
            // Each node gets its own window from now: a restart revokes no lease early.
            let deadline = Instant::now() + loss_window(row.heartbeat_interval_ms);
            let hw: Hardware = serde_json::from_str(&row.hardware).unwrap_or_default();
            let offline = row.status == NodeState::Offline;
            let id = row.id.clone();
            self.nodes.insert(id.clone(), NodeEntry::new(row, hw, deadline, offline));
            self.publish(&id);
        }
    }
}

impl Handler<RecordHeartbeat> for NodeSupervisor {
    type Result = AppResult<HeartbeatResponse>;

    fn handle(&mut self, m: RecordHeartbeat, ctx: &mut Context<Self>) -> Self::Result {
        if self.nodes.contains_key(&m.node_id) {
            self.verify(&m.node_id, m.token.as_deref())?;
        }
        if let Some(g) = &m.heartbeat.gpus {
            crate::domain::limits::check_gpus(g).map_err(|e| AppError::bad_request("invalid_heartbeat", e.message))?;
        }
        let declared = match m.heartbeat.heartbeat_interval_seconds {
            Some(s) => Some(heartbeat_interval_ms(s).map_err(|e| AppError::bad_request("invalid_heartbeat", e))?),
            None => None,
        };
        let interval = self.heartbeat_interval.as_secs_f64();
        let hb = m.heartbeat;
        let (revived, draining, due) = self
            .update_counted(&m.node_id, |n| {
                let changed = declared.is_some_and(|d| n.row.heartbeat_interval_ms != Some(d));
                if changed {
                    n.row.heartbeat_interval_ms = declared;
                }
                let revived = n.heard_from();
                if let Some(l) = hb.cpu_load_percent.filter(|l| l.is_finite()) {
                    n.row.cpu_load_percent = l.clamp(0.0, 100_000.0);
                }
                if let Some(r) = hb.ram_free_bytes {
                    n.row.ram_free_bytes = r.min(i64::MAX as u64) as i64;
                }
                if let Some(d) = hb.disk_free_bytes {
                    n.hw.disk_free_bytes = Some(d);
                }
                if let Some(g) = hb.gpus {
                    n.hw.gpus = g;
                    n.row.hardware = serde_json::to_string(&n.hw).unwrap_or_default();
                }
                (revived, n.row.draining, revived || changed || n.last_persist.elapsed() > Duration::from_secs(30))
            })
            .ok_or_else(|| AppError::node_not_found(&m.node_id))?;
        if revived {
            log::info!("node {} is back", m.node_id);
        }
        self.publish_quiet(&m.node_id);
        if due {
            self.persist_with_event(&m.node_id, revived.then_some("node.revived"), ctx);
        }
        Ok(HeartbeatResponse {
            node_id: m.node_id,
            heartbeat_interval_seconds: interval,
            draining,
            stale_jobs: Vec::new(),
        })
    }
}

impl Handler<NodeSeen> for NodeSupervisor {
    type Result = ();

    /// A poll or a result from the node: as good as a heartbeat for liveness (the seed
    /// agent polls every 10 s but heartbeats only every 30 s).
    fn handle(&mut self, NodeSeen(id): NodeSeen, ctx: &mut Context<Self>) {
        let Some(revived) = self.update_counted(&id, |n| n.heard_from()) else { return };
        if revived {
            log::info!("node {id} is back");
            self.publish_quiet(&id);
            self.persist_with_event(&id, Some("node.revived"), ctx);
        }
    }
}

impl Handler<DrainNode> for NodeSupervisor {
    type Result = AppResult<Node>;
    fn handle(&mut self, m: DrainNode, ctx: &mut Context<Self>) -> Self::Result {
        let n = self.nodes.get_mut(&m.node_id).ok_or_else(|| AppError::node_not_found(&m.node_id))?;
        n.row.draining = m.drain;
        let node = n.to_wire();
        self.publish(&m.node_id);
        self.persist_with_event(&m.node_id, Some(if m.drain { "node.drained" } else { "node.undrained" }), ctx);
        Ok(node)
    }
}

impl Handler<RemoveNode> for NodeSupervisor {
    type Result = ResponseActFuture<Self, AppResult<()>>;
    fn handle(&mut self, RemoveNode(id): RemoveNode, _: &mut Context<Self>) -> Self::Result {
        let Some(n) = self.nodes.get(&id) else {
            return Box::pin(actix::fut::ready(Err(AppError::node_not_found(&id))));
        };
        if !n.running.is_empty() {
            return Box::pin(actix::fut::ready(Err(AppError::Conflict {
                code: "node_busy",
                message: format!("node {id} runs {} job(s); drain it and wait, or cancel them first", n.running.len()),
            })));
        }
        let db = self.db.clone();
        let key = id.clone();
        let event = db_events::node_event("node.removed", &id, serde_json::to_value(n.to_wire()).unwrap_or_default());
        Box::pin(
            async move {
                db.write(move |c| {
                    let n = db_nodes::delete(c, &key)?;
                    db_events::append(c, &[event])?;
                    Ok(n)
                })
                .await
            }
            .into_actor(self)
            .map(move |res, act, _| {
                res?;
                act.nodes.remove(&id);
                act.scheduler.do_send(NodeRemoved(id));
                act.count();
                Ok(())
            }),
        )
    }
}

impl Handler<NodeJobsChanged> for NodeSupervisor {
    type Result = ();
    fn handle(&mut self, m: NodeJobsChanged, _: &mut Context<Self>) {
        self.update_counted(&m.node_id, |n| {
            n.running = m.running;
        });
    }
}

impl Handler<PollControl> for NodeSupervisor {
    type Result = AppResult<oneshot::Receiver<Vec<ControlCommand>>>;
    fn handle(&mut self, PollControl { node_id: id, token }: PollControl, _: &mut Context<Self>) -> Self::Result {
        if self.nodes.contains_key(&id) {
            self.verify(&id, token.as_deref())?;
        }
        let n = self.nodes.get_mut(&id).ok_or_else(|| AppError::node_not_found(&id))?;
        let (tx, rx) = oneshot::channel();
        // One parked control poll per node: the one it replaces is answered empty, so
        // a node cannot pile up connections (and file descriptors) on the master.
        for old in n.waiters.drain(..) {
            let _ = old.send(Vec::new());
        }
        n.waiters.push(tx);
        Self::flush_commands(n);
        Ok(rx)
    }
}

impl Handler<DeliverControl> for NodeSupervisor {
    type Result = ();
    fn handle(&mut self, m: DeliverControl, _: &mut Context<Self>) {
        if let Some(n) = self.nodes.get_mut(&m.node_id) {
            // Only the newest command per job matters (pause then resume = resume).
            n.commands.retain(|c| c.job_id != m.command.job_id);
            n.commands.push(m.command);
            Self::flush_commands(n);
        }
    }
}

impl Handler<ReleaseWaiters> for NodeSupervisor {
    type Result = ();
    fn handle(&mut self, _: ReleaseWaiters, _: &mut Context<Self>) {
        for n in self.nodes.values_mut() {
            for w in n.waiters.drain(..) {
                let _ = w.send(Vec::new());
            }
        }
    }
}
