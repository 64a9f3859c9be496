-- The latest TOTP step each user used anywhere, for the other workstations to refuse.
CREATE TABLE totp_steps (usr TEXT PRIMARY KEY, step_ms BIGINT NOT NULL, noted_ms BIGINT NOT NULL);
CREATE INDEX totp_steps_noted ON totp_steps (noted_ms);
