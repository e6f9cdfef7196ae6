ALTER TABLE nodes DROP COLUMN heartbeat_interval_ms;
