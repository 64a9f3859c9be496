//! The service watches the guard: a session that no trustworthy guard holds is escalated
//! (lock requested, a confirmation awaited, then the session ended), every step audited.
//! logind here is a stand-in on a private D-Bus whose "session" is a process group the
//! test started: `Terminate` really ends it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use zbus::zvariant::OwnedObjectPath;

use crate::util::{Daemon, FAST_POLICY, PATIENCE};

const SESSION: &str = "/org/freedesktop/login1/session/c7";

/// What the stand-in logind was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Lock(String),
    Terminate(String),
}

/// A private bus with `org.freedesktop.login1` on it. Its one session is a process
/// group standing for the user's desktop; `Terminate` kills it.
struct FakeLogind {
    bus: Child,
    address: String,
    calls: mpsc::Receiver<Call>,
    session_leader: Arc<Mutex<Child>>,
    runtime: tokio::runtime::Runtime,
    connection: zbus::Connection,
    /// What a restarted bus needs to serve the same logind again.
    socket: std::path::PathBuf,
    tx: mpsc::Sender<Call>,
    locked: Arc<AtomicBool>,
    listed: bool,
}

struct Manager {
    calls: mpsc::Sender<Call>,
    /// Whether `ListSessions` shows the session (active, graphical).
    listed: bool,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Manager {
    #[zbus(name = "GetSessionByPID")]
    fn get_session_by_pid(&self, _pid: u32) -> OwnedObjectPath {
        OwnedObjectPath::try_from(SESSION).unwrap()
    }
    fn lock_sessions(&self) {
        self.calls.send(Call::Lock("all".into())).unwrap();
    }
    fn list_sessions(&self) -> Vec<(String, u32, String, String, OwnedObjectPath)> {
        let me = nix::unistd::User::from_uid(nix::unistd::getuid()).unwrap().unwrap();
        let session = (
            "c7".into(),
            me.uid.as_raw(),
            me.name,
            "seat0".into(),
            OwnedObjectPath::try_from(SESSION).unwrap(),
        );
        if self.listed {
            vec![session]
        } else {
            vec![]
        }
    }
}

struct Session {
    calls: mpsc::Sender<Call>,
    leader: Arc<Mutex<Child>>,
    locked: Arc<AtomicBool>,
}

#[zbus::interface(name = "org.freedesktop.login1.Session")]
impl Session {
    fn lock(&self) {
        self.calls.send(Call::Lock(SESSION.into())).unwrap();
    }

    fn terminate(&self) {
        let pgid = self.leader.lock().unwrap().id() as i32;
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL)
            .unwrap();
        self.calls.send(Call::Terminate(SESSION.into())).unwrap();
    }

    /// As logind: the session's owner may call it, with no polkit check.
    fn set_locked_hint(&self, locked: bool) {
        self.locked.store(locked, Ordering::SeqCst);
    }

    #[zbus(property)]
    fn locked_hint(&self) -> bool {
        self.locked.load(Ordering::SeqCst)
    }
    #[zbus(property)]
    fn active(&self) -> bool {
        true
    }
    #[zbus(property)]
    fn class(&self) -> String {
        "user".into()
    }
    #[zbus(property, name = "Type")]
    fn kind(&self) -> String {
        "x11".into()
    }
}

impl FakeLogind {
    fn start(dir: &std::path::Path) -> Self {
        Self::start_listed(dir, false)
    }

