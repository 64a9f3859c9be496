//! A hospital workstation joined to a directory (SSSD, LDAP) resolves account names over
//! the network. A directory server that takes 5 s per lookup must stall no one else:
//! not a connected guard's heartbeats (a stall there is a false `guard_lost`, and a
//! session ended for nothing), not another client's unlock or status.
//!
//! The directory stand-in is a preloaded library in `wardlockd` whose `getpwuid_r`
//! takes 8 s while a flag file exists (what NSS does against a slow server), and notes
//! each such lookup's end in a second file.

use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::util::{Daemon, FAST_POLICY, PATIENCE};

const SLOW_NSS: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

typedef int (*getpwuid_r_fn)(uid_t, struct passwd *, char *, size_t, struct passwd **);

int getpwuid_r(uid_t uid, struct passwd *pwd, char *buf, size_t len, struct passwd **result) {
    getpwuid_r_fn real = (getpwuid_r_fn)dlsym(RTLD_NEXT, "getpwuid_r");
    const char *flag = getenv("WARDLOCK_TEST_SLOW_NSS_FLAG");
    if (flag && access(flag, F_OK) == 0) {
        struct timespec slow = { 8, 0 };
        nanosleep(&slow, NULL);
        char done[4096];
        snprintf(done, sizeof done, "%s.done", flag);
        int fd = open(done, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            write(fd, "x", 1);
            close(fd);
        }
    }
    return real(uid, pwd, buf, len, result);
}
"#;

/// Connections whose peer lookups hang at once: more than `wardlockd`'s async threads.
const SLOW_CONNECTIONS: usize = 6;

#[test]
fn a_slow_directory_server_stalls_no_heartbeat_no_unlock_and_loses_no_guard() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("slow_nss.c");
    std::fs::write(&source, SLOW_NSS).unwrap();
    let library = dir.path().join("slow_nss.so");
    let cc = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .status()
        .unwrap();
    assert!(cc.success(), "cc (build-essential) is needed");
    let flag = dir.path().join("directory-is-slow");

    let policy = format!(
        "{FAST_POLICY}[lock]\nwhen_unguarded = \"lock_only\"\n[service]\nguard_heartbeat_timeout = \"3s\"\n"
    );
    let mut d = Daemon::new(&policy)
        .env("LD_PRELOAD", library.to_str().unwrap())
        .env("WARDLOCK_TEST_SLOW_NSS_FLAG", flag.to_str().unwrap());
    d.start();
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    let mut guard = d.client("guard");
    let mut tool = d.client("tool");

    // The directory slows down; new connections now wait 8 s each for their names.
    std::fs::write(&flag, "").unwrap();
    let hung: Vec<UnixStream> =
        (0..SLOW_CONNECTIONS).map(|_| UnixStream::connect(d.socket()).unwrap()).collect();
    let finished = dir.path().join("directory-is-slow.done");

    // Meanwhile, for longer than the heartbeat timeout, the guard beats and is answered,
    // and the other clients' requests are answered.
    for _ in 0..5 {
        assert_eq!(guard.request(json!({"type": "heartbeat"}))["type"], "ack");
        std::thread::sleep(Duration::from_millis(900)); // the guard's own pacing, not synchronisation
    }
    let unlock = guard.unlock("n.nurse", Some("730284"), None);
    assert_eq!(unlock["result"], "granted", "{unlock}");
    let status = tool.request(json!({"type": "status"}));
    assert_eq!(status["guards_connected"], 1, "{status}");

    // All of that while the lookups were still hanging: none of it waited for them.
    assert!(!finished.exists(), "the answers came only after a slow lookup had ended");
    std::fs::remove_file(&flag).unwrap();
    drop(hung);
    assert_eq!(guard.request(json!({"type": "heartbeat"}))["type"], "ack");
    let kinds = d.kinds();
    assert!(!kinds.iter().any(|k| k == "guard_lost"), "a false guard_lost: {kinds:?}");
    assert!(!kinds.iter().any(|k| k == "escalation_requested"), "{kinds:?}");

    // And the stand-in really was slow: its lookups end only now.
    let since = std::time::Instant::now();
    while !finished.exists() {
        assert!(since.elapsed() < PATIENCE, "the slow lookups never ended: was the stand-in loaded?");
        std::thread::sleep(Duration::from_millis(50)); // polling a file the stand-in writes
    }
}
