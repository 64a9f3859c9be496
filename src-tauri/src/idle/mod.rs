//! Where the guard learns how long the user has been idle. One implementation per
//! platform backend; the guard only sees the trait, so a missing backend is an explicit
//! "unavailable", never a silent "always active".

use std::time::Duration;

use thiserror::Error;

#[cfg(target_os = "linux")]
mod x11;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct IdleUnavailable(pub String);

pub trait IdleSource: Send {
    /// Time since the last keyboard, pointer or touch input in this session.
    fn idle(&mut self) -> Result<Duration, IdleUnavailable>;
}

/// The best backend for this session, or why there is none.
pub fn detect() -> Result<Box<dyn IdleSource>, IdleUnavailable> {
    #[cfg(target_os = "linux")]
    {
        if std::env::var_os("WAYLAND_DISPLAY").is_some()
            && std::env::var_os("WARDLOCK_TRUST_XWAYLAND").is_none()
        {
            // XWayland's counter only sees input sent to X clients: a nurse typing in a
            // Wayland-native chart would be "idle". Better say so than lock on her.
            return Err(IdleUnavailable(
                "this is a Wayland session, whose input idle time Wardlock cannot read yet; log in to an X11 (Xorg) session"
                    .into(),
            ));
        }
        x11::X11Idle::open().map(|source| Box::new(source) as Box<dyn IdleSource>)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(Box::new(UserIdle))
    }
}

/// `user-idle`'s own backends (Windows, macOS).
#[cfg(not(target_os = "linux"))]
struct UserIdle;

#[cfg(not(target_os = "linux"))]
impl IdleSource for UserIdle {
    fn idle(&mut self) -> Result<Duration, IdleUnavailable> {
        user_idle::UserIdle::get_time()
            .map(|t| t.duration())
            .map_err(|e| IdleUnavailable(format!("the idle time could not be read: {e}")))
    }
}
