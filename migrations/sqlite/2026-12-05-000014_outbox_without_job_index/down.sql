CREATE INDEX events_job ON events (job_id, id);
