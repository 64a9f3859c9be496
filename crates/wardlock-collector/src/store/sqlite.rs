//! The embedded backend's connection code: one SQLite file in WAL mode. Audit intake has
//! its own writer (`writer.rs`: group commit, the log flushed outside the write lock,
//! checkpoints on a thread of their own); everything else commits with
//! `synchronous=FULL`, one write transaction at a time (`BEGIN IMMEDIATE`).

mod writer;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use wardlock_core::clock::UtcMillis;

use super::intake::Received;
use super::sql::{Row, Sql, Value};
use super::{Ingest, StoreError};

/// Each migration runs once, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/01.sql"),
    include_str!("migrations/sqlite/02.sql"),
    include_str!("migrations/sqlite/03.sql"),
    include_str!("migrations/sqlite/04.sql"),
    include_str!("migrations/sqlite/05.sql"),
    include_str!("migrations/sqlite/06.sql"),
    include_str!("migrations/sqlite/07.sql"),
    include_str!("migrations/sqlite/08.sql"),
    include_str!("migrations/sqlite/09.sql"),
    include_str!("migrations/sqlite/10.sql"),
];

#[derive(Debug)]
pub struct Sqlite {
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

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
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
        Ok(Sqlite { conn: Mutex::new(conn), writer })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn read<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>) -> Result<T, StoreError> {
        f(&mut SqliteSql(&self.conn()))
    }

    /// One write transaction, `IMMEDIATE` so that it holds the write lock from its first
    /// read: what it read cannot change before it commits.
    pub fn write<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done = f(&mut SqliteSql(&tx))?;
        tx.commit()?;
        Ok(done)
    }

    pub fn ingest(
        &self,
        workstation: &str,
        entries: Vec<Received>,
        now: UtcMillis,
    ) -> Result<Ingest, StoreError> {
        self.writer.ingest(workstation, entries, now)
    }
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

/// A connection (or the transaction open on it) as the SQL layer speaks to it.
pub(super) struct SqliteSql<'c>(pub &'c Connection);

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(n) => ValueRef::Integer(*n),
            Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl SqliteSql<'_> {
    /// A cached statement with `args` bound, each by its number.
    fn bound(&self, sql: &str, args: &[Value<'_>]) -> Result<rusqlite::CachedStatement<'_>, StoreError> {
        let mut stmt = self.0.prepare_cached(&numbered(sql))?;
        let count = stmt.parameter_count();
        if count != args.len() {
            return Err(StoreError::Statement(format!(
                "{count} placeholders, {} arguments: {sql}",
                args.len()
            )));
        }
        for (index, arg) in (1..=count).zip(args) {
            stmt.raw_bind_parameter(index, arg)?;
        }
        Ok(stmt)
    }
}

/// The statement as SQLite numbers parameters: `$3` becomes `?3`, which is parameter 3.
/// (SQLite reads `$3` as a parameter *named* "$3", numbered by where it first appears.)
fn numbered(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('$') {
        return sql.into();
    }
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql.chars().peekable();
    while let Some(c) = rest.next() {
        let placeholder = c == '$' && rest.peek().is_some_and(char::is_ascii_digit);
        out.push(if placeholder { '?' } else { c });
    }
    out.into()
}

fn value_of(v: ValueRef<'_>) -> Value<'static> {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        // No column holds a float; one that does was not written by the collector.
        ValueRef::Real(f) => Value::Text(f.to_string().into()),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned().into()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec().into()),
    }
}

