//! The guard's screen. At the lock: a native curtain on every monitor (`cover`), the
//! webview lock page above them on the primary monitor (`page`), and one input grab that
//! serves both; between locks, the warning banner and the tray text. All window work is
//! handed to the main thread, where GTK lives.
//!
//! The curtains own the screen: they are mapped and the input is grabbed before the page
//! exists, and nothing the page does or fails to do (a web process that crashed or hung)
//! uncovers it. The page only draws the PIN pad.

mod cover;
mod page;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tauri::{AppHandle, Emitter};

use wardlock_core::protocol::local::GuardEvent;

use crate::guard::{Screen, Status};
use crate::link::ServiceLink;
use crate::platform;

pub use cover::watch_monitors;

/// Labels of the lock page's windows (`lock-page-N`); the capability `lock-screen` is
/// granted to them.
pub const LOCK_PREFIX: &str = "lock-";

thread_local! {
    static BANNER: RefCell<Option<platform::Banner>> = const { RefCell::new(None) };
}

fn with_banner(f: impl FnOnce(&platform::Banner)) {
    BANNER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let banner = slot.get_or_insert_with(platform::Banner::new);
        f(banner);
    });
}

type StatusListener = Box<dyn Fn(&Status) + Send + Sync>;

pub struct TauriScreen {
    app: AppHandle,
    link: ServiceLink,
    locked: Arc<AtomicBool>,
    /// Bumped on every lock and unlock, so a stale grab retry of an earlier lock stops.
    generation: Arc<AtomicU32>,
    grab_failed: Arc<AtomicBool>,
    watchdog: Arc<AtomicU32>,
    tray_text: Mutex<Option<StatusListener>>,
    /// The keymap as it was before the lock hardened it, to load again at the unlock.
    saved_keymap: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for TauriScreen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TauriScreen").field("locked", &self.locked).finish_non_exhaustive()
    }
}

impl TauriScreen {
    pub fn new(app: AppHandle, link: ServiceLink) -> Self {
        Self {
            app,
            link,
            locked: Arc::new(AtomicBool::new(false)),
            generation: Arc::new(AtomicU32::new(0)),
            grab_failed: Arc::new(AtomicBool::new(false)),
            watchdog: Arc::new(AtomicU32::new(0)),
            tray_text: Mutex::new(None),
            saved_keymap: Arc::new(Mutex::new(None)),
        }
    }

    pub fn on_status(&self, f: impl Fn(&Status) + Send + Sync + 'static) {
        *self.tray_text.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
    }

    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::SeqCst)
    }

    /// Shows a short notice (after an unlock: who was last here, failures since).
    pub fn notice(&self, markup: String) {
        let _ = self.app.run_on_main_thread(move || {
            with_banner(|b| b.notice(&markup, Duration::from_secs(8)));
        });
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            link: self.link.clone(),
            locked: self.locked.clone(),
            generation: self.generation.clone(),
            grab_failed: self.grab_failed.clone(),
            watchdog: self.watchdog.clone(),
        }
    }

    fn main_thread(&self, f: impl FnOnce(&AppHandle, Ctx) + Send + 'static) {
        let app = self.app.clone();
        let ctx = self.ctx();
        if let Err(e) = self.app.run_on_main_thread(move || f(&app, ctx)) {
            tracing::error!(event = "window_thread_gone", "the window thread is gone: {e}");
        }
    }
}

/// What main-thread closures need of the screen.
#[derive(Clone)]
struct Ctx {
    link: ServiceLink,
    locked: Arc<AtomicBool>,
    generation: Arc<AtomicU32>,
    grab_failed: Arc<AtomicBool>,
    /// The lock (generation) whose watchdog timer runs.
    watchdog: Arc<AtomicU32>,
}

impl Ctx {
    fn is_locked(&self) -> bool {
        self.locked.load(Ordering::SeqCst)
    }

    fn generation(&self) -> u32 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Reports a lock that does not hold (once until it holds again); `wardlockd`
    /// escalates it.
    fn report_failure(&self, what: String) {
        tracing::error!(event = "lock_failed", "LOCK FAILED: {what}");
        if !self.grab_failed.swap(true, Ordering::SeqCst) {
            self.link.report(GuardEvent::LockFailed { what });
        }
    }
}

