//! Workstation ⇄ collector API (HTTPS + JSON under `/api/v1`), modelled on osquery's TLS
//! remote API: enroll for a node key, then pull policy and directory, push audit batches.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEntry, AuditKind};
use crate::clock::UtcMillis;
use crate::policy::SignedPolicy;

/// Version of this API; it is also the path prefix (`/api/v1`).
pub const API_VERSION: u32 = 1;

/// `POST /api/v1/enroll`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub enroll_secret: String,
    pub workstation_id: String,
    pub hostname: String,
    pub group: String,
    pub agent_version: String,
    /// The workstation's X25519 transport public key, base64: directory secrets (TOTP
    /// seeds) are sealed to it (`transport`).
    pub transport_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollResponse {
    /// Sent as `Authorization: Bearer` on every later request.
    pub node_key: String,
}

/// `POST /api/v1/admin/enroll-secrets`: an enrollment secret for a fleet of workstations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollSecretRequest {
    /// Who or what it is for (a ward, a rollout).
    pub label: String,
    /// The workstation group it enrolls into: a workstation's group is IT's decision,
    /// never the workstation's word. One whose machine policy names another group is
    /// refused.
    pub group: String,
    /// How long it enrolls workstations; default 30 days, at most a year.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// How many workstations it may enroll; default 1000.
    #[serde(default)]
    pub max_uses: Option<u64>,
}

/// The new secret, shown once, and what names it from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollSecretCreated {
    pub secret: String,
    pub id: String,
    pub expires: UtcMillis,
    pub max_uses: u64,
}

/// `GET /api/v1/admin/enroll-secrets`: one secret, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollSecretInfo {
    pub id: String,
    pub label: String,
    /// The group it enrolls into; none for secrets made before groups were bound to
    /// them (such a secret enrolls nothing).
    pub group: Option<String>,
    pub created: UtcMillis,
    pub expires: Option<UtcMillis>,
    pub max_uses: Option<u64>,
    pub uses: u64,
    pub revoked: Option<UtcMillis>,
    /// `usable`, `expired`, `used up` or `revoked`.
    pub state: String,
}

/// `POST /api/v1/admin/workstations/{id}/re-enroll` (body optional): the group the
/// workstation is enrolled into from then on; not given, the group it has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReenrollRequest {
    #[serde(default)]
    pub group: Option<String>,
}

/// `POST /api/v1/admin/workstations/{id}/re-enroll`: a one-time code that enrolls that ID
/// again (as its enrollment secret), shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReenrollApproved {
    pub workstation: String,
    /// The group it is approved into (none: the group it has).
    #[serde(default)]
    pub group: Option<String>,
    pub code: String,
    pub expires: UtcMillis,
}

/// `POST /api/v1/admin/users`: a clinician (or administrator) in the central directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._@-]{1,64}$"))]
    pub id: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001f]*\\S[^\\u0000-\\u001f]*$")
    )]
    pub display_name: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001f]*\\S[^\\u0000-\\u001f]*$")
    )]
    pub role: String,
    /// Checked against the built-in PIN rules and stored only as Argon2id.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = "^[0-9]{6,12}$"))]
    pub pin: Option<crate::secret::SecretString>,
    /// Make a TOTP seed; the answer carries its `otpauth://` URI, once.
    #[serde(default)]
    pub totp: bool,
    /// Workstation groups whose directory holds the user; empty or left out: every group.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 64))]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserCreated {
    pub id: String,
    /// Shown once: the TOTP seed, for the clinician's authenticator app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otpauth_uri: Option<String>,
}

/// `GET /api/v1/admin/users`: a user of the central directory, no secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserOut {
    pub id: String,
    pub display_name: String,
    pub role: String,
    pub disabled: bool,
    pub has_pin: bool,
    pub has_totp: bool,
    /// What an admin grant for this user binds now (`admin_credential_digest` of the
    /// PIN hash and TOTP seed), for `wardlockctl user grant-admin`; none when a stored
    /// secret does not open.
    #[serde(default)]
    pub credential_digest: Option<String>,
    pub updated: UtcMillis,
    /// Empty: every group.
    pub groups: Vec<String>,
}

/// `POST /api/v1/admin/users/{id}/admin-grant`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdminGrantRequest {
    /// The signed grant (`AdminGrant`), as `wardlockctl user grant-admin` makes it.
    pub grant: String,
}

/// `GET /api/v1/policy` answers the envelope as is (ETag, 304 when unchanged).
pub type PolicyResponse = SignedPolicy;

