//! The native part of the lock: one curtain per monitor, the grab window (anchor) that
//! holds keyboard and pointer, and the watchdog that keeps all of it in place while
//! locked. Main thread only.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use gtk::prelude::*;
use tauri::AppHandle;

use wardlock_core::protocol::local::GuardEvent;

use super::{page, Ctx, TauriScreen};
use crate::platform::{self, Area, Curtain};

/// Grab attempts, 50 ms apart, before the failure is reported and escalated.
const GRAB_TRIES: u32 = 40;
const GRAB_RETRY: Duration = Duration::from_millis(50);
/// How often, while locked, the grab, the curtains, the focus and the page are checked.
const WATCHDOG_EVERY: Duration = Duration::from_millis(250);

thread_local! {
    /// Curtains made so far; the first `monitors().len()` of them are in use while locked.
    static CURTAINS: RefCell<Vec<Curtain>> = const { RefCell::new(Vec::new()) };
    static ANCHOR: RefCell<Option<platform::Anchor>> = const { RefCell::new(None) };
}

/// Covers every monitor and takes the input at once; then puts the page above.
pub(super) fn lock(app: &AppHandle, ctx: Ctx, generation: u32) {
    let areas = cover_monitors(app, &ctx);
    try_grab(app.clone(), ctx.clone(), generation, 0);
    match page::ensure(app, &ctx) {
        Ok(_) => page::show(app, areas[0]),
        // The curtains and the grab hold; the page is tried again by the watchdog.
        Err(e) => ctx.report_failure(format!("the lock page could not be built: {e}")),
    }
}

pub(super) fn unlock(app: &AppHandle) {
    platform::ungrab();
    page::discard(app);
    crate::webkit::end_network_process_when_unused(app);
    CURTAINS.with(|cell| {
        for curtain in cell.borrow().iter() {
            curtain.hide();
        }
    });
    ANCHOR.with(|cell| {
        if let Some(anchor) = cell.borrow().as_ref() {
            anchor.hide();
        }
    });
}

/// Shows one curtain on each monitor the X server has now (making curtains as needed,
/// and again for any destroyed by another program) and hides the rest; puts the page on
/// the primary monitor, above them. Returns the monitors, primary first.
fn cover_monitors(app: &AppHandle, ctx: &Ctx) -> Vec<Area> {
    let areas = platform::monitors();
    let areas = if areas.is_empty() { vec![Area { x: 0, y: 0, width: 1024, height: 768 }] } else { areas };
    CURTAINS.with(|cell| {
        let mut curtains = cell.borrow_mut();
        // Showing a window another program destroyed crashes GTK: ask the X server too
        // (its destroy event may not have reached GTK yet).
        curtains.retain(|c| !c.is_destroyed() && platform::x_window_exists(c.window()));
        while curtains.len() < areas.len() {
            let curtain = Curtain::new();
            watch_curtain(app, curtain.window(), ctx.clone());
            curtains.push(curtain);
        }
        for (curtain, area) in curtains.iter().zip(&areas) {
            curtain.cover(*area);
        }
        for spare in curtains.iter().skip(areas.len()) {
            spare.hide();
        }
    });
    page::place(app, areas[0]);
    areas
}

/// Makes the curtains for the monitors there are now, long before any lock needs them.
pub(super) fn prepare_curtains(app: &AppHandle, ctx: &Ctx) {
    let wanted = platform::monitors().len().max(1);
    CURTAINS.with(|cell| {
        let mut curtains = cell.borrow_mut();
        while curtains.len() < wanted {
            let curtain = Curtain::new();
            watch_curtain(app, curtain.window(), ctx.clone());
            curtains.push(curtain);
        }
    });
}

/// Whether this curtain covers a monitor now (and is not a spare).
fn in_use(window: &gtk::Window) -> bool {
    CURTAINS.with(|cell| {
        cell.try_borrow()
            .map(|curtains| curtains.iter().any(|c| c.window() == window && c.is_wanted()))
            .unwrap_or(true)
    })
}

