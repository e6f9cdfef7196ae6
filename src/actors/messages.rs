//! Every message the master's actors exchange. Commands are imperative, events past
//! tense, queries `Get…`/`List…`/`Find…`.

use crate::db::{Conn, DbError};
use crate::domain::placement::{NodeCaps, Requirements};
use crate::domain::queue::{Priority, QueueName};
use crate::domain::state::JobState;
use crate::error::AppResult;
use crate::wire::{
    ControlAction, ControlCommand, ControlResponse, Heartbeat, HeartbeatResponse, Job, JobResult, Node,
    NodeRegistration, ProgressDetail, ResultResponse, RunningJob,
};
use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

// ----- database ---------------------------------------------------------------

/// Runs inside the group's write transaction. Returns whether it failed in a way that
/// spoils the transaction (anything but a logical refusal), and the closure that answers
/// the caller once COMMIT (or the rollback) is done.
pub type WriteFn = Box<dyn FnOnce(&mut Conn) -> (bool, AnswerFn) + Send>;

/// Answers a write's caller once its batch committed (or rolled back: the error).
pub type AnswerFn = Box<dyn FnOnce(Option<&DbError>) + Send>;

/// One write, sent to the writer's mailbox (`db_executor::WriterMailbox`).
pub enum WriteOp {
    /// Any write; a batch runs these in arrival order. The jobs it names (a claim
    /// riding on a worker's results: usually none) have transitions on their way that
    /// it should commit with: if it reaches an idle writer first, the writer waits
    /// briefly for them instead of committing it alone.
    Apply(WriteFn, Vec<String>),
    /// A new job without an idempotency key: the executor stores all of a batch's new
    /// jobs with one multi-row INSERT (and one for their events) before the other
    /// writes, instead of two statements per job — on PostgreSQL each is a round trip.
    InsertJob(Box<crate::db::jobs::JobRow>, tokio::sync::oneshot::Sender<crate::db::DbResult<crate::db::jobs::JobRow>>),
    /// A live job's transition (a JobActor's): the executor writes a run of these that
    /// arrived together with `db::transitions::transition_many` — one statement each for their
    /// events, parents, outputs and outbox rows — at their place in the batch.
    Transition(
        Box<crate::db::transitions::Transition>,
        tokio::sync::oneshot::Sender<crate::db::DbResult<crate::db::jobs::JobRow>>,
    ),
}

// ----- metrics ------------------------------------------------------------------

/// A job entered a state (from None = newly created).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct JobStateChanged {
    pub from: Option<JobState>,
    pub to: JobState,
    pub queue: QueueName,
    pub priority: Priority,
    pub engine: crate::domain::params::Engine,
}

#[derive(Debug, Clone)]
pub enum MetricEvent {
    ScheduleAttempt(&'static str),
    Retried,
    LeaseExpired,
    NodeLost,
    ProgressUpdated,
    ControlAcknowledged {
        action: &'static str,
        seconds: f64,
    },
    QueueWaited(f64),
    Executed(f64),
    HttpServed {
        method: String,
        route: String,
        status: u16,
        seconds: f64,
    },
    /// One group commit carrying this many writes.
    Committed {
        writes: usize,
    },
    /// Worker requests parked in `/jobs/next` right now.
    WorkersWaiting(usize),
    /// Node counts by status: available, busy, draining, offline.
    NodesCounted([usize; 4]),
    /// Outputs were stored (positive) or deleted (negative) in the artifact store.
    ArtifactBytesChanged(i64),
    /// The event stream's and the webhooks' figures.
    Events(super::event_metrics::EventMetric),
}

#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct MetricRecorded(pub MetricEvent);

/// Encode the registry in the Prometheus text format.
#[derive(Message)]
#[rtype(result = "String")]
pub struct RenderMetrics;

/// Retention removed terminal jobs: they leave the current-state gauges (never the
/// all-time counters).
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobsForgotten(pub Vec<(JobState, i64)>);

// ----- scheduler ----------------------------------------------------------------

/// Give the scheduler its node supervisor (they reference each other).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectNodeSupervisor(pub Addr<super::node_supervisor::NodeSupervisor>);

/// Start JobActors for jobs that were live when the master stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptLiveJobs(pub Vec<crate::db::jobs::JobRow>);

/// Could any registered node ever run a job with these requirements?
/// None when no node is registered at all.
#[derive(Message)]
#[rtype(result = "Option<bool>")]
pub struct CheckPlaceable(pub Requirements);

/// How many accepting nodes could run a job with these requirements (auto chunking
/// splits only when chunks could run side by side).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountAbleNodes(pub Requirements);

/// A runnable job as the index holds it.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    pub id: Uuid,
    pub seq: u64,
    pub queue: QueueName,
    pub priority: Priority,
    pub requirements: Requirements,
    pub enqueued_ms: u64,
}

