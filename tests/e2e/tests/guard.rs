//! The session guard end to end: the real `wardlockd` and the real `wardlock` under Xvfb
//! with openbox, driven by xdotool as a clinician (or an attacker) at the keyboard.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Mutex;
use std::time::Duration;

use wardlock_e2e::{
    oathtool, wait_for, Agent, Desktop, FakeLogind, Guard, PhiApp, Selection, WebDriverGuard, CURTAIN, POLICY,
};

/// Each test runs a desktop, a web engine and a service: one at a time keeps two cores
/// from timing out under four of them.
static SERIAL: Mutex<()> = Mutex::new(());

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn setup() -> (std::sync::MutexGuard<'static, ()>, Desktop, Agent) {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let desktop = Desktop::start(1280, 800);
    let agent = Agent::start(POLICY);
    agent.add_user("n.nurse", "Nora Nurse", "nurse", "730284", false);
    (serial, desktop, agent)
}

/// Starts the lock screen's form over, types a user ID and PIN, and submits.
fn type_pin(desktop: &Desktop, user: &str, pin: &str) {
    desktop.type_pin_and_press(user, pin, 0);
}

#[test]
fn idle_warns_input_cancels_and_idle_again_locks_the_whole_screen() {
    let (_serial, desktop, agent) = setup();
    let guard = Guard::start(&desktop, &agent);
    // A chart open and focused, as a nurse leaves it.
    let phi = PhiApp::start(&desktop);
    desktop.xdotool(&["windowactivate", "--sync", &phi.id]);
    desktop.xdotool(&["mousemove", "10", "10"]);
    let focus_before = desktop.input_focus();

    // 15 s idle timeout, 5 s warning: the countdown appears after 10 s of no input.
    let banner = wait_for("the warning countdown", SECS(30), || desktop.find("Wardlock warning"));
    assert!(desktop.lock_windows().is_empty(), "locked during the warning");
    // The lock windows are built (hidden) during the countdown, and must not take the
    // keyboard from whatever the clinician may still be typing into.
    desktop.wait("the lock windows prepared", SECS(20), || {
        desktop.windows().iter().any(|w| !w.viewable && w.name.starts_with("Wardlock — ")).then_some(())
    });
    assert_eq!(desktop.input_focus(), focus_before, "the prepared lock windows took the focus");
    assert!(banner.width > 100 && banner.height > 20, "{banner:?}");
    desktop.save_screenshot("warning");
    agent.wait_audit("warning_shown", SECS(10));

    // Any input cancels it (a relative move is device input; `mousemove` to a point
    // only warps the pointer, which a program can do, and does not count).
    desktop.xdotool(&["mousemove_relative", "--", "190", "190"]);
    wait_for("the countdown to go", SECS(5), || desktop.find("Wardlock warning").is_none().then_some(()));
    agent.wait_audit("warning_cancelled", SECS(10));
    assert!(desktop.lock_windows().is_empty());
    // The prepared page went with the countdown, and WebKit's processes with it.
    wait_for("WebKit's processes to end after the countdown", SECS(10), || {
        (guard.web_processes().is_empty() && guard.network_processes().is_empty()).then_some(())
    });

    // Idle again: warning, then the lock over the whole screen.
    let locked = desktop.wait_lock_title("the idle lock", SECS(40), |t| t.contains("locked"));
    assert!(locked.contains("locked"), "{locked}");
    let windows = desktop.lock_windows();
    assert_eq!(windows.len(), 1, "one monitor, one lock window: {windows:?}");
    let w = &windows[0];
    assert_eq!((w.x, w.y, w.width, w.height), (0, 0, 1280, 800), "the lock window covers the screen");
    let lock = agent.wait_audit("locked", SECS(10));
    assert_eq!(lock["details"]["reason"], "idle", "{lock}");
    // The curtain is drawn edge to edge: corners and edges are the lock screen's colour.
    wait_for("the lock screen to be drawn", SECS(20), || {
        [(0, 0), (1279, 0), (0, 799), (1279, 799), (640, 2), (2, 400)]
            .iter()
            .all(|&(x, y)| desktop.pixel(x, y) == CURTAIN)
            .then_some(())
    });
    desktop.wait_drawn();
    desktop.save_screenshot("lock-screen");
    drop(guard);
}

#[test]
fn wrong_pins_are_refused_then_locked_out_and_the_right_pin_unlocks() {
    let (_serial, desktop, agent) = setup();
    agent.add_user("d.doc", "Dee Doc", "physician", "582039", false);
    let guard = Guard::start(&desktop, &agent);
    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));

    type_pin(&desktop, "n.nurse", "111111");
    let title = desktop.wait_lock_title("a refusal", SECS(30), |t| t.contains("refused"));
    assert_eq!(title, "Wardlock — refused: 2 attempts left");
    agent.wait_audit("unlock_failed", SECS(10));
    desktop.save_screenshot("lock-screen-refused");

    // The user ID stays filled; the PIN field was cleared.
    desktop.type_text("222222");
    desktop.key("Return");
    desktop.wait_lock_title("the second refusal", SECS(30), |t| t.ends_with("1 attempts left"));
    desktop.type_text("333333");
    desktop.key("Return");
    let title = desktop.wait_lock_title("the lockout countdown", SECS(30), |t| t.contains("try again later"));
    assert!(title.contains("0:0"), "a visible countdown: {title}");
    desktop.save_screenshot("lock-screen-lockout");
    agent.wait_audit("user_locked_out", SECS(10));
    assert_eq!(agent.count("unlock_failed"), 3);
    assert!(!desktop.lock_windows().is_empty(), "still locked");

    // The locked-out user's right PIN is refused until the lockout ends.
    type_pin(&desktop, "n.nurse", "730284");
    desktop.wait_lock_title("the lockout's refusal", SECS(30), |t| t.contains("try again later"));
    assert_eq!(agent.count("unlock_succeeded"), 0);

    // Someone else's right PIN unlocks once the countdown is over; the session is theirs.
    desktop.wait_lock_title("the end of the lockout", SECS(30), |t| t.starts_with("Wardlock — locked"));
    type_pin(&desktop, "d.doc", "582039");
    desktop.wait_unlocked(SECS(30));
    let granted = agent.wait_audit("unlock_succeeded", SECS(10));
    assert_eq!(granted["user"], "d.doc", "{granted}");
    // The guard showed the last-unlock notice.
    wait_for("the welcome notice", SECS(10), || desktop.find("Wardlock warning"));
    // Waiting again, the guard has no webview, so no WebKit process either.
    wait_for("WebKit's processes to end after the unlock", SECS(10), || {
        (guard.web_processes().is_empty() && guard.network_processes().is_empty()).then_some(())
    });
    drop(guard);
}