/// `GET /api/v1/directory`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// Changes whenever any user changes; also the ETag.
    pub version: String,
    pub users: Vec<DirectoryUser>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DirectoryUser {
    pub id: String,
    pub display_name: String,
    pub role: String,
    pub disabled: bool,
    /// The Argon2id PHC string, encrypted for this workstation's transport key (as the
    /// TOTP seed, bound to the user ID by [`pin_hash_context`]), base64: a copy of the
    /// directory in transit or in a log is no offline PIN cracker.
    pub pin_sealed: Option<String>,
    /// TOTP seed encrypted for this workstation's transport key, base64.
    pub totp_sealed: Option<String>,
    /// For the role `admin`: IT's signed grant (`AdminGrant`, JSON envelope). A
    /// workstation ignores the role without one that its `sync.trusted_keys` verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_grant: Option<String>,
}

/// What a sealed PIN hash in the directory is bound to: its user, and being a PIN hash
/// (so it cannot pass for the user's TOTP seed, nor the other way round).
pub fn pin_hash_context(user_id: &str) -> Vec<u8> {
    [b"wardlock-directory-pin-hash\0".as_slice(), user_id.as_bytes()].concat()
}

/// One audit entry on the wire. Hashes are hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub seq: u64,
    pub time: UtcMillis,
    pub kind: AuditKind,
    pub user: Option<String>,
    pub os_account: Option<String>,
    pub workstation: String,
    pub policy_hash: Option<String>,
    pub details: BTreeMap<String, String>,
    pub prev_hash: String,
    pub hash: String,
}

impl From<&AuditEntry> for AuditRecord {
    fn from(e: &AuditEntry) -> Self {
        AuditRecord {
            seq: e.seq,
            time: e.time,
            kind: e.kind,
            user: e.user.clone(),
            os_account: e.os_account.clone(),
            workstation: e.workstation.clone(),
            policy_hash: e.policy_hash.clone(),
            details: e.details.clone(),
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq}: {field} is not 32 bytes of hex")]
pub struct BadHash {
    pub seq: u64,
    pub field: &'static str,
}

impl TryFrom<AuditRecord> for AuditEntry {
    type Error = BadHash;
    fn try_from(r: AuditRecord) -> Result<Self, BadHash> {
        let decode = |text: &str, field| -> Result<[u8; 32], BadHash> {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(text, &mut bytes).map(|()| bytes).map_err(|_| BadHash { seq: r.seq, field })
        };
        Ok(AuditEntry {
            prev_hash: decode(&r.prev_hash, "prev_hash")?,
            hash: decode(&r.hash, "hash")?,
            seq: r.seq,
            time: r.time,
            kind: r.kind,
            user: r.user,
            os_account: r.os_account,
            workstation: r.workstation,
            policy_hash: r.policy_hash,
            details: r.details,
        })
    }
}

/// `POST /api/v1/audit`: idempotent by (workstation, seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditBatch {
    pub workstation_id: String,
    pub entries: Vec<AuditRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditAck {
    /// Every entry up to this seq is stored, those in `conflicts` aside; the agent may
    /// mark the others sent.
    pub highest_contiguous_seq: u64,
    /// Seqs the collector found missing or not chaining, for the agent to resend or audit.
    pub gaps: Vec<SeqRange>,
    pub chain_break_at: Option<u64>,
    /// Seqs at which the collector already holds another entry than the one sent. What was
    /// sent is kept in full beside it (evidence, never dropped), but it is not stored as
    /// this workstation's entry: the agent must not count it delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
}

/// `POST /api/v1/heartbeat`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub workstation_id: String,
    pub time: UtcMillis,
    pub last_seq: u64,
    pub unsent: u64,
    pub policy_serial: Option<u64>,
    pub guard_connected: bool,
}

/// The answer to a heartbeat: TOTP time steps used lately at any workstation by users of
/// this workstation's group, so a code seen at one is refused at the others too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatAck {
    #[serde(default)]
    pub used_totp_steps: Vec<UsedTotpStep>,
}

/// A user's TOTP code accepted somewhere: the start of its time step (`at`, UTC). A
/// workstation refuses codes of that step and earlier for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsedTotpStep {
    pub user: String,
    pub at: UtcMillis,
}

// --- The administrators' and compliance's answers (wardlockctl reads them typed). ---
// Answers do not deny unknown fields: a newer collector may add some.

/// `PUT /api/v1/admin/policies/{group}`: the signed policy stored for the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyStored {
    pub group: String,
    pub serial: u64,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// Policy, users, enrollment secrets, tokens; and everything an auditor may do.
    Admin,
    /// Read-only: events and reports.
    Auditor,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Auditor => "auditor",
        }
    }
    pub fn parse(s: &str) -> Option<TokenRole> {
        match s {
            "admin" => Some(TokenRole::Admin),
            "auditor" => Some(TokenRole::Auditor),
            _ => None,
        }
    }
}

/// `PUT /api/v1/admin/users/{id}`: a directory user's name, role and groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub display_name: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub role: String,
    /// The workstation groups whose directory holds the user; empty: every group.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `POST /api/v1/console/session`: a console sign-in. Never logged; the password and
