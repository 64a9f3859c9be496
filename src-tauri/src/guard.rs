//! The guard loop: feeds the core state machine with idle readings at the deadlines it
//! asks for (no fixed fast polling), carries out its actions on the screen and reports
//! every transition to `wardlockd`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use wardlock_core::clock::MonoTime;
use wardlock_core::lock::{Action, Guard, GuardState, GuardTimings, LockReason};
use wardlock_core::protocol::local::{GuardEvent, GuardPolicy};

use crate::idle::{self, IdleSource};
use crate::link::{LinkEvent, ServiceLink};
use crate::phi::Phi;

/// Without a display backend, the idle source is tried again this often.
const IDLE_RETRY: Duration = Duration::from_secs(60);

/// What the guard asks of the screen; the Tauri shell implements it.
pub trait Screen: Send + Sync {
    /// The countdown; with `hold`, a "Keep open" offer of that length.
    fn show_warning(&self, lock_in: Duration, hold: Option<Duration>);
    fn hide_warning(&self);
    /// Builds the lock windows hidden, so that the lock itself is only a map and a grab.
    fn prepare_lock(&self);
    /// The countdown was cancelled: drop the prepared windows (and their web process).
    fn discard_prepared(&self);
    fn lock(&self);
    fn unlock(&self);
    /// Something in [`Status`] changed (tray text, lock screen notices).
    fn status_changed(&self, status: &Status);
}

