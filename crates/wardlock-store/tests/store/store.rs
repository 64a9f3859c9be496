use std::os::unix::fs::PermissionsExt;

use wardlock_core::audit::{AuditDraft, AuditKind, ChainError};
use wardlock_store::store::{OpenOptions, StoreError, VerifyError};
use wardlock_store::Store;

use crate::util::{now, open_store, sqlite3, try_open, Workstation};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn append_n(store: &mut Store, n: usize) {
    for i in 0..n {
        store
            .append(
                AuditDraft::new(now(), AuditKind::Locked).user(format!("user{i}")).detail("reason", "idle"),
            )
            .unwrap();
    }
}

#[test]
fn new_database_and_wal_are_owner_only() {
    let ws = Workstation::new();
    let mut store = ws.open();
    append_n(&mut store, 3);
    let db = ws.db_path();
    assert_eq!(mode(db.parent().unwrap()), 0o700);
    assert_eq!(mode(&db), 0o600);
    for suffix in ["-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        assert!(path.exists(), "{suffix} missing: WAL mode is expected");
        assert_eq!(mode(&path), 0o600, "{suffix}");
    }
}

#[test]
fn a_database_copied_in_with_a_loose_mode_is_tightened_on_open() {
    let ws = Workstation::new();
    let mut store = ws.open();
    append_n(&mut store, 2);
    drop(store);
    let db = ws.db_path();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = ws.open();
    assert_eq!(mode(&db), 0o600);
    assert_eq!(store.verify_audit().unwrap().entries, 2);
}

#[test]
fn appended_entries_survive_reopen_and_verify() {
    let ws = Workstation::new();
    {
        let mut store = ws.open();
        append_n(&mut store, 25);
    }
    let store = ws.open();
    assert_eq!(store.last_seq().unwrap(), 25);
    let v = store.verify_audit().unwrap();
    assert_eq!(v.entries, 25);
    assert_eq!(store.workstation_id(), "ws-test");
}

#[test]
fn our_own_connection_cannot_edit_or_delete_audit_rows() {
    let ws = Workstation::new();
    let mut store = ws.open();
    append_n(&mut store, 2);
    drop(store);
    let conn = rusqlite::Connection::open(ws.db_path()).unwrap();
    let err = conn.execute("UPDATE audit SET user = 'x' WHERE seq = 1", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn.execute("DELETE FROM audit WHERE seq = 2", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

fn tampered(sql: &str) -> ChainError {
    let ws = Workstation::new();
    let mut store = ws.open();
    append_n(&mut store, 10);
    drop(store);
    // Someone with the file drops our guard triggers and edits the table.
    sqlite3(&ws.db_path(), &format!("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; {sql}"));
    match ws.open().verify_audit() {
        Err(VerifyError::Chain(e)) => e,
        other => panic!("tampering not detected: {other:?}"),
    }
}

#[test]
fn editing_a_row_is_detected_at_its_seq() {
    assert_eq!(tampered("UPDATE audit SET user = 'mallory' WHERE seq = 4").seq(), 4);
    assert_eq!(tampered("UPDATE audit SET details = '{\"reason\":\"manual\"}' WHERE seq = 7").seq(), 7);
    assert_eq!(tampered("UPDATE audit SET time_ms = time_ms + 1 WHERE seq = 2").seq(), 2);
}

#[test]
fn deleting_a_row_is_detected_at_its_seq() {
    assert_eq!(tampered("DELETE FROM audit WHERE seq = 6"), ChainError::Missing { expected: 6, found: 7 });
}

#[test]
fn renumbering_to_hide_a_deletion_is_detected() {
    let e = tampered("DELETE FROM audit WHERE seq = 6; UPDATE audit SET seq = seq - 1 WHERE seq > 6;");
    assert_eq!(e.seq(), 6);
}

#[test]
fn reordering_rows_is_detected() {
    // Swap the contents of seq 3 and 4 by swapping their seq numbers.
    let e = tampered("UPDATE audit SET seq = -3 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = -3;");
    assert_eq!(e.seq(), 3);
}

#[test]
fn a_row_that_cannot_be_decoded_counts_as_tampering() {
    assert_eq!(tampered("UPDATE audit SET kind = 'nothing_happened' WHERE seq = 5").seq(), 5);
}

#[test]
fn corrupt_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wardlock.db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = try_open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn damaged_sqlite_file_is_refused_and_left_untouched() {
    let ws = Workstation::new();
    let mut store = ws.open();
    append_n(&mut store, 200);
    drop(store);
    // Checkpointed on close; now scribble over the middle of the file, past the header.
    let path = ws.db_path();
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for b in &mut bytes[4096..len.min(4096 * 6)] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = try_open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn foreign_sqlite_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    sqlite3(&path, "CREATE TABLE patients (id INTEGER); INSERT INTO patients VALUES (1);");
    let before = std::fs::read(&path).unwrap();
    let err = try_open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn database_from_a_newer_version_is_refused() {
    let ws = Workstation::new();
    drop(ws.open());
    sqlite3(&ws.db_path(), "UPDATE schema_version SET version = 99;");
    let err = try_open(&ws.db_path()).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn missing_database_is_not_created_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.db");
    let err = Store::open(&path, &OpenOptions { create: false, workstation_id: "w".into() }).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));
    assert!(!path.exists());
    let _ = open_store(&path);
    assert!(path.exists());
}
