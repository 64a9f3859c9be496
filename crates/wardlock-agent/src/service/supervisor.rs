//! The one owner of session supervision: a task that holds the core's
//! [`Supervision`] machine behind a channel and carries out what it decides, in order:
//! audit entries and lock state written on the blocking pool, logind calls with their
//! timeouts (their answers come back in through the same channel), and logind's active
//! sessions listed every heartbeat timeout.
//!
//! The walk from "guard connection closed" to "session ended" is here, in the core's
//! `supervision.rs` (the decisions) and in `server/connection.rs` (which reports how the
//! connection ended).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use wardlock_core::audit::{AuditDraft, AuditKind};
use wardlock_core::clock::MonoTime;
use wardlock_core::supervision::{
    ActiveSession, ConnectionId, Effect, Ending, Input, NewGuard, Record, Rules, Supervision,
};

use super::{client_text, Service, ServiceError};
use crate::peer;

/// Longest any one logind call may take before it counts as failed: a hung bus must not
/// hold back the entries that say what happened.
const OS_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands waiting for the supervisor; senders wait when it is full.
const QUEUE: usize = 1024;
/// The meta key prefix under which each account's lock state is kept.
pub(super) const META_SESSION_LOCKED: &str = "session_locked:";

/// What the rest of the service may ask of the supervisor.
#[derive(Debug)]
enum Command {
    Admit {
        guard: NewGuard,
        reply: oneshot::Sender<Result<ConnectionId, NotAdmitted>>,
    },
    Input(Input),
    View {
        account: String,
        reply: oneshot::Sender<SessionView>,
    },
    /// logind's sessions as listed (or why not), before the policy filter.
    Listed(Result<Vec<ActiveSession>, String>),
}

/// Why the supervisor did not take a guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NotAdmitted {
    /// The account has as many guards connected as it may.
    Busy(String),
    /// Its start could not be audited: a guard nobody recorded is no guard.
    Unaudited,
}

/// What the service needs to know of one account's session to answer a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionView {
    pub must_lock: bool,
    pub clinician: Option<String>,
    pub holds_in_a_row: u32,
    pub guards_connected: u32,
    pub escalations_active: u32,
}

/// The channel to the supervisor task, and the machine until that task takes it.
#[derive(Debug)]
pub(super) struct Supervisor {
    tx: mpsc::Sender<Command>,
    waiting: Mutex<Option<(mpsc::Receiver<Command>, Supervision)>>,
}

impl Supervisor {
    pub(super) fn new(machine: Supervision) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self { tx, waiting: Mutex::new(Some((rx, machine))) }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ServiceError> {
        let (reply, answer) = oneshot::channel();
        let gone = || ServiceError::Worker("the session supervisor has stopped".into());
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    pub(super) async fn admit(
        &self,
        guard: NewGuard,
    ) -> Result<Result<ConnectionId, NotAdmitted>, ServiceError> {
        self.ask(|reply| Command::Admit { guard, reply }).await
    }

    pub(super) async fn view(&self, account: &str) -> Result<SessionView, ServiceError> {
        self.ask(|reply| Command::View { account: account.to_owned(), reply }).await
    }

    pub(super) async fn tell(&self, input: Input) {
        if self.tx.send(Command::Input(input)).await.is_err() {
            tracing::error!(
                event = "supervisor_gone",
                "the session supervisor has stopped; an input was lost"
            );
        }
    }
}

impl Service {
    /// Runs the supervisor until `shutdown`. Call once.
    pub async fn supervise(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let taken = self.supervisor.waiting.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some((mut rx, mut machine)) = taken else { return };
        let epoch = Instant::now();
        let mono = move || MonoTime::from_duration(epoch.elapsed());
        let mut next_listing = Instant::now() + self.policy().service.guard_heartbeat_timeout;
        let mut listing = false;
        let mut reported_unreachable = false;
        loop {
            let deadline = machine.next_deadline().map(|d| epoch + d.since_origin());
            let command = tokio::select! {
                command = rx.recv() => match command {
                    Some(command) => command,
                    None => return,
                },
                _ = sleep_until_some(deadline) => Command::Input(Input::Tick),
                _ = tokio::time::sleep_until(next_listing), if !listing => {
                    listing = true;
                    next_listing = Instant::now() + self.policy().service.guard_heartbeat_timeout;
                    self.list_sessions();
                    continue;
                }
                _ = shutdown.changed() => return,
            };
            let rules = Rules::of(&self.policy());
            let effects = match command {
                Command::Admit { guard, reply } => match machine.admit(guard) {
                    Ok((conn, effects)) => {
                        if self.carry_out(effects).await {
                            let _ = reply.send(Ok(conn));
                        } else {
                            let forget = Input::ConnectionEnded { conn, how: Ending::ServiceStopping };
                            machine.handle(mono(), rules, forget);
                            let _ = reply.send(Err(NotAdmitted::Unaudited));
                        }
                        continue;
                    }
                    Err(refused) => {
                        let _ = reply.send(Err(NotAdmitted::Busy(refused.to_string())));
                        continue;
                    }
                },
                Command::View { account, reply } => {
                    let _ = reply.send(SessionView {
                        must_lock: machine.must_lock(&account),
                        clinician: machine.clinician(&account).map(str::to_owned),
                        holds_in_a_row: machine.holds_in_a_row(&account),
                        guards_connected: machine.guards_connected(),
                        escalations_active: machine.escalations_active(),
                    });
                    continue;
                }
                Command::Listed(listed) => {
                    listing = false;
                    match listed {
                        Ok(sessions) => {
                            reported_unreachable = false;
                            machine.handle(mono(), rules, Input::ActiveSessions(sessions))
                        }
                        Err(e) => {
                            if !std::mem::replace(&mut reported_unreachable, true) {
                                tracing::warn!(
                                    event = "sessions_unlisted",
                                    error = %e,
                                    "cannot list the OS sessions, so sessions without a guard go unseen"
                                );
                            }
                            continue;
                        }
                    }
                }
                Command::Input(input) => machine.handle(mono(), rules, input),
            };
            // An entry that could not be written was logged; the steps go on.
            self.carry_out(effects).await;
        }
    }

