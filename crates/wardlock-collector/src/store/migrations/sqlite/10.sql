-- The web console's accounts (password and TOTP seed sealed with the data key; the
-- unlock counters as core's `UserAuthState`, JSON) and their server-side sessions (the
-- cookie's SHA-256 only).
CREATE TABLE console_accounts (
    name            TEXT PRIMARY KEY,
    role            TEXT NOT NULL,
    password_sealed TEXT NOT NULL,
    totp_sealed     BLOB NOT NULL,
    auth_state      TEXT NOT NULL DEFAULT '{}',
    disabled        INTEGER NOT NULL DEFAULT 0,
    created_ms      INTEGER NOT NULL
) STRICT;
CREATE TABLE console_sessions (
    hash           BLOB PRIMARY KEY,
    account        TEXT NOT NULL REFERENCES console_accounts (name),
    signed_in_ms   INTEGER NOT NULL,
    last_used_ms   INTEGER NOT NULL,
    signed_out_ms  INTEGER
) STRICT;
CREATE INDEX console_sessions_account ON console_sessions (account);
-- An auditor's review of one break-glass access: who, when, and their note.
CREATE TABLE emergency_reviews (
    workstation TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    reviewer    TEXT NOT NULL,
    note        TEXT NOT NULL,
    reviewed_ms INTEGER NOT NULL,
    PRIMARY KEY (workstation, seq)
) STRICT;
-- The fleet at a glance: each workstation's state from its latest entry that changes it
-- (core's `AuditKind::state_after`), and what its latest heartbeat reported.
ALTER TABLE workstations ADD COLUMN state TEXT;
ALTER TABLE workstations ADD COLUMN state_seq INTEGER;
ALTER TABLE workstations ADD COLUMN state_ms INTEGER;
ALTER TABLE workstations ADD COLUMN backlog INTEGER;
ALTER TABLE workstations ADD COLUMN policy_serial INTEGER;
ALTER TABLE workstations ADD COLUMN guard_connected INTEGER;
CREATE INDEX workstations_grp ON workstations (grp, id);
-- Every policy stored, with who stored it, for the history and its diffs.
ALTER TABLE policies ADD COLUMN stored_by TEXT;
CREATE TABLE policy_history (
    grp        TEXT NOT NULL,
    serial     INTEGER NOT NULL,
    envelope   TEXT NOT NULL,
    stored_by  TEXT NOT NULL,
    stored_ms  INTEGER NOT NULL,
    PRIMARY KEY (grp, serial)
) STRICT;
-- The chart of emergency accesses and the time filters walk entries by time.
CREATE INDEX audit_kind_time ON audit (kind, time_ms);
-- Policy changes drafted in the console, for `wardlockctl policy sign --draft ID`.
CREATE TABLE policy_drafts (
    id         INTEGER PRIMARY KEY,
    grp        TEXT NOT NULL,
    policy     TEXT NOT NULL,
    author     TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
-- Locks and unlocks per group and clock hour, counted at intake (what the heat map
-- reads: a month of a hospital's fleet is tens of thousands of rows here, not hundreds
-- of thousands of entries). An entry counts for the group its workstation had when the
-- collector received it.
CREATE TABLE chart_hours (
    grp     TEXT NOT NULL,
    hour_ms INTEGER NOT NULL,
    locks   INTEGER NOT NULL DEFAULT 0,
    unlocks INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (grp, hour_ms)
) STRICT;
INSERT INTO chart_hours (grp, hour_ms, locks, unlocks)
    SELECT w.grp, (a.time_ms / 3600000) * 3600000,
           sum(CASE WHEN a.kind = 'locked' THEN 1 ELSE 0 END), sum(CASE WHEN a.kind = 'unlock_succeeded' THEN 1 ELSE 0 END)
    FROM audit a JOIN workstations w ON w.id = a.workstation
    WHERE a.kind IN ('locked', 'unlock_succeeded') GROUP BY 1, 2;
