//! Audit entries and their SHA-256 hash chain.
//!
//! Each entry's hash covers the previous entry's hash and the entry's canonical
//! encoding, so editing, deleting or reordering any entry breaks the chain from there on.
//! The canonical encoding is length-prefixed (every field as a big-endian u32 length and
//! its bytes, in a fixed order), so no two different entries encode alike, and it is
//! streamed into the hasher without allocating.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::UtcMillis;

/// The chain of a new log starts from this "previous hash".
pub const GENESIS_HASH: [u8; 32] = [0; 32];
const ENCODING_VERSION: &[u8] = b"wardlock-audit-v1";

/// What happened. Stored and exported by its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    ServiceStarted,
    ServiceStopped,
    ServiceUncleanStop,
    GuardStarted,
    GuardStopped,
    GuardLost,
    EscalationRequested,
    EscalationConfirmed,
    EscalationUnconfirmed,
    SessionTerminated,
    SessionTerminateFailed,
    GuardImpostor,
    CredentialsResealed,
    PolicyApplied,
    PolicyRefused,
    WarningShown,
    WarningCancelled,
    Locked,
    LockFailed,
    SyntheticInputIgnored,
    KeymapHardened,
    LockScreenRestarted,
    UnlockSucceeded,
    UnlockFailed,
    AdminApproved,
    AttemptsRateLimited,
    UserLockedOut,
    WorkstationLockedOut,
    EmergencyAccess,
    /// Break-glass closed until the workstation's lockout ends (failed break-glass
    /// attempts during it).
    EmergencyAccessClosed,
    PhiAppHidden,
    PhiAppRestored,
    PhiAppClosed,
    PhiAppCloseFailed,
    PhiAppHideFailed,
    SignedOut,
    HoldStarted,
    HoldRefused,
    UserAdded,
    UserChanged,
    UserDisabled,
    SyncGap,
    SyncBacklog,
    CollectorEnrolled,
    /// The database was made on another machine (an image cloned onto this one): set
    /// aside whole, and this machine's own identity begun.
    WorkstationIdentityMade,
    CollectorConflict,
    AdminGrantRefused,
    /// The directory names a user who exists here as a local user: the local one stays.
    DirectoryConflict,
    TamperDetected,
    Heartbeat,
}

/// What a workstation's latest entries say it is doing (silence is the collector's to
/// judge, from its last heartbeat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WorkstationState {
    /// Unlocked, someone at it.
    Active,
    /// Idle, the lock's warning showing.
    Warning,
    Locked,
    /// No guard holds the session (lost, killed, impostor): unprotected until escalation.
    GuardLost,
    /// The session was ended (escalation or sign-out).
    LoggedOff,
    /// Not heard from for longer than the collector allows.
    Silent,
}

impl WorkstationState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkstationState::Active => "active",
            WorkstationState::Warning => "warning",
            WorkstationState::Locked => "locked",
            WorkstationState::GuardLost => "guard_lost",
            WorkstationState::LoggedOff => "logged_off",
            WorkstationState::Silent => "silent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Warning, Self::Locked, Self::GuardLost, Self::LoggedOff, Self::Silent]
            .into_iter()
            .find(|state| state.as_str() == s)
    }
}

