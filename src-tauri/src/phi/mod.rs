//! The PHI applications of the session: the windows the policy names (`phi.apps`) are
//! hidden at the lock, given back to their clinician, closed at another clinician's
//! unlock, a sign-out or when abandoned, and covered during the countdown. Which tiers
//! are open sets the idle timeout.
//!
//! One worker thread does it all, so the curtain and the grab never wait on a slow
//! application. The core's `PhiLedger` decides; [`PhiWindows`] (one file per platform)
//! touches the windows. Every step is reported to `wardlockd` as what the display server
//! showed, never as what was asked: "hidden" once the window is unmapped, "closed" once
//! it is gone.

#[cfg(target_os = "linux")]
mod x11;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use wardlock_core::clock::MonoTime;
use wardlock_core::phi::{CloseReason, PhiLedger, PhiStep};
use wardlock_core::policy::{PhiAction, WindowIdentity};
use wardlock_core::protocol::local::{GuardEvent, GuardPolicy};

use crate::guard::Command;
use crate::link::ServiceLink;

/// After `SIGTERM`, how long a window has to go before the close is reported failed.
const AFTER_SIGTERM: Duration = Duration::from_secs(3);

/// A top-level application window as the display server has it.
#[derive(Debug, Clone)]
pub struct AppWindow {
    pub id: u32,
    pub identity: WindowIdentity,
    /// The process that says it owns the window (`_NET_WM_PID`).
    pub pid: Option<u32>,
    pub on_screen: bool,
}

/// What the worker needs of a platform's windows.
pub trait PhiWindows: Send {
    fn windows(&mut self) -> Vec<AppWindow>;
    /// Takes the window off the screen; `Ok` only once the display server says so.
    fn hide(&mut self, id: u32) -> Result<(), String>;
    /// Puts it back where it was; `Ok` once it is on screen.
    fn restore(&mut self, id: u32) -> Result<(), String>;
    /// Asks the application to close the window; `Ok(false)`: it does not take such requests.
    fn ask_to_close(&mut self, id: u32) -> Result<bool, String>;
    /// Whether the display server still has the window (its application may have quit).
    fn exists(&mut self, id: u32) -> bool;
    /// What the window with the keyboard focus says it is.
    fn focused(&mut self) -> Option<WindowIdentity>;
    /// Covers these windows with opaque panels (the countdown's privacy screen).
    fn cover(&mut self, windows: &[u32]);
    fn uncover(&mut self);
}

#[derive(Debug)]
enum Order {
    Policy(Box<GuardPolicy>),
    /// Windows appeared, went, or were shown or hidden.
    Changed,
    Warning(bool),
    Lock {
        owner: Option<String>,
    },
    Unlocked {
        user: String,
    },
    SignedOut {
        user: String,
    },
}

/// The handle the guard keeps; cheap to clone.
#[derive(Debug, Clone)]
pub struct Phi {
    orders: mpsc::Sender<Order>,
}

impl Phi {
    /// Starts the worker and its window watch. Without a display it does nothing, and
    /// says so once: the curtain still covers everything.
    pub fn start(link: ServiceLink, guard: UnboundedSender<Command>) -> Phi {
        let (orders, rx) = mpsc::channel();
        let phi = Phi { orders };
        match platform_windows(phi.clone()) {
            Ok(windows) => {
                let worker = Worker::new(windows, link, guard);
                let spawned =
                    std::thread::Builder::new().name("wardlock-phi".into()).spawn(move || worker.run(rx));
                if let Err(e) = spawned {
                    tracing::error!(
                        event = "phi_unavailable",
                        "PHI applications cannot be hidden or closed: {e}"
                    );
                }
            }
            Err(e) => {
                tracing::error!(event = "phi_unavailable", "PHI applications cannot be hidden or closed: {e}")
            }
        }
        phi
    }

    fn send(&self, order: Order) {
        let _ = self.orders.send(order);
    }

