-- Job graphs: one row per job that belongs to a graph (a parent, a child, or a job
-- that waits for others). A parent runs nothing itself; its state is derived from
-- its children's. `after_ids` is a JSON array of the ids a job waits for.
CREATE TABLE job_graph (
    job_id TEXT PRIMARY KEY NOT NULL,
    parent_id TEXT,
    after_ids TEXT NOT NULL,
    is_parent BOOLEAN NOT NULL DEFAULT 0,
    stage TEXT NOT NULL,
    label TEXT NOT NULL,
    weight DOUBLE NOT NULL
);
CREATE INDEX job_graph_parent_id ON job_graph (parent_id);
-- Named, versioned job templates: every version is kept, the highest is current.
CREATE TABLE templates (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT 0,
    PRIMARY KEY (name, version)
);
