//! Locking the OS session from the service, when the guard is lost or cannot hold its
//! lock: the OS lock screen is the fallback curtain. One trait, one implementation per
//! platform.

use std::future::Future;
use std::pin::Pin;

pub type LockFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

pub trait OsLocker: Send + Sync + std::fmt::Debug {
    /// The OS session of process `pid`, looked up while the guard is alive: once it is
    /// gone, its session can no longer be found by its pid.
    fn session_of(&self, pid: u32) -> LockFuture<'_>;
    /// Locks `session` (every session when it is unknown). Answers what was locked, or
    /// why it could not be.
    fn lock(&self, session: Option<String>) -> LockFuture<'_>;
}

/// The platform's locker.
pub fn platform() -> Box<dyn OsLocker> {
    #[cfg(target_os = "linux")]
    {
        Box::new(logind::Logind)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Box::new(Unsupported)
    }
}

#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
struct Unsupported;

#[cfg(not(target_os = "linux"))]
impl OsLocker for Unsupported {
    fn session_of(&self, _pid: u32) -> LockFuture<'_> {
        Box::pin(async { Err("OS sessions are not known on this platform yet".to_owned()) })
    }
    fn lock(&self, _session: Option<String>) -> LockFuture<'_> {
        Box::pin(async { Err("locking the OS session is not implemented on this platform yet".to_owned()) })
    }
}

#[cfg(target_os = "linux")]
pub mod logind {
    //! systemd-logind over the system D-Bus (`$DBUS_SYSTEM_BUS_ADDRESS` when set, which
    //! is how the tests point it at a stand-in login1 on a private bus).

    use zbus::zvariant::OwnedObjectPath;

    use super::{LockFuture, OsLocker};

    #[zbus::proxy(
        interface = "org.freedesktop.login1.Manager",
        default_service = "org.freedesktop.login1",
        default_path = "/org/freedesktop/login1"
    )]
    trait Manager {
        #[zbus(name = "GetSessionByPID")]
        fn get_session_by_pid(&self, pid: u32) -> zbus::Result<OwnedObjectPath>;
        fn lock_sessions(&self) -> zbus::Result<()>;
    }

    #[zbus::proxy(interface = "org.freedesktop.login1.Session", default_service = "org.freedesktop.login1")]
    trait Session {
        fn lock(&self) -> zbus::Result<()>;
    }

    #[derive(Debug)]
    pub struct Logind;

    impl OsLocker for Logind {
        fn session_of(&self, pid: u32) -> LockFuture<'_> {
            Box::pin(async move { session_of(pid).await.map_err(|e| format!("logind: {e}")) })
        }
        fn lock(&self, session: Option<String>) -> LockFuture<'_> {
            Box::pin(async move { lock(session).await.map_err(|e| format!("logind: {e}")) })
        }
    }

    async fn session_of(pid: u32) -> zbus::Result<String> {
        let bus = zbus::Connection::system().await?;
        let path = ManagerProxy::new(&bus).await?.get_session_by_pid(pid).await?;
        Ok(path.as_str().to_owned())
    }

    async fn lock(session: Option<String>) -> zbus::Result<String> {
        let bus = zbus::Connection::system().await?;
        match session {
            Some(path) => {
                SessionProxy::builder(&bus).path(path.clone())?.build().await?.lock().await?;
                Ok(format!("session {path}"))
            }
            None => {
                // Not knowing which session is no reason to lock none.
                ManagerProxy::new(&bus).await?.lock_sessions().await?;
                Ok("all sessions".to_owned())
            }
        }
    }
}