/// code are zeroed when the request is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConsoleSignIn {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, min_length = 1, max_length = 256))]
    pub password: crate::secret::SecretString,
    /// The authenticator app's code.
    #[cfg_attr(feature = "openapi", schema(value_type = String, min_length = 6, max_length = 10))]
    pub code: crate::secret::SecretString,
}

/// `GET|POST /api/v1/console/session`: who is signed in, and the token every change
/// must carry in `X-CSRF-Token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsoleSession {
    pub name: String,
    pub role: TokenRole,
    pub csrf_token: String,
    /// When the session ends unless used again (15 minutes idle, 12 hours at most).
    pub ends: UtcMillis,
    /// The collector's time zone for showing times (IANA name, e.g. `Europe/Berlin`).
    pub time_zone: String,
}

/// `POST /api/v1/admin/tokens`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub role: TokenRole,
    /// Who the token is for.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128, pattern = "\\S"))]
    pub label: String,
}

/// The new token, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    pub token: String,
    pub role: TokenRole,
}

/// `GET /api/v1/admin/log`: one thing an administrator did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminAction {
    pub time: UtcMillis,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// `GET /api/v1/events` (JSON): a page of stored entries in the order received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventPage {
    pub events: Vec<EventOut>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<i64>,
}

/// A stored entry, its cursor and when the collector received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventOut {
    pub id: i64,
    pub received: UtcMillis,
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// `GET /api/v1/reports/emergency`: a break-glass access and its review, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmergencyOut {
    #[serde(flatten)]
    pub event: EventOut,
    pub review: Option<EmergencyReview>,
}

/// An auditor's review of one break-glass access: kept once, never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmergencyReview {
    pub reviewer: String,
    pub note: String,
    pub reviewed: UtcMillis,
}

/// `POST /api/v1/reports/emergency/{workstation}/{seq}/review`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EmergencyReviewRequest {
    /// What the reviewer found (the reason held up, or what was done about it).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 2000))]
    pub note: String,
}

/// `GET /api/v1/reports/conflicts`: two versions of one entry, what the collector stored
/// first and what came later under the same seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConflictOut {
    pub workstation: String,
    pub seq: u64,
    pub stored: AuditRecord,
    pub received: AuditRecord,
    pub received_at: UtcMillis,
}

/// `GET /api/v1/workstations`, `GET /api/v1/reports/silent`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkstationOut {
    pub id: String,
    pub hostname: String,
    pub group: String,
    pub agent_version: String,
    pub enrolled: UtcMillis,
    pub last_seen: Option<UtcMillis>,
    pub entries_received: u64,
    pub entries_reported: Option<u64>,
}

/// `GET /api/v1/fleet`: a workstation as the fleet page shows it, silent and unguarded
/// ones first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetWorkstation {
    pub id: String,
    pub hostname: String,
    pub group: String,
    /// Silent when not heard from within the collector's `--silent-after`; else what its
    /// latest entries say (unknown before any).
    pub state: Option<crate::audit::WorkstationState>,
    /// The time of the entry that put it in that state.
    pub state_since: Option<UtcMillis>,
    pub last_seen: Option<UtcMillis>,
    /// Entries its latest heartbeat said were not sent yet.
    pub backlog: Option<u64>,
    /// Whether a guard held the session at its latest heartbeat.
    pub guard_connected: Option<bool>,
    pub agent_version: String,
    /// The serial of the policy it runs, from its latest heartbeat…
    pub policy_serial: Option<u64>,
    /// …and the latest one stored for its group.
    pub group_policy_serial: Option<u64>,
    /// Chain findings recorded for it.
    pub findings: u64,
}

