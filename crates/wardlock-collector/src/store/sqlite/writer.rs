//! Audit intake into SQLite as a log-structured database does it, on three threads of
//! its own: the writer takes every batch waiting and writes them as one transaction to
//! the WAL (group commit); the flush thread makes what was written durable with one
//! `fdatasync` of the WAL while the writer goes on with the next group, and only then
//! answers; the checkpoint thread copies the WAL into the database. No batch is answered
//! before the fsync that covers it has returned.
//!
//! Why that is as durable as `synchronous=FULL` for every answered batch: a commit in WAL
//! mode only appends frames to the WAL, and `fdatasync` of the WAL after the commit makes
//! those frames durable, which recovery replays. A checkpoint connection with
//! `synchronous=FULL` syncs the WAL before copying it and the database after, and the WAL
//! is only rewritten from its start once everything in it is in the (synced) database.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use rusqlite::{Connection, TransactionBehavior};

use wardlock_core::clock::UtcMillis;

use super::super::intake::{self, Received, SqlIntake};
use super::super::{Ingest, StoreError};
use super::SqliteSql;

/// Most entries one group commit takes: bounds a transaction's size and a batch's wait.
const GROUP_ENTRIES: usize = 20_000;

/// WAL pages after which the writer checkpoints itself, should the checkpoint thread fall
/// behind (64 MiB of 4 KiB pages).
const WAL_SAFETY_PAGES: u32 = 16_384;

/// The writer's side of intake: batches go in, each comes back answered once durable.
#[derive(Debug)]
pub(super) struct IntakeWriter {
    batches: mpsc::Sender<Batch>,
    /// The WAL's path as the flush thread syncs it (a test changes it).
    #[cfg(test)]
    wal: Arc<Mutex<PathBuf>>,
    checkpoints: Arc<Checkpoints>,
}

type Answer = Result<Ingest, StoreError>;

#[derive(Debug)]
struct Batch {
    workstation: String,
    entries: Vec<Received>,
    now: UtcMillis,
    answer: mpsc::SyncSender<Answer>,
}

/// A group written to the WAL, not yet synced: each batch with its answer. The batches
/// go along so that they are freed on the flush thread, not the writer.
type Written = Vec<(Batch, Answer)>;

impl IntakeWriter {
    /// Opens the intake connection to a database already migrated, and starts the writer,
    /// flush and checkpoint threads.
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // NORMAL: a commit writes the WAL without syncing it; the flush thread syncs it
        // before any answer. The page cache keeps a fleet's index pages in memory.
        conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL; PRAGMA cache_size = -262144; PRAGMA temp_store = MEMORY;
             PRAGMA wal_autocheckpoint = {WAL_SAFETY_PAGES}; PRAGMA journal_size_limit = 67108864;"
        ))?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = Arc::new(Mutex::new(PathBuf::from(wal)));
        let checkpoints = Checkpoints::start(path)?;
        let spawn_error =
            |e: std::io::Error| StoreError::Open { path: path.display().to_string(), why: e.to_string() };
        let (batches, incoming) = mpsc::channel();
        let (written, to_flush) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-intake".into())
            .spawn(move || {
                let _fatal = StopOnPanic("writer");
                write_groups(conn, &incoming, &written);
            })
            .map_err(spawn_error)?;
        let (flush_wal, flush_checkpoints) = (Arc::clone(&wal), checkpoints.clone());
        std::thread::Builder::new()
            .name("sqlite-flush".into())
            .spawn(move || {
                let _fatal = StopOnPanic("flush");
                flush_groups(&to_flush, &flush_wal, &flush_checkpoints);
            })
            .map_err(spawn_error)?;
        Ok(Self {
            batches,
            #[cfg(test)]
            wal,
            checkpoints,
        })
    }

    /// Stores one batch, in whatever group it lands in, and answers once it is durable.
    pub(super) fn ingest(&self, workstation: &str, entries: Vec<Received>, now: UtcMillis) -> Answer {
        let (answer, answered) = mpsc::sync_channel(1);
        let stopped = || StoreError::NotDurable("the intake writer has stopped".into());
        self.batches
            .send(Batch { workstation: workstation.to_owned(), entries, now, answer })
            .map_err(|_| stopped())?;
        answered.recv().map_err(|_| stopped())?
    }
}

