//! Unlock decisions: PIN (Argon2id), TOTP (RFC 6238, each time step accepted once),
//! PIN+TOTP, throttling and lockout per user and per workstation, and break-glass access.
//!
//! [`decide`] is a pure function: counters come in, new counters go out with the outcome,
//! and the caller persists them (with the audit entry) before it answers anyone.

use std::sync::OnceLock;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::clock::UtcMillis;
use crate::policy::{PinPolicy, Policy, TotpAlgorithm, TotpPolicy, UnlockMethod, ValidPolicy};
use crate::secret::SecretString;

/// An Argon2id hash in PHC string form (`$argon2id$v=19$m=19456,t=2,p=1$…`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PinHash(String);

impl std::fmt::Debug for PinHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinHash(<redacted>)")
    }
}

impl PinHash {
    pub fn from_phc(phc: String) -> Result<Self, UnlockError> {
        PasswordHash::new(&phc).map_err(|e| UnlockError::BadPinHash(e.to_string()))?;
        Ok(Self(phc))
    }

    pub fn as_phc(&self) -> &str {
        &self.0
    }
}

/// A TOTP shared secret (raw bytes). Zeroed on drop, never printed.
#[derive(Clone)]
pub struct TotpSeed(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TotpSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSeed(<redacted>)")
    }
}

