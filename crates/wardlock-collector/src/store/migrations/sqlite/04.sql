-- Indexes a batch extends at one place (per workstation, per user within it), not at
-- hundreds: a fleet's backlogs interleave in time, and an index on time alone made every
-- batch touch pages all over it (7x slower intake, measured in docs/benchmarks.md).
DROP INDEX IF EXISTS audit_time;
DROP INDEX IF EXISTS audit_user;
CREATE INDEX audit_user ON audit (user, workstation, seq);
CREATE INDEX audit_kind ON audit (kind, workstation, seq);
