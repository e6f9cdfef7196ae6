-- Every event of a job added an entry to an index on the outbox's `job_id` (a
-- B-tree's pages in every group commit, beside the job log's own index on it), for
-- two readers that no longer need it: an event stream or webhook filtered by job
-- reads the id range it is catching up on (bounded per read, as the node and parent
-- filters always did), and a graph's submission names its parent on the events it
-- appended in the same transaction by their ids.
DROP INDEX events_job;
