//! PHI applications end to end: the real `wardlockd` and guard under Xvfb with openbox,
//! stand-in applications named by `WM_CLASS` (an `xterm -class EHR` and `phi-standin`),
//! and the X server's own word on what is on screen.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Mutex;
use std::time::{Duration, Instant};

use wardlock_e2e::{wait_for, Agent, App, Desktop, Guard, CURTAIN, STANDIN};

static SERIAL: Mutex<()> = Mutex::new(());

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The group's timing is 30 s; the EHR tier's 22 s, the PACS tier's 15 s.
const PHI_POLICY: &str = r#"
[lock]
idle_timeout = "30s"
warning = "3s"
synthetic_input_keeps_awake = true
when_unguarded = "audit_only"

[lockout]
throttle = "0s"

[phi]
on_switch = "close"
close_grace = "2s"

[phi.tiers.ehr]
idle_timeout = "22s"
warning = "3s"

[phi.tiers.pacs]
idle_timeout = "15s"
warning = "3s"

[[phi.apps]]
name = "EHR"
wm_class = "EHR"
tier = "ehr"

[[phi.apps]]
name = "PACS"
wm_class = "Pacs"
tier = "pacs"
"#;

fn setup(policy: &str) -> (std::sync::MutexGuard<'static, ()>, Desktop, Agent, Guard) {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let desktop = Desktop::start(1280, 800);
    let agent = Agent::start(policy);
    agent.add_user("n.nurse", "Nora Nightingale", "nurse", "730284", false);
    agent.add_user("o.omar", "Omar Said", "nurse", "482913", false);
    let guard = Guard::start(&desktop, &agent);
    (serial, desktop, agent, guard)
}

fn unlock(desktop: &Desktop, user: &str, pin: &str) {
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    desktop.type_pin_and_press(user, pin, 0);
    desktop.wait_unlocked(SECS(30));
}

/// Nora unlocks once, so that the session (and what she opens next) is hers.
fn nora_owns_the_session(desktop: &Desktop, guard: &Guard) {
    guard.lock_now();
    unlock(desktop, "n.nurse", "730284");
}

fn entries(agent: &Agent, kind: &str) -> Vec<serde_json::Value> {
    agent.audit().into_iter().filter(|e| e["kind"] == kind).collect()
}

#[track_caller]
fn wait_entries(agent: &Agent, kind: &str, n: usize, within: Duration) -> Vec<serde_json::Value> {
    wait_for(&format!("{n} `{kind}` entries"), within, || {
        let found = entries(agent, kind);
        (found.len() >= n).then_some(found)
    })
}

fn apps_of(found: &[serde_json::Value]) -> Vec<String> {
    let mut apps: Vec<String> =
        found.iter().map(|e| e["details"]["app"].as_str().unwrap().to_owned()).collect();
    apps.sort();
    apps
}

