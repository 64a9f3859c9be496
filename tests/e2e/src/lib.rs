//! The harness of the end-to-end tests: a private X server (Xvfb) with a window manager
//! (openbox), the real `wardlockd` in `--dev` mode on a temporary directory, the real
//! guard, `xdotool` for input and `wardlockctl` for the audit log, all started and
//! stopped by the test itself.
//!
//! Everything waits for an observable event (a window mapped, a title, an audit entry)
//! with a deadline; nothing sleeps to synchronise.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, missing_debug_implementations)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{self, ConnectionExt, MapState};
use x11rb::rust_connection::RustConnection;

/// Where cargo put the workspace's binaries (this test runs from target/debug/deps).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// Polls `check` until it gives a value or `within` passes; panics with `what` then.
#[track_caller]
pub fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A session's runtime folder as logind makes it: the account's alone (0700).
fn private_runtime_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A private X server with a window manager.
pub struct Desktop {
    pub display: String,
    server: Child,
    wm: Child,
    conn: RustConnection,
    root: u32,
    /// The dummy Xorg server's configuration and log.
    _server_dir: Option<tempfile::TempDir>,
}

/// Xorg with the dummy video driver: sixteen RandR outputs (DUMMY0–DUMMY15) that
/// `xrandr` turns on and off at runtime, as monitors are plugged in and out. Xvfb and
/// Xephyr have one monitor whatever is done.
const DUMMY_XORG_CONF: &str = r#"
Section "ServerFlags"
  Option "AutoAddDevices" "false"
  Option "AutoEnableDevices" "false"
  Option "DontVTSwitch" "true"
EndSection
Section "Device"
  Identifier "dummy"
  Driver "dummy"
  VideoRam 256000
EndSection
Section "Monitor"
  Identifier "monitor"
  HorizSync 5.0-1000.0
  VertRefresh 5.0-200.0
EndSection
Section "Screen"
  Identifier "screen"
  Device "dummy"
  Monitor "monitor"
  DefaultDepth 24
  SubSection "Display"
    Depth 24
    Modes "1280x800"
    Virtual 4096 2400
  EndSubSection
EndSection
"#;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub id: u32,
    pub name: String,
    pub x: i16,
    pub y: i16,
    pub width: u16,
    pub height: u16,
    pub viewable: bool,
}

