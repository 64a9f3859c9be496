//! One client connection: `hello` first, then requests answered in order; pushed policy
//! changes in between. The connection is closed on the first protocol error, on silence
//! past its deadline, and on a write the client does not take in time.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::time::Instant;

use wardlock_core::lock::LockReason;
use wardlock_core::protocol::local::{
    ClientRole, ErrorCode, GuardEvent, GuardPolicy, HoldReply, QuitReply, Request, Response, UnlockReply,
    MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

use super::frame::{FrameError, FrameReader};
use super::WRITE_TIMEOUT;
use crate::peer::{self, Peer};
use crate::service::{Approval, Enrollment, GuardRefusal, Service, ServiceError, UnguardedSession};
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

/// How a connection ended, for the guard's audit entry.
enum End {
    /// The client closed it (or was closed for a reason given in `Lost`).
    Closed,
    Lost(String),
    ServiceStopping,
}

struct Connection {
    service: Arc<Service>,
    peer: Peer,
    writer: OwnedWriteHalf,
    role: Option<ClientRole>,
    /// Send `lock_now` after the current answer (see `Service::session_locked`).
    relock: bool,
    /// The guard's OS session, looked up while it is alive.
    os_session: Option<String>,
    quit_approved_by: Option<String>,
    events: AttemptBudget,
    enrollment: Option<Enrollment>,
}

pub async fn run(service: Arc<Service>, stream: UnixStream, shutdown: watch::Receiver<bool>) {
    let peer = match peer::of_stream(&stream) {
        Ok(peer) => peer,
        Err(e) => {
            eprintln!("wardlockd: refused a connection whose peer is unknown: {e}");
            return;
        }
    };
    let (read, writer) = stream.into_split();
    let mut conn = Connection {
        events: AttemptBudget::new(EVENTS_PER_MINUTE, std::time::Instant::now()),
        service,
        peer,
        writer,
        role: None,
        relock: false,
        os_session: None,
        quit_approved_by: None,
        enrollment: None,
    };
    if !conn.peer.allowed_by(&conn.service.policy().service) {
        let message = format!(
            "OS account {:?} may not use wardlockd (policy service.allowed_users / allowed_groups)",
            conn.peer.account
        );
        eprintln!("wardlockd: {message}");
        let _ = conn.send(&Response::Error { code: ErrorCode::NotAllowed, message }).await;
        return;
    }
    let mut reader = FrameReader::new(BufReader::new(read), MAX_FRAME_BYTES);
    let end = conn.serve(&mut reader, shutdown).await;
    conn.finish(end).await;
}

impl Connection {
    async fn serve<R>(&mut self, reader: &mut FrameReader<R>, mut shutdown: watch::Receiver<bool>) -> End
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
                        Ok(None) => return End::Closed,
                        Err(FrameError::TooLarge(max)) => {
                            return self.fail(ErrorCode::FrameTooLarge, format!("messages are limited to {max} bytes")).await;
                        }
                        Err(e) => return End::Lost(format!("connection error: {e}")),
                    };
                    if let Some(end) = self.handle(&line).await {
                        return end;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let what = match self.role {
                        None => "no hello in time",
                        Some(ClientRole::Guard) => "heartbeat missed",
                        Some(ClientRole::Tool) => "idle too long",
                    };
                    return self.fail(ErrorCode::Timeout, what.to_owned()).await;
                }
                changed = policy_rx.changed(), if self.role.is_some() => {
                    if changed.is_err() {
                        return End::ServiceStopping;
                    }
                    let policy = Box::new(GuardPolicy::from(&**policy_rx.borrow_and_update()));
                    if self.send(&Response::PolicyChanged { policy }).await.is_err() {
                        return End::Lost("did not take a policy update".into());
                    }
                }
                _ = shutdown.changed() => return End::ServiceStopping,
            }
        }
    }

    fn silence_limit(&self) -> Duration {
        match self.role {
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
    async fn fail(&mut self, code: ErrorCode, message: String) -> End {
        let _ = self.send(&Response::Error { code, message: message.clone() }).await;
        End::Lost(message)
    }

    /// Handles one frame; `Some` ends the connection.
    async fn handle(&mut self, line: &[u8]) -> Option<End> {
        let request: Request = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                // serde's message names the field or type, never echoes a value.
                return Some(self.fail(ErrorCode::BadRequest, format!("not a valid request: {e}")).await);
            }
        };
        let response = match (self.role, request) {
            (None, Request::Hello { version, client, role }) => {
                if version != PROTOCOL_VERSION {
                    let message =
                        format!("this wardlockd speaks protocol version {PROTOCOL_VERSION}, not {version}");
                    return Some(self.fail(ErrorCode::UnsupportedVersion, message).await);
                }
                if let Err(end) = self.hello(role, &client).await {
                    return Some(end);
                }
                Response::Hello {
                    version: PROTOCOL_VERSION,
                    server: format!("wardlockd {}", env!("CARGO_PKG_VERSION")),
                }
            }
            (None, _) => return Some(self.fail(ErrorCode::HelloFirst, "send hello first".into()).await),
            (Some(role), request) => match self.request(role, request).await {
                Ok(Ok(response)) => response,
                Ok(Err(end)) => return Some(end),
                Err(ServiceError::NotAllowed(message)) => {
                    Response::Error { code: ErrorCode::NotAllowed, message }
                }
                Err(e) => {
                    eprintln!("wardlockd: request from {} failed: {e}", self.peer.account);
                    Response::Error {
                        code: ErrorCode::Internal,
                        message: "wardlockd could not complete this request; its log says why".into(),
                    }
                }
            },
        };
        if self.send(&response).await.is_err() {
            return Some(End::Lost("did not take an answer in time".into()));
        }
        if std::mem::take(&mut self.relock) {
            // The previous guard left this session locked: the new one must lock before
            // anything else, whatever it believes.
            if self.send(&Response::LockNow { reason: LockReason::GuardRestarted }).await.is_err() {
                return Some(End::Lost("did not take a lock order in time".into()));
            }
        }
        None
    }

    async fn hello(&mut self, role: ClientRole, client: &str) -> Result<(), End> {
        if role == ClientRole::Guard {
            let (service, peer) = (self.service.clone(), self.peer.clone());
            let admitted = blocking(move || Ok(service.admit_guard(&peer)))
                .await
                .unwrap_or_else(|e| Err(GuardRefusal { code: ErrorCode::Internal, message: e.to_string() }));
            if let Err(GuardRefusal { code, message }) = admitted {
                eprintln!("wardlockd: refused a guard of {}: {message}", self.peer.account);
                return Err(self.fail(code, message).await);
            }
        }
        self.role = Some(role);
        if role == ClientRole::Guard {
            if let Some(pid) = self.peer.pid {
                let lookup =
                    tokio::time::timeout(Duration::from_secs(2), self.service.sessions.session_of(pid));
                self.os_session = lookup.await.ok().and_then(Result::ok);
            }
            let (service, peer, client) = (self.service.clone(), self.peer.clone(), client.to_owned());
            let session = self.os_session.clone();
            blocking(move || service.guard_started(&peer, session.as_deref(), &client)).await.map_err(
                |e| {
                    eprintln!("wardlockd: {e}");
                    End::Lost("could not audit the guard's start".into())
                },
            )?;
        }
        Ok(())
    }

    async fn request(
        &mut self,
        role: ClientRole,
        request: Request,
    ) -> Result<Result<Response, End>, ServiceError> {
        let service = self.service.clone();
        let peer = self.peer.clone();
        Ok(Ok(match request {
            Request::Hello { .. } => {
                return Ok(Err(self.fail(ErrorCode::BadRequest, "hello was already sent".into()).await))
            }
            Request::Heartbeat {} => {
                if let Some(end) = self.still_the_guard(role).await {
                    return Ok(Err(end));
                }
                Response::Ack
            }
            Request::Policy {} => {
                if role == ClientRole::Guard && service.session_locked(&peer.account) {
                    self.relock = true;
                }
                Response::Policy { policy: Box::new(GuardPolicy::from(&*service.policy())) }
            }
            Request::Status {} => Response::Status(blocking(move || service.status()).await?),
            Request::Unlock(unlock) => {
                let reply = blocking(move || service.unlock(unlock, &peer, role)).await?;
                if role == ClientRole::Guard && matches!(reply, UnlockReply::Granted { .. }) {
                    self.service.set_session_locked(&self.peer.account, false);
                }
                Response::Unlock(reply)
            }
            Request::SignOut(request) => {
                if role != ClientRole::Guard {
                    return Ok(Err(self
                        .fail(ErrorCode::NotAllowed, "only the guard signs out".into())
                        .await));
                }
                Response::Unlock(blocking(move || service.sign_out(request, &peer)).await?)
            }
            Request::Hold(request) => {
                if role != ClientRole::Guard {
                    return Ok(Err(self.fail(ErrorCode::NotAllowed, "only the guard holds".into()).await));
                }
                let reply = blocking(move || service.hold(request, &peer)).await?;
                if matches!(reply, HoldReply::Granted { .. }) {
                    self.service.set_session_locked(&self.peer.account, false);
                }
                Response::Hold(reply)
            }
            Request::Quit(creds) => {
                if role != ClientRole::Guard {
                    return Ok(Err(self.fail(ErrorCode::NotAllowed, "only the guard quits".into()).await));
                }
                let admin = creds.user.clone();
                match blocking(move || service.approve(creds, "quit", &peer, role)).await? {
                    Approval::Granted => {
                        self.quit_approved_by = Some(admin);
                        Response::Quit(QuitReply::Authorized)
                    }
                    Approval::Refused { attempts_left, retry_after_secs } => {
                        Response::Quit(QuitReply::Refused { attempts_left, retry_after_secs })
                    }
                }
            }
            Request::Event { event } => {
                if role != ClientRole::Guard {
                    return Ok(Err(self
                        .fail(ErrorCode::NotAllowed, "only the guard reports events".into())
                        .await));
                }
                if let Admission::Refuse { .. } = self.events.admit(std::time::Instant::now()) {
                    let message = format!("more than {EVENTS_PER_MINUTE} events a minute");
                    return Ok(Err(self.fail(ErrorCode::Busy, message).await));
                }
                if let Some(end) = self.still_the_guard(role).await {
                    return Ok(Err(end));
                }
                if let GuardEvent::Locked { .. } = event {
                    self.service.set_session_locked(&self.peer.account, true);
                }
                let reported = event.clone();
                blocking(move || service.record_event(&event, &peer)).await?;
                match reported {
                    GuardEvent::Locked { .. } | GuardEvent::LockRestored {} => {
                        self.service.lock_reported(
                            self.os_session.as_deref(),
                            &self.peer.account,
                            self.peer.pid,
                        );
                    }
                    GuardEvent::LockFailed { what } => {
                        self.service.escalate(self.unguarded(format!("lock_failed: {what}")))
                    }
                    _ => {}
                }
                Response::Ack
            }
            Request::Enroll(step) => {
                let mut enrollment = self.enrollment.take();
                let (reply, enrollment) = blocking(move || {
                    let reply = service.enroll(&mut enrollment, step, &peer, role);
                    Ok((reply, enrollment))
                })
                .await?;
                self.enrollment = enrollment;
                Response::Enroll(reply?)
            }
        }))
    }

    /// For a guard: whether it still runs nothing but the installed guard (checked at
    /// every heartbeat and event). `Some`: it does not; the connection ends as lost.
    async fn still_the_guard(&mut self, role: ClientRole) -> Option<End> {
        if role != ClientRole::Guard {
            return None;
        }
        let (service, peer) = (self.service.clone(), self.peer.clone());
        match blocking(move || Ok(service.recheck_guard(&peer))).await {
            Ok(Ok(())) => None,
            Ok(Err(why)) => {
                Some(self.fail(ErrorCode::NotAllowed, format!("no longer the installed guard: {why}")).await)
            }
            Err(e) => Some(self.fail(ErrorCode::Internal, format!("could not check the guard: {e}")).await),
        }
    }

    fn unguarded(&self, why: String) -> UnguardedSession {
        UnguardedSession {
            session: self.os_session.clone(),
            account: self.peer.account.clone(),
            uid: self.peer.uid,
            why: crate::service::client_text(&why),
        }
    }

    /// Audits how a guard's connection ended and escalates a loss per policy.
    async fn finish(self, end: End) {
        if self.role != Some(ClientRole::Guard) {
            return;
        }
        let service = self.service.clone();
        let peer = self.peer.clone();
        let result = match (end, self.quit_approved_by.clone()) {
            (End::ServiceStopping, _) => Ok(()),
            (End::Closed, Some(admin)) => {
                let account = peer.account.clone();
                let audited = blocking({
                    let admin = admin.clone();
                    let session = self.os_session.clone();
                    move || service.guard_stopped(&peer, session.as_deref(), &admin)
                })
                .await;
                // Logged once audited: tests (and operators) may rely on the entry being there.
                eprintln!("wardlockd: guard of {account} stopped with {admin}'s approval");
                audited
            }
            (End::Closed, None) => {
                let why = "disconnected without an administrator's approval".to_owned();
                lost(service, peer, self.unguarded(format!("guard_lost: {why}")), why).await
            }
            (End::Lost(why), _) => {
                lost(service, peer, self.unguarded(format!("guard_lost: {why}")), why).await
            }
        };
        if let Err(e) = result {
            eprintln!("wardlockd: could not audit the end of a guard connection: {e}");
        }
    }
}

/// A guard is gone without approval: audited, then the ladder for its session.
async fn lost(
    service: Arc<Service>,
    peer: Peer,
    unguarded: UnguardedSession,
    why: String,
) -> Result<(), ServiceError> {
    let account = peer.account.clone();
    let audited = blocking({
        let service = service.clone();
        let session = unguarded.session.clone();
        move || service.guard_lost(&peer, session.as_deref(), &why)
    })
    .await;
    let why = unguarded.why.clone();
    service.escalate(unguarded);
    // Logged once audited and escalated: tests (and operators) may rely on both.
    eprintln!(
        "wardlockd: guard of {account} lost ({why}); lock.when_unguarded = {}",
        service.policy().lock.when_unguarded.as_str()
    );
    audited
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServiceError::Worker(e.to_string()))?
}
