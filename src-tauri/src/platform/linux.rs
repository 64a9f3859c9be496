//! X11 glue through GTK/GDK: override-redirect lock windows placed on each monitor, the
//! input grab, and the native warning banner. Everything here runs on the GTK main thread.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use gtk::gdk;
use gtk::glib;
use gtk::prelude::*;

pub use super::randr::Area;

/// The monitors as the X server has them now, primary first (see `randr`).
pub fn monitors() -> Vec<Area> {
    with_x11(|conn| super::randr::monitors(conn, 0)).unwrap_or_default()
}

/// Any program of the session can destroy or unmap our X windows. GDK's default reaction
/// to the X errors that follow is to abort the process, which would take the lock
/// windows down with it; an error trap that is never popped makes GDK ignore them, and
/// the lock windows' own handlers rebuild what was destroyed.
pub fn survive_x_errors() {
    gdk::error_trap_push();
}

/// GTK loads the modules the `gtk-modules` setting names, and any X client that owns the
/// XSETTINGS selection may push that setting at the running guard. A value the
/// application sets outranks XSETTINGS from then on: set it empty, and pushes are
/// ignored. (Modules named at start are kept out by `main.rs`.)
pub fn pin_gtk_modules() {
    if let Some(settings) = gtk::Settings::default() {
        settings.set_property("gtk-modules", None::<&str>);
    }
}

/// Takes the window out of the window manager's hands before it is first mapped: it
/// cannot then be minimised, moved, hidden by "show desktop" or closed by the WM, each of
/// which would silently drop the grab.
pub fn make_override_redirect(window: &gtk::ApplicationWindow) {
    window.realize();
    if let Some(gdk_window) = window.window() {
        gdk_window.set_override_redirect(true);
    }
}

/// Moves and sizes a window onto `area` (X pixels; GTK counts in scaled ones).
pub fn place(window: &impl IsA<gtk::Window>, area: Area) {
    let window = window.as_ref();
    let scale = window.scale_factor().max(1);
    let (x, y, width, height) = (area.x / scale, area.y / scale, area.width / scale, area.height / scale);
    window.move_(x, y);
    window.resize(width, height);
    if let Some(gdk_window) = window.window() {
        gdk_window.move_resize(x, y, width, height);
    }
}

/// Grabs keyboard and pointer on `anchor` (see [`Anchor`]). With `owner_events`, input
/// meant for any of our own windows (the lock windows on every monitor) reaches them as
/// usual, and input meant for any other client goes to the anchor, which swallows it.
pub fn grab(anchor: &gdk::Window) -> Result<(), String> {
    if !anchor.is_viewable() {
        return Err("the grab window is not viewable yet".into());
    }
    let display = gdk::Display::default().ok_or("no display")?;
    let seat = display.default_seat().ok_or("the display has no seat")?;
    match seat.grab(anchor, gdk::SeatCapabilities::ALL, true, None, None, None) {
        gdk::GrabStatus::Success => Ok(()),
        other => Err(format!("the input grab failed ({other:?}); another program holds it")),
    }
}

thread_local! {
    /// Our own X connection for the one request GDK will not make for an override-redirect
    /// window: it asks the window manager to focus it, and the WM ignores such windows.
    static X11: RefCell<Option<x11rb::rust_connection::RustConnection>> = const { RefCell::new(None) };
}

/// Gives the keyboard focus to a lock window, so typed keys reach its page. Until it has
/// it (say the WM just focused another window), keys go to the grab window and are lost,
/// never to another program.
pub fn focus(window: &gtk::ApplicationWindow) -> Result<(), String> {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConnectionExt, InputFocus};
    let gdk_window = window.window().ok_or("the lock window has no X window yet")?;
    if !gdk_window.is_viewable() {
        return Err("the lock window is not viewable yet".into());
    }
    let xid = xid_of(window).ok_or("the lock window is not an X11 window")?;
    gdk_window.raise();
    let sent = with_x11(|conn| {
        let sent = conn
            .set_input_focus(InputFocus::PARENT, xid, x11rb::CURRENT_TIME)
            .map_err(|e| e.to_string())
            .and_then(|cookie| cookie.check().map_err(|e| e.to_string()));
        let _ = conn.flush();
        sent
    })
    .unwrap_or_else(|| Err("cannot open the X display".into()));
    if let Err(e) = sent {
        // A broken connection is made again at the next try.
        X11.with(|cell| cell.borrow_mut().take());
        return Err(format!("focusing the lock window failed: {e}"));
    }
    window.present();
    Ok(())
}