impl Screen for TauriScreen {
    fn show_warning(&self, lock_in: Duration, hold: Option<Duration>) {
        self.main_thread(move |app, _| {
            // "Keep open" locks at once: the PIN is typed on the lock screen, under the
            // grab, never into a window anyone can read keys from.
            let hold = hold.map(|length| {
                let app = app.clone();
                let on_hold: Box<dyn Fn()> = Box::new(move || {
                    use tauri::Manager;
                    let state = app.state::<crate::commands::AppState>();
                    let _ = state
                        .guard
                        .send(crate::guard::Command::LockNow(wardlock_core::lock::LockReason::Manual));
                });
                (length, on_hold)
            });
            with_banner(|b| b.countdown(lock_in, hold));
        });
    }

    fn hide_warning(&self) {
        self.main_thread(|_, _| with_banner(platform::Banner::hide));
    }

    fn prepare_lock(&self) {
        self.main_thread(|app, ctx| {
            if let Err(e) = page::ensure(app, &ctx) {
                tracing::warn!(event = "lock_page_prepare_failed", "preparing the lock page failed: {e}");
            }
        });
    }

    fn discard_prepared(&self) {
        self.main_thread(|app, ctx| {
            if !ctx.is_locked() {
                page::discard(app);
                crate::webkit::end_network_process_when_unused(app);
            }
        });
    }

    fn lock(&self) {
        self.locked.store(true, Ordering::SeqCst);
        harden_keymap(self.saved_keymap.clone(), self.locked.clone(), self.link.clone());
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.main_thread(move |app, ctx| {
            with_banner(platform::Banner::hide);
            cover::lock(app, ctx, generation);
        });
    }

    fn unlock(&self) {
        self.locked.store(false, Ordering::SeqCst);
        restore_keymap(self.saved_keymap.clone());
        self.grab_failed.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.main_thread(|app, _| cover::unlock(app));
    }

    fn status_changed(&self, status: &Status) {
        if let Some(f) = &*self.tray_text.lock().unwrap_or_else(|p| p.into_inner()) {
            f(status);
        }
        let _ = self.app.emit_filter("status", status, |target| match target {
            tauri::EventTarget::WebviewWindow { label } => label.starts_with(LOCK_PREFIX),
            _ => false,
        });
    }
}

/// Takes the grab-breaking, server-ending and VT-switching actions out of the keymap for
/// as long as the lock lasts (see `keymap`), off the window thread: the curtain and the
/// grab come first. Where that fails the lock is reported failed, which `wardlockd`
/// escalates.
fn harden_keymap(saved: Arc<Mutex<Option<String>>>, locked: Arc<AtomicBool>, link: ServiceLink) {
    let display = std::env::var("DISPLAY").unwrap_or_default();
    std::thread::spawn(move || {
        let mut saved = saved.lock().unwrap_or_else(|p| p.into_inner());
        // Unlocked meanwhile, or hardened already (locked again while locked).
        if !locked.load(Ordering::SeqCst) || saved.is_some() {
            return;
        }
        let hardened = crate::keymap::read(&display).and_then(|original| {
            let (hardened, removed) = crate::keymap::harden(&original);
            if removed.is_empty() {
                return Ok(None);
            }
            crate::keymap::load(&display, &hardened)?;
            *saved = Some(original);
            Ok(Some(removed))
        });
        match hardened {
            Ok(Some(removed)) => {
                tracing::info!(
                    event = "keymap_hardened",
                    "keymap hardened while locked (took out {})",
                    removed.join(", ")
                );
                link.report(GuardEvent::KeymapHardened { actions: removed.join(", ") });
            }
            Ok(None) => {}
            Err(why) => {
                tracing::warn!(event = "keymap_harden_failed", "the keymap could not be hardened: {why}");
                link.report(GuardEvent::LockFailed {
                    what: format!("the keymap could not be hardened: {why}"),
                });
            }
        }
    });
}

/// Loads the keymap as it was before the lock (after any hardening still under way).
fn restore_keymap(saved: Arc<Mutex<Option<String>>>) {
    let display = std::env::var("DISPLAY").unwrap_or_default();
    std::thread::spawn(move || {
        let mut saved = saved.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(original) = saved.take() {
            if let Err(why) = crate::keymap::load(&display, &original) {
                tracing::warn!(
                    event = "keymap_restore_failed",
                    "the keymap could not be restored after the unlock: {why}"
                );
            }
        }
    });
}
