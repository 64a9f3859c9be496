//! Enrollment at the workstation: an administrator authorises, the clinician sets a PIN
//! and proves a TOTP seed, all through `wardlockd`.

use serde_json::{json, Value};

use crate::util::{oathtool, totp_secret, Client, Daemon, FAST_POLICY};

fn authorize(c: &mut Client, admin: &str, pin: &str, user: &str, name: Option<&str>) -> Value {
    c.request(json!({
        "type": "enroll", "step": "authorize",
        "admin": {"user": admin, "pin": pin, "totp": null},
        "user": user, "display_name": name,
    }))
}

#[test]
fn an_administrator_enrolls_a_new_clinician_with_pin_and_totp() {
    let mut d = Daemon::new(FAST_POLICY);
    d.add_user("it.admin", "Ida Admin", "admin", Some("915372"), false);
    d.start();
    let mut c = d.client("guard");

    let ok = authorize(&mut c, "it.admin", "915372", "n.new", Some("Nils New"));
    assert_eq!(ok["result"], "authorized", "{ok}");
    let ticket = ok["ticket"].as_str().unwrap().to_owned();
    assert_eq!(ticket.len(), 32);

    let set_pin = |c: &mut Client, pin: &str| {
        c.request(json!({"type": "enroll", "step": "set_pin", "ticket": ticket, "pin": pin}))
    };
    for weak in ["123456", "000000", "1234"] {
        let r = set_pin(&mut c, weak);
        assert_eq!(r["result"], "refused", "{weak} accepted");
        assert!(!r["message"].as_str().unwrap().contains(weak), "the refusal echoes the PIN: {r}");
    }
    assert_eq!(set_pin(&mut c, "640271")["result"], "pin_set");

    let started = c.request(json!({"type": "enroll", "step": "start_totp", "ticket": ticket}));
    let uri = started["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let secret = totp_secret(uri);
    let wrong =
        c.request(json!({"type": "enroll", "step": "confirm_totp", "ticket": ticket, "code": "000000"}));
    assert_eq!(wrong["result"], "refused");
    let code = oathtool(&secret);
    let confirmed =
        c.request(json!({"type": "enroll", "step": "confirm_totp", "ticket": ticket, "code": code}));
    assert_eq!(confirmed["result"], "totp_confirmed", "{confirmed}");

    // The new clinician unlocks; the code that proved the seed cannot be replayed.
    assert_eq!(c.unlock("n.new", None, Some(&code))["result"], "refused", "enrollment code replayed");
    assert_eq!(c.unlock("n.new", Some("640271"), None)["result"], "granted");

    let changes: Vec<_> = d
        .audit()
        .into_iter()
        .filter(|e| e.user.as_deref() == Some("n.new") && e.kind.as_str().starts_with("user_"))
        .map(|e| (e.kind.as_str().to_owned(), e.details.get("by").cloned()))
        .collect();
    let by = Some("it.admin".to_owned());
    assert_eq!(
        changes,
        [("user_added".into(), by.clone()), ("user_changed".into(), by.clone()), ("user_changed".into(), by)]
    );
    // Nothing secret in the log.
    let log = serde_json::to_string(&d.audit().iter().map(|e| &e.details).collect::<Vec<_>>()).unwrap();
    assert!(!log.contains("640271") && !log.contains(&secret));
}

#[test]
fn enrollment_needs_an_administrator_and_a_ticket_of_this_connection() {
    let mut d = Daemon::new(FAST_POLICY);
    d.add_user("it.admin", "Ida Admin", "admin", Some("915372"), false);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let mut c = d.client("guard");

    let nurse = authorize(&mut c, "n.nurse", "730284", "n.new", Some("Nils New"));
    assert_eq!(nurse["result"], "not_authorized", "{nurse}");
    let wrong_pin = authorize(&mut c, "it.admin", "111111", "n.new", Some("Nils New"));
    assert_eq!(wrong_pin["result"], "not_authorized");
    let unknown = authorize(&mut c, "it.admin", "915372", "n.new", None);
    assert_eq!(unknown["result"], "refused", "a new user needs a name: {unknown}");

    let ok = authorize(&mut c, "it.admin", "915372", "n.nurse", None);
    let ticket = ok["ticket"].as_str().unwrap().to_owned();
    let mut other = d.client("tool");
    let stolen =
        other.request(json!({"type": "enroll", "step": "set_pin", "ticket": ticket, "pin": "640271"}));
    assert_eq!(stolen["result"], "refused", "a ticket from another connection worked: {stolen}");
    let guessed =
        c.request(json!({"type": "enroll", "step": "set_pin", "ticket": "0".repeat(32), "pin": "640271"}));
    assert_eq!(guessed["result"], "refused");
    // A wrong ticket also ends the right one: no guessing on a live enrollment.
    let after = c.request(json!({"type": "enroll", "step": "set_pin", "ticket": ticket, "pin": "640271"}));
    assert_eq!(after["result"], "refused");
    assert!(!d.kinds().contains(&"user_changed".to_owned()));
}
