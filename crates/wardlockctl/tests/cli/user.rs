use std::process::Command;

use crate::util::Ctl;

fn add_nurse(ctl: &Ctl) -> String {
    let run = ctl
        .run_with_stdin(
            &["user", "add", "n.nurse", "--name", "Nora Nurse", "--role", "nurse", "--pin-stdin", "--totp"],
            "730284\n",
        )
        .ok();
    let uri = run
        .stdout
        .lines()
        .find(|l| l.starts_with("otpauth://totp/"))
        .expect("otpauth URI printed")
        .to_owned();
    assert!(run.stdout.contains('█'), "a terminal QR code is printed");
    uri
}

#[test]
fn totp_secret_from_user_add_agrees_with_oathtool() {
    let ctl = Ctl::new();
    let uri = add_nurse(&ctl);
    assert!(uri.contains("issuer=Wardlock"), "{uri}");
    let secret = uri.split("secret=").nth(1).unwrap().split('&').next().unwrap();
    // oathtool prints the codes of a fixed time; ours must match at each.
    for (time, window) in [("2026-11-23 08:00:00", 0), ("2030-01-01 00:00:29", 0), ("1970-01-01 00:00:59", 0)]
    {
        let out = Command::new("oathtool")
            .args(["--totp", "-b", secret, "--now", &format!("{time} UTC"), "-w", &window.to_string()])
            .output()
            .expect("oathtool is needed (apt-get install oathtool; `make setup` does it)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let theirs = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let ours = ours_at(secret, time);
        assert_eq!(ours, theirs, "at {time}");
    }
}

fn ours_at(secret_base32: &str, time: &str) -> String {
    use wardlock_core::clock::UtcMillis;
    use wardlock_core::policy::TotpPolicy;
    use wardlock_core::unlock::{totp_code, TotpSeed};
    let bytes = base32_decode(secret_base32);
    let iso = time.replace(' ', "T") + "Z";
    let t = UtcMillis::parse_rfc3339(&iso).unwrap();
    totp_code(&TotpPolicy::default(), &TotpSeed::new(bytes).unwrap(), t).unwrap()
}

/// RFC 4648 base32 without padding, as in otpauth URIs.
fn base32_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = alphabet.iter().position(|&a| a == c).expect("base32") as u64;
        bits = (bits << 5) | v;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[test]
fn pin_is_not_printed_or_stored_in_clear() {
    let ctl = Ctl::new();
    let run = ctl
        .run_with_stdin(
            &["user", "add", "d.doc", "--name", "Dee Doc", "--role", "physician", "--pin-stdin"],
            "730284\n",
        )
        .ok();
    assert!(!run.stdout.contains("730284") && !run.stderr.contains("730284"));
    let listing = ctl.run(&["user", "list"]).ok();
    assert!(listing.stdout.contains("d.doc") && !listing.stdout.contains("730284"));
    assert!(!listing.stdout.contains("argon2"), "no hashes in listings");
    let mut bytes = std::fs::read(ctl.db()).unwrap();
    bytes.extend(std::fs::read(format!("{}-wal", ctl.db().display())).unwrap_or_default());
    assert!(!bytes.windows(6).any(|w| w == b"730284"));
}

#[test]
fn common_pins_are_refused_and_nothing_is_written() {
    let ctl = Ctl::new();
    for pin in ["1234", "000000", "123456", "abcdef"] {
        let run = ctl
            .run_with_stdin(
                &["user", "add", "x", "--name", "X", "--role", "nurse", "--pin-stdin"],
                &format!("{pin}\n"),
            )
            .failed();
        assert!(run.stderr.contains("PIN refused"), "{pin}: {}", run.stderr);
    }
    let run = ctl.run(&["user", "list"]).ok();
    assert!(!run.stdout.contains("\nx "), "{}", run.stdout);
}

#[test]
fn user_changes_are_audited() {
    let ctl = Ctl::new();
    add_nurse(&ctl);
    ctl.run(&["user", "disable", "n.nurse"]).ok();
    ctl.run_with_stdin(&["user", "reset", "n.nurse", "--pin-stdin"], "582039\n").ok();
    let run = ctl.run(&["user", "add", "n.nurse", "--name", "N", "--role", "nurse", "--totp"]).failed();
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    let export = ctl.run(&["audit", "export", "--format", "json"]).ok();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&export.stdout).unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["user_added", "user_disabled", "user_changed"]);
    assert!(entries.iter().all(|e| e["os_account"].as_str().is_some_and(|a| !a.is_empty())));
    let list = ctl.run(&["user", "list", "--json"]).ok();
    assert!(list.stdout.contains("\"disabled\": true"), "{}", list.stdout);
}