impl AuditKind {
    /// What shows that a clinician used their own credentials at a workstation: an
    /// unlock, a hold ("Keep open" is an unlock that stays open), break-glass, a sign-out,
    /// an administrator's approval. A directory account with none of these for a while is
    /// stale. Defined once here; the collector's reports bind it as a parameter.
    pub const ACCOUNT_USED: &'static [AuditKind] = &[
        AuditKind::UnlockSucceeded,
        AuditKind::HoldStarted,
        AuditKind::EmergencyAccess,
        AuditKind::SignedOut,
        AuditKind::AdminApproved,
    ];

    /// A wrong credential at an unlock: counted as a failed attempt in the reports.
    pub const FAILED: &'static [AuditKind] = &[AuditKind::UnlockFailed];

    /// A user locked out after too many failed attempts.
    pub const LOCKED_OUT: &'static [AuditKind] = &[AuditKind::UserLockedOut];

    /// What went wrong or was refused: the events page's "failures" filter. Everything
    /// else is a success or a plain record.
    pub const FAILURES: &'static [AuditKind] = &[
        AuditKind::ServiceUncleanStop,
        AuditKind::GuardLost,
        AuditKind::EscalationUnconfirmed,
        AuditKind::SessionTerminateFailed,
        AuditKind::GuardImpostor,
        AuditKind::PolicyRefused,
        AuditKind::LockFailed,
        AuditKind::UnlockFailed,
        AuditKind::AttemptsRateLimited,
        AuditKind::UserLockedOut,
        AuditKind::WorkstationLockedOut,
        AuditKind::EmergencyAccessClosed,
        AuditKind::PhiAppCloseFailed,
        AuditKind::PhiAppHideFailed,
        AuditKind::HoldRefused,
        AuditKind::AdminGrantRefused,
        AuditKind::TamperDetected,
        AuditKind::SyncGap,
        AuditKind::CollectorConflict,
        AuditKind::DirectoryConflict,
    ];

    /// Escalations: the guard gone, or the session ended because it was.
    pub const ESCALATIONS: &'static [AuditKind] = &[
        AuditKind::GuardLost,
        AuditKind::GuardImpostor,
        AuditKind::EscalationRequested,
        AuditKind::EscalationConfirmed,
        AuditKind::EscalationUnconfirmed,
        AuditKind::SessionTerminated,
        AuditKind::SessionTerminateFailed,
    ];

    /// The state a workstation is in after an entry of this kind, for the kinds that
    /// change it (the fleet's "state now").
    pub fn state_after(self) -> Option<WorkstationState> {
        use AuditKind as K;
        match self {
            K::UnlockSucceeded
            | K::AdminApproved
            | K::EmergencyAccess
            | K::HoldStarted
            | K::WarningCancelled => Some(WorkstationState::Active),
            // A guard that starts or comes back holds an open session until it locks.
            K::GuardStarted => Some(WorkstationState::Active),
            K::WarningShown => Some(WorkstationState::Warning),
            K::Locked => Some(WorkstationState::Locked),
            K::GuardLost
            | K::GuardStopped
            | K::GuardImpostor
            | K::EscalationRequested
            | K::EscalationUnconfirmed
            | K::SessionTerminateFailed => Some(WorkstationState::GuardLost),
            K::EscalationConfirmed | K::SessionTerminated | K::SignedOut => Some(WorkstationState::LoggedOff),
            _ => None,
        }
    }

    /// The names of `kinds`, as the audit log writes them.
    pub fn names(kinds: &[AuditKind]) -> Vec<&'static str> {
        kinds.iter().map(|k| k.as_str()).collect()
    }

    pub const ALL: &'static [AuditKind] = &[
        AuditKind::ServiceStarted,
        AuditKind::ServiceStopped,
        AuditKind::ServiceUncleanStop,
        AuditKind::GuardStarted,
        AuditKind::GuardStopped,
        AuditKind::GuardLost,
        AuditKind::EscalationRequested,
        AuditKind::EscalationConfirmed,
        AuditKind::EscalationUnconfirmed,
        AuditKind::SessionTerminated,
        AuditKind::SessionTerminateFailed,
        AuditKind::GuardImpostor,
        AuditKind::CredentialsResealed,
        AuditKind::PolicyApplied,
        AuditKind::PolicyRefused,
        AuditKind::WarningShown,
        AuditKind::WarningCancelled,
        AuditKind::Locked,
        AuditKind::LockFailed,
        AuditKind::SyntheticInputIgnored,
        AuditKind::KeymapHardened,
        AuditKind::LockScreenRestarted,
        AuditKind::UnlockSucceeded,
        AuditKind::UnlockFailed,
        AuditKind::AdminApproved,
        AuditKind::AttemptsRateLimited,
        AuditKind::UserLockedOut,
        AuditKind::WorkstationLockedOut,
        AuditKind::EmergencyAccess,
        AuditKind::EmergencyAccessClosed,
        AuditKind::PhiAppHidden,
        AuditKind::PhiAppRestored,
        AuditKind::PhiAppClosed,
        AuditKind::PhiAppCloseFailed,
        AuditKind::PhiAppHideFailed,
        AuditKind::SignedOut,
        AuditKind::HoldStarted,
        AuditKind::HoldRefused,
        AuditKind::UserAdded,
        AuditKind::UserChanged,
        AuditKind::UserDisabled,
        AuditKind::SyncGap,
        AuditKind::SyncBacklog,
        AuditKind::CollectorEnrolled,
        AuditKind::WorkstationIdentityMade,
        AuditKind::CollectorConflict,
        AuditKind::AdminGrantRefused,
        AuditKind::DirectoryConflict,
        AuditKind::TamperDetected,
        AuditKind::Heartbeat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::ServiceStarted => "service_started",
            AuditKind::ServiceStopped => "service_stopped",
            AuditKind::ServiceUncleanStop => "service_unclean_stop",
            AuditKind::GuardStarted => "guard_started",
            AuditKind::GuardStopped => "guard_stopped",
            AuditKind::GuardLost => "guard_lost",
            AuditKind::EscalationRequested => "escalation_requested",
            AuditKind::EscalationConfirmed => "escalation_confirmed",
            AuditKind::EscalationUnconfirmed => "escalation_unconfirmed",
            AuditKind::SessionTerminated => "session_terminated",
            AuditKind::SessionTerminateFailed => "session_terminate_failed",
            AuditKind::GuardImpostor => "guard_impostor",
            AuditKind::CredentialsResealed => "credentials_resealed",
            AuditKind::PolicyApplied => "policy_applied",
            AuditKind::PolicyRefused => "policy_refused",
            AuditKind::WarningShown => "warning_shown",
            AuditKind::WarningCancelled => "warning_cancelled",
            AuditKind::Locked => "locked",
            AuditKind::LockFailed => "lock_failed",
            AuditKind::SyntheticInputIgnored => "synthetic_input_ignored",
            AuditKind::KeymapHardened => "keymap_hardened",
            AuditKind::LockScreenRestarted => "lock_screen_restarted",
            AuditKind::UnlockSucceeded => "unlock_succeeded",
            AuditKind::UnlockFailed => "unlock_failed",
            AuditKind::AdminApproved => "admin_approved",
            AuditKind::AttemptsRateLimited => "attempts_rate_limited",
            AuditKind::UserLockedOut => "user_locked_out",
            AuditKind::WorkstationLockedOut => "workstation_locked_out",
            AuditKind::EmergencyAccess => "emergency_access",
            AuditKind::EmergencyAccessClosed => "emergency_access_closed",
            AuditKind::PhiAppHidden => "phi_app_hidden",
            AuditKind::PhiAppRestored => "phi_app_restored",
            AuditKind::PhiAppClosed => "phi_app_closed",
            AuditKind::PhiAppCloseFailed => "phi_app_close_failed",
            AuditKind::PhiAppHideFailed => "phi_app_hide_failed",
            AuditKind::SignedOut => "signed_out",
            AuditKind::HoldStarted => "hold_started",
            AuditKind::HoldRefused => "hold_refused",
            AuditKind::UserAdded => "user_added",
            AuditKind::UserChanged => "user_changed",
            AuditKind::UserDisabled => "user_disabled",
            AuditKind::SyncGap => "sync_gap",
            AuditKind::SyncBacklog => "sync_backlog",
            AuditKind::CollectorEnrolled => "collector_enrolled",
            AuditKind::WorkstationIdentityMade => "workstation_identity_made",
            AuditKind::CollectorConflict => "collector_conflict",
            AuditKind::AdminGrantRefused => "admin_grant_refused",
            AuditKind::DirectoryConflict => "directory_conflict",
            AuditKind::TamperDetected => "tamper_detected",
            AuditKind::Heartbeat => "heartbeat",
        }
    }

    pub fn parse(name: &str) -> Option<AuditKind> {
        AuditKind::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CSV cell a spreadsheet will not run: one that starts like a formula (`=`, `+`, `-`,
/// `@`) or with a tab, carriage return or line feed (which some spreadsheets skip before
/// reading a formula) gets a leading `'`. One rule for every CSV export (OWASP CSV
/// injection).
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r', '\n']) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// An event to be recorded, before the log gives it a place (seq) and a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDraft {
    pub time: UtcMillis,
    pub kind: AuditKind,
    /// The clinician or administrator the event is about or by.
    pub user: Option<String>,
    /// The OS account of the session (shared ward account) or of the CLI caller.
    pub os_account: Option<String>,
    /// Hash of the policy in force (see `Policy::hash`).
    pub policy_hash: Option<String>,
    /// Free-form facts (method, reason, attempts left). Never secrets, never PHI.
    pub details: BTreeMap<String, String>,
}

impl AuditDraft {
    pub fn new(time: UtcMillis, kind: AuditKind) -> Self {
        Self { time, kind, user: None, os_account: None, policy_hash: None, details: BTreeMap::new() }
    }

    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    pub fn os_account(mut self, account: Option<String>) -> Self {
        self.os_account = account;
        self
    }

    pub fn policy_hash(mut self, hash: impl Into<String>) -> Self {
        self.policy_hash = Some(hash.into());
        self
    }

    pub fn detail(mut self, key: &str, value: impl ToString) -> Self {
        self.details.insert(key.to_owned(), value.to_string());
        self
    }
}

/// A recorded entry: its place in the log and its link in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    pub time: UtcMillis,
    pub kind: AuditKind,
    pub user: Option<String>,
    pub os_account: Option<String>,
    pub workstation: String,
    pub policy_hash: Option<String>,
    pub details: BTreeMap<String, String>,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl AuditEntry {
    /// Places a draft after the entry `(prev_seq, prev_hash)` (or at seq 1 after
    /// [`GENESIS_HASH`]) and computes its hash.
    pub fn chain(draft: AuditDraft, workstation: &str, prev: Option<(u64, [u8; 32])>) -> AuditEntry {
        let (seq, prev_hash) = match prev {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, GENESIS_HASH),
        };
        let mut entry = AuditEntry {
            seq,
            time: draft.time,
            kind: draft.kind,
            user: draft.user,
            os_account: draft.os_account,
            workstation: workstation.to_owned(),
            policy_hash: draft.policy_hash,
            details: draft.details,
            prev_hash,
            hash: [0; 32],
        };
        entry.hash = entry.compute_hash();
        entry
    }

    /// SHA-256(prev_hash ‖ canonical entry), from the stored fields.
    pub fn compute_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.prev_hash);
        field(&mut h, ENCODING_VERSION);
        field(&mut h, &self.seq.to_be_bytes());
        field(&mut h, &self.time.unix_millis().to_be_bytes());
        field(&mut h, self.kind.as_str().as_bytes());
        optional(&mut h, self.user.as_deref());
        optional(&mut h, self.os_account.as_deref());
        field(&mut h, self.workstation.as_bytes());
        optional(&mut h, self.policy_hash.as_deref());
        field(&mut h, &(self.details.len() as u64).to_be_bytes());
        for (k, v) in &self.details {
            field(&mut h, k.as_bytes());
            field(&mut h, v.as_bytes());
        }
        h.finalize().into()
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn optional(h: &mut Sha256, value: Option<&str>) {
    match value {
        None => h.update([0u8]),
        Some(v) => {
            h.update([1u8]);
            field(h, v.as_bytes());
        }
    }
}

