//! Monitors as the X server has them (RandR 1.5 monitors), and a watch that reports every
//! change of the layout: an output plugged in or out, a mode changed, the root resized.
//! GDK learns of these too, but later and not always (a new output is ignored until some
//! client queries the screen); the curtains follow the server itself.

use x11rb::connection::{Connection as _, RequestConnection as _};
use x11rb::protocol::randr::{self, ConnectionExt as _, NotifyMask};
use x11rb::protocol::xproto::{ChangeWindowAttributesAux, ConnectionExt as _, EventMask};
use x11rb::rust_connection::RustConnection;

/// One monitor's rectangle in X (physical) pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
}

/// The monitors, primary first, with duplicates (mirrored outputs) once. Without RandR
/// monitors, the whole root window is one, at its size now (the connection's setup keeps
/// the size it had when the guard connected, which a resize leaves behind).
pub fn monitors(conn: &RustConnection, screen: usize) -> Vec<Area> {
    let root = &conn.setup().roots[screen];
    let (width, height) = conn
        .get_geometry(root.root)
        .ok()
        .and_then(|cookie| cookie.reply().ok())
        .map_or((root.width_in_pixels, root.height_in_pixels), |g| (g.width, g.height));
    let whole = Area { x: 0, y: 0, width: width.into(), height: height.into() };
    let listed = conn
        .extension_information(randr::X11_EXTENSION_NAME)
        .ok()
        .flatten()
        .and_then(|_| conn.randr_get_monitors(root.root, true).ok())
        .and_then(|cookie| cookie.reply().ok())
        .map(|reply| reply.monitors)
        .unwrap_or_default();
    let mut areas: Vec<(bool, Area)> = listed
        .iter()
        .filter(|m| m.width > 0 && m.height > 0)
        .map(|m| {
            (m.primary, Area { x: m.x.into(), y: m.y.into(), width: m.width.into(), height: m.height.into() })
        })
        .collect();
    // Primary first; `sort_by_key` is stable, so the rest keep the server's order.
    areas.sort_by_key(|(primary, _)| !primary);
    let mut out: Vec<Area> = Vec::new();
    for (_, area) in areas {
        if !out.contains(&area) {
            out.push(area);
        }
    }
    if out.is_empty() {
        out.push(whole);
    }
    out
}

/// Calls `changed` on its own thread after every RandR screen, CRTC or output change and
/// every resize of the root window. The thread sleeps in the X connection meanwhile.
pub fn watch(display: &str, changed: impl Fn() + Send + 'static) -> Result<(), String> {
    let (conn, screen) =
        x11rb::connect(Some(display)).map_err(|e| format!("cannot open the X display: {e}"))?;
    let root = conn.setup().roots[screen].root;
    conn.randr_query_version(1, 5)
        .map_err(|e| e.to_string())?
        .reply()
        .map_err(|e| format!("the X server has no RandR: {e}"))?;
    conn.randr_select_input(
        root,
        NotifyMask::SCREEN_CHANGE | NotifyMask::CRTC_CHANGE | NotifyMask::OUTPUT_CHANGE,
    )
    .map_err(|e| e.to_string())?;
    conn.change_window_attributes(
        root,
        &ChangeWindowAttributesAux::new().event_mask(EventMask::STRUCTURE_NOTIFY),
    )
    .map_err(|e| e.to_string())?;
    conn.flush().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("wardlock-randr".into())
        .spawn(move || {
            use x11rb::protocol::Event;
            while let Ok(event) = conn.wait_for_event() {
                let relevant = matches!(
                    event,
                    Event::RandrScreenChangeNotify(_) | Event::RandrNotify(_) | Event::ConfigureNotify(_)
                );
                if relevant {
                    changed();
                }
            }
            tracing::warn!(event = "monitor_watch_lost", "the monitor watch lost the X display");
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}