#[test]
fn a_totp_code_from_oathtool_unlocks_once_and_is_refused_the_second_time() {
    let (_serial, desktop, agent) = setup();
    let secret = agent.add_user("t.tech", "Tom Tech", "nurse", "640273", true).expect("a TOTP secret");
    let guard = Guard::start(&desktop, &agent);
    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));

    // User ID, then switch to the authenticator code with the keyboard alone.
    desktop.key("Escape");
    desktop.type_text("t.tech");
    desktop.key("Tab"); // PIN
    desktop.key("Tab"); // Unlock
    desktop.key("Tab"); // Use authenticator code
    desktop.key("space");
    let code = oathtool(&secret);
    assert_eq!(code.len(), 6, "{code}");
    desktop.type_text(&code);
    desktop.key("Return");
    desktop.wait_unlocked(SECS(30));
    let granted = agent.wait_audit("unlock_succeeded", SECS(10));
    assert_eq!(granted["user"], "t.tech");

    // The same code again (within its 30 s step): refused.
    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    desktop.key("Escape");
    desktop.type_text("t.tech");
    desktop.key("Tab");
    desktop.key("Tab");
    desktop.key("Tab");
    desktop.key("space");
    desktop.type_text(&code);
    desktop.key("Return");
    desktop.wait_lock_title("the replay's refusal", SECS(30), |t| t.contains("refused"));
    agent.wait_audit("unlock_failed", SECS(10));
    assert!(!desktop.lock_windows().is_empty());
    drop(guard);
}

#[test]
fn escape_attempts_leave_the_lock_in_place_and_no_key_reaches_the_phi_app() {
    let (_serial, desktop, agent) = setup();
    let guard = Guard::start(&desktop, &agent);
    let phi = PhiApp::start(&desktop);
    let phi_id = phi.id.clone();

    // The leak detector works: unlocked, typed keys arrive.
    desktop.xdotool(&["windowactivate", "--sync", &phi_id]);
    desktop.type_text("visible");
    wait_for("keys in the PHI app", SECS(10), || (phi.received() == "visible").then_some(()));

    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    let lock = desktop.lock_windows()[0].clone();
    let lock_id = lock.id.to_string();
    let attempts: &[&[&str]] = &[
        &["key", "alt+F4"],
        &["key", "alt+Tab"],
        &["key", "ctrl+alt+F1"],
        &["windowactivate", &phi_id],
        &["windowfocus", &phi_id],
        &["windowraise", &phi_id],
        &["windowminimize", &lock_id],
        &["windowclose", &lock_id],
        &["windowunmap", &lock_id],
        &["set_desktop", "1"],
    ];
    for attempt in attempts {
        desktop.xdotool(attempt);
        if matches!(attempt[0], "windowclose" | "windowunmap") {
            // X lets any client of the display do this, and the grab goes with the window
            // for the milliseconds until the guard takes it again (docs/threat-model.md):
            // typing starts once the lock is back, which the guard must make happen.
            desktop.wait("the lock window back", SECS(20), || {
                desktop.lock_windows().iter().any(|w| w.width == 1280).then_some(())
            });
        }
        desktop.type_text("leak");
        assert_eq!(phi.received(), "visible", "keys leaked to the PHI app after xdotool {attempt:?}");
    }
    // The curtain under the page, too: unmapped, then destroyed; it comes back (made anew).
    for attack in ["windowunmap", "windowclose"] {
        let curtain = desktop.wait("the curtain", SECS(20), || desktop.curtains().first().map(|w| w.id));
        desktop.xdotool(&[attack, &curtain.to_string()]);
        desktop.wait("the curtain back", SECS(20), || {
            let back = desktop.curtains().iter().any(|w| (w.x, w.y, w.width, w.height) == (0, 0, 1280, 800));
            back.then_some(())
        });
        desktop.type_text("leak");
        assert_eq!(
            phi.received(),
            "visible",
            "keys leaked to the PHI app after xdotool {attack} on the curtain"
        );
    }
    let wmctrl = desktop.command("wmctrl").args(["-c", "Wardlock — locked"]).output().unwrap();
    let _ = wmctrl;
    desktop.type_text("leak");
    desktop.command("wmctrl").args(["-k", "on"]).output().unwrap();
    desktop.type_text("leak");

    // Still locked and covering the screen (rebuilt if a window was destroyed).
    let windows = desktop.wait("the lock windows back in place", SECS(20), || {
        let w = desktop.lock_windows();
        (w.len() == 1 && (w[0].x, w[0].y, w[0].width, w[0].height) == (0, 0, 1280, 800)).then_some(w)
    });
    assert_eq!(windows.len(), 1);
    // The guard itself lived through it.
    assert!(nix::sys::signal::kill(guard.pid(), None).is_ok(), "the guard died: {}", guard.log_text());
    assert_eq!(phi.received(), "visible", "keys leaked to the PHI app while locked");
    // Destroying a lock window is tampering: reported.
    agent.wait_audit("lock_failed", SECS(10));

    // And the lock screen still takes the clinician's keys.
    wait_for("the focus back on the lock screen", SECS(10), || {
        desktop.lock_windows().first().is_some_and(|w| desktop.input_focus() == w.id).then_some(())
    });
    type_pin(&desktop, "n.nurse", "730284");
    desktop.wait_unlocked(SECS(30));
    assert_eq!(phi.received(), "visible");
    drop(guard);
}

/// Points along the edges and in the corners, which the lock page leaves in the curtain's
/// colour too: a frozen or transparent page would show the chart there.
const EDGES: [(u16, u16); 8] =
    [(0, 0), (1279, 0), (0, 799), (1279, 799), (640, 2), (2, 400), (1277, 400), (640, 797)];