/// Where a chain stopped being trustworthy: the first seq that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("audit entry {expected} is missing (next entry found is {found})")]
    Missing { expected: u64, found: u64 },
    #[error("audit entry {seq} does not link to the entry before it (deleted, reordered or edited entry before it)")]
    BrokenLink { seq: u64 },
    #[error("audit entry {seq} was altered: its content does not match its hash")]
    Altered { seq: u64 },
}

impl ChainError {
    pub fn seq(&self) -> u64 {
        match self {
            ChainError::Missing { expected, .. } => *expected,
            ChainError::BrokenLink { seq } | ChainError::Altered { seq } => *seq,
        }
    }
}

/// Verifies entries in order as they stream by. Start it at the genesis or at a
/// checkpoint (seq and hash of the entry before the first one to check).
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: u64,
    prev_hash: [u8; 32],
    checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self { next_seq: 1, prev_hash: GENESIS_HASH, checked: 0 }
    }

    pub fn from_checkpoint(seq: u64, hash: [u8; 32]) -> Self {
        Self { next_seq: seq + 1, prev_hash: hash, checked: 0 }
    }

    pub fn push(&mut self, entry: &AuditEntry) -> Result<(), ChainError> {
        if entry.seq != self.next_seq {
            return Err(if entry.seq > self.next_seq {
                ChainError::Missing { expected: self.next_seq, found: entry.seq }
            } else {
                ChainError::BrokenLink { seq: entry.seq }
            });
        }
        if entry.compute_hash() != entry.hash {
            return Err(ChainError::Altered { seq: entry.seq });
        }
        if entry.prev_hash != self.prev_hash {
            return Err(ChainError::BrokenLink { seq: entry.seq });
        }
        self.prev_hash = entry.hash;
        self.next_seq += 1;
        self.checked += 1;
        Ok(())
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Seq and hash of the last verified entry: the next checkpoint.
    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.next_seq - 1, self.prev_hash)
    }
}

