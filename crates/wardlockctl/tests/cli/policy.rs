use base64::Engine as _;

use crate::util::{s, Ctl};

#[test]
fn check_prints_the_effective_policy() {
    let ctl = Ctl::new();
    let file = ctl.write("p.toml", "[lock]\nidle_timeout = \"2m\"\n");
    let run = ctl.run(&["policy", "check", s(&file)]).ok();
    assert!(run.stdout.contains("idle_timeout = \"2m\""), "{}", run.stdout);
    assert!(run.stdout.contains("max_failures = 5"), "defaults are shown too:\n{}", run.stdout);
}

#[test]
fn check_rejects_malformed_files_naming_the_field() {
    let ctl = Ctl::new();
    let cases = [
        ("bad toml", "[lock\nidle_timeout = \"5m\"\n", "p.toml:1:"),
        ("unknown key", "[lock]\nidle_timout = \"5m\"\n", "lock.idle_timout"),
        (
            "out of range",
            "[lock]\nidle_timeout = \"0s\"\n",
            "lock.idle_timeout: must be between 15s and 8h, got 0s",
        ),
        ("wrong type", "[lockout]\nmax_failures = \"five\"\n", "lockout.max_failures"),
        ("not a duration", "[lock]\nwarning = \"soon\"\n", "lock.warning"),
        ("unknown section", "[screensaver]\non = true\n", "screensaver: unknown section"),
    ];
    for (what, text, expected) in cases {
        let file = ctl.write("p.toml", text);
        let run = ctl.run(&["policy", "check", s(&file)]).failed();
        assert!(run.stderr.contains(expected), "{what}: expected {expected:?} in:\n{}", run.stderr);
    }
}

#[test]
fn check_lists_every_problem() {
    let ctl = Ctl::new();
    let file =
        ctl.write("p.toml", "[lock]\nbogus = 1\n[lockout]\nmax_failures = \"x\"\n[pin]\nminimum = 4\n");
    let run = ctl.run(&["policy", "check", s(&file)]).failed();
    for field in ["lock.bogus", "lockout.max_failures", "pin.minimum"] {
        assert!(run.stderr.contains(field), "{field} missing from:\n{}", run.stderr);
    }
    assert!(run.stderr.contains("3 problems"), "{}", run.stderr);
}

#[test]
fn check_rejects_bad_phi_entries_naming_the_entry_and_saying_what_to_do() {
    let ctl = Ctl::new();
    let cases = [
        (
            "no matcher",
            "[[phi.apps]]\nname = \"EHR\"\n",
            "phi.apps[0]: needs a non-empty wm_class or exe",
        ),
        (
            "unknown tier",
            "[phi.tiers.ehr]\nidle_timeout = \"28m\"\nwarning = \"1m\"\n[[phi.apps]]\nname = \"PACS\"\nwm_class = \"Pacs\"\ntier = \"pacs\"\n",
            "phi.apps[0].tier: unknown tier \"pacs\"; define it under [phi.tiers.pacs] (defined: ehr)",
        ),
        (
            "tier timeout out of range",
            "[phi.tiers.pacs]\nidle_timeout = \"9h\"\nwarning = \"1m\"\n",
            "phi.tiers.pacs.idle_timeout: must be between 15s and 8h, got 9h",
        ),
        ("unknown matcher key", "[[phi.apps]]\nname = \"EHR\"\nwindow_class = \"EHR\"\n", "window_class"),
        ("hold too long", "[lock.hold]\nlength = \"2h\"\n", "lock.hold.length: must be between 1m and 1h"),
    ];
    for (what, text, expected) in cases {
        let file = ctl.write("p.toml", text);
        let run = ctl.run(&["policy", "check", s(&file)]).failed();
        assert!(run.stderr.contains(expected), "{what}: expected {expected:?} in:\n{}", run.stderr);
    }
}

fn signed_fixture(ctl: &Ctl) -> std::path::PathBuf {
    let policy = ctl.write("icu.toml", "[lock]\nidle_timeout = \"2m\"\nwarning = \"20s\"\n");
    ctl.run(&["policy", "keygen", "--out", s(&ctl.path("keys-it"))]).ok();
    let signed = ctl.path("icu.signed.json");
    let key = ctl.path("keys-it/policy-signing.key");
    ctl.run(&["policy", "sign", s(&policy), "--key", s(&key), "--out", s(&signed), "--group", "icu"]).ok();
    signed
}

