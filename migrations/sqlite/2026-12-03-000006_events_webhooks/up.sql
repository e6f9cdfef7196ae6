-- The outbox: every event that matters to an integration (job state changes, stored
-- outputs, node changes), written in the same transaction as the change it reports.
-- Ids only grow; SSE resumes (Last-Event-ID) and webhook deliveries read from here.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    kind TEXT NOT NULL,
    job_id TEXT,
    parent_id TEXT,
    node_id TEXT,
    at BIGINT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX events_job ON events (job_id, id);
CREATE INDEX events_at ON events (at);
-- Webhook subscriptions (an operator's, or one job's own `notify`). `start_after`:
-- the newest event id when it was created (it receives only later events).
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY NOT NULL,
    url TEXT NOT NULL,
    kinds TEXT NOT NULL,
    job_ids TEXT NOT NULL,
    parent_ids TEXT NOT NULL,
    secret TEXT NOT NULL,
    description TEXT NOT NULL,
    owner_job TEXT,
    start_after BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    disabled_at BIGINT,
    disabled_reason TEXT,
    dropped BIGINT NOT NULL DEFAULT 0
);
-- One row per (webhook, event) to deliver; `ordering_key` (the job, or the node) keeps
-- one job's events in order. state: pending, delivered, failed (retry window spent),
-- dropped (backlog full, or the webhook was unsubscribed).
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    webhook_id TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    ordering_key TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE UNIQUE INDEX webhook_deliveries_event ON webhook_deliveries (webhook_id, event_id);
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, id);
-- How far the dispatcher has fanned the outbox out into deliveries (one row).
CREATE TABLE webhook_cursor (
    id INTEGER PRIMARY KEY NOT NULL,
    last_event_id BIGINT NOT NULL
);
INSERT INTO webhook_cursor (id, last_event_id) VALUES (1, 0);
