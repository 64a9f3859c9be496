//! The guard's numbers, measured on a private Xvfb with the release binaries:
//!
//! - lock latency: from the instant idle crosses the timeout (the last input, once the
//!   server has it, plus the timeout; the server's screen saver is set to the same
//!   timeout, and its `ScreenSaverNotify` is what starts xsecurelock) to the lock window's
//!   `MapNotify`, and to the keyboard taken (the first `FocusOut` on a focused window of ours);
//! - the same for `xss-lock -- xsecurelock`, and xss-lock's CPU and memory while waiting;
//! - CPU of the guard and all its processes while it waits, and their memory;
//! - unlock latency: from the Return key (XTEST) to the lock window's `UnmapNotify`.
//!
//! `cargo bench -p wardlock-e2e --bench guard`; knobs: WARDLOCK_BENCH_LOCKS (default 30),
//! WARDLOCK_BENCH_IDLE_SECS (default 60), WARDLOCK_BENCH_ONLY (waiting, locks, xss-lock). Results go into docs/benchmarks.md by hand.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{self, ConnectionExt as _, EventMask};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;

use wardlock_e2e::{Agent, Desktop, Guard, POLICY};

const IDLE_TIMEOUT: u16 = 15;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A second X client: sets the server's screen-saver timeout (xss-lock's trigger) to the
/// policy's, makes the input, and watches windows being mapped and the focus it holds.
struct Watcher {
    conn: RustConnection,
    width: u16,
    /// Holds the keyboard focus: another client's grab shows as a FocusOut (mode Grab) here.
    probe: u32,
}

impl Watcher {
    fn new(desktop: &Desktop) -> Self {
        let (conn, screen) = x11rb::connect(Some(&desktop.display)).unwrap();
        let root = conn.setup().roots[screen].root;
        let width = conn.setup().roots[screen].width_in_pixels;
        conn.change_window_attributes(
            root,
            &xproto::ChangeWindowAttributesAux::new().event_mask(EventMask::SUBSTRUCTURE_NOTIFY),
        )
        .unwrap();
        // The server's own timeout equals the policy's idle timeout: its notification marks
        // the instant idle crosses it, independently of the guard.
        conn.set_screen_saver(
            IDLE_TIMEOUT as i16,
            0,
            xproto::Blanking::NOT_PREFERRED,
            xproto::Exposures::ALLOWED,
        )
        .unwrap();
        let probe = conn.generate_id().unwrap();
        conn.create_window(
            x11rb::COPY_DEPTH_FROM_PARENT,
            probe,
            root,
            -5,
            -5,
            1,
            1,
            0,
            xproto::WindowClass::INPUT_OUTPUT,
            x11rb::COPY_FROM_PARENT,
            &xproto::CreateWindowAux::new().override_redirect(1).event_mask(EventMask::FOCUS_CHANGE),
        )
        .unwrap();
        conn.map_window(probe).unwrap();
        conn.flush().unwrap();
        Self { conn, width, probe }
    }

