//! The guard's screen: lock windows on every monitor, the warning banner and the tray
//! text. All window work is handed to the main thread, where GTK lives.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tauri::{AppHandle, Emitter, Manager, WebviewUrl, WebviewWindow, WebviewWindowBuilder};

use wardlock_core::protocol::local::GuardEvent;

use crate::guard::{Screen, Status};
use crate::link::ServiceLink;
use crate::platform::{self, Area};

pub const LOCK_PREFIX: &str = "lock-";
/// The lock page's background, also the window's: the curtain is opaque from the first
/// frame, before the page has drawn anything.
const CURTAIN: tauri::window::Color = tauri::window::Color(12, 30, 38, 255);
/// Grab attempts, 50 ms apart, before the failure is reported and escalated.
const GRAB_TRIES: u32 = 40;
const GRAB_RETRY: Duration = Duration::from_millis(50);
/// How often, while locked, the grab and focus are checked.
const WATCHDOG_EVERY: Duration = Duration::from_millis(250);

thread_local! {
    static BANNER: RefCell<Option<platform::Banner>> = const { RefCell::new(None) };
    static ANCHOR: RefCell<Option<platform::Anchor>> = const { RefCell::new(None) };
}

/// The anchor's X window, shown; a new anchor when the old one was destroyed from outside.
fn anchor_window() -> Option<gtk::gdk::Window> {
    ANCHOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if let Some(window) = slot.as_ref().and_then(platform::Anchor::shown) {
            return Some(window);
        }
        let anchor = platform::Anchor::new();
        watch_anchor(anchor.window());
        let window = anchor.shown();
        *slot = Some(anchor);
        window
    })
}

fn hide_anchor() {
    ANCHOR.with(|cell| {
        if let Some(anchor) = cell.borrow().as_ref() {
            anchor.hide();
        }
    });
}

/// A lock window is going away (unmapped or destroyed by another program), and the grab
/// with it: move the grab to the anchor at once, before any key gets through.
fn hold_with_anchor() -> bool {
    anchor_window().is_some_and(|anchor| platform::grab(&anchor).is_ok())
}

/// An anchor unmapped or destroyed from outside is simply made again at the next use.
fn watch_anchor(window: &gtk::Window) {
    use gtk::prelude::*;
    window.connect_destroy_event(move |_, _| {
        ANCHOR.with(|cell| {
            if let Ok(mut slot) = cell.try_borrow_mut() {
                slot.take();
            }
        });
        gtk::glib::Propagation::Proceed
    });
}

fn primary_window(app: &AppHandle) -> Option<WebviewWindow> {
    let windows = lock_windows(app);
    let primary = platform::primary_monitor();
    windows.get(primary).or(windows.first()).cloned()
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

    fn main_thread(&self, f: impl FnOnce(&AppHandle, Ctx) + Send + 'static) {
        let app = self.app.clone();
        let ctx = Ctx {
            link: self.link.clone(),
            locked: self.locked.clone(),
            generation: self.generation.clone(),
            grab_failed: self.grab_failed.clone(),
            watchdog: self.watchdog.clone(),
        };
        if let Err(e) = self.app.run_on_main_thread(move || f(&app, ctx)) {
            eprintln!("wardlock: the window thread is gone: {e}");
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

impl Screen for TauriScreen {
    fn show_warning(&self, lock_in: Duration) {
        self.main_thread(move |_, _| with_banner(|b| b.countdown(lock_in)));
    }

    fn hide_warning(&self) {
        self.main_thread(|_, _| with_banner(platform::Banner::hide));
    }

    fn prepare_lock(&self) {
        self.main_thread(|app, ctx| {
            if let Err(e) = ensure_windows(app, &ctx) {
                eprintln!("wardlock: preparing the lock windows failed: {e}");
            }
        });
    }

    fn discard_prepared(&self) {
        self.main_thread(|app, ctx| {
            if !ctx.locked.load(Ordering::SeqCst) {
                for window in lock_windows(app) {
                    let _ = window.destroy();
                }
            }
        });
    }

    fn lock(&self) {
        self.locked.store(true, Ordering::SeqCst);
        harden_keymap(self.saved_keymap.clone(), self.locked.clone(), self.link.clone());
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.main_thread(move |app, ctx| {
            with_banner(platform::Banner::hide);
            if let Err(e) = ensure_windows(app, &ctx) {
                report_failure(&ctx, format!("the lock windows could not be built: {e}"));
                return;
            }
            show_all(app);
            try_grab(app.clone(), ctx, generation, 0);
        });
    }

    fn unlock(&self) {
        self.locked.store(false, Ordering::SeqCst);
        restore_keymap(self.saved_keymap.clone());
        self.grab_failed.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.main_thread(|app, _| {
            platform::ungrab();
            hide_anchor();
            // Destroyed, not hidden: the web process of each window goes with it, and the
            // next lock starts from a blank page (no PIN digits left in a field).
            for window in lock_windows(app) {
                let _ = window.hide();
                let _ = window.destroy();
            }
        });
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
                eprintln!("wardlock: keymap hardened while locked (took out {})", removed.join(", "));
                link.report(GuardEvent::KeymapHardened { actions: removed.join(", ") });
            }
            Ok(None) => {}
            Err(why) => {
                eprintln!("wardlock: the keymap could not be hardened: {why}");
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
                eprintln!("wardlock: the keymap could not be restored after the unlock: {why}");
            }
        }
    });
}

