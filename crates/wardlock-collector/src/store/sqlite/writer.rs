//! Audit intake into SQLite as a log-structured database does it: batches that arrive
//! while a group is being written share the next transaction (group commit); the
//! transaction is written to the WAL under SQLite's write lock, but the fsync that makes
//! it durable happens after the lock is released, while the next group is written; and
//! checkpoints (copying the WAL into the database) run on a thread of their own. No batch
//! is answered before the fsync that covers it has returned.
//!
//! Why that is as durable as `synchronous=FULL` for every answered batch: a commit in WAL
//! mode only appends frames to the WAL, and `fdatasync` of the WAL after the commit makes
//! those frames durable, which recovery replays. A checkpoint connection with
//! `synchronous=FULL` syncs the WAL before copying it and the database after, and the WAL
//! is only rewritten from its start once everything in it is in the (synced) database.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use wardlock_core::audit::AuditEntry;
use wardlock_core::clock::UtcMillis;

use super::super::intake::{self, ChainFinding, ChainState, IntakeTx, Received};
use super::super::{hash_of, ms, Ingest, StoreError};
use super::{entry_from_row, ENTRY_COLUMNS};

/// Most entries one group commit takes: bounds a transaction's size and a batch's wait.
const GROUP_ENTRIES: usize = 20_000;

/// WAL pages after which the writer checkpoints itself, should the checkpoint thread fall
/// behind (64 MiB of 4 KiB pages).
const WAL_SAFETY_PAGES: u32 = 16_384;

#[derive(Debug)]
pub(super) struct IntakeWriter {
    conn: Mutex<Connection>,
    queue: Mutex<Queue>,
    answered: Condvar,
    wal: PathBuf,
    checkpoints: Arc<Checkpoints>,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Batch>,
    writing: bool,
    answers: HashMap<u64, Result<Ingest, StoreError>>,
    next_id: u64,
}

#[derive(Debug)]
struct Batch {
    id: u64,
    workstation: String,
    entries: Vec<Received>,
    now: UtcMillis,
}

