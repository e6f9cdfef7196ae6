-- The node index serves one question, "which jobs did this node run" (`node_id = ?`),
-- which never asks for jobs no node holds. Those are left out: a submission no longer
-- adds an entry for its NULL node, and a placement no longer deletes it (on SQLite a
-- page or two of every group commit that places jobs, bench P2).
DROP INDEX jobs_node_seq;
CREATE INDEX jobs_node_seq ON jobs (node_id, seq) WHERE node_id IS NOT NULL;
