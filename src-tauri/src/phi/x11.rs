//! PHI windows on X11: found through the window manager's `_NET_CLIENT_LIST` (the
//! root's children without one), hidden by asking the window manager to iconify them
//! (ICCCM `WM_CHANGE_STATE`; unmapped directly where no window manager answers), closed
//! with `WM_DELETE_WINDOW`, and covered during the countdown by plain X windows whose
//! background the server paints (no compositor, no event loop).

use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    Atom, AtomEnum, ChangeWindowAttributesAux, ClientMessageEvent, ConnectionExt, CreateGCAux,
    CreateWindowAux, EventMask, MapState, PropMode, Window, WindowClass,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

use wardlock_core::policy::WindowIdentity;

use super::{AppWindow, PhiWindows};

/// How long the window manager has to take a window off the screen or back.
const WM_ANSWER: Duration = Duration::from_millis(1500);
/// The panel's colour: the lock screen's curtain (`--bg` in ui/src/style.css).
const PANEL_PIXEL: u32 = 0x000c_1e26;
const PANEL_TEXT_PIXEL: u32 = 0x00f2_f6f8;
const PANEL_TEXT: &str = "Hidden for privacy - move the mouse to continue";

x11rb::atom_manager! {
    Atoms: AtomsCookie {
        _NET_CLIENT_LIST,
        _NET_ACTIVE_WINDOW,
        _NET_WM_PID,
        _NET_WM_NAME,
        WM_CHANGE_STATE,
        WM_PROTOCOLS,
        WM_DELETE_WINDOW,
        UTF8_STRING,
    }
}

pub struct X11Windows {
    conn: RustConnection,
    root: Window,
    depth: u8,
    visual: u32,
    atoms: Atoms,
    panels: Vec<Window>,
}

impl X11Windows {
    pub fn connect() -> Result<Self, String> {
        let (conn, screen) = x11rb::connect(None).map_err(|e| format!("cannot open the X display: {e}"))?;
        let s = &conn.setup().roots[screen];
        let (root, depth, visual) = (s.root, s.root_depth, s.root_visual);
        let atoms = Atoms::new(&conn).map_err(x)?.reply().map_err(x)?;
        Ok(Self { conn, root, depth, visual, atoms, panels: Vec::new() })
    }

    fn property(&self, window: Window, property: Atom, kind: impl Into<Atom>) -> Option<Vec<u8>> {
        let reply = self.conn.get_property(false, window, property, kind, 0, 4096).ok()?.reply().ok()?;
        (reply.type_ != u32::from(AtomEnum::NONE)).then_some(reply.value)
    }

    fn cardinals(&self, window: Window, property: Atom, kind: impl Into<Atom>) -> Vec<u32> {
        let Some(reply) = self
            .conn
            .get_property(false, window, property, kind, 0, 16_384)
            .ok()
            .and_then(|c| c.reply().ok())
        else {
            return Vec::new();
        };
        reply.value32().map(Iterator::collect).unwrap_or_default()
    }

    /// The client windows: `_NET_CLIENT_LIST`, or without a window manager the root's
    /// children that carry a `WM_CLASS`.
    fn clients(&self) -> Vec<Window> {
        let listed = self.cardinals(self.root, self.atoms._NET_CLIENT_LIST, AtomEnum::WINDOW);
        if !listed.is_empty() {
            return listed;
        }
        let Some(tree) = self.conn.query_tree(self.root).ok().and_then(|c| c.reply().ok()) else {
            return Vec::new();
        };
        tree.children
            .into_iter()
            .filter(|&w| self.property(w, AtomEnum::WM_CLASS.into(), AtomEnum::STRING).is_some())
            .collect()
    }

    fn identity(&self, window: Window, pid: Option<u32>) -> Option<WindowIdentity> {
        let raw = self.property(window, AtomEnum::WM_CLASS.into(), AtomEnum::STRING)?;
        let mut parts = raw.split(|&b| b == 0).map(|p| String::from_utf8_lossy(p).into_owned());
        let instance = parts.next().unwrap_or_default();
        let class = parts.next().unwrap_or_default();
        let exe = pid
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
            .map(|p| p.to_string_lossy().into_owned());
        Some(WindowIdentity { instance, class, exe })
    }

    fn viewable(&self, window: Window) -> Option<bool> {
        let attrs = self.conn.get_window_attributes(window).ok()?.reply().ok()?;
        Some(attrs.map_state == MapState::VIEWABLE)
    }

