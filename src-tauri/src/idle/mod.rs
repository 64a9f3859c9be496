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

/// How long ago input came, from real devices and from synthetic ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleReading {
    /// Since the last input of a real keyboard, pointer or touch screen.
    pub real: Duration,
    /// Since the last synthetic input (XTEST: `xdotool`, jigglers), and its device.
    pub synthetic: Option<(Duration, String)>,
}

impl IdleReading {
    /// The idle time that counts: synthetic input too only when policy says so.
    pub fn counted(&self, synthetic_keeps_awake: bool) -> Duration {
        match &self.synthetic {
            Some((since, _)) if synthetic_keeps_awake => self.real.min(*since),
            _ => self.real,
        }
    }

    /// The synthetic device that was ignored: its input came after the last real input.
    pub fn ignored_synthetic(&self, synthetic_keeps_awake: bool) -> Option<&str> {
        match &self.synthetic {
            Some((since, device)) if !synthetic_keeps_awake && *since < self.real => Some(device),
            _ => None,
        }
    }
}

pub trait IdleSource: Send {
    /// Time since the last input in this session.
    fn idle(&mut self) -> Result<IdleReading, IdleUnavailable>;
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
    fn idle(&mut self) -> Result<IdleReading, IdleUnavailable> {
        user_idle::UserIdle::get_time()
            .map(|t| IdleReading { real: t.duration(), synthetic: None })
            .map_err(|e| IdleUnavailable(format!("the idle time could not be read: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_input_counts_only_when_policy_says_so() {
        let s = Duration::from_secs;
        let jiggled =
            IdleReading { real: s(40), synthetic: Some((s(2), "Virtual core XTEST pointer".into())) };
        assert_eq!(jiggled.counted(false), s(40));
        assert_eq!(jiggled.counted(true), s(2));
        assert_eq!(jiggled.ignored_synthetic(false), Some("Virtual core XTEST pointer"));
        assert_eq!(jiggled.ignored_synthetic(true), None);
        let typed_since =
            IdleReading { real: s(1), synthetic: Some((s(30), "Virtual core XTEST keyboard".into())) };
        assert_eq!(typed_since.counted(false), s(1));
        assert_eq!(typed_since.ignored_synthetic(false), None, "real input came after it");
    }
}
