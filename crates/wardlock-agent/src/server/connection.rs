//! One client connection: `hello` first, then requests answered in order; pushed policy
//! changes in between. The connection is closed on the first protocol error, on silence
//! past its deadline, and on a write the client does not take in time. It parses and
//! forwards: what a request may do and what it means is the service's
//! (`service::requests`), what a guard's end means is the supervisor's.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::time::Instant;

use wardlock_core::lock::LockReason;
use wardlock_core::protocol::local::{
    ClientRole, ErrorCode, GuardPolicy, Request, Response, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use wardlock_core::supervision::Ending;

use super::frame::{FrameError, FrameReader};
use super::WRITE_TIMEOUT;
use crate::peer::{self, Peer};
use crate::service::{requests, Answer, Client, GuardRefusal, Service, ServiceError};
use crate::throttle::{Admission, AttemptBudget};

/// Time to send `hello` after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A tool (not a guard) that sends nothing for this long is dropped.
const TOOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Events a guard may report per minute; more is a misbehaving client.
const EVENTS_PER_MINUTE: u32 = 120;

pub fn encode(response: &Response) -> Vec<u8> {
    let mut line = serde_json::to_vec(response).unwrap_or_else(|_| {
        br#"{"type":"error","code":"internal","message":"could not encode the answer"}"#.to_vec()
    });
    line.push(b'\n');
    line
}

struct Connection {
    service: Arc<Service>,
    writer: OwnedWriteHalf,
    /// `None` until `hello`.
    client: Option<Client>,
    peer: Peer,
    events: AttemptBudget,
}

pub async fn run(service: Arc<Service>, stream: UnixStream, shutdown: watch::Receiver<bool>) {
    // The account's name and groups may come from a directory server: never on the
    // async threads.
    let peer = match peer::of_stream(&stream).await {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(event = "peer_unknown", error = %e, "refused a connection whose peer is unknown");
            return;
        }
    };
    let (read, writer) = stream.into_split();
    let mut conn = Connection {
        events: AttemptBudget::new(EVENTS_PER_MINUTE, std::time::Instant::now()),
        service,
        writer,
        client: None,
        peer,
    };
    if !conn.peer.allowed_by(&conn.service.policy().service) {
        let message = format!(
            "OS account {:?} may not use wardlockd (policy service.allowed_users / allowed_groups)",
            conn.peer.account
        );
        tracing::warn!(event = "peer_not_allowed", account = conn.peer.account, "{message}");
        let _ = conn.send(&Response::Error { code: ErrorCode::NotAllowed, message }).await;
        return;
    }
    let mut reader = FrameReader::new(BufReader::new(read), MAX_FRAME_BYTES);
    let end = conn.serve(&mut reader, shutdown).await;
    // A service that stops ends its guards' connections, and its supervisor with them.
    if let (Some(guard), false) = (conn.client.as_ref().and_then(|c| c.guard), end == Ending::ServiceStopping)
    {
        conn.service.guard_ended(guard.conn, end).await;
    }
}

impl Connection {
    fn role(&self) -> Option<ClientRole> {
        self.client.as_ref().map(Client::role)
    }

