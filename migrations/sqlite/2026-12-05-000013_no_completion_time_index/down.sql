CREATE INDEX jobs_completed_at ON jobs (completed_at);