/// What the tray and the lock screen show.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    pub state: StateView,
    /// `wardlockd` answers; without it nobody can unlock.
    pub service_available: bool,
    pub service_problem: Option<String>,
    /// Why idle time cannot be read, if it cannot.
    pub idle_unavailable: Option<String>,
    pub policy: Option<GuardPolicy>,
    /// The idle timeout in force (the strictest open PHI tier's, else the group's).
    pub idle_timeout_secs: Option<u64>,
    /// Whose session it is, shortened ("Nora N."), where policy shows it.
    pub session_owner: Option<String>,
    /// What the guard did to the PHI applications that the next clinician should know.
    pub phi_notice: Option<String>,
    /// A hold in force.
    pub hold: Option<HoldView>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HoldView {
    /// Who keeps the session open ("Nora N.").
    pub by: String,
    /// When it ends (Unix seconds), for the tray ("held open by Nora N. until 14:35").
    pub until_unix: i64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StateView {
    Active,
    Warning { seconds_left: u64 },
    Locked { reason: LockReason },
}

#[derive(Debug)]
pub enum Command {
    LockNow(LockReason),
    /// `wardlockd` granted `user` an unlock (its audit entry is durable).
    Unlocked {
        user: String,
        display_name: String,
    },
    /// `wardlockd` accepted `user`'s sign-out: their PHI applications close, the lock stays.
    SignedOut {
        user: String,
    },
    /// `wardlockd` granted `user` an unlock with a hold of this length.
    Held {
        user: String,
        display_name: String,
        length: Duration,
    },
    /// A window the policy lets keep the session awake has the focus (or lost it).
    KeepAwake(bool),
    Resumed,
    /// The PHI applications with a window open now (by policy name).
    PhiAppsOpen(Vec<String>),
    /// Shown on the lock screen until the next unlock.
    PhiNotice(String),
}

/// Built-in timings until `wardlockd` has told the policy: the guard locks even when the
/// service is down, it only cannot unlock then.
fn fallback_timings() -> GuardTimings {
    GuardTimings {
        idle_timeout: Duration::from_secs(300),
        warning: Duration::from_secs(30),
        lock_on_resume: true,
    }
}

/// The policy's timing while these PHI applications are open.
fn timings_of(policy: &GuardPolicy, open_apps: &[String]) -> GuardTimings {
    let open = policy.phi_apps.iter().filter(|app| open_apps.contains(&app.name));
    let (idle_timeout, warning) = policy.timing_with_open(open);
    GuardTimings { idle_timeout, warning, lock_on_resume: policy.lock_on_resume }
}

pub struct GuardLoop {
    origin: Instant,
    guard: Guard,
    idle: Result<Box<dyn IdleSource>, idle::IdleUnavailable>,
    screen: Arc<dyn Screen>,
    link: ServiceLink,
    status: Arc<Mutex<Status>>,
    /// `synthetic_input_ignored` was reported in this idle period (real input ends it).
    synthetic_reported: bool,
    phi: Phi,
    /// The clinician who unlocked last (ID, display name): whose session it is.
    owner: Option<(String, String)>,
    open_apps: Vec<String>,
    /// A keep-awake application has the focus.
    keep_awake: bool,
}

impl GuardLoop {
    pub fn new(screen: Arc<dyn Screen>, link: ServiceLink, status: Arc<Mutex<Status>>, phi: Phi) -> Self {
        let origin = Instant::now();
        let guard = Guard::new(fallback_timings(), MonoTime::from_duration(Duration::ZERO));
        Self {
            origin,
            guard,
            idle: idle::detect(),
            screen,
            link,
            status,
            synthetic_reported: false,
            phi,
            owner: None,
            open_apps: Vec::new(),
            keep_awake: false,
        }
    }

    fn now(&self) -> MonoTime {
        MonoTime::from_duration(self.origin.elapsed())
    }

    fn read_idle(&mut self) -> Option<Duration> {
        if self.idle.is_err() {
            // A display that appears later (a late X server) is picked up.
            if let Ok(source) = idle::detect() {
                self.idle = Ok(source);
            }
        }
        let reading = match &mut self.idle {
            Ok(source) => source.idle(),
            Err(e) => Err(e.clone()),
        };
        match reading {
            Ok(reading) => {
                self.set_idle_problem(None);
                // Until the service says otherwise, the built-in default: real input only.
                let keeps_awake = {
                    let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
                    status.policy.as_ref().is_some_and(|p| p.synthetic_input_keeps_awake)
                };
                match reading.ignored_synthetic(keeps_awake) {
                    Some(device) if !self.synthetic_reported => {
                        self.synthetic_reported = true;
                        tracing::info!(
                            event = "synthetic_input_ignored",
                            "ignoring synthetic input from {device} (lock.synthetic_input_keeps_awake)"
                        );
                        self.link.report(GuardEvent::SyntheticInputIgnored { device: device.to_owned() });
                    }
                    Some(_) => {}
                    // Real input came after any synthetic: a new idle period.
                    None => self.synthetic_reported = false,
                }
                Some(reading.counted(keeps_awake))
            }
            Err(e) => {
                self.set_idle_problem(Some(e.0));
                None
            }
        }
    }

    fn set_idle_problem(&mut self, problem: Option<String>) {
        let changed = {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            if status.idle_unavailable == problem {
                false
            } else {
                status.idle_unavailable = problem.clone();
                true
            }
        };
        if changed {
            if let Some(why) = problem {
                tracing::error!(event = "idle_unavailable", "idle detection unavailable: {why}");
                self.link.report(GuardEvent::IdleUnavailable { why });
            }
            self.publish();
        }
    }

    fn publish(&self) {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.screen.status_changed(&status);
    }

    pub async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut link_events: mpsc::UnboundedReceiver<LinkEvent>,
    ) {
        let mut wake_at = Some(self.now());
        loop {
            let wait = wake_at.map(|at| at.saturating_since(self.now()));
            let sleep = async move {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                () = sleep => self.tick(),
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => return,
                },
                event = link_events.recv() => match event {
                    Some(event) => self.link_event(event),
                    None => return,
                },
            };
            if let Some(next) = step {
                wake_at = next;
            }
        }
    }

    /// `None`: keep the current deadline. `Some(x)`: the new one.
    fn tick(&mut self) -> Option<Option<MonoTime>> {
        let now = self.now();
        match self.read_idle() {
            Some(idle) => {
                let step =
                    if self.keep_awake { self.guard.kept_awake(now) } else { self.guard.tick(now, idle) };
                if self.guard.held_until(now).is_none() {
                    self.set_hold(None);
                }
                self.execute(&step.actions);
                self.refresh_state();
                Some(step.wake_at)
            }
            None => Some(Some(now + IDLE_RETRY)),
        }
    }

    fn command(&mut self, command: Command) -> Option<Option<MonoTime>> {
        let now = self.now();
        let step = match command {
            Command::LockNow(reason) => self.guard.lock_now(reason),
            Command::Unlocked { user, display_name } => {
                self.phi.unlocked(&user);
                self.owner = Some((user, display_name));
                self.set_phi_notice(None);
                self.publish_owner();
                self.guard.unlocked(now)
            }
            Command::Held { user, display_name, length } => {
                self.phi.unlocked(&user);
                let by = wardlock_core::phi::short_name(&display_name);
                self.owner = Some((user, display_name));
                self.set_phi_notice(None);
                self.publish_owner();
                let step = self.guard.unlocked_held(now, length);
                self.execute(&step.actions);
                let ends = std::time::SystemTime::now() + length;
                let until_unix = ends
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                self.set_hold(Some(HoldView { by, until_unix }));
                self.refresh_state();
                // Awake at the hold's end, to take its notice off the tray.
                return Some(Some(now + length));
            }
            Command::KeepAwake(on) => {
                if on != self.keep_awake {
                    tracing::info!(
                        event = "keep_awake_focus",
                        focused = on,
                        "a keep-awake application {} the focus",
                        if on { "has" } else { "lost" }
                    );
                }
                self.keep_awake = on;
                // On as off: the session was in use until now.
                self.guard.kept_awake(now)
            }
            Command::SignedOut { user } => {
                self.phi.signed_out(&user);
                if self.owner.as_ref().is_some_and(|(id, _)| *id == user) {
                    self.owner = None;
                    self.publish_owner();
                }
                return None;
            }
            Command::Resumed => {
                let idle = self.read_idle().unwrap_or_default();
                self.guard.resumed(now, idle)
            }
            Command::PhiAppsOpen(open) => {
                self.open_apps = open;
                return self.apply_timings();
            }
            Command::PhiNotice(text) => {
                self.set_phi_notice(Some(text));
                return None;
            }
        };
        self.execute(&step.actions);
        self.refresh_state();
        if step.actions.is_empty() && step.wake_at.is_none() {
            return None;
        }
        Some(step.wake_at)
    }

    fn link_event(&mut self, event: LinkEvent) -> Option<Option<MonoTime>> {
        match event {
            LinkEvent::Connected(policy) | LinkEvent::PolicyChanged(policy) => {
                {
                    let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
                    status.service_available = true;
                    status.service_problem = None;
                    status.policy = Some(policy.clone());
                }
                self.phi.policy(&policy);
                // The service being back changes what the lock screen says.
                self.publish_owner();
                self.apply_timings()
            }
            LinkEvent::Disconnected(why) => {
                tracing::warn!(event = "retrying", "{why}; retrying");
                {
                    let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
                    status.service_available = false;
                    status.service_problem = Some(why);
                }
                self.publish();
                None
            }
            LinkEvent::LockNow(reason) => self.command(Command::LockNow(reason)),
        }
    }

    fn policy(&self) -> Option<GuardPolicy> {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).policy.clone()
    }

    /// The timing of the policy and the open PHI applications, from now on.
    fn apply_timings(&mut self) -> Option<Option<MonoTime>> {
        let policy = self.status.lock().unwrap_or_else(|p| p.into_inner()).policy.clone()?;
        let timings = timings_of(&policy, &self.open_apps);
        {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            status.idle_timeout_secs = Some(timings.idle_timeout.as_secs());
        }
        let result = if timings != self.guard.timings() {
            tracing::info!(
                event = "timings_in_force",
                idle_timeout_secs = timings.idle_timeout.as_secs(),
                warning_secs = timings.warning.as_secs(),
                "idle timeout {} s, warning {} s ({})",
                timings.idle_timeout.as_secs(),
                timings.warning.as_secs(),
                if self.open_apps.is_empty() {
                    "no PHI application open".to_owned()
                } else {
                    format!("open: {}", self.open_apps.join(", "))
                }
            );
            let now = self.now();
            let idle = self.read_idle().unwrap_or_default();
            let step = self.guard.set_timings(timings, now, idle);
            self.execute(&step.actions);
            Some(step.wake_at)
        } else {
            None
        };
        self.publish();
        self.refresh_state();
        result
    }

    fn publish_owner(&mut self) {
        {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            let show = status.policy.as_ref().is_some_and(|p| p.show_session_owner);
            status.session_owner =
                self.owner.as_ref().filter(|_| show).map(|(_, name)| wardlock_core::phi::short_name(name));
        }
        self.publish();
    }

    fn set_hold(&mut self, hold: Option<HoldView>) {
        let changed = {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            let changed = status.hold != hold;
            status.hold = hold;
            changed
        };
        if changed {
            self.publish();
        }
    }

    fn set_phi_notice(&mut self, notice: Option<String>) {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).phi_notice = notice;
        self.publish();
    }

    fn execute(&mut self, actions: &[Action]) {
        for action in actions {
            match *action {
                Action::ShowWarning { lock_at } => {
                    let lock_in = lock_at.saturating_since(self.now());
                    self.screen.prepare_lock();
                    let hold = self.policy().and_then(|p| p.hold_secs).map(Duration::from_secs);
                    self.screen.show_warning(lock_in, hold);
                    self.phi.warning(true);
                    self.link.report(GuardEvent::WarningShown { seconds_left: lock_in.as_secs() });
                }
                Action::CancelWarning => {
                    self.screen.hide_warning();
                    self.phi.warning(false);
                    if !matches!(self.guard.state(), GuardState::Locked { .. }) {
                        self.screen.discard_prepared();
                        self.link.report(GuardEvent::WarningCancelled {});
                    }
                }
                Action::Lock { reason } => {
                    self.screen.lock();
                    // After the curtain: hiding the applications may take a while.
                    self.phi.lock(self.owner.as_ref().map(|(id, _)| id.clone()));
                    let (idle_secs, timeout_secs) = match reason {
                        LockReason::Idle => {
                            let timeout =
                                self.status.lock().unwrap_or_else(|p| p.into_inner()).idle_timeout_secs;
                            (self.read_idle().map(|idle| idle.as_secs()), timeout)
                        }
                        _ => (None, None),
                    };
                    self.link.report(GuardEvent::Locked { reason, idle_secs, timeout_secs });
                }
                Action::Unlock => self.screen.unlock(),
            }
        }
    }

    fn refresh_state(&mut self) {
        let view = match self.guard.state() {
            GuardState::Active => StateView::Active,
            GuardState::Warning { lock_at } => {
                StateView::Warning { seconds_left: lock_at.saturating_since(self.now()).as_secs() }
            }
            GuardState::Locked { reason } => StateView::Locked { reason },
        };
        let changed = {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            let changed = status.state != view;
            status.state = view;
            changed
        };
        if changed {
            self.publish();
        }
    }
}

pub fn initial_status() -> Status {
    Status {
        state: StateView::Active,
        service_available: false,
        service_problem: Some("connecting to the Wardlock service".into()),
        idle_unavailable: None,
        policy: None,
        idle_timeout_secs: None,
        session_owner: None,
        phi_notice: None,
        hold: None,
    }
}