impl IntakeWriter {
    /// Opens the intake connection to a database already migrated.
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // NORMAL: a commit writes the WAL without syncing it; `flush` syncs it before any
        // answer. The page cache keeps a fleet's index pages in memory.
        conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL; PRAGMA cache_size = -262144; PRAGMA temp_store = MEMORY;
             PRAGMA wal_autocheckpoint = {WAL_SAFETY_PAGES}; PRAGMA journal_size_limit = 67108864;"
        ))?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(Self {
            conn: Mutex::new(conn),
            queue: Mutex::default(),
            answered: Condvar::new(),
            wal: wal.into(),
            checkpoints: Checkpoints::start(path)?,
        })
    }

    /// Stores one batch, in whatever group it lands in, and answers once it is durable.
    pub(super) fn ingest(
        &self,
        workstation: &str,
        entries: Vec<Received>,
        now: UtcMillis,
    ) -> Result<Ingest, StoreError> {
        let mut queue = self.queue();
        let id = queue.next_id;
        queue.next_id += 1;
        queue.waiting.push_back(Batch { id, workstation: workstation.to_owned(), entries, now });
        loop {
            if let Some(answer) = queue.answers.remove(&id) {
                return answer;
            }
            if queue.writing || queue.waiting.is_empty() {
                // Another thread writes, or flushes the group this batch is in.
                queue = self.answered.wait(queue).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Nobody writes: this thread writes what waits (its own batch, if still waiting).
            queue.writing = true;
            let group = take_group(&mut queue.waiting);
            drop(queue);
            let written = self.write_group(group);
            queue = self.queue();
            queue.writing = false;
            self.answered.notify_all();
            drop(queue);
            // The next group is written while this one goes to disk.
            let answers = self.flush(written);
            self.checkpoints.wake();
            queue = self.queue();
            queue.answers.extend(answers);
            self.answered.notify_all();
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the batches as one transaction. If anything in it fails, nothing of it is
    /// stored, and each batch is tried again alone, so one bad batch fails only itself.
    fn write_group(&self, mut group: Vec<Batch>) -> Vec<(u64, Result<Ingest, StoreError>)> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if group.len() > 1 {
            if let Ok(done) = write(&mut conn, &mut group) {
                return group.iter().map(|b| b.id).zip(done.into_iter().map(Ok)).collect();
            }
        }
        group
            .chunks_mut(1)
            .map(|one| (one[0].id, write(&mut conn, one).map(|mut done| done.remove(0))))
            .collect()
    }

    /// Makes the written groups durable: `fdatasync` of the WAL. If that fails, the batches
    /// are reported as failed, and the agents send them again (a no-op if they were kept).
    fn flush(
        &self,
        written: Vec<(u64, Result<Ingest, StoreError>)>,
    ) -> Vec<(u64, Result<Ingest, StoreError>)> {
        if written.iter().all(|(_, r)| r.is_err()) {
            return written;
        }
        match std::fs::File::open(&self.wal).and_then(|wal| wal.sync_data()) {
            Ok(()) => written,
            Err(e) => {
                let why = format!("{}: {e}", self.wal.display());
                written
                    .into_iter()
                    .map(|(id, r)| (id, r.and(Err(StoreError::NotDurable(why.clone())))))
                    .collect()
            }
        }
    }
}

#[cfg(test)]
impl IntakeWriter {
    /// Points the flush elsewhere: a test's way to make it fail.
    pub(super) fn flush_to(&mut self, wal: PathBuf) {
        self.wal = wal;
    }
}

impl Drop for IntakeWriter {
    fn drop(&mut self) {
        self.checkpoints.stop();
    }
}

/// The front of the queue, up to `GROUP_ENTRIES` entries (at least one batch).
fn take_group(waiting: &mut VecDeque<Batch>) -> Vec<Batch> {
    let mut group = Vec::new();
    let mut size = 0;
    while let Some(batch) = waiting.front() {
        if !group.is_empty() && size + batch.entries.len() > GROUP_ENTRIES {
            break;
        }
        size += batch.entries.len();
        group.extend(waiting.pop_front());
    }
    group
}

fn write(conn: &mut Connection, group: &mut [Batch]) -> Result<Vec<Ingest>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut done = Vec::with_capacity(group.len());
    for batch in group.iter_mut() {
        let mut rows = SqliteIntake { conn: &tx, workstation: &batch.workstation };
        done.push(intake::ingest(&mut rows, &mut batch.entries, batch.now)?);
    }
    tx.commit()?;
    Ok(done)
}

/// The checkpoint thread: after each group it copies what the WAL holds into the
/// database (PASSIVE: it never waits for, nor blocks, the writer).
#[derive(Debug)]
struct Checkpoints {
    due: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Checkpoints {
    fn start(path: &Path) -> Result<Arc<Self>, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // FULL: a checkpoint syncs the WAL before copying and the database after.
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        let checkpoints =
            Arc::new(Self { due: Mutex::new(false), wake: Condvar::new(), stop: AtomicBool::new(false) });
        let shared = checkpoints.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || shared.run(&conn))
            .map_err(|e| StoreError::Open { path: path.display().to_string(), why: e.to_string() })?;
        Ok(checkpoints)
    }

    fn run(&self, conn: &Connection) {
        let mut failing = false;
        loop {
            {
                let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
                while !*due && !self.stop.load(Ordering::Relaxed) {
                    due = self.wake.wait(due).unwrap_or_else(|p| p.into_inner());
                }
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                *due = false;
            }
            match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                Ok(()) => failing = false,
                // Said once per run of failures; the writer's own checkpoints still bound the WAL.
                Err(e) if !failing => {
                    failing = true;
                    eprintln!("wardlock-collector: checkpoint failed: {e}");
                }
                Err(_) => {}
            }
        }
    }

    fn wake(&self) {
        *self.due.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_one();
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        self.wake.notify_one();
    }
}

