ALTER TABLE enroll_secrets ADD COLUMN expires_ms BIGINT;
ALTER TABLE enroll_secrets ADD COLUMN max_uses BIGINT;
ALTER TABLE enroll_secrets ADD COLUMN uses BIGINT NOT NULL DEFAULT 0;
ALTER TABLE enroll_secrets ADD COLUMN revoked_ms BIGINT;
ALTER TABLE workstations ADD COLUMN revoked_ms BIGINT;
CREATE TABLE reenroll_approvals (
    workstation TEXT PRIMARY KEY,
    code        BYTEA NOT NULL,
    expires_ms  BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL
);
ALTER TABLE users ADD COLUMN admin_grant TEXT;
ALTER TABLE users ADD COLUMN groups TEXT;
CREATE TABLE audit_conflicts (
    workstation TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    hash        BYTEA NOT NULL,
    record      TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (workstation, seq, hash)
);
