ALTER TABLE workstations ADD COLUMN transport_key BLOB NOT NULL DEFAULT x'';
CREATE TABLE users (
    id           TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    role         TEXT NOT NULL,
    disabled     INTEGER NOT NULL DEFAULT 0,
    pin_hash     TEXT,
    totp_sealed  BLOB,
    updated_ms   INTEGER NOT NULL
) STRICT;