/// Jobs became runnable (durably): index them and wake waiting workers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobsQueued(pub Vec<QueuedJob>);

/// A worker asks for up to `max` jobs; the reply arrives on the receiver when jobs are
/// placed (at once if any fit), and the caller drops it when its long-poll ends.
#[derive(Message)]
#[rtype(result = "AppResult<(u64, oneshot::Receiver<Vec<Job>>)>")]
pub struct ClaimJobs {
    pub node_id: String,
    /// `0`: withdraw the node's parked poll and take nothing (a worker begins to drain).
    pub max: u32,
    /// The node token the request presented.
    pub token: Option<String>,
}

/// A worker's results batch also asks for new work: up to `max` jobs for the slots its
/// `ending` jobs (those results' jobs) leave, claimed without waiting for the results
/// to commit — one request and, under load, one group commit per worker cycle.
#[derive(Message)]
#[rtype(result = "AppResult<oneshot::Receiver<Vec<Job>>>")]
pub struct ClaimFreedSlots {
    pub node_id: String,
    pub max: u32,
    pub ending: std::collections::HashSet<Uuid>,
    /// The node token the request presented.
    pub token: Option<String>,
}

/// A long-poll's time is up: withdraw it if it is still waiting (`true`: answer it
/// empty). `false` means jobs are being claimed for it — wait for the COMMIT instead
/// of answering empty and handing freshly claimed jobs back.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct EndPoll {
    pub node_id: String,
    pub poll: u64,
}

/// Run one dispatch round over what changed since the last (the scheduler sends it to
/// itself, once, however many triggers arrive meanwhile).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DispatchRound;

/// Tell the node supervisor the jobs of every node whose set changed since the last
/// report (the scheduler sends it to itself, once, however many jobs start or end
/// meanwhile: a results batch ends dozens on one node).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReportNodeJobs;

pub use crate::domain::state::UserAction;

/// A node was heard from other than by a heartbeat (a `/jobs/next` poll, a result):
/// it is alive. Event for the NodeSupervisor, from the scheduler.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NodeSeen(pub String);

/// An operator's pause/resume/cancel/retry, routed to wherever the job lives.
#[derive(Message)]
#[rtype(result = "AppResult<ControlResponse>")]
pub struct ControlJob {
    pub id: Uuid,
    pub action: UserAction,
}

/// Deliver `M` to a job's live actor and bring back its answer; `None` when the job has
/// no live actor (or it stopped before answering). One cross-thread round trip for an
/// HTTP handler instead of two (look the actor up, then ask it): the scheduler and the
/// job actors share a thread.
pub struct SendToLiveJob<M>(pub Uuid, pub M);

impl<M> Message for SendToLiveJob<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    type Result = Option<M::Result>;
}

/// [`SendToLiveJob`] on behalf of a worker node: the scheduler first checks that the
/// call may act as `node_id` (its node token, when the node has one; and an `attempt`,
/// which token-bound ffrtmp workers always send), then forwards `msg` to the job's
/// actor. `Ok(None)`: the job has no live actor.
pub struct FromNode<M> {
    pub job: Uuid,
    pub node_id: String,
    pub token: Option<String>,
    pub attempt_given: bool,
    pub msg: M,
}