/// How far a batch carries a workstation's chain, and what was wrong on the way. Unlike
/// [`ChainVerifier`] it does not stop at a bad entry: the collector keeps every entry
/// and flags the bad ones, so evidence is never dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    /// Seq and hash of the last entry that follows without a gap.
    pub head: (u64, [u8; 32]),
    /// Altered entries and broken links, in seq order.
    pub findings: Vec<ChainError>,
}

/// Follows the chain from `head` over `entries` (sorted by seq, all after `head`) for
/// as long as seqs follow without a gap.
pub fn continue_chain<'a>(
    head: (u64, [u8; 32]),
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Continuation {
    continue_checked_chain(head, entries.into_iter().map(|e| (e, e.compute_hash() == e.hash)))
}

/// [`continue_chain`] over entries whose own hashes were checked before (`intact`), so a
/// receiver can hash on many threads and follow the links on one.
pub fn continue_checked_chain<'a>(
    head: (u64, [u8; 32]),
    entries: impl IntoIterator<Item = (&'a AuditEntry, bool)>,
) -> Continuation {
    let (mut seq, mut hash) = head;
    let mut findings = Vec::new();
    for (e, intact) in entries {
        if e.seq != seq + 1 {
            break;
        }
        if !intact {
            findings.push(ChainError::Altered { seq: e.seq });
        }
        if e.prev_hash != hash {
            findings.push(ChainError::BrokenLink { seq: e.seq });
        }
        (seq, hash) = (e.seq, e.hash);
    }
    Continuation { head: (seq, hash), findings }
}

