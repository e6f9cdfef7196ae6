CREATE INDEX job_events_state ON job_events (to_state);