impl<M> Message for FromNode<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    type Result = AppResult<Option<M::Result>>;
}

/// Many [`FromNode`] calls as one message (a batched worker request): each is checked
/// and forwarded exactly as alone; the answers come back in the order sent.
pub struct FromNodeBatch<M>(pub Vec<FromNode<M>>);

impl<M> Message for FromNodeBatch<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    type Result = Vec<AppResult<Option<M::Result>>>;
}

/// Why a runnable job is waiting, or None if it is not in the index.
#[derive(Message)]
#[rtype(result = "Option<String>")]
pub struct GetQueueReason(pub Uuid);

/// A job released its node slot, and possibly its actor stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobActorStopped {
    pub id: Uuid,
    pub node_id: Option<String>,
    /// false: only the slot is released (the actor lives on, e.g. to time a retry).
    pub stopping: bool,
    /// The attempt the actor was placed with, so a late event never unregisters a
    /// newer actor of the same job.
    pub attempt: i32,
    /// The final state the job stopped in (completed, failed, canceled), if any.
    pub settled: Option<JobState>,
}

/// The node registry's view of a node changed.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct NodeChanged {
    pub node_id: String,
    pub caps: NodeCaps,
    pub max_slots: u32,
    /// Takes new work: registered, online and not draining.
    pub accepting: bool,
    pub load: f64,
    /// Digest of the node's token: its node-scoped calls must present it.
    pub token: Option<crate::domain::credentials::Digest>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct NodeRemoved(pub String);

/// A node missed its heartbeats: every job leased to it loses its lease.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NodeLost(pub String);

/// A heartbeat listed the jobs its worker runs; returns those it must stop.
#[derive(Message)]
#[rtype(result = "Vec<RunningJob>")]
pub struct ReconcileNodeJobs {
    pub node_id: String,
    pub reported: Vec<RunningJob>,
}

/// Jobs each node holds, for the registry (node status, removal checks).
#[derive(Message)]
#[rtype(result = "()")]
pub struct NodeJobsChanged {
    pub node_id: String,
    pub running: Vec<Uuid>,
}

// ----- node supervisor ------------------------------------------------------------

/// Load nodes from the database at start-up; each gets a fresh deadline (grace period).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptNodes(pub Vec<crate::db::nodes::NodeRow>);

/// Register (or re-register) a node. `token`: the node token the request presented.
#[derive(Message)]
#[rtype(result = "AppResult<Registered>")]
pub struct RegisterNode {
    pub registration: NodeRegistration,
    pub token: Option<String>,
}

/// A registration's outcome.
#[derive(Debug)]
pub struct Registered {
    pub node: Node,
    pub created: bool,
    /// The node's new token, when the registration asked for one (shown once).
    pub token: Option<String>,
}

#[derive(Message)]
#[rtype(result = "AppResult<HeartbeatResponse>")]
pub struct RecordHeartbeat {
    pub node_id: String,
    pub heartbeat: Heartbeat,
    pub token: Option<String>,
}

#[derive(Message)]
#[rtype(result = "AppResult<Node>")]
pub struct DrainNode {
    pub node_id: String,
    pub drain: bool,
}

#[derive(Message)]
#[rtype(result = "AppResult<()>")]
pub struct RemoveNode(pub String);

#[derive(Message)]
#[rtype(result = "Vec<Node>")]
pub struct ListNodes;

#[derive(Message)]
#[rtype(result = "Option<Node>")]
pub struct GetNode(pub String);

/// What the status view shows of each node: a few fields, cheap to collect for
/// thousands of nodes on the actors' thread.
#[derive(Message)]
#[rtype(result = "Vec<crate::wire::NodeStatus>")]
pub struct ListNodeSummaries;

/// Nodes by status: available, busy, draining, offline (kept current, O(1)).
#[derive(Message)]
#[rtype(result = "[usize; 4]")]
pub struct GetNodeCounts;

/// Names of these nodes (unknown ids are left out): what a job listing shows, without
/// copying every node of a large farm per request.
#[derive(Message)]
#[rtype(result = "std::collections::HashMap<String, String>")]
pub struct GetNodeNames(pub Vec<String>);

