//! The collector's web console: how long a signed-in session lives, and the unlock rules a
//! console sign-in is decided by. A sign-in is an unlock with two factors: the password is
//! checked as a PIN is (Argon2id) and the code as a TOTP code is, with the same throttling,
//! lockout and replay rules ([`crate::unlock::decide`]).

use std::time::Duration;

use crate::clock::UtcMillis;
use crate::policy::{Policy, PolicyError, UnlockMethod, ValidPolicy};

/// A session unused this long is over.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// A session is over this long after its sign-in, however busy.
pub const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Last use is written at most this often (not on every request).
pub const TOUCH_EVERY: Duration = Duration::from_secs(30);

/// Whether a session can still be used at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Live {
        /// Whether its last use should be written now.
        touch: bool,
    },
    Idle,
    Expired,
    SignedOut,
}

/// A session's state from its sign-in, last use and sign-out times.
pub fn session_state(
    signed_in: UtcMillis,
    last_used: UtcMillis,
    signed_out: Option<UtcMillis>,
    now: UtcMillis,
) -> SessionState {
    if signed_out.is_some() {
        SessionState::SignedOut
    } else if signed_in.saturating_add(MAX_LIFETIME) <= now {
        SessionState::Expired
    } else if last_used.saturating_add(IDLE_TIMEOUT) <= now {
        SessionState::Idle
    } else {
        SessionState::Live { touch: last_used.saturating_add(TOUCH_EVERY) <= now }
    }
}

/// When a session used at `last_used` ends unless used again.
pub fn session_ends(signed_in: UtcMillis, last_used: UtcMillis) -> UtcMillis {
    let idle = last_used.saturating_add(IDLE_TIMEOUT);
    let max = signed_in.saturating_add(MAX_LIFETIME);
    if idle < max {
        idle
    } else {
        max
    }
}

/// The rules a console sign-in is decided by: password and code together, the default
/// lockout (5 failures, then a lockout that doubles), no break-glass.
/// (Valid, as a test holds; the collector refuses to start otherwise.)
pub fn sign_in_policy() -> Result<ValidPolicy, PolicyError> {
    let mut policy = Policy::default();
    policy.unlock.methods = vec![UnlockMethod::PinTotp];
    policy.emergency.enabled = false;
    ValidPolicy::try_from(policy)
}

/// Passwords: NIST SP 800-63B's floor, and a ceiling that bounds Argon2id's input.
pub const PASSWORD_MIN_CHARS: usize = 12;
pub const PASSWORD_MAX_CHARS: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;
    use crate::unlock::{self, Attempt, Outcome, RefusalReason, UserAuthState, UserCredentials};

    fn at(ms: i64) -> UtcMillis {
        UtcMillis::from_unix_millis(ms)
    }

    #[test]
    fn a_session_ends_when_idle_for_fifteen_minutes_or_twelve_hours_after_sign_in() {
        let start = at(1_000_000);
        assert_eq!(session_state(start, start, None, start), SessionState::Live { touch: false });
        let later = start.saturating_add(Duration::from_secs(31));
        assert_eq!(session_state(start, start, None, later), SessionState::Live { touch: true });
        let idle = start.saturating_add(IDLE_TIMEOUT);
        assert_eq!(session_state(start, start, None, idle), SessionState::Idle);
        // Used every ten minutes, it still ends at twelve hours.
        let busy = start.saturating_add(MAX_LIFETIME).saturating_add(Duration::from_secs(1));
        let used = busy.saturating_add(Duration::ZERO);
        assert_eq!(session_state(start, used, None, busy), SessionState::Expired);
        assert_eq!(session_state(start, start, Some(start), start), SessionState::SignedOut);
        assert_eq!(session_ends(start, start), idle);
        let late = start.saturating_add(MAX_LIFETIME - Duration::from_secs(60));
        assert_eq!(session_ends(start, late), start.saturating_add(MAX_LIFETIME));
    }

    #[test]
    fn a_sign_in_needs_both_factors_and_locks_out_like_an_unlock() {
        let policy = sign_in_policy().expect("the sign-in policy is valid");
        assert_eq!(policy.unlock.methods, vec![UnlockMethod::PinTotp]);
        assert!(!policy.emergency.enabled);
        let hash = unlock::hash_pin(&SecretString::new("correct horse battery"), &[7; 16]).expect("hash");
        let user = UserCredentials { disabled: false, pin_hash: Some(&hash), totp_seed: None };
        // The password alone is not enough.
        let attempt = Attempt {
            user_id: "privacy".into(),
            pin: Some(SecretString::new("correct horse battery")),
            ..Attempt::default()
        };
        let decision = unlock::decide(
            &policy,
            at(0),
            Some(user),
            &UserAuthState::default(),
            &Default::default(),
            &attempt,
        );
        assert!(matches!(decision.outcome, Outcome::Refused { reason: RefusalReason::MethodNotAllowed, .. }));
        // Five wrong ones lock the account out.
        let mut state = UserAuthState::default();
        let mut now = at(0);
        let wrong = Attempt {
            user_id: "privacy".into(),
            pin: Some(SecretString::new("wrong password!")),
            totp: Some(SecretString::new("000000")),
            ..Attempt::default()
        };
        let mut locked = false;
        for _ in 0..5 {
            now = state.blocked_until.unwrap_or(now);
            let d = unlock::decide(&policy, now, Some(user), &state, &Default::default(), &wrong);
            if let Outcome::Refused { locked_out_now, .. } = d.outcome {
                locked |= locked_out_now;
            }
            state = d.user_state;
        }
        assert!(locked, "the fifth failure locks the account out");
    }
}