fn lock_windows(app: &AppHandle) -> Vec<WebviewWindow> {
    let mut windows: Vec<_> =
        app.webview_windows().into_iter().filter(|(label, _)| label.starts_with(LOCK_PREFIX)).collect();
    windows.sort_by(|a, b| a.0.cmp(&b.0));
    windows.into_iter().map(|(_, w)| w).collect()
}

fn label_of(index: usize) -> String {
    format!("{LOCK_PREFIX}{index}")
}

/// One lock window per monitor, built hidden and out of the window manager's reach; more
/// or fewer when monitors came or went.
fn ensure_windows(app: &AppHandle, ctx: &Ctx) -> Result<(), String> {
    let areas = platform::monitors();
    let areas = if areas.is_empty() { vec![Area { x: 0, y: 0, width: 1024, height: 768 }] } else { areas };
    let primary = platform::primary_monitor();
    for (index, area) in areas.iter().enumerate() {
        let label = label_of(index);
        if app.get_webview_window(&label).is_some() {
            continue;
        }
        let url = format!("lock.html?screen={index}&primary={}", u8::from(index == primary));
        let window = WebviewWindowBuilder::new(app, &label, WebviewUrl::App(url.into()))
            .title("Wardlock")
            .visible(false)
            .decorations(false)
            .resizable(false)
            .skip_taskbar(true)
            .always_on_top(true)
            // Not focused when built: built during the countdown, it must not take the keys
            // of the application the clinician may still be typing into; the lock focuses it.
            .focused(false)
            .background_color(CURTAIN)
            .position(f64::from(area.x), f64::from(area.y))
            .inner_size(f64::from(area.width), f64::from(area.height))
            // The X window's title follows the page's: screen readers and tests read it.
            .on_document_title_changed(|window, title| {
                let _ = window.set_title(&title);
            })
            .build()
            .map_err(|e| e.to_string())?;
        window.on_window_event(|event| {
            if let tauri::WindowEvent::CloseRequested { api, .. } = event {
                api.prevent_close();
            }
        });
        let gtk_window = window.gtk_window().map_err(|e| e.to_string())?;
        platform::make_override_redirect(&gtk_window);
        watch(app, &gtk_window, ctx.clone());
    }
    for stale in lock_windows(app).into_iter().skip(areas.len()) {
        let _ = stale.destroy();
    }
    Ok(())
}

fn show_all(app: &AppHandle) {
    let areas = platform::monitors();
    for (index, window) in lock_windows(app).into_iter().enumerate() {
        let _ = window.show();
        if let (Ok(gtk_window), Some(area)) = (window.gtk_window(), areas.get(index)) {
            platform::place(&gtk_window, *area);
        }
    }
}