#[cfg(test)]
impl IntakeWriter {
    /// Points the flush elsewhere: a test's way to make it fail.
    pub(super) fn flush_to(&self, wal: PathBuf) {
        *self.wal.lock().unwrap_or_else(|p| p.into_inner()) = wal;
    }
}

impl Drop for IntakeWriter {
    fn drop(&mut self) {
        // The writer and flush threads end when their channels close.
        self.checkpoints.stop();
    }
}

/// Without its writer or flush thread the collector would refuse every batch for good:
/// a panic there ends the process instead, and the service manager (`Restart=always`)
/// starts a whole one. The agents keep what was not acknowledged and send it again.
struct StopOnPanic(&'static str);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                event = "intake_thread_failed",
                thread = self.0,
                "the SQLite intake {} thread failed; stopping so that it is restarted",
                self.0
            );
            std::process::abort();
        }
    }
}

/// The writer thread: takes what waits (up to `GROUP_ENTRIES` entries), writes it as one
/// transaction and hands it to the flush thread, while the next batches arrive.
fn write_groups(mut conn: Connection, incoming: &mpsc::Receiver<Batch>, written: &mpsc::Sender<Written>) {
    while let Ok(first) = incoming.recv() {
        let mut size = first.entries.len();
        let mut group = vec![first];
        while size < GROUP_ENTRIES {
            match incoming.try_recv() {
                Ok(batch) => {
                    size += batch.entries.len();
                    group.push(batch);
                }
                Err(_) => break,
            }
        }
        if written.send(write_group(&mut conn, group)).is_err() {
            return;
        }
    }
}

/// Writes the batches as one transaction. If anything in it fails, nothing of it is
/// stored, and each batch is tried again alone, so one bad batch fails only itself.
fn write_group(conn: &mut Connection, mut group: Vec<Batch>) -> Written {
    if group.len() > 1 {
        if let Ok(done) = write(conn, &mut group) {
            return group.into_iter().zip(done.into_iter().map(Ok)).collect();
        }
    }
    group
        .into_iter()
        .map(|mut one| {
            let answer = write(conn, std::slice::from_mut(&mut one)).map(|mut done| done.remove(0));
            (one, answer)
        })
        .collect()
}

/// The flush thread: one `fdatasync` of the WAL for every group written since the last,
/// then the answers. If the sync fails, the batches are reported as failed, and the agents
/// send them again (a no-op where they were kept).
fn flush_groups(to_flush: &mpsc::Receiver<Written>, wal: &Mutex<PathBuf>, checkpoints: &Checkpoints) {
    while let Ok(first) = to_flush.recv() {
        let mut groups = vec![first];
        groups.extend(to_flush.try_iter());
        let wal = wal.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let synced = std::fs::File::open(&wal)
            .and_then(|file| file.sync_data())
            .map_err(|e| format!("{}: {e}", wal.display()));
        for (batch, result) in groups.into_iter().flatten() {
            let result = match &synced {
                Ok(()) => result,
                Err(why) => result.and(Err(StoreError::NotDurable(why.clone()))),
            };
            // A caller that gave up waiting is no reason to stop.
            let _ = batch.answer.send(result);
        }
        checkpoints.wake();
    }
}

fn write(conn: &mut Connection, group: &mut [Batch]) -> Result<Vec<Ingest>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut done = Vec::with_capacity(group.len());
    for batch in group.iter_mut() {
        let mut rows = SqlIntake { sql: &mut SqliteSql(&tx), workstation: &batch.workstation };
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
                    tracing::warn!(event = "checkpoint_failed", error = %e, "checkpoint failed");
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