impl Sql for SqliteSql<'_> {
    fn execute(&mut self, sql: &str, args: &[Value<'_>]) -> Result<u64, StoreError> {
        Ok(self.bound(sql, args)?.raw_execute()? as u64)
    }

    fn query(&mut self, sql: &str, args: &[Value<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.bound(sql, args)?;
        let columns = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(Row((0..columns).map(|i| row.get_ref(i).map(value_of)).collect::<Result<_, _>>()?));
        }
        Ok(out)
    }

    fn for_update(&self) -> &'static str {
        ""
    }

    fn serialise(&mut self, _key: &str) -> Result<(), StoreError> {
        // Write transactions are IMMEDIATE: they already exclude each other.
        Ok(())
    }

    fn rows_per_insert(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use wardlock_core::audit::AuditDraft;

    use wardlock_core::audit::{AuditEntry, AuditKind};

    use super::*;
    use crate::store::{
        CollectorStore, EnrollAttempt, EnrollResult, NewEnrollSecret, NewWorkstation, SqlStore,
    };

    fn at(ms: i64) -> UtcMillis {
        UtcMillis::from_unix_millis(ms)
    }

    fn enrolled(store: &SqlStore, id: &str) {
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
    fn placeholders_are_bound_by_their_number_whatever_order_they_appear_in() {
        use crate::store::sql::{args, Sql};
        assert_eq!(
            numbered("a = $12 AND b = $1 AND c = '$x' AND d = $"),
            "a = ?12 AND b = ?1 AND c = '$x' AND d = $"
        );
        let conn = Connection::open_in_memory().unwrap();
        let rows = SqliteSql(&conn).query("SELECT $2, $1, $2", args![1i64, "two"]).unwrap();
        assert_eq!(rows[0].text(0).unwrap(), "two");
        assert_eq!(rows[0].int(1).unwrap(), 1);
        assert!(matches!(
            SqliteSql(&conn).query("SELECT $1", args![1i64, 2i64]),
            Err(StoreError::Statement(_))
        ));
    }

    #[test]
    fn a_kept_conflict_edited_into_nonsense_stays_on_its_page_flagged_as_tampering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        let store = SqlStore::open_sqlite(&path).expect("open");
        enrolled(&store, "ws-a");
        store.ingest("ws-a", log("ws-a", 2), at(9_000)).expect("stored");
        let mut other = log("ws-a", 2);
        let draft = wardlock_core::audit::AuditDraft::new(at(5), AuditKind::UnlockSucceeded).user("x");
        other[1] = Received::new(AuditEntry::chain(draft, "ws-a", Some((1, other[0].entry().hash))));
        assert_eq!(store.ingest("ws-a", other, at(9_001)).expect("kept").ack.conflicts, vec![2]);
        Connection::open(&path)
            .expect("open by hand")
            .execute("UPDATE audit_conflicts SET record = 'not json'", [])
            .expect("edited");
        let page = store.conflicts(None, None, 10).expect("read");
        assert_eq!(page.len(), 1, "the edited conflict is still listed");
        assert_eq!(page[0].received.kind, AuditKind::TamperDetected);
        assert_eq!(page[0].received.user, None, "it claims nothing of what the entry was");
        assert_eq!(page[0].stored.user.as_deref(), Some("n.nurse"));
    }

    #[test]
    fn batches_arriving_together_are_all_stored_and_a_failing_one_fails_only_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqlStore::open_sqlite(&dir.path().join("c.db")).expect("open"));
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
        let store = SqlStore::open_sqlite(&dir.path().join("c.db")).expect("open");
        enrolled(&store, "ws-a");
        store.sqlite().expect("sqlite").writer.flush_to(dir.path().join("no-such-dir/c.db-wal"));
        let refused = store.ingest("ws-a", log("ws-a", 5), at(9_000));
        assert!(
            matches!(&refused, Err(StoreError::NotDurable(why)) if why.contains("no-such-dir")),
            "{refused:?}"
        );
        store.sqlite().expect("sqlite").writer.flush_to(dir.path().join("c.db-wal"));
        let again = store.ingest("ws-a", log("ws-a", 5), at(9_001)).expect("stored");
        assert_eq!(again.ack.highest_contiguous_seq, 5);
        assert_eq!(again.findings, 0, "the same entries again are no conflict");
        assert_eq!(store.entry_count().expect("count"), 5);
    }
}
