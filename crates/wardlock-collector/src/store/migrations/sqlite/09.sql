-- One set of queries for both backends: the audit's user column is named as on
-- PostgreSQL, where `user` is a reserved word.
ALTER TABLE audit RENAME COLUMN user TO usr;
-- Keyset paging: each list is read a page at a time along an index, never whole.
CREATE INDEX findings_order ON findings (found_ms, workstation, seq, kind);
CREATE INDEX audit_conflicts_order ON audit_conflicts (workstation, seq, received_ms, hash);