    /// Lists logind's active sessions in a task of its own, keeping those whose account
    /// policy lets connect (a group lookup can be a network round trip: on the blocking
    /// pool), and hands them to the supervisor.
    fn list_sessions(self: &Arc<Self>) {
        let service = self.clone();
        tokio::spawn(async move {
            let listed = match os_call(OS_CALL_TIMEOUT, service.sessions.active_sessions()).await {
                Ok(sessions) => {
                    let policy = service.policy();
                    tokio::task::spawn_blocking(move || {
                        sessions
                            .into_iter()
                            .filter(|s| {
                                let (users, groups) =
                                    (&policy.service.allowed_users, &policy.service.allowed_groups);
                                (users.is_empty() && groups.is_empty()) || users.contains(&s.account) || {
                                    let peer = peer::of_account(s.uid);
                                    groups.iter().any(|g| peer.groups.contains(g))
                                }
                            })
                            .map(|s| ActiveSession { path: s.path, uid: s.uid, account: s.account })
                            .collect()
                    })
                    .await
                    .map_err(|e| e.to_string())
                }
                Err(e) => Err(e),
            };
            let _ = service.supervisor.tx.send(Command::Listed(listed)).await;
        });
    }

    /// Carries out the machine's effects in order. Entries and lock state are written
    /// before the next effect; logind calls run in tasks of their own and answer back.
    /// Whether every entry was written.
    async fn carry_out(self: &Arc<Self>, effects: Vec<Effect>) -> bool {
        let mut audited = true;
        for effect in effects {
            match effect {
                Effect::Audit(record) => {
                    let draft = self.record_draft(&record);
                    match self.audit_async(draft).await {
                        Ok(_) => log_record(&record),
                        Err(e) => {
                            audited = false;
                            tracing::error!(event = "audit_failed", error = %e, "could not audit a supervision step")
                        }
                    }
                }
                Effect::Persist { account, locked } => {
                    let service = self.clone();
                    let key = format!("{META_SESSION_LOCKED}{account}");
                    let written = super::blocking(move |b| {
                        Ok(service.store(b).set_meta(&key, if locked { "1" } else { "0" })?)
                    })
                    .await;
                    if written.is_err() {
                        tracing::error!(
                            event = "lock_state_unsaved",
                            account,
                            locked,
                            "could not record the lock state"
                        );
                    }
                }
                Effect::RequestLock { ladder, session } => {
                    let limit = OS_CALL_TIMEOUT.min(self.policy().lock.escalation_grace);
                    let sessions = self.clone();
                    self.answer_later(async move {
                        let result = os_call(limit, sessions.sessions.request_lock(session))
                            .await
                            .map(|what| format!("sent to {what}"))
                            .map_err(|e| format!("failed: {e}"));
                        Input::LockRequested { ladder, result }
                    });
                }
                Effect::ReadLockedHint { ladder, session } => {
                    let sessions = self.clone();
                    self.answer_later(async move {
                        let seen =
                            match os_call(OS_CALL_TIMEOUT, sessions.sessions.locked_hint(session)).await {
                                Ok(true) => {
                                    "true (settable by the session's own account: not evidence)".to_owned()
                                }
                                Ok(false) => "false".to_owned(),
                                Err(e) => client_text(&format!("unreadable: {e}")),
                            };
                        Input::LockedHintRead { ladder, seen }
                    });
                }
                Effect::Terminate { ladder, session, uid } => {
                    let sessions = self.clone();
                    self.answer_later(async move {
                        let result =
                            os_call(OS_CALL_TIMEOUT, sessions.sessions.terminate(session, uid)).await;
                        Input::Terminated { ladder, result }
                    });
                }
            }
        }
        audited
    }

