-- The user and kind indexes as the events query walks them: by user (or kind), then in
-- arrival order (`id`, the rowid every SQLite index ends with). A batch appends to each
-- of its users' ranges; the (user, workstation, seq) form had a hot spot per user and
-- workstation and cost the intake a third of its time (docs/benchmarks.md).
DROP INDEX audit_user;
DROP INDEX audit_kind;
CREATE INDEX audit_user ON audit (user);
CREATE INDEX audit_kind ON audit (kind);
