//! Enrollment at the workstation, once an administrator approved it.

use super::*;

impl Service {
    /// Enrollment: the user to enroll exists (or is added now, with `display_name`).
    pub fn enroll_user(
        &self,
        user: &str,
        display_name: Option<String>,
        actor: &Actor,
    ) -> Result<Result<(), String>, ServiceError> {
        if let Err(e) = super::directory::validate_user_id(user) {
            return Ok(Err(e.to_string()));
        }
        let policy = self.policy();
        let mut store = self.store();
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
                    match super::directory::add_user(&mut store, &self.key, &policy, new, actor, utc_now()) {
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
    pub fn set_pin(
        &self,
        user: &str,
        pin: SecretString,
        actor: &Actor,
    ) -> Result<Result<(), String>, ServiceError> {
        let policy = self.policy();
        let change = CredentialChange { pin: Some(pin), new_totp_seed: false };
        let mut store = self.store();
        match super::directory::change_credentials(
            &mut store,
            &self.key,
            &policy,
            user,
            &change,
            actor,
            utc_now(),
        ) {
            Ok(_) => Ok(Ok(())),
            Err(e @ DirectoryError::PinRule(_)) => Ok(Err(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// A fresh seed and the URI to show as a QR code; nothing is stored until confirmed.
    pub fn new_totp(&self, user: &str) -> Result<(TotpSeed, Zeroizing<String>), ServiceError> {
        let seed = super::directory::generate_totp_seed()?;
        let uri = super::directory::totp_uri(&self.policy(), &seed, user)?;
        Ok((seed, uri))
    }

    /// Stores the seed once a code from it checks out.
    pub fn confirm_totp(
        &self,
        user: &str,
        seed: &TotpSeed,
        code: &SecretString,
        actor: &Actor,
    ) -> Result<bool, ServiceError> {
        let policy = self.policy();
        let now = utc_now();
        let TotpCheck::Accepted { step } =
            wardlock_core::unlock::check_totp(&policy.totp, seed, code, now, None)
        else {
            return Ok(false);
        };
        let mut store = self.store();
        super::directory::set_totp_seed(&mut store, &self.key, &policy, user, seed, step, actor, now)?;
        Ok(true)
    }
}
