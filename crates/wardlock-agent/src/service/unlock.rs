//! Unlocks and administrators' approvals: throttled per kind of client (the admitted
//! guards have their own allowance), decided by the core, durable before answered.

use std::time::Instant;

use wardlock_core::audit::AuditKind;
use wardlock_core::protocol::local::{AdminCredentials, ClientRole, HoldReply, UnlockReply, UnlockRequest};
use wardlock_core::unlock::{Attempt, GrantMethod, Outcome, RefusalReason};

use super::{ceil_secs, utc_now, Approval, Blocking, Service, ServiceError};
use crate::peer::Peer;
use crate::throttle::Admission;
use wardlock_store::auth::{AuthError, Context, HoldCheck, Purpose};
use wardlock_store::secrets::SecretError;

impl Service {
    /// Takes one attempt from `role`'s budget; audits what was refused unheard before it.
    fn admit(&self, b: &Blocking, role: ClientRole) -> Result<Option<u64>, ServiceError> {
        let admission = self.budgets.lock().unwrap_or_else(|p| p.into_inner()).of(role).admit(Instant::now());
        match admission {
            Admission::Admit { suppressed_before } => {
                if suppressed_before > 0 {
                    self.audit_suppressed(b, role, suppressed_before)?;
                }
                Ok(None)
            }
            Admission::Refuse { retry_after } => Ok(Some(ceil_secs(retry_after).max(1))),
        }
    }

    pub(super) fn audit_suppressed(
        &self,
        b: &Blocking,
        role: ClientRole,
        count: u64,
    ) -> Result<(), ServiceError> {
        let per_minute = self.policy().service.max_attempts_per_minute;
        self.audit(
            b,
            self.draft(AuditKind::AttemptsRateLimited, None)
                .detail("count", count)
                .detail("limit_per_minute", per_minute)
                .detail("clients", role_name(role)),
        )?;
        Ok(())
    }

    /// Decides an unlock. A `Granted` answer is only built after its audit entry is on disk.
    /// `clinician`: whom the session is attributed to now (a guard's unlock by someone
    /// else is a switch). Tools may check credentials only where policy lets them
    /// (`service.tool_unlock`), never for break-glass.
    pub(super) fn unlock(
        &self,
        b: &Blocking,
        request: UnlockRequest,
        peer: &Peer,
        role: ClientRole,
        clinician: Option<String>,
    ) -> Result<UnlockReply, ServiceError> {
        if role == ClientRole::Tool {
            if !self.policy().service.tool_unlock {
                return Err(ServiceError::NotAllowed(
                    "unlock is the guard's; tools may check credentials only where the machine policy \
                     sets service.tool_unlock = true"
                        .into(),
                ));
            }
            if request.emergency_reason.is_some() {
                return Err(ServiceError::NotAllowed("break-glass is for the lock screen only".into()));
            }
        }
        match self.clinician_attempt(b, request, Purpose::Unlock, peer, role, clinician)? {
            Ok((user, result)) => Ok(unlock_reply(user, result)),
            Err(refused) => Ok(refused),
        }
    }

    /// Decides a sign-out at the lock screen: checked and throttled like an unlock, audited
    /// `signed_out`; the session stays locked and is no longer the clinician's.
    pub(super) fn sign_out(
        &self,
        b: &Blocking,
        request: UnlockRequest,
        peer: &Peer,
        clinician: Option<String>,
    ) -> Result<UnlockReply, ServiceError> {
        match self.clinician_attempt(b, request, Purpose::SignOut, peer, ClientRole::Guard, clinician)? {
            Ok((user, result)) => Ok(unlock_reply(user, result)),
            Err(refused) => Ok(refused),
        }
    }

    /// Decides a hold: the clinician's credentials as for an unlock, and whether policy
    /// allows a hold on this workstation now (its group, the holds in a row), audited
    /// together as `hold_started` or `hold_refused`. A refused hold leaves the session locked.
    pub(super) fn hold(
        &self,
        b: &Blocking,
        request: UnlockRequest,
        peer: &Peer,
        session: &super::SessionView,
    ) -> Result<HoldReply, ServiceError> {
        let policy = self.policy();
        let hold = &policy.lock.hold;
        let in_a_row = session.holds_in_a_row + 1;
        let check = if !hold.allowed_in(&policy.workstation.group) {
            HoldCheck::Refused { why: "holds are not allowed in this workstation's group" }
        } else if in_a_row > hold.max_in_a_row {
            HoldCheck::Refused { why: "the holds allowed in a row are used up; unlock normally first" }
        } else {
            HoldCheck::Allowed { seconds: hold.length.as_secs(), in_a_row, max: hold.max_in_a_row }
        };
        let clinician = session.clinician.clone();
        let (user, result) = match self.clinician_attempt(
            b,
            request,
            Purpose::Hold(check),
            peer,
            ClientRole::Guard,
            clinician,
        )? {
            Ok(decided) => decided,
            Err(UnlockReply::Refused { attempts_left, retry_after_secs, .. }) => {
                return Ok(HoldReply::Refused { attempts_left, retry_after_secs })
            }
            Err(UnlockReply::Granted { .. }) => {
                return Ok(HoldReply::Refused { attempts_left: 0, retry_after_secs: None })
            }
        };
        Ok(match (result.outcome, check) {
            (Outcome::Granted { .. }, HoldCheck::Allowed { seconds, in_a_row, max }) => HoldReply::Granted {
                display_name: result.display_name.unwrap_or_else(|| user.clone()),
                user,
                hold_secs: seconds,
                in_a_row,
                max,
            },
            (Outcome::Granted { .. }, HoldCheck::Refused { why }) => {
                HoldReply::NotAllowed { why: why.into() }
            }
            (Outcome::Refused { attempts_left, retry_after, .. }, _) => {
                HoldReply::Refused { attempts_left, retry_after_secs: retry_after.map(ceil_secs) }
            }
        })
    }

