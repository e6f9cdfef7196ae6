-- Fewer index entries written per job transition, none of them ever read:
-- a job has no completed_at until it ends, and no node until it is first placed, so
-- those entries are left out; placing a job no longer writes the completed_at index,
-- nor removes a NULL node entry. Every query on either column names a value, so the
-- partial indexes serve them as before.
DROP INDEX jobs_completed_at;
CREATE INDEX jobs_completed_at ON jobs (completed_at) WHERE completed_at IS NOT NULL;
DROP INDEX jobs_node_seq;
CREATE INDEX jobs_node_seq ON jobs (node_id, seq) WHERE node_id IS NOT NULL;
-- The outbox's retention sweep walks the events in id order (ids and times grow
-- together) instead of an index on `at` that every event paid for.
DROP INDEX events_at;
