//! The guards: who may be one, what they report, how their connections end, and what
//! the service does when no trustworthy guard holds a session that should be guarded:
//! the escalation ladder (ask for a lock, wait for a confirmation, then end the session).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use wardlock_core::audit::{AuditDraft, AuditKind};
use wardlock_core::policy::Unguarded;
use wardlock_core::protocol::local::{ErrorCode, GuardEvent};

use super::{client_text, Service, ServiceError};
use crate::peer::{self, Peer};
use crate::throttle::{Admission, AttemptBudget};

/// A session runs one guard; two allow a restart to overlap the old one's exit.
const GUARDS_PER_ACCOUNT: u32 = 2;
const GUARD_STARTS_PER_MINUTE: u32 = 20;
/// Longest any one logind call of the ladder may take before it counts as failed: a hung
/// bus must not hold back the entries that say what happened.
const OS_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between two escalations of a session that stays unguarded: the
/// watch escalates again after twice the heartbeat timeout, then at doubling intervals up
/// to this, for as long as no guard holds the session.
const REESCALATE_AT_MOST_EVERY: Duration = Duration::from_secs(300);

/// Impostor entries audited per minute and account; the rest are counted in the next.
const IMPOSTOR_AUDITS_PER_MINUTE: u32 = 20;

/// The guards of one OS account: how many are connected, how fast real ones start, and
/// how many impostors are audited.
#[derive(Debug)]
pub(super) struct GuardAccount {
    connected: u32,
    starts: AttemptBudget,
    impostors: AttemptBudget,
}

impl GuardAccount {
    fn new(now: std::time::Instant) -> Self {
        Self {
            connected: 0,
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

/// A session that should be guarded and is not held by a trustworthy guard.
#[derive(Debug, Clone)]
pub struct UnguardedSession {
    /// The logind session, when it was known.
    pub session: Option<String>,
    pub account: String,
    pub uid: u32,
    /// What happened (`guard_lost: heartbeat missed`, `lock_failed: …`).
    pub why: String,
}

impl UnguardedSession {
    fn key(&self) -> String {
        session_key(self.session.as_deref(), &self.account)
    }
}

fn session_key(session: Option<&str>, account: &str) -> String {
    session.map_or_else(|| format!("account:{account}"), str::to_owned)
}

/// Who confirmed that a requested lock is in place: only an admitted guard of the
/// session. logind's `LockedHint` is no confirmation: the session's own account may set
/// it (`SetLockedHint` needs no privilege), so it is recorded as seen, never trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Confirmation {
    Guard { pid: Option<u32> },
}

/// An escalation in progress: whose session it is, and where its confirmation goes.
#[derive(Debug)]
struct Escalating {
    /// Tells this ladder from a later one of the same session.
    id: u64,
    account: String,
    confirm: watch::Sender<Option<Confirmation>>,
}

/// Escalations in progress, by session.
#[derive(Debug, Default)]
pub(super) struct Escalations {
    active: std::sync::Mutex<std::collections::HashMap<String, Escalating>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Escalations {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Escalating>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn count(&self) -> u32 {
        u32::try_from(self.lock().len()).unwrap_or(u32::MAX)
    }

    /// Ladder `id` of `key` is decided (or stopped): it no longer waits for anything.
    fn finish(&self, key: &str, id: u64) {
        let mut active = self.lock();
        if active.get(key).is_some_and(|e| e.id == id) {
            active.remove(key);
        }
    }
}

/// `/proc/sys/kernel/yama/ptrace_scope`, where the kernel has Yama.
pub fn ptrace_scope() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok()?.trim().parse().ok()
}

impl Service {
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
    pub fn admit_guard(&self, peer: &Peer) -> Result<(), GuardRefusal> {
        let refuse = |code, message: String| Err(GuardRefusal { code, message });
        let connected = self.with_guard_account(peer.uid, |account| account.connected);
        if connected >= GUARDS_PER_ACCOUNT {
            return refuse(
                ErrorCode::Busy,
                format!("{GUARDS_PER_ACCOUNT} guards of this account are connected already"),
            );
        }
        if let Err(why) = self.check_guard_process(peer) {
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
                    self.draft(AuditKind::GuardImpostor, Some(peer))
                        .detail("exe", client_text(&shown))
                        .detail("uid", peer.uid)
                        .detail("pid", pid_text(peer.pid))
                        .detail("why", client_text(&why))
                        .detail("refused_unaudited_before", suppressed_before)
                        .detail("alert", "compliance"),
                );
                if let Err(e) = audited {
                    eprintln!("wardlockd: could not audit a guard impostor: {e}");
                }
            }
            eprintln!(
                "wardlockd: refused a guard impostor of {} (pid {}): {why}",
                peer.account,
                pid_text(peer.pid)
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
            if account.connected >= GUARDS_PER_ACCOUNT {
                return refuse(
                    ErrorCode::Busy,
                    format!("{GUARDS_PER_ACCOUNT} guards of this account are connected already"),
                );
            }
            account.connected += 1;
            Ok(())
        })
    }

