//! What `wardlockd` logs, at its most verbose, never holds a secret a client sent: not a
//! PIN (right or wrong), not a TOTP code, not an administrator's PIN, not an enrollment
//! ticket or a TOTP seed.

use serde_json::json;

use crate::util::{oathtool, totp_secret, Daemon, FAST_POLICY};

#[test]
fn no_pin_totp_code_ticket_or_seed_reaches_the_log_even_at_trace() {
    let mut d = Daemon::new(&format!("{FAST_POLICY}[unlock]\nmethods = [\"pin\", \"totp\"]\n"))
        .env("WARDLOCK_LOG", "trace");
    let seed = d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), true).unwrap();
    d.add_user("it.admin", "Ida Admin", "admin", Some("915372"), false);
    d.start();
    let mut guard = d.client("guard");

    let code = oathtool(&seed);
    let mut secrets = vec!["730284".to_owned(), "915372".to_owned(), "481953".to_owned(), code.clone()];
    assert_eq!(guard.unlock("n.nurse", Some("481953"), None)["result"], "refused");
    assert_eq!(guard.unlock("n.nurse", Some("730284"), None)["result"], "granted");
    assert_eq!(guard.unlock("n.nurse", None, Some(&code))["result"], "granted");
    // A request that fails to parse, with a PIN in it.
    guard.send(json!({"type": "unlock", "user": "n.nurse", "pin": "730284", "totp": 5}));
    assert_eq!(guard.read().unwrap()["code"], "bad_request");

    let mut c = d.client("guard");
    let quit = c.request(json!({"type": "quit", "user": "it.admin", "pin": "915372", "totp": null}));
    assert_eq!(quit["result"], "authorized");
    let authorized = c.request(json!({
        "type": "enroll", "step": "authorize",
        "admin": {"user": "it.admin", "pin": "915372", "totp": null},
        "user": "n.new", "display_name": "Nils New",
    }));
    let ticket = authorized["ticket"].as_str().unwrap_or_else(|| panic!("{authorized}")).to_owned();
    let pin_set = c.request(json!({"type": "enroll", "step": "set_pin", "ticket": ticket, "pin": "640271"}));
    assert_eq!(pin_set["result"], "pin_set");
    let started = c.request(json!({"type": "enroll", "step": "start_totp", "ticket": ticket}));
    let new_seed = totp_secret(started["otpauth_uri"].as_str().unwrap());
    secrets.extend([ticket, "640271".to_owned(), new_seed, seed]);
    d.wait_for_audit("admin_approved", 2);

    let log = d.log_text();
    assert!(log.contains("event"), "the log was not captured: {log}");
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret ({} characters) is in the log:\n{log}",
            secret.len()
        );
    }
}
