-- A job's last transition (into `completed`, the common end) rewrites its row, and
-- PostgreSQL adds an entry to every index of the table for the new row version, even
-- for columns that did not change. The listing indexes by status, queue and priority
-- leave completed jobs out: they serve the operator's views of what is waiting,
-- running and failed, and the scheduler's counts of runnable jobs; a listing of
-- completed jobs (most of the table) reads the primary key newest first, which finds
-- them at once. The node index keeps every job, so a node's history stays one lookup.
DROP INDEX jobs_status_seq;
CREATE INDEX jobs_status_seq ON jobs (status, seq) WHERE status <> 'completed';
DROP INDEX jobs_queue_seq;
CREATE INDEX jobs_queue_seq ON jobs (queue, seq) WHERE status <> 'completed';
DROP INDEX jobs_priority_seq;
CREATE INDEX jobs_priority_seq ON jobs (priority, seq) WHERE status <> 'completed';
