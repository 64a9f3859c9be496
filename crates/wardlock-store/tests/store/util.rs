use std::path::{Path, PathBuf};
use std::process::Command;

use wardlock_core::clock::UtcMillis;
use wardlock_store::secrets::{DataKey, MemorySecretStore};
use wardlock_store::store::OpenOptions;
use wardlock_store::Store;

/// A workstation data directory in a temp dir, removed at the end of the test.
pub struct Workstation {
    pub dir: tempfile::TempDir,
    pub secrets: MemorySecretStore,
}

impl Workstation {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), secrets: MemorySecretStore::default() }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data").join("wardlock.db")
    }

    /// Opens the database as the service would at start-up; calling it again after
    /// dropping the previous store is a restart.
    pub fn open(&self) -> Store {
        open_store(&self.db_path())
    }

    pub fn key(&self, store: &Store) -> DataKey {
        DataKey::open_or_create(&self.secrets, store).unwrap()
    }
}

pub fn try_open(path: &Path) -> Result<Store, wardlock_store::StoreError> {
    Store::open(path, &OpenOptions { create: true, workstation_id: "ws-test".into() })
}

pub fn open_store(path: &Path) -> Store {
    try_open(path).unwrap()
}

pub fn now() -> UtcMillis {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    UtcMillis::from_unix_millis(since.as_millis() as i64)
}

/// Runs the `sqlite3` shell on a database, as someone editing it by hand would.
pub fn sqlite3(db: &Path, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 command is needed (apt-get install sqlite3; `make setup` does it)");
    assert!(out.status.success(), "sqlite3 failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// True when `haystack` contains `needle` anywhere.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every byte SQLite keeps for this database: the file, its WAL and shared memory.
pub fn all_db_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).unwrap();
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(more) = std::fs::read(PathBuf::from(p)) {
            bytes.extend(more);
        }
    }
    bytes
}
