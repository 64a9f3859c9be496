//! Policy: what IT decides about timeouts, unlock methods, lockouts and PHI apps.
//!
//! A policy comes in layers: built-in defaults < the machine policy file < the signed
//! central policy. Each layer is a partial TOML document; a key set in a higher layer
//! replaces the same key below it. The merged result is validated as a whole, and a
//! document that fails validation is refused entirely (the caller keeps the last good one).

mod signed;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use signed::{
    admin_credential_digest, key_id, parse_public_key, public_key_pem, AdminGrant, GrantRefusal,
    SignatureError, SignedPolicy, SignedPolicyBody, ADMIN_GRANT_FORMAT, SIGNED_POLICY_FORMAT,
};

/// The effective policy. `Default` is the built-in layer: safe for a hospital ward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    pub workstation: WorkstationPolicy,
    pub lock: LockPolicy,
    pub unlock: UnlockPolicy,
    pub pin: PinPolicy,
    pub lockout: LockoutPolicy,
    pub totp: TotpPolicy,
    pub phi: PhiPolicy,
    pub emergency: EmergencyPolicy,
    pub sync: SyncPolicy,
    pub audit: AuditPolicy,
    pub service: ServicePolicy,
}

/// A policy that passed every range and consistency rule: the only kind the decisions
/// (`unlock::decide`, supervision's rules) take. It is read through `Deref` and cannot be
/// changed, only built again; a policy changed field by field must pass the rules again.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPolicy(Policy);

impl ValidPolicy {
    pub fn into_inner(self) -> Policy {
        self.0
    }
}

impl std::ops::Deref for ValidPolicy {
    type Target = Policy;
    fn deref(&self) -> &Policy {
        &self.0
    }
}

impl TryFrom<Policy> for ValidPolicy {
    type Error = PolicyError;
    fn try_from(policy: Policy) -> Result<Self, PolicyError> {
        let problems: Vec<PolicyProblem> = policy
            .validate()
            .into_iter()
            .map(|(field, message)| PolicyProblem { field, message, location: None })
            .collect();
        if problems.is_empty() {
            Ok(ValidPolicy(policy))
        } else {
            Err(PolicyError { source_name: "the policy".to_owned(), problems })
        }
    }
}

impl Default for ValidPolicy {
    /// The built-in defaults, which pass every rule (a test holds them to it).
    fn default() -> Self {
        ValidPolicy(Policy::default())
    }
}

/// Where this workstation belongs. Only the machine layer may set it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkstationPolicy {
    /// Workstation group (ward, department) whose timings apply here.
    pub group: String,
}