#[test]
fn a_killed_or_hung_lock_page_is_rebuilt_under_a_covered_screen_and_the_right_pin_unlocks() {
    let (_serial, desktop, agent) = setup();
    let guard = Guard::start(&desktop, &agent);
    let phi = PhiApp::start(&desktop);
    desktop.xdotool(&["windowactivate", "--sync", &phi.id]);
    desktop.type_text("visible");
    wait_for("keys in the PHI app", SECS(10), || (phi.received() == "visible").then_some(()));

    for (signal, why) in [
        (nix::sys::signal::Signal::SIGKILL, "crashed or was killed"),
        // Stopped: alive but answering nothing, as a page stuck in a loop.
        (nix::sys::signal::Signal::SIGSTOP, "did not answer"),
    ] {
        let restarts_before = agent.count("lock_screen_restarted");
        guard.lock_now();
        desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
        desktop.wait_drawn();
        let page = desktop.lock_windows()[0].id;
        let web = guard.web_processes();
        assert_eq!(web.len(), 1, "one web process for the lock page: {web:?}");
        assert_eq!(guard.network_processes().len(), 1, "WebKit's network process, while there is a page");
        let hit_at = std::time::Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(web[0]), signal).unwrap();

        // While the page is gone or frozen: covered edge to edge, and keys go nowhere.
        desktop.type_text("leak");
        assert!(desktop.covered_at(&EDGES), "uncovered: {}", desktop.save_screenshot("page-gone").display());
        let restarted = desktop.wait("the page restarted", SECS(20), || {
            let entries = agent.audit();
            let restarts: Vec<_> =
                entries.into_iter().filter(|e| e["kind"] == "lock_screen_restarted").collect();
            (restarts.len() > restarts_before).then(|| restarts.last().cloned()).flatten()
        });
        let reason = restarted["details"]["reason"].as_str().unwrap_or_default().to_owned();
        assert!(reason.contains(why), "after {signal}: {restarted}");
        assert_eq!(restarted["details"]["pid"], guard.pid().as_raw().to_string(), "{restarted}");
        assert!(
            desktop.covered_at(&EDGES),
            "uncovered: {}",
            desktop.save_screenshot("page-restarted").display()
        );
        desktop.wait("a new lock page", SECS(10), || {
            desktop
                .lock_windows()
                .iter()
                .any(|w| w.id != page && w.name.starts_with("Wardlock — locked"))
                .then_some(())
        });
        desktop.type_text("leak");
        type_pin(&desktop, "n.nurse", "730284");
        desktop.wait_unlocked(SECS(10));
        // The hung page is only noticed after its ping deadline (6 s), so that case has
        // more time; the crash is seen at once.
        let limit = if signal == nix::sys::signal::Signal::SIGKILL { SECS(10) } else { SECS(16) };
        assert!(hit_at.elapsed() < limit, "unlocked {:?} after the {signal}", hit_at.elapsed());
        assert_eq!(phi.received(), "visible", "keys leaked to the PHI app after the {signal}");
    }
    wait_for("the web process to end after the unlock", SECS(10), || {
        guard.web_processes().is_empty().then_some(())
    });
    drop(guard);
}

/// Corners and edge midpoints of a monitor, 2 px inside it.
fn monitor_points(x: u16, y: u16, width: u16, height: u16) -> Vec<(u16, u16)> {
    let (right, bottom) = (x + width - 3, y + height - 3);
    let (mid_x, mid_y) = (x + width / 2, y + height / 2);
    vec![
        (x + 2, y + 2),
        (right, y + 2),
        (x + 2, bottom),
        (right, bottom),
        (mid_x, y + 2),
        (x + 2, mid_y),
        (right, mid_y),
        (mid_x, bottom),
    ]
}

fn curtain_areas(desktop: &Desktop) -> Vec<(i16, i16, u16, u16)> {
    let mut areas: Vec<_> = desktop.curtains().iter().map(|w| (w.x, w.y, w.width, w.height)).collect();
    areas.sort_unstable();
    areas
}

#[test]
fn every_monitor_is_covered_and_monitors_plugged_in_removed_or_resized_while_locked_stay_covered() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Xorg's dummy driver: two monitors now, more plugged in at runtime.
    let desktop = Desktop::start_with_outputs();
    desktop.xrandr(&["--addmode", "DUMMY1", "1024x768"]);
    desktop.xrandr(&["--output", "DUMMY1", "--mode", "1024x768", "--right-of", "DUMMY0"]);
    let agent = Agent::start(POLICY);
    agent.add_user("n.nurse", "Nora Nurse", "nurse", "730284", false);
    let guard = Guard::start(&desktop, &agent);
    let phi = PhiApp::start(&desktop);
    desktop.xdotool(&["windowactivate", "--sync", &phi.id]);
    desktop.type_text("visible");
    wait_for("keys in the PHI app", SECS(10), || (phi.received() == "visible").then_some(()));

    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    desktop.wait_drawn();
    assert_eq!(curtain_areas(&desktop), [(0, 0, 1280, 800), (1280, 0, 1024, 768)], "a curtain per monitor");
    let page = &desktop.lock_windows()[0];
    assert_eq!(
        (page.x, page.y, page.width, page.height),
        (0, 0, 1280, 800),
        "the page on the primary monitor"
    );
    let both: Vec<_> = [monitor_points(0, 0, 1280, 800), monitor_points(1280, 0, 1024, 768)].concat();
    assert!(desktop.covered_at(&both), "uncovered: {}", desktop.save_screenshot("two-monitors").display());

    // A third monitor plugged in while locked: covered within 500 ms (the classic bypass).
    desktop.xrandr(&["--addmode", "DUMMY2", "1280x800"]);
    let plugged = std::time::Instant::now();
    desktop.xrandr(&["--output", "DUMMY2", "--mode", "1280x800", "--below", "DUMMY0"]);
    let third = monitor_points(0, 800, 1280, 800);
    desktop.wait("the new monitor covered", SECS(5), || desktop.covered_at(&third).then_some(()));
    let took = plugged.elapsed();
    eprintln!("the new monitor was covered {took:?} after xrandr began");
    assert!(took < Duration::from_millis(500), "the new monitor was bare for {took:?}");
    desktop.type_text("leak");
    assert_eq!(curtain_areas(&desktop), [(0, 0, 1280, 800), (0, 800, 1280, 800), (1280, 0, 1024, 768)]);

    // One unplugged, and with it the root shrinks.
    desktop.xrandr(&["--output", "DUMMY1", "--off"]);
    desktop.type_text("leak");
    desktop.wait("the curtains re-laid after the removal", SECS(5), || {
        (curtain_areas(&desktop) == [(0, 0, 1280, 800), (0, 800, 1280, 800)]).then_some(())
    });
    assert_eq!(desktop.root_size(), (1280, 1600));
    let two: Vec<_> = [monitor_points(0, 0, 1280, 800), third.clone()].concat();
    assert!(desktop.covered_at(&two), "uncovered: {}", desktop.save_screenshot("monitor-removed").display());

    // The primary monitor resized: its curtain and the page follow.
    desktop.xrandr(&["--output", "DUMMY0", "--mode", "1024x768"]);
    desktop.type_text("leak");
    desktop.wait("the page and curtain on the resized monitor", SECS(5), || {
        let page = desktop.lock_windows().into_iter().next()?;
        let page_fits = (page.x, page.y, page.width, page.height) == (0, 0, 1024, 768);
        (page_fits && curtain_areas(&desktop).contains(&(0, 0, 1024, 768))).then_some(())
    });
    let resized: Vec<_> = [monitor_points(0, 0, 1024, 768), third].concat();
    assert!(
        desktop.covered_at(&resized),
        "uncovered: {}",
        desktop.save_screenshot("monitor-resized").display()
    );
    desktop.type_text("leak");
    assert_eq!(phi.received(), "visible", "keys reached the chart while the monitors changed");

    // The PIN pad still works on the resized primary monitor.
    type_pin(&desktop, "n.nurse", "730284");
    desktop.wait_unlocked(SECS(30));
    drop(guard);
}

