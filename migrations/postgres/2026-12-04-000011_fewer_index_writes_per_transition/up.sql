-- Every transition appends a job_events row; its index on `to_state` served only the
-- all-time totals read once at start-up (a scan of the log either way).
DROP INDEX job_events_state;
-- A transition rewrites the job's row, and PostgreSQL adds an entry to every index of
-- the table for the new row version. Most jobs have no idempotency key, and a job is
-- not completed until its last transition: partial indexes skip those entries. The
-- uniqueness of keys and the retention sweep (`completed_at < $1`) are unchanged.
ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_key;
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
DROP INDEX jobs_completed_at;
CREATE INDEX jobs_completed_at ON jobs (completed_at) WHERE completed_at IS NOT NULL;