    async fn serve<R>(&mut self, reader: &mut FrameReader<R>, mut shutdown: watch::Receiver<bool>) -> Ending
    where
        R: tokio::io::AsyncBufRead + Unpin,
    {
        let mut policy_rx = self.service.subscribe_policy();
        policy_rx.mark_unchanged();
        let mut last_heard = Instant::now();
        loop {
            let deadline = last_heard + self.silence_limit();
            tokio::select! {
                frame = reader.next() => {
                    last_heard = Instant::now();
                    let line = match frame {
                        Ok(Some(line)) => line,
                        Ok(None) => return Ending::Closed,
                        Err(FrameError::TooLarge(max)) => {
                            return self.fail(ErrorCode::FrameTooLarge, format!("messages are limited to {max} bytes")).await;
                        }
                        Err(e) => return Ending::Lost(format!("connection error: {e}")),
                    };
                    if let Some(end) = self.handle(&line).await {
                        return end;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let what = match self.role() {
                        None => "no hello in time",
                        Some(ClientRole::Guard) => "heartbeat missed",
                        Some(ClientRole::Tool) => "idle too long",
                    };
                    return self.fail(ErrorCode::Timeout, what.to_owned()).await;
                }
                changed = policy_rx.changed(), if self.client.is_some() => {
                    if changed.is_err() {
                        return Ending::ServiceStopping;
                    }
                    let policy = Box::new(GuardPolicy::from(&**policy_rx.borrow_and_update()));
                    if self.send(&Response::PolicyChanged { policy }).await.is_err() {
                        return Ending::Lost("did not take a policy update".into());
                    }
                }
                _ = shutdown.changed() => return Ending::ServiceStopping,
            }
        }
    }

    fn silence_limit(&self) -> Duration {
        match self.role() {
            None => HELLO_TIMEOUT,
            Some(ClientRole::Guard) => self.service.policy().service.guard_heartbeat_timeout,
            Some(ClientRole::Tool) => TOOL_IDLE_TIMEOUT,
        }
    }

    async fn send(&mut self, response: &Response) -> Result<(), ()> {
        let line = encode(response);
        match tokio::time::timeout(WRITE_TIMEOUT, self.writer.write_all(&line)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    /// Answers with an error and ends the connection.
    async fn fail(&mut self, code: ErrorCode, message: String) -> Ending {
        let _ = self.send(&Response::Error { code, message: message.clone() }).await;
        Ending::Lost(message)
    }

    /// Handles one frame; `Some` ends the connection.
    async fn handle(&mut self, line: &[u8]) -> Option<Ending> {
        let request: Request = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                // serde's message names the field or type, never echoes a value.
                return Some(self.fail(ErrorCode::BadRequest, format!("not a valid request: {e}")).await);
            }
        };
        let answer = match (self.client.as_mut(), request) {
            (None, Request::Hello { version, client, role }) => {
                if version != PROTOCOL_VERSION {
                    // Two releases at once (an upgrade half done, a guard from elsewhere):
                    // refused, and said plainly on both sides.
                    let client = crate::service::client_text(&client);
                    let message = format!(
                        "wardlockd {} speaks protocol version {PROTOCOL_VERSION}, and {client:?} version {version}: \
                         the guard and wardlockd come from different releases; install one release of both \
                         (apt-get install --reinstall wardlock) and log in again",
                        env!("CARGO_PKG_VERSION")
                    );
                    tracing::warn!(
                        event = "version_refused",
                        client,
                        client_protocol = version,
                        account = self.peer.account,
                        "{message}"
                    );
                    return Some(self.fail(ErrorCode::UnsupportedVersion, message).await);
                }
                if let Err(end) = self.hello(role, &client).await {
                    return Some(end);
                }
                Answer::Reply(Response::Hello {
                    version: PROTOCOL_VERSION,
                    server: format!("wardlockd {}", env!("CARGO_PKG_VERSION")),
                })
            }
            (None, _) => return Some(self.fail(ErrorCode::HelloFirst, "send hello first".into()).await),
            (Some(client), request) => {
                if requests::rule_for(&request).spends == requests::Spends::Event && client.guard.is_some() {
                    if let Admission::Refuse { .. } = self.events.admit(std::time::Instant::now()) {
                        let message = format!("more than {EVENTS_PER_MINUTE} events a minute");
                        return Some(self.fail(ErrorCode::Busy, message).await);
                    }
                }
                match self.service.answer(client, request).await {
                    Ok(answer) => answer,
                    Err(ServiceError::NotAllowed(message)) => {
                        Answer::Reply(Response::Error { code: ErrorCode::NotAllowed, message })
                    }
                    Err(e) => {
                        tracing::error!(event = "request_failed", account = self.peer.account, error = %e, "a request failed");
                        Answer::Reply(Response::Error {
                            code: ErrorCode::Internal,
                            message: "wardlockd could not complete this request; its log says why".into(),
                        })
                    }
                }
            }
        };
        let (response, then_lock) = match answer {
            Answer::Reply(response) => (response, false),
            Answer::ReplyThenLock(response) => (response, true),
            Answer::End { code, message } => return Some(self.fail(code, message).await),
        };
        if self.send(&response).await.is_err() {
            return Some(Ending::Lost("did not take an answer in time".into()));
        }
        if then_lock {
            // The previous guard left this session locked: the new one must lock before
            // anything else, whatever it believes.
            if self.send(&Response::LockNow { reason: LockReason::GuardRestarted }).await.is_err() {
                return Some(Ending::Lost("did not take a lock order in time".into()));
            }
        }
        None
    }

    async fn hello(&mut self, role: ClientRole, client: &str) -> Result<(), Ending> {
        let peer = self.peer.clone();
        self.client = Some(match role {
            ClientRole::Tool => Client::tool(peer),
            ClientRole::Guard => match self.service.hello_guard(&peer, client).await {
                Ok(conn) => Client::guard(peer, conn),
                Err(GuardRefusal { code, message }) => {
                    tracing::warn!(
                        event = "guard_refused",
                        account = peer.account,
                        why = message,
                        "refused a guard"
                    );
                    return Err(self.fail(code, message).await);
                }
            },
        });
        Ok(())
    }
}
