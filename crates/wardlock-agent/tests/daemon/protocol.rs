//! The protocol's rules, enforced whatever the client sends.

use serde_json::json;

use crate::util::{Daemon, FAST_POLICY};

#[test]
fn hello_comes_first_and_once_with_a_version_the_service_speaks() {
    let mut d = Daemon::new(FAST_POLICY);
    d.start();

    let mut c = d.connect();
    let e = c.request(json!({"type": "status"}));
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("hello_first")));
    assert!(c.closed());

    let mut c = d.connect();
    let e = c.request(json!({"type": "hello", "version": 99, "client": "wardlock 9.9.9"}));
    assert_eq!(e["code"], "unsupported_version");
    // Both versions and what to do, to the client and in wardlockd's own log.
    let message = e["message"].as_str().unwrap();
    for said in ["version 1", "\"wardlock 9.9.9\" version 99", "different releases", "apt-get install"] {
        assert!(message.contains(said), "{said}: {e}");
    }
    assert!(c.closed());
    // Written before the answer, read from its stderr by another thread: polled, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !d.log_text().contains("event=\"version_refused\"") {
        assert!(std::time::Instant::now() < deadline, "wardlockd's log says nothing of the refusal");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let mut c = d.client("tool");
    let e = c.request(json!({"type": "hello", "version": 1, "client": "again"}));
    assert_eq!(e["code"], "bad_request");
    assert!(c.closed());
}

#[test]
fn garbage_and_oversized_frames_get_an_error_and_the_connection_closed() {
    let mut d = Daemon::new(FAST_POLICY);
    d.start();
    for garbage in [
        &b"not json\n"[..],
        b"{\"type\":\"unlock\"}\n",
        b"\xff\xfe\n",
        b"[1,2,3]\n",
        b"{\"type\":\"policy\",\"x\":1}\n",
    ] {
        let mut c = d.client("tool");
        c.send_raw(garbage).unwrap();
        assert_eq!(c.read().unwrap()["code"], "bad_request", "{:?}", String::from_utf8_lossy(garbage));
        assert!(c.closed());
    }

    let mut c = d.client("tool");
    // 1 MiB without a newline: refused at 64 KiB, not buffered whole.
    let _ = c.send_raw(&vec![b'a'; 1 << 20]);
    assert_eq!(c.read().unwrap()["code"], "frame_too_large");
    assert!(c.closed());

    // Events and quitting are the guard's business.
    let mut c = d.client("tool");
    let e = c.request(json!({"type": "event", "event": {"kind": "warning_cancelled"}}));
    assert_eq!(e["code"], "not_allowed");
    assert!(c.closed());
}

#[test]
fn a_client_that_never_says_hello_is_dropped_and_blocks_nobody() {
    let mut d = Daemon::new(FAST_POLICY);
    d.start();
    let mut silent = d.connect();
    let mut half = d.connect();
    half.send_raw(b"{\"type\":\"hel").unwrap();
    // Meanwhile another client is served at once.
    let mut c = d.client("tool");
    assert_eq!(c.request(json!({"type": "status"}))["type"], "status");
    assert_eq!(silent.read().unwrap()["code"], "timeout");
    assert!(silent.closed());
    assert_eq!(half.read().unwrap()["code"], "timeout");
}

#[test]
fn past_the_connection_limit_clients_are_told_to_come_back() {
    let mut d = Daemon::new(FAST_POLICY);
    d.start();
    let held: Vec<_> = (0..256).map(|_| d.client("tool")).collect();
    let mut extra = d.connect();
    assert_eq!(extra.read().unwrap()["code"], "busy");
    drop(held);
    // Slots come back once those connections are gone.
    let mut c = d.connect();
    // While the old connections are still being closed the service may answer `busy` and
    // close before it reads this hello: the write may then fail, the answer is still there.
    let _ = c.send_raw(b"{\"type\":\"hello\",\"version\":1,\"client\":\"later\"}\n");
    let hello = c.read().expect("no answer at all");
    assert!(hello["type"] == "hello" || hello["code"] == "busy", "{hello}");
}

#[test]
fn a_script_hammering_unlock_is_slowed_to_the_policy_rate_and_counted_once() {
    let mut d = Daemon::new("[lockout]\nthrottle = \"0s\"\nworkstation_max_failures = 1000\nmax_failures = 20\n[service]\nmax_attempts_per_minute = 10\n");
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let mut c = d.client("guard");
    let mut refused_unheard = 0;
    for i in 0..40 {
        let r = c.unlock(&format!("guess{i}"), Some("123456"), None);
        assert_eq!(r["result"], "refused");
        if r["attempts_left"] == 0 && r["retry_after_secs"].as_u64().is_some_and(|s| s >= 1) {
            refused_unheard += 1;
        }
    }
    assert!(refused_unheard >= 29, "only {refused_unheard} of 40 were held back");
    let failed = d.kinds().iter().filter(|k| *k == "unlock_failed").count();
    assert!(failed <= 11, "{failed} attempts were checked and audited one by one");
    d.stop();
    let limited =
        d.audit().into_iter().find(|e| e.kind.as_str() == "attempts_rate_limited").expect("not audited");
    assert!(limited.details["count"].parse::<u32>().unwrap() >= 29);
}

#[test]
fn one_account_cannot_pose_as_a_crowd_of_guards() {
    let mut d = Daemon::new(FAST_POLICY);
    d.start();
    let _first = d.client("guard");
    let _second = d.client("guard"); // a restarting guard overlaps its predecessor
    let mut third = d.connect();
    let e = third.request(json!({"type": "hello", "version": 1, "client": "impostor", "role": "guard"}));
    assert_eq!(e["code"], "busy", "{e}");
    assert!(third.closed());
    let started = d.kinds().iter().filter(|k| *k == "guard_started").count();
    assert_eq!(started, 2, "the refused guard left an audit entry");
}