fn xid_of(window: &impl IsA<gtk::Widget>) -> Option<u32> {
    window
        .as_ref()
        .window()
        .filter(|w| !w.is_destroyed())
        .and_then(|w| w.downcast_ref::<gdkx11::X11Window>().map(gdkx11::X11Window::xid))
        .and_then(|xid| u32::try_from(xid).ok())
}

/// The window's map state as the X server has it; `None` when the server no longer has
/// the window (another program destroyed it). GDK does not always learn of an unmap by
/// another program.
fn x_map_state(window: &impl IsA<gtk::Widget>) -> Option<x11rb::protocol::xproto::MapState> {
    use x11rb::protocol::xproto::ConnectionExt;
    let xid = xid_of(window)?;
    with_x11(|conn| conn.get_window_attributes(xid).ok().and_then(|c| c.reply().ok()).map(|a| a.map_state))
        .flatten()
}

/// Maps the window on the X server if it is not mapped there (another program unmapped
/// it behind GTK's back).
pub fn map_if_unmapped(window: &impl IsA<gtk::Widget>) {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConnectionExt, MapState};
    if x_map_state(window) != Some(MapState::UNMAPPED) {
        return;
    }
    let Some(xid) = xid_of(window) else { return };
    with_x11(|conn| {
        let _ = conn.map_window(xid);
        let _ = conn.flush();
    });
}

/// Whether the X server still has this window (another program may have destroyed it).
pub fn x_window_exists(window: &impl IsA<gtk::Widget>) -> bool {
    x_map_state(window).is_some()
}

fn with_x11<T>(f: impl FnOnce(&x11rb::rust_connection::RustConnection) -> T) -> Option<T> {
    X11.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = x11rb::connect(None).ok().map(|(conn, _)| conn);
        }
        slot.as_ref().map(f)
    })
}

/// Whether the X input focus is on `window` now.
pub fn has_focus(window: &gtk::ApplicationWindow) -> bool {
    use x11rb::protocol::xproto::ConnectionExt;
    let Some(xid) = xid_of(window) else { return false };
    with_x11(|conn| conn.get_input_focus().ok().and_then(|c| c.reply().ok()).is_some_and(|r| r.focus == xid))
        .unwrap_or(false)
}

/// The window that holds the grab: a 1×1 override-redirect window off-screen. It is not
/// the visible lock window, so a program that unmaps or destroys a lock window does not
/// end the grab (X ends a grab when its window stops being viewable); keys typed in the
/// meantime go nowhere.
pub struct Anchor {
    window: gtk::Window,
}

impl std::fmt::Debug for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Anchor")
    }
}

impl Anchor {
    pub fn new() -> Self {
        let window = gtk::Window::new(gtk::WindowType::Popup);
        window.set_title("Wardlock input guard");
        window.set_default_size(1, 1);
        window.move_(-10, -10);
        Self { window }
    }

    pub fn window(&self) -> &gtk::Window {
        &self.window
    }

    /// The X window, mapped; `None` when it was destroyed from outside.
    pub fn shown(&self) -> Option<gdk::Window> {
        self.window.show();
        self.window.move_(-10, -10);
        self.window.window().filter(|w| !w.is_destroyed())
    }

    pub fn hide(&self) {
        self.window.hide();
    }
}

pub fn ungrab() {
    if let Some(seat) = gdk::Display::default().and_then(|d| d.default_seat()) {
        seat.ungrab();
    }
}

pub fn raise(window: &impl IsA<gtk::Widget>) {
    if let Some(gdk_window) = window.as_ref().window() {
        gdk_window.raise();
    }
}

/// Calls `f` whenever another window covers part of `window` (X visibility events).
pub fn on_obscured<W: IsA<gtk::Widget>>(window: &W, f: impl Fn(&W) + 'static) {
    window.add_events(gdk::EventMask::VISIBILITY_NOTIFY_MASK);
    window.connect_event(move |w, event| {
        let obscured = event
            .downcast_ref::<gdk::EventVisibility>()
            .is_some_and(|v| v.state() != gdk::VisibilityState::Unobscured);
        if obscured {
            f(w);
        }
        glib::Propagation::Proceed
    });
}

