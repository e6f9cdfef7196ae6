//! JSON bodies of the REST API, shared by the master, the worker and the CLI.
//!
//! Field names are the seed system's where it had them, so its clients keep working;
//! absent optional values are omitted rather than sent as null.

pub mod batches;
pub mod events;
pub mod nodes;

pub use batches::*;
pub use events::{Delivery, DeliveryList, Event, NotifyRequest, Webhook, WebhookList, WebhookRequest};
pub use nodes::*;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

pub use crate::domain::node::NodeState;
pub use crate::domain::params::Engine;
pub use crate::domain::queue::{Priority, QueueName};
pub use crate::domain::state::{FailureReason, JobState};

/// Most jobs one `GET /jobs/next` may ask for; a worker with more free slots asks for
/// this many and asks again.
pub const MAX_JOBS_PER_POLL: u32 = 64;

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Job {
    pub id: String,
    pub sequence_number: i64,
    pub scenario: String,
    pub confidence: String,
    /// auto, ffmpeg or gstreamer.
    #[schema(value_type = String)]
    pub engine: Engine,
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    /// pending, queued, assigned, processing, paused, completed, failed, canceled,
    /// retrying, rejected or timed_out.
    #[schema(value_type = String)]
    pub status: JobState,
    /// live, default or batch.
    #[schema(value_type = String)]
    pub queue: QueueName,
    /// high, medium or low.
    #[schema(value_type = String)]
    pub priority: Priority,
    /// Whole percent 0–100 (seed clients read an integer).
    pub progress: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<ProgressDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Lease generation: 0 before the first placement, +1 at each placement.
    pub attempt: i32,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    pub retry_count: i32,
    pub max_retries: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// capability_mismatch, runtime_error, timeout, user_error, network_error,
    /// input_error, platform_error or resource_error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub failure_reason: Option<FailureReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qoe_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efficiency_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_joules: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmaf_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<Map<String, Value>>,
    /// Why a runnable job is still waiting (e.g. no node has the encoder it needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_transitions: Option<Vec<StateTransition>>,
    /// Older transitions left out of `state_transitions` (only the newest are shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_transitions_omitted: Option<i64>,
    /// Each placement of the job: its node, when it started and ended, and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<Attempt>>,
    /// In the reply to a submission only: `parameters` keys no encode reads (kept on
    /// the job; `--strict-parameters` refuses them instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored_parameters: Option<Vec<String>>,
    /// What ffprobe found in the input (file and URL inputs), once a worker probed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_info: Option<crate::domain::media::InputInfo>,
    /// Stored outputs (`GET /jobs/{id}` and `GET /jobs/{id}/outputs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<JobOutput>>,
    /// The graph this job belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// The jobs this one waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    /// A parent's children (`GET /jobs/{id}`), in submission order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<ChildSummary>>,
}

/// One child of a graph as its parent shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ChildSummary {
    pub id: String,
    /// What the child does: encode, probe, rendition, audio, package, thumbnails.
    pub stage: String,
    /// A short label (a rung's name, the graph's `ref`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[schema(value_type = String)]
    pub status: JobState,
    pub progress: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub failure_reason: Option<FailureReason>,
}

/// One stored output of a job: complete and checksummed, downloadable from
/// `GET /jobs/{id}/outputs/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct JobOutput {
    pub name: String,
    pub bytes: u64,
    /// Hex SHA-256 of the bytes (also the download's ETag).
    pub sha256: String,
    pub content_type: String,
    /// `artifact://<job-id>/<name>`: usable as another job's `input`.
    pub location: String,
    /// The attempt that produced it.
    pub attempt: i32,
    pub created_at: String,
}

/// `POST /uploads`: an input file stored on the master.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Upload {
    pub id: String,
    pub name: String,
    pub bytes: u64,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
    /// `upload://<id>/<name>`: what a job names as its `input`.
    pub input: String,
    pub created_at: String,
}

/// `GET /jobs/{id}/outputs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobOutputs {
    pub job_id: String,
    pub outputs: Vec<JobOutput>,
}

/// One placement of a job on a node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Attempt {
    pub attempt: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    pub started_at: String,
    /// Absent while the attempt runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// The state the attempt ended in (completed, failed, retrying, queued, canceled,
    /// timed_out, paused); absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Why it ended, as the transition recorded it (errors included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct StateTransition {
    pub from: String,
    pub to: String,
    pub timestamp: String,
    pub reason: String,
}

/// Live encode figures from the worker's ffmpeg `-progress` stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ProgressDetail {
    pub percent: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_time_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// downloading (the input), encoding, or uploading (the outputs); absent: encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Bytes moved so far in a downloading or uploading phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_bytes: Option<u64>,
    /// Bytes to move in all, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_total: Option<u64>,
}

/// `POST /jobs`. Unknown fields are ignored, as in the seed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SubmitJobRequest {
    #[serde(default)]
    pub scenario: Option<String>,
    #[serde(default)]
    pub confidence: Option<String>,
    /// auto (default), ffmpeg or gstreamer.
    #[serde(default)]
    pub engine: Option<String>,
    /// Accepted for seed compatibility and not stored.
    #[serde(default)]
    pub classification: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// live, default (default) or batch.
    #[serde(default)]
    pub queue: Option<String>,
    /// high, medium (default) or low.
    #[serde(default)]
    pub priority: Option<String>,
    /// Automatic retries after the first attempt (default: the master's --max-retries).
    #[serde(default)]
    pub max_retries: Option<i32>,
    /// Ids of jobs this one waits for: it runs once every one of them has completed,
    /// and fails (`dependency_failed`) if one fails or is canceled.
    #[serde(default)]
    pub after: Option<Vec<String>>,
    /// A template (`GET /templates`) whose parameters this job starts from; the job's
    /// own `parameters` override them, and the resolved parameters are stored.
    #[serde(default)]
    pub template: Option<String>,
    /// A graph: this job becomes the parent of these jobs (it runs nothing itself; its
    /// state and progress are derived from theirs).
    #[serde(default)]
    pub children: Option<Vec<ChildRequest>>,
    /// A webhook for this job's own events (signed like any other webhook).
    #[serde(default)]
    pub notify: Option<NotifyRequest>,
}

