ALTER TABLE nodes DROP COLUMN token_hash;
