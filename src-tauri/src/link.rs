//! The guard's connection to `wardlockd`: one supervised connection (role `guard`) that
//! reconnects on its own, answers calls in order, sends heartbeats and passes on what the
//! service pushes (policy changes, "lock now").
//!
//! It runs as one task that owns the socket, so requests never interleave on the wire.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use wardlock_client::{ClientError, Connection, Message, Push};
use wardlock_core::lock::LockReason;
use wardlock_core::protocol::local::{ClientRole, ErrorCode, GuardEvent, GuardPolicy, Request, Response};

/// Well under the service's default silence limit (15 s), so one late beat is harmless.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(4);
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Events that happen while the service is away are sent when it is back; beyond this
/// many the oldest go (the service audits the outage itself as `guard_lost`).
const PENDING_EVENTS: usize = 64;

#[derive(Debug, Error)]
pub enum LinkError {
    #[error("the Wardlock service is not reachable")]
    Unavailable,
    #[error("the Wardlock service refused the request: {0}")]
    Refused(String),
}

/// What the link reports to the guard.
#[derive(Debug, Clone)]
pub enum LinkEvent {
    Connected(GuardPolicy),
    Disconnected(String),
    PolicyChanged(GuardPolicy),
    LockNow(LockReason),
}

struct Call {
    request: Request,
    reply: oneshot::Sender<Result<Response, LinkError>>,
}

#[derive(Debug, Clone)]
pub struct ServiceLink {
    calls: mpsc::Sender<Call>,
    events: mpsc::UnboundedSender<GuardEvent>,
}

impl ServiceLink {
    /// Starts the connection task. `role` is `Guard` for the session guard's own link and
    /// `Tool` for short-lived helpers (an enrollment window holds its own ticket).
    pub fn spawn(socket: PathBuf, role: ClientRole, notify: mpsc::UnboundedSender<LinkEvent>) -> Self {
        let (calls, call_rx) = mpsc::channel(16);
        let (events, event_rx) = mpsc::unbounded_channel();
        tauri::async_runtime::spawn(run(socket, role, call_rx, event_rx, notify));
        Self { calls, events }
    }

    pub async fn call(&self, request: Request) -> Result<Response, LinkError> {
        let (reply, rx) = oneshot::channel();
        self.calls.send(Call { request, reply }).await.map_err(|_| LinkError::Unavailable)?;
        match rx.await.map_err(|_| LinkError::Unavailable)? {
            Ok(Response::Error { code, message }) => Err(LinkError::Refused(format!("{code:?}: {message}"))),
            other => other,
        }
    }

    /// Reports something the guard saw or did; delivered in order, later if need be.
    pub fn report(&self, event: GuardEvent) {
        let _ = self.events.send(event);
    }
}

