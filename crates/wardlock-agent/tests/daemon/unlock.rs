use serde_json::json;

use crate::util::{oathtool, Daemon, FAST_POLICY};

#[test]
fn right_pin_is_granted_and_its_audit_entry_is_on_disk_before_the_answer() {
    let mut d = Daemon::new(FAST_POLICY);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let mut guard = d.client("guard");

    let wrong = guard.unlock("n.nurse", Some("000000"), None);
    assert_eq!(
        wrong,
        json!({"type": "unlock", "result": "refused", "attempts_left": 4, "retry_after_secs": null})
    );
    let granted = guard.unlock("n.nurse", Some("730284"), None);
    assert_eq!(granted["result"], "granted", "{granted}");
    assert_eq!(granted["user"], "n.nurse");
    assert_eq!(granted["display_name"], "Nora Nurse");
    assert_eq!(granted["emergency"], false);
    assert_eq!(granted["last_unlock"], json!(null), "first unlock ever");
    assert_eq!(granted["failures_since_last_unlock"], 1, "the wrong PIN just before");

    // Killed the instant the answer arrived: the entry must already be durable.
    d.kill9();
    let entries = d.audit();
    let last =
        entries.iter().rev().find(|e| e.kind.as_str() == "unlock_succeeded").expect("no unlock_succeeded");
    assert_eq!(last.user.as_deref(), Some("n.nurse"));
    assert_eq!(last.details.get("method").map(String::as_str), Some("pin"));
    d.open_store().verify_audit().unwrap();

    // The next unlock shows the previous one (NIST AC-9).
    d.start();
    let mut guard = d.client("guard");
    let again = guard.unlock("n.nurse", Some("730284"), None);
    assert_eq!(again["result"], "granted");
    assert!(again["last_unlock"].is_string(), "{again}");
    assert_eq!(again["failures_since_last_unlock"], 0);
}

#[test]
fn refusals_never_say_which_factor_or_whether_the_user_exists() {
    let mut d = Daemon::new(FAST_POLICY);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let mut c = d.client("guard");
    let known = c.unlock("n.nurse", Some("111999"), None);
    let unknown = c.unlock("nobody", Some("111999"), None);
    assert_eq!(known, unknown, "a known and an unknown user are refused alike");
    let text = known.to_string();
    for word in ["pin", "totp", "reason", "unknown", "user"] {
        assert!(!text.contains(word), "refusal says {word:?}: {text}");
    }
    // The typed unknown ID (often a PIN in the wrong field) is not recorded.
    let entries = d.audit();
    assert!(entries.iter().all(|e| e.user.as_deref() != Some("nobody")));
}

#[test]
fn wrong_pins_lock_the_user_out_and_the_lockout_survives_kill_9() {
    let policy = "[lockout]\nthrottle = \"0s\"\nmax_failures = 3\nlockout = \"10m\"\nmax_lockout = \"1h\"\n";
    let mut d = Daemon::new(policy);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let mut c = d.client("guard");
    assert_eq!(c.unlock("n.nurse", Some("111111"), None)["attempts_left"], 2);
    assert_eq!(c.unlock("n.nurse", Some("222222"), None)["attempts_left"], 1);
    let locked = c.unlock("n.nurse", Some("333333"), None);
    assert_eq!(locked["attempts_left"], 0);
    assert!(locked["retry_after_secs"].as_u64().unwrap() >= 590, "{locked}");
    let right = c.unlock("n.nurse", Some("730284"), None);
    assert_eq!(right["result"], "refused", "the right PIN during a lockout: {right}");

    d.kill9();
    d.start();
    let mut c = d.client("guard");
    let after = c.unlock("n.nurse", Some("730284"), None);
    assert_eq!(after["result"], "refused", "lockout forgotten by a restart: {after}");
    assert!(after["retry_after_secs"].as_u64().unwrap() > 500, "{after}");

    let kinds = d.kinds();
    assert!(kinds.contains(&"user_locked_out".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"service_unclean_stop".to_owned()), "kill -9 not noticed: {kinds:?}");
}

#[test]
fn a_totp_code_is_accepted_once_even_across_a_restart() {
    let mut d = Daemon::new(FAST_POLICY);
    let secret = d.add_user("n.nurse", "Nora Nurse", "nurse", None, true).unwrap();
    d.start();
    let mut c = d.client("guard");
    let code = oathtool(&secret);
    assert_eq!(c.unlock("n.nurse", None, Some(&code))["result"], "granted");
    assert_eq!(c.unlock("n.nurse", None, Some(&code))["result"], "refused", "replayed at once");
    drop(c);

    d.restart();
    let mut c = d.client("guard");
    assert_eq!(c.unlock("n.nurse", None, Some(&code))["result"], "refused", "replayed after a restart");
    let reasons: Vec<String> = d
        .audit()
        .iter()
        .filter(|e| e.kind.as_str() == "unlock_failed")
        .filter_map(|e| e.details.get("reason").cloned())
        .collect();
    assert_eq!(reasons, ["totp_replayed", "totp_replayed"]);
}

