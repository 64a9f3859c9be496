//! The guards: who may be one (the installed guard's process, within a start budget
//! per account) and what they report. What becomes of a session whose guard is gone is
//! the supervisor's (`supervisor.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wardlock_core::audit::{AuditDraft, AuditKind};
use wardlock_core::protocol::local::{ErrorCode, GuardEvent};
use wardlock_core::supervision::{ConnectionId, Ending, Input, NewGuard, Report};

use super::supervisor::{os_call, pid_text, NotAdmitted};
use super::{client_text, Blocking, Service, ServiceError};
use crate::peer::{self, Peer};
use crate::throttle::{Admission, AttemptBudget};

const GUARD_STARTS_PER_MINUTE: u32 = 20;
/// How long the lookup of a new guard's logind session may take.
const SESSION_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Impostor entries audited per minute and account; the rest are counted in the next.
const IMPOSTOR_AUDITS_PER_MINUTE: u32 = 20;

/// How fast one OS account's real guards start, and how many of its impostors are audited.
#[derive(Debug)]
pub(super) struct GuardAccount {
    starts: AttemptBudget,
    impostors: AttemptBudget,
}

impl GuardAccount {
    fn new(now: std::time::Instant) -> Self {
        Self {
            starts: AttemptBudget::new(GUARD_STARTS_PER_MINUTE, now),
            impostors: AttemptBudget::new(IMPOSTOR_AUDITS_PER_MINUTE, now),
        }
    }
}

/// Why a connection may not be the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardRefusal {
    pub code: ErrorCode,
    pub message: String,
}

/// `/proc/sys/kernel/yama/ptrace_scope`, where the kernel has Yama.
pub fn ptrace_scope() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok()?.trim().parse().ok()
}

impl Service {
    /// Admits a guard: its process checked (on the blocking pool: `/proc` reads), its
    /// logind session looked up while it is alive, and the supervisor's word that its
    /// account has room. Its start is audited before this returns.
    pub async fn hello_guard(
        self: &Arc<Self>,
        peer: &Peer,
        client: &str,
    ) -> Result<ConnectionId, GuardRefusal> {
        let internal = |e: ServiceError| GuardRefusal { code: ErrorCode::Internal, message: e.to_string() };
        let (service, checked) = (self.clone(), peer.clone());
        super::blocking(move |b| Ok(service.admit_guard(b, &checked))).await.map_err(internal)??;
        let session = match peer.pid {
            Some(pid) => os_call(SESSION_LOOKUP_TIMEOUT, self.sessions.session_of(pid)).await.ok(),
            None => None,
        };
        let guard = NewGuard {
            account: peer.account.clone(),
            uid: peer.uid,
            pid: peer.pid,
            session,
            client: client_text(client),
        };
        match self.supervisor.admit(guard).await.map_err(internal)? {
            Ok(conn) => Ok(conn),
            Err(NotAdmitted::Busy(message)) => Err(GuardRefusal { code: ErrorCode::Busy, message }),
            Err(NotAdmitted::Unaudited) => Err(GuardRefusal {
                code: ErrorCode::Internal,
                message: "could not audit the guard's start".into(),
            }),
        }
    }

    /// A guard's connection ended: the supervisor decides what that means.
    pub async fn guard_ended(&self, conn: ConnectionId, how: Ending) {
        self.supervisor.tell(Input::ConnectionEnded { conn, how }).await;
    }

    /// Audits what guard `conn` reports (the session's clinician named on a lock or a
    /// warning), then hands what supervision needs of it to the supervisor.
    pub(super) async fn guard_event(
        self: &Arc<Self>,
        conn: ConnectionId,
        peer: &Peer,
        event: GuardEvent,
    ) -> Result<(), ServiceError> {
        let clinician = self.supervisor.view(&peer.account).await?.clinician;
        let report = match &event {
            GuardEvent::Locked { .. } | GuardEvent::LockRestored {} => Some(Report::Locked),
            GuardEvent::LockFailed { what } => Some(Report::LockFailed { what: client_text(what) }),
            _ => None,
        };
        let (service, peer) = (self.clone(), peer.clone());
        super::blocking(move |b| service.record_event(b, &event, &peer, clinician)).await?;
        if let Some(report) = report {
            self.supervisor.tell(Input::GuardReported { conn, report }).await;
        }
        Ok(())
    }

    /// The executable a guard must run: the machine policy's, else the configured one.
    pub fn guard_executable(&self) -> PathBuf {
        self.policy()
            .service
            .guard_executable
            .clone()
            .map_or_else(|| self.config.guard_executable.clone(), PathBuf::from)
    }