    /// Gives the probe the focus and forgets the events of the previous lock (a round
    /// trip first, so all of them are in), so only this lock's are counted.
    fn focus_probe(&self) {
        for _ in 0..100 {
            self.conn.set_input_focus(xproto::InputFocus::PARENT, self.probe, x11rb::CURRENT_TIME).unwrap();
            self.conn.get_input_focus().unwrap().reply().unwrap();
            while self.conn.poll_for_event().unwrap().is_some() {}
            // Still ours after the events were read: no FocusOut of the probe was thrown away.
            if self.conn.get_input_focus().unwrap().reply().unwrap().focus == self.probe {
                return;
            }
            println!("(the focus was taken from the probe; giving it back)");
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the probe cannot keep the focus");
    }

    /// The next full-width override-redirect window mapped (the lock) and the moment
    /// another client grabbed the keyboard, in whichever order they come.
    fn wait_lock(&self) -> (u32, Instant, Instant) {
        let (mut mapped, mut grabbed) = (None, None);
        loop {
            match self.next(Duration::from_secs(60)) {
                Some(Event::MapNotify(e)) if mapped.is_none() && e.override_redirect => {
                    let at = Instant::now();
                    let full = self
                        .conn
                        .get_geometry(e.window)
                        .ok()
                        .and_then(|c| c.reply().ok())
                        .is_some_and(|g| g.width == self.width);
                    if full {
                        mapped = Some((e.window, at));
                    }
                }
                // Keys stop reaching our window: a grab, or the locker taking the focus first.
                Some(Event::FocusOut(e))
                    if e.event == self.probe && e.detail != xproto::NotifyDetail::INFERIOR =>
                {
                    grabbed.get_or_insert(Instant::now());
                }
                None => panic!(
                    "no lock within 60 s (lock window mapped: {}, keys taken: {}; focus on {:#x}, probe {:#x})",
                    mapped.is_some(),
                    grabbed.is_some(),
                    self.conn.get_input_focus().unwrap().reply().unwrap().focus,
                    self.probe
                ),
                Some(other) if std::env::var_os("WARDLOCK_BENCH_DEBUG").is_some() => eprintln!("{other:?}"),
                _ => {}
            }
            if let (Some((window, map_at)), Some(grab_at)) = (mapped, grabbed) {
                return (window, map_at, grab_at);
            }
        }
    }

    /// Fake input (idle back to zero) and, once the server has processed it, the instant at
    /// which idle will cross the timeout: the reference for both lockers.
    fn input(&self) -> Instant {
        self.conn
            .xtest_fake_input(xproto::MOTION_NOTIFY_EVENT, 1, x11rb::CURRENT_TIME, x11rb::NONE, 5, 5, 0)
            .unwrap();
        self.conn.get_input_focus().unwrap().reply().unwrap(); // a round trip: the input is in
        Instant::now() + Duration::from_secs(IDLE_TIMEOUT.into())
    }

    fn key(&self, keysym_code: u8) {
        for kind in [xproto::KEY_PRESS_EVENT, xproto::KEY_RELEASE_EVENT] {
            self.conn.xtest_fake_input(kind, keysym_code, x11rb::CURRENT_TIME, x11rb::NONE, 0, 0, 0).unwrap();
        }
        self.conn.flush().unwrap();
    }

    fn return_keycode(&self) -> u8 {
        let setup = self.conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let map = self.conn.get_keyboard_mapping(min, max - min + 1).unwrap().reply().unwrap();
        let per = map.keysyms_per_keycode as usize;
        let index = map.keysyms.chunks(per).position(|syms| syms.contains(&0xff0d)).unwrap();
        min + index as u8
    }

    /// Next event, or `None` after `within`.
    fn next(&self, within: Duration) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(event) = self.conn.poll_for_event().unwrap() {
                return Some(event);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn wait_unmapped(&self, window: u32) -> Instant {
        loop {
            match self.next(Duration::from_secs(60)) {
                Some(Event::UnmapNotify(e)) if e.window == window => return Instant::now(),
                Some(Event::DestroyNotify(e)) if e.window == window => return Instant::now(),
                _ => {}
            }
        }
    }
}

/// The guard's process and every process under it (WebKit's web and network processes).
fn tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        parents.push((pid, ppid));
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// (CPU seconds, RSS MiB, PSS MiB, processes) of the tree. CPU time is the scheduler's
/// (`/proc/PID/task/TID/schedstat`, nanoseconds on a CPU, every thread): the 10 ms ticks
/// of `/proc/PID/stat` cannot tell 0.01 % of a core from zero in a minute.
fn usage(root: u32) -> (f64, f64, f64, usize) {
    let (mut cpu, mut rss, mut pss) = (0.0, 0.0, 0.0);
    let pids = tree(root);
    for pid in &pids {
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
            let on_cpu = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|ns| ns.parse::<f64>().ok()));
            cpu += on_cpu.unwrap_or(0.0) / 1e9;
        }
        if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            for line in rollup.lines() {
                let kib =
                    |l: &str| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                if line.starts_with("Rss:") {
                    rss += kib(line) / 1024.0;
                } else if line.starts_with("Pss:") {
                    pss += kib(line) / 1024.0;
                }
            }
        }
    }
    (cpu, rss, pss, pids.len())
}