/// One child of a submitted graph.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChildRequest {
    /// Its name inside the graph (letters, digits, '_', '-'; default `c<index>`), for
    /// other children's `after`.
    #[serde(default, rename = "ref")]
    pub reference: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default)]
    pub template: Option<String>,
    /// Refs of other children, or ids of existing jobs, this one waits for.
    #[serde(default)]
    pub after: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub count: usize,
    pub jobs: Vec<Job>,
    /// Pass as `cursor` to get the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NextJobResponse {
    /// The first of `jobs` (what a seed agent, which takes one at a time, reads).
    pub job: Option<Job>,
    /// Every job placed on the node by this request (up to `max`).
    #[serde(default)]
    pub jobs: Vec<Job>,
}

/// Reply to pause/resume/cancel/retry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ControlResponse {
    pub job_id: String,
    /// paused, resumed, canceled or queued (the seed's words).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_count: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobLogs {
    pub job_id: String,
    pub logs: String,
}

/// `POST /jobs/{id}/progress` (worker).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ProgressReport {
    pub node_id: String,
    #[serde(default)]
    pub attempt: Option<i32>,
    #[serde(flatten)]
    pub detail: ProgressDetail,
    /// Sent once, with the first report after the worker probed the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_info: Option<crate::domain::media::InputInfo>,
    /// Lines the encoder printed since the last report (live `job.log` events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_lines: Vec<String>,
}

/// What the master wants the worker to do with a job's process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    Run,
    Pause,
    Resume,
    Cancel,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProgressResponse {
    /// run (keep going), pause, resume or cancel.
    pub control: ControlAction,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ControlCommand {
    pub job_id: String,
    pub attempt: i32,
    pub action: ControlAction,
}

/// `GET /nodes/{id}/control` long-poll reply.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ControlCommands {
    pub commands: Vec<ControlCommand>,
}

/// `POST /jobs/{id}/control/ack`: the worker applied a control action.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ControlAck {
    pub node_id: String,
    pub attempt: i32,
    pub action: ControlAction,
}

/// `POST /results`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct JobResult {
    pub job_id: String,
    pub node_id: String,
    #[serde(default)]
    pub attempt: Option<i32>,
    /// completed, failed or canceled.
    pub status: String,
    #[serde(default)]
    pub progress: Option<f64>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<Map<String, Value>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub analyzer_output: Option<Map<String, Value>>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// false: a permanent error (bad input, unknown encoder); never retried.
    #[serde(default)]
    pub retryable: Option<bool>,
    #[serde(default)]
    pub logs: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default)]
    pub qoe_score: Option<f64>,
    #[serde(default)]
    pub efficiency_score: Option<f64>,
    #[serde(default)]
    pub energy_joules: Option<f64>,
    #[serde(default)]
    pub vmaf_score: Option<f64>,
    /// Names of the outputs this attempt stored (`PUT /jobs/{id}/outputs/{name}`): a
    /// completed result is accepted only once every one of them is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultResponse {
    /// success, or retrying when a failed attempt was queued again.
    pub status: String,
    #[schema(value_type = String)]
    pub job_status: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
}

/// Every error body: a stable snake_case code and a sentence.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// RFC 3339 with microseconds and `Z`, from stored microseconds.
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `POST /jobs/{id}/release`: the worker gives its lease back without a result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseRelease {
    pub node_id: String,
    pub attempt: i32,
}

/// `GET /api/v1/status`: queues, running jobs and nodes, as one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusReport {
    pub queues: QueueStatus,
    pub running: Vec<RunningStatus>,
    pub nodes: Vec<NodeStatus>,
    pub generated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueStatus {
    pub total: usize,
    /// Queued jobs per queue (live, default, batch).
    #[schema(value_type = Object)]
    pub by_queue: std::collections::BTreeMap<String, usize>,
    /// Queued jobs per priority (high, medium, low).
    #[schema(value_type = Object)]
    pub by_priority: std::collections::BTreeMap<String, usize>,
    pub oldest_wait_seconds: Option<f64>,
    /// Requirement classes of queued jobs no registered node could run.
    pub unplaceable: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunningStatus {
    #[schema(value_type = String)]
    pub job_status: JobState,
    pub node_id: Option<String>,
    pub attempt: i32,
    pub progress: Option<ProgressDetail>,
}

/// A node as the status view shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeStatus {
    pub node_id: String,
    pub name: String,
    #[schema(value_type = String)]
    pub node_status: NodeState,
    pub running_jobs: Vec<String>,
    pub max_concurrent_jobs: u32,
    pub cpu_load_percent: f64,
    pub last_heartbeat: String,
}

/// A template as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub name: String,
    /// 0 for a built-in.
    pub version: i32,
    pub builtin: bool,
    pub description: String,
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
}

/// The body of `POST /templates` and `PUT /templates/{name}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct TemplateRequest {
    /// Required by POST; PUT takes it from the path.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
}
