-- The outbox's retention sweep walks the events in id order (ids and times grow
-- together) instead of an index on `at` that every event paid for. (Partial indexes
-- on `jobs` were tried here and dropped: on SQLite they made every statement that
-- binds a value on `jobs` be prepared again at each execution.)
DROP INDEX events_at;