impl TotpSeed {
    /// Seeds shorter than 128 bits are refused (RFC 4226 §4).
    pub fn new(bytes: Vec<u8>) -> Result<Self, UnlockError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < 16 {
            return Err(UnlockError::SeedTooShort(bytes.len()));
        }
        Ok(Self(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnlockError {
    #[error("stored PIN hash is not a valid PHC string: {0}")]
    BadPinHash(String),
    #[error("TOTP secret must be at least 16 bytes, got {0}")]
    SeedTooShort(usize),
    #[error("hashing failed: {0}")]
    Hashing(String),
    #[error("TOTP setup failed: {0}")]
    Totp(String),
}

/// Argon2id with the `argon2` crate's defaults (m=19 MiB, t=2, p=1), OWASP's minimum.
fn argon2() -> Argon2<'static> {
    Argon2::default()
}

/// Hashes a PIN with a caller-supplied random salt (the core has no randomness of its own).
pub fn hash_pin(pin: &SecretString, salt: &[u8; 16]) -> Result<PinHash, UnlockError> {
    let salt = SaltString::encode_b64(salt).map_err(|e| UnlockError::Hashing(e.to_string()))?;
    let hash = argon2()
        .hash_password(pin.expose().as_bytes(), &salt)
        .map_err(|e| UnlockError::Hashing(e.to_string()))?;
    Ok(PinHash(hash.to_string()))
}

/// Constant-time check of a PIN against its hash (the `password-hash` crate compares the
/// outputs in constant time).
pub fn verify_pin(pin: &SecretString, hash: &PinHash) -> bool {
    match PasswordHash::new(&hash.0) {
        Ok(parsed) => argon2().verify_password(pin.expose().as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Spends the same work as a real verification, so an unknown user ID cannot be told
/// apart from a wrong PIN by timing.
fn verify_pin_against_nothing(pin: &SecretString) {
    static DUMMY: OnceLock<Option<PinHash>> = OnceLock::new();
    if let Some(dummy) =
        DUMMY.get_or_init(|| hash_pin(&SecretString::new("wardlock-dummy"), &[0x5a; 16]).ok())
    {
        let _ = verify_pin(pin, dummy);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinRuleError {
    #[error("PIN must have at least {0} characters")]
    TooShort(usize),
    #[error("PIN must have at most {0} characters")]
    TooLong(usize),
    #[error("PIN must contain digits only")]
    NotDigits,
    #[error("PIN is too easy to guess (repeated digits, a sequence, or a common PIN); choose another")]
    Common,
}

const COMMON_PINS: &[&str] = &[
    "1212", "1004", "2000", "6969", "4321", "2580", "5683", "0852", "1122", "1313", "7777", "112233",
    "121212", "123123", "159753", "696969", "654321", "123321", "131313", "789456", "147258", "258369",
    "102030", "112358", "159357", "520520", "147852", "852456",
];

/// PIN rules of the policy: length, digits only, and refusal of guessable PINs.
pub fn check_pin_rules(pin: &SecretString, rules: &PinPolicy) -> Result<(), PinRuleError> {
    let pin = pin.expose();
    let len = pin.chars().count();
    if len < rules.min_length {
        return Err(PinRuleError::TooShort(rules.min_length));
    }
    if len > rules.max_length {
        return Err(PinRuleError::TooLong(rules.max_length));
    }
    if rules.digits_only && !pin.chars().all(|c| c.is_ascii_digit()) {
        return Err(PinRuleError::NotDigits);
    }
    if rules.reject_common && is_common(pin) {
        return Err(PinRuleError::Common);
    }
    Ok(())
}

fn is_common(pin: &str) -> bool {
    let b = pin.as_bytes();
    let all_same = b.windows(2).all(|w| w[0] == w[1]);
    let ascending = b.windows(2).all(|w| w[1] == w[0].wrapping_add(1) || (w[0] == b'9' && w[1] == b'0'));
    let descending = b.windows(2).all(|w| w[0] == w[1].wrapping_add(1) || (w[0] == b'0' && w[1] == b'9'));
    // A short block repeated (1212, 123123, 2580 2580).
    let repeated_block = (1..=b.len() / 2).any(|n| b.len() % n == 0 && b.chunks(n).all(|c| c == &b[..n]));
    // A year or date-like PIN: 19xx/20xx as the whole PIN.
    let year = b.len() == 4 && (pin.starts_with("19") || pin.starts_with("20"));
    all_same || ascending || descending || repeated_block || year || COMMON_PINS.contains(&pin)
}

fn totp_for(policy: &TotpPolicy, seed: &TotpSeed, account: &str) -> Result<totp_rs::Totp, UnlockError> {
    let algorithm = match policy.algorithm {
        TotpAlgorithm::Sha1 => totp_rs::Algorithm::SHA1,
        TotpAlgorithm::Sha256 => totp_rs::Algorithm::SHA256,
        TotpAlgorithm::Sha512 => totp_rs::Algorithm::SHA512,
    };
    totp_rs::Builder::new()
        .with_algorithm(algorithm)
        .with_digits(policy.digits)
        .with_skew(policy.skew_steps.into())
        .with_step_duration(policy.step.as_secs())
        .with_secret(seed.expose().to_vec())
        .with_account_name(account.replace(':', "_"))
        .with_issuer(Some("Wardlock"))
        .build()
        .map_err(|e| UnlockError::Totp(e.to_string()))
}

/// The code an authenticator shows at `now` (for tests and enrollment checks).
pub fn totp_code(policy: &TotpPolicy, seed: &TotpSeed, now: UtcMillis) -> Result<String, UnlockError> {
    Ok(totp_for(policy, seed, "x")?.generate(now.unix_seconds()).to_string())
}

/// The `otpauth://` URI an authenticator app scans.
pub fn totp_uri(policy: &TotpPolicy, seed: &TotpSeed, user_id: &str) -> Result<String, UnlockError> {
    totp_for(policy, seed, user_id)?.to_url().map_err(|e| UnlockError::Totp(e.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpCheck {
    /// Right code; persist `step` as the user's last accepted step.
    Accepted {
        step: u64,
    },
    /// Right code, but its time step was already used.
    Replayed,
    Wrong,
}

/// Checks a code within ±`skew_steps`; a step at or before `last_step` is a replay.
pub fn check_totp(
    policy: &TotpPolicy,
    seed: &TotpSeed,
    code: &SecretString,
    now: UtcMillis,
    last_step: Option<u64>,
) -> TotpCheck {
    let Ok(totp) = totp_for(policy, seed, "x") else {
        return TotpCheck::Wrong;
    };
    let code: String = code.expose().chars().filter(|c| !c.is_whitespace()).collect();
    let code = Zeroizing::new(code);
    match totp.check(&code, now.unix_seconds()) {
        Some(step) if last_step.is_some_and(|last| step <= last) => TotpCheck::Replayed,
        Some(step) => TotpCheck::Accepted { step },
        None => TotpCheck::Wrong,
    }
}

/// Per-user unlock state that must survive a restart. Kept for any user ID typed, known
/// or not, so refusals look the same either way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAuthState {
    /// Consecutive failures since the last success or lockout.
    pub failures: u32,
    /// Consecutive lockouts; each doubles the next one.
    pub lockouts: u32,
    /// No attempt is considered before this time (throttle or lockout).
    pub blocked_until: Option<UtcMillis>,
    /// Failures against this user since their last unlock (shown to them at unlock).
    pub failures_since_unlock: u32,
    pub last_unlock: Option<UtcMillis>,
    /// Highest TOTP time step accepted; codes of this step or earlier are replays.
    pub last_totp_step: Option<u64>,
    /// This user's break-glass grants of the last 24 hours, oldest first.
    #[serde(default)]
    pub emergency_grants: Vec<UtcMillis>,
}

/// Workstation-wide unlock state: failures against any user IDs, over a sliding window
/// of time. Nothing but time takes a failure out: a success by anyone does not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkstationAuthState {
    /// Times of the latest failures within `lockout.workstation_window`, oldest first
    /// (at most `lockout.workstation_max_failures` of them).
    #[serde(default)]
    pub recent_failures: Vec<UtcMillis>,
    pub blocked_until: Option<UtcMillis>,
    /// Break-glass attempts that failed during the lockout in force (`blocked_until`);
    /// at `emergency.max_failures_during_lockout` break-glass is closed until it ends.
    #[serde(default)]
    pub emergency_failures_in_lockout: u32,
}

impl WorkstationAuthState {
    /// Failures still inside the window at `now`.
    pub fn failures_in_window(&self, window: Duration, now: UtcMillis) -> usize {
        self.recent_failures.iter().filter(|t| t.saturating_add(window) > now).count()
    }

    /// Whether the workstation is locked out at `now`.
    pub fn locked_out(&self, now: UtcMillis) -> bool {
        self.blocked_until.is_some_and(|until| until > now)
    }

    /// Whether break-glass is closed at `now`: during a lockout, after `max_failures`
    /// failed break-glass attempts.
    pub fn emergency_closed(&self, max_failures: u32, now: UtcMillis) -> bool {
        self.locked_out(now) && self.emergency_failures_in_lockout >= max_failures
    }
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// What the directory knows of the user an attempt names.
#[derive(Debug, Clone, Copy)]
pub struct UserCredentials<'a> {
    pub disabled: bool,
    pub pin_hash: Option<&'a PinHash>,
    pub totp_seed: Option<&'a TotpSeed>,
}

#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub user_id: String,
    pub pin: Option<SecretString>,
    pub totp: Option<SecretString>,
    /// Set for break-glass access.
    pub emergency_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantMethod {
    Pin,
    Totp,
    PinTotp,
    Emergency,
}

impl GrantMethod {
    /// The name audit entries use (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            GrantMethod::Pin => "pin",
            GrantMethod::Totp => "totp",
            GrantMethod::PinTotp => "pin_totp",
            GrantMethod::Emergency => "emergency",
        }
    }
}

/// Why an attempt was refused: for the audit log only. The guard is told only that it
/// was refused, how many attempts are left and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    UnknownUser,
    UserDisabled,
    BadCredentials,
    TotpReplayed,
    MethodNotAllowed,
    Throttled,
    UserLockedOut,
    WorkstationLockedOut,
    EmergencyDisabled,
    EmergencyReasonMissing,
    /// The user had `emergency.max_per_user_per_day` break-glass grants in 24 hours.
    EmergencyLimitReached,
    /// Break-glass during a workstation lockout, after
    /// `emergency.max_failures_during_lockout` failed ones: refused unchecked.
    EmergencyClosedDuringLockout,
}

impl RefusalReason {
    /// The name audit entries use (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::UnknownUser => "unknown_user",
            RefusalReason::UserDisabled => "user_disabled",
            RefusalReason::BadCredentials => "bad_credentials",
            RefusalReason::TotpReplayed => "totp_replayed",
            RefusalReason::MethodNotAllowed => "method_not_allowed",
            RefusalReason::Throttled => "throttled",
            RefusalReason::UserLockedOut => "user_locked_out",
            RefusalReason::WorkstationLockedOut => "workstation_locked_out",
            RefusalReason::EmergencyDisabled => "emergency_disabled",
            RefusalReason::EmergencyReasonMissing => "emergency_reason_missing",
            RefusalReason::EmergencyLimitReached => "emergency_limit_reached",
            RefusalReason::EmergencyClosedDuringLockout => "emergency_closed_during_lockout",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Granted {
        method: GrantMethod,
        /// When this user last unlocked this workstation before now.
        previous_unlock: Option<UtcMillis>,
        /// Failed attempts against this user since that unlock.
        failures_since_last_unlock: u32,
    },
    Refused {
        reason: RefusalReason,
        attempts_left: u32,
        retry_after: Option<Duration>,
        /// This failure started a lockout (of the user or of the workstation).
        locked_out_now: bool,
    },
}

/// The outcome and the counters to persist with its audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub user_state: UserAuthState,
    pub workstation_state: WorkstationAuthState,
}

/// A break-glass reason is audited and synced with priority; a few sentences at most.
/// Longer ones are cut here, never refused: nobody should retype in an emergency.
pub const MAX_EMERGENCY_REASON_CHARS: usize = 1000;

/// A break-glass reason as it is checked and stored: trimmed, control characters out,
/// at most [`MAX_EMERGENCY_REASON_CHARS`].
pub fn emergency_reason_text(reason: &str) -> String {
    reason.trim().chars().filter(|c| !c.is_control()).take(MAX_EMERGENCY_REASON_CHARS).collect()
}

/// Decides one unlock attempt. `user` is `None` when the ID is not in the directory.
pub fn decide(
    policy: &ValidPolicy,
    now: UtcMillis,
    user: Option<UserCredentials<'_>>,
    user_state: &UserAuthState,
    workstation_state: &WorkstationAuthState,
    attempt: &Attempt,
) -> Decision {
    let lockout = &policy.lockout;
    let unchanged = |reason, retry_after: Option<Duration>| Decision {
        outcome: Outcome::Refused {
            reason,
            attempts_left: lockout.max_failures.saturating_sub(user_state.failures),
            retry_after,
            locked_out_now: false,
        },
        user_state: user_state.clone(),
        workstation_state: workstation_state.clone(),
    };

    // A workstation lockout is others' doing (someone cycling IDs); a clinician's own
    // break-glass access still passes it, under their own counters below, but only
    // until a few break-glass attempts have failed in it: otherwise typing a reason
    // would let the guesser go on.
    let emergency = attempt.emergency_reason.is_some() && policy.emergency.enabled;
    if let Some(until) = workstation_state.blocked_until.filter(|u| *u > now) {
        let retry = Some(now.until(until));
        if !emergency {
            return unchanged(RefusalReason::WorkstationLockedOut, retry);
        }
        if workstation_state.emergency_closed(policy.emergency.max_failures_during_lockout, now) {
            return unchanged(RefusalReason::EmergencyClosedDuringLockout, retry);
        }
    }
    if let Some(until) = user_state.blocked_until.filter(|u| *u > now) {
        let reason =
            if user_state.failures == 0 { RefusalReason::UserLockedOut } else { RefusalReason::Throttled };
        return unchanged(reason, Some(now.until(until)));
    }

    let verified = if let Some(reason) = &attempt.emergency_reason {
        if !policy.emergency.enabled {
            return unchanged(RefusalReason::EmergencyDisabled, None);
        }
        if emergency_reason_text(reason).chars().count() < policy.emergency.min_reason_chars {
            return unchanged(RefusalReason::EmergencyReasonMissing, None);
        }
        // Validation keeps `require_pin` true; the PIN is checked whatever it says.
        let pin_ok = check_pin_factor(user, attempt.pin.as_ref());
        let totp = policy.emergency.requires_totp(&policy.unlock).then(|| {
            match (attempt.totp.as_ref(), user.and_then(|u| u.totp_seed)) {
                (Some(code), Some(seed)) => {
                    check_totp(&policy.totp, seed, code, now, user_state.last_totp_step)
                }
                _ => TotpCheck::Wrong,
            }
        });
        verify_factors(user, pin_ok, totp).map(|step| (GrantMethod::Emergency, step))
    } else {
        let method = match (&attempt.pin, &attempt.totp) {
            (Some(_), Some(_)) => UnlockMethod::PinTotp,
            (Some(_), None) => UnlockMethod::Pin,
            (None, Some(_)) => UnlockMethod::Totp,
            (None, None) => return unchanged(RefusalReason::MethodNotAllowed, None),
        };
        // Offering both factors is fine wherever either one alone would be.
        let allowed = &policy.unlock.methods;
        if !(allowed.contains(&method) || (method == UnlockMethod::PinTotp && !allowed.is_empty())) {
            return unchanged(RefusalReason::MethodNotAllowed, None);
        }
        // Both factors are always checked, so the time taken says nothing about which failed.
        let pin_ok = attempt.pin.as_ref().map(|pin| check_pin_factor(user, Some(pin)));
        let totp = attempt.totp.as_ref().map(|code| match user.and_then(|u| u.totp_seed) {
            Some(seed) => check_totp(&policy.totp, seed, code, now, user_state.last_totp_step),
            None => TotpCheck::Wrong,
        });
        let grant = match method {
            UnlockMethod::Pin => GrantMethod::Pin,
            UnlockMethod::Totp => GrantMethod::Totp,
            UnlockMethod::PinTotp => GrantMethod::PinTotp,
        };
        verify_factors(user, pin_ok.unwrap_or(true), totp).map(|step| (grant, step))
    };

    let emergency_grants: Vec<UtcMillis> =
        user_state.emergency_grants.iter().copied().filter(|t| t.saturating_add(DAY) > now).collect();
    if let Ok((GrantMethod::Emergency, _)) = verified {
        let cap = policy.emergency.max_per_user_per_day as usize;
        if emergency_grants.len() >= cap {
            // The right user with the right PIN: refused, but not counted as a failure.
            // (A cap of 0 never passes validation; here it refuses with no retry time.)
            let oldest = emergency_grants.get(emergency_grants.len() - cap).copied();
            let mut refused = unchanged(RefusalReason::EmergencyLimitReached, None);
            if let Outcome::Refused { retry_after, .. } = &mut refused.outcome {
                *retry_after = oldest.map(|t| now.until(t.saturating_add(DAY)));
            }
            return refused;
        }
    }

    match verified {
        Ok((method, totp_step)) => Decision {
            outcome: Outcome::Granted {
                method,
                previous_unlock: user_state.last_unlock,
                failures_since_last_unlock: user_state.failures_since_unlock,
            },
            user_state: UserAuthState {
                failures: 0,
                lockouts: 0,
                blocked_until: None,
                failures_since_unlock: 0,
                last_unlock: Some(now),
                last_totp_step: totp_step.or(user_state.last_totp_step),
                emergency_grants: if method == GrantMethod::Emergency {
                    emergency_grants.into_iter().chain([now]).collect()
                } else {
                    emergency_grants
                },
            },
            workstation_state: workstation_state.clone(),
        },
        Err(reason) => {
            let mut decision = failure(policy, now, user_state, workstation_state, reason);
            // A break-glass failure inside a lockout counts toward closing break-glass
            // (the lockout started before it: a lockout this failure starts counts anew).
            if emergency && workstation_state.locked_out(now) {
                let ws = &mut decision.workstation_state;
                ws.emergency_failures_in_lockout = workstation_state.emergency_failures_in_lockout + 1;
            }
            decision
        }
    }
}

/// True only for a known user with a PIN that matches; spends the same time otherwise.
fn check_pin_factor(user: Option<UserCredentials<'_>>, pin: Option<&SecretString>) -> bool {
    match (user.and_then(|u| u.pin_hash), pin) {
        (Some(hash), Some(pin)) => verify_pin(pin, hash),
        (None, Some(pin)) => {
            verify_pin_against_nothing(pin);
            false
        }
        (_, None) => false,
    }
}

/// Combines the factor results; `Ok` carries the TOTP step to persist, if one was used.
fn verify_factors(
    user: Option<UserCredentials<'_>>,
    pin_ok: bool,
    totp: Option<TotpCheck>,
) -> Result<Option<u64>, RefusalReason> {
    let user = user.ok_or(RefusalReason::UnknownUser)?;
    if user.disabled {
        return Err(RefusalReason::UserDisabled);
    }
    if !pin_ok {
        return Err(RefusalReason::BadCredentials);
    }
    match totp {
        None => Ok(None),
        Some(TotpCheck::Accepted { step }) => Ok(Some(step)),
        Some(TotpCheck::Replayed) => Err(RefusalReason::TotpReplayed),
        Some(TotpCheck::Wrong) => Err(RefusalReason::BadCredentials),
    }
}

/// Counts a failed attempt: throttle with exponential back-off, then lock the user out
/// (each consecutive lockout twice as long, up to the maximum), and lock the whole
/// workstation when failures across user IDs pass its limit.
fn failure(
    policy: &Policy,
    now: UtcMillis,
    user_state: &UserAuthState,
    workstation_state: &WorkstationAuthState,
    reason: RefusalReason,
) -> Decision {
    let rules = &policy.lockout;
    let mut user = user_state.clone();
    let mut ws = workstation_state.clone();
    user.failures += 1;
    user.failures_since_unlock = user.failures_since_unlock.saturating_add(1);
    let limit = rules.workstation_max_failures as usize;
    ws.recent_failures.retain(|t| t.saturating_add(rules.workstation_window) > now);
    ws.recent_failures.push(now);
    if ws.recent_failures.len() > limit {
        ws.recent_failures.drain(..ws.recent_failures.len() - limit);
    }

    let mut locked_out_now = false;
    let mut attempts_left = rules.max_failures.saturating_sub(user.failures);
    let mut wait = if user.failures >= rules.max_failures {
        locked_out_now = true;
        user.lockouts = user.lockouts.saturating_add(1);
        user.failures = 0;
        attempts_left = 0;
        doubled(rules.lockout, user.lockouts - 1).min(rules.max_lockout)
    } else {
        doubled(rules.throttle, user.failures - 1).min(rules.lockout)
    };
    if !workstation_state.locked_out(now) {
        ws.emergency_failures_in_lockout = 0;
    }
    if ws.recent_failures.len() >= limit {
        locked_out_now = true;
        ws.recent_failures.clear();
        ws.blocked_until = Some(now.saturating_add(rules.workstation_lockout));
        wait = wait.max(rules.workstation_lockout);
    }
    user.blocked_until = (!wait.is_zero()).then(|| now.saturating_add(wait));
    Decision {
        outcome: Outcome::Refused {
            reason,
            attempts_left,
            retry_after: (!wait.is_zero()).then_some(wait),
            locked_out_now,
        },
        user_state: user,
        workstation_state: ws,
    }
}

fn doubled(base: Duration, times: u32) -> Duration {
    base.saturating_mul(1u32.checked_shl(times.min(31)).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests;
