//! Session supervision: which OS sessions a trustworthy guard holds, which are behind
//! the lock, whom each belongs to, and the escalation ladder for a session that should be
//! guarded and is not: ask the OS for a lock, wait for a guard to confirm it, then end
//! the session (`lock.when_unguarded`).
//!
//! Pure, like [`crate::lock::Guard`]: the service hands in what happened with the time,
//! and carries out the [`Effect`]s it gets back in order (audit entries, OS calls whose
//! results come back in as inputs, lock state to persist). logind's `LockedHint` is
//! something the session's own account may set, so nothing here takes it as a
//! confirmation: only an admitted guard of the session reporting its lock confirms one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::clock::MonoTime;
use crate::policy::{Unguarded, ValidPolicy};
use crate::protocol::local::ClientRole;

/// One admitted guard's connection, as the service numbers them.
pub type ConnectionId = u64;
/// One walk of the escalation ladder.
pub type LadderId = u64;

/// A session runs one guard; two allow a restart to overlap the old one's exit.
pub const GUARDS_PER_ACCOUNT: u32 = 2;
/// The longest pause between two escalations of a session that stays unguarded.
pub const REESCALATE_AT_MOST_EVERY: Duration = Duration::from_secs(300);

/// What the ladder needs of the policy in force. A ladder keeps the rules it started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub when_unguarded: Unguarded,
    /// How long a requested lock may go unconfirmed.
    pub grace: Duration,
    /// A session no guard holds for twice this (time for a guard to start at login) is
    /// escalated.
    pub heartbeat_timeout: Duration,
}

impl Rules {
    pub fn of(policy: &ValidPolicy) -> Self {
        Self {
            when_unguarded: policy.lock.when_unguarded,
            grace: policy.lock.escalation_grace,
            heartbeat_timeout: policy.service.guard_heartbeat_timeout,
        }
    }
}

/// Where a guard runs: logind's session when it was found, else only its OS account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SessionKey {
    Os(String),
    Account(String),
}

impl SessionKey {
    fn of(session: Option<&str>, account: &str) -> Self {
        session.map_or_else(|| SessionKey::Account(account.to_owned()), |s| SessionKey::Os(s.to_owned()))
    }

    /// logind's name of the session, when known.
    pub fn os_session(&self) -> Option<&str> {
        match self {
            SessionKey::Os(path) => Some(path),
            SessionKey::Account(_) => None,
        }
    }
}

/// A guard that passed the service's process checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGuard {
    pub account: String,
    pub uid: u32,
    pub pid: Option<u32>,
    /// logind's session of the guard's process, looked up while it is alive.
    pub session: Option<String>,
    /// What the guard calls itself (client text, cleaned by the service).
    pub client: String,
}

/// Why a guard is not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{GUARDS_PER_ACCOUNT} guards of this account are connected already")]
pub struct TooManyGuards;

/// What an admitted guard reports that supervision cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The lock is in place (`locked`, or holding again after a failure).
    Locked,
    LockFailed {
        what: String,
    },
}

/// Something the service granted after checking credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Unlock {
        user: String,
    },
    Hold {
        user: String,
        in_a_row: u32,
    },
    /// The clinician signed out at the lock screen: the session stays locked.
    SignOut {
        user: String,
    },
}

/// How a guard's connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The guard closed it.
    Closed,
    /// Closed on the guard for a reason (heartbeat missed, protocol error, no longer
    /// the installed guard).
    Lost(String),
    ServiceStopping,
}

/// An active graphical session logind lists, whose account policy lets connect (so it
/// can and should have a guard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSession {
    pub path: String,
    pub uid: u32,
    pub account: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    GuardReported {
        conn: ConnectionId,
        report: Report,
    },
    /// A grant to a client of `account`: only a guard's unlock opens a screen, so only it
    /// makes the session its clinician's.
    Granted {
        role: ClientRole,
        account: String,
        grant: Grant,
    },
    QuitApproved {
        conn: ConnectionId,
        by: String,
    },
    ConnectionEnded {
        conn: ConnectionId,
        how: Ending,
    },
    /// logind's active sessions, listed now.
    ActiveSessions(Vec<ActiveSession>),
    /// What became of [`Effect::RequestLock`]: what was asked of whom, or the failure.
    LockRequested {
        ladder: LadderId,
        result: Result<String, String>,
    },
    /// What logind's `LockedHint` said, for the record only.
    LockedHintRead {
        ladder: LadderId,
        seen: String,
    },
    /// What became of [`Effect::Terminate`].
    Terminated {
        ladder: LadderId,
        result: Result<String, String>,
    },
    /// The deadline asked for has come.
    Tick,
}

