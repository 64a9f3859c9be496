//! A process killed with SIGKILL in the middle of a burst of audit writes leaves a
//! database that opens and verifies, holding every entry it acknowledged.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use wardlock_core::audit::{AuditDraft, AuditKind};

use crate::util::{now, open_store};

/// The writer, run in a child process by the test below: appends entries and prints
/// each seq only after `append` returned (the acknowledgement).
#[test]
fn burst_writer_child() {
    let Some(db) = std::env::var_os("WARDLOCK_TEST_BURST_DB") else {
        return;
    };
    let mut store = open_store(std::path::Path::new(&db));
    let mut out = std::io::stdout().lock();
    for i in 0..200_000u32 {
        let entry = store.append(AuditDraft::new(now(), AuditKind::Heartbeat).detail("i", i)).unwrap();
        writeln!(out, "acked {}", entry.seq).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_mid_burst_keeps_every_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wardlock.db");
    let exe = std::env::current_exe().unwrap();
    let mut highest_acked = 0u64;
    for round in 0..3u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash::burst_writer_child", "--nocapture", "--test-threads", "1"])
            .env("WARDLOCK_TEST_BURST_DB", &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = 150 + round * 37;
        let mut acked_this_round = 0;
        while let Some(Ok(line)) = lines.next() {
            if let Some(seq) = line.strip_prefix("acked ") {
                highest_acked = highest_acked.max(seq.trim().parse().unwrap());
                acked_this_round += 1;
                if acked_this_round == kill_after {
                    child.kill().unwrap(); // SIGKILL
                }
            }
        }
        child.wait().unwrap();
        assert!(acked_this_round >= kill_after, "writer stopped early in round {round}");

        let store = open_store(&db);
        let verified = store.verify_audit().expect("the log must verify after a crash");
        assert!(
            verified.head.0 >= highest_acked,
            "round {round}: acknowledged entry {highest_acked} lost, log ends at {}",
            verified.head.0
        );
        highest_acked = verified.head.0;
    }
}