#[test]
fn killing_the_guards_x_client_is_audited_and_the_restarted_guard_locks_again() {
    let (_serial, desktop, agent) = setup();
    let mut guard = Guard::start(&desktop, &agent);
    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    let lock_id = desktop.lock_windows()[0].id.to_string();

    // XKillClient on the lock window ends the guard's X connection, and so the guard: no
    // X11 program survives it. The service sees it go and audits it (and, with
    // per `lock.when_unguarded`, escalates the session); the supervisor starts it again.
    desktop.xdotool(&["windowkill", &lock_id]);
    let lost = agent.wait_audit("guard_lost", SECS(30));
    assert_eq!(lost["details"]["alert"], "compliance", "{lost}");
    guard.kill9(); // reap it, as systemd would
    guard.restart();
    desktop.wait_lock_title("the restarted guard's lock", SECS(30), |t| t.starts_with("Wardlock — locked"));
    type_pin(&desktop, "n.nurse", "730284");
    desktop.wait_unlocked(SECS(30));
    drop(guard);
}

#[test]
fn a_killed_guard_comes_back_locked_and_a_killed_service_keeps_the_screen_locked() {
    let (_serial, desktop, mut agent) = setup();
    let mut guard = Guard::start(&desktop, &agent);
    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    agent.wait_audit("locked", SECS(10));

    guard.kill9();
    let lost = agent.wait_audit("guard_lost", SECS(30));
    assert_eq!(lost["details"]["alert"], "compliance", "{lost}");
    // The restarted guard locks before anything else: the service remembers the lock.
    guard.restart();
    desktop.wait_lock_title("the restarted guard's lock", SECS(30), |t| t.starts_with("Wardlock — locked"));
    let relock = wait_for("the relock entry", SECS(10), || {
        agent.audit().into_iter().filter(|e| e["kind"] == "locked").nth(1)
    });
    assert_eq!(relock["details"]["reason"], "guard_restarted", "{relock}");

    // wardlockd dies: the screen stays locked and says unlock is unavailable.
    agent.kill9();
    desktop.wait_lock_title("unlock unavailable", SECS(30), |t| t.contains("unlock unavailable"));
    desktop.wait_drawn();
    desktop.save_screenshot("lock-screen-service-down");
    // A right PIN cannot unlock: nobody is there to decide.
    type_pin(&desktop, "n.nurse", "730284");
    assert!(!desktop.lock_windows().is_empty(), "unlocked without the service");

    // It comes back: the guard reconnects and the right PIN unlocks.
    agent.restart();
    desktop.wait_lock_title("the service back", SECS(30), |t| t.starts_with("Wardlock — locked"));
    type_pin(&desktop, "n.nurse", "730284");
    desktop.wait_unlocked(SECS(30));
    agent.wait_audit("unlock_succeeded", SECS(10));
    // Only that one: nothing was granted while the service was down.
    assert_eq!(agent.count("unlock_succeeded"), 1);
    drop(guard);
}

#[test]
fn an_administrator_enrolls_a_clinician_whose_new_pin_then_unlocks() {
    let (_serial, desktop, agent) = setup();
    agent.add_user("it.admin", "Ida Admin", "admin", "915372", false);
    let guard = Guard::start(&desktop, &agent);
    guard.open_enrollment();
    let window = desktop
        .wait("the enrollment window", SECS(30), || desktop.find_managed("Wardlock — enroll: authorize"));
    desktop.xdotool(&["windowactivate", "--sync", &window]);

    // The administrator, then the new clinician; keyboard only.
    desktop.type_text("it.admin");
    desktop.key("Tab");
    desktop.type_text("915372");
    desktop.key("Tab"); // no authenticator code for this administrator
    desktop.key("Tab");
    desktop.type_text("n.new");
    desktop.key("Tab");
    desktop.type_text("Nell New");
    desktop.key("Return");
    desktop.wait("the PIN step", SECS(30), || desktop.find_managed("Wardlock — enroll: set-pin"));
    agent.wait_audit("admin_approved", SECS(10));
    agent.wait_audit("user_added", SECS(10));

    // A common PIN is refused; the step stays. A good one moves on to the authenticator.
    desktop.type_text("123456");
    desktop.key("Tab");
    desktop.type_text("123456");
    desktop.key("Return");
    desktop.type_text("583920");
    desktop.key("Tab");
    desktop.type_text("583920");
    desktop.key("Return");
    desktop.wait("the authenticator step", SECS(30), || desktop.find_managed("Wardlock — enroll: totp"));
    // The QR code (black on white) is drawn: a white pixel where there was none.
    desktop.wait("the QR code drawn", SECS(20), || {
        let (_, _, rgb) = desktop.screenshot();
        rgb.chunks_exact(3).any(|p| p == [255, 255, 255]).then_some(())
    });
    desktop.save_screenshot("enrollment");
    // Skip the app (the QR code's secret stays between the page and the service).
    desktop.key("Tab");
    desktop.key("Tab");
    desktop.key("Return");
    desktop.wait("the last step", SECS(30), || desktop.find_managed("Wardlock — enroll: done"));

    // The new PIN unlocks; the refused one does not.
    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    type_pin(&desktop, "n.new", "123456");
    desktop.wait_lock_title("the weak PIN's refusal", SECS(30), |t| t.contains("refused"));
    type_pin(&desktop, "n.new", "583920");
    desktop.wait_unlocked(SECS(30));
    let granted = agent.wait_audit("unlock_succeeded", SECS(10));
    assert_eq!(granted["user"], "n.new", "{granted}");
    drop(guard);
}

