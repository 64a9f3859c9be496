//! The embedded backend: one SQLite file in WAL mode. Audit intake has its own writer
//! (`writer.rs`: group commit, the log flushed outside the write lock, checkpoints on a
//! thread of their own); everything else commits with `synchronous=FULL`.

mod writer;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use wardlock_core::audit::{AuditEntry, AuditKind, GENESIS_HASH};
use wardlock_core::clock::UtcMillis;
use wardlock_core::protocol::collector::Heartbeat;

use super::intake::Received;
use super::{finding_line, hash_of, ms, policy_etag};
use super::{
    plan_enroll, AdminAction, CollectorStore, EnrollAttempt, EnrollPlan, EnrollResult, EnrollSecret,
    Enrolled, EventQuery, FailureCount, Finding, Hash, Ingest, NewEnrollSecret, PolicyPut, ReenrollApproval,
    Role, StoreError, StoredEvent, UserRecord, Workstation,
};

/// Each migration runs once, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] =
    &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7, SCHEMA_V8];

/// The latest TOTP step each user used anywhere, for the other workstations to refuse.
const SCHEMA_V8: &str = "
CREATE TABLE totp_steps (usr TEXT PRIMARY KEY, step_ms INTEGER NOT NULL, noted_ms INTEGER NOT NULL) STRICT;
CREATE INDEX totp_steps_noted ON totp_steps (noted_ms);
";

/// A workstation's group is IT's decision: an enrollment secret enrolls into one group,
/// an administrator's approval may move a workstation to another.
const SCHEMA_V7: &str = "
ALTER TABLE enroll_secrets ADD COLUMN grp TEXT;
ALTER TABLE reenroll_approvals ADD COLUMN grp TEXT;
";

/// The user and kind indexes as the events query walks them: by user (or kind), then in
/// arrival order (`id`, the rowid every SQLite index ends with). A batch appends to each
/// of its users' ranges; the (user, workstation, seq) form had a hot spot per user and
/// workstation and cost the intake a third of its time (docs/benchmarks.md).
const SCHEMA_V6: &str = "
DROP INDEX audit_user;
DROP INDEX audit_kind;
CREATE INDEX audit_user ON audit (user);
CREATE INDEX audit_kind ON audit (kind);
";

/// Enrollment that identifies: secrets expire, run out and can be revoked; a workstation
/// can be revoked; an administrator approves a re-enrollment of one ID.
const SCHEMA_V5: &str = "
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
";

/// Indexes a batch extends at one place (per workstation, per user within it), not at
/// hundreds: a fleet's backlogs interleave in time, and an index on time alone made every
/// batch touch pages all over it (7x slower intake, measured in docs/benchmarks.md).
const SCHEMA_V4: &str = "
DROP INDEX IF EXISTS audit_time;
DROP INDEX IF EXISTS audit_user;
CREATE INDEX audit_user ON audit (user, workstation, seq);
CREATE INDEX audit_kind ON audit (kind, workstation, seq);
";

const SCHEMA_V3: &str =
    "CREATE TABLE forward_state (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL) STRICT;";