/// What happened, to be audited exactly so. The service turns each into an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    GuardStarted {
        account: String,
        pid: Option<u32>,
        client: String,
    },
    GuardStopped {
        account: String,
        pid: Option<u32>,
        by: String,
    },
    GuardLost {
        account: String,
        pid: Option<u32>,
        why: String,
        when_unguarded: Unguarded,
    },
    EscalationRequested {
        account: String,
        session: Option<String>,
        why: String,
        lock_request: Result<String, String>,
        grace: Duration,
        then: Unguarded,
    },
    EscalationConfirmed {
        account: String,
        session: Option<String>,
        after: Duration,
        pid: Option<u32>,
    },
    EscalationUnconfirmed {
        account: String,
        session: Option<String>,
        after: Duration,
        locked_hint: String,
        then: Unguarded,
    },
    SessionTerminated {
        account: String,
        session: Option<String>,
        ended: String,
    },
    SessionTerminateFailed {
        account: String,
        session: Option<String>,
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Audit(Record),
    /// Keep whether `account`'s session is behind the lock across restarts.
    Persist {
        account: String,
        locked: bool,
    },
    /// Ask the OS to lock `session` (every session when unknown); answer with
    /// [`Input::LockRequested`].
    RequestLock {
        ladder: LadderId,
        session: Option<String>,
    },
    /// Read logind's `LockedHint`; answer with [`Input::LockedHintRead`].
    ReadLockedHint {
        ladder: LadderId,
        session: String,
    },
    /// End `session` (every session of `uid` when unknown); answer with [`Input::Terminated`].
    Terminate {
        ladder: LadderId,
        session: Option<String>,
        uid: u32,
    },
}

#[derive(Debug, Clone)]
struct Guard {
    account: String,
    uid: u32,
    pid: Option<u32>,
    session: SessionKey,
    quit_approved_by: Option<String>,
}

/// What is known of one OS account's session.
#[derive(Debug, Clone, Default)]
struct Account {
    /// Behind the lock: a guard that starts for it is told to lock at once.
    locked: bool,
    /// The clinician the session is attributed to (the last one who unlocked).
    clinician: Option<String>,
    /// Holds granted one after another since the last ordinary unlock.
    holds_in_a_row: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The lock request is out; a confirmation may already arrive.
    Requesting,
    /// Waiting for a guard to confirm, until `started + grace`.
    Waiting,
    /// Unconfirmed: reading what logind's hint says, for the record.
    ReadingHint,
    /// Ending the session.
    Terminating,
}

#[derive(Debug, Clone)]
struct Ladder {
    key: SessionKey,
    account: String,
    uid: u32,
    why: String,
    rules: Rules,
    started: MonoTime,
    phase: Phase,
    /// A guard's confirmation that came while the request was still out (its pid).
    confirmed: Option<Option<u32>>,
}

impl Ladder {
    fn undecided(&self) -> bool {
        matches!(self.phase, Phase::Requesting | Phase::Waiting)
    }

    fn session(&self) -> Option<String> {
        self.key.os_session().map(str::to_owned)
    }
}

/// The supervision of every session on the workstation.
#[derive(Debug, Clone, Default)]
pub struct Supervision {
    guards: BTreeMap<ConnectionId, Guard>,
    next_connection: ConnectionId,
    accounts: BTreeMap<String, Account>,
    ladders: BTreeMap<LadderId, Ladder>,
    next_ladder: LadderId,
    /// Per unguarded session (logind's path), from when it was first seen so: when to
    /// escalate next, and the pause after that.
    unguarded: BTreeMap<String, (MonoTime, Duration)>,
}