#[test]
fn the_guard_locks_when_the_os_session_is_locked_and_when_the_machine_resumes() {
    let (_serial, desktop, agent) = setup();
    let logind = FakeLogind::start();
    let guard = Guard::start_with_env(&desktop, &agent, &[("DBUS_SYSTEM_BUS_ADDRESS", &logind.address)]);
    let followed = wait_for("the guard following logind", SECS(30), || guard.log_event("following_logind"));
    assert!(followed.contains("session_lock=true"), "{followed}");

    // The session is locked from outside (loginctl lock-session, the desktop's locker).
    logind.lock_session();
    desktop.wait_lock_title("the lock on the session's Lock signal", SECS(30), |t| {
        t.starts_with("Wardlock — locked")
    });
    let locked = agent.wait_audit("locked", SECS(10));
    assert_eq!(locked["details"]["reason"], "os_session", "{locked}");
    type_pin(&desktop, "n.nurse", "730284");
    desktop.wait_unlocked(SECS(30));

    // Suspend and resume: locked on the way back (policy lock_on_resume, the default).
    logind.prepare_for_sleep(true);
    logind.prepare_for_sleep(false);
    desktop.wait_lock_title("the lock on resume", SECS(30), |t| t.starts_with("Wardlock — locked"));
    let resumed = wait_for("the resume entry", SECS(10), || {
        agent.audit().into_iter().filter(|e| e["kind"] == "locked").nth(1)
    });
    assert_eq!(resumed["details"]["reason"], "resume", "{resumed}");
    drop(guard);
}

#[test]
fn another_clinician_takes_the_session_over_and_emergency_access_needs_a_real_reason() {
    let (_serial, desktop, agent) = setup();
    agent.add_user("d.doc", "Dee Doc", "physician", "582039", false);
    let guard = Guard::start(&desktop, &agent);

    // Nora unlocks; later Dee unlocks the same session: it is Dee's now, and the audit says so.
    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    type_pin(&desktop, "n.nurse", "730284");
    desktop.wait_unlocked(SECS(30));
    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    type_pin(&desktop, "d.doc", "582039");
    desktop.wait_unlocked(SECS(30));
    let switched = wait_for("Dee's unlock", SECS(10), || {
        agent.audit().into_iter().filter(|e| e["kind"] == "unlock_succeeded").nth(1)
    });
    assert_eq!(
        (&switched["user"], &switched["details"]["switched_from"]),
        (&"d.doc".into(), &"n.nurse".into())
    );

    // Emergency access, keyboard only: user ID and PIN, then the emergency button.
    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    desktop.key("Escape");
    desktop.type_text("n.nurse");
    desktop.key("Tab");
    desktop.type_text("730284");
    for _ in 0..3 {
        desktop.key("Tab"); // Unlock, Use authenticator code, Emergency access
    }
    desktop.key("space");
    // Too short a reason is refused on the page (the focus stays in the reason); nothing
    // reaches the service. Enter sends the reason.
    desktop.type_text("code");
    desktop.key("Return");
    assert!(!desktop.lock_windows().is_empty());
    desktop.type_text(" blue, bed 4, patient crashing");
    desktop.key("Return");
    desktop.wait_unlocked(SECS(30));
    let entry = agent.wait_audit("emergency_access", SECS(10));
    assert_eq!(entry["user"], "n.nurse", "{entry}");
    assert_eq!(entry["details"]["reason"], "code blue, bed 4, patient crashing", "{entry}");
    assert_eq!(entry["details"]["alert"], "compliance", "{entry}");
    assert_eq!(agent.count("emergency_access"), 1, "the short reason never reached the service");
    drop(guard);
}

#[test]
fn only_an_administrator_quits_the_guard_and_the_quit_is_audited() {
    let (_serial, desktop, agent) = setup();
    agent.add_user("it.admin", "Ida Admin", "admin", "915372", false);
    let mut guard = Guard::start(&desktop, &agent);
    guard.open_quit();
    let window = desktop.wait("the quit window", SECS(30), || desktop.find_managed("Wardlock — quit"));
    desktop.xdotool(&["windowactivate", "--sync", &window]);

    // A nurse's right PIN does not quit the guard.
    desktop.type_text("n.nurse");
    desktop.key("Tab");
    desktop.type_text("730284");
    desktop.key("Return");
    desktop.wait("the refusal", SECS(30), || desktop.find_managed("Wardlock — quit refused"));
    let refused = agent.wait_audit("unlock_failed", SECS(10));
    assert_eq!(refused["details"]["purpose"], "quit", "{refused}");
    assert!(!guard.exited(), "the guard quit for a nurse");

    // An administrator's does; the service records a clean stop, not a lost guard.
    desktop.type_text("it.admin");
    desktop.key("Tab");
    desktop.type_text("915372");
    desktop.key("Return");
    desktop.wait("the guard to quit", SECS(30), || guard.exited().then_some(()));
    let stopped = agent.wait_audit("guard_stopped", SECS(10));
    assert_eq!(stopped["details"]["by"], "it.admin", "{stopped}");
    assert_eq!(agent.count("guard_lost"), 0);
}

#[test]
fn over_webdriver_the_lock_screen_says_what_happened_in_its_own_words() {
    let (_serial, desktop, agent) = setup();
    let page = WebDriverGuard::start_locked(&desktop, &agent);
    wait_for("the lock page", SECS(30), || (page.title() == "Wardlock — locked").then_some(()));
    assert_eq!(page.text("#banner"), "E2E ward: authorised clinical staff only.");
    assert_eq!(page.text("h1"), "This workstation is locked");

    // A wrong PIN, typed through WebDriver and sent with the touch pad's OK button.
    page.type_into("#user", "n.nurse");
    page.click("#pinpad button:nth-child(1)"); // 1
    for _ in 0..5 {
        page.click("#pinpad button:nth-child(2)"); // 2
    }
    page.click("#pinpad button:nth-child(12)"); // OK
    let said = page.wait_text("#message", SECS(30), |t| t.contains("not accepted"));
    assert_eq!(said, "User ID or code not accepted. 2 attempts left before a lockout.");
    agent.wait_audit("unlock_failed", SECS(10));
    assert!(page.text("#pin").is_empty(), "the PIN field is cleared after a refusal");

    // The right PIN from the keyboard: the page says welcome and the lock goes.
    page.type_into("#pin", "730284\u{E007}"); // WebDriver's Enter key
    desktop.wait_unlocked(SECS(30));
    let granted = agent.wait_audit("unlock_succeeded", SECS(10));
    assert_eq!(granted["user"], "n.nurse");
}