async fn run(
    socket: PathBuf,
    role: ClientRole,
    mut calls: mpsc::Receiver<Call>,
    mut events: mpsc::UnboundedReceiver<GuardEvent>,
    notify: mpsc::UnboundedSender<LinkEvent>,
) {
    let mut pending: VecDeque<GuardEvent> = VecDeque::new();
    let mut retry = RETRY_FIRST;
    let mut last_error = String::new();
    loop {
        match Session::open(&socket, role).await {
            Ok((mut session, policy)) => {
                retry = RETRY_FIRST;
                let _ = notify.send(LinkEvent::Connected(policy));
                let why = session.serve(&mut calls, &mut events, &mut pending, &notify).await;
                match why {
                    Ended::Closed => return,
                    Ended::Lost(why) => {
                        last_error = why.clone();
                        let _ = notify.send(LinkEvent::Disconnected(why));
                    }
                }
            }
            Err(why) => {
                if why != last_error {
                    let _ = notify.send(LinkEvent::Disconnected(why.clone()));
                    last_error = why;
                }
            }
        }
        // While away: refuse calls at once, keep events, wait for the next try.
        let deadline = Instant::now() + retry;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                call = calls.recv() => match call {
                    Some(call) => { let _ = call.reply.send(Err(LinkError::Unavailable)); }
                    None => return,
                },
                event = events.recv() => match event {
                    Some(event) => queue(&mut pending, event),
                    None => return,
                },
            }
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

fn queue(pending: &mut VecDeque<GuardEvent>, event: GuardEvent) {
    if pending.len() == PENDING_EVENTS {
        pending.pop_front();
    }
    pending.push_back(event);
}

enum Ended {
    /// The guard dropped its end: it is quitting.
    Closed,
    Lost(String),
}

/// One connection to the service, through the protocol's one client.
struct Session {
    conn: Connection,
}

fn describe(e: ClientError) -> String {
    match e {
        // Another release's wardlockd: said plainly, with this guard's own version.
        ClientError::Refused { code: ErrorCode::UnsupportedVersion, message } => format!(
            "this guard (wardlock {}) and wardlockd are from different releases and do not work together: {message}",
            env!("CARGO_PKG_VERSION")
        ),
        ClientError::Refused { code, message } => format!("the service refused ({code:?}: {message})"),
        other => other.to_string(),
    }
}

impl Session {
    async fn open(socket: &Path, role: ClientRole) -> Result<(Self, GuardPolicy), String> {
        let name = format!("wardlock {}", env!("CARGO_PKG_VERSION"));
        let conn = Connection::open(socket, &name, role).await.map_err(describe)?;
        let mut session = Self { conn };
        // Pushes cannot come before the first answer: the service sends them to a
        // client that has said hello, and this is the first request after it.
        match session.conn.call(&Request::Policy {}, |_| {}).await.map_err(describe)? {
            Response::Policy { policy } => Ok((session, *policy)),
            other => Err(format!("unexpected answer to policy: {other:?}")),
        }
    }

    async fn serve(
        &mut self,
        calls: &mut mpsc::Receiver<Call>,
        events: &mut mpsc::UnboundedReceiver<GuardEvent>,
        pending: &mut VecDeque<GuardEvent>,
        notify: &mpsc::UnboundedSender<LinkEvent>,
    ) -> Ended {
        while let Some(event) = pending.pop_front() {
            if let Err(why) = self.call_and_notify(&Request::Event { event: event.clone() }, notify).await {
                pending.push_front(event);
                return Ended::Lost(why);
            }
        }
        let mut beat = tokio::time::interval_at(Instant::now() + HEARTBEAT_EVERY, HEARTBEAT_EVERY);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                call = calls.recv() => {
                    let Some(call) = call else { return Ended::Closed };
                    match self.conn.call(&call.request, |push| forward_push(push, notify)).await {
                        Ok(response) => { let _ = call.reply.send(Ok(response)); }
                        // A refusal is an answer, not a broken link.
                        Err(ClientError::Refused { code, message }) => {
                            let _ = call.reply.send(Ok(Response::Error { code, message }));
                        }
                        Err(e) => {
                            let _ = call.reply.send(Err(LinkError::Unavailable));
                            return Ended::Lost(describe(e));
                        }
                    }
                }
                event = events.recv() => {
                    let Some(event) = event else { return Ended::Closed };
                    if let Err(why) = self.call_and_notify(&Request::Event { event: event.clone() }, notify).await {
                        queue(pending, event);
                        return Ended::Lost(why);
                    }
                }
                _ = beat.tick() => {
                    if let Err(why) = self.call_and_notify(&Request::Heartbeat {}, notify).await {
                        return Ended::Lost(why);
                    }
                }
                pushed = self.conn.next() => match pushed.map(Message::from) {
                    Ok(Message::Push(push)) => forward_push(push, notify),
                    Ok(Message::Answer(Response::Error { code, message })) => {
                        return Ended::Lost(format!("the service closed the connection ({code:?}: {message})"));
                    }
                    Ok(Message::Answer(other)) => {
                        return Ended::Lost(format!("unexpected message from the service: {other:?}"))
                    }
                    Err(e) => return Ended::Lost(describe(e)),
                },
            }
        }
    }

    /// Sends one request and waits for its answer, passing on pushes that arrive first.
    async fn call_and_notify(
        &mut self,
        request: &Request,
        notify: &mpsc::UnboundedSender<LinkEvent>,
    ) -> Result<Response, String> {
        self.conn.call(request, |push| forward_push(push, notify)).await.map_err(describe)
    }
}

fn forward_push(push: Push, notify: &mpsc::UnboundedSender<LinkEvent>) {
    let event = match push {
        Push::PolicyChanged(policy) => LinkEvent::PolicyChanged(*policy),
        Push::LockNow(reason) => LinkEvent::LockNow(reason),
    };
    let _ = notify.send(event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wardlockd_of_another_release_is_named_as_such_with_both_versions() {
        let said = describe(ClientError::Refused {
            code: ErrorCode::UnsupportedVersion,
            message: "wardlockd 9.0.0 speaks protocol version 2, and \"wardlock 0.1.0\" version 1".into(),
        });
        assert!(said.contains(concat!("wardlock ", env!("CARGO_PKG_VERSION"))), "{said}");
        assert!(said.contains("different releases") && said.contains("protocol version 2"), "{said}");
    }
}