impl Supervision {
    /// Starts with the accounts whose sessions were behind the lock when the service
    /// last ran.
    pub fn new(locked_accounts: impl IntoIterator<Item = String>) -> Self {
        let mut supervision = Self::default();
        for account in locked_accounts {
            supervision.accounts.entry(account).or_default().locked = true;
        }
        supervision
    }

    /// Admits a guard (its process already checked): its connection's number, and what
    /// to do. A guard of an account whose session is behind the lock must lock first
    /// (see [`Self::must_lock`]).
    pub fn admit(&mut self, guard: NewGuard) -> Result<(ConnectionId, Vec<Effect>), TooManyGuards> {
        let connected = self.guards.values().filter(|g| g.uid == guard.uid).count();
        if u32::try_from(connected).unwrap_or(u32::MAX) >= GUARDS_PER_ACCOUNT {
            return Err(TooManyGuards);
        }
        let conn = self.next_connection;
        self.next_connection += 1;
        self.guards.insert(
            conn,
            Guard {
                account: guard.account.clone(),
                uid: guard.uid,
                pid: guard.pid,
                session: SessionKey::of(guard.session.as_deref(), &guard.account),
                quit_approved_by: None,
            },
        );
        let record = Record::GuardStarted { account: guard.account, pid: guard.pid, client: guard.client };
        Ok((conn, vec![Effect::Audit(record)]))
    }

    /// Whether a guard of `account` must lock before anything else: its session was left
    /// behind the lock (by a guard since gone, or an escalation).
    pub fn must_lock(&self, account: &str) -> bool {
        self.accounts.get(account).is_some_and(|a| a.locked)
    }

    /// The clinician `account`'s session is attributed to.
    pub fn clinician(&self, account: &str) -> Option<&str> {
        self.accounts.get(account).and_then(|a| a.clinician.as_deref())
    }

    pub fn holds_in_a_row(&self, account: &str) -> u32 {
        self.accounts.get(account).map_or(0, |a| a.holds_in_a_row)
    }

    pub fn guards_connected(&self) -> u32 {
        u32::try_from(self.guards.len()).unwrap_or(u32::MAX)
    }

    /// Escalations asked for and not yet decided (confirmed or not).
    pub fn escalations_active(&self) -> u32 {
        u32::try_from(self.ladders.values().filter(|l| l.undecided()).count()).unwrap_or(u32::MAX)
    }

    /// When to hand in [`Input::Tick`] next, if anything waits for time.
    pub fn next_deadline(&self) -> Option<MonoTime> {
        self.ladders.values().filter(|l| l.phase == Phase::Waiting).map(|l| l.started + l.rules.grace).min()
    }

