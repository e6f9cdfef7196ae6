-- retry_count at the job's last operator retry: automatic retries are counted from it,
-- so an operator's retry never uses up the job's automatic budget.
ALTER TABLE jobs ADD COLUMN retry_base INTEGER NOT NULL DEFAULT 0;
-- SHA-256 of the submission an Idempotency-Key first named: a replay with another body is refused.
ALTER TABLE jobs ADD COLUMN idempotency_fingerprint TEXT;