/// Restacks `window` directly below `sibling` (both top-level windows of ours): above
/// everything else, yet never over the lock page, so raising a curtain cannot start a
/// raise war with the page it lies under.
pub fn stack_below(window: &impl IsA<gtk::Widget>, sibling: &impl IsA<gtk::Widget>) -> bool {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConfigureWindowAux, ConnectionExt, StackMode};
    let (Some(xid), Some(sibling)) = (xid_of(window), xid_of(sibling)) else { return false };
    with_x11(|conn| {
        let sent = conn
            .configure_window(xid, &ConfigureWindowAux::new().sibling(sibling).stack_mode(StackMode::BELOW))
            .is_ok();
        sent && conn.flush().is_ok()
    })
    .unwrap_or(false)
}

/// The curtain's colour as an X pixel on a 24-bit TrueColor visual.
const CURTAIN_PIXEL: u32 = 0x000c_1e26;
pub const CURTAIN_CSS_COLOUR: &str = "#0c1e26";

/// One monitor's curtain: a native override-redirect window in the curtain colour with a
/// short "Locked" text, and no webview. It is made ahead of any lock and only mapped at
/// the lock, so the screen is covered within milliseconds; whatever happens to the lock
/// page above it (a web process that crashed, hung or never drew), the monitor stays
/// covered. It has the same X connection as the page, so the one grab serves both.
pub struct Curtain {
    window: gtk::Window,
    area: std::cell::Cell<Option<Area>>,
}

impl std::fmt::Debug for Curtain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Curtain").field("area", &self.area.get()).finish()
    }
}

impl Curtain {
    pub fn new() -> Self {
        // A popup is override-redirect on X11: no window manager can minimise, move or
        // close it.
        let window = gtk::Window::new(gtk::WindowType::Popup);
        window.set_title("Wardlock curtain");
        window.set_widget_name("wardlock-curtain");
        window.set_accept_focus(false);
        let label = gtk::Label::new(Some("Locked"));
        window.add(&label);
        label.show();
        let css = gtk::CssProvider::new();
        let rules = format!(
            "#wardlock-curtain {{ background: {CURTAIN_CSS_COLOUR}; }}
             #wardlock-curtain label {{ color: #9fbac6; font-size: 28px; }}"
        );
        let _ = css.load_from_data(rules.as_bytes());
        window.style_context().add_provider(&css, gtk::STYLE_PROVIDER_PRIORITY_APPLICATION);
        label.style_context().add_provider(&css, gtk::STYLE_PROVIDER_PRIORITY_APPLICATION);
        window.realize();
        // The X server paints the background itself before GTK's first frame.
        if let Some(xid) = xid_of(&window) {
            use x11rb::connection::Connection;
            use x11rb::protocol::xproto::{ChangeWindowAttributesAux, ConnectionExt};
            with_x11(|conn| {
                let _ = conn.change_window_attributes(
                    xid,
                    &ChangeWindowAttributesAux::new().background_pixel(CURTAIN_PIXEL),
                );
                let _ = conn.flush();
            });
        }
        Self { window, area: std::cell::Cell::new(None) }
    }

    pub fn window(&self) -> &gtk::Window {
        &self.window
    }

    /// Covers `area`, mapped and on top.
    pub fn cover(&self, area: Area) {
        self.area.set(Some(area));
        place(&self.window, area);
        self.window.show();
        // Unmapped by another program, the window is still shown as far as GTK and GDK
        // know, and `show` does nothing: ask the X server, and map it there.
        map_if_unmapped(&self.window);
        place(&self.window, area);
        raise(&self.window);
    }

    /// Hidden, and no longer wanted on any monitor.
    pub fn hide(&self) {
        self.area.set(None);
        self.window.hide();
    }

    /// Meant to cover a monitor now (whether or not it is on screen).
    pub fn is_wanted(&self) -> bool {
        self.area.get().is_some()
    }

    /// Mapped, as the X server has it (GDK does not always learn of an unmap by another
    /// program).
    pub fn is_shown(&self) -> bool {
        x_map_state(&self.window) == Some(x11rb::protocol::xproto::MapState::VIEWABLE)
    }

    /// Destroyed by another program (its X window is gone; GTK drops the widget).
    pub fn is_destroyed(&self) -> bool {
        self.window.window().is_none_or(|w| w.is_destroyed())
    }
}

/// The countdown before the lock and short notices after an unlock: a small native
/// window (no webview, so it costs nothing while hidden) that never takes focus.
/// What the banner's "Keep open" button does in the countdown shown now.
type HoldAction = Rc<RefCell<Option<Box<dyn Fn()>>>>;

