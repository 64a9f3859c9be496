//! Unlock attempts against the workstation database: load what the core needs, let it
//! decide, and persist the new counters together with the audit entry before answering.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use wardlock_core::audit::{AuditDraft, AuditKind};
use wardlock_core::clock::UtcMillis;
use wardlock_core::policy::ValidPolicy;
use wardlock_core::unlock::{self, Attempt, GrantMethod, Outcome, PinHash, TotpSeed, UserCredentials};

use crate::secrets::{DataKey, SecretError};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("stored credentials of user {user:?} are unusable: {why}")]
    BadCredentialRecord { user: String, why: String },
}

/// The outcome, with what the guard may show on success. The audit entry is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlockResult {
    pub outcome: Outcome,
    pub display_name: Option<String>,
    pub audit_seq: u64,
}

/// Who is at the workstation, for the audit entry.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub os_account: Option<String>,
    /// The clinician the session is attributed to now; another user's unlock is a switch.
    pub session_user: Option<String>,
    /// A tool checked the credentials (`wardlockctl agent unlock`): no screen unlocked.
    pub via_tool: bool,
}

/// What the credentials are checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Unlock the session (or break-glass, when the attempt carries a reason).
    Unlock,
    /// An administrator approves an action at the workstation (`quit`, `enroll`). Only
    /// users with the role [`ADMIN_ROLE`] pass; break-glass does not apply.
    AdminApproval { action: &'static str },
    /// The clinician signs out at the lock screen: their PHI applications close, the
    /// lock stays. Break-glass does not apply.
    SignOut,
    /// An unlock that keeps the session open (`lock.hold`), if policy allows it now.
    /// Break-glass does not apply.
    Hold(HoldCheck),
}

/// Whether policy allows a hold now, decided before the credentials are checked and
/// audited with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldCheck {
    Allowed { seconds: u64, in_a_row: u32, max: u32 },
    Refused { why: &'static str },
}

/// Directory role of the users who may approve administrative actions at a workstation.
pub const ADMIN_ROLE: &str = "admin";

