-- By user (or kind), then in arrival order, as the events query walks them; a batch
-- appends to each of its users' ranges instead of one place per user and workstation.
DROP INDEX audit_user;
DROP INDEX audit_kind;
CREATE INDEX audit_user ON audit (usr, id);
CREATE INDEX audit_kind ON audit (kind, id);
