use serde_json::json;

use crate::util::{contains_bytes, oathtool, Daemon, FAST_POLICY};

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

fn sqlite(db: &std::path::Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 is needed (`make setup` installs it)");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_database_file_holds_no_pin_hash_or_totp_seed_in_the_clear() {
    let mut d = Daemon::new(FAST_POLICY);
    let secret = d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), true).unwrap();
    d.start();
    assert_eq!(d.client("guard").unlock("n.nurse", Some("730284"), None)["result"], "granted");
    d.stop();
    let dump = sqlite(&d.db_path(), ".dump");
    assert!(dump.contains("INSERT INTO users"), "the dump has the users table");
    assert!(!dump.contains("argon2"), "a PIN hash in the clear:\n{dump}");
    let raw = std::fs::read(d.db_path()).unwrap();
    assert!(!contains_bytes(&raw, b"$argon2id$"), "a PIN hash in the file");
    let seed = base32_decode(&secret);
    assert!(!contains_bytes(&raw, &seed), "the TOTP seed in the file");
    assert!(!contains_bytes(&raw, secret.as_bytes()), "the TOTP seed (base32) in the file");
}

#[test]
fn a_database_of_an_earlier_release_has_its_pin_hashes_sealed_and_its_users_still_unlock() {
    let mut d = Daemon::new(FAST_POLICY);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    d.stop();
    // Back to the schema and contents of the earlier release: the PIN hash in the clear.
    let salt = [7u8; 16];
    let phc =
        wardlock_core::unlock::hash_pin(&wardlock_core::secret::SecretString::new("730284"), &salt).unwrap();
    sqlite(
        &d.db_path(),
        &format!(
            "UPDATE users SET pin_hash = '{}'; ALTER TABLE users DROP COLUMN pin_sealed; DROP TABLE sync_conflicts; UPDATE schema_version SET version = 2;",
            phc.as_phc()
        ),
    );
    assert!(sqlite(&d.db_path(), "SELECT pin_hash FROM users").contains("$argon2id$"));

    d.start();
    assert_eq!(sqlite(&d.db_path(), "SELECT count(*) FROM users WHERE pin_hash IS NOT NULL").trim(), "0");
    assert_eq!(sqlite(&d.db_path(), "SELECT count(*) FROM users WHERE pin_sealed IS NOT NULL").trim(), "1");
    let resealed = d.audit().into_iter().find(|e| e.kind.as_str() == "credentials_resealed").unwrap();
    assert_eq!(resealed.details["users"], "1");
    let mut c = d.client("guard");
    assert_eq!(c.unlock("n.nurse", Some("000001"), None)["result"], "refused");
    assert_eq!(c.unlock("n.nurse", Some("730284"), None)["result"], "granted");
    d.open_store().verify_audit().unwrap();
}

#[test]
fn a_pin_hash_moved_to_another_user_does_not_open() {
    let mut d = Daemon::new(FAST_POLICY);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.add_user("m.mallory", "Mallory", "nurse", Some("582046"), false);
    sqlite(
        &d.db_path(),
        "UPDATE users SET pin_sealed = (SELECT pin_sealed FROM users WHERE id = 'm.mallory') WHERE id = 'n.nurse'",
    );
    d.start();
    let mut c = d.client("guard");
    assert_eq!(c.unlock("n.nurse", Some("582046"), None)["result"], "refused", "Mallory's PIN for Nora");
    assert!(d.kinds().iter().any(|k| k == "tamper_detected"));
}

#[test]
fn an_insider_cannot_reset_the_workstation_lockout_with_their_own_unlocks() {
    let mut d = Daemon::new(
        "[lockout]\nthrottle = \"0s\"\nmax_failures = 20\n[service]\nmax_attempts_per_minute = 600\n",
    );
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let mut c = d.client("guard");
    let mut tripped = false;
    'rounds: for _round in 0..5 {
        for i in 0..19 {
            let r = c.unlock(&format!("guess{i}"), Some("000001"), None);
            assert_eq!(r["result"], "refused");
        }
        let own = c.unlock("n.nurse", Some("730284"), None);
        if own["result"] == "refused" {
            tripped = true;
            break 'rounds;
        }
    }
    assert!(tripped, "19 wrong IDs + 1 right PIN, five times, never tripped the workstation lockout");
    assert!(d.kinds().iter().any(|k| k == "workstation_locked_out"));
}

