//! The lock page: one webview window on the primary monitor, above its curtain, that
//! draws the PIN pad. It is built during the countdown (or at the lock) and destroyed at
//! the unlock, so its web process exists only around a lock. A web process that dies
//! (`web-process-terminated`: a crash, the OOM killer, `kill -9`) or stops answering the
//! guard's ping is replaced by a new page while the curtains and the grab stay.
//! Main thread only.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use gtk::prelude::*;
use tauri::{AppHandle, Manager, WebviewUrl, WebviewWindow, WebviewWindowBuilder};
use webkit2gtk::{WebProcessTerminationReason, WebViewExt};

use wardlock_core::protocol::local::GuardEvent;

use super::{cover, Ctx, LOCK_PREFIX};
use crate::platform::{self, Area};

/// The page's window background: the curtain colour, so it is opaque before the page has
/// drawn anything.
const CURTAIN: tauri::window::Color = tauri::window::Color(12, 30, 38, 255);
/// How often, while locked, the web process is asked to run a trivial script...
const PING_EVERY: Duration = Duration::from_secs(2);
/// ...and how long it may leave that unanswered before it counts as hung.
const HANG_AFTER: Duration = Duration::from_secs(6);

struct Page {
    label: String,
    view: Option<webkit2gtk::WebView>,
    /// When the web process last answered a ping (or the page was built).
    answered: Rc<Cell<Instant>>,
    pinged: Cell<Instant>,
    /// We ended its web process because it hung (not a crash).
    ended_as_hung: Cell<bool>,
}

thread_local! {
    static PAGE: RefCell<Option<Page>> = const { RefCell::new(None) };
    /// Pages we destroyed ourselves, whose destroy events are expected.
    static RETIRED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    static SERIAL: Cell<u32> = const { Cell::new(0) };
    /// When pages were restarted lately, to slow down a web process that dies at once.
    static RESTARTS: RefCell<VecDeque<Instant>> = const { RefCell::new(VecDeque::new()) };
    /// A rebuild is scheduled.
    static PENDING: Cell<bool> = const { Cell::new(false) };
}

/// More restarts than this within `RESTART_WINDOW` wait `RESTART_BACKOFF` each.
const RESTARTS_AT_ONCE: usize = 3;
const RESTART_WINDOW: Duration = Duration::from_secs(30);
const RESTART_BACKOFF: Duration = Duration::from_secs(5);

fn current_label() -> Option<String> {
    PAGE.with(|cell| cell.borrow().as_ref().map(|p| p.label.clone()))
}

fn is_current(label: &str) -> bool {
    PAGE.with(|cell| cell.borrow().as_ref().is_some_and(|p| p.label == label))
}

pub(super) fn window(app: &AppHandle) -> Option<WebviewWindow> {
    current_label().and_then(|label| app.get_webview_window(&label))
}

pub(super) fn gtk_window(app: &AppHandle) -> Option<gtk::ApplicationWindow> {
    window(app).and_then(|w| w.gtk_window().ok())
}

/// The page, built (hidden) if there is none.
pub(super) fn ensure(app: &AppHandle, ctx: &Ctx) -> Result<WebviewWindow, String> {
    match window(app) {
        Some(window) => Ok(window),
        None => build(app, ctx),
    }
}

fn build(app: &AppHandle, ctx: &Ctx) -> Result<WebviewWindow, String> {
    let serial = SERIAL.with(|s| {
        s.set(s.get() + 1);
        s.get()
    });
    let label = format!("{LOCK_PREFIX}page-{serial}");
    let area = platform::monitors().first().copied().unwrap_or(Area { x: 0, y: 0, width: 1024, height: 768 });
    let window = WebviewWindowBuilder::new(app, &label, WebviewUrl::App("lock.html".into()))
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
    watch_window(app, &gtk_window, label.clone(), ctx.clone());
    let now = Instant::now();
    PAGE.with(|cell| {
        *cell.borrow_mut() = Some(Page {
            label: label.clone(),
            view: None,
            answered: Rc::new(Cell::new(now)),
            pinged: Cell::new(now),
            ended_as_hung: Cell::new(false),
        });
    });
    let (app, ctx) = (app.clone(), ctx.clone());
    window
        .with_webview(move |webview| {
            let view = webview.inner();
            tune(&view);
            watch_web_process(&app, &view, label.clone(), ctx);
            PAGE.with(|cell| {
                if let Some(page) = cell.borrow_mut().as_mut().filter(|p| p.label == label) {
                    page.view = Some(view);
                }
            });
        })
        .map_err(|e| e.to_string())?;
    Ok(window)
}

/// A page that shows one form needs no page cache or memory cache of a browser
/// (`DOCUMENT_VIEWER`). (No GPU buffers either: see `main`, which turns WebKit's
/// compositing mode off; the settings' `hardware-acceleration-policy = NEVER`, set on a
/// loading page, crashes WebKitGTK 2.50's web process at once.)
fn tune(view: &webkit2gtk::WebView) {
    use webkit2gtk::{SettingsExt, WebContextExt};
    if let Some(context) = view.context() {
        context.set_cache_model(webkit2gtk::CacheModel::DocumentViewer);
    }
    if let Some(settings) = WebViewExt::settings(view) {
        settings.set_enable_page_cache(false);
    }
}