    /// Whether an admitted guard is still the installed guard and nothing else: code
    /// loaded into it since (a GTK module pushed over XSETTINGS, a library opened by
    /// one) makes it an impostor, audited, and its connection is then lost.
    pub fn recheck_guard(&self, peer: &Peer) -> Result<(), String> {
        let checked = self.check_guard_process(peer);
        if let Err(why) = &checked {
            let audited = self.audit(
                self.draft(AuditKind::GuardImpostor, Some(peer))
                    .detail("uid", peer.uid)
                    .detail("pid", pid_text(peer.pid))
                    .detail("why", client_text(&format!("after it was admitted: {why}")))
                    .detail("alert", "compliance"),
            );
            if let Err(e) = audited {
                eprintln!("wardlockd: could not audit a guard turned impostor: {e}");
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
    fn check_guard_process(&self, peer: &Peer) -> Result<(), String> {
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

    fn release_guard(&self, peer: &Peer, session: Option<&str>) {
        self.guards.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(session) = session {
            let mut guarded = self.guarded_sessions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = guarded.get_mut(session) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    guarded.remove(session);
                }
            }
        }
        self.with_guard_account(peer.uid, |account| account.connected = account.connected.saturating_sub(1));
    }

    /// Audits what the guard reports, with the pid it came from. Client text is cleaned
    /// and capped first.
    pub fn record_event(&self, event: &GuardEvent, peer: &Peer) -> Result<(), ServiceError> {
        let d = |kind| self.draft(kind, Some(peer)).detail("pid", pid_text(peer.pid));
        let draft = match event {
            GuardEvent::WarningShown { seconds_left } => {
                d(AuditKind::WarningShown).detail("seconds_left", seconds_left)
            }
            GuardEvent::WarningCancelled {} => d(AuditKind::WarningCancelled),
            GuardEvent::Locked { reason } => {
                let reason = serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_owned));
                d(AuditKind::Locked).detail("reason", reason.unwrap_or_default())
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
        let user = self.session_user.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let draft = match (event, user) {
            (GuardEvent::Locked { .. } | GuardEvent::WarningShown { .. }, Some(u)) => draft.user(u),
            (_, _) => draft,
        };
        self.audit(draft)?;
        Ok(())
    }

    /// Remembers whether this account's session is behind the lock, across guard restarts
    /// and restarts of the service itself (kept in the database too).
    pub fn set_session_locked(&self, account: &str, locked: bool) {
        let mut accounts = self.locked_accounts.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if locked { accounts.insert(account.to_owned()) } else { accounts.remove(account) };
        if changed || locked {
            let value = if locked { "1" } else { "0" };
            if let Err(e) = self.store().set_meta(&format!("session_locked:{account}"), value) {
                eprintln!("wardlockd: could not record the lock state of {account}: {e}");
            }
        }
    }

    pub fn session_locked(&self, account: &str) -> bool {
        let mut accounts = self.locked_accounts.lock().unwrap_or_else(|p| p.into_inner());
        if accounts.contains(account) {
            return true;
        }
        let stored = self.store().meta(&format!("session_locked:{account}")).ok().flatten();
        if stored.as_deref() == Some("1") {
            accounts.insert(account.to_owned());
            return true;
        }
        false
    }

    /// A guard of `session` (as logind named it) is connected and admitted.
    pub fn guard_started(
        &self,
        peer: &Peer,
        session: Option<&str>,
        client: &str,
    ) -> Result<(), ServiceError> {
        self.guards.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(session) = session {
            *self
                .guarded_sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(session.to_owned())
                .or_default() += 1;
        }
        self.audit(
            self.draft(AuditKind::GuardStarted, Some(peer))
                .detail("client", client_text(client))
                .detail("pid", pid_text(peer.pid)),
        )?;
        Ok(())
    }

    /// The guard left with an administrator's approval.
    pub fn guard_stopped(&self, peer: &Peer, session: Option<&str>, admin: &str) -> Result<(), ServiceError> {
        self.release_guard(peer, session);
        self.audit(
            self.draft(AuditKind::GuardStopped, Some(peer))
                .detail("by", admin)
                .detail("pid", pid_text(peer.pid)),
        )?;
        Ok(())
    }

    /// The guard vanished or fell silent: audited, and the session is escalated per
    /// policy (the entries of the ladder follow this one).
    pub fn guard_lost(&self, peer: &Peer, session: Option<&str>, why: &str) -> Result<(), ServiceError> {
        self.release_guard(peer, session);
        self.audit(
            self.draft(AuditKind::GuardLost, Some(peer))
                .detail("why", why)
                .detail("pid", pid_text(peer.pid))
                .detail("when_unguarded", self.policy().lock.when_unguarded.as_str())
                .detail("alert", "compliance"),
        )?;
        Ok(())
    }

    /// A trustworthy guard reports the lock in place (`locked`, or its lock holding again
    /// after a failure): that confirms an escalation of its session.
    pub fn lock_reported(&self, session: Option<&str>, account: &str, pid: Option<u32>) {
        let key = session_key(session, account);
        let escalations = self.escalations.lock();
        // A guard whose session logind did not name confirms its account's escalations.
        for (k, escalating) in escalations.iter() {
            if *k == key || (session.is_none() && escalating.account == account) {
                escalating.confirm.send_replace(Some(Confirmation::Guard { pid }));
            }
        }
    }

    /// Starts the escalation ladder for `target`, unless one runs for that session
    /// already. From here on a guard that (re)connects for this account is told to lock
    /// before anything else. Needs a tokio runtime.
    pub fn escalate(self: &Arc<Self>, target: UnguardedSession) {
        if self.policy().lock.when_unguarded == Unguarded::AuditOnly {
            return;
        }
        let (confirm, confirmed) = watch::channel(None);
        let id = self.escalations.next_id.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        {
            let mut escalations = self.escalations.lock();
            if escalations.contains_key(&target.key()) {
                return;
            }
            escalations.insert(target.key(), Escalating { id, account: target.account.clone(), confirm });
        }
        self.set_session_locked(&target.account, true);
        let service = self.clone();
        tokio::spawn(async move {
            let key = target.key();
            if let Err(e) = service.clone().walk_ladder(target, confirmed, id).await {
                eprintln!("wardlockd: could not audit an escalation step: {e}");
            }
            // Also when a step could not be audited and the ladder stopped early.
            service.escalations.finish(&key, id);
        });
    }

    async fn walk_ladder(
        self: Arc<Self>,
        target: UnguardedSession,
        mut confirmed: watch::Receiver<Option<Confirmation>>,
        id: u64,
    ) -> Result<(), ServiceError> {
        let policy = self.policy();
        let (mode, grace) = (policy.lock.when_unguarded, policy.lock.escalation_grace);
        let started = Instant::now();
        let deadline = started + grace;
        let step = |kind| {
            self.draft(kind, None)
                .os_account(Some(target.account.clone()))
                .detail("session", target.session.as_deref().unwrap_or("unknown"))
                .detail("alert", "compliance")
        };

        let request =
            match os_call(OS_CALL_TIMEOUT.min(grace), self.sessions.request_lock(target.session.clone()))
                .await
            {
                Ok(what) => format!("sent to {what}"),
                Err(e) => format!("failed: {e}"),
            };
        let then = match mode {
            Unguarded::Logoff => "logoff",
            _ => "nothing more (lock.when_unguarded = lock_only)",
        };
        self.audit_async(
            step(AuditKind::EscalationRequested)
                .detail("why", client_text(&target.why))
                .detail("lock_request", client_text(&request))
                .detail("grace_secs", grace.as_secs())
                .detail("unconfirmed_then", then),
        )
        .await?;
        eprintln!("wardlockd: escalating {} ({}): lock requested, {request}", target.key(), target.why);

        let mut confirmable = true;
        let confirmation = loop {
            if let Some(c) = confirmed.borrow_and_update().clone() {
                break Some(c);
            }
            tokio::select! {
                changed = confirmed.changed(), if confirmable => confirmable = changed.is_ok(),
                _ = tokio::time::sleep_until(deadline) => break None,
            }
        };
        let waited = started.elapsed();
        // Decided: no longer waiting for a confirmation (status says so from here on).
        self.escalations.finish(&target.key(), id);
        match confirmation {
            Some(Confirmation::Guard { pid }) => {
                self.audit_async(
                    step(AuditKind::EscalationConfirmed)
                        .detail("after_ms", waited.as_millis())
                        .detail("by", "guard")
                        .detail("pid", pid_text(pid)),
                )
                .await?;
                eprintln!("wardlockd: escalation of {} confirmed", target.key());
                return Ok(());
            }
            None => {
                let hint = self.locked_hint_seen(target.session.clone()).await;
                self.audit_async(
                    step(AuditKind::EscalationUnconfirmed)
                        .detail("after_secs", waited.as_secs())
                        .detail("locked_hint", hint)
                        .detail("next", then),
                )
                .await?;
                eprintln!(
                    "wardlockd: escalation of {} unconfirmed after {} s; next: {then}",
                    target.key(),
                    waited.as_secs()
                );
            }
        }
        if mode != Unguarded::Logoff {
            return Ok(());
        }
        match os_call(OS_CALL_TIMEOUT, self.sessions.terminate(target.session.clone(), target.uid)).await {
            Ok(what) => {
                self.audit_async(step(AuditKind::SessionTerminated).detail("ended", client_text(&what)))
                    .await?;
                eprintln!("wardlockd: ended {what}: no guard confirmed its lock");
            }
            Err(e) => {
                self.audit_async(step(AuditKind::SessionTerminateFailed).detail("error", client_text(&e)))
                    .await?;
                eprintln!("wardlockd: could not end {}: {e}", target.key());
            }
        }
        Ok(())
    }

    /// Watches logind's active graphical sessions: one that no guard has held for twice
    /// `service.guard_heartbeat_timeout` (time enough for a guard to start at login) is
    /// escalated, and escalated again while it stays unguarded (after the same allowance,
    /// then at doubling intervals up to `REESCALATE_AT_MOST_EVERY`): a ladder that ended
    /// without a logoff (`lock_only`, a failed `Terminate`) is never the last word.
    /// Sessions of accounts that policy does not let connect cannot have a guard and are
    /// left alone. Ends at `shutdown`.
    pub async fn watch_sessions(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // Per unguarded session, from when it was first seen so: when to escalate next,
        // and the pause after that.
        let mut next_escalation: std::collections::HashMap<String, (Instant, Duration)> = Default::default();
        let mut reported_unreachable = false;
        loop {
            let policy = self.policy();
            let period = policy.service.guard_heartbeat_timeout;
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.changed() => return,
            }
            let sessions = match os_call(OS_CALL_TIMEOUT, self.sessions.active_sessions()).await {
                Ok(sessions) => {
                    reported_unreachable = false;
                    sessions
                }
                Err(e) => {
                    if !std::mem::replace(&mut reported_unreachable, true) {
                        eprintln!("wardlockd: cannot list the OS sessions, so sessions without a guard go unseen: {e}");
                    }
                    continue;
                }
            };
            let guarded: std::collections::HashSet<String> =
                self.guarded_sessions.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
            let now = Instant::now();
            let unguarded: Vec<_> = sessions
                .into_iter()
                .filter(|s| !guarded.contains(&s.path))
                .filter(|s| {
                    let (users, groups) = (&policy.service.allowed_users, &policy.service.allowed_groups);
                    (users.is_empty() && groups.is_empty()) || users.contains(&s.account) || {
                        let peer = peer::of_account(s.uid);
                        groups.iter().any(|g| peer.groups.contains(g))
                    }
                })
                .collect();
            next_escalation.retain(|path, _| unguarded.iter().any(|s| &s.path == path));
            for s in unguarded {
                let allowance = period * 2;
                let (due, pause) =
                    *next_escalation.entry(s.path.clone()).or_insert((now + allowance, allowance));
                if now < due {
                    continue;
                }
                next_escalation
                    .insert(s.path.clone(), (now + pause, (pause * 2).min(REESCALATE_AT_MOST_EVERY)));
                eprintln!("wardlockd: no guard holds the active session {} of {}", s.path, s.account);
                self.escalate(UnguardedSession {
                    session: Some(s.path),
                    account: s.account,
                    uid: s.uid,
                    why: "no guard connected for an active session".into(),
                });
            }
        }
    }

    /// What logind's `LockedHint` of the session says, for the audit only: the session's
    /// own account can set it, so it confirms nothing.
    async fn locked_hint_seen(&self, session: Option<String>) -> String {
        let Some(session) = session else { return "unknown (no session)".to_owned() };
        match os_call(OS_CALL_TIMEOUT, self.sessions.locked_hint(session)).await {
            Ok(true) => "true (settable by the session's own account: not evidence)".to_owned(),
            Ok(false) => "false".to_owned(),
            Err(e) => client_text(&format!("unreadable: {e}")),
        }
    }

    async fn audit_async(
        self: &Arc<Self>,
        draft: wardlock_core::audit::AuditDraft,
    ) -> Result<u64, ServiceError> {
        let service = self.clone();
        tokio::task::spawn_blocking(move || service.audit(draft))
            .await
            .map_err(|e| ServiceError::Worker(e.to_string()))?
    }
}

/// A call to the OS that may hang (a stuck bus): no answer in `limit` is a failure too.
async fn os_call<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", limit.as_secs())))
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
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