#[test]
fn phi_windows_are_hidden_at_the_lock_given_back_to_their_clinician_and_closed_when_another_unlocks() {
    let (_serial, desktop, agent, guard) = setup(PHI_POLICY);
    nora_owns_the_session(&desktop, &guard);
    let mut ehr = App::xterm(&desktop, "EHR", "EHR chart", "60x10+50+60");
    // A second PHI application, that ignores WM_DELETE_WINDOW, and one that is not PHI.
    let mut pacs = App::standin(&desktop, "Pacs", "PACS viewer", (600, 300), true);
    let notes = App::xterm(&desktop, "Notes", "Ward notes", "40x5+700+40");
    let (ehr_at, pacs_at) = (ehr.placed(&desktop), pacs.placed(&desktop));
    assert!(ehr_at.viewable && pacs_at.viewable);

    // The lock: both PHI windows unmapped (the X server says so), the other one left alone.
    guard.lock_now();
    desktop.wait("the PHI windows unmapped", SECS(10), || {
        (!ehr.state(&desktop)?.viewable && !pacs.state(&desktop)?.viewable).then_some(())
    });
    assert!(notes.state(&desktop).unwrap().viewable, "a non-PHI window is not touched");
    let hidden = wait_entries(&agent, "phi_app_hidden", 2, SECS(10));
    assert_eq!(apps_of(&hidden), ["EHR", "PACS"]);
    assert!(hidden.iter().all(|e| e["details"]["owner"] == "n.nurse"), "{hidden:?}");
    let title = desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    assert_eq!(title, "Wardlock — locked: session of Nora N.", "whose session it is, shortened");

    // Nora again: both come back where they were.
    unlock(&desktop, "n.nurse", "730284");
    desktop.wait("the PHI windows back", SECS(10), || {
        (ehr.state(&desktop)?.viewable && pacs.state(&desktop)?.viewable).then_some(())
    });
    // Where they were (openbox animates the de-iconify, so the frame gets there in steps).
    for (app, before) in [(&ehr, &ehr_at), (&pacs, &pacs_at)] {
        let area = |w: &wardlock_e2e::Window| (w.x, w.y, w.width, w.height);
        desktop.wait("the window back where it was", SECS(5), || {
            (area(&app.state(&desktop)?) == area(before)).then_some(())
        });
    }
    assert_eq!(apps_of(&wait_entries(&agent, "phi_app_restored", 2, SECS(10))), ["EHR", "PACS"]);
    assert!(ehr.alive() && pacs.alive());

    // Locked again, and Omar unlocks: Nora's charts close, the EHR when asked, the PACS
    // viewer (which ignores the request) by SIGTERM after the 2 s grace.
    guard.lock_now();
    desktop.wait("the PHI windows unmapped", SECS(10), || {
        (!ehr.state(&desktop)?.viewable && !pacs.state(&desktop)?.viewable).then_some(())
    });
    let asked = Instant::now();
    unlock(&desktop, "o.omar", "482913");
    wait_for("the EHR to close", SECS(10), || (!ehr.alive()).then_some(()));
    wait_for("the PACS viewer to be ended", SECS(15), || (!pacs.alive()).then_some(()));
    assert!(asked.elapsed() >= SECS(2), "the PACS viewer was ended before its grace");
    let closed = wait_entries(&agent, "phi_app_closed", 2, SECS(10));
    let how: Vec<(String, String, String)> = closed
        .iter()
        .map(|e| {
            let d = &e["details"];
            let text = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            (text("app"), text("how"), text("reason"))
        })
        .collect();
    assert!(how.contains(&("EHR".into(), "wm_delete".into(), "user_switch".into())), "{how:?}");
    assert!(how.contains(&("PACS".into(), "sigterm".into(), "user_switch".into())), "{how:?}");
    assert!(closed.iter().all(|e| e["details"]["owner"] == "n.nurse"));
    assert!(notes.state(&desktop).unwrap().viewable, "the non-PHI window is still there");
    assert_eq!(entries(&agent, "phi_app_close_failed").len(), 0);
}

/// Input now, then the time until the lock windows are up.
fn time_to_lock(desktop: &Desktop) -> Duration {
    desktop.xdotool(&["mousemove_relative", "--", "5", "5"]);
    let start = Instant::now();
    desktop.wait_lock_title("the idle lock", SECS(60), |t| t.starts_with("Wardlock — locked"));
    start.elapsed()
}

#[track_caller]
fn wait_timeout_in_force(guard: &Guard, secs: u64) {
    let field = format!("idle_timeout_secs={secs} ");
    wait_for(&format!("the guard to apply a {secs} s timeout"), SECS(10), || {
        guard.log_events("timings_in_force").into_iter().any(|e| e.contains(&field)).then_some(())
    });
}

#[test]
fn the_strictest_tier_among_the_open_phi_applications_sets_the_idle_timeout() {
    let (_serial, desktop, agent, guard) = setup(PHI_POLICY);
    nora_owns_the_session(&desktop, &guard);

    // Nothing of PHI open: the group's 30 s.
    let none = time_to_lock(&desktop);
    assert!((SECS(27)..SECS(36)).contains(&none), "no PHI app: locked after {none:?}, not ~30 s");
    unlock(&desktop, "n.nurse", "730284");

    // The EHR open: its tier's 22 s.
    let _ehr = App::xterm(&desktop, "EHR", "EHR chart", "60x10+50+60");
    wait_timeout_in_force(&guard, 22);
    let ehr_only = time_to_lock(&desktop);
    assert!((SECS(19)..SECS(27)).contains(&ehr_only), "EHR open: locked after {ehr_only:?}, not ~22 s");
    unlock(&desktop, "n.nurse", "730284");

    // And the PACS viewer: the stricter 15 s.
    let _pacs = App::standin(&desktop, "Pacs", "PACS viewer", (600, 300), false);
    wait_timeout_in_force(&guard, 15);
    let both = time_to_lock(&desktop);
    assert!((SECS(12)..SECS(19)).contains(&both), "EHR and PACS open: locked after {both:?}, not ~15 s");
    let locks = entries(&agent, "locked");
    assert_eq!(locks.iter().filter(|e| e["details"]["reason"] == "idle").count(), 3);
}

