-- PostgreSQL's listing indexes leave completed jobs out (see its migration). SQLite
-- needs no such change: an UPDATE there rewrites only the indexes whose columns
-- changed, and its planner would not use a partial index for `status = ?`.
SELECT 1;
