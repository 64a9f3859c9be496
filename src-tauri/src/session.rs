//! The OS session's own events, from logind on the system bus: lock when the machine
//! resumes from suspend and when the session is locked (`loginctl lock-session`, the
//! desktop's screen locker). Without logind the guard says so once and goes on.

use tokio::sync::mpsc;
use zbus::proxy;

use wardlock_core::lock::LockReason;

use crate::guard::Command;

#[proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Manager {
    #[zbus(name = "GetSessionByPID")]
    fn get_session_by_pid(&self, pid: u32) -> zbus::Result<zbus::zvariant::OwnedObjectPath>;
    #[zbus(signal)]
    fn prepare_for_sleep(&self, start: bool) -> zbus::Result<()>;
}

#[proxy(interface = "org.freedesktop.login1.Session", default_service = "org.freedesktop.login1")]
trait Session {
    #[zbus(signal)]
    fn lock(&self) -> zbus::Result<()>;
}

pub async fn watch(guard: mpsc::UnboundedSender<Command>) {
    if let Err(e) = watch_logind(&guard).await {
        tracing::warn!(
            event = "session_events_unavailable",
            "session lock and resume events are not available ({e}); idle locking still works"
        );
    }
}

async fn watch_logind(guard: &mpsc::UnboundedSender<Command>) -> zbus::Result<()> {
    use futures_util::StreamExt;
    let bus = zbus::Connection::system().await?;
    let manager = ManagerProxy::new(&bus).await?;
    let mut sleeps = manager.receive_prepare_for_sleep().await?;
    let session_path = manager.get_session_by_pid(std::process::id()).await.ok();
    let mut locks = match session_path {
        Some(path) => Some(SessionProxy::builder(&bus).path(path)?.build().await?.receive_lock().await?),
        None => None,
    };
    tracing::info!(
        event = "following_logind",
        session_lock = locks.is_some(),
        "following logind: lock on resume{}",
        if locks.is_some() { " and when the session is locked" } else { " (this process has no session)" }
    );
    loop {
        tokio::select! {
            signal = sleeps.next() => {
                let Some(signal) = signal else { return Ok(()) };
                if let Ok(args) = signal.args() {
                    if !args.start {
                        let _ = guard.send(Command::Resumed);
                    }
                }
            }
            signal = async { match locks.as_mut() { Some(s) => s.next().await, None => std::future::pending().await } } => {
                if signal.is_none() { locks = None; continue; }
                let _ = guard.send(Command::LockNow(LockReason::OsSession));
            }
        }
    }
}
