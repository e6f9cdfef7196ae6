-- The leader lease of highly available masters (PostgreSQL): one row. The master that
-- holds the advisory lock increments `epoch` when it takes over and writes the URL
-- followers redirect to; every write transaction of the leader checks its epoch is
-- still the current one (fencing). SQLite stays single-master and never writes it.
CREATE TABLE leader_lease (
    id INTEGER PRIMARY KEY NOT NULL,
    epoch BIGINT NOT NULL,
    leader_url TEXT NOT NULL,
    acquired_at BIGINT NOT NULL
);
INSERT INTO leader_lease (id, epoch, leader_url, acquired_at) VALUES (1, 0, '', 0);
