//! The workstation database: one SQLite file holding the audit log, the user directory
//! cache, unlock counters and TOTP replay steps.
//!
//! Durability: WAL with `synchronous=FULL`, so a committed transaction is on disk when
//! `commit` returns; an audit entry is therefore durable before the call that wrote it
//! returns. The file is created owner-only (SQLite gives its WAL and shared-memory files
//! the same mode), and an existing file that is not ours is refused, never rewritten.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::private_fs;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use wardlock_core::audit::{AuditDraft, AuditEntry, AuditKind, ChainError, ChainVerifier};
use wardlock_core::clock::UtcMillis;
use wardlock_core::unlock::{UserAuthState, WorkstationAuthState};

/// `PRAGMA application_id`: "WDLK". Marks the file as a Wardlock workstation database.
const APPLICATION_ID: i64 = 0x5744_4c4b;
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Each migration brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
    CREATE TABLE audit (
        seq         INTEGER PRIMARY KEY,
        time_ms     INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        user        TEXT,
        os_account  TEXT,
        workstation TEXT NOT NULL,
        policy_hash TEXT,
        details     TEXT NOT NULL,
        prev_hash   BLOB NOT NULL,
        hash        BLOB NOT NULL
    ) STRICT;
    -- Our own code never edits or deletes audit rows; these make a slip fail loudly.
    -- (Someone with the file can drop them; the hash chain is what detects that.)
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
    CREATE TABLE sync_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        acked_seq INTEGER NOT NULL
    ) STRICT;
    INSERT INTO sync_state (id, acked_seq) VALUES (1, 0);
    CREATE TABLE users (
        id           TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        role         TEXT NOT NULL,
        disabled     INTEGER NOT NULL DEFAULT 0,
        pin_hash     TEXT,
        totp_sealed  BLOB,
        updated_ms   INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE user_auth (user_id TEXT PRIMARY KEY, state TEXT NOT NULL) STRICT;
    CREATE TABLE workstation_auth (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL) STRICT;
",
    r"
    -- Users that came from the collector's directory: the directory governs them.
    ALTER TABLE users ADD COLUMN from_collector INTEGER NOT NULL DEFAULT 0;
",
    r"
    -- PIN hashes sealed with the data key, like TOTP seeds: a copied file is no offline
    -- PIN cracker. The service moves each plain `pin_hash` here at its next start
    -- (`directory::seal_plain_pin_hashes`), since only it holds the key.
    ALTER TABLE users ADD COLUMN pin_sealed BLOB;
",
    r"
    -- Entries the collector answered with a conflict: it holds another entry under the
    -- seq. They are not delivered; kept here for IT to look at.
    CREATE TABLE sync_conflicts (seq INTEGER PRIMARY KEY, found_ms INTEGER NOT NULL) STRICT;
",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no Wardlock database at {0}; wardlockd creates it at its first start (so does `wardlockctl user add`); or pass the right --db")]
    NotFound(PathBuf),
    #[error("{path} is not a usable Wardlock database ({why}); it was left untouched. Restore it from backup or move it aside")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path} is a SQLite database of another application; it was left untouched. Point --db at a Wardlock database")]
    Foreign { path: PathBuf },
    #[error(
        "{path} was written by a newer Wardlock (schema {found}, this one knows {known}); upgrade Wardlock"
    )]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("cannot open {path}{}", permission_hint(source))]
    Io { path: PathBuf, source: std::io::Error },
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("audit row {seq} cannot be read back ({why})")]
    BadRow { seq: u64, why: String },
}

fn permission_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (the database belongs to the service account: run as root or as that account)"
    } else {
        ""
    }
}

/// How to open the database.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Create a new database if none exists (the service does; the CLI does not).
    pub create: bool,
    /// Recorded in every audit entry; fixed when the database is created.
    pub workstation_id: String,
}

/// See [`Store::purge_clearance`]; the package's postrm reads this name.
pub const PURGE_CLEARANCE: &str = "purge-clearance";

#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    workstation_id: String,
}

/// A user as cached on the workstation. Secrets stay in their protected forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub display_name: String,
    pub role: String,
    pub disabled: bool,
    /// Argon2id PHC string, sealed with the data key (see `directory::seal_pin_hash`).
    pub pin_sealed: Option<Vec<u8>>,
    /// TOTP seed sealed with the data key (see `secrets::DataKey`).
    pub totp_sealed: Option<Vec<u8>>,
    /// Came from the collector's directory, which then governs it.
    pub from_collector: bool,
}

