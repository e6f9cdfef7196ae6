-- A node's credential: SHA-256 (hex) of the token issued at registration; NULL for
-- seed-style nodes that use the shared worker key.
ALTER TABLE nodes ADD COLUMN token_hash TEXT;