impl Default for WorkstationPolicy {
    fn default() -> Self {
        Self { group: "default".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockPolicy {
    /// Input idle time after which the session locks.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long the countdown is shown before the lock; part of `idle_timeout`.
    #[serde(with = "humantime_serde")]
    pub warning: Duration,
    pub lock_on_resume: bool,
    /// Whether synthetic input (the XTEST devices that `xdotool` and "mouse jigglers"
    /// use) keeps the session awake. Idle time is measured from input devices; by
    /// default only real ones count.
    pub synthetic_input_keeps_awake: bool,
    /// Text shown on the lock screen (organisation, "authorised staff only").
    pub banner: String,
    /// The lock screen names whose session it is ("session of Nora N."), so that a
    /// colleague knows that unlocking takes it over.
    pub show_session_owner: bool,
    /// What `wardlockd` does when no trustworthy guard holds a session that should be
    /// guarded (the guard lost, its lock failed, no guard at all).
    pub when_unguarded: Unguarded,
    /// How long the service waits for a requested lock to be confirmed (by a guard of
    /// the session, or logind's `LockedHint`) before the next step.
    #[serde(with = "humantime_serde")]
    pub escalation_grace: Duration,
    /// Per workstation-group overrides of `idle_timeout` and `warning`.
    pub groups: BTreeMap<String, GroupTiming>,
    /// "Keep open" for a procedure: where allowed, a clinician (with their PIN) keeps the
    /// session from locking for a while, visibly and audited.
    pub hold: HoldPolicy,
    /// Applications (X11 `WM_CLASS`, instance or class) that keep the session awake while
    /// their window has the focus: a vitals display, a procedure video. Nothing else does.
    pub keep_awake: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HoldPolicy {
    /// How long one hold keeps the session open.
    #[serde(with = "humantime_serde")]
    pub length: Duration,
    /// Holds granted one after another without an ordinary unlock between them.
    pub max_in_a_row: u32,
    /// Workstation groups where holds are allowed; empty: nowhere.
    pub groups: Vec<String>,
}

impl Default for HoldPolicy {
    fn default() -> Self {
        Self { length: Duration::from_secs(5 * 60), max_in_a_row: 1, groups: Vec::new() }
    }
}

impl HoldPolicy {
    pub fn allowed_in(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

impl Default for LockPolicy {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(5 * 60),
            warning: Duration::from_secs(30),
            lock_on_resume: true,
            synthetic_input_keeps_awake: false,
            banner: "Authorised clinical staff only. Access is logged.".into(),
            show_session_owner: true,
            when_unguarded: Unguarded::Logoff,
            escalation_grace: Duration::from_secs(10),
            groups: BTreeMap::new(),
            hold: HoldPolicy::default(),
            keep_awake: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct GroupTiming {
    #[serde(with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    #[serde(with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub warning: Option<Duration>,
}

/// The end of the ladder `wardlockd` walks for an unguarded session: ask for a lock,
/// wait `escalation_grace` for a confirmation, then this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unguarded {
    /// End the session (logind `TerminateSession`): HIPAA's automatic logoff. A shared
    /// ward workstation never stays unguarded.
    Logoff,
    /// Ask for the lock and audit (with an alert) whether anyone confirmed it.
    LockOnly,
    /// Audit and alert only (tests, kiosks).
    AuditOnly,
}

impl Unguarded {
    pub fn as_str(self) -> &'static str {
        match self {
            Unguarded::Logoff => "logoff",
            Unguarded::LockOnly => "lock_only",
            Unguarded::AuditOnly => "audit_only",
        }
    }
}

/// `lock.on_guard_lost` / `lock.on_grab_failure` of earlier releases, read as
/// `lock.when_unguarded`: `"os_lock"` only asked logind to signal a locker, which locks
/// nothing where the guard was the only one, so it means the ladder that protects.
const LEGACY_ESCALATION_KEYS: &[&str] = &["on_guard_lost", "on_grab_failure"];

fn legacy_escalation(value: &str) -> Option<Unguarded> {
    match value {
        "os_lock" => Some(Unguarded::Logoff),
        "audit_only" => Some(Unguarded::AuditOnly),
        _ => None,
    }
}

/// Rewrites the legacy keys of a `[lock]` table into `when_unguarded` (unless it is set),
/// the more protective of the two where they differ. Unknown legacy values are left in
/// place, so the usual check reports them.
fn map_legacy_lock_keys(lock: &mut toml::Table) {
    let mut mapped: Option<Unguarded> = None;
    for key in LEGACY_ESCALATION_KEYS {
        let Some(found) = lock.get(*key).and_then(|v| v.as_str()).and_then(legacy_escalation) else {
            continue;
        };
        lock.remove(*key);
        mapped = Some(mapped.map_or(found, |m| m.more_protective(found)));
    }
    if let Some(mapped) = mapped {
        lock.entry("when_unguarded").or_insert_with(|| toml::Value::String(mapped.as_str().to_owned()));
    }
}

impl Unguarded {
    /// The more protective of two.
    fn more_protective(self, other: Unguarded) -> Unguarded {
        let rank = |u: Unguarded| match u {
            Unguarded::Logoff => 2,
            Unguarded::LockOnly => 1,
            Unguarded::AuditOnly => 0,
        };
        if rank(self) >= rank(other) {
            self
        } else {
            other
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnlockMethod {
    Pin,
    Totp,
    PinTotp,
}

impl fmt::Display for UnlockMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnlockMethod::Pin => "pin",
            UnlockMethod::Totp => "totp",
            UnlockMethod::PinTotp => "pin_totp",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnlockPolicy {
    /// Methods a clinician may use. `pin_totp` alone means MFA is required.
    pub methods: Vec<UnlockMethod>,
}

impl Default for UnlockPolicy {
    fn default() -> Self {
        Self { methods: vec![UnlockMethod::Pin, UnlockMethod::Totp, UnlockMethod::PinTotp] }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PinPolicy {
    pub min_length: usize,
    pub max_length: usize,
    pub digits_only: bool,
    /// Refuse PINs such as 1234, 0000, 123456 and other sequences or repeats.
    pub reject_common: bool,
}

impl Default for PinPolicy {
    fn default() -> Self {
        Self { min_length: 6, max_length: 12, digits_only: true, reject_common: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockoutPolicy {
    /// Consecutive failures against one user before that user is locked out.
    pub max_failures: u32,
    /// Wait after the first failure; doubles with each further failure.
    #[serde(with = "humantime_serde")]
    pub throttle: Duration,
    /// First lockout; doubles with each consecutive lockout up to `max_lockout`.
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    #[serde(with = "humantime_serde")]
    pub max_lockout: Duration,
    /// Failures against any users on this workstation within `workstation_window`
    /// before it refuses all unlocks (someone cycling through user IDs). A success does
    /// not reset the count: only time does.
    pub workstation_max_failures: u32,
    #[serde(with = "humantime_serde")]
    pub workstation_window: Duration,
    #[serde(with = "humantime_serde")]
    pub workstation_lockout: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            throttle: Duration::from_secs(1),
            lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(30 * 60),
            workstation_max_failures: 20,
            workstation_window: Duration::from_secs(15 * 60),
            workstation_lockout: Duration::from_secs(5 * 60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TotpAlgorithm {
    #[serde(alias = "sha1")]
    Sha1,
    #[serde(alias = "sha256")]
    Sha256,
    #[serde(alias = "sha512")]
    Sha512,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TotpPolicy {
    /// Steps accepted either side of now (clock drift of the clinician's phone).
    pub skew_steps: u8,
    pub digits: u8,
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    pub algorithm: TotpAlgorithm,
}

impl Default for TotpPolicy {
    fn default() -> Self {
        Self { skew_steps: 1, digits: 6, step: Duration::from_secs(30), algorithm: TotpAlgorithm::Sha1 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhiPolicy {
    /// Applications that show patient data and must not stay readable while locked.
    pub apps: Vec<PhiApp>,
    /// Timing tiers by name. While a window of an application with a tier is open, the
    /// strictest such tier (the shortest `idle_timeout`) replaces the group's timing.
    pub tiers: BTreeMap<String, PhiTier>,
    pub on_lock: PhiAction,
    /// What becomes of a clinician's hidden applications when another clinician unlocks.
    pub on_switch: PhiSwitch,
    /// How long an application asked to close (`WM_DELETE_WINDOW`) has before it is
    /// sent `SIGTERM`.
    #[serde(with = "humantime_serde")]
    pub close_grace: Duration,
    /// Close the hidden PHI apps when they stay hidden this long (not set: never):
    /// HIPAA's automatic logoff for an abandoned session.
    #[serde(with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub close_after: Option<Duration>,
    /// During the countdown, cover the PHI windows with an opaque panel until input.
    pub dim_at_warning: bool,
}

impl Default for PhiPolicy {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            tiers: BTreeMap::new(),
            on_lock: PhiAction::Hide,
            on_switch: PhiSwitch::Close,
            close_grace: Duration::from_secs(10),
            close_after: None,
            dim_at_warning: false,
        }
    }
}

/// One PHI application. Every matcher given must match a window; at least one is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhiApp {
    /// Name shown in audit entries.
    pub name: String,
    /// X11 `WM_CLASS`: the instance or the class name of the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wm_class: Option<String>,
    /// The executable of the window's process (`_NET_WM_PID` → `/proc/PID/exe`): a full
    /// path, or a file name that matches in any directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Earlier releases' matcher: a window class or an executable file name, either.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// A key of `phi.tiers`; not set: the group's timing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// What a window says it is, as the guard reads it from the display server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WindowIdentity {
    pub instance: String,
    pub class: String,
    /// The path of its process's executable, when it could be read.
    pub exe: Option<String>,
}

impl PhiApp {
    pub fn matches(&self, window: &WindowIdentity) -> bool {
        let class_is = |want: &str| window.instance == want || window.class == want;
        let exe_is = |want: &str| {
            window.exe.as_deref().is_some_and(|exe| {
                if want.contains('/') {
                    exe == want
                } else {
                    exe.rsplit('/').next() == Some(want)
                }
            })
        };
        fn named(m: &Option<String>) -> Option<&str> {
            m.as_deref().map(str::trim).filter(|m| !m.is_empty())
        }
        let (wm_class, exe, legacy) = (named(&self.wm_class), named(&self.exe), named(&self.matches));
        if wm_class.is_none() && exe.is_none() && legacy.is_none() {
            return false;
        }
        wm_class.is_none_or(class_is)
            && exe.is_none_or(exe_is)
            && legacy.is_none_or(|m| class_is(m) || exe_is(m))
    }

    fn has_matcher(&self) -> bool {
        [&self.wm_class, &self.exe, &self.matches]
            .iter()
            .any(|m| m.as_deref().is_some_and(|m| !m.trim().is_empty()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhiTier {
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub warning: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PhiAction {
    /// Iconified through the window manager (unmapped without one), so nothing of them
    /// is on screen even if the curtain went.
    #[default]
    #[serde(alias = "minimize")]
    Hide,
    /// Left as they are, behind the curtain.
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PhiSwitch {
    /// Closed politely, then by signal after `close_grace`: record locks are released.
    #[default]
    Close,
    /// Kept hidden until their clinician unlocks again (or `close_after`).
    KeepHidden,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmergencyPolicy {
    pub enabled: bool,
    /// Break-glass asks for the user's PIN: it waives method rules, never
    /// identification. Must be true (validation refuses `false`): an ID and a reason
    /// alone would let anyone who knows a colleague's ID in.
    pub require_pin: bool,
    /// Break-glass also asks for a TOTP code. Not set: only where `pin_totp` is the one
    /// allowed unlock method (an MFA ward stays MFA in an emergency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_totp: Option<bool>,
    pub min_reason_chars: usize,
    /// Break-glass grants per user in any 24 hours; the next one is refused (and audited).
    pub max_per_user_per_day: u32,
    /// During a workstation lockout (someone cycling user IDs), break-glass attempts are
    /// still checked until this many of them have failed; then every attempt is refused
    /// until the lockout ends, so a guesser cannot type a reason to go on guessing.
    pub max_failures_during_lockout: u32,
}

impl Default for EmergencyPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            require_pin: true,
            require_totp: None,
            min_reason_chars: 10,
            max_per_user_per_day: 3,
            max_failures_during_lockout: 3,
        }
    }
}

impl EmergencyPolicy {
    /// Whether break-glass needs a TOTP code too under these unlock rules.
    pub fn requires_totp(&self, unlock: &UnlockPolicy) -> bool {
        self.require_totp.unwrap_or(unlock.methods == [UnlockMethod::PinTotp])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncPolicy {
    /// Collector base URL (https). Not set: the workstation works on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub batch_size: u32,
    /// Unsent audit entries beyond which the service warns (it never purges them).
    pub backlog_warning: u64,
    /// Ed25519 public keys (PEM or base64) allowed to sign central policies.
    /// Machine layer only: a central policy cannot choose who may sign it.
    pub trusted_keys: Vec<String>,
    /// PEM file of the CA (or self-signed certificate) the collector's TLS certificate
    /// must chain to; not set: the system's trusted roots. Machine layer only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        Self {
            endpoint: None,
            interval: Duration::from_secs(60),
            batch_size: 500,
            backlog_warning: 10_000,
            trusted_keys: Vec::new(),
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditPolicy {
    /// Entries acknowledged by the collector are kept locally at least this long.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        Self { retention: Duration::from_secs(365 * 24 * 3600) }
    }
}

/// How `wardlockd` treats the clients of its local socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServicePolicy {
    /// OS accounts whose processes may connect to the socket. With `allowed_groups`
    /// also empty, every local account may (the ward's shared account varies by
    /// machine); attempts are throttled by the service whoever connects.
    pub allowed_users: Vec<String>,
    /// OS groups whose members may connect (primary or supplementary).
    pub allowed_groups: Vec<String>,
    /// A guard that sends nothing for this long is taken as lost (`guard_lost`).
    #[serde(with = "humantime_serde")]
    pub guard_heartbeat_timeout: Duration,
    /// Unlock and enrollment attempts the service considers per minute, for the admitted
    /// guards and, apart, for every other client; the rest are refused unheard (and
    /// counted in one audit entry), so a script can neither fill the disk with refusals
    /// nor spend the lock screen's allowance.
    pub max_attempts_per_minute: u32,
    /// Whether clients other than the guard (`wardlockctl agent unlock`) may have a
    /// clinician's credentials checked. Off: only the lock screen asks. Machine layer only.
    pub tool_unlock: bool,
    /// The installed guard: only a process running this executable (its
    /// `/proc/PID/exe`) may connect as the guard. Machine layer only. Not set: the
    /// service's own default (the packaged path; with `--dev`, the guard beside it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard_executable: Option<String>,
}

impl Default for ServicePolicy {
    fn default() -> Self {
        Self {
            allowed_users: Vec::new(),
            allowed_groups: Vec::new(),
            guard_heartbeat_timeout: Duration::from_secs(15),
            max_attempts_per_minute: 30,
            tool_unlock: false,
            guard_executable: None,
        }
    }
}

/// Which layer a document is; it decides which keys it may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The machine policy file, written by IT through configuration management.
    Machine,
    /// The signed policy from the collector.
    Central,
}

/// Keys that only the machine layer may set: they decide whom the workstation trusts.
const MACHINE_ONLY_KEYS: &[(&str, &str)] = &[
    ("sync", "trusted_keys"),
    ("sync", "endpoint"),
    ("sync", "ca_file"),
    ("workstation", "group"),
    ("service", "allowed_users"),
    ("service", "allowed_groups"),
    ("service", "guard_executable"),
    ("service", "tool_unlock"),
];

/// One problem in a policy document, located where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    /// Dotted path of the offending key (`lock.idle_timeout`); empty for syntax errors.
    pub field: String,
    pub message: String,
    /// 1-based line and column in the document, when known.
    pub location: Option<(usize, usize)>,
}

/// A policy document was refused; every problem found is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// What the document is called in messages (a path, "central policy").
    pub source_name: String,
    pub problems: Vec<PolicyProblem>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{}: {n} problem{} in policy", self.source_name, if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  {}", self.source_name)?;
            if let Some((line, col)) = p.location {
                write!(f, ":{line}:{col}")?;
            }
            if p.field.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": {}: {}", p.field, p.message)?;
            }
        }
        Ok(())
    }
}

/// A parsed, individually valid layer. Keeps its text so later problems (found only
/// once layers are merged) can still point at a line.
#[derive(Debug, Clone)]
pub struct PolicyDocument {
    source_name: String,
    layer: Layer,
    text: String,
    table: toml::Table,
}

const SECTIONS: &[&str] = &[
    "workstation",
    "lock",
    "unlock",
    "pin",
    "lockout",
    "totp",
    "phi",
    "emergency",
    "sync",
    "audit",
    "service",
];

impl PolicyDocument {
    /// Parses and checks one layer on its own: syntax, unknown keys, types, machine-only
    /// keys, and the ranges of what it sets (over the built-in defaults).
    pub fn parse(source_name: &str, layer: Layer, text: &str) -> Result<Self, PolicyError> {
        let fail = |problems| PolicyError { source_name: source_name.to_owned(), problems };
        let doc = match toml_edit::ImDocument::parse(text.to_owned()) {
            Ok(doc) => doc,
            Err(e) => {
                let location = e.span().map(|s| line_col(text, s.start));
                let message = e.message().trim().to_owned();
                return Err(fail(vec![PolicyProblem { field: String::new(), message, location }]));
            }
        };

        let mut problems = Vec::new();
        let mut bad_sections = Vec::new();
        for (key, item) in doc.as_table().iter() {
            let location = doc.as_table().key(key).and_then(|k| k.span()).map(|s| line_col(text, s.start));
            if !SECTIONS.contains(&key) {
                bad_sections.push(key.to_owned());
                problems.push(PolicyProblem {
                    field: key.to_owned(),
                    message: format!("unknown section; allowed sections are {}", SECTIONS.join(", ")),
                    location,
                });
                continue;
            }
            // Each section is checked on its own so that one bad section does not hide
            // the problems of the others.
            let Some(mut value) = item.clone().into_value().ok() else {
                bad_sections.push(key.to_owned());
                problems.push(PolicyProblem {
                    field: key.to_owned(),
                    message: "must be a table, e.g. [".to_owned() + key + "]",
                    location,
                });
                continue;
            };
            if let (true, toml_edit::Value::InlineTable(lock)) = (key == "lock", &mut value) {
                for legacy in LEGACY_ESCALATION_KEYS {
                    if lock.get(legacy).and_then(|v| v.as_str()).and_then(legacy_escalation).is_some() {
                        lock.remove(legacy);
                    }
                }
            }
            if let Err(e) = check_section(key, value) {
                bad_sections.push(key.to_owned());
                let message = e.message().trim().to_owned();
                let field = e
                    .span()
                    .and_then(|s| key_at(item, s.start))
                    .or_else(|| unknown_field(&message))
                    .map_or_else(|| key.to_owned(), |sub| format!("{key}.{sub}"));
                let location = e.span().map(|s| line_col(text, s.start)).or(location);
                problems.push(PolicyProblem { field, message, location });
            }
            if layer == Layer::Central {
                for (section, field) in MACHINE_ONLY_KEYS {
                    if *section == key && item.get(field).is_some() {
                        problems.push(PolicyProblem {
                            field: format!("{section}.{field}"),
                            message: "may only be set in the machine policy file, not in a central policy"
                                .into(),
                            location,
                        });
                    }
                }
            }
        }
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            fail(vec![PolicyProblem {
                field: String::new(),
                message: e.message().to_owned(),
                location: e.span().map(|s| line_col(text, s.start)),
            }])
        })?;
        // The sections that parsed are range-checked even when others did not, so one
        // run lists every problem. Alone, a layer is checked for ranges only: whether its
        // warning is shorter than the timeout may depend on the layer below it, so that is
        // checked when the layers are merged.
        table.retain(|key, _| !bad_sections.iter().any(|bad| bad == key));
        if let Some(toml::Value::Table(lock)) = table.get_mut("lock") {
            map_legacy_lock_keys(lock);
        }
        let document = Self { source_name: source_name.to_owned(), layer, text: text.to_owned(), table };
        if let Err(e) = Policy::layered_in(std::slice::from_ref(&document), Rules::RangesOnly) {
            problems.extend(e.problems);
        }
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        Ok(document)
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    pub fn layer(&self) -> Layer {
        self.layer
    }

    /// Best-effort position of a dotted key in this document's text.
    fn locate(&self, field: &str) -> Option<(usize, usize)> {
        let doc = toml_edit::ImDocument::parse(self.text.as_str()).ok()?;
        let mut parts = field.split('.');
        let first = parts.next()?;
        let mut item = doc.as_table().get(first)?;
        let mut span = doc.as_table().key(first).and_then(|k| k.span());
        for part in parts {
            let table = item.as_table_like()?;
            span = table.get_key_value(part).and_then(|(k, _)| k.span()).or(span);
            item = table.get(part)?;
        }
        span.map(|s| line_col(&self.text, s.start))
    }
}

/// Dotted path, below `item`, of the key whose value covers `offset`.
fn key_at(item: &toml_edit::Item, offset: usize) -> Option<String> {
    let table = item.as_table_like()?;
    for (key, value) in table.iter() {
        let covers = value.span().is_some_and(|s| s.contains(&offset))
            || table.get_key_value(key).and_then(|(k, _)| k.span()).is_some_and(|s| s.contains(&offset));
        if covers {
            return Some(match key_at(value, offset) {
                Some(sub) => format!("{key}.{sub}"),
                None => key.to_owned(),
            });
        }
    }
    None
}

/// The key named by serde's "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

fn check_section(name: &str, value: toml_edit::Value) -> Result<(), toml_edit::de::Error> {
    use serde::de::IntoDeserializer;
    fn check<T: serde::de::DeserializeOwned>(value: toml_edit::Value) -> Result<(), toml_edit::de::Error> {
        T::deserialize(value.into_deserializer()).map(drop)
    }
    match name {
        "workstation" => check::<WorkstationPolicy>(value),
        "lock" => check::<LockPolicy>(value),
        "unlock" => check::<UnlockPolicy>(value),
        "pin" => check::<PinPolicy>(value),
        "lockout" => check::<LockoutPolicy>(value),
        "totp" => check::<TotpPolicy>(value),
        "phi" => check::<PhiPolicy>(value),
        "emergency" => check::<EmergencyPolicy>(value),
        "sync" => check::<SyncPolicy>(value),
        "audit" => check::<AuditPolicy>(value),
        "service" => check::<ServicePolicy>(value),
        _ => Ok(()),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn merge(into: &mut toml::Table, from: &toml::Table) {
    for (key, value) in from {
        match (into.get_mut(key), value) {
            (Some(toml::Value::Table(dst)), toml::Value::Table(src)) => merge(dst, src),
            _ => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

impl Policy {
    /// The effective policy: built-in defaults with each document laid over the last.
    /// Documents must be in order (machine, then central).
    pub fn layered(documents: &[PolicyDocument]) -> Result<ValidPolicy, PolicyError> {
        Self::layered_in(documents, Rules::All).map(ValidPolicy)
    }

    fn layered_in(documents: &[PolicyDocument], rules: Rules) -> Result<Policy, PolicyError> {
        let mut merged = toml::Table::new();
        for doc in documents {
            merge(&mut merged, &doc.table);
        }
        let names: Vec<&str> = documents.iter().map(|d| d.source_name.as_str()).collect();
        let source_name = if names.is_empty() { "built-in defaults".to_owned() } else { names.join(" + ") };
        let policy: Policy =
            toml::Value::Table(merged).try_into().map_err(|e: toml::de::Error| PolicyError {
                source_name: source_name.clone(),
                problems: vec![PolicyProblem {
                    field: String::new(),
                    message: e.message().to_owned(),
                    location: None,
                }],
            })?;
        let problems: Vec<PolicyProblem> = policy
            .problems(rules)
            .into_iter()
            .map(|(field, message)| {
                // Point at the highest layer that set the field, as that is the one to fix.
                let location = documents.iter().rev().find_map(|d| d.locate(&field));
                PolicyProblem { field, message, location }
            })
            .collect();
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(PolicyError { source_name, problems })
        }
    }

    /// Every range and consistency rule, as (field, what is allowed) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        self.problems(Rules::All)
    }

    fn problems(&self, rules: Rules) -> Vec<(String, String)> {
        let cross_field = rules == Rules::All;
        let mut problems = Vec::new();
        let mut range = |field: &str, value: Duration, min: Duration, max: Duration| {
            if value < min || value > max {
                problems.push((
                    field.to_owned(),
                    format!("must be between {} and {}, got {}", human(min), human(max), human(value)),
                ));
            }
        };
        let secs = Duration::from_secs;
        range("lock.idle_timeout", self.lock.idle_timeout, secs(15), secs(8 * 3600));
        range("lock.warning", self.lock.warning, secs(0), secs(5 * 60));
        for (name, g) in &self.lock.groups {
            if let Some(t) = g.idle_timeout {
                range(&format!("lock.groups.{name}.idle_timeout"), t, secs(15), secs(8 * 3600));
            }
            if let Some(w) = g.warning {
                range(&format!("lock.groups.{name}.warning"), w, secs(0), secs(5 * 60));
            }
        }
        range("lockout.throttle", self.lockout.throttle, secs(0), secs(60));
        range("lockout.lockout", self.lockout.lockout, secs(5), secs(24 * 3600));
        range("lockout.max_lockout", self.lockout.max_lockout, secs(5), secs(24 * 3600));
        range("lockout.workstation_lockout", self.lockout.workstation_lockout, secs(5), secs(24 * 3600));
        range("totp.step", self.totp.step, secs(15), secs(120));
        range("sync.interval", self.sync.interval, secs(5), secs(24 * 3600));
        range("lock.escalation_grace", self.lock.escalation_grace, secs(2), secs(60));
        range("lockout.workstation_window", self.lockout.workstation_window, secs(60), secs(24 * 3600));
        range("service.guard_heartbeat_timeout", self.service.guard_heartbeat_timeout, secs(3), secs(300));
        range("audit.retention", self.audit.retention, secs(7 * 24 * 3600), secs(10 * 366 * 24 * 3600));
        if let Some(close) = self.phi.close_after {
            range("phi.close_after", close, secs(60), secs(24 * 3600));
        }
        range("phi.close_grace", self.phi.close_grace, secs(1), secs(120));
        range("lock.hold.length", self.lock.hold.length, secs(60), secs(60 * 60));
        for (name, tier) in &self.phi.tiers {
            range(&format!("phi.tiers.{name}.idle_timeout"), tier.idle_timeout, secs(15), secs(8 * 3600));
            range(&format!("phi.tiers.{name}.warning"), tier.warning, secs(0), secs(5 * 60));
        }

        // Only meaningful once the timeout itself is in range; otherwise it repeats that problem.
        let timeout_ok = !problems.iter().any(|(field, _)| field.starts_with("lock."));
        for group in self.lock.groups.keys().chain([&"".to_owned()]) {
            let (idle, warning) = self.lock_timing_for(if group.is_empty() { None } else { Some(group) });
            if cross_field && timeout_ok && warning >= idle {
                let field = if group.is_empty() {
                    "lock.warning".to_owned()
                } else {
                    format!("lock.groups.{group}.warning")
                };
                problems.push((
                    field,
                    format!(
                        "must be shorter than the idle timeout ({}), got {}",
                        human(idle),
                        human(warning)
                    ),
                ));
            }
        }
        let mut count = |field: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                problems.push((field.to_owned(), format!("must be between {min} and {max}, got {value}")));
            }
        };
        count("lockout.max_failures", self.lockout.max_failures.into(), 1, 20);
        count("lock.hold.max_in_a_row", self.lock.hold.max_in_a_row.into(), 1, 12);
        count("lockout.workstation_max_failures", self.lockout.workstation_max_failures.into(), 1, 1000);
        count("pin.min_length", self.pin.min_length as u64, 4, 32);
        count("pin.max_length", self.pin.max_length as u64, 4, 64);
        count("totp.skew_steps", self.totp.skew_steps.into(), 0, 2);
        count("totp.digits", self.totp.digits.into(), 6, 8);
        count("emergency.min_reason_chars", self.emergency.min_reason_chars as u64, 3, 500);
        count("emergency.max_per_user_per_day", self.emergency.max_per_user_per_day.into(), 1, 50);
        count(
            "emergency.max_failures_during_lockout",
            self.emergency.max_failures_during_lockout.into(),
            1,
            5,
        );
        count("sync.batch_size", self.sync.batch_size.into(), 1, 10_000);
        count("service.max_attempts_per_minute", self.service.max_attempts_per_minute.into(), 5, 600);
        if self.sync.backlog_warning == 0 {
            problems.push(("sync.backlog_warning".into(), "must be at least 1, got 0".into()));
        }
        if cross_field && self.pin.max_length < self.pin.min_length {
            problems.push((
                "pin.max_length".into(),
                format!(
                    "must be at least pin.min_length ({}), got {}",
                    self.pin.min_length, self.pin.max_length
                ),
            ));
        }
        if cross_field && self.lockout.max_lockout < self.lockout.lockout {
            problems.push(("lockout.max_lockout".into(), "must be at least lockout.lockout".into()));
        }
        if !self.emergency.require_pin {
            problems.push((
                "emergency.require_pin".into(),
                "must be true: break-glass identifies the clinician by their PIN (a user ID and a reason \
                 alone would let anyone who knows a colleague's ID in)"
                    .into(),
            ));
        }
        if self.unlock.methods.is_empty() {
            problems.push((
                "unlock.methods".into(),
                "must name at least one of \"pin\", \"totp\", \"pin_totp\"".into(),
            ));
        }
        if self.workstation.group.trim().is_empty() {
            problems.push(("workstation.group".into(), "must not be empty".into()));
        }
        if let Some(endpoint) = &self.sync.endpoint {
            if !endpoint.starts_with("https://") {
                problems.push(("sync.endpoint".into(), format!("must be an https:// URL, got {endpoint:?}")));
            }
        }
        for (i, name) in self.service.allowed_users.iter().chain(&self.service.allowed_groups).enumerate() {
            if name.trim().is_empty() || name.chars().any(char::is_whitespace) {
                let list =
                    if i < self.service.allowed_users.len() { "allowed_users" } else { "allowed_groups" };
                problems
                    .push((format!("service.{list}"), format!("{name:?} is not an account or group name")));
            }
        }
        for (i, class) in self.lock.keep_awake.iter().enumerate() {
            if class.trim().is_empty() {
                problems.push((
                    format!("lock.keep_awake[{i}]"),
                    "must name a window class, got an empty one".into(),
                ));
            }
        }
        for (i, group) in self.lock.hold.groups.iter().enumerate() {
            if group.trim().is_empty() {
                problems.push((
                    format!("lock.hold.groups[{i}]"),
                    "must name a workstation group, got an empty one".into(),
                ));
            }
        }
        for (i, app) in self.phi.apps.iter().enumerate() {
            if app.name.trim().is_empty() {
                problems.push((format!("phi.apps[{i}].name"), "must not be empty".into()));
            }
            if !app.has_matcher() {
                problems.push((
                    format!("phi.apps[{i}]"),
                    "needs a non-empty wm_class or exe (the window's X11 class, or its program)".into(),
                ));
            }
            if let (true, Some(tier)) = (cross_field, &app.tier) {
                if !self.phi.tiers.contains_key(tier) {
                    let known: Vec<&str> = self.phi.tiers.keys().map(String::as_str).collect();
                    let known =
                        if known.is_empty() { "none is defined".to_owned() } else { known.join(", ") };
                    problems.push((
                        format!("phi.apps[{i}].tier"),
                        format!(
                            "unknown tier {tier:?}; define it under [phi.tiers.{tier}] (defined: {known})"
                        ),
                    ));
                }
            }
        }
        for (name, tier) in &self.phi.tiers {
            if cross_field && tier.warning >= tier.idle_timeout {
                problems.push((
                    format!("phi.tiers.{name}.warning"),
                    format!(
                        "must be shorter than the tier's idle timeout ({}), got {}",
                        human(tier.idle_timeout),
                        human(tier.warning)
                    ),
                ));
            }
        }
        problems
    }

    /// Idle timeout and warning for a workstation group, falling back to the defaults.
    pub fn lock_timing_for(&self, group: Option<&str>) -> (Duration, Duration) {
        let g = group.and_then(|g| self.lock.groups.get(g));
        (
            g.and_then(|g| g.idle_timeout).unwrap_or(self.lock.idle_timeout),
            g.and_then(|g| g.warning).unwrap_or(self.lock.warning),
        )
    }

    /// Timing for this workstation's own group.
    pub fn lock_timing(&self) -> (Duration, Duration) {
        self.lock_timing_for(Some(&self.workstation.group))
    }

    /// The effective policy as TOML, as `wardlockctl policy check` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// SHA-256 of the canonical JSON form, hex: names the policy in audit entries.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }
}

/// Which rules a check applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rules {
    /// Each value within its range.
    RangesOnly,
    /// Ranges and the rules that relate two fields (warning < idle timeout, …).
    All,
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests;

/// A central policy document as the console shows it: what core's validation finds in it,
/// and the timeouts it sets over the built-in defaults.
pub fn check_central(text: &str) -> crate::protocol::collector::PolicyCheck {
    use crate::protocol::collector::{PolicyCheck, PolicyCheckProblem};
    let parsed = PolicyDocument::parse("central policy", Layer::Central, text)
        .and_then(|doc| Policy::layered(std::slice::from_ref(&doc)));
    match parsed {
        Ok(policy) => {
            PolicyCheck { valid: true, problems: Vec::new(), timeouts: Some(effective_timeouts(&policy)) }
        }
        Err(e) => PolicyCheck {
            valid: false,
            problems: e
                .problems
                .into_iter()
                .map(|p| PolicyCheckProblem {
                    field: p.field,
                    message: p.message,
                    line: p.location.map(|(line, _)| line as u64),
                })
                .collect(),
            timeouts: None,
        },
    }
}

/// The group's idle timeout and warning, and each PHI tier's.
pub fn effective_timeouts(policy: &Policy) -> crate::protocol::collector::EffectiveTimeouts {
    use crate::protocol::collector::{EffectiveTimeouts, TierTimeouts};
    EffectiveTimeouts {
        idle_timeout_secs: policy.lock.idle_timeout.as_secs(),
        warning_secs: policy.lock.warning.as_secs(),
        tiers: policy
            .phi
            .tiers
            .iter()
            .map(|(tier, t)| TierTimeouts {
                tier: tier.clone(),
                idle_timeout_secs: t.idle_timeout.as_secs(),
                warning_secs: t.warning.as_secs(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod console_view_tests {
    #[test]
    fn a_central_policy_is_checked_and_its_timeouts_shown_per_tier() {
        let good = "[lock]\nidle_timeout = \"2m\"\nwarning = \"20s\"\n\n[phi.tiers.charts]\nidle_timeout = \"60s\"\nwarning = \"10s\"\n";
        let checked = super::check_central(good);
        assert!(checked.valid, "{:?}", checked.problems);
        let timeouts = checked.timeouts.expect("timeouts");
        assert_eq!((timeouts.idle_timeout_secs, timeouts.warning_secs), (120, 20));
        assert_eq!(timeouts.tiers[0].tier, "charts");
        assert_eq!(timeouts.tiers[0].idle_timeout_secs, 60);
        let unknown = super::check_central("[lock]\nnot_a_key = 1\n");
        assert!(!unknown.valid);
        assert_eq!(
            (unknown.problems[0].field.as_str(), unknown.problems[0].line),
            ("lock.not_a_key", Some(2))
        );
        let too_long = super::check_central("[lock]\nidle_timeout = \"30h\"\n");
        assert!(too_long.problems.iter().any(|p| p.field == "lock.idle_timeout"), "{:?}", too_long.problems);
    }
}
