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
