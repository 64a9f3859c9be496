use std::process::Command;

use crate::util::{s, Ctl};

fn populated() -> Ctl {
    let ctl = Ctl::new();
    for (i, id) in ["a.one", "b.two", "c.three", "d.four", "e.five"].iter().enumerate() {
        ctl.run_with_stdin(
            &["user", "add", id, "--name", "Someone", "--role", "nurse", "--pin-stdin"],
            &format!("73028{i}\n"),
        )
        .ok();
        ctl.run(&["user", "disable", id]).ok();
    }
    ctl
}

fn sqlite3(ctl: &Ctl, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(ctl.db())
        .arg(format!("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; {sql}"))
        .output()
        .expect("sqlite3 is needed (apt-get install sqlite3; `make setup` does it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn intact_log_verifies() {
    let ctl = populated();
    let run = ctl.run(&["audit", "verify", "--db", s(&ctl.db())]).ok();
    assert!(run.stdout.contains("intact: 10 entries"), "{}", run.stdout);
}

#[test]
fn edited_deleted_or_reordered_row_fails_verify_naming_the_seq() {
    let cases = [
        ("edit", "UPDATE audit SET user = 'mallory' WHERE seq = 4", "first bad seq: 4"),
        ("delete", "DELETE FROM audit WHERE seq = 6", "first bad seq: 6"),
        (
            "reorder",
            "UPDATE audit SET seq = -3 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 8; UPDATE audit SET seq = 8 WHERE seq = -3;",
            "first bad seq: 3",
        ),
    ];
    for (what, sql, expected) in cases {
        let ctl = populated();
        sqlite3(&ctl, sql);
        let run = ctl.run(&["audit", "verify"]).failed();
        assert!(run.stderr.contains(expected), "{what}: {}", run.stderr);
        assert!(run.stderr.contains("TAMPERED"), "{what}: {}", run.stderr);
    }
}

#[test]
fn export_as_json_and_csv() {
    let ctl = populated();
    let json = ctl.run(&["audit", "export", "--format", "json"]).ok();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(entries.len(), 10);
    assert_eq!(entries[0]["seq"], 1);
    assert_eq!(entries[0]["kind"], "user_added");
    assert_eq!(entries[9]["hash"].as_str().unwrap().len(), 64);

    let out = ctl.path("audit.csv");
    ctl.run(&["audit", "export", "--format", "csv", "--out", s(&out)]).ok();
    let mut reader = csv::Reader::from_path(&out).unwrap();
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "seq");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 10);
    assert_eq!(&rows[1][2], "user_disabled");
    assert_eq!(&rows[1][9], entries[1]["hash"].as_str().unwrap(), "CSV and JSON agree");
}

#[test]
fn export_past_the_last_entry_is_an_empty_list() {
    let ctl = Ctl::new();
    ctl.run_with_stdin(
        &["user", "add", "a.one", "--name", "A", "--role", "nurse", "--pin-stdin"],
        "730281\n",
    )
    .ok();
    let json = ctl.run(&["audit", "export", "--format", "json", "--from-seq", "2"]).ok();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    assert!(entries.is_empty());
}

fn query(db: &std::path::Path, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Before a purge: entries the collector never acknowledged are copied out, audit log
/// only, and the copy verifies as the whole chain; the clearance note names it.
#[test]
fn preserve_copies_an_unsynced_chain_out_verified_and_without_secrets() {
    let ctl = populated();
    let backups = ctl.path("backups");
    let run = ctl.run(&["audit", "preserve", "--data-dir", s(&ctl.path("data")), "--into", s(&backups)]).ok();
    let copies: Vec<_> = std::fs::read_dir(&backups).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = &copies[0];
    assert!(run.stdout.contains("10 of 10 entries had not reached the collector"), "{}", run.stdout);
    assert!(run.stdout.contains(s(copy)) && run.stdout.contains("verified: 10 entries"), "{}", run.stdout);
    let verified = ctl.run(&["audit", "verify", "--db", s(copy)]).ok();
    assert!(verified.stdout.contains("intact: 10 entries"), "{}", verified.stdout);
    // PIN hashes, sealed or not, and the node key stay behind.
    assert_eq!(query(copy, "SELECT count(*) FROM users"), "0");
    assert_eq!(query(copy, "SELECT group_concat(key) FROM meta"), "workstation_id");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(copy).unwrap().permissions().mode() & 0o077, 0, "readable by others");
    let clearance = std::fs::read_to_string(ctl.path("data/purge-clearance")).unwrap();
    assert!(clearance.contains(s(copy)), "{clearance}");
}

#[test]
fn preserve_copies_nothing_once_the_collector_holds_every_entry() {
    let ctl = populated();
    sqlite3(&ctl, "UPDATE sync_state SET acked_seq = (SELECT max(seq) FROM audit)");
    let backups = ctl.path("backups");
    let run = ctl.run(&["audit", "preserve", "--data-dir", s(&ctl.path("data")), "--into", s(&backups)]).ok();
    assert!(run.stdout.contains("all 10 entries reached the collector"), "{}", run.stdout);
    assert!(!backups.exists(), "a backup of entries the collector holds");
    assert!(ctl.path("data/purge-clearance").exists());
    // A database that does not verify is never cleared without a copy.
    query(&ctl.db(), "UPDATE audit SET kind = 'heartbeat' WHERE seq = 3");
    let run = ctl.run(&["audit", "preserve", "--data-dir", s(&ctl.path("data")), "--into", s(&backups)]).ok();
    assert!(run.stdout.contains("does NOT verify"), "{}", run.stdout);
    assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 1);
}

#[test]
fn preserve_keeps_its_copy_in_the_backup_folder_whatever_the_workstation_id_says() {
    let ctl = populated();
    query(&ctl.db(), "UPDATE meta SET value = '../../escaped/x' WHERE key = 'workstation_id'");
    let backups = ctl.path("backups");
    ctl.run(&["audit", "preserve", "--data-dir", s(&ctl.path("data")), "--into", s(&backups)]).ok();
    let copies: Vec<_> = std::fs::read_dir(&backups).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(copies[0].to_string_lossy().starts_with("_.._escaped_x-wardlock.db-"), "{copies:?}");
    assert!(!ctl.path("escaped").exists());
}
