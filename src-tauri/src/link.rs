//! The guard's connection to `wardlockd`: one supervised connection (role `guard`) that
//! reconnects on its own, answers calls in order, sends heartbeats and passes on what the
//! service pushes (policy changes, "lock now").
//!
//! It runs as one task that owns the socket, so requests never interleave on the wire.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};

use wardlock_core::lock::LockReason;
use wardlock_core::protocol::local::{
    ClientRole, GuardEvent, GuardPolicy, Request, Response, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

/// Well under the service's default silence limit (15 s), so one late beat is harmless.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(4);
/// An answer that takes longer than this means the service is stuck: reconnect.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
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

struct Session {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: Vec<u8>,
}

impl Session {
    async fn open(socket: &Path, role: ClientRole) -> Result<(Self, GuardPolicy), String> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
        let (read, writer) = stream.into_split();
        let mut session = Self { reader: BufReader::new(read), writer, line: Vec::new() };
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            client: format!("wardlock {}", env!("CARGO_PKG_VERSION")),
            role,
        };
        match session.exchange(&hello).await? {
            Response::Hello { .. } => {}
            Response::Error { code, message } => {
                return Err(format!("the service refused hello ({code:?}: {message})"))
            }
            other => return Err(format!("unexpected answer to hello: {other:?}")),
        }
        match session.exchange(&Request::Policy {}).await? {
            Response::Policy { policy } => Ok((session, policy)),
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
                    let result = self.call_and_notify(&call.request, notify).await;
                    match result {
                        Ok(response) => { let _ = call.reply.send(Ok(response)); }
                        Err(why) => {
                            let _ = call.reply.send(Err(LinkError::Unavailable));
                            return Ended::Lost(why);
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
                pushed = read_frame(&mut self.reader, &mut self.line) => match pushed {
                    Ok(response) => {
                        if let Err(why) = forward_push(response, notify) {
                            return Ended::Lost(why);
                        }
                    }
                    Err(why) => return Ended::Lost(why),
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
        self.send(request).await?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let response = timeout(deadline.saturating_duration_since(Instant::now()), async {
                read_frame(&mut self.reader, &mut self.line).await
            })
            .await
            .map_err(|_| "the service did not answer in time".to_owned())??;
            match response {
                Response::PolicyChanged { .. } | Response::LockNow { .. } => forward_push(response, notify)?,
                other => return Ok(other),
            }
        }
    }

    async fn exchange(&mut self, request: &Request) -> Result<Response, String> {
        self.send(request).await?;
        timeout(REPLY_TIMEOUT, read_frame(&mut self.reader, &mut self.line))
            .await
            .map_err(|_| "the service did not answer in time".to_owned())?
    }

    async fn send(&mut self, request: &Request) -> Result<(), String> {
        let mut line = serde_json::to_vec(request).map_err(|e| format!("cannot encode a request: {e}"))?;
        line.push(b'\n');
        let written = timeout(REPLY_TIMEOUT, self.writer.write_all(&line)).await;
        // The request may carry a PIN: wipe the buffer whatever happened.
        zeroize_vec(&mut line);
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the connection to the service broke: {e}")),
            Err(_) => Err("the service stopped reading".to_owned()),
        }
    }
}

fn forward_push(response: Response, notify: &mpsc::UnboundedSender<LinkEvent>) -> Result<(), String> {
    let event = match response {
        Response::PolicyChanged { policy } => LinkEvent::PolicyChanged(policy),
        Response::LockNow { reason } => LinkEvent::LockNow(reason),
        Response::Error { code, message } => {
            return Err(format!("the service closed the connection ({code:?}: {message})"))
        }
        other => return Err(format!("unexpected message from the service: {other:?}")),
    };
    let _ = notify.send(event);
    Ok(())
}

async fn read_frame(reader: &mut BufReader<OwnedReadHalf>, line: &mut Vec<u8>) -> Result<Response, String> {
    line.clear();
    let mut limited = (&mut *reader).take(MAX_FRAME_BYTES as u64 + 1);
    let n =
        limited.read_until(b'\n', line).await.map_err(|e| format!("reading from the service failed: {e}"))?;
    if n == 0 {
        return Err("the service closed the connection".to_owned());
    }
    if !line.ends_with(b"\n") {
        return Err("the service sent an oversized or cut-off message".to_owned());
    }
    serde_json::from_slice(line).map_err(|e| format!("the service sent something unreadable: {e}"))
}

fn zeroize_vec(buf: &mut Vec<u8>) {
    use zeroize::Zeroize;
    buf.zeroize();
}
