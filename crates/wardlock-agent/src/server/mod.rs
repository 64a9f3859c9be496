//! The local socket: accepts connections, checks who they come from, and gives each its
//! own task, so a slow or silent client holds up nobody else.

mod connection;
pub mod frame;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};

use wardlock_core::protocol::local::{ErrorCode, Response};

use crate::service::Service;

/// Connections served at once; more are answered `busy` and closed. A workstation has
/// a guard per session and the odd status query; this bounds what a flood can take.
/// (A guard keeps its connection for the whole session, so a flood cannot push it out.)
pub const MAX_CONNECTIONS: usize = 256;
/// Every write to a client must finish in this time, or the client is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another wardlockd is already listening on {0}")]
    InUse(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Binds the socket, replacing a stale one left by a crash but never a live one. Any
/// local account may connect at the file level; the peer check decides (policy).
pub async fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let io = |source| BindError::Io { path: path.display().to_string(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !tokio::fs::try_exists(dir).await.map_err(io)? {
            tokio::fs::create_dir_all(dir).await.map_err(io)?;
            tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).await.map_err(io)?;
        }
    }
    if tokio::fs::try_exists(path).await.map_err(io)? {
        if UnixStream::connect(path).await.is_ok() {
            return Err(BindError::InUse(path.display().to_string()));
        }
        tokio::fs::remove_file(path).await.map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).await.map_err(io)?;
    Ok(listener)
}

/// Serves until `shutdown` turns true.
pub async fn serve(service: Arc<Service>, listener: UnixListener, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(event = "accept_failed", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream, ErrorCode::Busy, "too many connections; try again shortly"));
            continue;
        };
        let service = service.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            connection::run(service, stream, shutdown).await;
            drop(slot);
        });
    }
}

async fn refuse(mut stream: UnixStream, code: ErrorCode, message: &str) {
    let line = connection::encode(&Response::Error { code, message: message.to_owned() });
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&line)).await;
}