    fn start_listed(dir: &std::path::Path, listed: bool) -> Self {
        let socket = dir.join("system_bus");
        let (bus, address) = Self::bus_daemon(&socket);
        // The user's desktop session: a process group with a "chart" in it.
        let leader = Command::new("sh")
            .args(["-c", "sleep 600 & wait"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let leader = Arc::new(Mutex::new(leader));
        let (tx, calls) = mpsc::channel();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let locked = Arc::new(AtomicBool::new(false));
        let connection = Self::serve(&runtime, &address, &tx, &leader, &locked, listed);
        Self { bus, address, calls, session_leader: leader, runtime, connection, socket, tx, locked, listed }
    }

    fn bus_daemon(socket: &std::path::Path) -> (Child, String) {
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon is needed (apt-get install dbus; `make setup` does it)");
        let mut address = String::new();
        BufReader::new(bus.stdout.take().unwrap()).read_line(&mut address).unwrap();
        // Without the bus's guid, as the system bus's well-known address is: a bus
        // restarted at the same path is the same address.
        let address = address.trim().split(",guid=").next().unwrap().to_owned();
        (bus, address)
    }

    fn serve(
        runtime: &tokio::runtime::Runtime,
        address: &str,
        tx: &mpsc::Sender<Call>,
        leader: &Arc<Mutex<Child>>,
        locked: &Arc<AtomicBool>,
        listed: bool,
    ) -> zbus::Connection {
        let session = Session { calls: tx.clone(), leader: leader.clone(), locked: locked.clone() };
        runtime.block_on(async {
            zbus::connection::Builder::address(address)
                .unwrap()
                .name("org.freedesktop.login1")
                .unwrap()
                .serve_at("/org/freedesktop/login1", Manager { calls: tx.clone(), listed })
                .unwrap()
                .serve_at(SESSION, session)
                .unwrap()
                .build()
                .await
                .unwrap()
        })
    }

    /// The system bus goes down and comes back at the same address (a D-Bus restart):
    /// every connection to the old one is broken.
    fn restart_bus(&mut self) {
        let _ = self.bus.kill();
        let _ = self.bus.wait();
        let _ = std::fs::remove_file(&self.socket);
        let (bus, address) = Self::bus_daemon(&self.socket);
        self.bus = bus;
        assert_eq!(address, self.address, "the bus came back elsewhere");
        self.connection =
            Self::serve(&self.runtime, &address, &self.tx, &self.session_leader, &self.locked, self.listed);
    }

    fn next_call(&self) -> Call {
        self.calls.recv_timeout(PATIENCE).expect("logind was never called")
    }

    /// Whether the session's processes are gone (reaped here).
    fn session_ended(&self) -> bool {
        self.session_leader.lock().unwrap().try_wait().unwrap().is_some()
    }
}

impl Drop for FakeLogind {
    fn drop(&mut self) {
        // The whole "session": its sleep too, which would otherwise outlive the test.
        let mut leader = self.session_leader.lock().unwrap();
        let pgid = nix::unistd::Pid::from_raw(leader.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = leader.wait();
        drop(leader);
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

const GRACE_SECS: u64 = 2;

fn policy(when_unguarded: &str) -> String {
    format!(
        "{FAST_POLICY}[lock]\nwhen_unguarded = \"{when_unguarded}\"\nescalation_grace = \"{GRACE_SECS}s\"\n"
    )
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

/// The kinds from `guard_lost` (or the first escalation entry) on.
fn ladder(d: &Daemon) -> Vec<String> {
    let kinds = d.kinds();
    let from =
        kinds.iter().position(|k| k == "guard_lost" || k == "escalation_requested").unwrap_or(kinds.len());
    kinds[from..].iter().filter(|k| !matches!(k.as_str(), "guard_started" | "locked")).cloned().collect()
}

fn escalations_active(d: &Daemon) -> u64 {
    d.client("tool").request(json!({"type": "status"}))["escalations_active"].as_u64().unwrap()
}

#[test]
fn a_system_bus_restarted_under_the_service_is_reached_on_a_new_connection() {
    let (d, mut logind) = daemon_with_logind(&policy("logoff"));
    // The guard's hello looks its session up: the service now holds a bus connection.
    let guard = d.client("guard");
    logind.restart_bus();
    drop(guard);
    assert_eq!(logind.next_call(), Call::Lock(SESSION.into()), "the lock request reached the new bus");
    assert_eq!(logind.next_call(), Call::Terminate(SESSION.into()));
    let requested = d.wait_for_audit("escalation_requested", 1);
    let request = &requested[0].details["lock_request"];
    assert!(request.starts_with("sent to session"), "{request}");
    d.wait_for_audit("session_terminated", 1);
}

/// Waits until the session's processes are gone; returns how long that took.
fn wait_session_ended(logind: &FakeLogind, from: Instant) -> Duration {
    while !logind.session_ended() {
        assert!(from.elapsed() < PATIENCE, "the session was never ended");
        std::thread::sleep(Duration::from_millis(20)); // polling a process, not synchronising with the service
    }
    from.elapsed()
}

#[test]
fn a_guard_killed_while_locked_and_not_restarted_ends_the_session_after_the_grace() {
    let (d, logind) = daemon_with_logind(&policy("logoff"));
    let mut guard = d.client("guard");
    assert_eq!(last(&d, "guard_started").details["client"], "test");
    let ack = guard.request(json!({"type": "event", "event": {"kind": "locked", "reason": "idle"}}));
    assert_eq!(ack["type"], "ack");
    assert_eq!(
        last(&d, "locked").details["pid"],
        std::process::id().to_string(),
        "guard events carry their pid"
    );

    let killed = Instant::now();
    drop(guard); // kill -9: no quit, no goodbye
    assert_eq!(logind.next_call(), Call::Lock(SESSION.into()), "the lock is asked for first");
    assert_eq!(logind.next_call(), Call::Terminate(SESSION.into()));
    let ended_after = wait_session_ended(&logind, killed);
    assert!(ended_after < Duration::from_secs(GRACE_SECS + 2), "ended only after {ended_after:?}");
    d.wait_for_audit("session_terminated", 1);

    assert_eq!(
        ladder(&d),
        ["guard_lost", "escalation_requested", "escalation_unconfirmed", "session_terminated"],
        "in this order, nothing saying locked"
    );
    let lost = last(&d, "guard_lost");
    assert_eq!(lost.details["why"], "disconnected without an administrator's approval");
    assert_eq!(lost.details["when_unguarded"], "logoff");
    let requested = last(&d, "escalation_requested");
    assert_eq!(requested.details["lock_request"], format!("sent to session {SESSION}"));
    assert_eq!(requested.details["alert"], "compliance");
    assert_eq!(last(&d, "escalation_unconfirmed").details["next"], "logoff");
    assert_eq!(last(&d, "session_terminated").details["ended"], format!("session {SESSION}"));
    assert!(d.audit().iter().all(|e| !e.details.values().any(|v| v.contains("os_lock"))));
}

#[test]
fn a_guard_stopped_while_unlocked_walks_the_same_ladder() {
    let (d, logind) = daemon_with_logind(&policy("logoff"));
    let guard = d.client("guard");
    drop(guard); // `systemctl --user stop`: the session was unlocked
    assert_eq!(logind.next_call(), Call::Lock(SESSION.into()));
    assert_eq!(logind.next_call(), Call::Terminate(SESSION.into()));
    wait_session_ended(&logind, Instant::now());
    d.wait_for_audit("session_terminated", 1);
    assert_eq!(
        ladder(&d),
        ["guard_lost", "escalation_requested", "escalation_unconfirmed", "session_terminated"]
    );
}

#[test]
fn a_guard_restarted_within_the_grace_confirms_the_lock_and_nothing_is_ended() {
    let (d, logind) = daemon_with_logind(&policy("logoff"));
    drop(d.client("guard"));
    assert_eq!(logind.next_call(), Call::Lock(SESSION.into()));

    // The supervisor starts it again: it is told to lock before anything else.
    let mut guard = d.client("guard");
    assert_eq!(guard.request(json!({"type": "policy"}))["type"], "policy");
    let order = guard.read().unwrap();
    assert_eq!(order, json!({"type": "lock_now", "reason": "guard_restarted"}));
    let ack =
        guard.request(json!({"type": "event", "event": {"kind": "locked", "reason": "guard_restarted"}}));
    assert_eq!(ack["type"], "ack");

    d.wait_for_audit("escalation_confirmed", 1);
    let confirmed = last(&d, "escalation_confirmed");
    assert_eq!(confirmed.details["by"], "guard");
    assert_eq!(confirmed.details["pid"], std::process::id().to_string());
    assert_eq!(escalations_active(&d), 0, "the ladder ended at the confirmation");
    assert!(!logind.session_ended());
    assert!(logind.calls.try_recv().is_err(), "nothing but the lock was asked of logind");
    assert!(!d.kinds().iter().any(|k| k == "session_terminated" || k == "escalation_unconfirmed"));
}

/// The shared account stops its guard and says "locked" itself, as anyone at the
/// workstation can: `busctl call … SetLockedHint b true` on its own session.
fn set_locked_hint_as_the_session(logind: &FakeLogind) {
    let status = Command::new("busctl")
        .arg(format!("--address={}", logind.address))
        .args(["call", "org.freedesktop.login1", SESSION, "org.freedesktop.login1.Session"])
        .args(["SetLockedHint", "b", "true"])
        .status()
        .expect("busctl is needed (systemd; `make setup` installs it)");
    assert!(status.success());
}

#[test]
fn a_locked_hint_the_session_sets_itself_confirms_nothing_and_the_session_ends() {
    let (d, logind) = daemon_with_logind(&policy("logoff"));
    drop(d.client("guard")); // `systemctl --user stop wardlock-guard`
    assert_eq!(logind.next_call(), Call::Lock(SESSION.into()));
    set_locked_hint_as_the_session(&logind);
    assert_eq!(logind.next_call(), Call::Terminate(SESSION.into()), "the hint must not stop the logoff");
    wait_session_ended(&logind, Instant::now());
    d.wait_for_audit("session_terminated", 1);
    assert_eq!(
        ladder(&d),
        ["guard_lost", "escalation_requested", "escalation_unconfirmed", "session_terminated"]
    );
    let unconfirmed = last(&d, "escalation_unconfirmed");
    assert_eq!(
        unconfirmed.details["locked_hint"], "true (settable by the session's own account: not evidence)",
        "the audit names what was seen, and what it is worth"
    );
}

#[test]
fn an_active_session_that_stays_unguarded_is_escalated_again_and_again() {
    let d = Daemon::new(&format!("{}[service]\nguard_heartbeat_timeout = \"3s\"\n", policy("lock_only")));
    let logind = FakeLogind::start_listed(d.dir.path(), true);
    let mut d = d.env("DBUS_SYSTEM_BUS_ADDRESS", &logind.address);
    d.start();
    set_locked_hint_as_the_session(&logind);
    // No guard ever connects, and the session says it is locked: every ladder is still
    // unconfirmed, and the watch does not stop looking after the first.
    for _ in 0..2 {
        assert_eq!(logind.next_call(), Call::Lock(SESSION.into()));
    }
    let unconfirmed = d.wait_for_audit("escalation_unconfirmed", 2);
    assert!(unconfirmed.iter().all(|e| e.details["locked_hint"].starts_with("true (")), "{unconfirmed:?}");
    assert!(!d.kinds().iter().any(|k| k == "escalation_confirmed"));
    assert!(!logind.session_ended(), "lock_only never ends the session");
}

#[test]
fn a_lock_failure_nobody_recovers_ends_the_session() {
    let (d, logind) = daemon_with_logind(&policy("logoff"));
    let mut guard = d.client("guard");
    let ack = guard
        .request(json!({"type": "event", "event": {"kind": "lock_failed", "what": "keyboard grab refused"}}));
    assert_eq!(ack["type"], "ack");
    assert_eq!(logind.next_call(), Call::Lock(SESSION.into()));
    assert_eq!(logind.next_call(), Call::Terminate(SESSION.into()));
    wait_session_ended(&logind, Instant::now());
    d.wait_for_audit("session_terminated", 1);
    let failure = last(&d, "lock_failed");
    assert_eq!(failure.details["what"], "keyboard grab refused");
    assert_eq!(last(&d, "escalation_requested").details["why"], "lock_failed: keyboard grab refused");
    assert_eq!(ladder(&d), ["escalation_requested", "escalation_unconfirmed", "session_terminated"]);
}

#[test]
fn lock_only_asks_and_audits_that_nobody_confirmed() {
    let (d, logind) = daemon_with_logind(&policy("lock_only"));
    drop(d.client("guard"));
    assert_eq!(logind.next_call(), Call::Lock(SESSION.into()));
    d.wait_for_audit("escalation_unconfirmed", 1);
    let unconfirmed = last(&d, "escalation_unconfirmed");
    assert_eq!(unconfirmed.details["next"], "nothing more (lock.when_unguarded = lock_only)");
    assert_eq!(unconfirmed.details["alert"], "compliance");
    assert!(unconfirmed.details["after_secs"].parse::<u64>().unwrap() >= GRACE_SECS);
    assert_eq!(escalations_active(&d), 0);
    assert!(logind.calls.try_recv().is_err(), "no logoff under lock_only");
    assert!(!logind.session_ended());
}

#[test]
fn audit_only_audits_and_asks_nothing_of_logind() {
    let (d, logind) = daemon_with_logind(&policy("audit_only"));
    drop(d.client("guard"));
    d.wait_for_audit("guard_lost", 1);
    assert_eq!(last(&d, "guard_lost").details["when_unguarded"], "audit_only");
    assert_eq!(escalations_active(&d), 0);
    assert!(logind.calls.try_recv().is_err());
    assert_eq!(ladder(&d), ["guard_lost"]);
}

#[test]
fn dev_mode_defaults_to_lock_only() {
    let (d, logind) = daemon_with_logind(FAST_POLICY);
    drop(d.client("guard"));
    d.wait_for_audit("escalation_unconfirmed", 1);
    assert_eq!(last(&d, "guard_lost").details["when_unguarded"], "lock_only");
    assert_eq!(logind.next_call(), Call::Lock(SESSION.into()));
    assert!(!logind.session_ended());
}

#[test]
fn without_logind_the_failed_logoff_is_an_alert_and_the_service_goes_on() {
    let mut d = Daemon::new(&policy("logoff")).env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    d.start();
    drop(d.client("guard"));
    d.wait_for_audit("session_terminate_failed", 1);
    assert_eq!(
        ladder(&d),
        ["guard_lost", "escalation_requested", "escalation_unconfirmed", "session_terminate_failed"]
    );
    let requested = last(&d, "escalation_requested");
    assert!(requested.details["lock_request"].starts_with("failed: logind:"), "{:?}", requested.details);
    assert_eq!(requested.details["session"], "unknown");
    let failed = last(&d, "session_terminate_failed");
    assert!(failed.details["error"].starts_with("logind:"), "{:?}", failed.details);
    assert_eq!(failed.details["alert"], "compliance");
    // Still there, still answering.
    assert_eq!(d.client("tool").request(json!({"type": "status"}))["type"], "status");
}

#[test]
fn a_script_posing_as_the_guard_is_refused_and_audited_as_an_impostor() {
    let (d, logind) = daemon_with_logind(&policy("logoff"));
    let script = r#"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(json.dumps({"type": "hello", "version": 1, "client": "wardlock 0.1.0", "role": "guard"}).encode() + b"\n")
print(s.makefile().readline().strip())
"#;
    let out = Command::new("python3").args(["-c", script]).arg(d.socket()).output().unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["code"], "not_allowed", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("only the installed guard"), "{answer}");

    let impostor = last(&d, "guard_impostor");
    assert!(impostor.details["exe"].contains("python3"), "{:?}", impostor.details);
    assert_eq!(impostor.details["uid"], nix::unistd::getuid().to_string());
    assert!(impostor.details["pid"].parse::<u32>().is_ok());
    assert_eq!(impostor.details["alert"], "compliance");
    assert!(!d.kinds().iter().any(|k| k == "guard_started" || k == "guard_lost"), "never counted as a guard");
    assert!(logind.calls.try_recv().is_err());
    // The same script as a tool may ask for the status, not report events.
    let status = d.client("tool").request(json!({"type": "status"}));
    assert_eq!(status["guards_connected"], 0);
}

#[test]
fn the_right_executable_with_a_preloaded_library_is_no_guard() {
    let (d, _logind) = daemon_with_logind(&policy("audit_only"));
    // This test binary is the guard executable here; the same binary with LD_PRELOAD is not.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "supervision::helper_hello_as_guard", "--nocapture", "--include-ignored"])
        .env("WARDLOCK_HELPER_SOCKET", d.socket())
        .env("LD_PRELOAD", "libc.so.6")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"not_allowed\""), "{text}");
    assert!(last(&d, "guard_impostor").details["why"].contains("LD_PRELOAD"));
}

const HELLO_AS_GUARD: &str = r#"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(json.dumps({"type": "hello", "version": 1, "client": "wardlock 0.1.0", "role": "guard"}).encode() + b"\n")
print(s.makefile().readline().strip())
"#;

#[test]
fn a_program_bind_mounted_over_the_guards_path_in_a_namespace_of_its_own_is_no_guard() {
    let (d, logind) = daemon_with_logind(&policy("logoff"));
    let guard_path = std::env::current_exe().unwrap();
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    // As an unprivileged account can: a user and mount namespace of its own, python3
    // mounted over the installed guard's path, and that path run.
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$0" && exec "$0" -c "$2" "$3""#)
        .arg(&guard_path)
        .arg(&python)
        .arg(HELLO_AS_GUARD)
        .arg(d.socket())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"not_allowed\""), "admitted: {text} {}", String::from_utf8_lossy(&out.stderr));
    let impostor = last(&d, "guard_impostor");
    assert!(impostor.details["why"].contains("inode"), "{:?}", impostor.details);
    assert!(!d.kinds().iter().any(|k| k == "guard_started"));
    assert!(logind.calls.try_recv().is_err());
}

#[test]
fn the_real_guard_binary_in_a_user_namespace_of_its_own_is_no_guard() {
    let (d, _logind) = daemon_with_logind(&policy("audit_only"));
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "supervision::helper_hello_as_guard", "--nocapture", "--include-ignored"])
        .env("WARDLOCK_HELPER_SOCKET", d.socket())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"not_allowed\""), "{text}");
    assert!(last(&d, "guard_impostor").details["why"].contains("user namespace"));
}

