//! The OS sessions the service protects when no trustworthy guard holds one: find a
//! guard's session, ask for it to be locked, see whether it really is (`LockedHint`),
//! and end it. One trait, one implementation per platform.
//!
//! A call that returned is never taken as a result: logind's `Lock` only signals
//! whatever screen locker listens in the session, which may be none.

use std::future::Future;
use std::pin::Pin;

pub type OsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// A graphical session logind reports as active (in the foreground of its seat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSession {
    pub path: String,
    pub uid: u32,
    pub account: String,
}

pub trait OsSessions: Send + Sync + std::fmt::Debug {
    /// The active graphical (X11, Wayland) user sessions: each should have a guard.
    fn active_sessions(&self) -> OsFuture<'_, Vec<ActiveSession>>;
    /// The OS session of process `pid`, looked up while the guard is alive: once it is
    /// gone, its session can no longer be found by its pid.
    fn session_of(&self, pid: u32) -> OsFuture<'_, String>;
    /// Asks for `session` to be locked (every session when it is unknown). Answers what
    /// was asked of whom; it says nothing about whether anything locked.
    fn request_lock(&self, session: Option<String>) -> OsFuture<'_, String>;
    /// Whether a screen locker says `session` is locked now.
    fn locked_hint(&self, session: String) -> OsFuture<'_, bool>;
    /// Ends `session` with all its processes (every session of `uid` when the session is
    /// unknown). Answers what was ended.
    fn terminate(&self, session: Option<String>, uid: u32) -> OsFuture<'_, String>;
}

/// The platform's sessions: systemd-logind.
pub fn platform() -> Box<dyn OsSessions> {
    Box::new(logind::Logind::default())
}

pub mod logind {
    //! systemd-logind over the system D-Bus (`$DBUS_SYSTEM_BUS_ADDRESS` when set, which
    //! is how the tests point it at a stand-in login1 on a private bus). polkit decides:
    //! `lock-sessions` for the lock, `manage` for ending a session
    //! (installers/linux/polkit-wardlock.rules).

    use zbus::proxy::CacheProperties;
    use zbus::zvariant::OwnedObjectPath;

    use super::{ActiveSession, OsFuture, OsSessions};

