//! The service watches the guard: a guard that vanishes or falls silent is audited and
//! the OS session is locked through logind — here a stand-in login1 on a private D-Bus.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use zbus::zvariant::OwnedObjectPath;

use crate::util::{Daemon, FAST_POLICY, PATIENCE};

const SESSION: &str = "/org/freedesktop/login1/session/c7";

/// A private bus with `org.freedesktop.login1` on it, recording every lock request.
struct FakeLogind {
    bus: Child,
    address: String,
    locks: mpsc::Receiver<String>,
    _runtime: tokio::runtime::Runtime,
    _connection: zbus::Connection,
}

struct Manager {
    locks: mpsc::Sender<String>,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Manager {
    #[zbus(name = "GetSessionByPID")]
    fn get_session_by_pid(&self, _pid: u32) -> OwnedObjectPath {
        OwnedObjectPath::try_from(SESSION).unwrap()
    }
    fn lock_sessions(&self) {
        self.locks.send("all".into()).unwrap();
    }
}

struct Session {
    locks: mpsc::Sender<String>,
}

#[zbus::interface(name = "org.freedesktop.login1.Session")]
impl Session {
    fn lock(&self) {
        self.locks.send(SESSION.into()).unwrap();
    }
}

impl FakeLogind {
    fn start(dir: &std::path::Path) -> Self {
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", dir.join("system_bus").display()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon is needed (apt-get install dbus; `make setup` does it)");
        let mut address = String::new();
        BufReader::new(bus.stdout.take().unwrap()).read_line(&mut address).unwrap();
        let address = address.trim().to_owned();
        let (tx, locks) = mpsc::channel();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let connection = runtime.block_on(async {
            zbus::connection::Builder::address(address.as_str())
                .unwrap()
                .name("org.freedesktop.login1")
                .unwrap()
                .serve_at("/org/freedesktop/login1", Manager { locks: tx.clone() })
                .unwrap()
                .serve_at(SESSION, Session { locks: tx })
                .unwrap()
                .build()
                .await
                .unwrap()
        });
        Self { bus, address, locks, _runtime: runtime, _connection: connection }
    }

    fn next_lock(&self) -> String {
        self.locks.recv_timeout(PATIENCE).expect("the OS session was never locked")
    }
}