#[test]
fn unknown_user_and_missing_database_get_clear_errors() {
    let ctl = Ctl::new();
    let run = ctl.run(&["user", "list"]).failed();
    assert!(run.stderr.contains("no Wardlock database"), "{}", run.stderr);
    add_nurse(&ctl);
    let run = ctl.run(&["user", "disable", "nobody"]).failed();
    assert!(run.stderr.contains("no user \"nobody\""), "{}", run.stderr);
}

#[test]
fn lost_data_key_is_reported_not_regenerated() {
    let ctl = Ctl::new();
    add_nurse(&ctl);
    std::fs::remove_dir_all(ctl.path("keys")).unwrap();
    let run = ctl
        .run_with_stdin(
            &["user", "add", "d.doc", "--name", "D", "--role", "physician", "--pin-stdin", "--totp"],
            "582039\n",
        )
        .failed();
    assert!(run.stderr.contains("data key") && run.stderr.contains("missing"), "{}", run.stderr);
    assert!(!ctl.path("keys").join("wardlock-data-key.key").exists());
    assert!(!ctl.path("keys").join("wardlock-data-key.cred").exists());
}

#[test]
fn names_and_roles_must_be_printable() {
    let ctl = Ctl::new();
    for (name, role) in [("", "nurse"), ("Nora\u{1b}[2J", "nurse"), ("Nora", "   ")] {
        let run = ctl
            .run_with_stdin(
                &["user", "add", "n.nurse", "--name", name, "--role", role, "--pin-stdin"],
                "730284\n",
            )
            .failed();
        assert!(run.stderr.contains("printable"), "{name:?}/{role:?}: {}", run.stderr);
    }
    let run = ctl
        .run_with_stdin(&["user", "add", "bad id!", "--name", "N", "--role", "r", "--pin-stdin"], "730284\n")
        .failed();
    assert!(run.stderr.contains("not valid"), "{}", run.stderr);
}

/// The whole path: a user enrolled with the CLI unlocks with a code from oathtool, once.
#[test]
fn cli_enrolled_totp_unlocks_once_even_across_restart() {
    use wardlock_core::policy::ValidPolicy;
    use wardlock_core::secret::SecretString;
    use wardlock_core::unlock::{Attempt, Outcome, RefusalReason};
    use wardlock_store::auth::{attempt_unlock, Context, Purpose};
    use wardlock_store::secrets::{CredentialFileStore, DataKey};
    use wardlock_store::store::OpenOptions;
    use wardlock_store::Store;

    let ctl = Ctl::new();
    let uri = add_nurse(&ctl);
    let secret = uri.split("secret=").nth(1).unwrap().split('&').next().unwrap();
    let out = Command::new("oathtool").args(["--totp", "-b", secret]).output().expect("oathtool");
    let code = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let keys = CredentialFileStore::with_best_sealing(ctl.path("keys"));
    let options = OpenOptions { create: false, workstation_id: "ignored".into() };
    let attempt =
        Attempt { user_id: "n.nurse".into(), totp: Some(SecretString::new(&code)), ..Attempt::default() };
    let policy = ValidPolicy::default();
    let try_unlock = |at_secs: u64| {
        let mut store = Store::open(&ctl.db(), &options).unwrap();
        let key = DataKey::open_or_create(&keys, &store).unwrap();
        let at = now_plus(at_secs);
        attempt_unlock(&mut store, &key, &policy, &attempt, Purpose::Unlock, &Context::default(), at)
            .unwrap()
            .outcome
    };
    assert!(matches!(try_unlock(0), Outcome::Granted { .. }));
    // Each call opens the database afresh: a restart between the two uses.
    assert!(matches!(try_unlock(2), Outcome::Refused { reason: RefusalReason::TotpReplayed, .. }));
}

fn now_plus(secs: u64) -> wardlock_core::clock::UtcMillis {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    wardlock_core::clock::UtcMillis::from_unix_millis(since.as_millis() as i64 + secs as i64 * 1000)
}