    pub fn policy(&self, policy: &GuardPolicy) {
        self.send(Order::Policy(Box::new(policy.clone())));
    }

    pub fn warning(&self, shown: bool) {
        self.send(Order::Warning(shown));
    }

    pub fn lock(&self, owner: Option<String>) {
        self.send(Order::Lock { owner });
    }

    pub fn unlocked(&self, user: &str) {
        self.send(Order::Unlocked { user: user.to_owned() });
    }

    pub fn signed_out(&self, user: &str) {
        self.send(Order::SignedOut { user: user.to_owned() });
    }
}

#[cfg(target_os = "linux")]
fn platform_windows(phi: Phi) -> Result<Box<dyn PhiWindows>, String> {
    let windows = x11::X11Windows::connect()?;
    x11::watch(move || phi.send(Order::Changed))?;
    Ok(Box::new(windows))
}

/// A close under way: asked politely, then by signal.
#[derive(Debug)]
struct Closing {
    window: u32,
    app: String,
    owner: Option<String>,
    reason: CloseReason,
    pid: Option<u32>,
    signalled: bool,
    deadline: Instant,
}

struct Worker {
    windows: Box<dyn PhiWindows>,
    link: ServiceLink,
    guard: UnboundedSender<Command>,
    policy: Option<GuardPolicy>,
    ledger: PhiLedger<u32>,
    locked: bool,
    owner: Option<String>,
    closing: Vec<Closing>,
    origin: Instant,
    /// The PHI applications with a window open, as last told to the guard loop.
    open_apps: Vec<String>,
    /// A keep-awake application has the focus, as last told to the guard loop.
    keep_awake: bool,
}

impl Worker {
    fn new(windows: Box<dyn PhiWindows>, link: ServiceLink, guard: UnboundedSender<Command>) -> Self {
        Self {
            windows,
            link,
            guard,
            policy: None,
            ledger: PhiLedger::new(),
            locked: false,
            owner: None,
            closing: Vec::new(),
            origin: Instant::now(),
            open_apps: Vec::new(),
            keep_awake: false,
        }
    }

    fn now(&self) -> MonoTime {
        MonoTime::from_duration(self.origin.elapsed())
    }

    fn close_after(&self) -> Option<Duration> {
        self.policy.as_ref().and_then(|p| p.phi_close_after_secs).map(Duration::from_secs)
    }