    #[zbus::proxy(
        interface = "org.freedesktop.login1.Manager",
        default_service = "org.freedesktop.login1",
        default_path = "/org/freedesktop/login1"
    )]
    trait Manager {
        #[zbus(name = "GetSessionByPID")]
        fn get_session_by_pid(&self, pid: u32) -> zbus::Result<OwnedObjectPath>;
        fn lock_sessions(&self) -> zbus::Result<()>;
        fn terminate_user(&self, uid: u32) -> zbus::Result<()>;
        /// (id, uid, user, seat, object path) of every session.
        #[allow(clippy::type_complexity)]
        fn list_sessions(&self) -> zbus::Result<Vec<(String, u32, String, String, OwnedObjectPath)>>;
    }

    #[zbus::proxy(interface = "org.freedesktop.login1.Session", default_service = "org.freedesktop.login1")]
    trait Session {
        fn lock(&self) -> zbus::Result<()>;
        fn terminate(&self) -> zbus::Result<()>;
        #[zbus(property)]
        fn locked_hint(&self) -> zbus::Result<bool>;
        #[zbus(property)]
        fn active(&self) -> zbus::Result<bool>;
        #[zbus(property)]
        fn class(&self) -> zbus::Result<String>;
        #[zbus(property, name = "Type")]
        fn kind(&self) -> zbus::Result<String>;
    }

    /// logind on one system-bus connection, made at first use and made again after a
    /// call fails on it (the bus restarted, the connection broke): not one per call.
    #[derive(Debug, Default)]
    pub struct Logind {
        bus: tokio::sync::Mutex<Option<zbus::Connection>>,
    }

    fn logind(e: zbus::Error) -> String {
        format!("logind: {e}")
    }

    async fn session(bus: &zbus::Connection, path: &str) -> zbus::Result<SessionProxy<'static>> {
        // Read LockedHint afresh every time: a cached value would be whatever it was.
        SessionProxy::builder(bus).path(path.to_owned())?.cache_properties(CacheProperties::No).build().await
    }

    impl Logind {
        async fn bus(&self) -> Result<(zbus::Connection, bool), String> {
            let mut cached = self.bus.lock().await;
            if let Some(bus) = cached.as_ref() {
                return Ok((bus.clone(), true));
            }
            let bus = zbus::Connection::system().await.map_err(logind)?;
            *cached = Some(bus.clone());
            Ok((bus, false))
        }

        /// `call` on the cached connection. When it fails there, the connection is
        /// dropped and the call made once more on a new one (the bus may have restarted
        /// under it); a failure on a new connection is the answer.
        async fn with_bus<T, F, Fut>(&self, call: F) -> Result<T, String>
        where
            F: Fn(zbus::Connection) -> Fut,
            Fut: std::future::Future<Output = zbus::Result<T>>,
        {
            let (bus, cached) = self.bus().await?;
            match call(bus).await {
                Ok(answer) => Ok(answer),
                Err(e) => {
                    *self.bus.lock().await = None;
                    if !cached {
                        return Err(logind(e));
                    }
                    let (bus, _) = self.bus().await?;
                    let retried = call(bus).await;
                    if retried.is_err() {
                        *self.bus.lock().await = None;
                    }
                    retried.map_err(logind)
                }
            }
        }
    }

    impl OsSessions for Logind {
        fn active_sessions(&self) -> OsFuture<'_, Vec<ActiveSession>> {
            Box::pin(async move {
                self.with_bus(|bus| async move {
                    let listed = ManagerProxy::new(&bus).await?.list_sessions().await?;
                    let mut active = Vec::new();
                    for (_id, uid, account, _seat, path) in listed {
                        let Ok(session) = session(&bus, path.as_str()).await else { continue };
                        let graphical =
                            matches!(session.kind().await.as_deref(), Ok("x11" | "wayland" | "mir"));
                        let user = session.class().await.as_deref() == Ok("user");
                        if graphical && user && session.active().await == Ok(true) {
                            active.push(ActiveSession { path: path.as_str().to_owned(), uid, account });
                        }
                    }
                    Ok(active)
                })
                .await
            })
        }

        fn session_of(&self, pid: u32) -> OsFuture<'_, String> {
            Box::pin(async move {
                self.with_bus(|bus| async move {
                    let path = ManagerProxy::new(&bus).await?.get_session_by_pid(pid).await?;
                    Ok(path.as_str().to_owned())
                })
                .await
            })
        }

        fn request_lock(&self, target: Option<String>) -> OsFuture<'_, String> {
            Box::pin(async move {
                self.with_bus(|bus| {
                    let target = target.clone();
                    async move {
                        match target {
                            Some(path) => {
                                session(&bus, &path).await?.lock().await?;
                                Ok(format!("session {path}"))
                            }
                            None => {
                                // Not knowing which session is no reason to lock none.
                                ManagerProxy::new(&bus).await?.lock_sessions().await?;
                                Ok("all sessions".to_owned())
                            }
                        }
                    }
                })
                .await
            })
        }

        fn locked_hint(&self, path: String) -> OsFuture<'_, bool> {
            Box::pin(async move {
                self.with_bus(|bus| {
                    let path = path.clone();
                    async move { session(&bus, &path).await?.locked_hint().await }
                })
                .await
            })
        }

        fn terminate(&self, target: Option<String>, uid: u32) -> OsFuture<'_, String> {
            Box::pin(async move {
                self.with_bus(|bus| {
                    let target = target.clone();
                    async move {
                        match target {
                            Some(path) => {
                                session(&bus, &path).await?.terminate().await?;
                                Ok(format!("session {path}"))
                            }
                            None => {
                                ManagerProxy::new(&bus).await?.terminate_user(uid).await?;
                                Ok(format!("every session of uid {uid}"))
                            }
                        }
                    }
                })
                .await
            })
        }
    }
}
