CREATE INDEX events_at ON events (at);
DROP INDEX jobs_node_seq;
CREATE INDEX jobs_node_seq ON jobs (node_id, seq);
DROP INDEX jobs_completed_at;
CREATE INDEX jobs_completed_at ON jobs (completed_at);