#[test]
fn emergency_access_passes_a_workstation_lockout_and_the_fourth_in_a_day_is_refused() {
    let mut d =
        Daemon::new("[lockout]\nthrottle = \"0s\"\nmax_failures = 20\nworkstation_max_failures = 5\n");
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let mut c = d.client("guard");
    for i in 0..5 {
        c.unlock(&format!("guess{i}"), Some("000001"), None);
    }
    assert_eq!(
        c.unlock("n.nurse", Some("730284"), None)["result"],
        "refused",
        "the workstation is locked out"
    );

    let reason = format!("  Cardiac arrest bed 4\u{7}, need the chart {}\n", "now ".repeat(400));
    let mut emergency = || {
        c.request(json!({"type": "unlock", "user": "n.nurse", "pin": "730284", "totp": null, "emergency_reason": reason}))
    };
    for n in 1..=3 {
        let granted = emergency();
        assert_eq!(
            (granted["result"].as_str(), granted["emergency"].as_bool()),
            (Some("granted"), Some(true)),
            "#{n}: {granted}"
        );
    }
    let fourth = emergency();
    assert_eq!(fourth["result"], "refused", "{fourth}");
    assert!(fourth["retry_after_secs"].as_u64().unwrap() > 23 * 3600);

    let entries = d.audit();
    let grants: Vec<_> = entries.iter().filter(|e| e.kind.as_str() == "emergency_access").collect();
    assert_eq!(grants.len(), 3);
    let stored = &grants[0].details["reason"];
    assert!(stored.starts_with("Cardiac arrest bed 4, need"), "trimmed, control characters out: {stored:?}");
    assert_eq!(stored.chars().count(), wardlock_core::unlock::MAX_EMERGENCY_REASON_CHARS);
    assert!(grants
        .iter()
        .all(|g| g.details["alert"] == "compliance" && g.details["during_workstation_lockout"] == "true"));
    let refused = entries.iter().rev().find(|e| e.kind.as_str() == "unlock_failed").unwrap();
    assert_eq!(refused.details["reason"], "emergency_limit_reached");
}

/// RFC 4648 base32 (no padding), for the test's own look at the file.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u32, Vec::new());
    for c in text.bytes().filter(|c| *c != b'=') {
        value = (value << 5) | ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase()).unwrap() as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
        }
    }
    out
}

#[test]
fn sign_out_checks_the_pin_like_an_unlock_audits_signed_out_and_ends_the_session_ownership() {
    let mut d = Daemon::new(FAST_POLICY);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let mut guard = d.client("guard");
    let sign_out = |c: &mut crate::util::Client, pin: &str, reason: Option<&str>| {
        c.request(json!({"type": "sign_out", "user": "n.nurse", "pin": pin, "totp": null, "emergency_reason": reason}))
    };
    assert_eq!(guard.unlock("n.nurse", Some("730284"), None)["result"], "granted");

    let wrong = sign_out(&mut guard, "000000", None);
    assert_eq!(wrong["result"], "refused", "{wrong}");
    assert_eq!(wrong["attempts_left"], 4, "a wrong PIN counts as for an unlock");
    // Break-glass does not sign anyone out: the reason is ignored, the PIN still checked.
    assert_eq!(sign_out(&mut guard, "111111", Some("code blue in bed 4"))["result"], "refused");
    let granted = sign_out(&mut guard, "730284", None);
    assert_eq!(granted["result"], "granted", "{granted}");

    let entries = d.audit();
    let signed_out = entries.iter().find(|e| e.kind.as_str() == "signed_out").expect("signed_out audited");
    assert_eq!(signed_out.user.as_deref(), Some("n.nurse"));
    let failed: Vec<_> = entries.iter().filter(|e| e.kind.as_str() == "unlock_failed").collect();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|e| e.details.get("purpose").map(String::as_str) == Some("sign_out")));
    assert!(entries.iter().all(|e| e.kind.as_str() != "emergency_access"));

    // The session is nobody's now: the next unlock is not a switch from n.nurse.
    assert_eq!(guard.unlock("n.nurse", Some("730284"), None)["result"], "granted");
    let last = d.audit().into_iter().rev().find(|e| e.kind.as_str() == "unlock_succeeded").unwrap();
    assert_eq!(last.details.get("switched_from"), None);

    // Only the guard signs out.
    let mut tool = d.client("tool");
    let refused = sign_out(&mut tool, "730284", None);
    assert_eq!(refused["type"], "error", "{refused}");
}