/// Back on top (below the page) when covered, mapped again when unmapped from outside,
/// remade when destroyed from outside.
fn watch_curtain(app: &AppHandle, window: &gtk::Window, ctx: Ctx) {
    let (raise_app, raise_ctx) = (app.clone(), ctx.clone());
    platform::on_obscured(window, move |w| {
        if raise_ctx.is_locked() {
            restack(&raise_app, w);
        }
    });
    let (unmap_app, unmap_ctx) = (app.clone(), ctx.clone());
    window.connect_unmap_event(move |w, _| {
        if unmap_ctx.is_locked() && in_use(w) {
            tracing::warn!(
                event = "curtain_unmapped",
                "a curtain was unmapped by another program; showing it again"
            );
            let (app, ctx) = (unmap_app.clone(), unmap_ctx.clone());
            // An unmap also comes first when the window is being destroyed; the destroy
            // handler remakes those.
            gtk::glib::idle_add_local_once(move || {
                if ctx.is_locked() {
                    cover_monitors(&app, &ctx);
                }
            });
        }
        gtk::glib::Propagation::Proceed
    });
    let (destroy_app, destroy_ctx) = (app.clone(), ctx);
    window.connect_destroy_event(move |_, _| {
        if destroy_ctx.is_locked() {
            tracing::warn!(
                event = "curtain_destroyed",
                "a curtain was destroyed by another program; making it again"
            );
            destroy_ctx.report_failure("a curtain was destroyed by another program".into());
            let (app, ctx) = (destroy_app.clone(), destroy_ctx.clone());
            gtk::glib::idle_add_local_once(move || {
                if ctx.is_locked() {
                    cover_monitors(&app, &ctx);
                    regrab(&app, &ctx);
                }
            });
        }
        gtk::glib::Propagation::Proceed
    });
}

/// A curtain was covered by another window: directly below the page (never above it, so
/// the two cannot raise each other in turn), or on top where there is no page.
fn restack(app: &AppHandle, curtain: &gtk::Window) {
    let stacked = page::gtk_window(app)
        .filter(|page| page.window().is_some_and(|w| w.is_viewable()))
        .is_some_and(|page| platform::stack_below(curtain, &page));
    if !stacked {
        platform::raise(curtain);
    }
}

/// The anchor's X window, shown; a new anchor when the old one was destroyed from outside.
fn anchor_window(app: &AppHandle, ctx: &Ctx) -> Option<gtk::gdk::Window> {
    ANCHOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if let Some(window) = slot.as_ref().and_then(platform::Anchor::shown) {
            return Some(window);
        }
        let anchor = platform::Anchor::new();
        watch_anchor(app, anchor.window(), ctx.clone());
        let window = anchor.shown();
        *slot = Some(anchor);
        window
    })
}

/// An anchor destroyed from outside is made again at the next use; a grab broken by
/// another client is taken back.
fn watch_anchor(app: &AppHandle, window: &gtk::Window, ctx: Ctx) {
    window.connect_destroy_event(move |_, _| {
        ANCHOR.with(|cell| {
            if let Ok(mut slot) = cell.try_borrow_mut() {
                slot.take();
            }
        });
        gtk::glib::Propagation::Proceed
    });
    let app = app.clone();
    window.connect_grab_broken_event(move |_, _| {
        if ctx.is_locked() {
            tracing::warn!(event = "grab_taken_back", "the input grab was broken; taking it back");
            regrab(&app, &ctx);
        }
        gtk::glib::Propagation::Proceed
    });
}

/// Takes the grab again at once (a lock window is going away, and X ends a grab with
/// its window); true when it holds.
pub(super) fn hold_grab(app: &AppHandle, ctx: &Ctx) -> bool {
    anchor_window(app, ctx).is_some_and(|anchor| platform::grab(&anchor).is_ok())
}

/// Takes the grab again for the lock in progress (from its first attempt).
pub(super) fn regrab(app: &AppHandle, ctx: &Ctx) {
    try_grab(app.clone(), ctx.clone(), ctx.generation(), 0);
}

