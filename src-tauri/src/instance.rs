//! One guard per session. The first guard listens on a socket in the user's runtime
//! directory; a second `wardlock` hands its request (`--lock`, or just "I was started")
//! to the first and exits. Anyone in the session may send "lock", "enroll" or "quit": all
//! are harmless (enrolling and quitting still need an administrator's credentials, checked
//! by `wardlockd`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use anyhow::{Context, Result};

pub enum Instance {
    First(UnixListener),
    /// Another guard runs; it got the message.
    Forwarded,
}

/// A folder only this account may use: `$XDG_RUNTIME_DIR` (logind's, 0700), or else
/// one of its own in the temporary folder, which is refused when someone else made it or
/// may write it (another account could otherwise stand in for the running guard).
pub fn runtime_dir() -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let me = nix::unistd::getuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = std::env::temp_dir().join(format!("wardlock-{me}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
            }
            dir
        }
    };
    let meta = std::fs::symlink_metadata(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        anyhow::bail!(
            "{} is not a folder of this account alone (owner uid {}, mode {:o}); remove it, or run in a session with XDG_RUNTIME_DIR",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    Ok(dir)
}

pub fn socket_path() -> Result<PathBuf> {
    Ok(runtime_dir()?.join("wardlock-guard.sock"))
}

/// `None`: this process wants to be the guard; `Some`: it only passes on a request.
pub fn claim(ask: Option<Request>) -> Result<Instance> {
    let message = ask.map_or("started", Request::word);
    let path = socket_path()?;
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
    /// Open the quit window (the same).
    Quit,
}

impl Request {
    fn word(self) -> &'static str {
        match self {
            Request::Lock => "lock",
            Request::Enroll => "enroll",
            Request::Quit => "quit",
        }
    }

    fn from_word(word: &str) -> Option<Self> {
        [Request::Lock, Request::Enroll, Request::Quit].into_iter().find(|r| r.word() == word)
    }
}

/// Serves other instances' requests; anything unknown is ignored.
pub fn serve(listener: UnixListener, on_request: impl Fn(Request) + Send + 'static) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(1)));
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if let Some(request) =
                reader.read_line(&mut line).ok().and_then(|_| Request::from_word(line.trim()))
            {
                on_request(request);
            }
            let _ = (&stream).write_all(b"ok\n");
        }
    });
}
