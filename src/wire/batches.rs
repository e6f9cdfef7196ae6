//! Batched worker calls: one request carries a node's progress for all of its running
//! jobs (`POST /nodes/{id}/progress`), or many results (`POST /results/batch`); each
//! item is fenced and answered on its own, in the order sent.

use super::{ControlAction, JobResult, ProgressDetail, ResultResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most items one batch may carry (a worker with more running jobs sends several).
pub const MAX_BATCH_ITEMS: usize = 1000;

/// `POST /nodes/{id}/progress` (worker): the node's progress on each of its jobs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct NodeProgress {
    pub reports: Vec<JobProgress>,
}

/// One job's progress in a [`NodeProgress`]; the node is the path's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct JobProgress {
    pub job_id: String,
    /// The attempt whose lease the report is for (fencing, as on the single route).
    #[serde(default)]
    pub attempt: Option<i32>,
    #[serde(flatten)]
    pub detail: ProgressDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_info: Option<crate::domain::media::InputInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_lines: Vec<String>,
}

/// `POST /results/batch` (worker): many results, of one node or several.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ResultBatch {
    pub results: Vec<JobResult>,
    /// New work for the slots these results free, in the same request (a master
    /// without this field ignores it, and the worker's claim poll fills them instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<ClaimNext>,
}

/// Up to `max` (≤ 64) new jobs for `node_id`, placed as a `GET /jobs/next` would
/// place them; they come back in [`BatchAnswers::jobs`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimNext {
    pub node_id: String,
    pub max: u32,
}

/// What became of one item of a batch.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ItemOutcome {
    /// Applied (or a repeat of what was already applied).
    Accepted,
    /// The lease it was sent for is gone (another attempt, another node, or the job
    /// moved on): stop the attempt and discard its output.
    Stale,
    /// No such job.
    Unknown,
    /// Refused as sent (bad values, missing outputs, an illegal transition…): `error`
    /// and `message` say why, as the single route's error body would.
    Refused,
    /// Not applied now (the database is unavailable, a limit was hit): send it again.
    Unavailable,
}

/// The answer to one item, in the order the items were sent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ItemAnswer {
    pub job_id: String,
    pub outcome: ItemOutcome,
    /// The HTTP status the single route would have answered.
    pub status: u16,
    /// Progress: what to do with the job's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlAction>,
    /// Results: what the single route answers on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The answers to a batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct BatchAnswers {
    pub results: Vec<ItemAnswer>,
    /// Jobs placed on the node for a results batch's `claim`: the worker runs them as
    /// if its claim poll had returned them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<super::Job>,
}