/// The policy of the fail-closed tests: an unguarded session is logged off after 3 s.
fn logoff_policy() -> String {
    POLICY
        .replace("when_unguarded = \"audit_only\"", "when_unguarded = \"logoff\"\nescalation_grace = \"3s\"")
}

/// A desktop whose "session" (the chart's process group) a stand-in logind can end, the
/// real service and the real guard both on its bus, and the guard locked.
fn locked_session() -> (std::sync::MutexGuard<'static, ()>, Desktop, Agent, FakeLogind, PhiApp, Guard) {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let desktop = Desktop::start(1280, 800);
    let logind = FakeLogind::start();
    let bus = [("DBUS_SYSTEM_BUS_ADDRESS", logind.address.as_str())];
    let agent = Agent::start_with_env(&logoff_policy(), &bus);
    agent.add_user("n.nurse", "Nora Nurse", "nurse", "730284", false);
    let chart = PhiApp::start(&desktop);
    logind.set_session_processes(chart.process_group());
    let guard = Guard::start_with_env(&desktop, &agent, &bus);
    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    agent.wait_audit("locked", SECS(10));
    (serial, desktop, agent, logind, chart, guard)
}

fn kinds_from(agent: &Agent, first: &str) -> Vec<String> {
    let kinds = agent.audit_kinds();
    let from = kinds.iter().position(|k| k == first).unwrap_or(kinds.len());
    kinds[from..].to_vec()
}

#[test]
fn a_guard_killed_while_locked_and_not_restarted_ends_the_session_with_the_chart() {
    let (_serial, _desktop, agent, logind, mut chart, mut guard) = locked_session();
    let started = agent.audit().into_iter().find(|e| e["kind"] == "guard_started").unwrap();
    assert_eq!(started["details"]["pid"], guard.pid().to_string(), "the real guard binary is the guard");

    guard.kill9(); // and nothing starts it again
    wait_for("the session (the chart) to end", SECS(3 + 2), || (!chart.alive()).then_some(()));
    agent.wait_audit("session_terminated", SECS(10));
    let ladder: Vec<_> = kinds_from(&agent, "guard_lost")
        .into_iter()
        .filter(|k| k.starts_with("escalation") || k.starts_with("session") || k == "guard_lost")
        .collect();
    assert_eq!(
        ladder,
        ["guard_lost", "escalation_requested", "escalation_unconfirmed", "session_terminated"]
    );
    assert_eq!(logind.calls(), ["lock", "terminate"]);
    assert!(agent.audit().iter().all(|e| e["kind"] != "escalation_confirmed"));
}

#[test]
fn a_guard_killed_and_restarted_within_the_grace_confirms_its_lock_and_nothing_ends() {
    let (_serial, desktop, agent, logind, mut chart, mut guard) = locked_session();
    guard.kill9();
    guard.restart(); // as its systemd user unit does
    desktop.wait_lock_title("the restarted guard's lock", SECS(30), |t| t.starts_with("Wardlock — locked"));
    let confirmed = agent.wait_audit("escalation_confirmed", SECS(10));
    assert_eq!(confirmed["details"]["by"], "guard", "{confirmed}");
    assert_eq!(confirmed["details"]["pid"], guard.pid().to_string(), "{confirmed}");
    // The ladder is over: the service says no escalation is running, and nothing ended.
    let status = agent.ctl(&["agent", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["escalations_active"], 0, "{status}");
    assert!(chart.alive(), "the chart was ended although the guard came back");
    assert!(!logind.calls().contains(&"terminate".to_owned()));
    assert!(!agent.audit_kinds().iter().any(|k| k == "session_terminated"));
    type_pin(&desktop, "n.nurse", "730284");
    desktop.wait_unlocked(SECS(30));
}

/// Runs `args` every `every` in the background until the returned flag is set (at most
/// `times` runs): a keep-awake script or a mouse jiggler.
fn repeat_in_background(
    desktop: &Desktop,
    program: &str,
    args: &[&str],
    every: Duration,
    times: u32,
) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<u32>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let display = desktop.display.clone();
    let (program, args) = (program.to_owned(), args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>());
    let handle = std::thread::spawn(move || {
        let mut runs = 0;
        while runs < times && !flag.load(std::sync::atomic::Ordering::SeqCst) {
            let ok = std::process::Command::new(&program).args(&args).env("DISPLAY", &display).status();
            assert!(ok.is_ok_and(|s| s.success()), "{program} failed (make setup installs it)");
            runs += 1;
            std::thread::sleep(every); // the script's own pace, not synchronisation
        }
        runs
    });
    (stop, handle)
}

