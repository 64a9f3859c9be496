-- Keyset paging: each list is read a page at a time along an index, never whole.
CREATE INDEX findings_order ON findings (found_ms, workstation, seq, kind);
CREATE INDEX audit_conflicts_order ON audit_conflicts (workstation, seq, received_ms, hash);