fn watch_web_process(app: &AppHandle, view: &webkit2gtk::WebView, label: String, ctx: Ctx) {
    let app = app.clone();
    view.connect_web_process_terminated(move |_, reason| {
        if !is_current(&label) {
            return;
        }
        let hung = PAGE.with(|cell| cell.borrow().as_ref().is_some_and(|p| p.ended_as_hung.get()));
        let why = if hung {
            format!("the lock page did not answer for {} s; its web process was ended", HANG_AFTER.as_secs())
        } else {
            match reason {
                WebProcessTerminationReason::ExceededMemoryLimit => {
                    "the lock page's web process exceeded its memory limit".to_owned()
                }
                WebProcessTerminationReason::TerminatedByApi => {
                    "the lock page's web process was ended".to_owned()
                }
                _ => "the lock page's web process crashed or was killed".to_owned(),
            }
        };
        tracing::warn!(
            event = "lock_page_rebuilt",
            "{why}; the curtain and the grab stay, building the page again"
        );
        let (app, ctx) = (app.clone(), ctx.clone());
        gtk::glib::idle_add_local_once(move || restart(&app, &ctx, why));
    });
}

/// Replaces the page (while locked; unlocked, the next lock builds one) and says why.
/// A page that keeps dying is rebuilt more slowly; the curtains cover meanwhile.
fn restart(app: &AppHandle, ctx: &Ctx, why: String) {
    // The grab moves to the anchor first: X ends a grab whose window is unmapped.
    if ctx.is_locked() {
        cover::hold_grab(app, ctx);
    }
    discard(app);
    if !ctx.is_locked() || PENDING.get() {
        return;
    }
    let now = Instant::now();
    let recent = RESTARTS.with(|cell| {
        let mut restarts = cell.borrow_mut();
        restarts.retain(|at| now.duration_since(*at) < RESTART_WINDOW);
        restarts.push_back(now);
        restarts.len()
    });
    let delay = if recent > RESTARTS_AT_ONCE { RESTART_BACKOFF } else { Duration::ZERO };
    PENDING.set(true);
    let (app, ctx) = (app.clone(), ctx.clone());
    gtk::glib::timeout_add_local_once(delay, move || {
        PENDING.set(false);
        if !ctx.is_locked() || window(&app).is_some() {
            return;
        }
        match rebuild(&app, &ctx) {
            Ok(()) => ctx.link.report(GuardEvent::LockScreenRestarted { reason: why }),
            Err(e) => ctx.report_failure(format!("{why}, and a new lock page could not be built: {e}")),
        }
    });
}

fn rebuild(app: &AppHandle, ctx: &Ctx) -> Result<(), String> {
    build(app, ctx)?;
    if let Some(area) = platform::monitors().first() {
        show(app, *area);
    }
    cover::regrab(app, ctx);
    Ok(())
}

/// Shows the page on `area` (the primary monitor), above the curtains.
pub(super) fn show(app: &AppHandle, area: Area) {
    if let Some(window) = window(app) {
        let _ = window.show();
        place(app, area);
    }
}

pub(super) fn place(app: &AppHandle, area: Area) {
    if let Some(gtk_window) = gtk_window(app) {
        platform::place(&gtk_window, area);
        platform::raise(&gtk_window);
    }
}

/// Destroyed, not hidden: its web process goes with it, and the next lock starts from a
/// blank page (no PIN digits left in a field).
pub(super) fn discard(app: &AppHandle) {
    let Some(page) = PAGE.with(|cell| cell.borrow_mut().take()) else { return };
    RETIRED.with(|cell| cell.borrow_mut().insert(page.label.clone()));
    if let Some(window) = app.get_webview_window(&page.label) {
        let _ = window.hide();
        let _ = window.destroy();
    }
}

pub(super) fn focus(app: &AppHandle) {
    let Some(window) = window(app) else { return };
    if let Ok(gtk_window) = window.gtk_window() {
        if platform::focus(&gtk_window).is_ok() {
            let _ = window.set_focus();
        }
    }
}

/// Whether the page has the keyboard focus (true when there is no page to give it to).
pub(super) fn has_focus(app: &AppHandle) -> bool {
    gtk_window(app).is_none_or(|w| !w.window().is_some_and(|g| g.is_viewable()) || platform::has_focus(&w))
}

