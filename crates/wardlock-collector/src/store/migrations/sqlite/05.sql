-- Enrollment that identifies: secrets expire, run out and can be revoked; a workstation
-- can be revoked; an administrator approves a re-enrollment of one ID.
ALTER TABLE enroll_secrets ADD COLUMN expires_ms INTEGER;
ALTER TABLE enroll_secrets ADD COLUMN max_uses INTEGER;
ALTER TABLE enroll_secrets ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE enroll_secrets ADD COLUMN revoked_ms INTEGER;
ALTER TABLE workstations ADD COLUMN revoked_ms INTEGER;
CREATE TABLE reenroll_approvals (
    workstation TEXT PRIMARY KEY,
    code        BLOB NOT NULL,
    expires_ms  INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL
) STRICT;
-- An entry received under a stored seq with another content, kept in full: evidence is
-- never dropped, whichever version is the true one.
ALTER TABLE users ADD COLUMN admin_grant TEXT;
ALTER TABLE users ADD COLUMN groups TEXT;
CREATE TABLE audit_conflicts (
    workstation TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    hash        BLOB NOT NULL,
    record      TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (workstation, seq, hash)
) STRICT;