#[test]
fn impostors_cannot_spend_the_real_guards_start_budget() {
    let (d, _logind) = daemon_with_logind(&policy("audit_only"));
    let flood = Instant::now();
    for _ in 0..25 {
        let out = Command::new("python3").args(["-c", HELLO_AS_GUARD]).arg(d.socket()).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"not_allowed\""));
    }
    let flooded_for = flood.elapsed();
    // The real guard (re)starting after the flood is admitted at once.
    let _guard = d.client("guard");
    let impostors = d.kinds().iter().filter(|k| *k == "guard_impostor").count();
    // The budget: 20 at once, then one more every 3 s of the flood (a token bucket).
    let refilled = (flooded_for.as_secs() / 3) as usize;
    assert!(
        (20..=20 + refilled).contains(&impostors) && impostors < 25,
        "{impostors} impostors audited in {flooded_for:?}: up to the impostor budget, the rest counted later"
    );
}

/// A library of the shared account's own, in a folder it writes.
fn users_library(dir: &std::path::Path) -> std::path::PathBuf {
    let source = dir.join("module.c");
    std::fs::write(&source, "int wardlock_test_module(void) { return 42; }\n").unwrap();
    let module = dir.join("module.so");
    let cc = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&module).arg(&source).status().unwrap();
    assert!(cc.success(), "cc (build-essential) is needed");
    nix::unistd::chown(&module, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    module
}