    /// Runs an OS call in a task of its own; what it answers goes back to the supervisor.
    fn answer_later(self: &Arc<Self>, call: impl std::future::Future<Output = Input> + Send + 'static) {
        let tx = self.supervisor.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Command::Input(call.await)).await;
        });
    }

    /// The audit entry for what supervision recorded.
    fn record_draft(&self, record: &Record) -> AuditDraft {
        let for_account = |kind, account: &str| self.draft(kind, None).os_account(Some(account.to_owned()));
        let step = |kind, account: &str, session: &Option<String>| {
            for_account(kind, account)
                .detail("session", session.as_deref().unwrap_or("unknown"))
                .detail("alert", "compliance")
        };
        match record {
            Record::GuardStarted { account, pid, client } => for_account(AuditKind::GuardStarted, account)
                .detail("client", client_text(client))
                .detail("pid", pid_text(*pid)),
            Record::GuardStopped { account, pid, by } => {
                for_account(AuditKind::GuardStopped, account).detail("by", by).detail("pid", pid_text(*pid))
            }
            Record::GuardLost { account, pid, why, when_unguarded } => {
                for_account(AuditKind::GuardLost, account)
                    .detail("why", client_text(why))
                    .detail("pid", pid_text(*pid))
                    .detail("when_unguarded", when_unguarded.as_str())
                    .detail("alert", "compliance")
            }
            Record::EscalationRequested { account, session, why, lock_request, grace, then } => {
                let request = match lock_request {
                    Ok(what) | Err(what) => what,
                };
                step(AuditKind::EscalationRequested, account, session)
                    .detail("why", client_text(why))
                    .detail("lock_request", client_text(request))
                    .detail("grace_secs", grace.as_secs())
                    .detail("unconfirmed_then", then_text(*then))
            }
            Record::EscalationConfirmed { account, session, after, pid } => {
                step(AuditKind::EscalationConfirmed, account, session)
                    .detail("after_ms", after.as_millis())
                    .detail("by", "guard")
                    .detail("pid", pid_text(*pid))
            }
            Record::EscalationUnconfirmed { account, session, after, locked_hint, then } => {
                step(AuditKind::EscalationUnconfirmed, account, session)
                    .detail("after_secs", after.as_secs())
                    .detail("locked_hint", locked_hint)
                    .detail("next", then_text(*then))
            }
            Record::SessionTerminated { account, session, ended } => {
                step(AuditKind::SessionTerminated, account, session).detail("ended", client_text(ended))
            }
            Record::SessionTerminateFailed { account, session, error } => {
                step(AuditKind::SessionTerminateFailed, account, session).detail("error", client_text(error))
            }
        }
    }

    pub(super) async fn audit_async(self: &Arc<Self>, draft: AuditDraft) -> Result<u64, ServiceError> {
        let service = self.clone();
        super::blocking(move |b| service.audit(b, draft)).await
    }
}

fn then_text(then: wardlock_core::policy::Unguarded) -> &'static str {
    match then {
        wardlock_core::policy::Unguarded::Logoff => "logoff",
        _ => "nothing more (lock.when_unguarded = lock_only)",
    }
}

/// What an operator reads in the journal once the entry is written.
fn log_record(record: &Record) {
    match record {
        Record::GuardStarted { account, pid, .. } => {
            tracing::info!(event = "guard_started", account, pid, "guard of {account} started")
        }
        Record::GuardStopped { account, by, .. } => {
            tracing::info!(
                event = "guard_stopped",
                account,
                by,
                "guard of {account} stopped with {by}'s approval"
            )
        }
        Record::GuardLost { account, why, when_unguarded, .. } => tracing::warn!(
            event = "guard_lost",
            account,
            why,
            when_unguarded = when_unguarded.as_str(),
            "guard of {account} lost ({why}); lock.when_unguarded = {}",
            when_unguarded.as_str()
        ),
        Record::EscalationRequested { account, session, why, lock_request, .. } => {
            let request = match lock_request {
                Ok(what) | Err(what) => what,
            };
            tracing::warn!(
                event = "escalation_requested",
                account,
                session = session.as_deref().unwrap_or("unknown"),
                why,
                lock_request = request.as_str(),
                "escalating the session of {account} ({why}): lock requested, {request}"
            )
        }
        Record::EscalationConfirmed { account, .. } => {
            tracing::info!(event = "escalation_confirmed", account, "escalation of {account} confirmed")
        }
        Record::EscalationUnconfirmed { account, after, then, .. } => tracing::warn!(
            event = "escalation_unconfirmed",
            account,
            after_secs = after.as_secs(),
            "escalation of {account} unconfirmed after {} s; next: {}",
            after.as_secs(),
            then_text(*then)
        ),
        Record::SessionTerminated { account, ended, .. } => tracing::warn!(
            event = "session_terminated",
            account,
            ended,
            "ended {ended}: no guard confirmed its lock"
        ),
        Record::SessionTerminateFailed { account, error, .. } => tracing::error!(
            event = "session_terminate_failed",
            account,
            error,
            "could not end the session of {account}: {error}"
        ),
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A call to the OS that may hang (a stuck bus): no answer in `limit` is a failure too.
pub(super) async fn os_call<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", limit.as_secs())))
}

pub(super) fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
}