/// The RTMP destinations (host, port) registered workers name as their `--rtmp-base`.
#[derive(Message)]
#[rtype(result = "Vec<(String, u16)>")]
pub struct ListRtmpDestinations;

/// A worker's control long-poll; answered when a command for one of its jobs exists.
#[derive(Message)]
#[rtype(result = "AppResult<oneshot::Receiver<Vec<ControlCommand>>>")]
pub struct PollControl {
    pub node_id: String,
    pub token: Option<String>,
}

/// Queue a control command for the node running the job.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliverControl {
    pub node_id: String,
    pub command: ControlCommand,
}

// ----- job actor --------------------------------------------------------------------

#[derive(Message)]
#[rtype(result = "AppResult<ControlAction>")]
pub struct ReportProgress {
    pub node_id: String,
    pub attempt: Option<i32>,
    pub detail: ProgressDetail,
    /// What the worker's ffprobe found in the input (once per attempt).
    pub input_info: Option<crate::domain::media::InputInfo>,
    /// Lines the encoder printed since the last report.
    pub log_lines: Vec<String>,
}

#[derive(Message)]
#[rtype(result = "AppResult<ResultResponse>")]
pub struct ReportResult(pub JobResult);

/// Apply an operator's pause/resume/cancel to a live job.
#[derive(Message)]
#[rtype(result = "AppResult<ControlResponse>")]
pub struct ApplyControl(pub UserAction);

#[derive(Message)]
#[rtype(result = "AppResult<()>")]
pub struct AcknowledgeControl {
    pub node_id: String,
    pub attempt: i32,
    pub action: ControlAction,
}

/// The lease is gone (node lost, or its worker does not run the job).
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaseLost {
    pub reason: String,
    pub node_lost: bool,
}

/// A heartbeat from the lease holder: `Some(attempt)` if it reported the job.
/// May `node_id`'s `attempt` still act for the job (store outputs)? Err: stale.
#[derive(Message)]
#[rtype(result = "crate::error::AppResult<()>")]
pub struct VerifyLease {
    pub node_id: String,
    pub attempt: i32,
}

/// Returns false when the reported attempt is not the current lease.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CheckLease {
    pub reported_attempt: Option<i32>,
}

/// What only the live actor knows: state, latest progress.
#[derive(Message)]
#[rtype(result = "LiveView")]
pub struct GetLiveView;

#[derive(Debug, Clone)]
pub struct LiveView {
    pub state: JobState,
    pub attempt: i32,
    pub node_id: Option<String>,
    pub progress: Option<ProgressDetail>,
    /// The running attempt's latest log lines (at most 200).
    pub log_tail: Vec<String>,
}

/// Give the job back to the queue without counting a retry (the worker never got it,
/// or it is shutting down).
#[derive(Message)]
#[rtype(result = "()")]
pub struct HandBackJob {
    pub reason: String,
}

/// Shutting down: answer every parked long-poll now (empty), so in-flight requests end.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseWaiters;

/// The lease holder gives the job back (e.g. its worker is shutting down).
#[derive(Message)]
#[rtype(result = "AppResult<()>")]
pub struct ReturnLease {
    pub node_id: String,
    pub attempt: i32,
}

/// What the scheduler holds now, for the status and health views.
#[derive(Message)]
#[rtype(result = "SchedulerSnapshot")]
pub struct GetSchedulerSnapshot;

#[derive(Debug, Clone, Default)]
pub struct SchedulerSnapshot {
    pub queued: Vec<(QueueName, Priority, usize)>,
    /// Requirement classes of queued jobs that no registered node could ever run.
    pub unplaceable: Vec<String>,
    pub oldest_wait_seconds: Option<f64>,
    pub live: Vec<Addr<crate::actors::job::JobActor>>,
}

/// Outcomes of the most recent finished jobs: (completed, failed).
#[derive(Message)]
#[rtype(result = "(u32, u32)")]
pub struct GetRecentOutcomes;

