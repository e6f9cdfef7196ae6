DROP INDEX jobs_status_seq;
CREATE INDEX jobs_status_seq ON jobs (status, seq);
DROP INDEX jobs_queue_seq;
CREATE INDEX jobs_queue_seq ON jobs (queue, seq);
DROP INDEX jobs_priority_seq;
CREATE INDEX jobs_priority_seq ON jobs (priority, seq);