/// Keeps a lock window on top, mapped and holding the grab while locked.
fn watch(app: &AppHandle, window: &gtk::ApplicationWindow, ctx: Ctx) {
    use gtk::prelude::*;
    window.add_events(gtk::gdk::EventMask::VISIBILITY_NOTIFY_MASK);
    let raise_ctx = ctx.clone();
    window.connect_event(move |w, event| {
        // Something covered part of the curtain (a popup, a notification): back on top.
        let obscured = event
            .downcast_ref::<gtk::gdk::EventVisibility>()
            .is_some_and(|v| v.state() != gtk::gdk::VisibilityState::Unobscured);
        if obscured && raise_ctx.locked.load(Ordering::SeqCst) {
            platform::raise(w);
        }
        gtk::glib::Propagation::Proceed
    });
    let (app_broken, broken_ctx) = (app.clone(), ctx.clone());
    window.connect_grab_broken_event(move |_, _| {
        if broken_ctx.locked.load(Ordering::SeqCst) {
            eprintln!("wardlock: the input grab was broken; taking it back");
            let generation = broken_ctx.generation.load(Ordering::SeqCst);
            try_grab(app_broken.clone(), broken_ctx.clone(), generation, 0);
        }
        gtk::glib::Propagation::Proceed
    });
    // Grab the moment the window is on screen instead of at the next retry.
    let (app_mapped, mapped_ctx) = (app.clone(), ctx.clone());
    window.connect_map_event(move |_, _| {
        if mapped_ctx.locked.load(Ordering::SeqCst) {
            let generation = mapped_ctx.generation.load(Ordering::SeqCst);
            try_grab(app_mapped.clone(), mapped_ctx.clone(), generation, 0);
        }
        gtk::glib::Propagation::Proceed
    });
    let (app_focus, focus_ctx) = (app.clone(), ctx.clone());
    window.connect_focus_out_event(move |_, _| {
        if focus_ctx.locked.load(Ordering::SeqCst) {
            // The window manager gave focus to another window (an activated PHI app):
            // its keys go to our grab window meanwhile; bring the focus back to the page.
            let (app, ctx) = (app_focus.clone(), focus_ctx.clone());
            gtk::glib::idle_add_local_once(move || {
                if ctx.locked.load(Ordering::SeqCst) {
                    if let Some(window) = primary_window(&app) {
                        if let Ok(gtk_window) = window.gtk_window() {
                            let _ = platform::focus(&gtk_window);
                        }
                    }
                }
            });
        }
        gtk::glib::Propagation::Proceed
    });
    let (app_destroyed, destroyed_ctx) = (app.clone(), ctx.clone());
    window.connect_destroy_event(move |_, _| {
        if destroyed_ctx.locked.load(Ordering::SeqCst) {
            // Another program destroyed the X window (XDestroyWindow): the grab went with
            // it. Build the windows again, take the grab back, and report the tampering.
            hold_with_anchor();
            eprintln!("wardlock: a lock window was destroyed by another program; rebuilding it");
            report_failure(&destroyed_ctx, "a lock window was destroyed by another program".into());
            let (app, ctx) = (app_destroyed.clone(), destroyed_ctx.clone());
            gtk::glib::idle_add_local_once(move || {
                for window in lock_windows(&app) {
                    if window
                        .gtk_window()
                        .ok()
                        .and_then(|w| gtk::prelude::WidgetExt::window(&w))
                        .is_none_or(|g| g.is_destroyed())
                    {
                        let _ = window.destroy();
                    }
                }
                if let Err(e) = ensure_windows(&app, &ctx) {
                    eprintln!("wardlock: rebuilding the lock windows failed: {e}");
                }
                show_all(&app);
                let generation = ctx.generation.load(Ordering::SeqCst);
                try_grab(app, ctx, generation, 0);
            });
        }
        gtk::glib::Propagation::Proceed
    });
    let app_unmapped = app.clone();
    window.connect_unmap_event(move |w, _| {
        if ctx.locked.load(Ordering::SeqCst) {
            // Someone unmapped it from outside (XUnmapWindow): map it again and re-grab.
            hold_with_anchor();
            eprintln!("wardlock: a lock window was unmapped; showing it again");
            let (w, app, ctx) = (w.clone(), app_unmapped.clone(), ctx.clone());
            // An unmap also comes first when the window was destroyed; showing a destroyed
            // window crashes GTK, so check with the X server (the destroy handler rebuilds).
            gtk::glib::timeout_add_local_once(Duration::from_millis(20), move || {
                if platform::x_window_exists(&w) {
                    w.show();
                }
                let generation = ctx.generation.load(Ordering::SeqCst);
                try_grab(app, ctx, generation, 0);
            });
        }
        gtk::glib::Propagation::Proceed
    });
}