    /// Admits a new guard of `peer`'s account, or says why not. Only a process running
    /// the installed guard executable may be the guard; anything else is audited as an
    /// impostor (within a budget of its own per account, so a loop can neither flood the
    /// log nor spend the start budget the real guard's restart needs).
    fn admit_guard(&self, b: &Blocking, peer: &Peer) -> Result<(), GuardRefusal> {
        let refuse = |code, message: String| Err(GuardRefusal { code, message });
        if let Err(why) = self.check_guard_process(b, peer) {
            let admitted =
                self.with_guard_account(peer.uid, |a| a.impostors.admit(std::time::Instant::now()));
            if let Admission::Admit { suppressed_before } = admitted {
                let exe = peer.pid.map(peer::executable_of);
                let shown = match &exe {
                    Some(Ok(path)) => path.display().to_string(),
                    Some(Err(e)) => format!("unknown ({e})"),
                    None => "unknown (no pid)".to_owned(),
                };
                let audited = self.audit(
                    b,
                    self.draft(AuditKind::GuardImpostor, Some(peer))
                        .detail("exe", client_text(&shown))
                        .detail("uid", peer.uid)
                        .detail("pid", pid_text(peer.pid))
                        .detail("why", client_text(&why))
                        .detail("refused_unaudited_before", suppressed_before)
                        .detail("alert", "compliance"),
                );
                if let Err(e) = audited {
                    tracing::error!(event = "audit_failed", error = %e, "could not audit a guard impostor");
                }
            }
            tracing::warn!(
                event = "guard_impostor",
                account = peer.account,
                pid = peer.pid,
                why,
                "refused a guard impostor of {}",
                peer.account
            );
            return refuse(
                ErrorCode::NotAllowed,
                format!("only the installed guard may connect as the guard: {why}"),
            );
        }
        self.with_guard_account(peer.uid, |account| {
            if let Admission::Refuse { .. } = account.starts.admit(std::time::Instant::now()) {
                return refuse(
                    ErrorCode::Busy,
                    format!("more than {GUARD_STARTS_PER_MINUTE} guard starts a minute"),
                );
            }
            Ok(())
        })
    }

    /// Whether an admitted guard is still the installed guard and nothing else: code
    /// loaded into it since (a GTK module pushed over XSETTINGS, a library opened by
    /// one) makes it an impostor, audited, and its connection is then lost.
    pub(super) fn recheck_guard(&self, b: &Blocking, peer: &Peer) -> Result<(), String> {
        let checked = self.check_guard_process(b, peer);
        // A guard that exited (quit, crashed, killed) while it was checked is no impostor:
        // its connection ends, and that is audited as the guard lost.
        let exited = peer.pid.is_some_and(peer::has_exited);
        if let (Err(_), true) = (&checked, exited) {
            return Err("its process has exited".into());
        }
        if let Err(why) = &checked {
            let audited = self.audit(
                b,
                self.draft(AuditKind::GuardImpostor, Some(peer))
                    .detail("uid", peer.uid)
                    .detail("pid", pid_text(peer.pid))
                    .detail("why", client_text(&format!("after it was admitted: {why}")))
                    .detail("alert", "compliance"),
            );
            if let Err(e) = audited {
                tracing::error!(event = "audit_failed", error = %e, "could not audit a guard turned impostor");
            }
        }
        checked
    }

    /// Runs `f` on the guard bookkeeping of OS account `uid`.
    fn with_guard_account<T>(&self, uid: u32, f: impl FnOnce(&mut GuardAccount) -> T) -> T {
        let mut accounts = self.guard_accounts.lock().unwrap_or_else(|p| p.into_inner());
        f(accounts.entry(uid).or_insert_with(|| GuardAccount::new(std::time::Instant::now())))
    }

    /// The kernel's word on the peer process: it runs the installed guard's file (by
    /// device and inode, not by path), in the sessions' namespaces, with no library
    /// preloaded into it.
    fn check_guard_process(&self, _on: &Blocking, peer: &Peer) -> Result<(), String> {
        let pid = peer.pid.ok_or("the kernel did not say which process connected")?;
        let exe = peer::executable_of(pid)?;
        let expected = self.guard_executable();
        let running = peer::running_file(pid)?;
        let installed = peer::identity(&expected)?;
        // A package upgrade replaces the file under a running guard: the kernel then shows
        // its path as `PATH (deleted)`, and only whoever owns the installed one made it.
        let upgraded = same_executable(&exe, &expected)
            && exe.to_string_lossy().ends_with(" (deleted)")
            && running.uid == installed.uid;
        if running != installed && !upgraded {
            return Err(format!(
                "it runs {} ({running}), not the installed {} ({installed})",
                exe.display(),
                expected.display()
            ));
        }
        if let Some(why) = peer::foreign_namespaces(pid)? {
            return Err(why);
        }
        if let Some(why) = peer::foreign_code(pid, installed)? {
            return Err(why);
        }
        let injected = peer::code_injection_vars(pid)?;
        if !injected.is_empty() {
            return Err(format!("its environment loads other code into it ({})", injected.join(", ")));
        }
        Ok(())
    }

