-- Every completion added an entry to an index on `completed_at` (and every submission
-- one for its NULL), for two readers that no longer need it: the retention sweep walks
-- the jobs in `seq` order up to the first one submitted after its cutoff, and the
-- console's last-hour chart is counted in memory as jobs finish (seeded at start from
-- the job log).
DROP INDEX jobs_completed_at;