/// Result of verifying the whole audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    pub entries: u64,
    pub head: (u64, [u8; 32]),
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Store, StoreError> {
        let io = |source| StoreError::Io { path: path.to_owned(), source };
        let exists = path.exists();
        if !exists {
            if !options.create {
                return Err(StoreError::NotFound(path.to_owned()));
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                private_fs::create_dir(dir).map_err(io)?;
            }
            private_fs::create_new(path).map_err(io)?;
        } else {
            check_header(path)?;
        }

        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| corrupt_or(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store { conn, path: path.to_owned(), workstation_id: String::new() };
        store.check_identity()?;
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| corrupt_or(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                why: format!("journal mode stays {mode}"),
            });
        }
        store.conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        store.migrate()?;
        restrict_to_owner(path).map_err(io)?;
        store.workstation_id = match store.meta("workstation_id")? {
            Some(id) => id,
            None => {
                store.set_meta("workstation_id", &options.workstation_id)?;
                options.workstation_id.clone()
            }
        };
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the audit log at `to` for when the workstation is purged: the whole
    /// chain (so it verifies from its first entry) and how far the collector acknowledged
    /// it, written consistently by SQLite; users, keys and everything else secret or
    /// sealed are left out of the copy.
    pub fn copy_audit_to(&self, to: &Path) -> Result<(), StoreError> {
        let io = |source| StoreError::Io { path: to.to_owned(), source };
        if to.exists() {
            return Err(io(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists already")));
        }
        self.conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])?;
        restrict_to_owner(to).map_err(io)?;
        let copy = Connection::open(to)?;
        copy.execute_batch(
            "DELETE FROM users; DELETE FROM user_auth; DELETE FROM workstation_auth;
             DELETE FROM meta WHERE key <> 'workstation_id'; VACUUM;",
        )?;
        Ok(())
    }

    /// The note `wardlockctl audit preserve` leaves beside the database when purging it
    /// loses nothing; withdrawn by the service at each start, as new entries may follow.
    pub fn purge_clearance(&self) -> PathBuf {
        self.path.with_file_name(PURGE_CLEARANCE)
    }

    /// Closes the database and moves it, whole, to `name` beside it: its WAL checkpointed
    /// in first, so the file kept holds every entry; nothing is deleted. Answers where it
    /// went. The next `open` of the old path makes a new database.
    pub fn set_aside(self, name: &str) -> Result<PathBuf, StoreError> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let Store { conn, path, .. } = self;
        conn.close().map_err(|(_, e)| StoreError::from(e))?;
        let kept = path.with_file_name(name);
        if kept.exists() {
            return Err(StoreError::Io {
                path: kept.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a database was set aside here already",
                ),
            });
        }
        fs::rename(&path, &kept).map_err(|source| StoreError::Io { path: path.clone(), source })?;
        // Empty after the checkpoint and the last close, but never left to a new database.
        for suffix in ["-wal", "-shm"] {
            let side = sidecar(&path, suffix);
            if side.exists() {
                fs::rename(&side, sidecar(&kept, suffix))
                    .map_err(|source| StoreError::Io { path: side.clone(), source })?;
            }
        }
        Ok(kept)
    }

    pub fn workstation_id(&self) -> &str {
        &self.workstation_id
    }

    /// Refuses files that are damaged or belong to another application.
    fn check_identity(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let app_id: i64 = self
            .conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| corrupt_or(&path, e))?;
        let tables: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(|e| corrupt_or(&path, e))?;
        match (app_id, tables) {
            (APPLICATION_ID, _) => {}
            (0, 0) => {
                self.conn.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))?;
            }
            _ => return Err(StoreError::Foreign { path }),
        }
        let check: String =
            self.conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(|e| corrupt_or(&path, e))?;
        if check != "ok" {
            return Err(StoreError::Corrupt { path, why: check });
        }
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT")?;
        let found: Option<i64> =
            tx.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).optional()?;
        let found = found.unwrap_or(0);
        if found > known {
            return Err(StoreError::TooNew { path: self.path.clone(), found, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql)?;
            tx.execute("DELETE FROM schema_version", [])?;
            tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [i as i64 + 1])?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        get_meta(&self.conn, key)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        put_meta(&self.conn, key, value)
    }

    /// Every meta entry whose key starts with `prefix`, as (rest of the key, value).
    pub fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut statement = self.conn.prepare("SELECT key, value FROM meta WHERE substr(key, 1, ?2) = ?1")?;
        let rows = statement.query_map(rusqlite::params![prefix, prefix.chars().count() as i64], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut found = Vec::new();
        for row in rows {
            let (key, value) = row?;
            if let Some(rest) = key.strip_prefix(prefix) {
                found.push((rest.to_owned(), value));
            }
        }
        Ok(found)
    }

    /// Runs `f` holding the database's write lock (`BEGIN IMMEDIATE`): another process
    /// doing the same waits. For one-time set-up two processes could otherwise race on
    /// (making the data key). `f` may use this store's reads and `set_meta`.
    pub fn with_write_lock<T, E: From<StoreError>>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(StoreError::from)?;
        match f() {
            Ok(value) => {
                self.conn.execute_batch("COMMIT").map_err(StoreError::from)?;
                Ok(value)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Up to `limit` entries after `seq`, in order: the next batch to send.
    pub fn entries_after(&self, seq: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, time_ms, kind, user, os_account, workstation, policy_hash, details, prev_hash, hash
             FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![seq as i64, i64::from(limit)])?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next()? {
            entries.push(entry_from_row(row)?);
        }
        Ok(entries)
    }

    /// Records that the collector holds every entry up to `seq`; never moves backwards.
    pub fn set_acked_seq(&self, seq: u64) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE sync_state SET acked_seq = max(acked_seq, ?1) WHERE id = 1", [seq as i64])?;
        Ok(())
    }

    /// Notes that the collector holds another entry under `seq`; `true` the first time.
    pub fn record_conflict(&self, seq: u64, now: UtcMillis) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "INSERT INTO sync_conflicts (seq, found_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![seq as i64, now.unix_millis()],
        )?;
        Ok(n == 1)
    }

    /// The seqs of this log that the collector did not take as sent (another entry is there).
    pub fn conflicts(&self) -> Result<Vec<u64>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT seq FROM sync_conflicts ORDER BY seq")?;
        let seqs = stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(seqs.into_iter().map(|s| s as u64).collect())
    }

    /// Highest seq the collector has acknowledged (0: none yet).
    pub fn acked_seq(&self) -> Result<u64, StoreError> {
        Ok(self.conn.query_row("SELECT acked_seq FROM sync_state WHERE id = 1", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Starts a write transaction. Everything done through it, audit entries included,
    /// becomes durable together at `commit`, or not at all.
    pub fn write(&mut self) -> Result<StoreTx<'_>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Ok(StoreTx { tx, workstation_id: &self.workstation_id, path: &self.path })
    }

    /// Appends one audit entry and returns it once it is on disk.
    pub fn append(&mut self, draft: AuditDraft) -> Result<AuditEntry, StoreError> {
        let mut tx = self.write()?;
        let entry = tx.append(draft)?;
        tx.commit()?;
        Ok(entry)
    }

    pub fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self.conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Streams audit entries with `seq >= from` in order to `f`; stops at the first error.
    pub fn for_each_entry<E: From<StoreError>>(
        &self,
        from: u64,
        mut f: impl FnMut(AuditEntry) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, time_ms, kind, user, os_account, workstation, policy_hash, details, prev_hash, hash
                 FROM audit WHERE seq >= ?1 ORDER BY seq",
            )
            .map_err(StoreError::from)?;
        let mut rows = stmt.query([from as i64]).map_err(StoreError::from)?;
        while let Some(row) = rows.next().map_err(StoreError::from)? {
            f(entry_from_row(row)?)?;
        }
        Ok(())
    }

    /// Checks the whole hash chain, naming the first bad seq.
    pub fn verify_audit(&self) -> Result<AuditVerification, VerifyError> {
        let mut verifier = ChainVerifier::new();
        let result = self.for_each_entry(0, |entry| verifier.push(&entry).map_err(VerifyError::from));
        match result {
            // A row that cannot even be decoded was tampered with as surely as a bad hash.
            Err(VerifyError::Store(StoreError::BadRow { seq, .. })) => {
                Err(ChainError::Altered { seq }.into())
            }
            Err(e) => Err(e),
            Ok(()) => Ok(AuditVerification { entries: verifier.checked(), head: verifier.head() }),
        }
    }

    pub fn user(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        fetch_user(&self.conn, id)
    }

    pub fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        fetch_users(&self.conn)
    }

    pub fn user_auth(&self, user_id: &str) -> Result<UserAuthState, StoreError> {
        fetch_user_auth(&self.conn, &self.path, user_id)
    }

    pub fn workstation_auth(&self) -> Result<WorkstationAuthState, StoreError> {
        fetch_workstation_auth(&self.conn, &self.path)
    }
}

