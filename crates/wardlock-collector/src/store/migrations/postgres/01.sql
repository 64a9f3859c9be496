CREATE TABLE workstations (
    id                TEXT PRIMARY KEY,
    node_key          BYTEA NOT NULL UNIQUE,
    hostname          TEXT NOT NULL,
    grp               TEXT NOT NULL,
    agent_version     TEXT NOT NULL,
    enrolled_ms       BIGINT NOT NULL,
    last_seen_ms      BIGINT,
    contiguous_seq    BIGINT NOT NULL DEFAULT 0,
    contiguous_hash   BYTEA NOT NULL,
    max_seq           BIGINT NOT NULL DEFAULT 0,
    reported_last_seq BIGINT,
    transport_key     BYTEA NOT NULL
);
CREATE TABLE audit (
    id          BIGSERIAL PRIMARY KEY,
    workstation TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    time_ms     BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    usr         TEXT,
    os_account  TEXT,
    policy_hash TEXT,
    details     TEXT NOT NULL,
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL,
    received_ms BIGINT NOT NULL,
    UNIQUE (workstation, seq)
);
CREATE INDEX audit_user ON audit (usr, workstation, seq);
CREATE INDEX audit_kind ON audit (kind, workstation, seq);
CREATE TABLE findings (
    workstation TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    found_ms    BIGINT NOT NULL,
    PRIMARY KEY (workstation, seq, kind)
);
CREATE TABLE enroll_secrets (hash BYTEA PRIMARY KEY, label TEXT NOT NULL, created_ms BIGINT NOT NULL);
CREATE TABLE api_tokens (hash BYTEA PRIMARY KEY, role TEXT NOT NULL, label TEXT NOT NULL, created_ms BIGINT NOT NULL);
CREATE TABLE policies (grp TEXT PRIMARY KEY, serial BIGINT NOT NULL, envelope TEXT NOT NULL, etag TEXT NOT NULL, updated_ms BIGINT NOT NULL);
CREATE TABLE admin_log (id BIGSERIAL PRIMARY KEY, time_ms BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE users (
    id           TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    role         TEXT NOT NULL,
    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
    pin_hash     TEXT,
    totp_sealed  BYTEA,
    updated_ms   BIGINT NOT NULL
);