    pub fn handle(&mut self, now: MonoTime, rules: Rules, input: Input) -> Vec<Effect> {
        let mut effects = Vec::new();
        match input {
            Input::GuardReported { conn, report } => {
                let Some(guard) = self.guards.get(&conn).cloned() else { return effects };
                match report {
                    Report::Locked => {
                        self.set_locked(&guard.account, true, &mut effects);
                        self.confirm(&guard, now, &mut effects);
                    }
                    Report::LockFailed { what } => {
                        let target = Target::of(&guard, format!("lock_failed: {what}"));
                        self.escalate(target, now, rules, &mut effects);
                    }
                }
            }
            Input::Granted { role: ClientRole::Tool, .. } => {}
            Input::Granted { role: ClientRole::Guard, account, grant } => match grant {
                Grant::Unlock { user } => {
                    let a = self.accounts.entry(account.clone()).or_default();
                    a.clinician = Some(user);
                    a.holds_in_a_row = 0;
                    self.set_locked(&account, false, &mut effects);
                }
                Grant::Hold { user, in_a_row } => {
                    let a = self.accounts.entry(account.clone()).or_default();
                    a.clinician = Some(user);
                    a.holds_in_a_row = in_a_row;
                    self.set_locked(&account, false, &mut effects);
                }
                Grant::SignOut { user } => {
                    if let Some(a) = self.accounts.get_mut(&account) {
                        if a.clinician.as_deref() == Some(user.as_str()) {
                            a.clinician = None;
                        }
                    }
                }
            },
            Input::QuitApproved { conn, by } => {
                if let Some(guard) = self.guards.get_mut(&conn) {
                    guard.quit_approved_by = Some(by);
                }
            }
            Input::ConnectionEnded { conn, how } => {
                let Some(guard) = self.guards.remove(&conn) else { return effects };
                let why = match (how, guard.quit_approved_by.clone()) {
                    (Ending::ServiceStopping, _) => return effects,
                    (Ending::Closed, Some(by)) => {
                        let record = Record::GuardStopped { account: guard.account, pid: guard.pid, by };
                        effects.push(Effect::Audit(record));
                        return effects;
                    }
                    (Ending::Closed, None) => "disconnected without an administrator's approval".to_owned(),
                    (Ending::Lost(why), _) => why,
                };
                effects.push(Effect::Audit(Record::GuardLost {
                    account: guard.account.clone(),
                    pid: guard.pid,
                    why: why.clone(),
                    when_unguarded: rules.when_unguarded,
                }));
                self.escalate(Target::of(&guard, format!("guard_lost: {why}")), now, rules, &mut effects);
            }
            Input::ActiveSessions(sessions) => self.watch(sessions, now, rules, &mut effects),
            Input::LockRequested { ladder: id, result } => {
                let Some(ladder) = self.ladders.get_mut(&id).filter(|l| l.phase == Phase::Requesting) else {
                    return effects;
                };
                ladder.phase = Phase::Waiting;
                effects.push(Effect::Audit(Record::EscalationRequested {
                    account: ladder.account.clone(),
                    session: ladder.session(),
                    why: ladder.why.clone(),
                    lock_request: result,
                    grace: ladder.rules.grace,
                    then: ladder.rules.when_unguarded,
                }));
                if let Some(pid) = ladder.confirmed {
                    self.confirmed(id, pid, now, &mut effects);
                } else {
                    self.check_deadline(id, now, &mut effects);
                }
            }
            Input::Tick => {
                let waiting: Vec<LadderId> = self
                    .ladders
                    .iter()
                    .filter(|(_, l)| l.phase == Phase::Waiting)
                    .map(|(id, _)| *id)
                    .collect();
                for id in waiting {
                    self.check_deadline(id, now, &mut effects);
                }
            }
            Input::LockedHintRead { ladder: id, seen } => {
                if self.ladders.get(&id).is_some_and(|l| l.phase == Phase::ReadingHint) {
                    self.unconfirmed(id, now, seen, &mut effects);
                }
            }
            Input::Terminated { ladder: id, result } => {
                let Some(ladder) = self.ladders.get(&id).filter(|l| l.phase == Phase::Terminating) else {
                    return effects;
                };
                let (account, session) = (ladder.account.clone(), ladder.session());
                effects.push(Effect::Audit(match result {
                    Ok(ended) => Record::SessionTerminated { account, session, ended },
                    Err(error) => Record::SessionTerminateFailed { account, session, error },
                }));
                self.ladders.remove(&id);
            }
        }
        effects
    }

    fn set_locked(&mut self, account: &str, locked: bool, effects: &mut Vec<Effect>) {
        let a = self.accounts.entry(account.to_owned()).or_default();
        if a.locked != locked {
            a.locked = locked;
            effects.push(Effect::Persist { account: account.to_owned(), locked });
        }
    }