    /// A clinician's attempt (unlock, sign-out, hold): from `role`'s budget, then decided
    /// and audited for `purpose` (which strips break-glass where it does not apply).
    /// `Err`: the answer already, a refusal.
    fn clinician_attempt(
        &self,
        b: &Blocking,
        request: UnlockRequest,
        purpose: Purpose,
        peer: &Peer,
        role: ClientRole,
        clinician: Option<String>,
    ) -> Result<Result<(String, wardlock_store::auth::UnlockResult), UnlockReply>, ServiceError> {
        if let Some(retry) = self.admit(b, role)? {
            return Ok(Err(UnlockReply::Refused {
                attempts_left: 0,
                retry_after_secs: Some(retry),
                emergency_closed: false,
            }));
        }
        let attempt = Attempt {
            user_id: request.user,
            pin: request.pin,
            totp: request.totp,
            emergency_reason: request.emergency_reason,
        };
        // A tool's check takes over no session, so it is no switch from anyone either.
        let session_user = match role {
            ClientRole::Guard => clinician,
            ClientRole::Tool => None,
        };
        let context = Context {
            os_account: Some(peer.account.clone()),
            session_user,
            via_tool: role == ClientRole::Tool,
        };
        Ok(self.attempt(b, &attempt, purpose, &context)?.map(|result| (attempt.user_id, result)))
    }

    /// Runs one attempt; a sealed seed that will not open is audited as tampering and
    /// answered as a plain refusal.
    fn attempt(
        &self,
        b: &Blocking,
        attempt: &Attempt,
        purpose: Purpose,
        context: &Context,
    ) -> Result<Result<wardlock_store::auth::UnlockResult, UnlockReply>, ServiceError> {
        let policy = self.policy();
        let outcome = {
            let mut store = self.store(b);
            wardlock_store::auth::attempt_unlock(
                &mut store,
                &self.key,
                &policy,
                attempt,
                purpose,
                context,
                utc_now(),
            )
        };
        self.sync_wakeup.notify_one();
        match outcome {
            Ok(result) => Ok(Ok(result)),
            Err(AuthError::Secret(SecretError::Unseal)) | Err(AuthError::BadCredentialRecord { .. }) => {
                self.audit(
                    b,
                    self.draft(AuditKind::TamperDetected, None)
                        .user(&attempt.user_id)
                        .os_account(context.os_account.clone())
                        .detail("what", "stored credentials of this user do not open with the data key")
                        .detail("alert", "compliance"),
                )?;
                Ok(Err(UnlockReply::Refused {
                    attempts_left: 0,
                    retry_after_secs: None,
                    emergency_closed: false,
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Checks an administrator's credentials for `action` (throttled and audited like an
    /// unlock; only the role `admin` passes).
    pub(super) fn approve(
        &self,
        b: &Blocking,
        creds: AdminCredentials,
        action: &'static str,
        peer: &Peer,
        role: ClientRole,
    ) -> Result<Approval, ServiceError> {
        if let Some(retry) = self.admit(b, role)? {
            return Ok(Approval::Refused { attempts_left: 0, retry_after_secs: Some(retry) });
        }
        let attempt =
            Attempt { user_id: creds.user, pin: creds.pin, totp: creds.totp, emergency_reason: None };
        let context = Context {
            os_account: Some(peer.account.clone()),
            session_user: None,
            via_tool: role == ClientRole::Tool,
        };
        Ok(match self.attempt(b, &attempt, Purpose::AdminApproval { action }, &context)? {
            Ok(wardlock_store::auth::UnlockResult { outcome: Outcome::Granted { .. }, .. }) => {
                Approval::Granted
            }
            Ok(wardlock_store::auth::UnlockResult {
                outcome: Outcome::Refused { attempts_left, retry_after, .. },
                ..
            }) => Approval::Refused { attempts_left, retry_after_secs: retry_after.map(ceil_secs) },
            Err(_) => Approval::Refused { attempts_left: 0, retry_after_secs: None },
        })
    }
}

/// The wire answer to an unlock or a sign-out.
fn unlock_reply(user: String, result: wardlock_store::auth::UnlockResult) -> UnlockReply {
    match result.outcome {
        Outcome::Granted { method, previous_unlock, failures_since_last_unlock } => UnlockReply::Granted {
            display_name: result.display_name.unwrap_or_else(|| user.clone()),
            user,
            emergency: method == GrantMethod::Emergency,
            last_unlock: previous_unlock,
            failures_since_last_unlock,
        },
        Outcome::Refused { attempts_left, retry_after, reason, .. } => UnlockReply::Refused {
            attempts_left,
            retry_after_secs: retry_after.map(ceil_secs),
            emergency_closed: reason == RefusalReason::EmergencyClosedDuringLockout,
        },
    }
}

fn role_name(role: ClientRole) -> &'static str {
    match role {
        ClientRole::Guard => "guard",
        ClientRole::Tool => "tools",
    }
}