/// Decides one attempt and makes it durable: counters, replay step and audit entry are
/// committed in one transaction before this returns.
pub fn attempt_unlock(
    store: &mut Store,
    key: &DataKey,
    policy: &ValidPolicy,
    attempt: &Attempt,
    purpose: Purpose,
    context: &Context,
    now: UtcMillis,
) -> Result<UnlockResult, AuthError> {
    let approval_of = match purpose {
        Purpose::AdminApproval { action } => Some(action),
        Purpose::Unlock | Purpose::SignOut | Purpose::Hold(_) => None,
    };
    let admin_only = approval_of.is_some();
    let sign_out = purpose == Purpose::SignOut;
    let hold = match purpose {
        Purpose::Hold(check) => Some(check),
        _ => None,
    };
    let stripped;
    let attempt = if (admin_only || sign_out || hold.is_some()) && attempt.emergency_reason.is_some() {
        stripped = Attempt { emergency_reason: None, ..attempt.clone() };
        &stripped
    } else {
        attempt
    };
    // Read and write in one immediate transaction: two attempts at once (two guards, a
    // scripted client) cannot both read the same failure count.
    let mut tx = store.write()?;
    let row = tx.user(&attempt.user_id)?;
    // Counters of IDs not in the directory are keyed by a keyed hash: a clinician who
    // types their PIN into the user field must not leave it readable in the database.
    let counter_key = match &row {
        Some(_) => attempt.user_id.clone(),
        None => unknown_id_key(key, &attempt.user_id),
    };
    let user_state = tx.user_auth(&counter_key)?;
    let workstation_state = tx.workstation_auth()?;

    let bad = |why: String| AuthError::BadCredentialRecord { user: attempt.user_id.clone(), why };
    let pin_hash = match row.as_ref().and_then(|r| r.pin_sealed.as_deref()) {
        Some(sealed) => {
            let phc = super::directory::open_pin_hash(key, &attempt.user_id, sealed)?
                .ok_or_else(|| bad("its PIN hash is not text once opened".into()))?;
            Some(PinHash::from_phc(phc.to_string()).map_err(|e| bad(e.to_string()))?)
        }
        None => None,
    };
    let seed = match (row.as_ref().and_then(|r| r.totp_sealed.as_ref()), &attempt.totp) {
        (Some(sealed), Some(_)) => {
            let bytes = key.open(sealed, attempt.user_id.as_bytes())?;
            Some(TotpSeed::new(bytes.to_vec()).map_err(|e| bad(e.to_string()))?)
        }
        _ => None,
    };
    // A non-administrator is refused as if unknown (same work, same answer), so the
    // refusal does not tell whether the PIN was right.
    let credentials = row.as_ref().filter(|r| !admin_only || r.role == ADMIN_ROLE).map(|r| UserCredentials {
        disabled: r.disabled,
        pin_hash: pin_hash.as_ref(),
        totp_seed: seed.as_ref(),
    });

    let decision = unlock::decide(policy, now, credentials, &user_state, &workstation_state, attempt);

    let known_user = row.as_ref().map(|r| r.id.clone());
    let policy_hash = policy.hash();
    let base = |kind| {
        let mut d =
            AuditDraft::new(now, kind).os_account(context.os_account.clone()).policy_hash(&policy_hash);
        if context.via_tool {
            d = d.detail("client", "tool");
        }
        match &known_user {
            Some(id) => d.user(id),
            None => d,
        }
    };
    let mut drafts = Vec::new();
    match (&decision.outcome, approval_of) {
        (Outcome::Granted { method, .. }, Some(action)) => {
            drafts.push(
                base(AuditKind::AdminApproved).detail("action", action).detail("method", method.as_str()),
            );
        }
        (Outcome::Granted { method, .. }, None) if sign_out => {
            drafts.push(base(AuditKind::SignedOut).detail("method", method.as_str()));
        }
        (Outcome::Granted { method, .. }, None) if hold.is_some() => match hold {
            Some(HoldCheck::Allowed { seconds, in_a_row, max }) => {
                let mut d = base(AuditKind::HoldStarted)
                    .detail("method", method.as_str())
                    .detail("seconds", seconds)
                    .detail("in_a_row", in_a_row)
                    .detail("max_in_a_row", max);
                if let Some(previous) =
                    context.session_user.as_deref().filter(|p| Some(*p) != known_user.as_deref())
                {
                    d = d.detail("switched_from", previous);
                }
                drafts.push(d);
            }
            Some(HoldCheck::Refused { why }) => drafts.push(base(AuditKind::HoldRefused).detail("why", why)),
            None => {}
        },
        (Outcome::Granted { method: GrantMethod::Emergency, .. }, None) => {
            let reason =
                unlock::emergency_reason_text(attempt.emergency_reason.as_deref().unwrap_or_default());
            let mut d =
                base(AuditKind::EmergencyAccess).detail("reason", reason).detail("alert", "compliance");
            if workstation_state.blocked_until.is_some_and(|until| until > now) {
                d = d.detail("during_workstation_lockout", "true");
            }
            drafts.push(d);
        }
        (Outcome::Granted { method, .. }, None) => {
            let mut d = base(AuditKind::UnlockSucceeded).detail("method", method.as_str());
            if let Some(previous) =
                context.session_user.as_deref().filter(|p| Some(*p) != known_user.as_deref())
            {
                d = d.detail("switched_from", previous);
            }
            drafts.push(d);
        }
        (Outcome::Refused { reason, attempts_left, retry_after, .. }, _) => {
            let mut d = base(AuditKind::UnlockFailed)
                .detail("reason", reason.as_str())
                .detail("attempts_left", attempts_left);
            if attempt.emergency_reason.is_some() {
                d = d.detail("emergency", "true");
            }
            if let Some(action) = approval_of {
                d = d.detail("purpose", action);
            }
            if sign_out {
                d = d.detail("purpose", "sign_out");
            }
            if hold.is_some() {
                d = d.detail("purpose", "hold");
            }
            drafts.push(d);
            // Both can start with the same failure; each is its own event for compliance.
            let seconds = retry_after.map_or(0, |d| d.as_secs());
            if decision.user_state.lockouts > user_state.lockouts {
                drafts.push(base(AuditKind::UserLockedOut).detail("seconds", seconds));
            }
            if decision.workstation_state.blocked_until != workstation_state.blocked_until {
                let until = decision.workstation_state.blocked_until.unwrap_or(now);
                drafts.push(
                    base(AuditKind::WorkstationLockedOut).detail("seconds", now.until(until).as_secs()),
                );
            }
            let max = policy.emergency.max_failures_during_lockout;
            if decision.workstation_state.emergency_closed(max, now)
                && !workstation_state.emergency_closed(max, now)
            {
                let until = decision.workstation_state.blocked_until.unwrap_or(now);
                drafts.push(
                    base(AuditKind::EmergencyAccessClosed)
                        .detail("failures", decision.workstation_state.emergency_failures_in_lockout)
                        .detail("seconds", now.until(until).as_secs())
                        .detail("alert", "compliance"),
                );
            }
        }
    }

    // A TOTP step used here: the grant's entry says which (as the step's start), so the
    // collector can tell the other workstations to refuse that code too.
    if let (Outcome::Granted { .. }, Some(step)) = (&decision.outcome, decision.user_state.last_totp_step) {
        if user_state.last_totp_step != Some(step) && !drafts.is_empty() {
            let step_start = step.saturating_mul(policy.totp.step.as_millis() as u64);
            let grant = drafts
                .remove(0)
                .detail("totp_step_at", UtcMillis::from_unix_millis(step_start as i64).to_rfc3339());
            drafts.insert(0, grant);
        }
    }
    tx.save_user_auth(&counter_key, &decision.user_state)?;
    tx.save_workstation_auth(&decision.workstation_state)?;
    let mut audit_seq = 0;
    for d in drafts {
        audit_seq = tx.append(d)?.seq;
    }
    tx.commit()?;

    Ok(UnlockResult { outcome: decision.outcome, display_name: row.map(|r| r.display_name), audit_seq })
}

fn unknown_id_key(key: &DataKey, typed: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_for_derivation())
        .expect("HMAC takes any key length");
    mac.update(b"wardlock-unknown-user-id\0");
    mac.update(typed.as_bytes());
    format!("unknown:{}", hex::encode(&mac.finalize().into_bytes()[..16]))
}
