-- The web console's accounts (password and TOTP seed sealed with the data key; the
-- unlock counters as core's `UserAuthState`, JSON) and their server-side sessions (the
-- cookie's SHA-256 only).
CREATE TABLE console_accounts (
    name            TEXT PRIMARY KEY,
    role            TEXT NOT NULL,
    password_sealed TEXT NOT NULL,
    totp_sealed     BYTEA NOT NULL,
    auth_state      TEXT NOT NULL DEFAULT '{}',
    disabled        BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms      BIGINT NOT NULL
);
CREATE TABLE console_sessions (
    hash           BYTEA PRIMARY KEY,
    account        TEXT NOT NULL REFERENCES console_accounts (name),
    signed_in_ms   BIGINT NOT NULL,
    last_used_ms   BIGINT NOT NULL,
    signed_out_ms  BIGINT
);
CREATE INDEX console_sessions_account ON console_sessions (account);
-- An auditor's review of one break-glass access: who, when, and their note.
CREATE TABLE emergency_reviews (
    workstation TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    reviewer    TEXT NOT NULL,
    note        TEXT NOT NULL,
    reviewed_ms BIGINT NOT NULL,
    PRIMARY KEY (workstation, seq)
);
ALTER TABLE workstations ADD COLUMN state TEXT;
ALTER TABLE workstations ADD COLUMN state_seq BIGINT;
ALTER TABLE workstations ADD COLUMN state_ms BIGINT;
ALTER TABLE workstations ADD COLUMN backlog BIGINT;
ALTER TABLE workstations ADD COLUMN policy_serial BIGINT;
ALTER TABLE workstations ADD COLUMN guard_connected BOOLEAN;
CREATE INDEX workstations_grp ON workstations (grp, id);
ALTER TABLE policies ADD COLUMN stored_by TEXT;
CREATE TABLE policy_history (
    grp        TEXT NOT NULL,
    serial     BIGINT NOT NULL,
    envelope   TEXT NOT NULL,
    stored_by  TEXT NOT NULL,
    stored_ms  BIGINT NOT NULL,
    PRIMARY KEY (grp, serial)
);
CREATE INDEX audit_kind_time ON audit (kind, time_ms);
CREATE TABLE policy_drafts (
    id         BIGSERIAL PRIMARY KEY,
    grp        TEXT NOT NULL,
    policy     TEXT NOT NULL,
    author     TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE chart_hours (
    grp     TEXT NOT NULL,
    hour_ms BIGINT NOT NULL,
    locks   BIGINT NOT NULL DEFAULT 0,
    unlocks BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (grp, hour_ms)
);
INSERT INTO chart_hours (grp, hour_ms, locks, unlocks)
    SELECT w.grp, (a.time_ms / 3600000) * 3600000,
           sum(CASE WHEN a.kind = 'locked' THEN 1 ELSE 0 END), sum(CASE WHEN a.kind = 'unlock_succeeded' THEN 1 ELSE 0 END)
    FROM audit a JOIN workstations w ON w.id = a.workstation
    WHERE a.kind IN ('locked', 'unlock_succeeded') GROUP BY 1, 2;