/// A write transaction on the store.
#[derive(Debug)]
pub struct StoreTx<'a> {
    tx: Transaction<'a>,
    workstation_id: &'a str,
    path: &'a Path,
}

impl StoreTx<'_> {
    pub fn append(&mut self, draft: AuditDraft) -> Result<AuditEntry, StoreError> {
        let prev: Option<(i64, Vec<u8>)> = self
            .tx
            .query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let prev = match prev {
            None => None,
            Some((seq, hash)) => Some((
                seq as u64,
                hash.try_into().map_err(|_| StoreError::BadRow {
                    seq: seq as u64,
                    why: "hash is not 32 bytes".into(),
                })?,
            )),
        };
        let entry = AuditEntry::chain(draft, self.workstation_id, prev);
        let details = serde_json::to_string(&entry.details).unwrap_or_else(|_| "{}".into());
        self.tx
            .prepare_cached(
                "INSERT INTO audit (seq, time_ms, kind, user, os_account, workstation, policy_hash, details, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                entry.seq as i64,
                entry.time.unix_millis(),
                entry.kind.as_str(),
                entry.user,
                entry.os_account,
                entry.workstation,
                entry.policy_hash,
                details,
                &entry.prev_hash[..],
                &entry.hash[..],
            ])?;
        Ok(entry)
    }

    pub fn put_user(&self, user: &UserRow, now: UtcMillis) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO users (id, display_name, role, disabled, pin_sealed, totp_sealed, updated_ms, from_collector)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(id) DO UPDATE SET display_name = excluded.display_name, role = excluded.role,
                disabled = excluded.disabled, pin_sealed = excluded.pin_sealed, pin_hash = NULL,
                totp_sealed = excluded.totp_sealed, updated_ms = excluded.updated_ms,
                from_collector = excluded.from_collector",
            params![
                user.id,
                user.display_name,
                user.role,
                user.disabled,
                user.pin_sealed,
                user.totp_sealed,
                now.unix_millis(),
                user.from_collector
            ],
        )?;
        Ok(())
    }

    pub fn user(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        fetch_user(&self.tx, id)
    }

    /// PIN hashes still in the clear (a database of an earlier release), by user ID.
    pub fn plain_pin_hashes(&self) -> Result<Vec<(String, zeroize::Zeroizing<String>)>, StoreError> {
        let mut stmt =
            self.tx.prepare("SELECT id, pin_hash FROM users WHERE pin_hash IS NOT NULL ORDER BY id")?;
        let rows =
            stmt.query_map([], |r| Ok((r.get(0)?, zeroize::Zeroizing::new(r.get::<_, String>(1)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces a user's plain PIN hash with its sealed form.
    pub fn seal_pin_hash(&self, id: &str, sealed: &[u8]) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE users SET pin_sealed = ?2, pin_hash = NULL WHERE id = ?1",
            params![id, sealed],
        )?;
        Ok(())
    }

    pub fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        fetch_users(&self.tx)
    }

    pub fn user_auth(&self, user_id: &str) -> Result<UserAuthState, StoreError> {
        fetch_user_auth(&self.tx, self.path, user_id)
    }

    pub fn workstation_auth(&self) -> Result<WorkstationAuthState, StoreError> {
        fetch_workstation_auth(&self.tx, self.path)
    }

    pub fn save_user_auth(&self, user_id: &str, state: &UserAuthState) -> Result<(), StoreError> {
        let json = serde_json::to_string(state).unwrap_or_default();
        self.tx.execute(
            "INSERT INTO user_auth (user_id, state) VALUES (?1, ?2)
             ON CONFLICT(user_id) DO UPDATE SET state = excluded.state",
            params![user_id, json],
        )?;
        Ok(())
    }

    pub fn save_workstation_auth(&self, state: &WorkstationAuthState) -> Result<(), StoreError> {
        let json = serde_json::to_string(state).unwrap_or_default();
        self.tx.execute(
            "INSERT INTO workstation_auth (id, state) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET state = excluded.state",
            [json],
        )?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        get_meta(&self.tx, key)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        put_meta(&self.tx, key, value)
    }

    pub fn delete_meta(&self, key: &str) -> Result<(), StoreError> {
        self.tx.execute("DELETE FROM meta WHERE key = ?1", [key])?;
        Ok(())
    }

    /// Makes everything in the transaction durable (fsync of the WAL).
    pub fn commit(self) -> Result<(), StoreError> {
        self.tx.commit()?;
        Ok(())
    }
}

fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

fn put_meta(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

const USER_COLUMNS: &str =
    "SELECT id, display_name, role, disabled, pin_sealed, totp_sealed, from_collector FROM users";

fn fetch_users(conn: &Connection) -> Result<Vec<UserRow>, StoreError> {
    let mut stmt = conn.prepare(&format!("{USER_COLUMNS} ORDER BY id"))?;
    let rows = stmt.query_map([], user_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn fetch_user(conn: &Connection, id: &str) -> Result<Option<UserRow>, StoreError> {
    let sql = format!("{USER_COLUMNS} WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], user_from_row).optional()?)
}

fn fetch_user_auth(conn: &Connection, path: &Path, user_id: &str) -> Result<UserAuthState, StoreError> {
    json_state(conn, path, "SELECT state FROM user_auth WHERE user_id = ?1", user_id)
}

fn fetch_workstation_auth(conn: &Connection, path: &Path) -> Result<WorkstationAuthState, StoreError> {
    json_state(conn, path, "SELECT state FROM workstation_auth WHERE id = ?1", "1")
}

/// Unlock counters are stored as JSON of the core's state types; a missing row is the
/// default state.
fn json_state<T: serde::de::DeserializeOwned + Default>(
    conn: &Connection,
    path: &Path,
    sql: &str,
    key: &str,
) -> Result<T, StoreError> {
    let text: Option<String> = conn.query_row(sql, [key], |r| r.get(0)).optional()?;
    match text {
        None => Ok(T::default()),
        Some(t) => serde_json::from_str(&t)
            .map_err(|e| StoreError::Corrupt { path: path.to_owned(), why: format!("unlock counters: {e}") }),
    }
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        display_name: r.get(1)?,
        role: r.get(2)?,
        disabled: r.get(3)?,
        pin_sealed: r.get(4)?,
        totp_sealed: r.get(5)?,
        from_collector: r.get(6)?,
    })
}

fn entry_from_row(row: &rusqlite::Row<'_>) -> Result<AuditEntry, StoreError> {
    let seq = row.get::<_, i64>(0)? as u64;
    let bad = |why: &str| StoreError::BadRow { seq, why: why.to_owned() };
    let kind: String = row.get(2)?;
    let details: String = row.get(7)?;
    let hash32 = |i| -> Result<[u8; 32], StoreError> {
        let v: Vec<u8> = row.get(i).map_err(|_| bad("hash is not a blob"))?;
        v.try_into().map_err(|_| bad("hash is not 32 bytes"))
    };
    Ok(AuditEntry {
        seq,
        time: UtcMillis::from_unix_millis(row.get(1)?),
        kind: AuditKind::parse(&kind).ok_or_else(|| bad("unknown kind"))?,
        user: row.get(3)?,
        os_account: row.get(4)?,
        workstation: row.get(5)?,
        policy_hash: row.get(6)?,
        details: serde_json::from_str::<BTreeMap<String, String>>(&details)
            .map_err(|_| bad("details are not a JSON object of strings"))?,
        prev_hash: hash32(8)?,
        hash: hash32(9)?,
    })
}

fn corrupt_or(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            StoreError::Corrupt { path: path.to_owned(), why: e.to_string() }
        }
        _ => StoreError::Sqlite(e),
    }
}

/// Refuses anything but an empty file or a SQLite file, before SQLite touches it.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let mut file = fs::File::open(path).map_err(|source| StoreError::Io { path: path.to_owned(), source })?;
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(source) => return Err(StoreError::Io { path: path.to_owned(), source }),
        }
    }
    if read == 0 || (read == header.len() && &header == SQLITE_MAGIC) {
        Ok(())
    } else {
        Err(StoreError::Corrupt { path: path.to_owned(), why: "not a SQLite file".into() })
    }
}

/// The database's file with SQLite's `suffix` (`-wal`, `-shm`) after its name.
fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A database restored from a backup or copied by hand may have come with a looser
/// mode; the service's files are its own, so tighten it rather than refuse to start.
fn restrict_to_owner(db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let path = sidecar(db, suffix);
        match fs::metadata(&path) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
