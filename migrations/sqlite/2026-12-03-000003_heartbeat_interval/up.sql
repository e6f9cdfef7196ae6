-- The heartbeat interval a node declared (ms); NULL: it declared none (a seed agent,
-- which heartbeats every 30 s). A node is lost after 3 of its own intervals.
ALTER TABLE nodes ADD COLUMN heartbeat_interval_ms INTEGER;