#[test]
fn holds_are_refused_where_policy_forbids_them_capped_where_it_allows_them_and_audited_with_the_user() {
    let hold = |c: &mut crate::util::Client, pin: &str| {
        c.request(
            json!({"type": "hold", "user": "n.nurse", "pin": pin, "totp": null, "emergency_reason": null}),
        )
    };
    // Not allowed in this workstation's group (the default: nowhere).
    let mut d = Daemon::new(FAST_POLICY);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let mut guard = d.client("guard");
    let refused = hold(&mut guard, "730284");
    assert_eq!(refused["result"], "not_allowed", "{refused}");
    assert!(refused["why"].as_str().unwrap().contains("group"), "{refused}");
    let entry = d.audit().into_iter().find(|e| e.kind.as_str() == "hold_refused").expect("hold_refused");
    assert_eq!(entry.user.as_deref(), Some("n.nurse"));
    assert!(d.kinds().iter().all(|k| k != "hold_started" && k != "unlock_succeeded"));
    drop(guard);
    drop(d);

    // Allowed for the group `icu`, two in a row at most.
    let policy = format!(
        "{FAST_POLICY}\n[workstation]\ngroup = \"icu\"\n[lock.hold]\nlength = \"5m\"\nmax_in_a_row = 2\ngroups = [\"icu\"]\n"
    );
    let mut d = Daemon::new(&policy);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let mut guard = d.client("guard");
    assert_eq!(hold(&mut guard, "000000")["result"], "refused", "a wrong PIN holds nothing");
    for n in 1..=2 {
        let granted = hold(&mut guard, "730284");
        assert_eq!(granted["result"], "granted", "{granted}");
        assert_eq!((granted["hold_secs"].as_u64(), granted["in_a_row"].as_u64()), (Some(300), Some(n)));
    }
    let third = hold(&mut guard, "730284");
    assert_eq!(third["result"], "not_allowed", "the third in a row: {third}");
    // An ordinary unlock starts the count again.
    assert_eq!(guard.unlock("n.nurse", Some("730284"), None)["result"], "granted");
    assert_eq!(hold(&mut guard, "730284")["in_a_row"], 1);

    let entries = d.audit();
    let started: Vec<_> = entries.iter().filter(|e| e.kind.as_str() == "hold_started").collect();
    assert_eq!(started.len(), 3);
    assert!(started.iter().all(|e| e.user.as_deref() == Some("n.nurse")));
    assert_eq!(started[1].details.get("in_a_row").map(String::as_str), Some("2"));
    assert_eq!(entries.iter().filter(|e| e.kind.as_str() == "hold_refused").count(), 1);
    let failed = entries.iter().find(|e| e.kind.as_str() == "unlock_failed").unwrap();
    assert_eq!(failed.details.get("purpose").map(String::as_str), Some("hold"));
}

fn emergency_unlock(c: &mut crate::util::Client, user: &str, pin: &str) -> serde_json::Value {
    c.request(json!({"type": "unlock", "user": user, "pin": pin, "totp": null, "emergency_reason": "code blue bed 4, need the chart"}))
}

#[test]
fn a_guesser_who_locked_the_workstation_gets_three_break_glass_tries_then_none_until_it_ends() {
    let mut d =
        Daemon::new("[lockout]\nthrottle = \"0s\"\nmax_failures = 20\nworkstation_max_failures = 5\n");
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let mut c = d.client("guard");
    for i in 0..5 {
        c.unlock(&format!("guess{i}"), Some("000001"), None);
    }
    // The same guesser types a reason and goes on guessing: three are checked...
    for i in 0..3 {
        let r = emergency_unlock(&mut c, &format!("guess{i}"), "000002");
        assert_eq!((r["result"].as_str(), r.get("emergency_closed")), (Some("refused"), None), "{r}");
    }
    // ...then not even a real clinician's right PIN is, and the lock screen is told why.
    let closed = emergency_unlock(&mut c, "n.nurse", "730284");
    assert_eq!(closed["result"], "refused", "{closed}");
    assert_eq!(closed["emergency_closed"], true, "{closed}");
    let wait = closed["retry_after_secs"].as_u64().unwrap();
    assert!((1..=300).contains(&wait), "until the workstation lockout ends: {wait}");

    let entries = d.audit();
    let alert = entries.iter().find(|e| e.kind.as_str() == "emergency_access_closed").expect("no alert");
    assert_eq!((alert.details["failures"].as_str(), alert.details["alert"].as_str()), ("3", "compliance"));
    let last = entries.iter().rev().find(|e| e.kind.as_str() == "unlock_failed").unwrap();
    assert_eq!(last.details["reason"], "emergency_closed_during_lockout");
    assert_eq!(last.user.as_deref(), Some("n.nurse"));
    assert!(entries.iter().all(|e| e.kind.as_str() != "emergency_access"), "nothing was granted");
}

