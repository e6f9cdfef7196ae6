-- Web console sessions: a signed-in API key's role, kept server-side so a session can
-- expire and be revoked. `id` is the SHA-256 (hex) of the cookie's token, never the
-- token; `csrf_token` must accompany every state-changing request the session makes.
CREATE TABLE console_sessions (
    id TEXT PRIMARY KEY NOT NULL,
    role TEXT NOT NULL,
    key_digest TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
