-- Every transition appends a job_events row; its index on `to_state` served only the
-- all-time totals read once at start-up (a scan of the log either way) and cost every
-- group commit a B-tree's pages.
DROP INDEX job_events_state;
