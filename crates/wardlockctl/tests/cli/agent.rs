//! `wardlockctl agent` against a real `wardlockd` whose database the CLI set up.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::util::{s, Ctl};

/// `wardlockd` sits beside `wardlockctl` once the workspace is built (`cargo test
/// --workspace` builds every binary before running any test).
fn wardlockd() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_wardlockctl")).with_file_name("wardlockd");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p wardlock-agent` (or `make test`)",
        path.display()
    );
    path
}

/// `wardlockd --dev` on the CLI's directory and key store; returns once it listens.
fn start_wardlockd(ctl: &Ctl) -> std::process::Child {
    let mut daemon = Command::new(wardlockd())
        .arg("--dev")
        .arg(ctl.dir.path())
        .args(["--key-store", &format!("file:{}", ctl.path("keys").display())])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(daemon.stderr.take().unwrap()).lines();
    assert!(log.next().unwrap().unwrap().contains("listening on"));
    // Read the rest as it comes: a closed pipe would fail the service's next log line.
    std::thread::spawn(move || log.for_each(drop));
    daemon
}

#[test]
fn status_and_unlock_through_the_running_service() {
    let ctl = Ctl::new();
    // Checking credentials from a tool is off unless the machine policy turns it on.
    std::fs::write(ctl.path("policy.toml"), "[lockout]\nthrottle = \"0s\"\n[service]\ntool_unlock = true\n")
        .unwrap();
    // The same layout `wardlockd --dev DIR` uses, so both work on one database and key.
    std::fs::create_dir_all(ctl.path("data")).unwrap();
    // The CLI never creates the workstation database; the service does.
    ctl.run(&["user", "add", "n.nurse", "--name", "Nora Nurse", "--role", "nurse", "--pin-stdin"]).failed();
    let add = |c: &Ctl| {
        c.run_with_stdin(
            &["user", "add", "n.nurse", "--name", "Nora Nurse", "--role", "nurse", "--pin-stdin"],
            "730284\n",
        )
    };

    let mut daemon = start_wardlockd(&ctl);
    add(&ctl).ok();

    let socket = ctl.path("agent.sock");
    let status = ctl.run(&["agent", "--socket", s(&socket), "status"]).ok();
    assert!(status.stdout.contains("guards connected  0"), "{}", status.stdout);
    let refused = ctl
        .run_with_stdin(&["agent", "--socket", s(&socket), "unlock", "n.nurse", "--pin-stdin"], "000000\n")
        .failed();
    assert!(refused.stdout.contains("refused: 4 attempt(s) left"), "{}", refused.stdout);
    let granted = ctl
        .run_with_stdin(&["agent", "--socket", s(&socket), "unlock", "n.nurse", "--pin-stdin"], "730284\n")
        .ok();
    assert!(granted.stdout.contains("granted: Nora Nurse (n.nurse)"), "{}", granted.stdout);
    assert!(granted.stdout.contains("failed attempts since then: 1"), "{}", granted.stdout);

    daemon.kill().unwrap();
    daemon.wait().unwrap();

    // Without `tool_unlock` the service says no, and says how to change that.
    std::fs::write(ctl.path("policy.toml"), "[lockout]\nthrottle = \"0s\"\n").unwrap();
    let mut daemon = start_wardlockd(&ctl);
    let off = ctl
        .run_with_stdin(&["agent", "--socket", s(&socket), "unlock", "n.nurse", "--pin-stdin"], "730284\n")
        .failed();
    assert!(off.stderr.contains("service.tool_unlock = true"), "{}", off.stderr);
    assert!(!off.stdout.contains("granted"), "{}", off.stdout);
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    let down = ctl.run(&["agent", "--socket", s(&socket), "status"]);
    assert_eq!(down.code, 1);
    assert!(down.stderr.contains("is it running?"), "{}", down.stderr);
}