    /// Audits what the guard reports, with the pid it came from. Client text is cleaned
    /// and capped first.
    pub(super) fn record_event(
        &self,
        b: &Blocking,
        event: &GuardEvent,
        peer: &Peer,
        clinician: Option<String>,
    ) -> Result<(), ServiceError> {
        let d = |kind| self.draft(kind, Some(peer)).detail("pid", pid_text(peer.pid));
        let draft = match event {
            GuardEvent::WarningShown { seconds_left } => {
                d(AuditKind::WarningShown).detail("seconds_left", seconds_left)
            }
            GuardEvent::WarningCancelled {} => d(AuditKind::WarningCancelled),
            GuardEvent::Locked { reason, idle_secs, timeout_secs } => {
                let reason = serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_owned));
                let mut draft = d(AuditKind::Locked).detail("reason", reason.unwrap_or_default());
                // What the guard measured: the console charts the time from the last input
                // to the lock against the timeout.
                if let (Some(idle), Some(timeout)) = (idle_secs, timeout_secs) {
                    draft = draft.detail("idle_secs", idle).detail("timeout_secs", timeout);
                }
                draft
            }
            GuardEvent::LockFailed { what } => d(AuditKind::LockFailed).detail("what", client_text(what)),
            GuardEvent::KeymapHardened { actions } => {
                d(AuditKind::KeymapHardened).detail("actions", client_text(actions))
            }
            GuardEvent::LockScreenRestarted { reason } => {
                d(AuditKind::LockScreenRestarted).detail("reason", client_text(reason))
            }
            GuardEvent::SyntheticInputIgnored { device } => {
                d(AuditKind::SyntheticInputIgnored).detail("device", client_text(device))
            }
            GuardEvent::LockRestored {} => {
                d(AuditKind::LockFailed).detail("what", "restored: the lock holds again")
            }
            GuardEvent::PhiAppHidden { app, owner } => {
                with_owner(d(AuditKind::PhiAppHidden).detail("app", client_text(app)), owner)
            }
            GuardEvent::PhiAppHideFailed { app, why } => {
                d(AuditKind::PhiAppHideFailed).detail("app", client_text(app)).detail("why", client_text(why))
            }
            GuardEvent::PhiAppRestored { app, owner } => {
                with_owner(d(AuditKind::PhiAppRestored).detail("app", client_text(app)), owner)
            }
            GuardEvent::PhiAppClosed { app, owner, how, reason } => with_owner(
                d(AuditKind::PhiAppClosed)
                    .detail("app", client_text(app))
                    .detail("how", client_text(how))
                    .detail("reason", client_text(reason)),
                owner,
            ),
            GuardEvent::PhiAppCloseFailed { app, owner, reason, why } => with_owner(
                d(AuditKind::PhiAppCloseFailed)
                    .detail("app", client_text(app))
                    .detail("reason", client_text(reason))
                    .detail("why", client_text(why))
                    .detail("alert", "it"),
                owner,
            ),
            GuardEvent::IdleUnavailable { why } => d(AuditKind::LockFailed)
                .detail("what", "idle detection unavailable")
                .detail("why", client_text(why)),
        };
        let draft = match (event, clinician) {
            (GuardEvent::Locked { .. } | GuardEvent::WarningShown { .. }, Some(u)) => draft.user(u),
            (_, _) => draft,
        };
        self.audit(b, draft)?;
        Ok(())
    }
}

/// The kernel shows a running program whose file was since replaced (a package upgrade)
/// as `PATH (deleted)`; only whoever may write `PATH` could have put it there.
fn same_executable(running: &Path, expected: &Path) -> bool {
    let expected = expected.canonicalize().unwrap_or_else(|_| expected.to_path_buf());
    let running = running.to_string_lossy();
    let running = running.strip_suffix(" (deleted)").unwrap_or(&running);
    Path::new(running) == expected
}

/// The clinician a PHI window belonged to, as the guard reports it (the guard's word:
/// a detail, not the entry's user).
fn with_owner(draft: AuditDraft, owner: &Option<String>) -> AuditDraft {
    match owner {
        Some(owner) => draft.detail("owner", client_text(owner)),
        None => draft,
    }
}