/// Grabs input on the anchor and focuses the primary lock window, retrying until both
/// are viewable and nobody else holds a grab; reports a failure (which `wardlockd`
/// escalates) and keeps trying.
fn try_grab(app: AppHandle, ctx: Ctx, generation: u32, attempt: u32) {
    if !ctx.locked.load(Ordering::SeqCst) || ctx.generation.load(Ordering::SeqCst) != generation {
        return;
    }
    // The anchor is mapped now, so that it can hold the grab the instant a lock window
    // is unmapped or destroyed (see `hold_with_anchor`).
    let _ = anchor_window();
    let result = primary_window(&app).ok_or_else(|| "no lock window".to_owned()).and_then(|window| {
        let gtk_window = window.gtk_window().map_err(|e| e.to_string())?;
        let gdk_window =
            gtk::prelude::WidgetExt::window(&gtk_window).ok_or("the lock window has no X window yet")?;
        platform::grab(&gdk_window)?;
        // With the grab on the lock window every key reaches its page wherever the focus
        // is; the focus is moved too so the page shows where typing goes.
        let _ = platform::focus(&gtk_window);
        let _ = window.set_focus();
        Ok(())
    });
    match result {
        Ok(()) => {
            if ctx.grab_failed.swap(false, Ordering::SeqCst) {
                ctx.link.report(GuardEvent::LockRestored {});
            }
            if ctx.watchdog.swap(generation, Ordering::SeqCst) != generation {
                watchdog(app, ctx, generation);
            }
        }
        Err(why) => {
            if attempt + 1 == GRAB_TRIES {
                report_failure(&ctx, why);
            }
            // After the report, keep trying, slower: the grab may come free again.
            let delay = if attempt + 1 >= GRAB_TRIES { GRAB_RETRY * 20 } else { GRAB_RETRY };
            gtk::glib::timeout_add_local_once(delay, move || try_grab(app, ctx, generation, attempt + 1));
        }
    }
}

/// While locked, a few times a second: take the grab again (a no-op while we hold it;
/// X drops a grab silently in some cases) and take the focus back if the window manager
/// gave it to another window, whose keys would otherwise be swallowed by the grab.
fn watchdog(app: AppHandle, ctx: Ctx, generation: u32) {
    gtk::glib::timeout_add_local(WATCHDOG_EVERY, move || {
        if !ctx.locked.load(Ordering::SeqCst) || ctx.generation.load(Ordering::SeqCst) != generation {
            return gtk::glib::ControlFlow::Break;
        }
        let primary = primary_window(&app).and_then(|w| w.gtk_window().ok());
        let on_window = primary.as_ref().and_then(gtk::prelude::WidgetExt::window);
        let regrabbed = match on_window {
            Some(gdk_window) if gdk_window.is_viewable() => platform::grab(&gdk_window).is_ok(),
            _ => hold_with_anchor(),
        };
        if !regrabbed {
            report_failure(&ctx, "the input grab was lost and could not be taken back".into());
        }
        if let Some(gtk_window) = primary {
            if !platform::has_focus(&gtk_window) {
                let _ = platform::focus(&gtk_window);
            }
        }
        gtk::glib::ControlFlow::Continue
    });
}

fn report_failure(ctx: &Ctx, what: String) {
    eprintln!("wardlock: LOCK FAILED: {what}");
    if !ctx.grab_failed.swap(true, Ordering::SeqCst) {
        ctx.link.report(GuardEvent::LockFailed { what });
    }
}

/// Covers monitors plugged in while locked, and drops windows of monitors that left.
pub fn watch_monitors(app: &AppHandle, screen: Arc<TauriScreen>) {
    let Some(display) = gtk::gdk::Display::default() else { return };
    let relayout = move |app: AppHandle, screen: Arc<TauriScreen>| {
        if screen.is_locked() {
            let generation = screen.generation.load(Ordering::SeqCst);
            screen.main_thread(move |app, ctx| {
                let _ = ensure_windows(app, &ctx);
                show_all(app);
                try_grab(app.clone(), ctx, generation, 0);
            });
        }
        let _ = app;
    };
    let (app_added, screen_added, relayout_added) = (app.clone(), screen.clone(), relayout);
    display.connect_monitor_added(move |_, _| relayout_added(app_added.clone(), screen_added.clone()));
    let app_removed = app.clone();
    display.connect_monitor_removed(move |_, _| relayout(app_removed.clone(), screen.clone()));
}
