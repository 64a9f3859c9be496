//! Guard ⇄ `wardlockd` protocol: newline-delimited JSON over a Unix socket (Windows: a
//! named pipe), one message per line, at most [`MAX_FRAME_BYTES`]. The first request must
//! be `hello`. The guard asks for decisions; it never receives a hash, a seed or an
//! audit row, and a refusal never says which factor was wrong.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::UtcMillis;
use crate::lock::LockReason;
use crate::policy::{PhiAction, PhiApp, PhiSwitch, Policy, UnlockMethod, WindowIdentity};
use crate::secret::SecretString;

pub const PROTOCOL_VERSION: u32 = 1;
/// Longer lines are a protocol error and close the connection.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Hello {
        version: u32,
        client: String,
        /// A guard is supervised: its heartbeats are expected and its loss is audited.
        #[serde(default)]
        role: ClientRole,
    },
    // Empty braces, not unit variants: serde checks unknown fields only on those.
    Policy {},
    Event {
        event: GuardEvent,
    },
    Unlock(UnlockRequest),
    /// "Sign out" at the lock screen: the clinician proves who they are (as for an
    /// unlock; break-glass does not apply), their PHI applications are closed and the
    /// lock stays. Answered like an unlock. Guard only.
    SignOut(UnlockRequest),
    /// "Keep open": an unlock that also keeps the session from locking for
    /// `lock.hold.length`, where policy allows it. Answered with `hold`. Guard only.
    Hold(UnlockRequest),
    Enroll(EnrollRequest),
    /// The guard asks to quit; only an administrator's credentials allow it. After
    /// `quit authorized` the guard may close its connection without a `guard_lost`.
    Quit(AdminCredentials),
    Heartbeat {},
    Status {},
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientRole {
    /// The session guard: one per session, supervised.
    Guard,
    /// Anything else (a status query, a test): not supervised.
    #[default]
    Tool,
}

/// An administrator's identification for quitting the guard or approving an enrollment.
/// Checked like an unlock (throttled, audited), and the user must have the role `admin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminCredentials {
    /// The administrator's Wardlock user ID.
    pub user: String,
    pub pin: Option<SecretString>,
    pub totp: Option<SecretString>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlockRequest {
    pub user: String,
    pub pin: Option<SecretString>,
    pub totp: Option<SecretString>,
    /// Break-glass access: the reason is mandatory and audited.
    pub emergency_reason: Option<String>,
}

/// Enrollment of a clinician at the workstation, authorised by an administrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum EnrollRequest {
    /// The administrator proves who they are; the answer carries a short-lived ticket,
    /// valid on this connection only. A user not yet in the directory is added with
    /// `display_name` (and role `clinician`).
    Authorize {
        admin: AdminCredentials,
        user: String,
        #[serde(default)]
        display_name: Option<String>,
    },
    SetPin {
        ticket: String,
        pin: SecretString,
    },
    /// Starts TOTP enrollment; the answer carries the `otpauth://` URI to show as QR.
    StartTotp {
        ticket: String,
    },
    ConfirmTotp {
        ticket: String,
        code: SecretString,
    },
}

