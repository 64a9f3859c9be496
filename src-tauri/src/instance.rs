//! One guard per session. The first guard listens on a socket in the user's runtime
//! directory; a second `wardlock` hands its request (`--lock`, or just "I was started")
//! to the first and exits. Anyone in the session may send "lock" or "enroll": both are
//! harmless (enrolling still needs an administrator's credentials, checked by `wardlockd`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use anyhow::{Context, Result};

pub enum Instance {
    First(UnixListener),
    /// Another guard runs; it got the message.
    Forwarded,
}

pub fn socket_path() -> PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("wardlock-{}", nix::unistd::getuid())));
    dir.join("wardlock-guard.sock")
}

pub fn claim(message: &str) -> Result<Instance> {
    let path = socket_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if let Ok(mut stream) = UnixStream::connect(&path) {
        writeln!(stream, "{message}").context("cannot reach the running guard")?;
        let mut answer = String::new();
        let _ = BufReader::new(stream).read_line(&mut answer);
        return Ok(Instance::Forwarded);
    }
    // Nobody answers: a socket file left by a guard that was killed.
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("cannot listen on {}", path.display()))?;
    Ok(Instance::First(listener))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Lock,
    /// Open the enrollment window (which still needs an administrator's credentials).
    Enroll,
}

/// Serves other instances' requests: `lock` and `enroll`; anything else is ignored.
pub fn serve(listener: UnixListener, on_request: impl Fn(Request) + Send + 'static) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(1)));
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_ok() {
                match line.trim() {
                    "lock" => on_request(Request::Lock),
                    "enroll" => on_request(Request::Enroll),
                    _ => {}
                }
            }
            let _ = (&stream).write_all(b"ok\n");
        }
    });
}
