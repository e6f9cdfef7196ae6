//! The JSON of events, webhooks and their deliveries.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// One event, as the stream sends it and a webhook receives it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Event {
    /// `N` (the N-th stored event) or `N-k` (a transient one after it); ids only grow.
    pub id: String,
    /// `job.completed`, `job.progress`, `node.lost`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// What happened, complete enough to act on without another call.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// A job's own webhook (`notify` in a submission).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Default)]
pub struct NotifyRequest {
    pub url: String,
    /// Event types (`job.completed`, `job.*`); default: the job's final states.
    #[serde(default)]
    pub events: Vec<String>,
    /// Signing secret; default: the master's --webhook-secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `POST /webhooks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
pub struct WebhookRequest {
    pub url: String,
    /// Event types or families (`job.completed`, `job.*`, `*`); empty = every stored event.
    #[serde(default)]
    pub events: Vec<String>,
    /// Only events of these jobs.
    #[serde(default)]
    pub job_ids: Vec<String>,
    /// Only events of the children of these graph jobs.
    #[serde(default)]
    pub parent_ids: Vec<String>,
    /// The HMAC-SHA256 key of the `ffrtmp-signature` header (16–256 characters).
    pub secret: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// A webhook subscription (its secret is never shown again).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub job_ids: Vec<String>,
    pub parent_ids: Vec<String>,
    pub description: String,
    /// Set for a job's own `notify` webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_job: Option<String>,
    pub created_at: String,
    /// Set when the receiver answered 410 Gone (or the webhook was deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
    /// Deliveries given up because the backlog was full.
    pub dropped: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub event_id: i64,
    #[serde(rename = "event_type")]
    pub kind: String,
    /// pending, delivered, failed (retry window spent) or dropped.
    pub state: String,
    pub attempts: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub webhook_id: String,
    pub deliveries: Vec<Delivery>,
}