#[test]
fn a_script_hammering_unlock_as_a_tool_cannot_starve_the_lock_screen() {
    let policy = "[lockout]\nthrottle = \"0s\"\nworkstation_max_failures = 1000\nmax_failures = 20\n\
                  [service]\nmax_attempts_per_minute = 5\ntool_unlock = true\n";
    let mut d = Daemon::new(policy);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.add_user("d.doctor", "Dan Doctor", "physician", Some("915372"), false);
    d.start();
    let mut script = d.client("tool");
    for i in 0..40 {
        assert_eq!(script.unlock(&format!("bogus{i}"), Some("123456"), None)["result"], "refused");
    }
    assert_eq!(
        script.unlock("n.nurse", Some("730284"), None)["retry_after_secs"].as_u64().map(|s| s > 0),
        Some(true),
        "the tools' own budget is spent"
    );
    // The clinician at the lock screen is still heard.
    let mut guard = d.client("guard");
    assert_eq!(guard.unlock("n.nurse", Some("730284"), None)["result"], "granted");
    d.stop();
    let entries = d.audit();
    let limited: Vec<_> = entries.iter().filter(|e| e.kind.as_str() == "attempts_rate_limited").collect();
    assert!(limited.iter().all(|e| e.details["clients"] == "tools"), "{limited:?}");
    assert!(limited.iter().map(|e| e.details["count"].parse::<u32>().unwrap()).sum::<u32>() >= 30);
}

#[test]
fn a_tool_may_not_unlock_unless_the_machine_policy_says_so_and_its_check_takes_over_no_session() {
    let mut d = Daemon::new(FAST_POLICY);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let mut tool = d.client("tool");
    let refused = tool.unlock("n.nurse", Some("730284"), None);
    assert_eq!(refused["code"], "not_allowed", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("service.tool_unlock"), "{refused}");
    assert!(d.kinds().iter().all(|k| k != "unlock_succeeded" && k != "unlock_failed"), "nothing was checked");
    drop(tool);
    drop(d);

    let mut d = Daemon::new(&format!("{FAST_POLICY}[service]\ntool_unlock = true\n"));
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.add_user("d.doctor", "Dan Doctor", "physician", Some("915372"), false);
    d.start();
    let mut guard = d.client("guard");
    assert_eq!(guard.unlock("d.doctor", Some("915372"), None)["result"], "granted");
    let mut tool = d.client("tool");
    assert_eq!(tool.unlock("n.nurse", Some("730284"), None)["result"], "granted");
    let break_glass = emergency_unlock(&mut tool, "n.nurse", "730284");
    assert_eq!(break_glass["code"], "not_allowed", "break-glass is the lock screen's: {break_glass}");
    // The session is still the doctor's: the guard's next lock is attributed to him.
    let ack = guard.request(json!({"type": "event", "event": {"kind": "locked", "reason": "idle"}}));
    assert_eq!(ack["type"], "ack");
    let entries = d.audit();
    let by_tool = entries.iter().rev().find(|e| e.kind.as_str() == "unlock_succeeded").unwrap();
    assert_eq!(by_tool.user.as_deref(), Some("n.nurse"));
    assert_eq!(by_tool.details.get("client").map(String::as_str), Some("tool"));
    assert_eq!(by_tool.details.get("switched_from"), None, "a tool's check switches no session");
    let locked = entries.iter().rev().find(|e| e.kind.as_str() == "locked").unwrap();
    assert_eq!(locked.user.as_deref(), Some("d.doctor"));
}