#[test]
fn pin_and_totp_are_both_needed_when_policy_asks_for_both() {
    let mut d = Daemon::new("[unlock]\nmethods = [\"pin_totp\"]\n[lockout]\nthrottle = \"0s\"\n");
    let secret = d.add_user("d.doctor", "Dana Doctor", "physician", Some("582046"), true).unwrap();
    d.start();
    let mut c = d.client("guard");
    assert_eq!(c.unlock("d.doctor", Some("582046"), None)["result"], "refused", "PIN alone");
    assert_eq!(c.unlock("d.doctor", None, Some(&oathtool(&secret)))["result"], "refused", "TOTP alone");
    let both = c.unlock("d.doctor", Some("582046"), Some(&oathtool(&secret)));
    assert_eq!(both["result"], "granted", "{both}");
    let policy = c.request(json!({"type": "policy"}));
    assert_eq!(policy["policy"]["methods"], json!(["pin_totp"]));
    let last = d.audit().into_iter().rev().find(|e| e.kind.as_str() == "unlock_succeeded").unwrap();
    assert_eq!(last.details["method"], "pin_totp");
}

#[test]
fn emergency_access_needs_a_real_reason_and_is_flagged_for_compliance() {
    let mut d = Daemon::new(FAST_POLICY);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let mut c = d.client("guard");
    let mut emergency = |reason: &str| {
        c.request(json!({"type": "unlock", "user": "n.nurse", "pin": "730284", "totp": null, "emergency_reason": reason}))
    };
    assert_eq!(emergency("")["result"], "refused", "no reason");
    assert_eq!(emergency("code")["result"], "refused", "shorter than emergency.min_reason_chars");
    let granted = emergency("Cardiac arrest bed 4, need the chart now");
    assert_eq!(granted["result"], "granted", "{granted}");
    assert_eq!(granted["emergency"], true);

    let entry = d.audit().into_iter().rev().find(|e| e.kind.as_str() == "emergency_access").unwrap();
    assert_eq!(entry.user.as_deref(), Some("n.nurse"));
    assert_eq!(entry.details["reason"], "Cardiac arrest bed 4, need the chart now");
    assert_eq!(entry.details["alert"], "compliance");
    let refused: Vec<_> = d
        .audit()
        .into_iter()
        .filter(|e| e.kind.as_str() == "unlock_failed")
        .map(|e| e.details["reason"].clone())
        .collect();
    assert_eq!(refused, ["emergency_reason_missing", "emergency_reason_missing"]);
}

#[test]
fn another_clinician_unlocking_takes_the_session_over() {
    let mut d = Daemon::new(FAST_POLICY);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.add_user("d.doctor", "Dana Doctor", "physician", Some("582046"), false);
    d.start();
    let mut c = d.client("guard");
    assert_eq!(c.unlock("n.nurse", Some("730284"), None)["result"], "granted");
    assert_eq!(
        c.request(json!({"type": "event", "event": {"kind": "locked", "reason": "idle"}}))["type"],
        "ack"
    );
    assert_eq!(c.unlock("d.doctor", Some("582046"), None)["result"], "granted");
    let entries = d.audit();
    let locked = entries.iter().find(|e| e.kind.as_str() == "locked").unwrap();
    assert_eq!(locked.user.as_deref(), Some("n.nurse"), "the lock is attributed to the session's user");
    let switch = entries.iter().rev().find(|e| e.kind.as_str() == "unlock_succeeded").unwrap();
    assert_eq!(switch.user.as_deref(), Some("d.doctor"));
    assert_eq!(switch.details["switched_from"], "n.nurse");
}

#[test]
fn a_sealed_seed_that_was_tampered_with_is_refused_and_flagged() {
    let mut d = Daemon::new(FAST_POLICY);
    let secret = d.add_user("n.nurse", "Nora Nurse", "nurse", None, true).unwrap();
    // Someone with the file replaces the sealed seed.
    let out = std::process::Command::new("sqlite3")
        .arg(d.db_path())
        .arg("UPDATE users SET totp_sealed = CAST(zeroblob(60) AS BLOB) WHERE id = 'n.nurse'")
        .output()
        .expect("sqlite3 is needed (`make setup` installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.start();
    let mut c = d.client("guard");
    let r = c.unlock("n.nurse", None, Some(&oathtool(&secret)));
    assert_eq!(r["result"], "refused");
    let tamper = d.audit().into_iter().find(|e| e.kind.as_str() == "tamper_detected").expect("not flagged");
    assert_eq!(tamper.user.as_deref(), Some("n.nurse"));
    assert_eq!(tamper.details["alert"], "compliance");
    // The service stays up and answers.
    assert_eq!(c.request(json!({"type": "status"}))["type"], "status");
}