const SCHEMA_V2: &str = "
ALTER TABLE workstations ADD COLUMN transport_key BLOB NOT NULL DEFAULT x'';
CREATE TABLE users (
    id           TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    role         TEXT NOT NULL,
    disabled     INTEGER NOT NULL DEFAULT 0,
    pin_hash     TEXT,
    totp_sealed  BLOB,
    updated_ms   INTEGER NOT NULL
) STRICT;
";

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS workstations (
    id                TEXT PRIMARY KEY,
    node_key          BLOB NOT NULL UNIQUE,
    hostname          TEXT NOT NULL,
    grp               TEXT NOT NULL,
    agent_version     TEXT NOT NULL,
    enrolled_ms       INTEGER NOT NULL,
    last_seen_ms      INTEGER,
    contiguous_seq    INTEGER NOT NULL DEFAULT 0,
    contiguous_hash   BLOB NOT NULL,
    max_seq           INTEGER NOT NULL DEFAULT 0,
    reported_last_seq INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS audit (
    id          INTEGER PRIMARY KEY,
    workstation TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    time_ms     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    user        TEXT,
    os_account  TEXT,
    policy_hash TEXT,
    details     TEXT NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    UNIQUE (workstation, seq)
) STRICT;
CREATE INDEX IF NOT EXISTS audit_time ON audit (time_ms);
CREATE INDEX IF NOT EXISTS audit_user ON audit (user, time_ms);
CREATE TABLE IF NOT EXISTS findings (
    workstation TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    found_ms    INTEGER NOT NULL,
    PRIMARY KEY (workstation, seq, kind)
) STRICT;
CREATE TABLE IF NOT EXISTS enroll_secrets (
    hash       BLOB PRIMARY KEY,
    label      TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS api_tokens (
    hash       BLOB PRIMARY KEY,
    role       TEXT NOT NULL,
    label      TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS policies (
    grp        TEXT PRIMARY KEY,
    serial     INTEGER NOT NULL,
    envelope   TEXT NOT NULL,
    etag       TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS admin_log (
    id      INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    detail  TEXT NOT NULL
) STRICT;
";

#[derive(Debug)]
pub struct SqliteStore {
    /// Everything but audit intake: reads, and writes that commit with an fsync each.
    conn: Mutex<Connection>,
    /// Audit intake, on its own connection (see `writer`).
    writer: writer::IntakeWriter,
}

/// The database is the collector's alone, whatever the umask of whoever opens it first
/// (`--dev`, an administrator's `token create`): folders it makes are 0700, the file and
/// its WAL and shared-memory files 0600 (SQLite gives those the database's mode), and a
/// file a restore or copy loosened is tightened again.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |why: String| StoreError::Open { path: path.display().to_string(), why };
        owner_only(path).map_err(|e| open_err(e.to_string()))?;
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| open_err(format!("not a usable SQLite database: {e}")))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!("journal mode stays {mode}")));
        }
        // A fleet's log is large: a bigger page cache keeps index inserts off the disk.
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA cache_size = -262144; PRAGMA temp_store = MEMORY;",
        )?;
        let mut conn = conn;
        migrate(&mut conn).map_err(|e| open_err(format!("cannot set up the schema: {e}")))?;
        let writer =
            writer::IntakeWriter::open(path).map_err(|e| open_err(format!("cannot open for intake: {e}")))?;
        Ok(SqliteStore { conn: Mutex::new(conn), writer })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `change` and, when it changed a row, records the administrator's `log` entry
    /// in the same transaction: an action and its entry are written together or not at all.
    fn logged(
        &self,
        log: Option<&AdminAction>,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<usize>,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = change(&tx)?;
        if changed > 0 {
            log_in(&tx, log)?;
        }
        tx.commit()?;
        Ok(changed)
    }
}

