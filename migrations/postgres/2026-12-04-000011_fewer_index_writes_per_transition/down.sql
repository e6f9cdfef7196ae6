DROP INDEX jobs_completed_at;
CREATE INDEX jobs_completed_at ON jobs (completed_at);
DROP INDEX jobs_idempotency_key;
ALTER TABLE jobs ADD CONSTRAINT jobs_idempotency_key_key UNIQUE (idempotency_key);
CREATE INDEX job_events_state ON job_events (to_state);
