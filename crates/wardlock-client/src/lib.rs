//! The one client of `wardlockd`'s local protocol (docs/local-protocol.md): newline-
//! delimited JSON frames over the service's Unix socket, `hello` first, answers in order,
//! and pushed messages (`policy_changed`, `lock_now`) that may arrive before an answer.
//!
//! The guard uses [`Connection`] (async, tokio); `wardlockctl` and the tests use
//! [`blocking::Client`], the same connection on a runtime of its own. Every frame that
//! may carry a PIN is wiped after it is written.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::time::{timeout, Instant};
use zeroize::Zeroize;

use wardlock_core::lock::LockReason;
use wardlock_core::protocol::local::{
    ClientRole, ErrorCode, GuardPolicy, Request, Response, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

/// An answer that takes longer than this means the service is stuck.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to wardlockd at {socket} (is it running? `systemctl status wardlockd`): {source}"
    )]
    Connect { socket: String, source: std::io::Error },
    #[error("the connection to wardlockd broke: {0}")]
    Io(#[from] std::io::Error),
    #[error("wardlockd did not answer within {} s", REPLY_TIMEOUT.as_secs())]
    Timeout,
    #[error("wardlockd closed the connection")]
    Closed,
    #[error("wardlockd sent an oversized or cut-off message")]
    BadFrame,
    #[error("wardlockd sent something unreadable: {0}")]
    Unreadable(String),
    #[error("wardlockd refused: {message} ({code:?})")]
    Refused { code: ErrorCode, message: String },
    #[error("unexpected answer from wardlockd: {0}")]
    Unexpected(String),
    #[error("cannot start the client's runtime: {0}")]
    Runtime(String),
}

/// Something the service sends unasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    PolicyChanged(Box<GuardPolicy>),
    LockNow(LockReason),
}

/// A message from the service: pushed, or the answer to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Push(Push),
    Answer(Response),
}

impl From<Response> for Message {
    fn from(response: Response) -> Self {
        match response {
            Response::PolicyChanged { policy } => Message::Push(Push::PolicyChanged(policy)),
            Response::LockNow { reason } => Message::Push(Push::LockNow(reason)),
            other => Message::Answer(other),
        }
    }
}

/// One connection to `wardlockd` that has said hello.
#[derive(Debug)]
pub struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: Vec<u8>,
}

impl Connection {
    /// Connects and says hello as `client` in `role`.
    pub async fn open(socket: &Path, client: &str, role: ClientRole) -> Result<Self, ClientError> {
        let mut conn = Self::connect(socket).await?;
        let hello = Request::Hello { version: PROTOCOL_VERSION, client: client.to_owned(), role };
        match conn.call(&hello, |_| {}).await? {
            Response::Hello { .. } => Ok(conn),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Connects without saying anything yet (for tests of the protocol itself).
    pub async fn connect(socket: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| ClientError::Connect { socket: socket.display().to_string(), source })?;
        Ok(Self::from_stream(stream))
    }

    /// A connection over a stream already connected.
    pub fn from_stream(stream: UnixStream) -> Self {
        let (read, writer) = stream.into_split();
        Self { reader: BufReader::new(read), writer, line: Vec::new() }
    }

    /// Sends one request and returns its answer; pushes that come first go to `on_push`.
    /// An `error` answer is a [`ClientError::Refused`].
    pub async fn call(
        &mut self,
        request: &Request,
        mut on_push: impl FnMut(Push),
    ) -> Result<Response, ClientError> {
        self.send(request).await?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let response = timeout(deadline.saturating_duration_since(Instant::now()), self.next())
                .await
                .map_err(|_| ClientError::Timeout)??;
            match Message::from(response) {
                Message::Push(push) => on_push(push),
                Message::Answer(Response::Error { code, message }) => {
                    return Err(ClientError::Refused { code, message })
                }
                Message::Answer(answer) => return Ok(answer),
            }
        }
    }

    pub async fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Unexpected(e.to_string()))?;
        line.push(b'\n');
        let written = self.send_raw(&line).await;
        // The request may carry a PIN: wipe the buffer whatever happened.
        line.zeroize();
        written
    }

    /// Writes bytes as they are (for tests of the protocol itself).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match timeout(REPLY_TIMEOUT, self.writer.write_all(bytes)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// The next message from the service, whatever it is.
    pub async fn next(&mut self) -> Result<Response, ClientError> {
        let frame = self.next_frame().await?;
        serde_json::from_slice(frame).map_err(|e| ClientError::Unreadable(e.to_string()))
    }

    /// The next frame as it came, without its newline. Cancel-safe: a frame cut short
    /// by another `select!` branch goes on where it stopped at the next call.
    pub async fn next_frame(&mut self) -> Result<&[u8], ClientError> {
        if self.line.ends_with(b"\n") {
            self.line.zeroize();
            self.line.clear();
        }
        let room = (MAX_FRAME_BYTES as u64 + 1).saturating_sub(self.line.len() as u64);
        let mut limited = (&mut self.reader).take(room);
        match limited.read_until(b'\n', &mut self.line).await {
            Ok(0) if room > 0 => return Err(ClientError::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Err(ClientError::Closed),
            Err(e) => return Err(e.into()),
        }
        if !self.line.ends_with(b"\n") {
            return Err(ClientError::BadFrame);
        }
        Ok(&self.line[..self.line.len() - 1])
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.line.zeroize();
    }
}