/// Records an administrator's action in the admin log, inside the caller's transaction.
fn log_in(tx: &rusqlite::Transaction<'_>, log: Option<&AdminAction>) -> Result<(), StoreError> {
    if let Some(a) = log {
        tx.execute(
            "INSERT INTO admin_log (time_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
            params![ms(a.time), a.actor, a.action, a.detail],
        )?;
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let applied: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if applied as usize > MIGRATIONS.len() {
        return Err(StoreError::Conflict(format!(
            "the database was written by a newer collector (schema {applied}); upgrade this one"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
    }
    tx.commit()?;
    Ok(())
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: r.get(0)?,
        display_name: r.get(1)?,
        role: r.get(2)?,
        disabled: r.get(3)?,
        pin_sealed: r.get(4)?,
        totp_sealed: r.get(5)?,
        updated: UtcMillis::from_unix_millis(r.get(6)?),
        admin_grant: r.get(7)?,
        groups: super::groups_of(r.get(8)?),
    })
}

const USER_COLUMNS: &str =
    "id, display_name, role, disabled, pin_hash, totp_sealed, updated_ms, admin_grant, groups";

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, AuditEntry, i64)> {
    let kind: String = r.get(4)?;
    let details: String = r.get(8)?;
    Ok((
        r.get(0)?,
        AuditEntry {
            workstation: r.get(1)?,
            seq: r.get::<_, i64>(2)? as u64,
            time: UtcMillis::from_unix_millis(r.get(3)?),
            kind: AuditKind::parse(&kind).unwrap_or(AuditKind::TamperDetected),
            user: r.get(5)?,
            os_account: r.get(6)?,
            policy_hash: r.get(7)?,
            details: serde_json::from_str(&details).unwrap_or_default(),
            prev_hash: hash_of(r.get(9)?),
            hash: hash_of(r.get(10)?),
        },
        r.get(11)?,
    ))
}

const ENTRY_COLUMNS: &str =
    "id, workstation, seq, time_ms, kind, user, os_account, policy_hash, details, prev_hash, hash, received_ms";

fn workstation_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Workstation> {
    Ok(Workstation {
        id: r.get(0)?,
        hostname: r.get(1)?,
        group: r.get(2)?,
        agent_version: r.get(3)?,
        enrolled: UtcMillis::from_unix_millis(r.get(4)?),
        last_seen: r.get::<_, Option<i64>>(5)?.map(UtcMillis::from_unix_millis),
        contiguous_seq: r.get::<_, i64>(6)? as u64,
        reported_last_seq: r.get::<_, Option<i64>>(7)?.map(|s| s as u64),
        transport_key: r.get(8)?,
    })
}

/// An enrollment finding (seq 0) is appended to what is there, never overwritten: the
/// earlier refusals stay evidence. Capped at 1 MB a row (then the first ones are kept).
const APPEND_ENROLL_FINDING: &str =
    "INSERT INTO findings (workstation, seq, kind, detail, found_ms) VALUES (?1, 0, ?2, ?3, ?4)
     ON CONFLICT (workstation, seq, kind) DO UPDATE SET detail = CASE WHEN length(findings.detail) < 1000000
         THEN findings.detail || char(10) || excluded.detail ELSE findings.detail END";

const SECRET_COLUMNS: &str = "hash, label, created_ms, expires_ms, max_uses, uses, revoked_ms, grp";

fn secret_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EnrollSecret> {
    Ok(EnrollSecret {
        hash: hash_of(r.get(0)?),
        label: r.get(1)?,
        created: UtcMillis::from_unix_millis(r.get(2)?),
        expires: r.get::<_, Option<i64>>(3)?.map(UtcMillis::from_unix_millis),
        max_uses: r.get::<_, Option<i64>>(4)?.map(|m| m as u64),
        uses: r.get::<_, i64>(5)? as u64,
        revoked: r.get::<_, Option<i64>>(6)?.map(UtcMillis::from_unix_millis),
        group: r.get(7)?,
    })
}

const WORKSTATION_COLUMNS: &str =
    "id, hostname, grp, agent_version, enrolled_ms, last_seen_ms, contiguous_seq, reported_last_seq, transport_key";

impl CollectorStore for SqliteStore {
    fn add_enroll_secret(
        &self,
        secret: &Hash,
        new: &NewEnrollSecret,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<(), StoreError> {
        self.logged(log, |tx| tx.execute(
            "INSERT INTO enroll_secrets (hash, label, created_ms, expires_ms, max_uses, grp) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![&secret[..], new.label, ms(now), new.expires.map(ms), new.max_uses.map(|m| m as i64), new.group],
        ))?;
        Ok(())
    }

    fn enroll_secrets(&self) -> Result<Vec<EnrollSecret>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare(&format!("SELECT {SECRET_COLUMNS} FROM enroll_secrets ORDER BY created_ms"))?;
        let rows = stmt.query_map([], secret_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn revoke_enroll_secret(
        &self,
        secret: &Hash,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let n = self.logged(log, |tx| {
            tx.execute(
                "UPDATE enroll_secrets SET revoked_ms = coalesce(revoked_ms, ?2) WHERE hash = ?1",
                params![&secret[..], ms(now)],
            )
        })?;
        Ok(n > 0)
    }

    fn enroll(&self, attempt: &EnrollAttempt, now: UtcMillis) -> Result<EnrollResult, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ws = &attempt.workstation;
        let secret = tx
            .query_row(
                &format!("SELECT {SECRET_COLUMNS} FROM enroll_secrets WHERE hash = ?1"),
                [&attempt.secret[..]],
                secret_from_row,
            )
            .optional()?;
        let approval = tx
            .query_row(
                "SELECT code, expires_ms, grp FROM reenroll_approvals WHERE workstation = ?1",
                [&ws.id],
                |r| {
                    Ok(ReenrollApproval {
                        code: hash_of(r.get(0)?),
                        expires: UtcMillis::from_unix_millis(r.get(1)?),
                        group: r.get(2)?,
                    })
                },
            )
            .optional()?;
        let enrolled = tx
            .query_row(
                "SELECT node_key, revoked_ms, grp, transport_key FROM workstations WHERE id = ?1",
                [&ws.id],
                |r| {
                    Ok(Enrolled {
                        node_key: hash_of(r.get(0)?),
                        revoked: r.get::<_, Option<i64>>(1)?.is_some(),
                        group: r.get(2)?,
                        transport_key: r.get(3)?,
                    })
                },
            )
            .optional()?;
        let result = match plan_enroll(attempt, secret.as_ref(), approval.as_ref(), enrolled.as_ref(), now) {
            EnrollPlan::Unauthorized(why) => return Ok(EnrollResult::Unauthorized(why)),
            EnrollPlan::WrongGroup(why) => return Ok(EnrollResult::WrongGroup(why)),
            EnrollPlan::Conflict { message, finding } => {
                tx.execute(
                    APPEND_ENROLL_FINDING,
                    params![ws.id, "enroll_conflict", finding_line(now, &finding), ms(now)],
                )?;
                EnrollResult::Conflict(message)
            }
            EnrollPlan::Enroll { use_secret, use_approval, group, finding } => {
                if let Some((kind, detail)) = finding {
                    tx.execute(
                        APPEND_ENROLL_FINDING,
                        params![ws.id, kind, finding_line(now, &detail), ms(now)],
                    )?;
                }
                // Approved or proven: the node key is replaced and the log kept.
                tx.execute(
                    "INSERT INTO workstations (id, node_key, hostname, grp, agent_version, enrolled_ms, contiguous_hash, transport_key)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(id) DO UPDATE SET node_key = excluded.node_key, hostname = excluded.hostname,
                         grp = excluded.grp, agent_version = excluded.agent_version, enrolled_ms = excluded.enrolled_ms,
                         transport_key = excluded.transport_key, revoked_ms = NULL",
                    params![ws.id, &attempt.node_key[..], ws.hostname, group, ws.agent_version, ms(now), &GENESIS_HASH[..], ws.transport_key],
                )?;
                if use_secret {
                    tx.execute(
                        "UPDATE enroll_secrets SET uses = uses + 1 WHERE hash = ?1",
                        [&attempt.secret[..]],
                    )?;
                }
                if use_approval {
                    tx.execute("DELETE FROM reenroll_approvals WHERE workstation = ?1", [&ws.id])?;
                }
                EnrollResult::Enrolled
            }
        };
        tx.commit()?;
        Ok(result)
    }

    fn approve_reenroll(
        &self,
        workstation: &str,
        code: &Hash,
        group: Option<&str>,
        expires: UtcMillis,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<(), StoreError> {
        self.logged(log, |tx| tx.execute(
            "INSERT INTO reenroll_approvals (workstation, code, expires_ms, created_ms, grp) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (workstation) DO UPDATE SET code = excluded.code, expires_ms = excluded.expires_ms,
                 created_ms = excluded.created_ms, grp = excluded.grp",
            params![workstation, &code[..], ms(expires), ms(now), group],
        ))?;
        Ok(())
    }

    fn revoke_workstation(
        &self,
        workstation: &str,
        dead_key: &Hash,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let n = self.logged(log, |tx| {
            tx.execute(
                "UPDATE workstations SET node_key = ?2, revoked_ms = ?3 WHERE id = ?1",
                params![workstation, &dead_key[..], ms(now)],
            )
        })?;
        Ok(n > 0)
    }

    fn workstation_by_key(&self, node_key: &Hash) -> Result<Option<Workstation>, StoreError> {
        let sql = format!("SELECT {WORKSTATION_COLUMNS} FROM workstations WHERE node_key = ?1");
        Ok(self.conn().query_row(&sql, [&node_key[..]], workstation_from_row).optional()?)
    }

    fn workstations(&self) -> Result<Vec<Workstation>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare(&format!("SELECT {WORKSTATION_COLUMNS} FROM workstations ORDER BY id"))?;
        let rows = stmt.query_map([], workstation_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn ingest(
        &self,
        workstation: &str,
        entries: Vec<Received>,
        now: UtcMillis,
    ) -> Result<Ingest, StoreError> {
        self.writer.ingest(workstation, entries, now)
    }

    fn note_totp_steps(&self, steps: &[(String, UtcMillis)], now: UtcMillis) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (user, at) in steps {
            tx.execute(
                "INSERT INTO totp_steps (usr, step_ms, noted_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (usr) DO UPDATE SET step_ms = excluded.step_ms, noted_ms = excluded.noted_ms
                 WHERE excluded.step_ms > totp_steps.step_ms",
                params![user, ms(*at), ms(now)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn recent_totp_steps(&self, since: UtcMillis) -> Result<Vec<(String, UtcMillis)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT usr, step_ms FROM totp_steps WHERE noted_ms >= ?1")?;
        let rows = stmt
            .query_map([ms(since)], |r| Ok((r.get(0)?, UtcMillis::from_unix_millis(r.get(1)?))))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn heartbeat(&self, workstation: &str, beat: &Heartbeat, now: UtcMillis) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let contiguous: i64 =
            tx.query_row("SELECT contiguous_seq FROM workstations WHERE id = ?1", [workstation], |r| {
                r.get(0)
            })?;
        if (beat.last_seq as i64) < contiguous {
            // The workstation holds fewer entries than we received from it: its log lost
            // its tail (a restored backup, a deleted file).
            tx.execute(
                "INSERT INTO findings (workstation, seq, kind, detail, found_ms) VALUES (?1, ?2, 'truncated', ?3, ?4)
                 ON CONFLICT DO NOTHING",
                params![
                    workstation,
                    beat.last_seq as i64 + 1,
                    format!("the workstation reports {} entries, the collector holds {contiguous}", beat.last_seq),
                    ms(now)
                ],
            )?;
        }
        tx.execute(
            "UPDATE workstations SET last_seen_ms = ?2, reported_last_seq = ?3 WHERE id = ?1",
            params![workstation, ms(now), beat.last_seq as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn put_policy(
        &self,
        group: &str,
        serial: u64,
        envelope: &str,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<PolicyPut, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<i64> =
            tx.query_row("SELECT serial FROM policies WHERE grp = ?1", [group], |r| r.get(0)).optional()?;
        if let Some(current) = current.filter(|c| *c as u64 >= serial) {
            return Ok(PolicyPut::Stale { current: current as u64 });
        }
        let etag = policy_etag(envelope);
        tx.execute(
            "INSERT INTO policies (grp, serial, envelope, etag, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(grp) DO UPDATE SET serial = excluded.serial, envelope = excluded.envelope,
                 etag = excluded.etag, updated_ms = excluded.updated_ms",
            params![group, serial as i64, envelope, etag, ms(now)],
        )?;
        log_in(&tx, log)?;
        tx.commit()?;
        Ok(PolicyPut::Stored)
    }

    fn policy(&self, group: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT envelope, etag FROM policies WHERE grp = ?1", [group], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    fn add_token(
        &self,
        token: &Hash,
        role: Role,
        label: &str,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<(), StoreError> {
        self.logged(log, |tx| {
            tx.execute(
                "INSERT INTO api_tokens (hash, role, label, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![&token[..], role.as_str(), label, ms(now)],
            )
        })?;
        Ok(())
    }

    fn token(&self, token: &Hash) -> Result<Option<(Role, String)>, StoreError> {
        let row: Option<(String, String)> = self
            .conn()
            .query_row("SELECT role, label FROM api_tokens WHERE hash = ?1", [&token[..]], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        Ok(row.and_then(|(role, label)| Role::parse(&role).map(|r| (r, label))))
    }

    fn events(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        // Only the filters given, so SQLite can use the index that fits (an `?1 IS NULL OR`
        // form would make it scan everything).
        let mut sql = format!("SELECT {ENTRY_COLUMNS} FROM audit WHERE id > ?1");
        let mut args: Vec<rusqlite::types::Value> = vec![q.after.unwrap_or(0).into()];
        let mut add = |clause: &str, value: rusqlite::types::Value| {
            args.push(value);
            sql.push_str(&format!(" AND {clause} ?{}", args.len()));
        };
        if let Some(w) = &q.workstation {
            add("workstation =", w.clone().into());
        }
        if let Some(u) = &q.user {
            add("user =", u.clone().into());
        }
        if let Some(k) = &q.kind {
            add("kind =", k.clone().into());
        }
        if let Some(t) = q.since {
            add("time_ms >=", ms(t).into());
        }
        if let Some(t) = q.until {
            add("time_ms <", ms(t).into());
        }
        if let Some(t) = q.received_since {
            add("received_ms >=", ms(t).into());
        }
        if let Some(t) = q.received_until {
            add("received_ms <", ms(t).into());
        }
        args.push(i64::from(q.limit).into());
        sql.push_str(&format!(" ORDER BY id LIMIT ?{}", args.len()));
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), entry_from_row)?
            .map(|r| {
                r.map(|(id, entry, received)| StoredEvent {
                    id,
                    entry,
                    received: UtcMillis::from_unix_millis(received),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn conflicts(&self, workstation: Option<&str>) -> Result<Vec<super::Conflict>, StoreError> {
        let conn = self.conn();
        let mut kept = conn.prepare(
            "SELECT workstation, seq, record, received_ms FROM audit_conflicts
             WHERE ?1 IS NULL OR workstation = ?1 ORDER BY workstation, seq, received_ms",
        )?;
        let rows = kept
            .query_map([workstation], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stored_entry =
            conn.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM audit WHERE workstation = ?1 AND seq = ?2"))?;
        let mut out = Vec::new();
        for (workstation, seq, record, received_ms) in rows {
            let stored = stored_entry.query_row(params![workstation, seq], entry_from_row)?.1;
            let Some(received) = super::conflict_entry(&record) else { continue };
            out.push(super::Conflict {
                workstation,
                seq: seq as u64,
                stored,
                received,
                received_at: UtcMillis::from_unix_millis(received_ms),
            });
        }
        Ok(out)
    }

    fn findings(&self) -> Result<Vec<Finding>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT workstation, seq, kind, detail, found_ms FROM findings ORDER BY found_ms, workstation, seq")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Finding {
                    workstation: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                    kind: r.get(2)?,
                    detail: r.get(3)?,
                    found: UtcMillis::from_unix_millis(r.get(4)?),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn log_admin(&self, a: &AdminAction) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO admin_log (time_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
            params![ms(a.time), a.actor, a.action, a.detail],
        )?;
        Ok(())
    }

    fn admin_log(&self) -> Result<Vec<AdminAction>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT time_ms, actor, action, detail FROM admin_log ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AdminAction {
                    time: UtcMillis::from_unix_millis(r.get(0)?),
                    actor: r.get(1)?,
                    action: r.get(2)?,
                    detail: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn entry_count(&self) -> Result<u64, StoreError> {
        Ok(self.conn().query_row("SELECT count(*) FROM audit", [], |r| r.get::<_, i64>(0))? as u64)
    }

    fn failures_by_user(&self, since: UtcMillis) -> Result<Vec<FailureCount>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT user, workstation, SUM(kind = 'unlock_failed'), SUM(kind = 'user_locked_out'), MAX(time_ms)
             FROM audit WHERE user IS NOT NULL AND kind IN ('unlock_failed', 'user_locked_out') AND time_ms >= ?1
             GROUP BY user, workstation ORDER BY 3 DESC, 1",
        )?;
        let rows = stmt
            .query_map([ms(since)], |r| {
                Ok(FailureCount {
                    user: r.get(0)?,
                    workstation: r.get(1)?,
                    failed_attempts: r.get::<_, i64>(2)? as u64,
                    lockouts: r.get::<_, i64>(3)? as u64,
                    last: UtcMillis::from_unix_millis(r.get(4)?),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn last_unlocks(&self) -> Result<Vec<(String, UtcMillis)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT user, MAX(time_ms) FROM audit
             WHERE user IS NOT NULL AND kind IN (SELECT value FROM json_each(?1))
             GROUP BY user",
        )?;
        let used = serde_json::to_string(&AuditKind::names(AuditKind::ACCOUNT_USED)).unwrap_or_default();
        let rows = stmt
            .query_map([used], |r| Ok((r.get(0)?, UtcMillis::from_unix_millis(r.get(1)?))))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn forward_cursor(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT last_id FROM forward_state WHERE name = ?1", [name], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    fn set_forward_cursor(&self, name: &str, id: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO forward_state (name, last_id) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET last_id = excluded.last_id",
            params![name, id],
        )?;
        Ok(())
    }

    fn put_user(
        &self,
        u: &UserRecord,
        must_be_new: bool,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let sql = if must_be_new {
            "INSERT INTO users (id, display_name, role, disabled, pin_hash, totp_sealed, updated_ms, groups)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(id) DO NOTHING"
        } else {
            "INSERT INTO users (id, display_name, role, disabled, pin_hash, totp_sealed, updated_ms, groups)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(id) DO UPDATE SET display_name = excluded.display_name, role = excluded.role,
                 disabled = excluded.disabled, pin_hash = excluded.pin_hash, totp_sealed = excluded.totp_sealed,
                 updated_ms = excluded.updated_ms, groups = excluded.groups"
        };
        let changed = self.logged(log, |tx| {
            tx.execute(
                sql,
                params![
                    u.id,
                    u.display_name,
                    u.role,
                    u.disabled,
                    u.pin_sealed,
                    u.totp_sealed,
                    ms(u.updated),
                    super::groups_column(&u.groups)
                ],
            )
        })?;
        Ok(changed == 1)
    }

    fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
        Ok(self.conn().query_row(&sql, [id], user_from_row).optional()?)
    }

    fn set_admin_grant(
        &self,
        id: &str,
        grant: &str,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let n = self.logged(log, |tx| {
            tx.execute(
                "UPDATE users SET admin_grant = ?2, updated_ms = ?3 WHERE id = ?1",
                params![id, grant, ms(now)],
            )
        })?;
        Ok(n > 0)
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))?;
        let rows = stmt.query_map([], user_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use wardlock_core::audit::AuditDraft;

    use super::*;
    use crate::store::{NewWorkstation, Received};

    fn at(ms: i64) -> UtcMillis {
        UtcMillis::from_unix_millis(ms)
    }

    fn enrolled(store: &SqliteStore, id: &str) {
        let secret = [1; 32];
        let fleet =
            NewEnrollSecret { label: "t".into(), group: "default".into(), expires: None, max_uses: None };
        let _ = store.add_enroll_secret(&secret, &fleet, at(0), None);
        let workstation = NewWorkstation {
            id: id.into(),
            hostname: id.into(),
            group: "default".into(),
            agent_version: "t".into(),
            transport_key: vec![0; 32],
        };
        let mut node_key = [0; 32];
        node_key[..id.len()].copy_from_slice(id.as_bytes());
        let attempt = EnrollAttempt { secret, workstation, node_key, presented_key: None };
        assert_eq!(store.enroll(&attempt, at(0)).expect("enroll"), EnrollResult::Enrolled);
    }

    fn log(id: &str, n: u64) -> Vec<Received> {
        let mut log: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let prev = log.last().map(|e| (e.seq, e.hash));
            let draft = AuditDraft::new(at(1_000 + i as i64), AuditKind::Locked).user("n.nurse");
            log.push(AuditEntry::chain(draft, id, prev));
        }
        log.into_iter().map(Received::new).collect()
    }

    #[test]
    fn batches_arriving_together_are_all_stored_and_a_failing_one_fails_only_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(&dir.path().join("c.db")).expect("open"));
        let ids: Vec<String> = (0..12).map(|i| format!("ws-{i:02}")).collect();
        for id in &ids {
            enrolled(&store, id);
        }
        // One more thread sends for a workstation the store does not know: its batch fails.
        let start = Arc::new(Barrier::new(ids.len() + 1));
        let mut threads = Vec::new();
        for id in ids.iter().cloned().chain(["ws-unknown".to_owned()]) {
            let (store, start) = (store.clone(), start.clone());
            threads.push(std::thread::spawn(move || {
                start.wait();
                let answers: Vec<_> = (0..3)
                    .map(|round| {
                        let batch = log(&id, 30 * (round + 1)).split_off(30 * round as usize);
                        store.ingest(&id, batch, at(9_000)).map(|i| i.ack.highest_contiguous_seq)
                    })
                    .collect();
                (id, answers)
            }));
        }
        for thread in threads {
            let (id, answers) = thread.join().expect("thread");
            if id == "ws-unknown" {
                assert!(answers.iter().all(Result::is_err), "{answers:?}");
            } else {
                let heads: Vec<u64> = answers.into_iter().map(|a| a.expect("stored")).collect();
                assert_eq!(heads, vec![30, 60, 90], "{id}: each batch acknowledged after its own");
            }
        }
        assert_eq!(store.entry_count().expect("count"), 12 * 90, "every entry of every good batch, once");
    }

    #[test]
    fn a_batch_whose_flush_to_disk_fails_is_not_acknowledged_and_sending_it_again_is_safe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("c.db")).expect("open");
        enrolled(&store, "ws-a");
        store.writer.flush_to(dir.path().join("no-such-dir/c.db-wal"));
        let refused = store.ingest("ws-a", log("ws-a", 5), at(9_000));
        assert!(
            matches!(&refused, Err(StoreError::NotDurable(why)) if why.contains("no-such-dir")),
            "{refused:?}"
        );
        store.writer.flush_to(dir.path().join("c.db-wal"));
        let again = store.ingest("ws-a", log("ws-a", 5), at(9_001)).expect("stored");
        assert_eq!(again.ack.highest_contiguous_seq, 5);
        assert_eq!(again.findings, 0, "the same entries again are no conflict");
        assert_eq!(store.entry_count().expect("count"), 5);
    }
}
