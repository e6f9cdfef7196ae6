-- Every stored output of a job: one row per (job, name), written only once the file
-- is complete and its checksum verified, so nothing half-written is ever listed.
CREATE TABLE job_outputs (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    location TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (job_id, name)
);
-- What ffprobe found in a job's input (JSON), written once per job.
CREATE TABLE job_inputs (
    job_id TEXT PRIMARY KEY NOT NULL,
    info TEXT NOT NULL,
    probed_at BIGINT NOT NULL
);