/// Things the guard saw or did; `wardlockd` stamps and audits them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GuardEvent {
    WarningShown {
        seconds_left: u64,
    },
    WarningCancelled {},
    Locked {
        reason: LockReason,
        /// For an idle lock: how long the session had been idle when it locked…
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idle_secs: Option<u64>,
        /// …and the idle timeout in force (the strictest open PHI tier's, else the group's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u64>,
    },
    LockFailed {
        what: String,
    },
    /// Synthetic input (an XTEST device) came while no real input did, and policy does
    /// not let it keep the session awake. Once per idle period.
    SyntheticInputIgnored {
        device: String,
    },
    /// At the lock, these keymap actions were taken out until the unlock.
    KeymapHardened {
        actions: String,
    },
    /// The lock page's web process died or hung while locked; the native curtain and the
    /// grab stayed, and the page was built again.
    LockScreenRestarted {
        reason: String,
    },
    /// A PHI application's window was taken off the screen at the lock (the display
    /// server says it is unmapped). `owner`: the clinician whose session it was.
    PhiAppHidden {
        app: String,
        #[serde(default)]
        owner: Option<String>,
    },
    /// A PHI window could not be taken off the screen (it stays behind the curtain).
    PhiAppHideFailed {
        app: String,
        why: String,
    },
    /// Its clinician unlocked and the window is on screen again.
    PhiAppRestored {
        app: String,
        #[serde(default)]
        owner: Option<String>,
    },
    /// The window is gone after the guard closed it: `how` is `wm_delete` (it closed
    /// when asked) or `sigterm`; `reason` is `user_switch`, `abandoned` or `signed_out`.
    PhiAppClosed {
        app: String,
        #[serde(default)]
        owner: Option<String>,
        #[serde(default)]
        how: String,
        #[serde(default)]
        reason: String,
    },
    /// The window was still there after `WM_DELETE_WINDOW`, the grace and `SIGTERM`.
    PhiAppCloseFailed {
        app: String,
        #[serde(default)]
        owner: Option<String>,
        reason: String,
        why: String,
    },
    IdleUnavailable {
        why: String,
    },
    /// The guard took over input after a failure (e.g. the grab works again).
    LockRestored {},
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Hello {
        version: u32,
        server: String,
    },
    Policy {
        policy: Box<GuardPolicy>,
    },
    /// Unsolicited: the effective policy changed.
    PolicyChanged {
        policy: Box<GuardPolicy>,
    },
    /// Unsolicited: lock now (remote request, guard escalation).
    LockNow {
        reason: LockReason,
    },
    Ack,
    Unlock(UnlockReply),
    Hold(HoldReply),
    Enroll(EnrollReply),
    Quit(QuitReply),
    Status(ServiceStatus),
    Error {
        code: ErrorCode,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum UnlockReply {
    Granted {
        user: String,
        display_name: String,
        emergency: bool,
        /// This user's previous unlock of this workstation.
        last_unlock: Option<UtcMillis>,
        /// Failed attempts against this user since that unlock (NIST AC-9).
        failures_since_last_unlock: u32,
    },
    Refused {
        attempts_left: u32,
        retry_after_secs: Option<u64>,
        /// Break-glass is closed on this workstation until its lockout ends (too many
        /// failed break-glass attempts in it): the lock screen says so.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        emergency_closed: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum HoldReply {
    /// Unlocked, and held open for `hold_secs` (the `in_a_row`-th hold of at most `max`).
    Granted { user: String, display_name: String, hold_secs: u64, in_a_row: u32, max: u32 },
    /// The credentials were refused, as for an unlock.
    Refused { attempts_left: u32, retry_after_secs: Option<u64> },
    /// The clinician is who they say, but policy allows no hold now (audited `hold_refused`);
    /// the session stays locked.
    NotAllowed { why: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum QuitReply {
    Authorized,
    Refused { attempts_left: u32, retry_after_secs: Option<u64> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum EnrollReply {
    Authorized {
        ticket: String,
        expires_in_secs: u64,
    },
    PinSet,
    TotpStarted {
        otpauth_uri: String,
    },
    TotpConfirmed,
    /// The administrator's credentials were refused (throttled like an unlock).
    NotAuthorized {
        attempts_left: u32,
        retry_after_secs: Option<u64>,
    },
    /// The step itself was refused: PIN rules, wrong TOTP code, unknown or expired ticket.
    Refused {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnsupportedVersion,
    HelloFirst,
    FrameTooLarge,
    /// The peer's OS account may not use the service (policy `service.allowed_*`).
    NotAllowed,
    /// Nothing arrived in time (no `hello`, a guard missed its heartbeats).
    Timeout,
    /// Too many connections or queued messages; try again later.
    Busy,
    Internal,
}

/// What the guard needs of the policy: no secrets, no directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardPolicy {
    pub hash: String,
    /// The workstation group's timing, in force while no PHI application of a tier is open.
    pub idle_timeout_secs: u64,
    pub warning_secs: u64,
    pub lock_on_resume: bool,
    pub synthetic_input_keeps_awake: bool,
    pub banner: String,
    #[serde(default)]
    pub show_session_owner: bool,
    pub methods: Vec<UnlockMethod>,
    pub emergency_enabled: bool,
    pub emergency_requires_pin: bool,
    /// Break-glass asks for a TOTP code too (`emergency.require_totp`, by default in
    /// `pin_totp`-only wards).
    #[serde(default)]
    pub emergency_requires_totp: bool,
    pub emergency_min_reason_chars: usize,
    pub phi_apps: Vec<PhiApp>,
    #[serde(default)]
    pub phi_tiers: BTreeMap<String, TierTiming>,
    pub phi_on_lock: PhiAction,
    #[serde(default)]
    pub phi_on_switch: PhiSwitch,
    #[serde(default)]
    pub phi_close_grace_secs: u64,
    pub phi_close_after_secs: Option<u64>,
    #[serde(default)]
    pub phi_dim_at_warning: bool,
    /// Where this workstation's group allows holds: how long one lasts.
    #[serde(default)]
    pub hold_secs: Option<u64>,
    #[serde(default)]
    pub keep_awake: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierTiming {
    pub idle_timeout_secs: u64,
    pub warning_secs: u64,
}

impl GuardPolicy {
    /// The PHI application a window belongs to, if any (the first that matches).
    pub fn phi_app_for(&self, window: &WindowIdentity) -> Option<&PhiApp> {
        self.phi_apps.iter().find(|app| app.matches(window))
    }

    /// Idle timeout and warning while these PHI applications have windows open: the
    /// strictest of their tiers (shortest timeout, then shortest warning); with no tier
    /// among them, the group's.
    pub fn timing_with_open<'a>(&self, open: impl IntoIterator<Item = &'a PhiApp>) -> (Duration, Duration) {
        let strictest = open
            .into_iter()
            .filter_map(|app| app.tier.as_ref().and_then(|t| self.phi_tiers.get(t)))
            .min_by_key(|t| (t.idle_timeout_secs, t.warning_secs));
        let (idle, warning) = strictest
            .map_or((self.idle_timeout_secs, self.warning_secs), |t| (t.idle_timeout_secs, t.warning_secs));
        (Duration::from_secs(idle), Duration::from_secs(warning))
    }
}

impl From<&crate::policy::ValidPolicy> for GuardPolicy {
    fn from(p: &crate::policy::ValidPolicy) -> Self {
        GuardPolicy::from(&**p)
    }
}

impl From<&Policy> for GuardPolicy {
    fn from(p: &Policy) -> Self {
        let (idle, warning) = p.lock_timing();
        GuardPolicy {
            hash: p.hash(),
            idle_timeout_secs: idle.as_secs(),
            warning_secs: warning.as_secs(),
            lock_on_resume: p.lock.lock_on_resume,
            synthetic_input_keeps_awake: p.lock.synthetic_input_keeps_awake,
            banner: p.lock.banner.clone(),
            show_session_owner: p.lock.show_session_owner,
            methods: p.unlock.methods.clone(),
            emergency_enabled: p.emergency.enabled,
            emergency_requires_pin: p.emergency.require_pin,
            emergency_requires_totp: p.emergency.requires_totp(&p.unlock),
            emergency_min_reason_chars: p.emergency.min_reason_chars,
            phi_apps: p.phi.apps.clone(),
            phi_tiers: p
                .phi
                .tiers
                .iter()
                .map(|(name, t)| {
                    let timing = TierTiming {
                        idle_timeout_secs: t.idle_timeout.as_secs(),
                        warning_secs: t.warning.as_secs(),
                    };
                    (name.clone(), timing)
                })
                .collect(),
            phi_on_lock: p.phi.on_lock,
            phi_on_switch: p.phi.on_switch,
            phi_close_grace_secs: p.phi.close_grace.as_secs(),
            phi_close_after_secs: p.phi.close_after.map(|d: Duration| d.as_secs()),
            phi_dim_at_warning: p.phi.dim_at_warning,
            hold_secs: p.lock.hold.allowed_in(&p.workstation.group).then_some(p.lock.hold.length.as_secs()),
            keep_awake: p.lock.keep_awake.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStatus {
    pub workstation_id: String,
    pub policy_hash: String,
    pub audit_last_seq: u64,
    pub audit_unsent: u64,
    /// Unsent entries passed the policy's backlog threshold.
    pub backlog_warning: bool,
    pub collector_reachable: Option<bool>,
    /// Why the last exchange with the collector failed, while it does.
    #[serde(default)]
    pub collector_error: Option<String>,
    /// The collector asked to wait this long before sending more (it is over its quota).
    #[serde(default)]
    pub collector_retry_after_secs: Option<u64>,
    /// Guards connected now.
    pub guards_connected: u32,
    /// `kernel.yama.ptrace_scope` (`None`: no Yama). At 0 any process of the shared
    /// account may attach to the guard and speak as it.
    pub ptrace_scope: Option<u8>,
    /// Sessions the service is escalating now (asked to lock, not yet confirmed).
    pub escalations_active: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        let req = Request::Unlock(UnlockRequest {
            user: "n.nurse".into(),
            pin: Some(SecretString::new("482916")),
            totp: None,
            emergency_reason: None,
        });
        let line = serde_json::to_string(&req).unwrap();
        assert!(line.starts_with(r#"{"type":"unlock","user":"n.nurse""#), "{line}");
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
        assert!(!format!("{req:?}").contains("482916"), "Debug must not show the PIN");
    }

    #[test]
    fn unknown_fields_and_types_are_refused() {
        assert!(
            serde_json::from_str::<Request>(r#"{"type":"hello","version":1,"client":"g","x":1}"#).is_err()
        );
        assert!(serde_json::from_str::<Request>(
            r#"{"type":"unlock","user":"u","pin":"1","totp":null,"emergency_reason":null,"admin":true}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Request>(r#"{"type":"sudo"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"type":"status","x":1}"#).is_err());
        assert_eq!(serde_json::from_str::<Request>(r#"{"type":"status"}"#).unwrap(), Request::Status {});
    }

    #[test]
    fn hello_role_defaults_to_tool_and_enroll_nests_the_admin() {
        let hello: Request = serde_json::from_str(r#"{"type":"hello","version":1,"client":"t"}"#).unwrap();
        assert!(matches!(hello, Request::Hello { role: ClientRole::Tool, .. }));
        let enroll: Request = serde_json::from_str(
            r#"{"type":"enroll","step":"authorize","admin":{"user":"it","pin":"1","totp":null},"user":"n"}"#,
        )
        .unwrap();
        let Request::Enroll(EnrollRequest::Authorize { admin, user, display_name }) = enroll else {
            panic!("not an authorize step")
        };
        assert_eq!((admin.user.as_str(), user.as_str(), display_name), ("it", "n", None));
    }

    #[test]
    fn guard_policy_carries_no_secrets_or_keys() {
        let mut p = Policy::default();
        p.sync.trusted_keys = vec!["c2VjcmV0".into()];
        let json = serde_json::to_string(&GuardPolicy::from(&p)).unwrap();
        assert!(!json.contains("c2VjcmV0"));
        assert!(json.contains("\"idle_timeout_secs\":300"));
    }

    #[test]
    fn the_strictest_tier_of_the_open_apps_sets_the_timing_and_none_leaves_the_groups() {
        let p = crate::policy::PolicyDocument::parse(
            "p",
            crate::policy::Layer::Machine,
            r#"
            [lock]
            idle_timeout = "10m"
            warning = "30s"
            [phi.tiers.ehr]
            idle_timeout = "28m"
            warning = "1m"
            [phi.tiers.pacs]
            idle_timeout = "5m"
            warning = "20s"
            [[phi.apps]]
            name = "EHR"
            wm_class = "EHR"
            tier = "ehr"
            [[phi.apps]]
            name = "PACS"
            wm_class = "Pacs"
            tier = "pacs"
            [[phi.apps]]
            name = "Notes"
            wm_class = "Notes"
            "#,
        )
        .and_then(|d| Policy::layered(&[d]))
        .unwrap();
        let g = GuardPolicy::from(&*p);
        let m = |s: u64| Duration::from_secs(s);
        assert_eq!(g.timing_with_open([]), (m(600), m(30)));
        assert_eq!(g.timing_with_open([&g.phi_apps[2]]), (m(600), m(30)), "no tier: the group's");
        assert_eq!(g.timing_with_open([&g.phi_apps[0]]), (m(28 * 60), m(60)));
        assert_eq!(g.timing_with_open([&g.phi_apps[0], &g.phi_apps[1]]), (m(300), m(20)));
        let ehr = WindowIdentity { instance: "xterm".into(), class: "EHR".into(), exe: None };
        assert_eq!(g.phi_app_for(&ehr).map(|a| a.name.as_str()), Some("EHR"));
    }
}
