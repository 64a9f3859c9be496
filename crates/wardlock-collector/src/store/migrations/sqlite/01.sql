CREATE TABLE IF NOT EXISTS workstations (
    id                TEXT PRIMARY KEY,
    node_key          BLOB NOT NULL UNIQUE,
    hostname          TEXT NOT NULL,
    grp               TEXT NOT NULL,
    agent_version     TEXT NOT NULL,
    enrolled_ms       INTEGER NOT NULL,
    last_seen_ms      INTEGER,
    contiguous_seq    INTEGER NOT NULL DEFAULT 0,
    contiguous_hash   BLOB NOT NULL,
    max_seq           INTEGER NOT NULL DEFAULT 0,
    reported_last_seq INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS audit (
    id          INTEGER PRIMARY KEY,
    workstation TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    time_ms     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    user        TEXT,
    os_account  TEXT,
    policy_hash TEXT,
    details     TEXT NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    UNIQUE (workstation, seq)
) STRICT;
CREATE INDEX IF NOT EXISTS audit_time ON audit (time_ms);
CREATE INDEX IF NOT EXISTS audit_user ON audit (user, time_ms);
CREATE TABLE IF NOT EXISTS findings (
    workstation TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    found_ms    INTEGER NOT NULL,
    PRIMARY KEY (workstation, seq, kind)
) STRICT;
CREATE TABLE IF NOT EXISTS enroll_secrets (
    hash       BLOB PRIMARY KEY,
    label      TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS api_tokens (
    hash       BLOB PRIMARY KEY,
    role       TEXT NOT NULL,
    label      TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS policies (
    grp        TEXT PRIMARY KEY,
    serial     INTEGER NOT NULL,
    envelope   TEXT NOT NULL,
    etag       TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS admin_log (
    id      INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    detail  TEXT NOT NULL
) STRICT;