    fn run(mut self, orders: mpsc::Receiver<Order>) {
        loop {
            let next = self.next_deadline();
            let order = match next {
                Some(at) => orders.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => orders.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match order {
                Ok(order) => self.handle(order),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.due();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let closing = self.closing.iter().map(|c| c.deadline).min();
        let abandoned = self
            .close_after()
            .and_then(|after| self.ledger.next_abandoned_at(after))
            .map(|at| self.origin + at.since_origin());
        closing.into_iter().chain(abandoned).min()
    }

    fn handle(&mut self, order: Order) {
        match order {
            Order::Policy(policy) => {
                self.policy = Some(*policy);
                self.changed();
            }
            Order::Changed => self.changed(),
            Order::Warning(true) => {
                let dim = self.policy.as_ref().is_some_and(|p| p.phi_dim_at_warning);
                if dim && !self.locked {
                    let shown: Vec<u32> = self
                        .phi_windows()
                        .into_iter()
                        .filter(|(w, _)| w.on_screen)
                        .map(|(w, _)| w.id)
                        .collect();
                    self.windows.cover(&shown);
                }
            }
            Order::Warning(false) => self.windows.uncover(),
            Order::Lock { owner } => {
                self.locked = true;
                self.owner = owner;
                let windows = self.phi_windows();
                self.hold_all(windows);
                self.windows.uncover();
            }
            Order::Unlocked { user } => {
                self.locked = false;
                let on_switch = self.policy.as_ref().map(|p| p.phi_on_switch).unwrap_or_default();
                let steps = self.ledger.unlocked(&user, on_switch);
                self.owner = Some(user);
                self.carry_out(steps);
            }
            Order::SignedOut { user } => {
                if self.owner.as_deref() == Some(user.as_str()) {
                    self.owner = None;
                }
                let steps = self.ledger.signed_out(&user);
                self.carry_out(steps);
            }
        }
    }

    /// The session's windows that belong to a PHI application, with its name.
    fn phi_windows(&mut self) -> Vec<(AppWindow, String)> {
        let Some(policy) = &self.policy else { return Vec::new() };
        let all = self.windows.windows();
        all.into_iter()
            .filter_map(|w| policy.phi_app_for(&w.identity).map(|app| app.name.clone()).map(|name| (w, name)))
            .collect()
    }

    /// Takes these PHI windows behind the lock: hidden where policy says so and on screen,
    /// held in any case (for a switch, a sign-out or `close_after`).
    fn hold_all(&mut self, windows: Vec<(AppWindow, String)>) {
        let hide = self.hides();
        let now = self.now();
        for (window, app) in windows {
            if self.ledger.is_held(window.id) {
                continue;
            }
            let owner = self.owner.clone();
            let restore = hide && window.on_screen && self.hide(window.id, &app, &owner);
            self.ledger.hold(window.id, &app, owner.as_deref(), restore, now);
        }
    }

    fn hides(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| p.phi_on_lock == PhiAction::Hide)
    }

    fn hide(&mut self, id: u32, app: &str, owner: &Option<String>) -> bool {
        match self.windows.hide(id) {
            Ok(()) => {
                self.link.report(GuardEvent::PhiAppHidden { app: app.to_owned(), owner: owner.clone() });
                true
            }
            Err(why) => {
                tracing::warn!(event = "phi_hide_failed", "{app} could not be hidden: {why}");
                self.link.report(GuardEvent::PhiAppHideFailed { app: app.to_owned(), why });
                false
            }
        }
    }

    fn changed(&mut self) {
        let classes = self.policy.as_ref().map(|p| p.keep_awake.clone()).unwrap_or_default();
        let keep_awake = !classes.is_empty()
            && self
                .windows
                .focused()
                .is_some_and(|w| classes.iter().any(|c| *c == w.instance || *c == w.class));
        if keep_awake != self.keep_awake {
            self.keep_awake = keep_awake;
            let _ = self.guard.send(Command::KeepAwake(keep_awake));
        }
        let windows = self.phi_windows();
        let mut open: Vec<String> = windows.iter().map(|(_, app)| app.clone()).collect();
        open.sort();
        open.dedup();
        if open != self.open_apps {
            self.open_apps = open.clone();
            let _ = self.guard.send(Command::PhiAppsOpen(open));
        }
        // What is held stays off the screen (an application may show itself again, or be
        // kept hidden for its clinician through another's session); while locked, a PHI
        // window that opens is held too.
        if self.hides() {
            for (w, app) in &windows {
                if w.on_screen && self.ledger.is_held(w.id) {
                    if let Err(why) = self.windows.hide(w.id) {
                        tracing::warn!(
                            event = "phi_hide_failed",
                            "{app} showed itself again and could not be hidden: {why}"
                        );
                    }
                }
            }
        }
        if self.locked && windows.iter().any(|(w, _)| !self.ledger.is_held(w.id)) {
            self.hold_all(windows);
        }
        // Held windows whose application quit by itself (a close under way is told apart
        // below, with how it ended).
        let held: Vec<u32> = self.ledger.held().iter().map(|h| h.window).collect();
        for id in held {
            if !self.closing.iter().any(|c| c.window == id) && !self.windows.exists(id) {
                self.ledger.gone(id);
            }
        }
        self.check_closing();
    }

    fn carry_out(&mut self, steps: Vec<PhiStep<u32>>) {
        for step in steps {
            match step {
                PhiStep::Restore { window, app, owner } => match self.windows.restore(window) {
                    Ok(()) => self.link.report(GuardEvent::PhiAppRestored { app, owner }),
                    Err(why) => {
                        tracing::warn!(event = "phi_restore_failed", "{app} could not be shown again: {why}")
                    }
                },
                PhiStep::Close { window, app, owner, reason } => self.start_close(window, app, owner, reason),
            }
        }
    }

    fn start_close(&mut self, window: u32, app: String, owner: Option<String>, reason: CloseReason) {
        let pid = self.windows.windows().into_iter().find(|w| w.id == window).and_then(|w| w.pid);
        let grace = Duration::from_secs(self.policy.as_ref().map_or(10, |p| p.phi_close_grace_secs.max(1)));
        let mut closing =
            Closing { window, app, owner, reason, pid, signalled: false, deadline: Instant::now() + grace };
        match self.windows.ask_to_close(window) {
            Ok(true) => {}
            // It takes no polite requests: the signal at once.
            Ok(false) | Err(_) => signal(&mut closing),
        }
        self.closing.push(closing);
    }

    /// Deadlines: the grace is over (signal), the signal went unheeded (failed), or a
    /// held window was abandoned (close).
    fn due(&mut self) {
        self.check_closing();
        let now = Instant::now();
        let mut failed = Vec::new();
        for c in &mut self.closing {
            if c.deadline > now {
                continue;
            }
            if c.signalled {
                failed.push(c.window);
            } else {
                signal(c);
            }
        }
        for window in failed {
            if let Some(pos) = self.closing.iter().position(|c| c.window == window) {
                let c = self.closing.remove(pos);
                tracing::warn!(
                    event = "phi_close_failed",
                    "{} is still open after WM_DELETE_WINDOW, the grace and SIGTERM",
                    c.app
                );
                self.link.report(GuardEvent::PhiAppCloseFailed {
                    app: c.app,
                    owner: c.owner,
                    reason: c.reason.as_str().to_owned(),
                    why: "still open after WM_DELETE_WINDOW, the grace and SIGTERM; it stays hidden".into(),
                });
            }
        }
        if let Some(after) = self.close_after() {
            let steps = self.ledger.abandoned(self.now(), after);
            if !steps.is_empty() {
                let minutes = after.as_secs().div_ceil(60);
                let _ = self.guard.send(Command::PhiNotice(format!(
                    "Applications left open behind this lock for {minutes} min were closed (automatic logoff)."
                )));
                self.carry_out(steps);
            }
        }
    }

    fn check_closing(&mut self) {
        let mut gone = Vec::new();
        for (i, c) in self.closing.iter().enumerate() {
            if !self.windows.exists(c.window) {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            let c = self.closing.remove(i);
            self.ledger.gone(c.window);
            let how = if c.signalled { "sigterm" } else { "wm_delete" };
            self.link.report(GuardEvent::PhiAppClosed {
                app: c.app,
                owner: c.owner,
                how: how.into(),
                reason: c.reason.as_str().into(),
            });
        }
    }
}

/// `SIGTERM` to the window's process, unless that is the guard itself or something that
/// is no application's (a window can name any pid in `_NET_WM_PID`).
fn signal(c: &mut Closing) {
    c.signalled = true;
    c.deadline = Instant::now() + AFTER_SIGTERM;
    let own = std::process::id();
    let parent = std::os::unix::process::parent_id();
    match c.pid.filter(|&pid| pid > 1 && pid != own && pid != parent) {
        Some(pid) => {
            let Ok(raw) = i32::try_from(pid) else { return };
            if let Err(e) =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), nix::sys::signal::Signal::SIGTERM)
            {
                tracing::warn!(event = "phi_sigterm_failed", "SIGTERM to {} (pid {pid}) failed: {e}", c.app);
            }
        }
        None => tracing::warn!(event = "phi_no_process", "{} names no process that may be signalled", c.app),
    }
}