/// The tree's PSS split into anonymous memory (the heap: what the guard holds) and
/// file-backed pages (library code and data, which the kernel can drop and read again).
fn pss_kinds(root: u32) -> String {
    let (mut anon, mut file) = (0.0, 0.0);
    for pid in tree(root) {
        let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else { continue };
        for line in rollup.lines() {
            let kib = || line.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            if line.starts_with("Pss_Anon:") {
                anon += kib() / 1024.0;
            } else if line.starts_with("Pss_File:") {
                file += kib() / 1024.0;
            }
        }
    }
    format!("anonymous {anon:.1} MiB, file-backed {file:.1} MiB")
}

/// A lock seen before idle crossed the timeout would count as 0 ms: say so instead.
fn early(i: u64, who: &str, first: Instant, crossed: Instant) {
    if first < crossed {
        println!("{who} lock {:2}: EARLY, {:.1} ms before the idle crossing", i + 1, ms(crossed - first));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn stats(name: &str, mut values: Vec<Duration>) {
    values.sort();
    let pct = |p: f64| values[((values.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name}: n={} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        values.len(),
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(*values.last().unwrap())
    );
}

fn waiting(idle_secs: u64) {
    let desktop = Desktop::start(1280, 800);
    let agent = Agent::start(&POLICY.replace("idle_timeout = \"15s\"", "idle_timeout = \"8h\""));
    let guard = Guard::start(&desktop, &agent);
    std::thread::sleep(Duration::from_secs(5)); // let start-up work finish before measuring
    let pid = guard.pid().as_raw() as u32;
    let (cpu0, rss, pss, n) = usage(pid);
    println!("guard while waiting, never locked: {n} process(es), RSS {rss:.1} MiB, PSS {pss:.1} MiB");
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (cpu1, ..) = usage(pid);
    let share = (cpu1 - cpu0) / started.elapsed().as_secs_f64() * 100.0;
    println!("guard CPU while waiting: {:.4} s over {idle_secs} s = {share:.4} % of one core", cpu1 - cpu0);

    println!("  of which {}", pss_kinds(pid));
    // Once it has locked and unlocked: the same again in that state.
    agent.add_user("n.nurse", "Nora Nurse", "nurse", "730284", false);
    guard.lock_now();
    desktop.wait_lock_title("the lock page", Duration::from_secs(30), |t| t.starts_with("Wardlock — locked"));
    desktop.key("Escape");
    desktop.type_text("n.nurse");
    desktop.key("Tab");
    desktop.type_text("730284");
    desktop.key("Return");
    desktop.wait_unlocked(Duration::from_secs(30));
    // The after-unlock notice goes after 8 s; WebKit's network process 2 s after the page.
    std::thread::sleep(Duration::from_secs(10));
    let (cpu0, rss, pss, n) = usage(pid);
    println!("guard while waiting, after a lock: {n} process(es), RSS {rss:.1} MiB, PSS {pss:.1} MiB");
    println!("  of which {}", pss_kinds(pid));
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (cpu1, ..) = usage(pid);
    let share = (cpu1 - cpu0) / started.elapsed().as_secs_f64() * 100.0;
    println!(
        "guard CPU while waiting after a lock: {:.4} s over {idle_secs} s = {share:.4} % of one core",
        cpu1 - cpu0
    );
}

fn locks(iterations: u64) {
    let desktop = Desktop::start(1280, 800);
    let agent = Agent::start(POLICY);
    agent.add_user("n.nurse", "Nora Nurse", "nurse", "730284", false);
    let guard = Guard::start(&desktop, &agent);
    let pid = guard.pid().as_raw() as u32;
    let watcher = Watcher::new(&desktop);
    let enter = watcher.return_keycode();
    let (mut mapped, mut grabbed, mut unlocked) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..iterations {
        watcher.focus_probe();
        let crossed = watcher.input();
        let (window, at_map, at_grab) = watcher.wait_lock();
        early(i, "wardlock", at_map.min(at_grab), crossed);
        mapped.push(at_map.saturating_duration_since(crossed));
        grabbed.push(at_grab.saturating_duration_since(crossed));
        desktop.wait_lock_title("the lock page", Duration::from_secs(30), |t| {
            t.starts_with("Wardlock — locked")
        });
        if i == 0 {
            let (_, rss, pss, n) = usage(pid);
            println!("guard locked: {n} processes, RSS {rss:.1} MiB, PSS {pss:.1} MiB");
        }
        desktop.key("Escape");
        desktop.type_text("n.nurse");
        desktop.key("Tab");
        desktop.type_text("730284");
        let pressed = Instant::now();
        watcher.key(enter);
        unlocked.push(watcher.wait_unmapped(window) - pressed);
        println!(
            "wardlock lock {:2}: mapped {:6.1} ms, keys taken {:6.1} ms, unlock {:6.1} ms",
            i + 1,
            ms(mapped[mapped.len() - 1]),
            ms(grabbed[grabbed.len() - 1]),
            ms(unlocked[unlocked.len() - 1])
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let (_, rss, pss, n) = usage(pid);
    println!("guard unlocked again: {n} processes, RSS {rss:.1} MiB, PSS {pss:.1} MiB");
    stats("wardlock: idle timeout -> lock window mapped", mapped);
    stats("wardlock: idle timeout -> keyboard grabbed", grabbed);
    stats("wardlock: Return -> lock window unmapped (unlock)", unlocked);
}

/// The Linux admin's alternative, as deployed: `xss-lock -- xsecurelock`, which starts
/// xsecurelock on the server's screen-saver event. It needs logind (it asserts on a
/// session when the saver fires), so it gets the tests' stand-in on a private bus.
fn xss_lock(iterations: u64, idle_secs: u64) {
    let desktop = Desktop::start(1280, 800);
    let watcher = Watcher::new(&desktop);
    // xss-lock asserts on a logind session when the screen saver fires: a stand-in one.
    let logind = wardlock_e2e::FakeLogind::start();
    let mut xss = desktop
        .command("xss-lock")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &logind.address)
        .args(["--", "xsecurelock"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2)); // let it connect and select the events
    let (mut mapped, mut grabbed) = (Vec::new(), Vec::new());
    for i in 0..iterations {
        watcher.focus_probe();
        let crossed = watcher.input();
        let (window, at_map, at_grab) = watcher.wait_lock();
        early(i, "xsecurelock", at_map.min(at_grab), crossed);
        mapped.push(at_map.saturating_duration_since(crossed));
        grabbed.push(at_grab.saturating_duration_since(crossed));
        println!(
            "xsecurelock lock {:2}: mapped {:6.1} ms, keys taken {:6.1} ms",
            i + 1,
            ms(mapped[mapped.len() - 1]),
            ms(grabbed[grabbed.len() - 1])
        );
        let _ = std::process::Command::new("pkill").args(["-KILL", "-x", "xsecurelock"]).status();
        watcher.wait_unmapped(window);
    }
    stats("xss-lock + xsecurelock: idle timeout -> lock window mapped", mapped);
    stats("xss-lock + xsecurelock: idle timeout -> keys taken", grabbed);

    // Waiting: the screen saver pushed far out, xss-lock's CPU over the same time as ours.
    watcher
        .conn
        .set_screen_saver(30000, 0, xproto::Blanking::NOT_PREFERRED, xproto::Exposures::ALLOWED)
        .unwrap();
    watcher.input();
    let pid = xss.id();
    let (cpu0, rss, pss, _) = usage(pid);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (cpu1, ..) = usage(pid);
    let share = (cpu1 - cpu0) / started.elapsed().as_secs_f64() * 100.0;
    println!("xss-lock while waiting: RSS {rss:.1} MiB, PSS {pss:.1} MiB; CPU {:.4} s over {idle_secs} s = {share:.4} % of one core", cpu1 - cpu0);
    let _ = xss.kill();
    let _ = xss.wait();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there is nothing to run then
    }
    let iterations = env_num("WARDLOCK_BENCH_LOCKS", 30);
    let idle_secs = env_num("WARDLOCK_BENCH_IDLE_SECS", 60);
    let only = std::env::var("WARDLOCK_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "waiting" {
        waiting(idle_secs);
    }
    if only.is_empty() || only == "locks" {
        locks(iterations);
    }
    if only.is_empty() || only == "xss-lock" {
        xss_lock(iterations, idle_secs);
    }
}