pub struct Banner {
    window: gtk::Window,
    label: gtk::Label,
    /// "Keep open…", shown during the countdown where policy allows holds.
    hold: gtk::Button,
    on_hold: HoldAction,
    countdown: Rc<RefCell<Option<glib::SourceId>>>,
}

impl std::fmt::Debug for Banner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Banner")
    }
}

impl Banner {
    pub fn new() -> Self {
        let window = gtk::Window::new(gtk::WindowType::Popup);
        window.set_title("Wardlock warning");
        window.set_accept_focus(false);
        window.set_type_hint(gdk::WindowTypeHint::Notification);
        window.set_widget_name("wardlock-banner");
        let label = gtk::Label::new(None);
        label.set_margin_top(18);
        label.set_margin_bottom(18);
        label.set_margin_start(28);
        label.set_margin_end(28);
        label.set_justify(gtk::Justification::Center);
        let hold = gtk::Button::with_label("Keep open");
        hold.set_widget_name("wardlock-hold");
        hold.set_margin_bottom(14);
        hold.set_halign(gtk::Align::Center);
        hold.set_no_show_all(true);
        let on_hold: HoldAction = Rc::new(RefCell::new(None));
        hold.connect_clicked({
            let on_hold = on_hold.clone();
            move |_| {
                if let Some(f) = on_hold.borrow().as_ref() {
                    f();
                }
            }
        });
        let column = gtk::Box::new(gtk::Orientation::Vertical, 0);
        column.add(&label);
        column.add(&hold);
        window.add(&column);
        let css = gtk::CssProvider::new();
        let _ = css.load_from_data(
            b"#wardlock-banner { background: #0c4a60; border: 3px solid #f5c542; }
              #wardlock-banner label { color: #ffffff; font-size: 20px; }
              #wardlock-hold { font-size: 18px; padding: 8px 18px; }",
        );
        gtk::StyleContext::add_provider_for_screen(
            &gtk::prelude::WidgetExt::screen(&window)
                .unwrap_or_else(|| gdk::Screen::default().expect("a screen")),
            &css,
            gtk::STYLE_PROVIDER_PRIORITY_APPLICATION,
        );
        Self { window, label, hold, on_hold, countdown: Rc::new(RefCell::new(None)) }
    }

    /// Shows "Locking in m:ss" and counts down itself, once a second, until hidden. With
    /// `hold` (where policy allows holds), a "Keep open" button that calls `on_hold`.
    pub fn countdown(&self, lock_in: Duration, hold: Option<(Duration, Box<dyn Fn()>)>) {
        self.stop();
        *self.on_hold.borrow_mut() = None;
        match hold {
            Some((length, on_hold)) => {
                let minutes = length.as_secs().div_ceil(60);
                self.hold.set_label(&format!("Keep open {minutes} min (your PIN)"));
                *self.on_hold.borrow_mut() = Some(on_hold);
                self.hold.show();
            }
            None => self.hold.hide(),
        }
        let deadline = Instant::now() + lock_in;
        let label = self.label.clone();
        let render = move || {
            let left = deadline.saturating_duration_since(Instant::now()).as_secs();
            label.set_markup(&format!(
                "<b>This screen locks in {}:{:02}</b>\nMove the mouse, touch the screen or press a key to stay signed in.",
                left / 60,
                left % 60
            ));
        };
        render();
        let id = glib::timeout_add_seconds_local(1, move || {
            render();
            glib::ControlFlow::Continue
        });
        *self.countdown.borrow_mut() = Some(id);
        self.show_top_centre();
    }

    /// A notice that goes away by itself.
    pub fn notice(&self, markup: &str, for_how_long: Duration) {
        self.stop();
        self.hold.hide();
        self.label.set_markup(markup);
        self.show_top_centre();
        let window = self.window.clone();
        let slot = self.countdown.clone();
        let id = glib::timeout_add_local_once(for_how_long, move || {
            slot.borrow_mut().take();
            window.hide();
        });
        *self.countdown.borrow_mut() = Some(id);
    }

    pub fn hide(&self) {
        self.stop();
        self.window.hide();
    }

    fn stop(&self) {
        if let Some(id) = self.countdown.borrow_mut().take() {
            id.remove();
        }
    }

    fn show_top_centre(&self) {
        let area = monitors().first().copied();
        self.window.show_all();
        if let Some(area) = area {
            let (width, _) = self.window.size();
            self.window.move_(area.x + (area.width - width) / 2, area.y + area.height / 10);
        }
        if let Some(gdk_window) = self.window.window() {
            gdk_window.raise();
        }
    }
}