#[test]
fn sign_out_closes_the_clinicians_apps_the_lock_stays_and_abandoned_apps_close_after_close_after() {
    let policy = PHI_POLICY.replace("close_grace = \"2s\"", "close_grace = \"2s\"\nclose_after = \"1m\"");
    let (_serial, desktop, agent, guard) = setup(&policy);
    nora_owns_the_session(&desktop, &guard);
    let mut ehr = App::xterm(&desktop, "EHR", "EHR chart", "60x10+50+60");
    guard.lock_now();
    desktop.wait("the EHR unmapped", SECS(10), || (!ehr.state(&desktop)?.viewable).then_some(()));

    // Sign out: user ID, PIN, then the Sign out button (after Unlock in the tab order).
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    desktop.type_pin_and_press("n.nurse", "730284", 2);
    desktop.wait_lock_title("the sign-out", SECS(30), |t| t == "Wardlock — signed out");
    wait_for("the EHR to close", SECS(10), || (!ehr.alive()).then_some(()));
    let signed_out = agent.wait_audit("signed_out", SECS(10));
    assert_eq!(signed_out["user"], "n.nurse");
    let closed = wait_entries(&agent, "phi_app_closed", 1, SECS(10));
    assert_eq!(closed[0]["details"]["reason"], "signed_out", "{closed:?}");
    assert!(!desktop.lock_windows().is_empty() && !desktop.curtains().is_empty(), "the lock stays");
    assert_eq!(entries(&agent, "unlock_succeeded").len(), 1, "a sign-out is no unlock");

    // A PHI application that opens behind the lock is hidden at once, and closed when it
    // has been held for close_after (1 min): nobody came back for it.
    let mut pacs = App::standin(&desktop, "Pacs", "PACS viewer", (600, 300), true);
    let held = Instant::now();
    desktop.wait("the new PHI window hidden", SECS(10), || (!pacs.state(&desktop)?.viewable).then_some(()));
    wait_for("the abandoned PACS viewer to be ended", SECS(90), || (!pacs.alive()).then_some(()));
    assert!(held.elapsed() >= SECS(55), "closed after {:?}, before close_after", held.elapsed());
    let closed = wait_entries(&agent, "phi_app_closed", 2, SECS(10));
    let last = &closed[1]["details"];
    assert_eq!((last["app"].as_str(), last["reason"].as_str()), (Some("PACS"), Some("abandoned")), "{last}");
    assert!(!desktop.lock_windows().is_empty(), "still locked");
}

#[test]
fn with_dim_at_warning_the_phi_windows_are_covered_during_the_countdown_until_input() {
    let policy = PHI_POLICY.replace("[phi]\n", "[phi]\ndim_at_warning = true\n");
    let (_serial, desktop, agent, _guard) = setup(&policy);
    let pacs = App::standin(&desktop, "Pacs", "PACS viewer", (600, 300), false);
    let at = pacs.placed(&desktop);
    let centre = ((at.x as u16) + at.width / 2, (at.y as u16) + at.height / 2 + 30);
    desktop.wait("the PACS viewer drawn", SECS(5), || {
        (desktop.pixel(centre.0, centre.1) == STANDIN).then_some(())
    });

    // 15 s PACS tier, 3 s warning: the countdown after 12 s, and the panel with it.
    wait_for("the warning countdown", SECS(30), || desktop.find("Wardlock warning"));
    desktop.wait("the PHI window covered", SECS(5), || {
        (desktop.pixel(centre.0, centre.1) == CURTAIN).then_some(())
    });
    // Its title bar too (openbox draws it above the client window): a title may name the patient.
    let title_bar = ((at.x as u16) + 40, (at.y as u16).saturating_sub(8));
    assert_eq!(desktop.pixel(title_bar.0, title_bar.1), CURTAIN, "the title bar shows");
    assert!(desktop.lock_windows().is_empty(), "not locked yet");
    assert!(pacs.state(&desktop).unwrap().viewable, "covered, not hidden: the clinician may come back");

    // Input: countdown and panel go, the viewer shows again.
    desktop.xdotool(&["mousemove_relative", "--", "30", "30"]);
    wait_for("the countdown to go", SECS(5), || desktop.find("Wardlock warning").is_none().then_some(()));
    desktop.wait("the PHI window shown again", SECS(5), || {
        (desktop.pixel(centre.0, centre.1) == STANDIN).then_some(())
    });
    agent.wait_audit("warning_cancelled", SECS(10));
}