/// Grabs keyboard and pointer (with owner events: our curtains and page get their own
/// input, every other client's goes to the grab window and nowhere) and focuses the
/// page, retrying until it works; reports a failure (which `wardlockd` escalates) and
/// keeps trying. The grab is on the page while it is on screen (GTK delivers its keys
/// only then) and on the anchor otherwise; one client's grab moves between its windows
/// in one request, with no moment without it.
pub(super) fn try_grab(app: AppHandle, ctx: Ctx, generation: u32, attempt: u32) {
    if !ctx.is_locked() || ctx.generation() != generation {
        return;
    }
    match grab(&app, &ctx) {
        Ok(()) => {
            page::focus(&app);
            if ctx.grab_failed.swap(false, Ordering::SeqCst) {
                ctx.link.report(GuardEvent::LockRestored {});
            }
            if ctx.watchdog.swap(generation, Ordering::SeqCst) != generation {
                watchdog(app, ctx, generation);
            }
        }
        Err(why) => {
            if attempt + 1 == GRAB_TRIES {
                ctx.report_failure(why);
            }
            // After the report, keep trying, slower: the grab may come free again.
            let delay = if attempt + 1 >= GRAB_TRIES { GRAB_RETRY * 20 } else { GRAB_RETRY };
            gtk::glib::timeout_add_local_once(delay, move || try_grab(app, ctx, generation, attempt + 1));
        }
    }
}

fn grab(app: &AppHandle, ctx: &Ctx) -> Result<(), String> {
    // The anchor is mapped in any case, to take the grab the instant the page goes.
    let anchor = anchor_window(app, ctx);
    match page::gtk_window(app).and_then(|w| w.window()).filter(gtk::gdk::Window::is_viewable) {
        Some(page_window) => platform::grab(&page_window),
        None => platform::grab(&anchor.ok_or("no grab window")?),
    }
}

/// While locked, a few times a second: take the grab again (a no-op while we hold it;
/// X drops a grab silently in some cases), cover any monitor whose curtain is gone, take
/// the focus back for the page, and check that the page's web process answers.
fn watchdog(app: AppHandle, ctx: Ctx, generation: u32) {
    gtk::glib::timeout_add_local(WATCHDOG_EVERY, move || {
        if !ctx.is_locked() || ctx.generation() != generation {
            return gtk::glib::ControlFlow::Break;
        }
        if grab(&app, &ctx).is_err() {
            ctx.report_failure("the input grab was lost and could not be taken back".into());
        }
        let uncovered = CURTAINS.with(|cell| {
            cell.try_borrow().is_ok_and(|curtains| curtains.iter().any(|c| c.is_wanted() && !c.is_shown()))
        });
        if uncovered {
            cover_monitors(&app, &ctx);
        }
        page::keep_alive(&app, &ctx);
        if !page::has_focus(&app) {
            page::focus(&app);
        }
        gtk::glib::ControlFlow::Continue
    });
}

/// Re-lays the curtains and the page at every change of the monitors (RandR), while
/// locked; keeps curtains ready for the new layout while not.
pub fn watch_monitors(app: &AppHandle, screen: Arc<TauriScreen>) {
    let ctx = screen.ctx();
    prepare_curtains(app, &ctx);
    let relayout = {
        let app = app.clone();
        move || {
            let (app_main, ctx) = (app.clone(), ctx.clone());
            let _ = app.run_on_main_thread(move || {
                if ctx.is_locked() {
                    cover_monitors(&app_main, &ctx);
                    regrab(&app_main, &ctx);
                } else {
                    prepare_curtains(&app_main, &ctx);
                }
            });
        }
    };
    let display = std::env::var("DISPLAY").unwrap_or_default();
    if let Err(why) = platform::randr::watch(&display, relayout.clone()) {
        // Without RandR events, GDK's monitor signals are the next best thing.
        tracing::info!(event = "monitors_through_gdk", "watching monitors through GDK only: {why}");
        if let Some(display) = gtk::gdk::Display::default() {
            let added = relayout.clone();
            display.connect_monitor_added(move |_, _| added());
            display.connect_monitor_removed(move |_, _| relayout());
        }
    }
}
