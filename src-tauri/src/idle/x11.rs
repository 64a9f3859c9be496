//! X11: the MIT-SCREEN-SAVER extension's idle counter, read through `user-idle`.
//!
//! `user-idle` opens `$DISPLAY` with Xlib on every reading and does not check that it
//! opened (it crashes without a display), so the display and the extension are checked
//! here first with `x11rb`, which fails cleanly.

use std::time::Duration;

use x11rb::connection::RequestConnection;
use x11rb::protocol::screensaver;

use super::{IdleSource, IdleUnavailable};

#[derive(Debug)]
pub struct X11Idle {
    /// Kept open: a display that goes away (X server restart) breaks this connection,
    /// and then no more readings are taken through Xlib.
    probe: x11rb::rust_connection::RustConnection,
}

impl X11Idle {
    pub fn open() -> Result<Self, IdleUnavailable> {
        let display = std::env::var("DISPLAY").unwrap_or_default();
        if display.is_empty() {
            return Err(IdleUnavailable("no X display (DISPLAY is not set)".into()));
        }
        let (probe, _) = x11rb::connect(Some(&display))
            .map_err(|e| IdleUnavailable(format!("the X display {display} cannot be opened: {e}")))?;
        let present = probe
            .extension_information(screensaver::X11_EXTENSION_NAME)
            .map_err(|e| IdleUnavailable(format!("the X server did not answer: {e}")))?
            .is_some();
        if !present {
            return Err(IdleUnavailable(format!(
                "the X server on {display} has no MIT-SCREEN-SAVER extension, so input idle time is unknown"
            )));
        }
        Ok(Self { probe })
    }
}

impl IdleSource for X11Idle {
    fn idle(&mut self) -> Result<Duration, IdleUnavailable> {
        // A cheap round trip tells whether the display is still there before Xlib opens it.
        x11rb::connection::Connection::flush(&self.probe)
            .ok()
            .and_then(|()| x11rb::protocol::xproto::get_input_focus(&self.probe).ok())
            .and_then(|cookie| cookie.reply().ok())
            .ok_or_else(|| IdleUnavailable("the X display went away".into()))?;
        user_idle::UserIdle::get_time()
            .map(|t| t.duration())
            .map_err(|e| IdleUnavailable(format!("the X idle counter could not be read: {e}")))
    }
}
