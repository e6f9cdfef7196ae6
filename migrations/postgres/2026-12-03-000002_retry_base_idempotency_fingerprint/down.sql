ALTER TABLE jobs DROP COLUMN idempotency_fingerprint;
ALTER TABLE jobs DROP COLUMN retry_base;