    /// A guard reports its lock in place: that confirms the escalations of its session.
    /// A guard whose session logind did not name confirms its account's.
    fn confirm(&mut self, guard: &Guard, now: MonoTime, effects: &mut Vec<Effect>) {
        let confirmable: Vec<LadderId> = self
            .ladders
            .iter()
            .filter(|(_, l)| l.undecided())
            .filter(|(_, l)| {
                l.key == guard.session
                    || (matches!(guard.session, SessionKey::Account(_)) && l.account == guard.account)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in confirmable {
            let Some(ladder) = self.ladders.get_mut(&id) else { continue };
            match ladder.phase {
                Phase::Requesting => ladder.confirmed = Some(guard.pid),
                _ => self.confirmed(id, guard.pid, now, effects),
            }
        }
    }

    fn confirmed(&mut self, id: LadderId, pid: Option<u32>, now: MonoTime, effects: &mut Vec<Effect>) {
        if let Some(ladder) = self.ladders.remove(&id) {
            effects.push(Effect::Audit(Record::EscalationConfirmed {
                account: ladder.account,
                session: ladder.key.os_session().map(str::to_owned),
                after: now.saturating_since(ladder.started),
                pid,
            }));
        }
    }

    /// A waiting ladder past its grace goes on unconfirmed.
    fn check_deadline(&mut self, id: LadderId, now: MonoTime, effects: &mut Vec<Effect>) {
        let Some(ladder) = self.ladders.get_mut(&id) else { return };
        if ladder.phase != Phase::Waiting || now < ladder.started + ladder.rules.grace {
            return;
        }
        match ladder.session() {
            Some(session) => {
                ladder.phase = Phase::ReadingHint;
                effects.push(Effect::ReadLockedHint { ladder: id, session });
            }
            None => self.unconfirmed(id, now, "unknown (no session)".to_owned(), effects),
        }
    }

    fn unconfirmed(&mut self, id: LadderId, now: MonoTime, locked_hint: String, effects: &mut Vec<Effect>) {
        let Some(ladder) = self.ladders.get_mut(&id) else { return };
        effects.push(Effect::Audit(Record::EscalationUnconfirmed {
            account: ladder.account.clone(),
            session: ladder.session(),
            after: now.saturating_since(ladder.started),
            locked_hint,
            then: ladder.rules.when_unguarded,
        }));
        if ladder.rules.when_unguarded == Unguarded::Logoff {
            ladder.phase = Phase::Terminating;
            effects.push(Effect::Terminate { ladder: id, session: ladder.session(), uid: ladder.uid });
        } else {
            self.ladders.remove(&id);
        }
    }

    /// Starts the ladder for `target`, unless one undecided runs for that session
    /// already. From here on a guard that (re)connects for the account locks first.
    fn escalate(&mut self, target: Target, now: MonoTime, rules: Rules, effects: &mut Vec<Effect>) {
        if rules.when_unguarded == Unguarded::AuditOnly {
            return;
        }
        if self.ladders.values().any(|l| l.undecided() && l.key == target.key) {
            return;
        }
        self.set_locked(&target.account, true, effects);
        let id = self.next_ladder;
        self.next_ladder += 1;
        let session = target.key.os_session().map(str::to_owned);
        self.ladders.insert(
            id,
            Ladder {
                key: target.key,
                account: target.account,
                uid: target.uid,
                why: target.why,
                rules,
                started: now,
                phase: Phase::Requesting,
                confirmed: None,
            },
        );
        effects.push(Effect::RequestLock { ladder: id, session });
    }

    /// An active session that no guard has held for twice the heartbeat timeout is
    /// escalated, and again while it stays unguarded (after the same allowance, then at
    /// doubling intervals up to [`REESCALATE_AT_MOST_EVERY`]): a ladder that ended
    /// without a logoff is never the last word.
    fn watch(
        &mut self,
        sessions: Vec<ActiveSession>,
        now: MonoTime,
        rules: Rules,
        effects: &mut Vec<Effect>,
    ) {
        let guarded: BTreeSet<&str> = self.guards.values().filter_map(|g| g.session.os_session()).collect();
        let unguarded: Vec<ActiveSession> =
            sessions.into_iter().filter(|s| !guarded.contains(s.path.as_str())).collect();
        self.unguarded.retain(|path, _| unguarded.iter().any(|s| &s.path == path));
        let allowance = rules.heartbeat_timeout * 2;
        for s in unguarded {
            let (due, pause) = *self.unguarded.entry(s.path.clone()).or_insert((now + allowance, allowance));
            if now < due {
                continue;
            }
            self.unguarded.insert(s.path.clone(), (now + pause, (pause * 2).min(REESCALATE_AT_MOST_EVERY)));
            let target = Target {
                key: SessionKey::Os(s.path),
                account: s.account,
                uid: s.uid,
                why: "no guard connected for an active session".into(),
            };
            self.escalate(target, now, rules, effects);
        }
    }
}

/// A session to escalate, and why.
#[derive(Debug)]
struct Target {
    key: SessionKey,
    account: String,
    uid: u32,
    why: String,
}

impl Target {
    fn of(guard: &Guard, why: String) -> Self {
        Self { key: guard.session.clone(), account: guard.account.clone(), uid: guard.uid, why }
    }
}

#[cfg(test)]
mod tests;