/// Called by the watchdog while locked: builds a page where there is none, pings the
/// web process, and ends it when it has not answered for `HANG_AFTER` (its termination
/// then rebuilds the page).
pub(super) fn keep_alive(app: &AppHandle, ctx: &Ctx) {
    if window(app).is_none() {
        restart(app, ctx, "the lock page was missing".into());
        return;
    }
    let now = Instant::now();
    let hung_view = PAGE.with(|cell| {
        let slot = cell.borrow();
        let page = slot.as_ref()?;
        let view = page.view.as_ref()?;
        if now.duration_since(page.answered.get()) > HANG_AFTER {
            return (!page.ended_as_hung.replace(true)).then(|| view.clone());
        }
        if now.duration_since(page.pinged.get()) >= PING_EVERY {
            page.pinged.set(now);
            let answered = page.answered.clone();
            view.evaluate_javascript("1", None, None, None::<&gtk::gio::Cancellable>, move |_| {
                answered.set(Instant::now());
            });
        }
        None
    });
    if let Some(view) = hung_view {
        tracing::warn!(
            event = "lock_page_hung",
            "the lock page has not answered for {} s; ending its web process",
            HANG_AFTER.as_secs()
        );
        // Out of the borrow: termination signals `web-process-terminated` at once.
        view.terminate_web_process();
    }
}

/// Keeps the page on top, mapped and focused while locked; a page destroyed by another
/// program is tampering, reported and built again.
fn watch_window(app: &AppHandle, window: &gtk::ApplicationWindow, label: String, ctx: Ctx) {
    // Something covered part of the page (a popup, a notification): back on top.
    let raise_ctx = ctx.clone();
    platform::on_obscured(window, move |w| {
        if raise_ctx.is_locked() {
            platform::raise(w);
        }
    });
    let (app_broken, broken_ctx) = (app.clone(), ctx.clone());
    window.connect_grab_broken_event(move |_, _| {
        if broken_ctx.is_locked() {
            tracing::warn!(event = "grab_taken_back", "the input grab was broken; taking it back");
            cover::regrab(&app_broken, &broken_ctx);
        }
        gtk::glib::Propagation::Proceed
    });
    // Grab and focus the moment the page is on screen instead of at the next retry.
    let (app_mapped, mapped_ctx) = (app.clone(), ctx.clone());
    window.connect_map_event(move |_, _| {
        if mapped_ctx.is_locked() {
            cover::regrab(&app_mapped, &mapped_ctx);
        }
        gtk::glib::Propagation::Proceed
    });
    let (app_focus, focus_ctx) = (app.clone(), ctx.clone());
    window.connect_focus_out_event(move |_, _| {
        if focus_ctx.is_locked() {
            // The window manager gave focus to another window (an activated PHI app):
            // its keys go to the grab window meanwhile; bring the focus back to the page.
            let (app, ctx) = (app_focus.clone(), focus_ctx.clone());
            gtk::glib::idle_add_local_once(move || {
                if ctx.is_locked() {
                    focus(&app);
                }
            });
        }
        gtk::glib::Propagation::Proceed
    });
    let (app_destroyed, destroyed_ctx, destroyed_label) = (app.clone(), ctx.clone(), label.clone());
    window.connect_destroy_event(move |_, _| {
        if RETIRED.with(|cell| cell.borrow_mut().remove(&destroyed_label)) {
            return gtk::glib::Propagation::Proceed;
        }
        if is_current(&destroyed_label) {
            PAGE.with(|cell| cell.borrow_mut().take());
        }
        if destroyed_ctx.is_locked() {
            // Another program destroyed the X window (XDestroyWindow). The curtain under
            // it still covers the monitor and the anchor still holds the grab; build the
            // page again, and report the tampering.
            cover::hold_grab(&app_destroyed, &destroyed_ctx);
            tracing::warn!(
                event = "lock_page_destroyed",
                "the lock page was destroyed by another program; building it again"
            );
            destroyed_ctx.report_failure("a lock window was destroyed by another program".into());
            let (app, ctx, label) = (app_destroyed.clone(), destroyed_ctx.clone(), destroyed_label.clone());
            gtk::glib::idle_add_local_once(move || {
                if let Some(stale) = app.get_webview_window(&label) {
                    let _ = stale.destroy();
                }
                if ctx.is_locked() && self::window(&app).is_none() {
                    if let Err(e) = rebuild(&app, &ctx) {
                        tracing::error!(
                            event = "lock_page_rebuild_failed",
                            "rebuilding the lock page failed: {e}"
                        );
                    }
                }
            });
        }
        gtk::glib::Propagation::Proceed
    });
    let app_unmapped = app.clone();
    window.connect_unmap_event(move |w, _| {
        if ctx.is_locked() && is_current(&label) {
            // Someone unmapped it from outside (XUnmapWindow): map it again.
            cover::hold_grab(&app_unmapped, &ctx);
            tracing::warn!(event = "lock_page_unmapped", "the lock page was unmapped; showing it again");
            let (w, app, ctx) = (w.clone(), app_unmapped.clone(), ctx.clone());
            // An unmap also comes first when the window was destroyed; showing a destroyed
            // window crashes GTK, so check with the X server (the destroy handler rebuilds).
            gtk::glib::timeout_add_local_once(Duration::from_millis(20), move || {
                if platform::x_window_exists(&w) {
                    w.show();
                }
                cover::regrab(&app, &ctx);
            });
        }
        gtk::glib::Propagation::Proceed
    });
}
