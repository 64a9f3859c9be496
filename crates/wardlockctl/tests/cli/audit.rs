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
