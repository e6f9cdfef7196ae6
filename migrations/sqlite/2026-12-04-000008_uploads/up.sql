-- Input files uploaded to the master (the console's submit form, `POST /uploads`):
-- stored in the artifact store under `uploads/<id>/<name>`, read by workers as
-- `upload://<id>/<name>` inputs, removed by the same retention as finished jobs.
CREATE TABLE uploads (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    location TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX uploads_created ON uploads (created_at);