#[test]
fn the_guard_with_code_of_the_users_own_mapped_into_it_is_no_guard() {
    let (d, _logind) = daemon_with_logind(&policy("audit_only"));
    let dir = tempfile::tempdir().unwrap();
    let module = users_library(dir.path());
    // However it got there (a preload that then rewrites its environment, a GTK module
    // from the user's settings): the mapped file is what counts.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "supervision::helper_hello_as_guard", "--nocapture", "--include-ignored"])
        .env("WARDLOCK_HELPER_SOCKET", d.socket())
        .env("LD_PRELOAD", &module)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"not_allowed\""), "{text}");
    let why = &last(&d, "guard_impostor").details["why"];
    assert!(why.contains("module.so") && why.contains("others than root"), "{why}");
}

#[test]
fn an_admitted_guard_whose_file_is_not_the_installed_one_any_more_is_lost_at_its_next_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let installed = dir.path().join("wardlock");
    std::fs::copy(std::env::current_exe().unwrap(), &installed).unwrap();
    let (d, logind) = daemon_with_logind(&format!(
        "{}[service]\nguard_executable = \"{}\"\n",
        policy("lock_only"),
        installed.display()
    ));
    let mut guard = Command::new(&installed)
        .args(["--exact", "supervision::helper_guard_that_waits", "--nocapture", "--include-ignored"])
        .env("WARDLOCK_HELPER_SOCKET", d.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(guard.stdout.take().unwrap()).lines().map_while(Result::ok);
    let admitted = said.find(|l| l.starts_with("admitted:")).unwrap();
    assert!(admitted.contains("\"hello\""), "{admitted}");
    // Someone else's file now stands where the installed guard was.
    std::fs::remove_file(&installed).unwrap();
    std::fs::write(&installed, b"#!/bin/sh\n").unwrap();
    nix::unistd::chown(&installed, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    std::io::Write::write_all(guard.stdin.as_mut().unwrap(), b"go\n").unwrap();
    let beat = said.find(|l| l.starts_with("heartbeat:")).unwrap();
    assert!(beat.contains("not_allowed"), "{beat}");
    let _ = guard.wait();
    let impostor = last(&d, "guard_impostor");
    assert!(impostor.details["why"].starts_with("after it was admitted"), "{:?}", impostor.details);
    d.wait_for_audit("escalation_requested", 1);
    assert!(last(&d, "guard_lost").details["why"].contains("no longer the installed guard"));
    assert_eq!(logind.next_call(), Call::Lock(SESSION.into()));
}

/// Run by the test above in a child process: admitted, then a heartbeat once told to.
#[test]
fn helper_guard_that_waits() {
    let Some(socket) = std::env::var_os("WARDLOCK_HELPER_SOCKET") else { return };
    let mut c = crate::util::Client::connect(std::path::Path::new(&socket));
    let hello = c.request(json!({"type": "hello", "version": 1, "client": "test", "role": "guard"}));
    println!("admitted: {hello}");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    println!("heartbeat: {}", c.request(json!({"type": "heartbeat"})));
}

/// Run by the test above in a child process; does nothing on its own.
#[test]
fn helper_hello_as_guard() {
    let Some(socket) = std::env::var_os("WARDLOCK_HELPER_SOCKET") else { return };
    let mut c = crate::util::Client::connect(std::path::Path::new(&socket));
    let answer = c.request(json!({"type": "hello", "version": 1, "client": "test", "role": "guard"}));
    println!("{answer}");
}

#[test]
fn only_an_administrator_lets_the_guard_quit_cleanly() {
    let (d, logind) = daemon_with_logind(&policy("logoff"));
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.add_user("it.admin", "Ida Admin", "admin", Some("915372"), false);
    let mut guard = d.client("guard");
    let quit = |user: &str, pin: &str| json!({"type": "quit", "user": user, "pin": pin, "totp": null});

    let nurse = guard.request(quit("n.nurse", "730284"));
    assert_eq!(nurse["result"], "refused", "a nurse's right PIN is no administrator's: {nurse}");
    let admin = guard.request(quit("it.admin", "915372"));
    assert_eq!(admin, json!({"type": "quit", "result": "authorized"}));
    drop(guard);

    d.wait_for_audit("guard_stopped", 1);
    assert_eq!(last(&d, "guard_stopped").details["by"], "it.admin");
    assert!(!d.kinds().contains(&"guard_lost".to_owned()));
    assert!(logind.calls.try_recv().is_err(), "an approved quit must not escalate");
    let approved = last(&d, "admin_approved");
    assert_eq!((approved.user.as_deref(), approved.details["action"].as_str()), (Some("it.admin"), "quit"));
}

#[test]
fn a_silent_guard_is_lost_after_its_heartbeat_timeout() {
    let (d, logind) =
        daemon_with_logind(&format!("{}[service]\nguard_heartbeat_timeout = \"3s\"\n", policy("lock_only")));
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
    assert_eq!(logind.next_call(), Call::Lock(SESSION.into()));
    d.wait_for_audit("guard_lost", 1);
    assert_eq!(last(&d, "guard_lost").details["why"], "heartbeat missed");
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
    d.wait_for_audit("policy_refused", 1);
    let refused = last(&d, "policy_refused");
    assert!(refused.details["why"].contains("lock.idle_timeout"), "{:?}", refused.details);
    assert_eq!(guard.request(json!({"type": "status"}))["policy_hash"], good_hash);

    // Restarted with the bad file still there, it keeps the last good policy too.
    d.restart();
    let mut guard = d.client("guard");
    assert_eq!(guard.request(json!({"type": "policy"}))["policy"]["idle_timeout_secs"], 600);
}

/// IT's settings in `policy.d/` lie over the packaged `policy.toml` in name order; a bad
/// drop-in is named in the refusal and the policy in force stays.
#[test]
fn drop_ins_in_policy_d_lie_over_the_policy_file_and_a_bad_one_is_named_and_refused() {
    let mut d = Daemon::new("[lock]\nidle_timeout = \"10m\"\nbanner = \"packaged\"\n");
    let drop_ins = d.dir.path().join("policy.d");
    std::fs::create_dir(&drop_ins).unwrap();
    std::fs::write(drop_ins.join("10-image.toml"), "[lock]\nidle_timeout = \"4m\"\n").unwrap();
    std::fs::write(drop_ins.join("50-ward.toml"), "[lock]\nbanner = \"Ward 4\"\n").unwrap();
    std::fs::write(drop_ins.join("50-ward.toml.dpkg-old"), "[lock]\nbanner = \"stale\"\n").unwrap();
    d.start();
    let mut guard = d.client("guard");
    let policy = guard.request(json!({"type": "policy"}))["policy"].clone();
    assert_eq!(
        (policy["idle_timeout_secs"].as_u64(), policy["banner"].as_str()),
        (Some(240), Some("Ward 4"))
    );
    let applied = last(&d, "policy_applied");
    assert!(applied.details["source"].ends_with("policy.d/50-ward.toml"), "{:?}", applied.details);

    std::fs::write(drop_ins.join("90-typo.toml"), "[lock]\nidle_timeout = \"5s\"\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_for_audit("policy_refused", 1);
    let refused = last(&d, "policy_refused");
    assert!(refused.details["why"].contains("90-typo.toml"), "{:?}", refused.details);
    assert_eq!(guard.request(json!({"type": "policy"}))["policy"]["idle_timeout_secs"], 240);
}

/// `wardlockctl audit preserve` clears a purge for the entries it saw; a service that
/// starts again may write more, so the clearance is withdrawn before its first entry.
#[test]
fn a_clearance_to_purge_is_withdrawn_when_the_service_starts_again() {
    let mut d = Daemon::new(FAST_POLICY);
    d.start();
    d.stop();
    let clearance = d.db_path().with_file_name("purge-clearance");
    std::fs::write(&clearance, "all 3 entries reached the collector\n").unwrap();
    d.start();
    assert!(!clearance.exists());
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

#[test]
fn status_reports_the_kernels_ptrace_scope() {
    let mut d = Daemon::new(FAST_POLICY);
    d.start();
    let status = d.client("tool").request(json!({"type": "status"}));
    let expected = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .map(|s| serde_json::Value::from(s.trim().parse::<u64>().unwrap()));
    assert_eq!(status["ptrace_scope"], expected.unwrap_or(serde_json::Value::Null), "{status}");
}

#[test]
fn an_active_session_that_no_guard_ever_held_is_escalated_too() {
    let d = Daemon::new(&format!("{}[service]\nguard_heartbeat_timeout = \"3s\"\n", policy("logoff")));
    let logind = FakeLogind::start_listed(d.dir.path(), true);
    let mut d = d.env("DBUS_SYSTEM_BUS_ADDRESS", &logind.address);
    d.start();
    // No guard ever connects: after twice the heartbeat timeout, the ladder.
    assert_eq!(logind.next_call(), Call::Lock(SESSION.into()));
    assert_eq!(logind.next_call(), Call::Terminate(SESSION.into()));
    wait_session_ended(&logind, Instant::now());
    d.wait_for_audit("session_terminated", 1);
    let requested = last(&d, "escalation_requested");
    assert_eq!(requested.details["why"], "no guard connected for an active session");
    assert_eq!(requested.details["session"], SESSION);
    assert_eq!(ladder(&d), ["escalation_requested", "escalation_unconfirmed", "session_terminated"]);
}

#[test]
fn a_session_whose_guard_is_connected_is_left_alone_by_the_watch() {
    let d = Daemon::new(&format!("{}[service]\nguard_heartbeat_timeout = \"3s\"\n", policy("logoff")));
    let logind = FakeLogind::start_listed(d.dir.path(), true);
    let mut d = d.env("DBUS_SYSTEM_BUS_ADDRESS", &logind.address);
    d.start();
    let mut guard = d.client("guard");
    // Beats through three watch periods (9 s) past the 6 s allowance.
    for _ in 0..9 {
        assert_eq!(guard.request(json!({"type": "heartbeat"}))["type"], "ack");
        std::thread::sleep(Duration::from_secs(1)); // the guard's own pacing, not synchronisation
    }
    assert!(logind.calls.try_recv().is_err(), "a guarded session was escalated");
    assert!(!d.kinds().iter().any(|k| k.starts_with("escalation")));
}