#[test]
fn signed_policy_verifies_and_any_changed_byte_fails() {
    let ctl = Ctl::new();
    let signed = signed_fixture(&ctl);
    let pubkey = ctl.path("keys-it/policy-signing.pub");
    let run = ctl.run(&["policy", "verify", s(&signed), "--pubkey", s(&pubkey)]).ok();
    assert!(run.stdout.contains("signature good") && run.stdout.contains("group icu"), "{}", run.stdout);

    let original = std::fs::read_to_string(&signed).unwrap();
    let envelope: serde_json::Value = serde_json::from_str(&original).unwrap();
    // Change one byte of the signed content: decode the body, flip a byte, re-encode.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body = b64.decode(envelope["body"].as_str().unwrap()).unwrap();
    let at = body.windows(2).position(|w| w == b"2m").unwrap();
    body[at] = b'9';
    let tampered = original.replace(envelope["body"].as_str().unwrap(), &b64.encode(&body));
    std::fs::write(&signed, &tampered).unwrap();
    let run = ctl.run(&["policy", "verify", s(&signed), "--pubkey", s(&pubkey)]).failed();
    assert!(run.stderr.contains("REFUSED"), "{}", run.stderr);

    // And one byte of the file itself, anywhere in the body or signature text.
    let start = original.find("\"body\"").unwrap() + 9;
    for offset in (start..original.len() - 10).step_by(17) {
        let mut bytes = original.clone().into_bytes();
        if !bytes[offset].is_ascii_alphanumeric() {
            continue;
        }
        bytes[offset] = if bytes[offset] == b'A' { b'B' } else { b'A' };
        std::fs::write(&signed, &bytes).unwrap();
        ctl.run(&["policy", "verify", s(&signed), "--pubkey", s(&pubkey)]).failed();
    }
}

#[test]
fn policy_signed_by_another_key_is_refused() {
    let ctl = Ctl::new();
    let signed = signed_fixture(&ctl);
    ctl.run(&["policy", "keygen", "--out", s(&ctl.path("other"))]).ok();
    let run = ctl
        .run(&["policy", "verify", s(&signed), "--pubkey", s(&ctl.path("other/policy-signing.pub"))])
        .failed();
    assert!(run.stderr.contains("does not trust"), "{}", run.stderr);
}

#[test]
fn invalid_policy_is_never_signed() {
    let ctl = Ctl::new();
    ctl.run(&["policy", "keygen", "--out", s(&ctl.path("k"))]).ok();
    let bad = ctl.write("bad.toml", "[lock]\nidle_timeout = \"1s\"\n");
    let out = ctl.path("bad.signed.json");
    ctl.run(&["policy", "sign", s(&bad), "--key", s(&ctl.path("k/policy-signing.key")), "--out", s(&out)])
        .failed();
    assert!(!out.exists());
    // Nor may a central policy name its own trusted signers.
    let sneaky = ctl.write("sneaky.toml", "[sync]\ntrusted_keys = [\"AAAA\"]\n");
    ctl.run(&["policy", "sign", s(&sneaky), "--key", s(&ctl.path("k/policy-signing.key")), "--out", s(&out)])
        .failed();
}

#[test]
fn keygen_writes_an_owner_only_private_key_and_will_not_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let ctl = Ctl::new();
    let dir = ctl.path("k");
    ctl.run(&["policy", "keygen", "--out", s(&dir)]).ok();
    let mode = std::fs::metadata(dir.join("policy-signing.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(dir.join("policy-signing.key")).unwrap();
    let run = ctl.run(&["policy", "keygen", "--out", s(&dir)]).failed();
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(std::fs::read(dir.join("policy-signing.key")).unwrap(), before);
}

#[test]
fn every_command_has_help_with_an_example() {
    let ctl = Ctl::new();
    for cmd in [
        &["policy", "check"][..],
        &["policy", "keygen"],
        &["policy", "sign"],
        &["policy", "verify"],
        &["user", "add"],
        &["user", "reset"],
        &["user", "disable"],
        &["user", "list"],
        &["audit", "verify"],
        &["audit", "export"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let run = ctl.run(&args).ok();
        assert!(run.stdout.contains("Example:"), "{cmd:?} --help has no example:\n{}", run.stdout);
        assert!(run.stdout.contains("--db"), "{cmd:?} --help does not show --db");
    }
}

#[test]
fn shipped_machine_policy_template_is_valid() {
    let ctl = Ctl::new();
    let template = concat!(env!("CARGO_MANIFEST_DIR"), "/../../installers/linux/policy.toml");
    let run = ctl.run(&["policy", "check", template]).ok();
    assert!(run.stdout.contains("[lock.groups.icu]"), "{}", run.stdout);
}