impl Desktop {
    pub fn start(width: u16, height: u16) -> Self {
        // -displayfd: Xvfb picks a free display number and tells it, so tests can run side by side.
        let xvfb = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", &format!("{width}x{height}x24"), "-nolisten", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is not installed (make setup installs it)");
        Self::with_server(xvfb, None)
    }

    /// A desktop on Xorg's dummy driver with one 1280×800 monitor (output DUMMY0, primary);
    /// more are plugged in with [`Desktop::xrandr`]. Xorg needs root, as the tests have.
    pub fn start_with_outputs() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "Xorg with its own configuration and log file needs root: run the tests as root (CI does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("xorg.conf");
        std::fs::write(&conf, DUMMY_XORG_CONF).unwrap();
        let xorg = Command::new("Xorg")
            .args(["-displayfd", "1", "-config"])
            .arg(&conf)
            .arg("-logfile")
            .arg(dir.path().join("xorg.log"))
            .args(["-noreset", "-nolisten", "tcp", "-novtswitch", "-sharevts"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xorg is not installed (make setup installs xserver-xorg-core and its dummy driver)");
        let desktop = Self::with_server(xorg, Some(dir));
        desktop.xrandr(&["--output", "DUMMY0", "--primary"]);
        desktop
    }

    fn with_server(mut server: Child, server_dir: Option<tempfile::TempDir>) -> Self {
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(!line.trim().is_empty(), "the X server did not start (see its log)");
        let display = format!(":{}", line.trim());
        let (conn, screen) = x11rb::connect(Some(&display)).expect("connect to Xvfb");
        let root = conn.setup().roots[screen].root;
        let wm = Command::new("openbox")
            .env("DISPLAY", &display)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openbox is not installed (make setup installs it)");
        let desktop = Self { display, server, wm, conn, root, _server_dir: server_dir };
        // openbox is up once it owns the WM selection.
        let atom = desktop.atom("WM_S0");
        wait_for("the window manager", Duration::from_secs(10), || {
            let owner = desktop.conn.get_selection_owner(atom).ok()?.reply().ok()?.owner;
            (owner != x11rb::NONE).then_some(())
        });
        desktop
    }

    /// Runs `xrandr` on this display (it waits for the server's answer) and checks it worked.
    pub fn xrandr(&self, args: &[&str]) {
        let out = self.command("xrandr").args(args).output().expect("xrandr (x11-xserver-utils)");
        assert!(out.status.success(), "xrandr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A client of its own that grabs the keyboard, as any locker does; the grab lasts as
    /// long as the returned connection.
    pub fn hold_keyboard_grab(&self) -> RustConnection {
        let (conn, screen) = x11rb::connect(Some(&self.display)).unwrap();
        let root = conn.setup().roots[screen].root;
        let status = conn
            .grab_keyboard(false, root, x11rb::CURRENT_TIME, xproto::GrabMode::ASYNC, xproto::GrabMode::ASYNC)
            .unwrap()
            .reply()
            .unwrap()
            .status;
        assert_eq!(status, xproto::GrabStatus::SUCCESS, "the keyboard is grabbed already");
        conn
    }

    /// Whether some client holds the keyboard grab (ours is tried and let go at once).
    pub fn keyboard_grabbed(&self) -> bool {
        let status = self
            .conn
            .grab_keyboard(
                false,
                self.root,
                x11rb::CURRENT_TIME,
                xproto::GrabMode::ASYNC,
                xproto::GrabMode::ASYNC,
            )
            .unwrap()
            .reply()
            .unwrap()
            .status;
        if status == xproto::GrabStatus::SUCCESS {
            self.conn.ungrab_keyboard(x11rb::CURRENT_TIME).unwrap();
            self.conn.flush().unwrap();
        }
        status == xproto::GrabStatus::ALREADY_GRABBED
    }

    /// The root window's size now.
    pub fn root_size(&self) -> (u16, u16) {
        let geo = self.conn.get_geometry(self.root).unwrap().reply().unwrap();
        (geo.width, geo.height)
    }

    fn atom(&self, name: &str) -> u32 {
        self.conn.intern_atom(false, name.as_bytes()).unwrap().reply().unwrap().atom
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DISPLAY", &self.display).env("NO_AT_BRIDGE", "1");
        cmd
    }

    /// Runs `xdotool` with these arguments; its errors (a window gone) are not failures.
    pub fn xdotool(&self, args: &[&str]) -> String {
        let out = self.command("xdotool").args(args).stderr(Stdio::null()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn type_text(&self, text: &str) {
        self.xdotool(&["type", "--delay", "15", text]);
    }

    /// At the lock screen: starts its form over (Escape), types the user ID and PIN, moves
    /// `tabs` buttons on from Unlock (0: Unlock itself) and presses it.
    pub fn type_pin_and_press(&self, user: &str, pin: &str, tabs: usize) {
        self.key("Escape");
        self.type_text(user);
        self.key("Tab");
        self.type_text(pin);
        for _ in 0..tabs {
            self.key("Tab");
        }
        self.key("Return");
    }

    pub fn key(&self, key: &str) {
        self.xdotool(&["key", key]);
    }

    /// All top-level windows (children of the root), with their titles.
    pub fn windows(&self) -> Vec<Window> {
        let net_wm_name = self.atom("_NET_WM_NAME");
        let utf8 = self.atom("UTF8_STRING");
        let Ok(tree) = self.conn.query_tree(self.root).unwrap().reply() else { return vec![] };
        let mut out = Vec::new();
        for id in tree.children {
            let Ok(Ok(attrs)) = self.conn.get_window_attributes(id).map(|c| c.reply()) else { continue };
            let Ok(Ok(geo)) = self.conn.get_geometry(id).map(|c| c.reply()) else { continue };
            let name = self
                .conn
                .get_property(false, id, net_wm_name, utf8, 0, 1024)
                .ok()
                .and_then(|c| c.reply().ok())
                .map(|p| String::from_utf8_lossy(&p.value).into_owned())
                .filter(|n| !n.is_empty())
                .or_else(|| {
                    self.conn
                        .get_property(false, id, xproto::AtomEnum::WM_NAME, xproto::AtomEnum::STRING, 0, 1024)
                        .ok()
                        .and_then(|c| c.reply().ok())
                        .map(|p| String::from_utf8_lossy(&p.value).into_owned())
                })
                .unwrap_or_default();
            out.push(Window {
                id,
                name,
                x: geo.x,
                y: geo.y,
                width: geo.width,
                height: geo.height,
                viewable: attrs.map_state == MapState::VIEWABLE,
            });
        }
        out
    }

    /// Viewable lock windows: their titles start with "Wardlock — ".
    pub fn lock_windows(&self) -> Vec<Window> {
        self.windows().into_iter().filter(|w| w.viewable && w.name.starts_with("Wardlock — ")).collect()
    }

    /// Viewable curtains: the guard's native windows under the lock page, one per monitor.
    pub fn curtains(&self) -> Vec<Window> {
        self.windows().into_iter().filter(|w| w.viewable && w.name == "Wardlock curtain").collect()
    }

    /// Whether every pixel of the screen has the curtain's colour or the lock page's
    /// (the page may be drawn over part of it): nothing of any other window shows.
    pub fn covered_at(&self, points: &[(u16, u16)]) -> bool {
        points.iter().all(|&(x, y)| self.pixel(x, y) == CURTAIN)
    }

    /// A window managed (reparented) by the window manager, found by its exact title.
    pub fn find_managed(&self, name: &str) -> Option<String> {
        let pattern = format!("^{}$", name.replace('.', "\\."));
        let id = self.xdotool(&["search", "--onlyvisible", "--name", &pattern]);
        id.lines().next().map(str::to_owned)
    }

    pub fn find(&self, name: &str) -> Option<Window> {
        self.windows().into_iter().find(|w| w.viewable && w.name == name)
    }

    /// Like [`wait_for`], and on a timeout saves a screenshot and lists the windows.
    #[track_caller]
    pub fn wait<T>(&self, what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() >= deadline {
                let shot = self.save_screenshot(&format!("failed-{}", what.replace(' ', "-")));
                let windows: Vec<_> = self.windows().into_iter().filter(|w| w.viewable).collect();
                panic!(
                    "timed out after {within:?} waiting for {what}; screen: {}; windows: {windows:?}",
                    shot.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until a lock window's title (which follows the page's state) satisfies `f`.
    #[track_caller]
    pub fn wait_lock_title(&self, what: &str, within: Duration, f: impl Fn(&str) -> bool) -> String {
        self.wait(what, within, || self.lock_windows().into_iter().map(|w| w.name).find(|n| f(n)))
    }

    #[track_caller]
    pub fn wait_unlocked(&self, within: Duration) {
        self.wait("the lock windows to go", within, || {
            (self.lock_windows().is_empty() && self.curtains().is_empty()).then_some(())
        });
    }

    pub fn input_focus(&self) -> u32 {
        self.conn.get_input_focus().unwrap().reply().unwrap().focus
    }

    /// The root window's pixels as RGB.
    pub fn screenshot(&self) -> (u16, u16, Vec<u8>) {
        let geo = self.conn.get_geometry(self.root).unwrap().reply().unwrap();
        let image = self
            .conn
            .get_image(xproto::ImageFormat::Z_PIXMAP, self.root, 0, 0, geo.width, geo.height, !0)
            .unwrap()
            .reply()
            .unwrap();
        // 24-bit depth comes as 32 bits per pixel, little-endian BGRX.
        let rgb = image.data.chunks_exact(4).flat_map(|p| [p[2], p[1], p[0]]).collect();
        (geo.width, geo.height, rgb)
    }

    pub fn pixel(&self, x: u16, y: u16) -> [u8; 3] {
        let image = self
            .conn
            .get_image(xproto::ImageFormat::Z_PIXMAP, self.root, x as i16, y as i16, 1, 1, !0)
            .unwrap()
            .reply()
            .unwrap();
        [image.data[2], image.data[1], image.data[0]]
    }

    /// Waits until the lock page has drawn its text (its text colour is on screen), since
    /// the curtain shows before the page does.
    #[track_caller]
    pub fn wait_drawn(&self) {
        self.wait("the page drawn", Duration::from_secs(20), || {
            let (_, _, rgb) = self.screenshot();
            rgb.chunks_exact(3).any(|p| p == TEXT).then_some(())
        });
    }

    /// Saves the screen as PNG under target/e2e-screenshots (and returns the path).
    pub fn save_screenshot(&self, name: &str) -> PathBuf {
        let (width, height, rgb) = self.screenshot();
        let dir = bin("").parent().unwrap().join("e2e-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        let file = std::fs::File::create(&path).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width.into(), height.into());
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header().unwrap().write_image_data(&rgb).unwrap();
        path
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        kill(&mut self.wm);
        kill(&mut self.server);
    }
}

/// The test policy: short timeouts, a quick lockout.
pub const POLICY: &str = r#"
[lock]
idle_timeout = "15s"
warning = "5s"
# The tests type and move the pointer with xdotool, which is synthetic (XTEST) input.
synthetic_input_keeps_awake = true
banner = "E2E ward: authorised clinical staff only."
when_unguarded = "audit_only"

[unlock]
methods = ["pin", "totp", "pin_totp"]

[lockout]
max_failures = 3
throttle = "0s"
lockout = "5s"
max_lockout = "5s"
"#;

/// A real `wardlockd --dev` on a temporary directory.
pub struct Agent {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

impl Agent {
    pub fn start(policy: &str) -> Self {
        Self::start_with_env(policy, &[])
    }

    /// Like `start`, with extra environment (a private system bus, say).
    pub fn start_with_env(policy: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut agent = Self { dir, child: None, env };
        agent.restart();
        agent
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    /// Starts (again) on the same directory, and waits until it answers.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("wardlockd.log"))
            .unwrap();
        let child = Command::new(bin("wardlockd"))
            .arg("--dev")
            .arg(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for("wardlockd to answer", Duration::from_secs(20), || {
            self.ctl(&["agent", "status"]).status.success().then_some(())
        });
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        self.ctl_with_stdin(args, "")
    }

    pub fn ctl_with_stdin(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(bin("wardlockctl"))
            .args(args)
            .env("WARDLOCK_DB", self.dir.path().join("data/wardlock.db"))
            .env("WARDLOCK_KEY_STORE", format!("file:{}", self.dir.path().join("credentials").display()))
            .env("WARDLOCK_SOCKET", self.socket())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Adds a user with this PIN (and TOTP: returns the base32 secret).
    pub fn add_user(&self, id: &str, name: &str, role: &str, pin: &str, totp: bool) -> Option<String> {
        let mut args = vec!["user", "add", id, "--name", name, "--role", role, "--pin-stdin"];
        if totp {
            args.push("--totp");
        }
        let out = self.ctl_with_stdin(&args, &format!("{pin}\n"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "user add failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        let uri = stdout.split_whitespace().find(|w| w.starts_with("otpauth://"))?;
        let secret = uri.split(['?', '&']).find_map(|kv| kv.strip_prefix("secret="))?;
        Some(secret.to_owned())
    }

    /// Every audit entry's kind, in order.
    pub fn audit_kinds(&self) -> Vec<String> {
        self.audit().iter().map(|e| e["kind"].as_str().unwrap_or_default().to_owned()).collect()
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        let out = self.ctl(&["audit", "export", "--format", "json"]);
        assert!(out.status.success(), "audit export failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    }

    #[track_caller]
    pub fn wait_audit(&self, kind: &str, within: Duration) -> serde_json::Value {
        wait_for(&format!("a `{kind}` audit entry"), within, || {
            self.audit().into_iter().find(|e| e["kind"] == kind)
        })
    }

    pub fn count(&self, kind: &str) -> usize {
        self.audit_kinds().iter().filter(|k| *k == kind).count()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The real session guard on a desktop, talking to an agent.
pub struct Guard {
    child: Option<Child>,
    runtime_dir: tempfile::TempDir,
    display: String,
    socket: PathBuf,
    pub log: PathBuf,
    env: Vec<(String, String)>,
}

impl Guard {
    pub fn start(desktop: &Desktop, agent: &Agent) -> Self {
        Self::start_with_env(desktop, agent, &[])
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(bin("wardlock"));
        cmd.env("DISPLAY", &self.display)
            .env("NO_AT_BRIDGE", "1")
            .env("XDG_RUNTIME_DIR", self.runtime_dir.path())
            .env_remove("WAYLAND_DISPLAY")
            .arg("--socket")
            .arg(&self.socket);
        cmd
    }

    /// Like `start`, with extra environment (a private system bus, say).
    pub fn start_with_env(desktop: &Desktop, agent: &Agent, env: &[(&str, &str)]) -> Self {
        let runtime_dir = private_runtime_dir();
        let log = runtime_dir.path().join("guard.log");
        let mut guard = Self {
            child: None,
            runtime_dir,
            display: desktop.display.clone(),
            socket: agent.socket(),
            log,
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        guard.restart();
        guard
    }

    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = self.command();
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        self.child = Some(cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap());
        // Up once its single-instance socket answers; if it never does, what it said.
        let socket = self.runtime_dir.path().join("wardlock-guard.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if Instant::now() >= deadline || self.exited() {
                let said = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("the guard did not start within 30 s; its log:\n{said}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `wardlock --lock`, as a keyboard shortcut would run it.
    pub fn lock_now(&self) {
        let out = self.command().arg("--lock").output().unwrap();
        assert!(out.status.success(), "wardlock --lock: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `wardlock --enroll`: the running guard opens its enrollment window.
    pub fn open_enrollment(&self) {
        let out = self.command().arg("--enroll").output().unwrap();
        assert!(out.status.success(), "wardlock --enroll: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `wardlock --quit`: the running guard opens its quit window.
    pub fn open_quit(&self) {
        let out = self.command().arg("--quit").output().unwrap();
        assert!(out.status.success(), "wardlock --quit: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Whether the guard process has ended (and reaps it).
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// The guard's WebKit web processes (its children of that name), by pid.
    pub fn web_processes(&self) -> Vec<i32> {
        self.children_named("WebKitWebProces")
    }

    /// WebKit's network process, which should exist only around a webview.
    pub fn network_processes(&self) -> Vec<i32> {
        self.children_named("WebKitNetworkPr")
    }

    /// The guard's live child processes whose name (`comm`) starts so.
    fn children_named(&self, prefix: &str) -> Vec<i32> {
        let parent = self.pid().as_raw();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // pid (comm) state ppid …; comm may hold spaces, so split after the last ')'.
            let Some((head, tail)) = stat.rsplit_once(')') else { continue };
            let comm = head.split_once('(').map(|(_, c)| c).unwrap_or_default();
            let ppid = tail.split_whitespace().nth(1).and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(parent) && comm.starts_with(prefix) && !tail.trim_start().starts_with('Z') {
                found.push(pid);
            }
        }
        found
    }

    pub fn log_text(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        text
    }
    /// The guard's structured log events named `name` (its `event` field), each line
    /// with its fields: tests match on names and fields, which are kept stable, never
    /// on the wording of the message.
    pub fn log_events(&self, name: &str) -> Vec<String> {
        let field = format!("event=\"{name}\"");
        self.log_text().lines().filter(|l| l.contains(&field)).map(str::to_owned).collect()
    }

    /// The latest event named `name`, if the guard logged one.
    pub fn log_event(&self, name: &str) -> Option<String> {
        self.log_events(name).pop()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The current TOTP code from `oathtool`, an independent implementation.
pub fn oathtool(secret: &str) -> String {
    let out = Command::new("oathtool").args(["--totp", "-b", secret]).output().expect("oathtool");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A stand-in PHI application: an xterm in raw mode that writes every key it gets to a file.
pub struct PhiApp {
    child: Child,
    pub file: PathBuf,
    /// Its X window, for xdotool.
    pub id: String,
    _dir: tempfile::TempDir,
}

impl PhiApp {
    pub fn start(desktop: &Desktop) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        let ready = dir.path().join("ready");
        let script = format!("stty raw -echo; touch '{}'; exec cat > '{}'", ready.display(), file.display());
        // In a process group of its own: the stand-in logind's "session", which it can end.
        let child = desktop
            .command("xterm")
            .process_group(0)
            .args(["-title", "PHI chart", "-geometry", "80x20+40+40", "-e", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("xterm is not installed (make setup installs it)");
        // The window manager reparents it, so it is found by name, not among the root's children.
        let id = wait_for("the PHI stand-in", Duration::from_secs(20), || {
            let id = desktop.xdotool(&["search", "--onlyvisible", "--name", "^PHI chart$"]);
            (ready.exists() && !id.is_empty()).then(|| id.lines().next().unwrap_or_default().to_owned())
        });
        Self { child, file, id, _dir: dir }
    }

    pub fn received(&self) -> String {
        std::fs::read_to_string(&self.file).unwrap_or_default()
    }

    /// Its process group: what the stand-in logind ends as the session.
    pub fn process_group(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the chart is still running (reaps it once it ended).
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for PhiApp {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A window of a stand-in application as the X server has it: whether it is mapped
/// (viewable) and where it is on the screen. `None` once it is gone.
pub fn client_state(desktop: &Desktop, id: u32) -> Option<Window> {
    let attrs = desktop.conn.get_window_attributes(id).ok()?.reply().ok()?;
    let geo = desktop.conn.get_geometry(id).ok()?.reply().ok()?;
    let at = desktop.conn.translate_coordinates(id, desktop.root, 0, 0).ok()?.reply().ok()?;
    Some(Window {
        id,
        name: String::new(),
        x: at.dst_x,
        y: at.dst_y,
        width: geo.width,
        height: geo.height,
        viewable: attrs.map_state == MapState::VIEWABLE,
    })
}

/// A stand-in PHI (or other) application with one window of a chosen `WM_CLASS`.
pub struct App {
    child: Child,
    /// Its client window (not the window manager's frame).
    pub id: u32,
}

impl App {
    /// `xterm -class CLASS`, as a real application would be named.
    pub fn xterm(desktop: &Desktop, class: &str, title: &str, geometry: &str) -> Self {
        let child = desktop
            .command("xterm")
            .args(["-class", class, "-title", title, "-geometry", geometry])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("xterm is not installed (make setup installs it)");
        Self::found(desktop, child, title)
    }

    /// `phi-standin`: a plain red window that closes on `WM_DELETE_WINDOW`, or with
    /// `ignore_delete` only by signal.
    pub fn standin(desktop: &Desktop, class: &str, title: &str, at: (u16, u16), ignore_delete: bool) -> Self {
        let mut cmd = desktop.command(bin("phi-standin"));
        cmd.args([class, title, &at.0.to_string(), &at.1.to_string()]);
        if ignore_delete {
            cmd.arg("--ignore-delete");
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // Named before it is mapped, so found even where the guard hides it at once.
        Self::found_by(desktop, child, title, &[])
    }

    fn found(desktop: &Desktop, child: Child, title: &str) -> Self {
        Self::found_by(desktop, child, title, &["--onlyvisible"])
    }

    fn found_by(desktop: &Desktop, child: Child, title: &str, options: &[&str]) -> Self {
        let pattern = format!("^{title}$");
        let id = wait_for(&format!("the window {title:?}"), Duration::from_secs(20), || {
            let args = [&["search"], options, &["--name", &pattern]].concat();
            let id = desktop.xdotool(&args);
            id.lines().next().and_then(|id| id.parse::<u32>().ok())
        });
        Self { child, id }
    }

    pub fn state(&self, desktop: &Desktop) -> Option<Window> {
        client_state(desktop, self.id)
    }

    /// Its state once it is on screen and the window manager has placed it (the same
    /// position in two readings in a row).
    pub fn placed(&self, desktop: &Desktop) -> Window {
        let mut last: Option<Window> = None;
        wait_for("the window placed", Duration::from_secs(10), || {
            let now = self.state(desktop).filter(|w| w.viewable);
            let settled = now.is_some() && now == last;
            last = now;
            settled.then(|| last.clone()).flatten()
        })
    }

    /// Whether the process still runs (reaps it once it ended).
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// The stand-in's colour (`phi-standin`).
pub const STANDIN: [u8; 3] = [255, 0, 0];

/// The lock screen's curtain colour (`--bg` in ui/src/style.css).
pub const CURTAIN: [u8; 3] = [12, 30, 38];
/// Its text colour (`--text`).
pub const TEXT: [u8; 3] = [242, 246, 248];

/// A stand-in logind on a private bus: the guard follows its session `Lock` signal and
/// `PrepareForSleep`, which the test sends.
pub struct FakeLogind {
    bus: Child,
    pub address: String,
    runtime: tokio::runtime::Runtime,
    connection: zbus::Connection,
    processes: std::sync::Arc<std::sync::Mutex<Option<i32>>>,
    calls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub const SESSION: &str = "/org/freedesktop/login1/session/c7";

struct LogindManager;

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl LogindManager {
    #[zbus(name = "GetSessionByPID")]
    fn get_session_by_pid(&self, _pid: u32) -> zbus::zvariant::OwnedObjectPath {
        zbus::zvariant::OwnedObjectPath::try_from(SESSION).unwrap()
    }

    /// xss-lock asks by `XDG_SESSION_ID` when it is set.
    fn get_session(&self, _id: &str) -> zbus::zvariant::OwnedObjectPath {
        zbus::zvariant::OwnedObjectPath::try_from(SESSION).unwrap()
    }

    /// xss-lock takes a sleep delay lock: any open file will do as the lock.
    fn inhibit(&self, _what: &str, _who: &str, _why: &str, _mode: &str) -> zbus::zvariant::OwnedFd {
        let file = std::fs::File::open("/dev/null").unwrap();
        zbus::zvariant::OwnedFd::from(std::os::fd::OwnedFd::from(file))
    }

    #[zbus(signal)]
    async fn prepare_for_sleep(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        start: bool,
    ) -> zbus::Result<()>;
}

struct LogindSession {
    /// The process group that stands for the session: `Terminate` ends it.
    processes: std::sync::Arc<std::sync::Mutex<Option<i32>>>,
    calls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[zbus::interface(name = "org.freedesktop.login1.Session")]
impl LogindSession {
    /// xss-lock reports idleness here (and asserts that it can).
    fn set_idle_hint(&self, _idle: bool) {}

    /// As logind does: nothing but the `Lock` signal, for whatever locker listens.
    #[zbus(name = "Lock")]
    async fn request_lock(&self, #[zbus(signal_emitter)] emitter: zbus::object_server::SignalEmitter<'_>) {
        self.calls.lock().unwrap().push("lock".into());
        let _ = Self::lock(&emitter).await;
    }

    fn terminate(&self) {
        self.calls.lock().unwrap().push("terminate".into());
        if let Some(pgid) = *self.processes.lock().unwrap() {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// No other locker runs here: nothing ever sets it.
    #[zbus(property)]
    fn locked_hint(&self) -> bool {
        false
    }

    #[zbus(signal)]
    async fn lock(emitter: &zbus::object_server::SignalEmitter<'_>) -> zbus::Result<()>;
}

impl FakeLogind {
    pub fn start() -> Self {
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon is needed (make setup installs it)");
        let mut address = String::new();
        BufReader::new(bus.stdout.take().unwrap()).read_line(&mut address).unwrap();
        let address = address.trim().to_owned();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let processes = std::sync::Arc::new(std::sync::Mutex::new(None));
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let connection = runtime.block_on(async {
            zbus::connection::Builder::address(address.as_str())
                .unwrap()
                .name("org.freedesktop.login1")
                .unwrap()
                .serve_at("/org/freedesktop/login1", LogindManager)
                .unwrap()
                .serve_at(SESSION, LogindSession { processes: processes.clone(), calls: calls.clone() })
                .unwrap()
                .build()
                .await
                .unwrap()
        });
        Self { bus, address, runtime, connection, processes, calls }
    }

    /// The processes of the session: the process group `Terminate` ends.
    pub fn set_session_processes(&self, process_group: i32) {
        *self.processes.lock().unwrap() = Some(process_group);
    }

    /// What the session was asked so far ("lock", "terminate"), in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// `loginctl lock-session`, or the desktop's own locker: the session's `Lock` signal.
    pub fn lock_session(&self) {
        self.runtime.block_on(async {
            let iface = self.connection.object_server().interface::<_, LogindSession>(SESSION).await.unwrap();
            LogindSession::lock(iface.signal_emitter()).await.unwrap();
        });
    }

    /// The machine goes to sleep (`true`) or wakes up (`false`).
    pub fn prepare_for_sleep(&self, start: bool) {
        self.runtime.block_on(async {
            let iface = self
                .connection
                .object_server()
                .interface::<_, LogindManager>("/org/freedesktop/login1")
                .await
                .unwrap();
            LogindManager::prepare_for_sleep(iface.signal_emitter(), start).await.unwrap();
        });
    }
}

impl Drop for FakeLogind {
    fn drop(&mut self) {
        kill(&mut self.bus);
    }
}

/// Text held on an X selection (`clipboard` or `primary`) by `xclip`, as a chart's copy
/// would be, until dropped.
pub struct Selection {
    holder: Child,
}

impl Selection {
    pub fn hold(desktop: &Desktop, selection: &str, text: &str) -> Self {
        use std::io::Write;
        let mut holder = desktop
            .command("xclip")
            .args(["-selection", selection, "-quiet", "-i"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("xclip is not installed (make setup installs it)");
        holder.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        wait_for(&format!("xclip to own the {selection} selection"), Duration::from_secs(10), || {
            let out = desktop.command("xclip").args(["-selection", selection, "-o"]).output().ok()?;
            (String::from_utf8_lossy(&out.stdout) == text).then_some(())
        });
        Self { holder }
    }
}

impl Drop for Selection {
    fn drop(&mut self) {
        kill(&mut self.holder);
    }
}

/// The guard started by `tauri-driver` (WebKitWebDriver underneath) and driven over
/// WebDriver: the page's own elements and texts, which the X server cannot show.
pub struct WebDriverGuard {
    driver: Child,
    base: String,
    session: String,
    /// WebKitWebDriver's port, and the guard's socket argument: how their processes are
    /// found at the end (tauri-driver does not take them down with it).
    native: u16,
    guard_socket: PathBuf,
    _runtime_dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl WebDriverGuard {
    /// Starts tauri-driver, which starts the guard; the session attaches to the first
    /// web page the guard shows, so the guard is asked to lock at once.
    pub fn start_locked(desktop: &Desktop, agent: &Agent) -> Self {
        let runtime_dir = private_runtime_dir();
        let (port, native) = (free_port(), free_port());
        let driver = desktop
            .command("tauri-driver")
            .args(["--port", &port.to_string(), "--native-port", &native.to_string()])
            .env("XDG_RUNTIME_DIR", runtime_dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tauri-driver is not installed (make setup installs it)");
        let base = format!("http://127.0.0.1:{port}");
        wait_for("tauri-driver", Duration::from_secs(30), || {
            ureq::get(&format!("{base}/status")).call().ok()
        });
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "wry",
            "tauri:options": {
                "application": bin("wardlock"),
                "args": ["--socket", agent.socket()],
            },
        }}});
        let url = format!("{base}/session");
        let request = std::thread::spawn(move || ureq::post(&url).send_json(capabilities).map_err(Box::new));
        // The guard is up once its single-instance socket answers; then lock it.
        let socket = runtime_dir.path().join("wardlock-guard.sock");
        wait_for("the guard under WebDriver", Duration::from_secs(60), || {
            std::os::unix::net::UnixStream::connect(&socket).ok().map(|_| ())
        });
        let lock = Command::new(bin("wardlock"))
            .arg("--lock")
            .env("DISPLAY", &desktop.display)
            .env("XDG_RUNTIME_DIR", runtime_dir.path())
            .output()
            .unwrap();
        assert!(lock.status.success(), "wardlock --lock: {}", String::from_utf8_lossy(&lock.stderr));
        let answer: serde_json::Value =
            request.join().unwrap().expect("a WebDriver session").into_json().unwrap();
        let session = answer["value"]["sessionId"].as_str().expect("a session id").to_owned();
        Self { driver, base, session, native, guard_socket: agent.socket(), _runtime_dir: runtime_dir }
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let response = match body {
            Some(body) => ureq::request(method, &url).send_json(body),
            None => ureq::request(method, &url).call(),
        };
        match response {
            Ok(r) => r.into_json::<serde_json::Value>().unwrap()["value"].clone(),
            Err(ureq::Error::Status(code, r)) => {
                panic!("WebDriver {method} {path}: {code} {}", r.into_string().unwrap_or_default())
            }
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    pub fn title(&self) -> String {
        self.call("GET", "/title", None).as_str().unwrap_or_default().to_owned()
    }

    /// The element for a CSS selector.
    pub fn find(&self, css: &str) -> String {
        let found =
            self.call("POST", "/element", Some(serde_json::json!({"using": "css selector", "value": css})));
        found.as_object().and_then(|o| o.values().next()).and_then(|v| v.as_str()).unwrap().to_owned()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/value"), Some(serde_json::json!({"text": text})));
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/click"), Some(serde_json::json!({})));
    }

    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.call("GET", &format!("/element/{element}/text"), None).as_str().unwrap_or_default().to_owned()
    }

    /// An input's current value (its `value` property).
    pub fn value(&self, css: &str) -> String {
        let element = self.find(css);
        self.call("GET", &format!("/element/{element}/property/value"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The centre of an element on the screen (the lock page covers the screen from 0,0).
    pub fn centre(&self, css: &str) -> (i64, i64) {
        let element = self.find(css);
        let rect = self.call("GET", &format!("/element/{element}/rect"), None);
        let at = |k: &str| rect[k].as_f64().unwrap_or_default();
        ((at("x") + at("width") / 2.0) as i64, (at("y") + at("height") / 2.0) as i64)
    }

    /// Waits until the element's text satisfies `f`.
    #[track_caller]
    pub fn wait_text(&self, css: &str, within: Duration, f: impl Fn(&str) -> bool) -> String {
        wait_for(&format!("the text of {css}"), within, || Some(self.text(css)).filter(|t| f(t)))
    }
}

impl Drop for WebDriverGuard {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        kill(&mut self.driver);
        let patterns = [
            format!("WebKitWebDriver --port={}", self.native),
            format!("--socket {}", self.guard_socket.display()),
        ];
        for pattern in patterns {
            let _ = Command::new("pkill").args(["-KILL", "-f", "--"]).arg(pattern).status();
        }
    }
}
