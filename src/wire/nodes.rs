//! Bodies of the node routes: a worker's registration and heartbeat, and the node as
//! the API lists it.

use super::NodeState;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// A GPU as a worker reports it (NVML figures; absent ones omitted).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    #[serde(default)]
    pub memory_total_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_celsius: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_watts: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_joules_total: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_sessions: Option<u32>,
}

/// `POST /nodes/register`: the seed's fields plus what our worker probes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct NodeRegistration {
    /// Stable id kept by the worker in its work dir. Absent (seed agents): the node
    /// is keyed by `address`.
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub address: String,
    #[serde(default, rename = "type")]
    pub node_type: Option<String>,
    #[serde(default)]
    pub cpu_threads: u32,
    #[serde(default)]
    pub cpu_model: String,
    #[serde(default)]
    pub cpu_load_percent: Option<f64>,
    #[serde(default)]
    pub has_gpu: bool,
    #[serde(default)]
    pub gpu_type: Option<String>,
    #[serde(default)]
    pub gpu_capabilities: Vec<String>,
    #[serde(default)]
    pub ram_total_bytes: u64,
    #[serde(default)]
    pub ram_free_bytes: Option<u64>,
    #[serde(default)]
    pub labels: Map<String, Value>,
    #[serde(default)]
    pub max_concurrent_jobs: Option<u32>,
    /// Encoders whose probe encode succeeded. Absent: not probed (seed agent).
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
    /// GStreamer can stream to RTMP here (its `rtmpsink` and `flvmux` are installed).
    #[serde(default)]
    pub gstreamer_rtmp: bool,
    /// The worker's `--rtmp-base`: without `--rtmp-allow`, the master allows RTMP jobs
    /// to stream only to the hosts its workers name here.
    #[serde(default)]
    pub rtmp_base: Option<String>,
    /// Ask for a node token (ffrtmp workers do): the reply carries it once, and every
    /// later node-scoped call of this node must present it in `X-Node-Token`.
    #[serde(default)]
    pub request_node_token: bool,
    /// Seconds between this node's heartbeats; it is declared lost after three of them
    /// pass unheard. Absent (seed agents): 30 s.
    #[serde(default)]
    pub heartbeat_interval_seconds: Option<f64>,
}

/// `POST /nodes/register` reply: the node, plus its token when one was asked for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisteredNode {
    #[serde(flatten)]
    pub node: Node,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_token: Option<String>,
}

/// A node as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub address: String,
    #[serde(rename = "type")]
    pub node_type: String,
    pub cpu_threads: u32,
    pub cpu_model: String,
    pub cpu_load_percent: f64,
    pub has_gpu: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
    #[serde(default)]
    pub gpu_capabilities: Vec<String>,
    pub ram_total_bytes: u64,
    pub ram_free_bytes: u64,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub labels: Map<String, Value>,
    /// available, busy, draining or offline.
    #[schema(value_type = String)]
    pub status: NodeState,
    pub last_heartbeat: String,
    pub registered_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_job_id: Option<String>,
    #[serde(default)]
    pub running_jobs: Vec<String>,
    pub max_concurrent_jobs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoders: Option<Vec<String>>,
    /// `probed`: the worker test-encoded with each of `encoders` (ffrtmp workers; the
    /// strict placement rule). `declared`: the node only described itself (seed
    /// agents): GPU jobs go to it when it has a GPU and its `gpu_capabilities`, if any,
    /// name the encoder.
    #[serde(default)]
    pub encoders_source: String,
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffmpeg_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gstreamer_version: Option<String>,
    /// GStreamer can stream to RTMP on this node (`rtmpsink` installed).
    #[serde(default)]
    pub gstreamer_rtmp: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    pub count: usize,
    pub nodes: Vec<Node>,
}

/// A job a worker says it is running, in a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct RunningJob {
    pub job_id: String,
    pub attempt: i32,
}

/// `POST /nodes/{id}/heartbeat`. The body is optional (seed agents send none).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Heartbeat {
    #[serde(default)]
    pub cpu_load_percent: Option<f64>,
    #[serde(default)]
    pub ram_free_bytes: Option<u64>,
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
    #[serde(default)]
    pub gpus: Option<Vec<GpuInfo>>,
    /// The jobs the worker runs now; absent = not reported (no lease check).
    #[serde(default)]
    pub running_jobs: Option<Vec<RunningJob>>,
    /// A changed heartbeat interval (seconds); absent = as declared before.
    #[serde(default)]
    pub heartbeat_interval_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    pub node_id: String,
    /// The interval the master asks ffrtmp workers to heartbeat at (seconds). The node
    /// is lost after three of the intervals it declared itself (30 s if none).
    pub heartbeat_interval_seconds: f64,
    pub draining: bool,
    /// Reported jobs whose lease this node no longer holds: kill them, discard output.
    #[serde(default)]
    pub stale_jobs: Vec<RunningJob>,
}
