//! Enrollment at the workstation: an administrator's approval gives one connection a
//! ticket (short-lived, compared in constant time); with it the clinician sets a PIN and
//! proves a new TOTP seed with one code. A wrong ticket ends the enrollment.

use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use wardlock_core::protocol::local::{AdminCredentials, ClientRole, EnrollReply, EnrollRequest};
use wardlock_core::secret::SecretString;
use wardlock_core::unlock::{self, TotpCheck, TotpSeed};

use super::{random_bytes, utc_now, Approval, Blocking, Service, ServiceError};
use crate::peer::Peer;
use wardlock_store::directory::{self, Actor, CredentialChange, DirectoryError, NewUser};

const TICKET_LIFETIME: Duration = Duration::from_secs(5 * 60);
const TOTP_CONFIRM_TRIES: u32 = 5;

/// An enrollment in progress, valid on the connection that holds it only.
#[derive(Debug)]
pub struct Enrollment {
    id: Zeroizing<String>,
    admin: String,
    user: String,
    expires: Instant,
    pending_seed: Option<TotpSeed>,
    confirm_failures: u32,
}

/// An enrollment step that needs a ticket.
enum Step {
    SetPin(SecretString),
    StartTotp,
    ConfirmTotp(SecretString),
}

fn refused(message: &str) -> EnrollReply {
    EnrollReply::Refused { message: message.to_owned() }
}

impl Service {
    /// One enrollment step from `peer`; `current` is its connection's enrollment, which
    /// this starts, advances or ends.
    pub fn enroll(
        &self,
        b: &Blocking,
        current: &mut Option<Enrollment>,
        request: EnrollRequest,
        peer: &Peer,
        role: ClientRole,
    ) -> Result<EnrollReply, ServiceError> {
        let (ticket, step) = match request {
            EnrollRequest::Authorize { admin, user, display_name } => {
                return self.authorize_enrollment(b, current, admin, (user, display_name), peer, role);
            }
            EnrollRequest::SetPin { ticket, pin } => (ticket, Step::SetPin(pin)),
            EnrollRequest::StartTotp { ticket } => (ticket, Step::StartTotp),
            EnrollRequest::ConfirmTotp { ticket, code } => (ticket, Step::ConfirmTotp(code)),
        };
        let valid = current.as_ref().is_some_and(|t| {
            bool::from(t.id.as_bytes().ct_eq(ticket.as_bytes())) && Instant::now() < t.expires
        });
        let Some(enrollment) = current.as_mut().filter(|_| valid) else {
            // A wrong guess also ends the enrollment in progress.
            *current = None;
            return Ok(refused(
                "enrollment ticket unknown or expired; ask the administrator to authorise again",
            ));
        };
        let actor = Actor { admin: Some(enrollment.admin.clone()), os_account: Some(peer.account.clone()) };
        let user = enrollment.user.clone();
        match step {
            Step::SetPin(pin) => Ok(match self.set_pin(b, &user, pin, &actor)? {
                Ok(()) => EnrollReply::PinSet,
                Err(message) => EnrollReply::Refused { message },
            }),
            Step::StartTotp => {
                let seed = directory::generate_totp_seed()?;
                let uri = directory::totp_uri(&self.policy(), &seed, &user)?;
                enrollment.pending_seed = Some(seed);
                enrollment.confirm_failures = 0;
                Ok(EnrollReply::TotpStarted { otpauth_uri: uri.to_string() })
            }
            Step::ConfirmTotp(code) => {
                let Some(seed) = enrollment.pending_seed.clone() else {
                    return Ok(refused("start TOTP enrollment first"));
                };
                if self.confirm_totp(b, &user, &seed, &code, &actor)? {
                    enrollment.pending_seed = None;
                    return Ok(EnrollReply::TotpConfirmed);
                }
                enrollment.confirm_failures += 1;
                if enrollment.confirm_failures >= TOTP_CONFIRM_TRIES {
                    enrollment.pending_seed = None;
                    return Ok(refused(
                        "too many wrong codes; start TOTP enrollment again for a new QR code",
                    ));
                }
                Ok(refused("that code does not match; check the phone's clock and enter the current code"))
            }
        }
    }