impl Drop for FakeLogind {
    fn drop(&mut self) {
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

fn daemon_with_logind(policy: &str) -> (Daemon, FakeLogind) {
    let d = Daemon::new(policy);
    let logind = FakeLogind::start(d.dir.path());
    let mut d = d.env("DBUS_SYSTEM_BUS_ADDRESS", &logind.address);
    d.start();
    (d, logind)
}

fn last(d: &Daemon, kind: &str) -> wardlock_core::audit::AuditEntry {
    d.audit().into_iter().rev().find(|e| e.kind.as_str() == kind).unwrap_or_else(|| panic!("no {kind} entry"))
}

#[test]
fn a_guard_that_vanishes_is_audited_and_its_os_session_locked() {
    let (d, logind) = daemon_with_logind(FAST_POLICY);
    let guard = d.client("guard");
    assert_eq!(last(&d, "guard_started").details["client"], "test");
    drop(guard); // killed: no quit, no goodbye

    assert_eq!(logind.next_lock(), SESSION, "the guard's own session is locked");
    d.wait_for_log("lost");
    let lost = last(&d, "guard_lost");
    assert_eq!(lost.details["why"], "disconnected without an administrator's approval");
    assert_eq!(lost.details["escalation"], format!("os_lock: locked session {SESSION}"));
    assert_eq!(lost.details["alert"], "compliance");
}

#[test]
fn a_silent_guard_is_lost_after_its_heartbeat_timeout() {
    let (d, logind) = daemon_with_logind("[service]\nguard_heartbeat_timeout = \"3s\"\n");
    let mut guard = d.client("guard");
    // Heartbeats keep it alive past the timeout...
    for _ in 0..3 {
        assert_eq!(guard.request(json!({"type": "heartbeat"}))["type"], "ack");
        std::thread::sleep(Duration::from_millis(1200)); // the guard's own pacing, not synchronisation
    }
    // ...silence does not.
    let timeout = guard.read().expect("no timeout error");
    assert_eq!(timeout["code"], "timeout", "{timeout}");
    assert!(guard.closed());
    assert_eq!(logind.next_lock(), SESSION);
    d.wait_for_log("heartbeat missed");
    assert_eq!(last(&d, "guard_lost").details["why"], "heartbeat missed");
}

#[test]
fn only_an_administrator_lets_the_guard_quit_cleanly() {
    let (d, logind) = daemon_with_logind(FAST_POLICY);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.add_user("it.admin", "Ida Admin", "admin", Some("915372"), false);
    let mut guard = d.client("guard");
    let quit = |user: &str, pin: &str| json!({"type": "quit", "user": user, "pin": pin, "totp": null});

    let nurse = guard.request(quit("n.nurse", "730284"));
    assert_eq!(nurse["result"], "refused", "a nurse's right PIN is no administrator's: {nurse}");
    let admin = guard.request(quit("it.admin", "915372"));
    assert_eq!(admin, json!({"type": "quit", "result": "authorized"}));
    drop(guard);

    d.wait_for_log("stopped with it.admin's approval");
    assert_eq!(last(&d, "guard_stopped").details["by"], "it.admin");
    assert!(!d.kinds().contains(&"guard_lost".to_owned()));
    assert!(logind.locks.try_recv().is_err(), "an approved quit must not lock the session");
    let approved = last(&d, "admin_approved");
    assert_eq!((approved.user.as_deref(), approved.details["action"].as_str()), (Some("it.admin"), "quit"));
}

#[test]
fn a_lock_failure_reported_by_the_guard_escalates_to_the_os_lock() {
    let (d, logind) = daemon_with_logind(FAST_POLICY);
    let mut guard = d.client("guard");
    let ack = guard
        .request(json!({"type": "event", "event": {"kind": "lock_failed", "what": "keyboard grab refused"}}));
    assert_eq!(ack["type"], "ack");
    assert_eq!(logind.next_lock(), SESSION);
    let failures: Vec<_> =
        d.audit().into_iter().filter(|e| e.kind.as_str() == "lock_failed").map(|e| e.details).collect();
    assert_eq!(failures[0]["what"], "keyboard grab refused");
    assert_eq!(failures[1]["os_lock"], format!("locked session {SESSION}"));
}

#[test]
fn without_logind_the_failed_escalation_is_audited_as_an_alert() {
    let mut d = Daemon::new(FAST_POLICY).env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    d.start();
    drop(d.client("guard"));
    d.wait_for_log("lost");
    let lost = last(&d, "guard_lost");
    assert!(lost.details["escalation"].starts_with("os_lock failed: logind:"), "{:?}", lost.details);
    assert_eq!(lost.details["alert"], "compliance");
}

#[test]
fn policy_changes_are_pushed_and_a_bad_policy_file_keeps_the_last_good_one() {
    let mut d = Daemon::new(FAST_POLICY);
    d.start();
    let mut guard = d.client("guard");
    let before = guard.request(json!({"type": "policy"}))["policy"].clone();
    assert_eq!(before["idle_timeout_secs"], 300);

    std::fs::write(d.policy_path(), "[lock]\nidle_timeout = \"10m\"\nbanner = \"Ward 4\"\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let pushed = guard.read().unwrap();
    assert_eq!(pushed["type"], "policy_changed");
    assert_eq!(
        (pushed["policy"]["idle_timeout_secs"].as_u64(), pushed["policy"]["banner"].as_str()),
        (Some(600), Some("Ward 4"))
    );
    let good_hash = pushed["policy"]["hash"].clone();

    std::fs::write(d.policy_path(), "[lock]\nidle_timeout = \"5s\"\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_for_log("unchanged or refused");
    let refused = last(&d, "policy_refused");
    assert!(refused.details["why"].contains("lock.idle_timeout"), "{:?}", refused.details);
    assert_eq!(guard.request(json!({"type": "status"}))["policy_hash"], good_hash);

    // Restarted with the bad file still there, it keeps the last good policy too.
    d.restart();
    let mut guard = d.client("guard");
    assert_eq!(guard.request(json!({"type": "policy"}))["policy"]["idle_timeout_secs"], 600);
}

#[test]
fn start_and_stop_are_audited_and_the_socket_is_removed() {
    let mut d = Daemon::new(FAST_POLICY);
    d.start();
    assert!(d.socket().exists());
    d.stop();
    assert!(!d.socket().exists());
    let kinds = d.kinds();
    assert_eq!(kinds.first().map(String::as_str), Some("policy_applied"));
    assert!(kinds.ends_with(&["service_started".to_owned(), "service_stopped".to_owned()]), "{kinds:?}");
    d.open_store().verify_audit().unwrap();
}