/// `GET /api/v1/charts`: what the console draws, counted by the collector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Charts {
    pub since: UtcMillis,
    pub until: UtcMillis,
    /// Locks and unlocks per group and clock hour (the console folds them into hours of
    /// the day in its time zone: a heat map per ward).
    pub locks_per_hour: Vec<HourCount>,
    /// Idle locks by how long after the timeout they came (seconds from the last input
    /// to the lock, less the timeout in force), as the guards measured them.
    pub lock_delay: Vec<DelayBucket>,
    /// Minutes from the warning to the lock, per workstation and UTC day: the time a
    /// screen stood unattended with its session open (the 50 workstations with most).
    pub unattended: Vec<UnattendedDay>,
    /// Break-glass accesses per week (weeks from Monday 00:00 UTC).
    pub emergency_per_week: Vec<WeekCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HourCount {
    pub group: String,
    pub hour: UtcMillis,
    pub locks: u64,
    pub unlocks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DelayBucket {
    /// e.g. `0–5 s`, `over 5 min`; `before the timeout` for a lock a guard made early.
    pub label: String,
    pub locks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnattendedDay {
    pub workstation: String,
    pub day: UtcMillis,
    pub minutes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WeekCount {
    pub week: UtcMillis,
    pub count: u64,
}

/// `GET /api/v1/policies`: a group's policy in force, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyInForce {
    pub group: String,
    pub serial: u64,
    /// The fingerprint of the key that signed it. The collector does not check the
    /// signature (it holds no trusted key); every workstation does.
    pub key_id: String,
    pub issued_at: Option<UtcMillis>,
    /// Who stored it on the collector (empty for a policy stored before this was kept).
    pub stored_by: String,
    pub stored: UtcMillis,
    /// The policy document (TOML) as signed.
    pub policy: String,
    /// The one it replaced, for the diff.
    pub previous: Option<PreviousPolicy>,
    /// The timeouts it sets, after the built-in defaults; `None` if it does not read as a
    /// valid policy (workstations refuse it then, and keep theirs).
    pub timeouts: Option<EffectiveTimeouts>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreviousPolicy {
    pub serial: u64,
    pub policy: String,
    pub stored_by: String,
    pub stored: UtcMillis,
}

/// The idle timeout and warning of a policy: the group's, and each PHI tier's (which
/// replaces the group's while an application of the tier is open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EffectiveTimeouts {
    pub idle_timeout_secs: u64,
    pub warning_secs: u64,
    pub tiers: Vec<TierTimeouts>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TierTimeouts {
    pub tier: String,
    pub idle_timeout_secs: u64,
    pub warning_secs: u64,
}

/// `POST /api/v1/policies/check`, and a draft: a central policy document (TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyText {
    /// The group it is for (a draft's; ignored by the check).
    #[serde(default)]
    pub group: Option<String>,
    #[cfg_attr(feature = "openapi", schema(max_length = 65536))]
    pub policy: String,
}

/// What core's validation found in a policy document: nothing, or every problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyCheck {
    pub valid: bool,
    pub problems: Vec<PolicyCheckProblem>,
    pub timeouts: Option<EffectiveTimeouts>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyCheckProblem {
    /// The dotted key (`lock.idle_timeout`), empty for a syntax error.
    pub field: String,
    pub message: String,
    pub line: Option<u64>,
}

/// `GET /api/v1/policy-drafts`: a change an admin drafted in the console, waiting for
/// `wardlockctl policy sign --draft ID` (the signing key never lives on the collector).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyDraft {
    pub id: i64,
    pub group: String,
    pub policy: String,
    pub author: String,
    pub created: UtcMillis,
}

/// `GET /api/v1/reports/chain`: a problem with a workstation's chain, kept for compliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Finding {
    pub workstation: String,
    pub seq: u64,
    /// `altered`, `broken_link`, `rewritten` (another entry under a stored seq), `truncated`
    /// (the workstation reports fewer entries than the collector holds), `enroll_conflict`
    /// (an enrollment under this workstation's ID was refused; seq 0).
    pub kind: String,
    pub detail: String,
    pub found: UtcMillis,
}

/// `GET /api/v1/reports/failed`: failed attempts and lockouts of a user on a workstation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailureCount {
    pub user: String,
    pub workstation: String,
    pub failed_attempts: u64,
    pub lockouts: u64,
    pub last: UtcMillis,
}

/// `GET /api/v1/reports/stale`: a directory user with no unlock for the time asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StaleUser {
    pub id: String,
    pub display_name: String,
    pub role: String,
    pub last_unlock: Option<UtcMillis>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditDraft;

    #[test]
    fn audit_entry_round_trips_through_the_wire_form() {
        let entry = AuditEntry::chain(
            AuditDraft::new(UtcMillis::from_unix_millis(1_795_000_000_123), AuditKind::UnlockSucceeded)
                .user("n.nurse")
                .detail("method", "pin"),
            "ws-7",
            None,
        );
        let json = serde_json::to_string(&AuditRecord::from(&entry)).unwrap();
        let back: AuditRecord = serde_json::from_str(&json).unwrap();
        let back = AuditEntry::try_from(back).unwrap();
        assert_eq!(back, entry);
        assert_eq!(back.compute_hash(), entry.hash);
    }

    #[test]
    fn an_event_reads_back_as_it_was_written_with_its_record_flattened() {
        let draft = crate::audit::AuditDraft::new(UtcMillis::from_unix_millis(1_000), AuditKind::Locked)
            .user("n.nurse");
        let entry = AuditEntry::chain(draft, "ws-a", None);
        let event = EventOut {
            id: 7,
            received: UtcMillis::from_unix_millis(2_000),
            record: AuditRecord::from(&entry),
        };
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(json["seq"], 1, "the record's fields sit beside id and received: {json}");
        let back: EventOut = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, event);
    }
}