    /// The administrator's approval; the user to enroll (ID and, for a new one, full
    /// name) exists or is added; a ticket.
    fn authorize_enrollment(
        &self,
        b: &Blocking,
        current: &mut Option<Enrollment>,
        admin: AdminCredentials,
        (user, display_name): (String, Option<String>),
        peer: &Peer,
        role: ClientRole,
    ) -> Result<EnrollReply, ServiceError> {
        let admin_id = admin.user.clone();
        if let Approval::Refused { attempts_left, retry_after_secs } =
            self.approve(b, admin, "enroll", peer, role)?
        {
            return Ok(EnrollReply::NotAuthorized { attempts_left, retry_after_secs });
        }
        let actor = Actor { admin: Some(admin_id.clone()), os_account: Some(peer.account.clone()) };
        if let Err(message) = self.enroll_user(b, &user, display_name, &actor)? {
            return Ok(EnrollReply::Refused { message });
        }
        let id = Zeroizing::new(hex::encode(&random_bytes::<16>()?[..]));
        *current = Some(Enrollment {
            id: id.clone(),
            admin: admin_id,
            user,
            expires: Instant::now() + TICKET_LIFETIME,
            pending_seed: None,
            confirm_failures: 0,
        });
        Ok(EnrollReply::Authorized { ticket: id.to_string(), expires_in_secs: TICKET_LIFETIME.as_secs() })
    }

    /// The user to enroll exists (or is added now, with `display_name`).
    fn enroll_user(
        &self,
        b: &Blocking,
        user: &str,
        display_name: Option<String>,
        actor: &Actor,
    ) -> Result<Result<(), String>, ServiceError> {
        if let Err(e) = directory::validate_user_id(user) {
            return Ok(Err(e.to_string()));
        }
        let policy = self.policy();
        let mut store = self.store(b);
        match store.user(user)? {
            Some(row) if row.disabled => {
                Ok(Err(format!("user {user:?} is disabled; IT must enable them first")))
            }
            Some(_) => Ok(Ok(())),
            None => match display_name {
                None => Ok(Err(format!("no user {user:?} here yet; give their full name to add them"))),
                Some(name) => {
                    let new = NewUser {
                        id: user.to_owned(),
                        display_name: name,
                        role: "clinician".into(),
                        pin: None,
                        totp: false,
                    };
                    match directory::add_user(&mut store, &self.key, &policy, new, actor, utc_now()) {
                        Ok(_) => Ok(Ok(())),
                        Err(e @ (DirectoryError::BadText { .. } | DirectoryError::BadUserId(_))) => {
                            Ok(Err(e.to_string()))
                        }
                        Err(e) => Err(e.into()),
                    }
                }
            },
        }
    }

    /// Sets a PIN; a PIN the rules refuse is answered with the rule, nothing stored.
    fn set_pin(
        &self,
        b: &Blocking,
        user: &str,
        pin: SecretString,
        actor: &Actor,
    ) -> Result<Result<(), String>, ServiceError> {
        let policy = self.policy();
        let change = CredentialChange { pin: Some(pin), new_totp_seed: false };
        let mut store = self.store(b);
        match directory::change_credentials(&mut store, &self.key, &policy, user, &change, actor, utc_now()) {
            Ok(_) => Ok(Ok(())),
            Err(e @ DirectoryError::PinRule(_)) => Ok(Err(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores the seed once a code from it checks out.
    fn confirm_totp(
        &self,
        b: &Blocking,
        user: &str,
        seed: &TotpSeed,
        code: &SecretString,
        actor: &Actor,
    ) -> Result<bool, ServiceError> {
        let policy = self.policy();
        let now = utc_now();
        let TotpCheck::Accepted { step } = unlock::check_totp(&policy.totp, seed, code, now, None) else {
            return Ok(false);
        };
        let mut store = self.store(b);
        directory::set_totp_seed(&mut store, &self.key, &policy, user, seed, step, actor, now)?;
        Ok(true)
    }
}