const HOLD_POLICY: &str = r#"
[workstation]
group = "icu"

[lock]
idle_timeout = "15s"
warning = "5s"
synthetic_input_keeps_awake = true
when_unguarded = "audit_only"
keep_awake = ["Vitals"]

[lock.hold]
length = "1m"
max_in_a_row = 1
groups = ["icu"]

[lockout]
throttle = "0s"
"#;

/// Watches for `within`: no countdown starts (the guard audits each one) and no lock.
/// (The banner's window also shows notices, so its title alone proves nothing.)
#[track_caller]
fn no_warning_for(desktop: &Desktop, agent: &Agent, within: Duration, why: &str) {
    let before = entries(agent, "warning_shown").len();
    let until = Instant::now() + within;
    while Instant::now() < until {
        assert!(desktop.lock_windows().is_empty(), "locked: {why}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(entries(agent, "warning_shown").len(), before, "a countdown started: {why}");
}

#[test]
fn the_countdown_offers_a_hold_that_keeps_the_session_open_once_in_a_row_and_is_audited_with_the_clinician() {
    let (_serial, desktop, agent, _guard) = setup(HOLD_POLICY);
    // The countdown's "Keep open" locks at once, so the PIN is typed under the grab.
    let banner = wait_for("the warning countdown", SECS(30), || desktop.find("Wardlock warning"));
    let (x, y) = (banner.x as i32 + banner.width as i32 / 2, banner.y as i32 + banner.height as i32 - 34);
    desktop.xdotool(&["mousemove", &x.to_string(), &y.to_string(), "click", "1"]);
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    // Unlock, then "Keep open 1 min".
    desktop.type_pin_and_press("n.nurse", "730284", 2);
    desktop.wait_unlocked(SECS(30));
    let held_at = Instant::now();
    let started = agent.wait_audit("hold_started", SECS(10));
    assert_eq!(started["user"], "n.nurse");
    assert_eq!(started["details"]["seconds"], "60");
    assert_eq!(entries(&agent, "unlock_succeeded").len(), 0, "a hold is audited as a hold");

    // No input at all: no countdown for longer than the 15 s idle timeout.
    no_warning_for(&desktop, &agent, SECS(25), "during the hold");
    // After the hold, idle counts from its end: the lock comes at about 1 min + 15 s.
    desktop.wait_lock_title("the lock after the hold", SECS(60), |t| t.starts_with("Wardlock — locked"));
    let after = held_at.elapsed();
    assert!(after >= SECS(70), "locked {after:?} after a 1 min hold with a 15 s timeout");

    // A second hold in a row is refused (max_in_a_row = 1), audited with the clinician,
    // and the session stays locked.
    desktop.type_pin_and_press("n.nurse", "730284", 2);
    desktop.wait_lock_title("the refused hold", SECS(30), |t| t == "Wardlock — hold refused");
    let refused = agent.wait_audit("hold_refused", SECS(10));
    assert_eq!(refused["user"], "n.nurse");
    assert!(refused["details"]["why"].as_str().unwrap().contains("in a row"), "{refused}");
    assert!(!desktop.lock_windows().is_empty(), "still locked");
    // An ordinary unlock still works.
    desktop.type_pin_and_press("n.nurse", "730284", 0);
    desktop.wait_unlocked(SECS(30));
}

#[test]
fn a_keep_awake_application_keeps_the_lock_away_only_while_it_has_the_focus() {
    let (_serial, desktop, agent, guard) = setup(HOLD_POLICY);
    let vitals = App::standin(&desktop, "Vitals", "Vitals monitor", (100, 100), false);
    let notes = App::xterm(&desktop, "Notes", "Ward notes", "40x5+700+40");
    desktop.xdotool(&["windowactivate", "--sync", &vitals.id.to_string()]);
    wait_for("the guard to see the vitals display focused", SECS(10), || {
        guard.log_events("keep_awake_focus").into_iter().any(|e| e.contains("focused=true")).then_some(())
    });
    no_warning_for(&desktop, &agent, SECS(25), "the vitals display has the focus");

    // The focus elsewhere: idle counts from then, and the lock comes.
    desktop.xdotool(&["windowactivate", "--sync", &notes.id.to_string()]);
    let moved = Instant::now();
    desktop.wait_lock_title("the idle lock", SECS(40), |t| t.starts_with("Wardlock — locked"));
    assert!(
        moved.elapsed() >= SECS(9),
        "locked {:?} after the focus left the vitals display",
        moved.elapsed()
    );
}