/// Jobs finished per five minutes over the last hour, oldest first: (completed, failed).
#[derive(Message)]
#[rtype(result = "Vec<(u64, u64)>")]
pub struct GetFinishedSeries;

// ----- job graphs ----------------------------------------------------------------

/// Give the scheduler the graph actor's address (at start).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectGraph(pub Addr<super::graph::GraphActor>);

/// Jobs reached a final state (scheduler → graph: jobs waiting on them, their parents).
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobsSettled(pub Vec<(Uuid, JobState)>);

/// Jobs were placed on nodes (scheduler → graph: their parents now run).
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobsStarted(pub Vec<Uuid>);

/// A finished job was retried by the scheduler: jobs that failed waiting on it wait
/// again (answered once they are stored so).
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobRequeued(pub Uuid);

/// A job of a graph as the graph actor follows it.
#[derive(Debug, Clone)]
pub struct TrackedJob {
    pub queued: QueuedJob,
    pub state: JobState,
    pub parent: Option<Uuid>,
    pub after: Vec<Uuid>,
}

/// Graph jobs were stored (durably): follow them, queue those with nothing to wait for.
/// `expand_on`: the parent's ladder is planned once this (probe) child completes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TrackGraph {
    pub parent: Option<Uuid>,
    pub jobs: Vec<TrackedJob>,
    pub expand_on: Option<Uuid>,
}

/// Graph rows of unfinished jobs found at start-up.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptGraphs(pub Vec<(crate::db::graph::GraphRow, JobState)>);

/// An operator's action on a parent (applied to its children) or a retry of a graph job.
#[derive(Message)]
#[rtype(result = "AppResult<ControlResponse>")]
pub struct ControlGraph {
    pub id: Uuid,
    pub action: UserAction,
}

// ----- events and webhooks ------------------------------------------------------------

/// Outbox rows just committed, in id order (database writer → event bus → webhooks).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct EventsCommitted(pub std::sync::Arc<Vec<crate::db::events::EventRow>>);

/// A COMMIT stored the outbox rows with ids in `after + 1 ..= upto` (database writer →
/// outbox reader, which tells the bus): the rows themselves when the writer knows them
/// as stored, else the reader reads them.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct OutboxCommitted {
    pub after: i64,
    pub upto: i64,
    pub rows: Option<std::sync::Arc<Vec<crate::db::events::EventRow>>>,
}

/// Publish an event that is not stored (coalesced progress, new log lines).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishTransient {
    pub kind: &'static str,
    pub job_id: String,
    pub node_id: Option<String>,
    pub data: serde_json::Value,
}

/// Open a live stream of the events `filter` admits.
#[derive(Message)]
#[rtype(result = "AppResult<super::events::Subscription>")]
pub struct Subscribe(pub crate::domain::events::EventFilter);

/// Store a webhook subscription and start delivering to it.
#[derive(Message)]
#[rtype(result = "AppResult<crate::wire::Webhook>")]
pub struct CreateWebhook(pub crate::db::webhooks::WebhookRow);

/// Forget a webhook and its deliveries.
#[derive(Message)]
#[rtype(result = "AppResult<()>")]
pub struct DeleteWebhook(pub String);

/// Send a delivery again (pending again, at once).
#[derive(Message)]
#[rtype(result = "AppResult<crate::wire::Delivery>")]
pub struct Redeliver {
    pub webhook_id: String,
    pub delivery_id: i64,
}

/// A job's own webhook was stored with it: start delivering to it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WebhookStored(pub crate::db::webhooks::WebhookRow);

/// Where the event bus hands committed events on (the webhook dispatcher).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectWebhooks(pub Recipient<EventsCommitted>);

/// Who leads the farm, as the leader lease says (highly available masters).
#[derive(Message)]
#[rtype(result = "Leadership")]
pub struct GetLeadership;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// This master leads.
    pub leading: bool,
    /// The current epoch and its leader's advertised URL (None before anyone led).
    pub epoch: Option<i64>,
    pub leader_url: Option<String>,
}