/// Verifies a whole log from the genesis; returns how many entries were checked.
pub fn verify_chain<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> Result<u64, ChainError> {
    let mut v = ChainVerifier::new();
    for e in entries {
        v.push(e)?;
    }
    Ok(v.checked())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_state_follows_the_entries_that_change_it() {
        assert_eq!(AuditKind::WarningShown.state_after(), Some(WorkstationState::Warning));
        assert_eq!(AuditKind::Locked.state_after(), Some(WorkstationState::Locked));
        assert_eq!(AuditKind::UnlockSucceeded.state_after(), Some(WorkstationState::Active));
        assert_eq!(AuditKind::GuardLost.state_after(), Some(WorkstationState::GuardLost));
        assert_eq!(AuditKind::SessionTerminated.state_after(), Some(WorkstationState::LoggedOff));
        // A failed unlock leaves the workstation locked: it changes nothing.
        assert_eq!(AuditKind::UnlockFailed.state_after(), None);
        assert_eq!(AuditKind::Heartbeat.state_after(), None);
        for state in ["active", "warning", "locked", "guard_lost", "logged_off", "silent"] {
            assert_eq!(WorkstationState::parse(state).map(WorkstationState::as_str), Some(state));
        }
        assert!(AuditKind::FAILURES.contains(&AuditKind::UnlockFailed));
        assert!(!AuditKind::FAILURES.contains(&AuditKind::UnlockSucceeded));
    }

    #[test]
    fn the_report_sets_say_what_counts_as_use_failure_and_lockout() {
        // "Keep open" and break-glass are uses of the account; a lock by the guard is not.
        for used in [AuditKind::UnlockSucceeded, AuditKind::HoldStarted, AuditKind::EmergencyAccess] {
            assert!(AuditKind::ACCOUNT_USED.contains(&used), "{used:?}");
        }
        assert!(!AuditKind::ACCOUNT_USED.contains(&AuditKind::Locked));
        // A failure is never a use, and the two failure sets do not overlap.
        for failed in AuditKind::FAILED.iter().chain(AuditKind::LOCKED_OUT) {
            assert!(!AuditKind::ACCOUNT_USED.contains(failed), "{failed:?}");
        }
        assert!(AuditKind::FAILED.iter().all(|k| !AuditKind::LOCKED_OUT.contains(k)));
        assert_eq!(AuditKind::names(AuditKind::FAILED), ["unlock_failed"]);
    }

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_defused() {
        for cell in ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "\n=1"] {
            assert_eq!(spreadsheet_safe(cell), format!("'{cell}"), "{cell:?}");
        }
        for cell in ["n.nurse", "1-2", "", " =1"] {
            assert_eq!(spreadsheet_safe(cell), cell);
        }
    }

    fn log(n: u64) -> Vec<AuditEntry> {
        let mut entries: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let draft = AuditDraft::new(UtcMillis::from_unix_millis(1_000 * i as i64), AuditKind::Locked)
                .user(format!("u{i}"))
                .detail("reason", "idle");
            let prev = entries.last().map(|e| (e.seq, e.hash));
            entries.push(AuditEntry::chain(draft, "ws-1", prev));
        }
        entries
    }

    #[test]
    fn intact_log_verifies() {
        assert_eq!(verify_chain(&log(50)), Ok(50));
        assert_eq!(verify_chain(&[]), Ok(0));
    }

    #[test]
    fn edited_entry_is_named() {
        let mut entries = log(10);
        entries[4].user = Some("mallory".into());
        assert_eq!(verify_chain(&entries), Err(ChainError::Altered { seq: 5 }));
    }

    #[test]
    fn edited_entry_with_recomputed_hash_breaks_the_next_link() {
        let mut entries = log(10);
        entries[4].details.insert("reason".into(), "manual".into());
        entries[4].hash = entries[4].compute_hash();
        assert_eq!(verify_chain(&entries), Err(ChainError::BrokenLink { seq: 6 }));
    }

    #[test]
    fn deleted_entry_is_named() {
        let mut entries = log(10);
        entries.remove(6);
        assert_eq!(verify_chain(&entries), Err(ChainError::Missing { expected: 7, found: 8 }));
    }

    #[test]
    fn swapped_contents_are_detected() {
        let mut entries = log(10);
        let (a, b) = (entries[2].clone(), entries[3].clone());
        entries[2] = AuditEntry { seq: 3, ..b };
        entries[3] = AuditEntry { seq: 4, ..a };
        assert_eq!(verify_chain(&entries), Err(ChainError::Altered { seq: 3 }));
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        let a =
            AuditEntry::chain(AuditDraft::new(UtcMillis::default(), AuditKind::Locked).user("ab"), "c", None);
        let b =
            AuditEntry::chain(AuditDraft::new(UtcMillis::default(), AuditKind::Locked).user("a"), "bc", None);
        assert_ne!(a.hash, b.hash);
        let none = AuditEntry::chain(AuditDraft::new(UtcMillis::default(), AuditKind::Locked), "c", None);
        let empty =
            AuditEntry::chain(AuditDraft::new(UtcMillis::default(), AuditKind::Locked).user(""), "c", None);
        assert_ne!(none.hash, empty.hash);
    }

    #[test]
    fn checkpoint_resumes_verification() {
        let entries = log(10);
        let mut v = ChainVerifier::from_checkpoint(entries[4].seq, entries[4].hash);
        for e in &entries[5..] {
            v.push(e).unwrap();
        }
        assert_eq!(v.head(), (10, entries[9].hash));
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in AuditKind::ALL {
            assert_eq!(AuditKind::parse(kind.as_str()), Some(*kind));
            assert_eq!(serde_json::to_string(kind).unwrap(), format!("\"{}\"", kind.as_str()));
        }
    }

    #[test]
    fn a_clean_batch_moves_the_head_to_its_end() {
        let all = log(10);
        let c = continue_chain((4, all[3].hash), &all[4..]);
        assert_eq!(c.head, (10, all[9].hash));
        assert!(c.findings.is_empty());
    }

    #[test]
    fn a_gap_stops_the_head_and_bad_entries_are_flagged_but_passed() {
        let mut all = log(10);
        all[5].user = Some("intruder".into()); // altered: hash no longer matches
        let c = continue_chain((0, GENESIS_HASH), &all);
        assert_eq!(c.head.0, 10, "flagged entries still count as received");
        assert_eq!(c.findings, vec![ChainError::Altered { seq: 6 }]);

        let gappy: Vec<&AuditEntry> = all.iter().filter(|e| e.seq != 3).collect();
        let c = continue_chain((0, GENESIS_HASH), gappy);
        assert_eq!(c.head, (2, all[1].hash));

        // A log that restarts with another history links nowhere.
        let mut other = log(12);
        other[10].prev_hash = [7; 32];
        other[10].hash = other[10].compute_hash();
        let c = continue_chain((10, all[9].hash), &other[10..]);
        assert_eq!(c.findings, vec![ChainError::BrokenLink { seq: 11 }, ChainError::BrokenLink { seq: 12 }]);
    }
}