#[test]
fn resetting_the_screen_saver_does_not_keep_the_session_open() {
    let (_serial, desktop, agent) = setup();
    let guard = Guard::start(&desktop, &agent);
    // What video players and keep-awake scripts do: no input, only XResetScreenSaver.
    let (stop, keeper) = repeat_in_background(&desktop, "xset", &["s", "reset"], SECS(3), 15);
    desktop.wait_lock_title("the idle lock despite xset s reset", SECS(15 + 10), |t| {
        t.starts_with("Wardlock — locked")
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(keeper.join().unwrap() >= 3, "the keep-awake loop ran");
    let locked = agent.wait_audit("locked", SECS(10));
    assert_eq!(locked["details"]["reason"], "idle", "{locked}");
    drop(guard);
}

#[test]
fn a_mouse_jiggler_does_not_keep_the_session_open_by_default() {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let desktop = Desktop::start(1280, 800);
    // The built-in default: synthetic input does not count.
    let agent = Agent::start(&POLICY.replace("synthetic_input_keeps_awake = true\n", ""));
    let guard = Guard::start(&desktop, &agent);
    let jiggle = ["mousemove_relative", "--", "5", "5"];
    let (stop, jiggler) = repeat_in_background(&desktop, "xdotool", &jiggle, SECS(2), 20);
    desktop.wait_lock_title("the idle lock despite the jiggler", SECS(15 + 10), |t| {
        t.starts_with("Wardlock — locked")
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(jiggler.join().unwrap() >= 5, "the jiggler ran");
    let ignored = agent.wait_audit("synthetic_input_ignored", SECS(10));
    assert_eq!(ignored["details"]["device"], "Virtual core XTEST pointer", "{ignored}");
    assert_eq!(agent.count("synthetic_input_ignored"), 1, "once per idle period");
    drop((guard, serial));
}

#[test]
fn a_policy_that_lets_synthetic_input_count_keeps_the_jiggled_session_open() {
    let (_serial, desktop, agent) = setup();
    let guard = Guard::start(&desktop, &agent);
    let started = std::time::Instant::now();
    let jiggle = ["mousemove_relative", "--", "5", "5"];
    let (stop, jiggler) = repeat_in_background(&desktop, "xdotool", &jiggle, SECS(2), 20);
    // Past the timeout and its warning, and then some: still open.
    while started.elapsed() < SECS(15 + 8) {
        assert!(desktop.lock_windows().is_empty(), "locked although policy counts synthetic input");
        std::thread::sleep(Duration::from_millis(250)); // watching for a lock that must not come
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    jiggler.join().unwrap();
    assert_eq!(agent.count("locked"), 0);
    assert_eq!(agent.count("synthetic_input_ignored"), 0);
    drop(guard);
}

#[test]
fn pasting_or_middle_clicking_into_the_lock_page_inserts_nothing() {
    let (_serial, desktop, agent) = setup();
    let page = WebDriverGuard::start_locked(&desktop, &agent);
    wait_for("the lock page", SECS(30), || (page.title() == "Wardlock — locked").then_some(()));
    // A chart excerpt copied before the lock, on the clipboard and the primary selection.
    let _clipboard = Selection::hold(&desktop, "clipboard", "MRN 4471 bed 4 730284");
    let _primary = Selection::hold(&desktop, "primary", "MRN 4471 bed 4 730284");

    for field in ["#user", "#pin"] {
        page.click(field);
        desktop.key("ctrl+v");
        desktop.key("shift+Insert");
        let (x, y) = page.centre(field);
        desktop.xdotool(&["mousemove", &x.to_string(), &y.to_string(), "click", "2"]);
        // Typing still reaches the field, after the paste attempts: they inserted nothing.
        desktop.type_text("4");
        let value = wait_for("the typed key in the field", SECS(10), || {
            Some(page.value(field)).filter(|v| !v.is_empty())
        });
        assert_eq!(value, "4", "{field} took pasted text");
    }
    assert!(!desktop.lock_windows().is_empty());
    assert!(
        agent.audit().iter().all(|e| !e.to_string().contains("4471")),
        "pasted text reached the audit log"
    );
}

/// The keymap in force, as the X server's own compiler writes it.
fn keymap(desktop: &Desktop) -> String {
    let out = desktop.command("xkbcomp").args(["-w", "0", "-xkb", &desktop.display, "-"]).output().unwrap();
    assert!(out.status.success(), "xkbcomp: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Every action line of a keymap, in order.
fn action_lines(keymap: &str) -> Vec<String> {
    keymap
        .lines()
        .filter(|l| l.contains("action=") || l.contains("actions["))
        .map(|l| l.trim().to_owned())
        .collect()
}

const SERVER_ACTIONS: &[&str] = &["Private(type=0x86", "Terminate(", "SwitchScreen("];

#[test]
fn while_locked_the_keymap_cannot_break_the_grab_end_the_server_or_switch_away() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Xorg, whose keymap carries the XFree86 private actions that `grab:break_actions`
    // turns on (Xvfb's compiled keymap leaves them out).
    let desktop = Desktop::start_with_outputs();
    let agent = Agent::start(POLICY);
    agent.add_user("n.nurse", "Nora Nurse", "nurse", "730284", false);
    // Someone in the session turned the grab-breaking keys on, and ends the server on
    // Ctrl+Alt+Backspace.
    let options = [
        "-rules",
        "evdev",
        "-layout",
        "us",
        "-option",
        "grab:break_actions",
        "-option",
        "terminate:ctrl_alt_bksp",
    ];
    assert!(desktop.command("setxkbmap").args(options).status().unwrap().success());
    let before = keymap(&desktop);
    assert!(
        before.contains("Terminate(")
            && before.contains("SwitchScreen(")
            && before.contains("Private(type=0x86"),
        "nothing to harden in this keymap"
    );
    // The control: on this server and keymap, Ctrl+Alt+KP_Divide (XF86Ungrab) does break
    // an ordinary locker's grab.
    let locker = desktop.hold_keyboard_grab();
    assert!(desktop.keyboard_grabbed());
    desktop.key("ctrl+alt+KP_Divide");
    wait_for("XF86Ungrab to break an ordinary grab", SECS(5), || (!desktop.keyboard_grabbed()).then_some(()));
    drop(locker);

    let phi = PhiApp::start(&desktop);
    let mut guard = Guard::start(&desktop, &agent);
    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    let hardened = agent.wait_audit("keymap_hardened", SECS(10));
    let actions = hardened["details"]["actions"].as_str().unwrap().to_owned();
    for expected in ["Terminate", "SwitchScreen", "XF86 private action Ungrab", "XF86 private action ClsGrb"]
    {
        assert!(actions.contains(expected), "{expected} not taken out: {hardened}");
    }
    let locked_map = keymap(&desktop);
    for action in SERVER_ACTIONS {
        assert!(!locked_map.contains(action), "{action} still in the keymap while locked");
    }

    for keys in ["ctrl+alt+KP_Divide", "ctrl+alt+KP_Multiply", "ctrl+alt+BackSpace", "ctrl+alt+F1"] {
        desktop.key(keys);
        desktop.type_text("leak");
        assert!(desktop.keyboard_grabbed(), "the grab went after {keys}");
    }
    assert!(!guard.exited(), "the guard was killed through the keymap");
    assert!(!desktop.lock_windows().is_empty(), "the lock went");
    assert_eq!(phi.received(), "", "keys reached the chart behind the lock");

    type_pin(&desktop, "n.nurse", "730284");
    desktop.wait_unlocked(SECS(30));
    // Loading a keymap renames its sections and drops redundant entries; what must come
    // back is every action of every key.
    desktop.wait("the keymap's actions as they were", SECS(10), || {
        (action_lines(&keymap(&desktop)) == action_lines(&before)).then_some(())
    });
    assert!(!agent.audit_kinds().iter().any(|k| k == "lock_failed"));
}

#[test]
fn a_guard_stopped_while_the_session_is_unlocked_ends_the_session_too() {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let desktop = Desktop::start(1280, 800);
    let logind = FakeLogind::start();
    let bus = [("DBUS_SYSTEM_BUS_ADDRESS", logind.address.as_str())];
    let agent = Agent::start_with_env(&logoff_policy(), &bus);
    let mut chart = PhiApp::start(&desktop);
    logind.set_session_processes(chart.process_group());
    let mut guard = Guard::start_with_env(&desktop, &agent, &bus);
    agent.wait_audit("guard_started", SECS(10));
    assert!(desktop.lock_windows().is_empty(), "the session is open");

    guard.kill9(); // `systemctl --user stop`, the OOM killer: no idle lock any more
    wait_for("the session (the chart) to end", SECS(3 + 2), || (!chart.alive()).then_some(()));
    agent.wait_audit("session_terminated", SECS(10));
    assert_eq!(logind.calls(), ["lock", "terminate"]);
    drop((guard, serial));
}

#[test]
fn gtk_modules_named_by_the_user_are_never_loaded_into_the_guard() {
    let (_serial, desktop, agent) = setup();
    // A module of the shared account's: its constructor leaves a mark if it is loaded.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("loaded");
    let source = dir.path().join("module.c");
    std::fs::write(
        &source,
        format!(
            "#include <stdio.h>\n#include <unistd.h>\n\
             __attribute__((constructor)) static void mark(void) {{\n\
               char exe[256] = {{0}}; ssize_t n = readlink(\"/proc/self/exe\", exe, sizeof exe - 1);\n\
               if (n > 0) exe[n] = 0;\n\
               FILE *f = fopen(\"{}\", \"a\"); if (f) {{ fprintf(f, \"%d %s\\n\", (int)getpid(), exe); fclose(f); }}\n\
             }}\n\
             void gtk_module_init(int *argc, char ***argv) {{ (void)argc; (void)argv; }}\n",
            marker.display()
        ),
    )
    .unwrap();
    let module = dir.path().join("libevil.so");
    let cc = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&module)
        .arg(&source)
        .status()
        .unwrap();
    assert!(cc.success(), "cc (build-essential) is needed");
    // Named in the user's GTK settings and in the environment.
    std::fs::create_dir_all(dir.path().join("gtk-3.0")).unwrap();
    std::fs::write(
        dir.path().join("gtk-3.0/settings.ini"),
        format!("[Settings]\ngtk-modules={}\n", module.display()),
    )
    .unwrap();
    let config = dir.path().display().to_string();
    let named = module.display().to_string();
    let guard = Guard::start_with_env(
        &desktop,
        &agent,
        &[("XDG_CONFIG_HOME", &config), ("GTK_MODULES", &named), ("GTK3_MODULES", &named)],
    );
    agent.wait_audit("guard_started", SECS(30));
    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    agent.wait_audit("locked", SECS(30));
    // Which processes ran it ("PID EXE" a line): never the guard's own.
    let ran_in = |marker: &std::path::Path| std::fs::read_to_string(marker).unwrap_or_default();
    assert_eq!(ran_in(&marker), "", "the user's GTK module ran at the guard's start");
    assert_eq!(agent.count("guard_impostor"), 0, "the guard itself stayed the installed guard");
    type_pin(&desktop, "n.nurse", "730284");
    agent.wait_audit("unlock_succeeded", SECS(30));

    // Pushed at the running guard over XSETTINGS, by a settings manager the account runs.
    let conf = dir.path().join("xsettingsd.conf");
    std::fs::write(&conf, format!("Gtk/Modules \"{}\"\n", module.display())).unwrap();
    let mut manager = std::process::Command::new("xsettingsd")
        .arg("-c")
        .arg(&conf)
        .env("DISPLAY", &desktop.display)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("xsettingsd is needed (make setup installs it)");
    let said = std::io::BufReader::new(manager.stderr.take().unwrap());
    let owned = std::io::BufRead::lines(said).map_while(Result::ok).any(|l| l.contains("Took ownership"));
    assert!(owned, "xsettingsd never became the settings manager");
    // The guard goes through its event loop (a lock and an unlock) after the push.
    guard.lock_now();
    desktop.wait_lock_title("the lock screen again", SECS(30), |t| t.starts_with("Wardlock — locked"));
    type_pin(&desktop, "n.nurse", "730284");
    wait_for("the second unlock", SECS(30), || (agent.count("unlock_succeeded") >= 2).then_some(()));
    let _ = manager.kill();
    let _ = manager.wait();
    // WebKit's web process (it draws the PIN pad, and sees nothing an X client could not)
    // is a GTK program of its own and may take the push; the guard never does.
    let guard_pid = guard.pid().as_raw().to_string();
    for line in ran_in(&marker).lines() {
        let (pid, exe) = line.split_once(' ').unwrap_or((line, ""));
        assert!(
            pid != guard_pid && !exe.ends_with("/wardlock"),
            "a module pushed over XSETTINGS ran in the guard: {line}"
        );
    }
    assert_eq!(agent.count("guard_impostor"), 0);
    assert_eq!(agent.count("guard_lost"), 0, "the guard stayed the installed guard");
}

#[test]
fn with_no_monitor_lit_the_curtain_is_the_whole_root_at_its_size_now() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let desktop = Desktop::start_with_outputs();
    let agent = Agent::start(POLICY);
    agent.add_user("n.nurse", "Nora Nurse", "nurse", "730284", false);
    let guard = Guard::start(&desktop, &agent);
    guard.lock_now();
    desktop.wait_lock_title("the lock screen", SECS(30), |t| t.starts_with("Wardlock — locked"));
    // Every output off (a docking station unplugged, a KVM switched away): RandR lists no
    // monitor, and the one curtain is the whole root, as large as it is now, not as it
    // was when the guard connected. (With no output lit the server scans nothing out, so
    // this looks at the windows, not at pixels.)
    desktop.xrandr(&["--output", "DUMMY0", "--off"]);
    desktop.xrandr(&["--fb", "1600x1000"]);
    assert_eq!(desktop.root_size(), (1600, 1000));
    desktop.wait("the curtain over the whole resized root", SECS(5), || {
        (curtain_areas(&desktop) == [(0, 0, 1600, 1000)]).then_some(())
    });
    drop(guard);
}