/// One workstation's rows in an open (IMMEDIATE, so already write-locked) transaction.
struct SqliteIntake<'t> {
    conn: &'t Connection,
    workstation: &'t str,
}

impl IntakeTx for SqliteIntake<'_> {
    fn chain_state(&mut self) -> Result<ChainState, StoreError> {
        Ok(self.conn.query_row(
            "SELECT contiguous_seq, contiguous_hash, max_seq FROM workstations WHERE id = ?1",
            [self.workstation],
            |r| {
                Ok(ChainState {
                    contiguous: r.get::<_, i64>(0)? as u64,
                    contiguous_hash: hash_of(r.get(1)?),
                    max_seq: r.get::<_, i64>(2)? as u64,
                })
            },
        )?)
    }

    fn insert_new(&mut self, entries: &[Received], now: UtcMillis) -> Result<BTreeSet<u64>, StoreError> {
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO audit (workstation, seq, time_ms, kind, user, os_account, policy_hash, details,
                                prev_hash, hash, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (workstation, seq) DO NOTHING",
        )?;
        let mut inserted = BTreeSet::new();
        for received in entries {
            let e = received.entry();
            let rows = insert.execute(params![
                self.workstation,
                e.seq as i64,
                ms(e.time),
                e.kind.as_str(),
                e.user,
                e.os_account,
                e.policy_hash,
                received.details_json(),
                &e.prev_hash[..],
                &e.hash[..],
                ms(now),
            ])?;
            if rows == 1 {
                inserted.insert(e.seq);
            }
        }
        Ok(inserted)
    }

    fn stored_hashes(&mut self, seqs: &[u64]) -> Result<HashMap<u64, Vec<u8>>, StoreError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT hash FROM audit WHERE workstation = ?1 AND seq = ?2")?;
        let mut hashes = HashMap::with_capacity(seqs.len());
        for &seq in seqs {
            if let Some(hash) =
                stmt.query_row(params![self.workstation, seq as i64], |r| r.get(0)).optional()?
            {
                hashes.insert(seq, hash);
            }
        }
        Ok(hashes)
    }

    fn keep_conflict(&mut self, entry: &AuditEntry, now: UtcMillis) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit_conflicts (workstation, seq, hash, record, received_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                self.workstation,
                entry.seq as i64,
                &entry.hash[..],
                crate::store::conflict_record(entry),
                ms(now)
            ])?;
        Ok(())
    }

    fn entries_after(&mut self, seq: u64) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM audit WHERE workstation = ?1 AND seq > ?2 ORDER BY seq"
        ))?;
        let entries = stmt
            .query_map(params![self.workstation, seq as i64], entry_from_row)?
            .map(|r| r.map(|(_, e, _)| e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(entries)
    }

    fn first_stored_after(&mut self, seq: u64) -> Result<Option<u64>, StoreError> {
        let next: Option<i64> = self.conn.query_row(
            "SELECT MIN(seq) FROM audit WHERE workstation = ?1 AND seq > ?2",
            params![self.workstation, seq as i64],
            |r| r.get(0),
        )?;
        Ok(next.map(|n| n as u64))
    }

    fn set_chain_state(&mut self, state: &ChainState, now: UtcMillis) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE workstations SET contiguous_seq = ?2, contiguous_hash = ?3, max_seq = ?4, last_seen_ms = ?5 WHERE id = ?1",
            params![
                self.workstation,
                state.contiguous as i64,
                &state.contiguous_hash[..],
                state.max_seq as i64,
                ms(now)
            ],
        )?;
        Ok(())
    }

    fn flag(&mut self, findings: &[ChainFinding], now: UtcMillis) -> Result<(), StoreError> {
        let mut flag = self.conn.prepare_cached(
            "INSERT INTO findings (workstation, seq, kind, detail, found_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
        )?;
        for (seq, kind, detail) in findings {
            flag.execute(params![self.workstation, *seq as i64, kind, detail, ms(now)])?;
        }
        Ok(())
    }
}
