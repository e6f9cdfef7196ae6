DROP INDEX jobs_node_seq;
CREATE INDEX jobs_node_seq ON jobs (node_id, seq);