pub mod blocking {
    //! The same connection for programs without an async runtime (`wardlockctl`, tests).

    use super::{ClientError, ClientRole, Connection, Push, Request, Response};
    use std::path::Path;

    #[derive(Debug)]
    pub struct Client {
        runtime: tokio::runtime::Runtime,
        conn: Connection,
        pushes: Vec<Push>,
    }

    impl Client {
        /// Connects and says hello as `client` in `role`.
        pub fn open(socket: &Path, client: &str, role: ClientRole) -> Result<Self, ClientError> {
            let runtime = runtime()?;
            let conn = runtime.block_on(Connection::open(socket, client, role))?;
            Ok(Self { runtime, conn, pushes: Vec::new() })
        }

        /// Connects without saying anything yet.
        pub fn connect(socket: &Path) -> Result<Self, ClientError> {
            let runtime = runtime()?;
            let conn = runtime.block_on(Connection::connect(socket))?;
            Ok(Self { runtime, conn, pushes: Vec::new() })
        }

        /// One request, its answer; pushes that came first are kept ([`Client::take_pushes`]).
        pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
            let pushes = &mut self.pushes;
            self.runtime.block_on(self.conn.call(request, |p| pushes.push(p)))
        }

        /// Pushes received so far, oldest first.
        pub fn take_pushes(&mut self) -> Vec<Push> {
            std::mem::take(&mut self.pushes)
        }

        pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
            self.runtime.block_on(self.conn.send(request))
        }

        pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
            self.runtime.block_on(self.conn.send_raw(bytes))
        }

        /// The next frame as it came (without its newline), waiting at most `patience`.
        pub fn next_frame(&mut self, patience: std::time::Duration) -> Result<Vec<u8>, ClientError> {
            self.runtime.block_on(async {
                match tokio::time::timeout(patience, self.conn.next_frame()).await {
                    Ok(frame) => frame.map(<[u8]>::to_vec),
                    Err(_) => Err(ClientError::Timeout),
                }
            })
        }
    }

    fn runtime() -> Result<tokio::runtime::Runtime, ClientError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| ClientError::Runtime(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::AsyncWriteExt;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn pushes_that_come_before_the_answer_are_handed_over_and_the_answer_returned() {
        runtime().block_on(async {
            let (ours, mut service) = UnixStream::pair().unwrap();
            let mut conn = Connection::from_stream(ours);
            service
                .write_all(b"{\"type\":\"lock_now\",\"reason\":\"guard_restarted\"}\n{\"type\":\"ack\"}\n")
                .await
                .unwrap();
            let mut pushes = Vec::new();
            let answer = conn.call(&Request::Heartbeat {}, |p| pushes.push(p)).await.unwrap();
            assert_eq!(answer, Response::Ack);
            assert_eq!(pushes, [Push::LockNow(LockReason::GuardRestarted)]);
        });
    }

    #[test]
    fn an_error_answer_is_a_refusal() {
        runtime().block_on(async {
            let (ours, mut service) = UnixStream::pair().unwrap();
            let mut conn = Connection::from_stream(ours);
            service
                .write_all(b"{\"type\":\"error\",\"code\":\"not_allowed\",\"message\":\"no\"}\n")
                .await
                .unwrap();
            let err = conn.call(&Request::Status {}, |_| {}).await.unwrap_err();
            assert!(matches!(err, ClientError::Refused { code: ErrorCode::NotAllowed, .. }), "{err}");
        });
    }

    #[test]
    fn a_frame_cut_short_by_select_goes_on_where_it_stopped() {
        runtime().block_on(async {
            let (ours, mut service) = UnixStream::pair().unwrap();
            let mut conn = Connection::from_stream(ours);
            service.write_all(b"{\"type\":").await.unwrap();
            // Another branch wins while half the frame is in.
            tokio::select! {
                _ = conn.next_frame() => panic!("a half frame is no frame"),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            service.write_all(b"\"ack\"}\n").await.unwrap();
            assert_eq!(conn.next().await.unwrap(), Response::Ack);
        });
    }

    #[test]
    fn an_oversized_frame_is_refused_and_a_closed_service_said_so() {
        runtime().block_on(async {
            let (ours, mut service) = UnixStream::pair().unwrap();
            let mut conn = Connection::from_stream(ours);
            let big = vec![b'x'; MAX_FRAME_BYTES + 10];
            let writer = tokio::spawn(async move {
                let _ = service.write_all(&big).await;
                drop(service);
            });
            assert!(matches!(conn.next_frame().await, Err(ClientError::BadFrame)));
            writer.await.unwrap();

            let (ours, service) = UnixStream::pair().unwrap();
            let mut conn = Connection::from_stream(ours);
            drop(service);
            assert!(matches!(conn.next().await, Err(ClientError::Closed)));
        });
    }
}
