-- Jobs: one row per job; `seq` is the human-friendly sequence number.
CREATE TABLE jobs (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    scenario TEXT NOT NULL DEFAULT '',
    confidence TEXT NOT NULL DEFAULT '',
    engine TEXT NOT NULL DEFAULT 'auto',
    queue TEXT NOT NULL DEFAULT 'default',
    priority TEXT NOT NULL DEFAULT 'medium',
    parameters TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    node_id TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    retry_count INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 3,
    created_at BIGINT NOT NULL,
    queued_at BIGINT NOT NULL,
    started_at BIGINT,
    last_activity_at BIGINT,
    completed_at BIGINT,
    retry_at BIGINT,
    error TEXT,
    failure_reason TEXT,
    logs TEXT,
    metrics TEXT,
    qoe_score DOUBLE PRECISION,
    efficiency_score DOUBLE PRECISION,
    energy_joules DOUBLE PRECISION,
    vmaf_score DOUBLE PRECISION,
    idempotency_key TEXT UNIQUE,
    updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_status_seq ON jobs (status, seq);
CREATE INDEX jobs_node_seq ON jobs (node_id, seq);
CREATE INDEX jobs_queue_seq ON jobs (queue, seq);
CREATE INDEX jobs_priority_seq ON jobs (priority, seq);
CREATE INDEX jobs_completed_at ON jobs (completed_at);

-- Every state transition with its time and reason.
CREATE TABLE job_events (
    id BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    attempt INTEGER NOT NULL DEFAULT 0,
    node_id TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, id);
CREATE INDEX job_events_state ON job_events (to_state);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    node_type TEXT NOT NULL DEFAULT 'server',
    cpu_threads INTEGER NOT NULL DEFAULT 0,
    cpu_model TEXT NOT NULL DEFAULT '',
    cpu_load_percent DOUBLE PRECISION NOT NULL DEFAULT 0,
    has_gpu BOOLEAN NOT NULL DEFAULT FALSE,
    gpu_type TEXT NOT NULL DEFAULT '',
    gpu_capabilities TEXT NOT NULL DEFAULT '[]',
    ram_total_bytes BIGINT NOT NULL DEFAULT 0,
    ram_free_bytes BIGINT NOT NULL DEFAULT 0,
    labels TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'available',
    draining BOOLEAN NOT NULL DEFAULT FALSE,
    max_concurrent_jobs INTEGER NOT NULL DEFAULT 1,
    hardware TEXT NOT NULL DEFAULT '{}',
    last_heartbeat BIGINT NOT NULL,
    registered_at BIGINT NOT NULL
);

-- All-time transition counts of jobs removed by retention, so that
-- ffrtmp_jobs_total{state} stays monotonic across cleanup and restarts.
CREATE TABLE state_totals (
    state TEXT PRIMARY KEY NOT NULL,
    total BIGINT NOT NULL DEFAULT 0
);