    fn wait_viewable(&self, window: Window, want: bool) -> bool {
        let deadline = Instant::now() + WM_ANSWER;
        loop {
            match self.viewable(window) {
                Some(v) if v == want => return true,
                None => return !want,
                Some(_) if Instant::now() >= deadline => return false,
                Some(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn send_to_root(&self, window: Window, kind: Atom, data: [u32; 5]) -> Result<(), String> {
        let event = ClientMessageEvent::new(32, window, kind, data);
        let mask = EventMask::SUBSTRUCTURE_REDIRECT | EventMask::SUBSTRUCTURE_NOTIFY;
        self.conn.send_event(false, self.root, mask, event).map_err(x)?;
        self.conn.flush().map_err(x)
    }

    /// Where the window is on screen with its window manager's frame: the title bar may
    /// name the patient too.
    fn frame_area(&self, window: Window) -> Option<(i16, i16, u16, u16)> {
        let mut top = window;
        loop {
            let tree = self.conn.query_tree(top).ok()?.reply().ok()?;
            if tree.parent == self.root || tree.parent == x11rb::NONE {
                break;
            }
            top = tree.parent;
        }
        let geometry = self.conn.get_geometry(top).ok()?.reply().ok()?;
        let border = geometry.border_width;
        Some((geometry.x, geometry.y, geometry.width + 2 * border, geometry.height + 2 * border))
    }

    fn panel(&self, (px, py, width, height): (i16, i16, u16, u16)) -> Result<Window, String> {
        let c = &self.conn;
        let panel = c.generate_id().map_err(x)?;
        // The text goes into the background pixmap: the server repaints it on every
        // exposure without this connection reading a single event.
        let pixmap = c.generate_id().map_err(x)?;
        c.create_pixmap(self.depth, pixmap, self.root, width.max(1), height.max(1)).map_err(x)?;
        let gc = c.generate_id().map_err(x)?;
        c.create_gc(gc, pixmap, &CreateGCAux::new().foreground(PANEL_PIXEL)).map_err(x)?;
        c.poly_fill_rectangle(
            pixmap,
            gc,
            &[x11rb::protocol::xproto::Rectangle { x: 0, y: 0, width, height }],
        )
        .map_err(x)?;
        let font = c.generate_id().map_err(x)?;
        if c.open_font(font, b"fixed").map_err(x)?.check().is_ok() {
            c.change_gc(
                gc,
                &x11rb::protocol::xproto::ChangeGCAux::new()
                    .foreground(PANEL_TEXT_PIXEL)
                    .background(PANEL_PIXEL)
                    .font(font),
            )
            .map_err(x)?;
            let text_x = (i32::from(width) / 2 - 6 * PANEL_TEXT.len() as i32 / 2).max(8) as i16;
            c.image_text8(pixmap, gc, text_x, (height / 2) as i16, PANEL_TEXT.as_bytes()).map_err(x)?;
            c.close_font(font).map_err(x)?;
        }
        c.free_gc(gc).map_err(x)?;
        let aux = CreateWindowAux::new().override_redirect(1).background_pixmap(pixmap);
        c.create_window(
            self.depth,
            panel,
            self.root,
            px,
            py,
            width,
            height,
            0,
            WindowClass::INPUT_OUTPUT,
            self.visual,
            &aux,
        )
        .map_err(x)?;
        c.free_pixmap(pixmap).map_err(x)?;
        c.change_property8(
            PropMode::REPLACE,
            panel,
            AtomEnum::WM_NAME,
            AtomEnum::STRING,
            b"Wardlock privacy panel",
        )
        .map_err(x)?;
        c.change_property8(
            PropMode::REPLACE,
            panel,
            self.atoms._NET_WM_NAME,
            self.atoms.UTF8_STRING,
            b"Wardlock privacy panel",
        )
        .map_err(x)?;
        c.map_window(panel).map_err(x)?;
        Ok(panel)
    }
}

fn x(e: impl std::fmt::Display) -> String {
    format!("X11: {e}")
}

impl PhiWindows for X11Windows {
    fn windows(&mut self) -> Vec<AppWindow> {
        self.clients()
            .into_iter()
            .filter_map(|id| {
                let pid = self.cardinals(id, self.atoms._NET_WM_PID, AtomEnum::CARDINAL).first().copied();
                let identity = self.identity(id, pid)?;
                let on_screen = self.viewable(id)?;
                Some(AppWindow { id, identity, pid, on_screen })
            })
            .collect()
    }

    fn hide(&mut self, id: u32) -> Result<(), String> {
        const ICONIC_STATE: u32 = 3;
        self.send_to_root(id, self.atoms.WM_CHANGE_STATE, [ICONIC_STATE, 0, 0, 0, 0])?;
        if self.wait_viewable(id, false) {
            return Ok(());
        }
        // No window manager took it (none runs, or it refuses): unmap it ourselves.
        tracing::info!(
            event = "phi_unmapped_directly",
            "the window manager did not iconify window {id:#x}; unmapping it"
        );
        self.conn.unmap_window(id).map_err(x)?;
        self.conn.flush().map_err(x)?;
        if self.wait_viewable(id, false) {
            Ok(())
        } else {
            Err("it is still on screen after the window manager and an unmap were asked to hide it".into())
        }
    }

    fn restore(&mut self, id: u32) -> Result<(), String> {
        // ICCCM: mapping an iconic window asks for the normal state.
        self.conn.map_window(id).map_err(x)?;
        self.conn.flush().map_err(x)?;
        if self.wait_viewable(id, true) {
            return Ok(());
        }
        // EWMH: a pager's request to activate it (window managers de-iconify on it).
        self.send_to_root(id, self.atoms._NET_ACTIVE_WINDOW, [2, 0, 0, 0, 0])?;
        if self.wait_viewable(id, true) {
            Ok(())
        } else {
            Err("it did not come back on screen".into())
        }
    }

    fn ask_to_close(&mut self, id: u32) -> Result<bool, String> {
        let protocols = self.cardinals(id, self.atoms.WM_PROTOCOLS, AtomEnum::ATOM);
        if !protocols.contains(&self.atoms.WM_DELETE_WINDOW) {
            return Ok(false);
        }
        let event = ClientMessageEvent::new(
            32,
            id,
            self.atoms.WM_PROTOCOLS,
            [self.atoms.WM_DELETE_WINDOW, 0, 0, 0, 0],
        );
        self.conn.send_event(false, id, EventMask::NO_EVENT, event).map_err(x)?;
        self.conn.flush().map_err(x)?;
        Ok(true)
    }

    fn exists(&mut self, id: u32) -> bool {
        // The X server's word: a window unmapped without a window manager, or withdrawn
        // by one, still exists until its application destroys it.
        self.viewable(id).is_some()
    }

    fn focused(&mut self) -> Option<WindowIdentity> {
        let active = *self.cardinals(self.root, self.atoms._NET_ACTIVE_WINDOW, AtomEnum::WINDOW).first()?;
        let pid = self.cardinals(active, self.atoms._NET_WM_PID, AtomEnum::CARDINAL).first().copied();
        self.identity(active, pid)
    }

    fn cover(&mut self, windows: &[u32]) {
        self.uncover();
        for &id in windows {
            let Some(area) = self.frame_area(id) else { continue };
            match self.panel(area) {
                Ok(panel) => self.panels.push(panel),
                Err(e) => {
                    tracing::warn!(event = "privacy_panel_failed", "a privacy panel could not be made: {e}")
                }
            }
        }
        let _ = self.conn.flush();
    }

    fn uncover(&mut self) {
        for panel in self.panels.drain(..) {
            let _ = self.conn.destroy_window(panel);
        }
        let _ = self.conn.flush();
    }
}

/// Calls `changed` whenever a window appears, goes, is shown or hidden, or the window
/// manager's client list changes; sleeps in its own X connection in between.
pub fn watch(changed: impl Fn() + Send + 'static) -> Result<(), String> {
    let (conn, screen) = x11rb::connect(None).map_err(|e| format!("cannot open the X display: {e}"))?;
    let root = conn.setup().roots[screen].root;
    let atoms = Atoms::new(&conn).map_err(x)?.reply().map_err(x)?;
    let mask = EventMask::SUBSTRUCTURE_NOTIFY | EventMask::PROPERTY_CHANGE;
    conn.change_window_attributes(root, &ChangeWindowAttributesAux::new().event_mask(mask)).map_err(x)?;
    conn.flush().map_err(x)?;
    std::thread::Builder::new()
        .name("wardlock-phi-watch".into())
        .spawn(move || loop {
            let event = match conn.wait_for_event() {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(event = "phi_watch_lost", "the PHI window watch lost the display: {e}");
                    return;
                }
            };
            let relevant = match event {
                Event::MapNotify(_) | Event::UnmapNotify(_) | Event::DestroyNotify(_) => true,
                Event::PropertyNotify(p) => {
                    p.atom == atoms._NET_CLIENT_LIST || p.atom == atoms._NET_ACTIVE_WINDOW
                }
                _ => false,
            };
            if relevant {
                changed();
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}
