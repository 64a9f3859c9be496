//! Where the collector keeps everything, behind one trait so that the embedded SQLite
//! backend and a PostgreSQL one answer the same API. Methods block; the HTTP layer
//! calls them off the async threads. Secrets (node keys, enrollment secrets, API
//! tokens) arrive here only as SHA-256 hashes.

pub mod intake;
pub mod pg;
pub mod queries;
pub mod sql;
pub mod sqlite;

pub use intake::{Ingest, Received};
pub use queries::SqlStore;

use wardlock_core::audit::AuditEntry;
use wardlock_core::clock::UtcMillis;
use wardlock_core::protocol::collector::Heartbeat;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("collector database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("collector database: {0}")]
    Postgres(String),
    #[error("collector database {path}: {why}")]
    Open { path: String, why: String },
    #[error("{0}")]
    Conflict(String),
    /// A row that is not what the schema says (a NULL, another type): tampered or foreign.
    #[error("collector database: column {column} of a row read is {found}, not {expected}")]
    Row { column: usize, expected: &'static str, found: &'static str },
    /// A statement the code built wrongly (a bug, said plainly rather than run).
    #[error("collector database: statement: {0}")]
    Statement(String),
    /// Written, but the flush to disk failed: the batch is not acknowledged.
    #[error("collector database: could not flush {0}; the batch is not acknowledged, send it again")]
    NotDurable(String),
}

pub type Hash = [u8; 32];

/// What an API token may do (the wire type, named so in the store).
pub use wardlock_core::protocol::collector::TokenRole as Role;
pub use wardlock_core::protocol::collector::{
    AdminAction, Charts, EmergencyReview, FailureCount, Finding, FleetWorkstation, PolicyDraft,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workstation {
    pub id: String,
    pub hostname: String,
    pub group: String,
    pub agent_version: String,
    pub enrolled: UtcMillis,
    pub last_seen: Option<UtcMillis>,
    pub contiguous_seq: u64,
    pub reported_last_seq: Option<u64>,
    /// X25519 public key the workstation's directory secrets are sealed to.
    pub transport_key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorkstation {
    pub id: String,
    pub hostname: String,
    pub group: String,
    pub agent_version: String,
    pub transport_key: Vec<u8>,
}

/// A user in the central directory. Secrets stay protected: the PIN's Argon2id PHC
/// string and the TOTP seed both sealed with the collector's data key (see
/// `crate::secret::seal_pin_hash`), so a copied database is no offline PIN cracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub display_name: String,
    pub role: String,
    pub disabled: bool,
    /// Stored in the column `pin_hash`: `sealed:v1:` and base64 of the sealed PHC string
    /// (a plain `$argon2id$…` only in databases of earlier releases, until the next start).
    pub pin_sealed: Option<String>,
    pub totp_sealed: Option<Vec<u8>>,
    pub updated: UtcMillis,
    /// IT's signed grant of the admin role (see `wardlock_core::policy::AdminGrant`).
    pub admin_grant: Option<String>,
    /// The workstation groups whose directory holds the user; empty: every group.
    pub groups: Vec<String>,
}

impl UserRecord {
    /// Whether a workstation of `group` receives this user.
    pub fn works_in(&self, group: &str) -> bool {
        self.groups.is_empty() || self.groups.iter().any(|g| g == group)
    }
}

/// Groups as a column holds them: one line each.
fn groups_column(groups: &[String]) -> String {
    groups.join("\n")
}

fn groups_of(column: Option<String>) -> Vec<String> {
    column.map(|c| c.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()).unwrap_or_default()
}

/// The ETag of a stored policy envelope: its content, so every collector on one
/// database answers the same.
fn policy_etag(envelope: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("\"{}\"", hex::encode(&Sha256::digest(envelope.as_bytes())[..16]))
}

/// Whether a pushed policy replaced the group's one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyPut {
    Stored,
    /// The serial is not above the one in force.
    Stale {
        current: u64,
    },
}

/// A group's policy is replaced only by one of a higher serial: an older signed policy
/// (one that IT replaced, perhaps to close a hole) can never be put back in force.
pub fn plan_policy_put(current: Option<u64>, serial: u64) -> PolicyPut {
    match current {
        Some(current) if current >= serial => PolicyPut::Stale { current },
        _ => PolicyPut::Stored,
    }
}

/// A web console account: its password's Argon2id PHC string and TOTP seed sealed with
/// the data key, its unlock counters (core's `UserAuthState`, JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleAccount {
    pub name: String,
    pub role: Role,
    pub password_sealed: String,
    pub totp_sealed: Vec<u8>,
    pub auth_state: String,
    pub disabled: bool,
}

/// A group's stored policy: the envelope in force, who stored it, and the one before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub group: String,
    pub serial: u64,
    pub envelope: String,
    pub stored_by: String,
    pub stored: UtcMillis,
    /// (serial, envelope, stored_by, stored) of the policy it replaced.
    pub previous: Option<(u64, String, String, UtcMillis)>,
}

/// A console session looked up by its cookie's hash, with its account's standing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSessionRecord {
    pub account: String,
    pub role: Role,
    pub account_disabled: bool,
    pub signed_in: UtcMillis,
    pub last_used: UtcMillis,
    pub signed_out: Option<UtcMillis>,
}

#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub workstation: Option<String>,
    pub user: Option<String>,
    pub kind: Option<String>,
    /// Only these kinds (with `kind`, its kind too).
    pub kinds: Vec<String>,
    /// Only the workstations of this group.
    pub group: Option<String>,
    /// Only failures (`AuditKind::FAILURES`), or only the rest.
    pub failures: Option<bool>,
    pub since: Option<UtcMillis>,
    pub until: Option<UtcMillis>,
    /// When the collector received it (which no workstation can set).
    pub received_since: Option<UtcMillis>,
    pub received_until: Option<UtcMillis>,
    /// Keyset pagination: events after this cursor (`id` of the last one seen).
    pub after: Option<i64>,
    pub limit: u32,
}

/// A stored event with its cursor.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub entry: AuditEntry,
    pub received: UtcMillis,
}

/// An entry received under a seq at which another one is stored: both, in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub workstation: String,
    pub seq: u64,
    pub stored: AuditEntry,
    pub received: AuditEntry,
    pub received_at: UtcMillis,
}

/// The wire form of a received conflicting entry, as the conflicts table keeps it.
pub fn conflict_record(entry: &AuditEntry) -> String {
    serde_json::to_string(&wardlock_core::protocol::collector::AuditRecord::from(entry)).unwrap_or_default()
}

/// A kept conflicting entry read back; `None` if the row was tampered into nonsense.
pub fn conflict_entry(json: &str) -> Option<AuditEntry> {
    let record: wardlock_core::protocol::collector::AuditRecord = serde_json::from_str(json).ok()?;
    AuditEntry::try_from(record).ok()
}

/// One line of an enrollment finding: when, then what (lines are appended to the finding).
pub fn finding_line(now: UtcMillis, detail: &str) -> String {
    format!("{} {detail}", now.to_rfc3339())
}

/// A new enrollment secret: who it is for, until when, how many workstations.
#[derive(Debug, Clone)]
pub struct NewEnrollSecret {
    pub label: String,
    /// The workstation group it enrolls into.
    pub group: String,
    pub expires: Option<UtcMillis>,
    pub max_uses: Option<u64>,
}

impl NewEnrollSecret {
    /// How long a secret enrolls workstations unless its maker says otherwise.
    pub const DEFAULT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
    /// How many workstations it enrolls unless its maker says otherwise.
    pub const DEFAULT_USES: u64 = 1000;

    /// A secret with the default expiry and use limit.
    pub fn standard(label: &str, group: &str, now: UtcMillis) -> Self {
        Self {
            label: label.to_owned(),
            group: group.to_owned(),
            expires: Some(now.saturating_add(Self::DEFAULT_LIFETIME)),
            max_uses: Some(Self::DEFAULT_USES),
        }
    }
}

/// A stored enrollment secret (its hash; the secret itself was shown once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollSecret {
    pub hash: Hash,
    pub label: String,
    /// The group it enrolls into; `None` for secrets made before groups were bound to
    /// them, which enroll nothing.
    pub group: Option<String>,
    pub created: UtcMillis,
    pub expires: Option<UtcMillis>,
    pub max_uses: Option<u64>,
    pub uses: u64,
    pub revoked: Option<UtcMillis>,
}

impl EnrollSecret {
    /// What names it in lists and `revoke`: the first 6 bytes of its hash, in hex (the
    /// hash of a 256-bit random secret; nothing about the secret can be learnt from it).
    pub fn id(&self) -> String {
        hex::encode(&self.hash[..6])
    }

    /// Why it enrolls nothing now, if it does not.
    pub fn unusable(&self, now: UtcMillis) -> Option<&'static str> {
        if self.revoked.is_some() {
            Some("revoked")
        } else if self.expires.is_some_and(|e| e <= now) {
            Some("expired")
        } else if self.max_uses.is_some_and(|max| self.uses >= max) {
            Some("used up")
        } else {
            None
        }
    }
}

/// One enrollment request, as the store sees it.
#[derive(Debug, Clone)]
pub struct EnrollAttempt {
    /// Hash of the presented enrollment secret (or re-enrollment approval code).
    pub secret: Hash,
    pub workstation: NewWorkstation,
    /// Hash of the node key the collector made for it.
    pub node_key: Hash,
    /// Hash of the node key the caller presented (`Authorization: Bearer`), if any:
    /// proof that it is the workstation already enrolled under this ID.
    pub presented_key: Option<Hash>,
}

/// An administrator's approval to enroll an ID again (a reinstalled workstation):
/// one code, once, until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReenrollApproval {
    pub code: Hash,
    pub expires: UtcMillis,
    /// The group the administrator put it in; `None`: the group it has.
    pub group: Option<String>,
}

/// The workstation already enrolled under an ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub node_key: Hash,
    pub revoked: bool,
    pub group: String,
    pub transport_key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollResult {
    Enrolled,
    /// No usable enrollment secret (401).
    Unauthorized(&'static str),
    /// The ID is enrolled already, and nothing proves this is that workstation, or its
    /// own key asked for what only an administrator may change (409); a finding
    /// `enroll_conflict` was recorded on it.
    Conflict(String),
    /// The group IT decided (by the secret or an approval) is not the one the
    /// workstation's machine policy names (403): nothing enrolled.
    WrongGroup(String),
}

/// What an enrollment does, decided from what the store holds (the backends do the SQL,
/// not this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollPlan {
    Enroll {
        use_secret: bool,
        use_approval: bool,
        /// The group it is enrolled into: the secret's, the approval's, or the one it had.
        group: String,
        /// A finding to record on it (its group changed by an approval).
        finding: Option<(&'static str, String)>,
    },
    Unauthorized(&'static str),
    /// The message for the caller and the finding's detail.
    Conflict {
        message: String,
        finding: String,
    },
    WrongGroup(String),
}

/// A workstation's group is IT's decision: the enrollment secret's group for a new ID, an
/// administrator's approval for a change. Its own node key proves who it is, never that
/// it may move to another group or swap the key its directory is sealed to.
pub fn plan_enroll(
    attempt: &EnrollAttempt,
    secret: Option<&EnrollSecret>,
    approval: Option<&ReenrollApproval>,
    enrolled: Option<&Enrolled>,
    now: UtcMillis,
) -> EnrollPlan {
    let id = &attempt.workstation.id;
    let claimed = &attempt.workstation.group;
    let wrong_group = |decided: &str, by: &str| {
        EnrollPlan::WrongGroup(format!(
            "{by} enrolls workstation {id:?} into group {decided:?}, but its machine policy says {claimed:?}: \
             set workstation.group = {decided:?} in its policy file, or ask IT for one for group {claimed:?}"
        ))
    };
    if let Some(approval) = approval.filter(|a| a.code == attempt.secret && a.expires > now) {
        let group = approval
            .group
            .clone()
            .or_else(|| enrolled.map(|e| e.group.clone()))
            .unwrap_or_else(|| claimed.clone());
        if group != *claimed {
            return wrong_group(&group, "the administrator's re-enrollment approval");
        }
        let finding = enrolled.filter(|e| e.group != group).map(|e| {
            (
                "group_changed",
                format!("group {:?} -> {group:?}, by an administrator's re-enrollment approval", e.group),
            )
        });
        return EnrollPlan::Enroll { use_secret: false, use_approval: true, group, finding };
    }
    let usable = secret.filter(|s| s.unusable(now).is_none());
    match enrolled {
        Some(ws) if !ws.revoked && attempt.presented_key == Some(ws.node_key) => {
            let changes: Vec<String> = [
                (ws.group != *claimed).then(|| format!("group {:?} -> {claimed:?}", ws.group)),
                (ws.transport_key != attempt.workstation.transport_key).then(|| "its transport key".to_owned()),
            ]
            .into_iter()
            .flatten()
            .collect();
            if changes.is_empty() {
                return EnrollPlan::Enroll {
                    use_secret: false,
                    use_approval: false,
                    group: ws.group.clone(),
                    finding: None,
                };
            }
            EnrollPlan::Conflict {
                message: format!(
                    "workstation {id:?} may not change {} with its own node key; that needs an administrator's approval (`wardlockctl workstation re-enroll {id} --group GROUP`, whose code is then the enrollment secret)",
                    changes.join(" and ")
                ),
                finding: format!(
                    "a re-enrollment with this workstation's own node key asked to change {}: refused (hostname {:?})",
                    changes.join(" and "),
                    attempt.workstation.hostname
                ),
            }
        }
        _ if usable.is_none() => EnrollPlan::Unauthorized(match secret.and_then(|s| s.unusable(now)) {
            Some("expired") => "enrollment secret expired; ask IT for a current one",
            Some("used up") => "enrollment secret used up; ask IT for a current one",
            Some(_) => "enrollment secret revoked; ask IT for a current one",
            None => "enrollment secret not recognised; ask IT for the current one",
        }),
        Some(ws) => {
            let state = if ws.revoked { "was revoked" } else { "is enrolled already" };
            let label = usable.map_or("", |s| s.label.as_str());
            EnrollPlan::Conflict {
                message: format!(
                    "workstation ID {id:?} {state}; enrolling it again needs an administrator's approval for that ID (`wardlockctl workstation re-enroll {id}`, whose code is then the enrollment secret) or the workstation's current node key"
                ),
                finding: format!(
                    "an enrollment under this ID was refused: hostname {:?}, agent {:?}, enrollment secret {label:?}",
                    attempt.workstation.hostname, attempt.workstation.agent_version
                ),
            }
        }
        None => match usable.and_then(|s| s.group.as_deref()) {
            None => EnrollPlan::Unauthorized(
                "enrollment secret names no group (made before groups were bound to secrets); ask IT for a new one (`wardlockctl enroll-secret create --group GROUP`)",
            ),
            Some(group) if group != claimed => wrong_group(group, "this enrollment secret"),
            Some(group) => {
                EnrollPlan::Enroll { use_secret: true, use_approval: false, group: group.to_owned(), finding: None }
            }
        },
    }
}

/// The collector's database. A method that takes `log` is an administrator's action: the
/// entry is written in the same transaction as the change, and only when something
/// changed, so the admin log holds every action that happened and none that did not.
pub trait CollectorStore: Send + Sync + std::fmt::Debug {
    fn add_enroll_secret(
        &self,
        secret: &Hash,
        new: &NewEnrollSecret,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<(), StoreError>;
    /// A page of enrollment secrets in the order they were made.
    fn enroll_secrets(&self, after: Option<&SecretKey>, limit: u32) -> Result<Vec<EnrollSecret>, StoreError>;
    /// The secret [`EnrollSecret::id`] names.
    fn enroll_secret(&self, id: &str) -> Result<Option<EnrollSecret>, StoreError>;
    /// `false`: no such secret.
    fn revoke_enroll_secret(
        &self,
        secret: &Hash,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError>;
    /// Enrolls a workstation as [`plan_enroll`] decides, in one transaction.
    fn enroll(&self, attempt: &EnrollAttempt, now: UtcMillis) -> Result<EnrollResult, StoreError>;
    /// Lets `workstation` be enrolled once more with `code` until `expires` (replacing an
    /// earlier approval for it).
    fn approve_reenroll(
        &self,
        workstation: &str,
        code: &Hash,
        group: Option<&str>,
        expires: UtcMillis,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<(), StoreError>;
    /// Its node key stops working at once (replaced by `dead_key`, which nobody holds);
    /// only an approved re-enrollment brings it back. `false`: no such workstation.
    fn revoke_workstation(
        &self,
        workstation: &str,
        dead_key: &Hash,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError>;
    fn workstation_by_key(&self, node_key: &Hash) -> Result<Option<Workstation>, StoreError>;
    /// A page of workstations by ID; with `silent_before`, only those not heard from since.
    fn workstations(
        &self,
        silent_before: Option<UtcMillis>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Workstation>, StoreError>;
    /// The fleet page: silent ones (not heard from since `silent_before`), then unguarded,
    /// logged off, warning, active, locked; by ID within each. Reads the workstations
    /// table (one row per machine), counting findings for the page's rows only.
    fn fleet(
        &self,
        group: Option<&str>,
        silent_before: UtcMillis,
        after: Option<&FleetKey>,
        limit: u32,
    ) -> Result<Vec<(FleetKey, FleetWorkstation)>, StoreError>;
    fn workstation_count(&self) -> Result<u64, StoreError>;
    /// The groups that have a workstation enrolled.
    fn workstation_groups(&self) -> Result<Vec<String>, StoreError>;
    /// Stores a batch idempotently by (workstation, seq), follows the chain, flags
    /// problems (never dropping an entry), all in one transaction (on SQLite perhaps
    /// shared with other batches), and answers once that is on disk.
    fn ingest(&self, workstation: &str, entries: Vec<Received>, now: UtcMillis)
        -> Result<Ingest, StoreError>;
    fn heartbeat(&self, workstation: &str, beat: &Heartbeat, now: UtcMillis) -> Result<(), StoreError>;
    /// Notes TOTP steps used (user, the step's start), keeping the latest per user.
    fn note_totp_steps(&self, steps: &[(String, UtcMillis)], now: UtcMillis) -> Result<(), StoreError>;
    /// The latest TOTP step of every user who used one since `since` (noted then).
    fn recent_totp_steps(&self, since: UtcMillis) -> Result<Vec<(String, UtcMillis)>, StoreError>;
    fn put_policy(
        &self,
        group: &str,
        serial: u64,
        envelope: &str,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<PolicyPut, StoreError>;
    /// The signed envelope for a group, and its ETag.
    fn policy(&self, group: &str) -> Result<Option<(String, String)>, StoreError>;
    /// Every group's policy in force with the one it replaced, by group (one row a group).
    fn policies_in_force(&self) -> Result<Vec<StoredPolicy>, StoreError>;
    fn add_policy_draft(
        &self,
        group: &str,
        policy: &str,
        author: &str,
        now: UtcMillis,
        log: &AdminAction,
    ) -> Result<i64, StoreError>;
    /// Drafts, newest first, before the `before` ID.
    fn policy_drafts(&self, before: Option<i64>, limit: u32) -> Result<Vec<PolicyDraft>, StoreError>;
    fn policy_draft(&self, id: i64) -> Result<Option<PolicyDraft>, StoreError>;
    fn add_token(
        &self,
        token: &Hash,
        role: Role,
        label: &str,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<(), StoreError>;
    fn token(&self, token: &Hash) -> Result<Option<(Role, String)>, StoreError>;
    fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;
    /// A page of findings in the order they were found.
    fn findings(&self, after: Option<&FindingKey>, limit: u32) -> Result<Vec<Finding>, StoreError>;
    /// Entries received under a stored seq with another content, beside what is stored.
    fn conflicts(
        &self,
        workstation: Option<&str>,
        after: Option<&ConflictKey>,
        limit: u32,
    ) -> Result<Vec<Conflict>, StoreError>;
    fn log_admin(&self, action: &AdminAction) -> Result<(), StoreError>;
    /// A page of the admin log in the order written, each action with its cursor.
    fn admin_log(&self, after: Option<i64>, limit: u32) -> Result<Vec<(i64, AdminAction)>, StoreError>;
    /// The reviews of these break-glass entries (workstation, seq), where there are any.
    fn emergency_reviews(
        &self,
        entries: &[(String, u64)],
    ) -> Result<Vec<(String, u64, EmergencyReview)>, StoreError>;
    /// Keeps a review of the break-glass entry at (workstation, seq): `Ok(None)` when
    /// kept; the review there already when there is one (it is never replaced); an error
    /// when no break-glass entry is stored there.
    fn review_emergency(
        &self,
        workstation: &str,
        seq: u64,
        review: &EmergencyReview,
        log: &AdminAction,
    ) -> Result<Option<EmergencyReview>, StoreError>;
    /// The console's charts over entries dated in [since, until), of one group or all.
    fn charts(&self, since: UtcMillis, until: UtcMillis, group: Option<&str>) -> Result<Charts, StoreError>;
    fn entry_count(&self) -> Result<u64, StoreError>;
    /// The cursor of the latest stored entry (0 when there is none).
    fn last_event_id(&self) -> Result<i64, StoreError>;
    /// A page of failed unlocks and lockouts per user and workstation since a time, most
    /// failures first.
    fn failures_by_user(
        &self,
        since: UtcMillis,
        after: Option<&FailureKey>,
        limit: u32,
    ) -> Result<Vec<FailureCount>, StoreError>;
    /// A page (by ID) of the enabled users, unchanged since `cutoff`, who have not used
    /// their account since then (no kind of `AuditKind::ACCOUNT_USED`), each with when
    /// they last did.
    fn stale_users(
        &self,
        cutoff: UtcMillis,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(UserRecord, Option<UtcMillis>)>, StoreError>;
    /// Adds or replaces a user; `false` when `must_be_new` and the user exists.
    fn put_user(
        &self,
        user: &UserRecord,
        must_be_new: bool,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError>;
    /// How far a forwarder (`syslog`) has delivered: the last event id it may skip.
    fn forward_cursor(&self, name: &str) -> Result<i64, StoreError>;
    fn set_forward_cursor(&self, name: &str, id: i64) -> Result<(), StoreError>;
    fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Stores IT's signed admin grant for `id` (the directory changes with it); `false`:
    /// no such user.
    fn set_admin_grant(
        &self,
        id: &str,
        grant: &str,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError>;
    /// The whole directory: what a workstation's directory sync and a start-up upgrade
    /// need. Lists use [`CollectorStore::users_page`].
    fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// A page of users by ID.
    fn users_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<UserRecord>, StoreError>;
    /// Adds a console account; `false` if the name is taken (nothing changed).
    fn add_console_account(
        &self,
        account: &ConsoleAccount,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError>;
    fn console_account(&self, name: &str) -> Result<Option<ConsoleAccount>, StoreError>;
    /// Gives an account new secrets and fresh counters and ends its sessions (a forgotten
    /// password, a lost phone); `false` if there is none.
    fn reset_console_account(
        &self,
        account: &ConsoleAccount,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError>;
    /// Disables an account (its sessions end with it); `false` if there is none.
    fn disable_console_account(&self, name: &str, log: Option<&AdminAction>) -> Result<bool, StoreError>;
    /// Records a decided sign-in in one transaction: the account's new counters (only if
    /// they are still `seen`, else `false` and nothing changes: another sign-in raced it),
    /// the new session if one was granted, and the admin log's entry.
    fn console_sign_in(
        &self,
        name: &str,
        seen: &str,
        auth_state: &str,
        session: Option<(&Hash, UtcMillis)>,
        log: &AdminAction,
    ) -> Result<bool, StoreError>;
    fn console_session(&self, session: &Hash) -> Result<Option<ConsoleSessionRecord>, StoreError>;
    fn touch_console_session(&self, session: &Hash, now: UtcMillis) -> Result<(), StoreError>;
    /// Ends a session for good; `false` if it was not live.
    fn sign_out_console_session(
        &self,
        session: &Hash,
        now: UtcMillis,
        log: &AdminAction,
    ) -> Result<bool, StoreError>;
}

/// Where a page of findings ends: (found, workstation, seq, kind).
/// The fleet's order: rank (silent first), then ID.
pub type FleetKey = (i64, String);
pub type FindingKey = (i64, String, u64, String);
/// Where a page of conflicts ends: (workstation, seq, received, received entry's hash).
pub type ConflictKey = (String, u64, i64, Vec<u8>);
/// Where a page of the failure report ends: (failed attempts, user, workstation).
pub type FailureKey = (u64, String, String);
/// Where a page of enrollment secrets ends: (created, hash).
pub type SecretKey = (i64, Vec<u8>);

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> UtcMillis {
        UtcMillis::from_unix_millis(ms)
    }

    fn attempt(secret: u8, presented: Option<u8>) -> EnrollAttempt {
        EnrollAttempt {
            secret: [secret; 32],
            workstation: NewWorkstation {
                id: "ws-b".into(),
                hostname: "impostor".into(),
                group: "default".into(),
                agent_version: "t".into(),
                transport_key: vec![0; 32],
            },
            node_key: [9; 32],
            presented_key: presented.map(|p| [p; 32]),
        }
    }

    fn fleet(expires: Option<i64>, max_uses: Option<u64>, uses: u64, revoked: bool) -> EnrollSecret {
        EnrollSecret {
            hash: [1; 32],
            label: "ward 4".into(),
            group: Some("default".into()),
            created: at(0),
            expires: expires.map(at),
            max_uses,
            uses,
            revoked: revoked.then(|| at(5)),
        }
    }

    fn enroll_new() -> EnrollPlan {
        EnrollPlan::Enroll { use_secret: true, use_approval: false, group: "default".into(), finding: None }
    }

    fn enrolled_in(group: &str, revoked: bool) -> Enrolled {
        Enrolled { node_key: [7; 32], revoked, group: group.into(), transport_key: vec![0; 32] }
    }

    fn approval(group: Option<&str>) -> ReenrollApproval {
        ReenrollApproval { code: [4; 32], expires: at(100), group: group.map(str::to_owned) }
    }

    #[test]
    fn a_policy_replaces_the_one_in_force_only_with_a_higher_serial() {
        assert_eq!(plan_policy_put(None, 1), PolicyPut::Stored);
        assert_eq!(plan_policy_put(Some(4), 5), PolicyPut::Stored);
        assert_eq!(plan_policy_put(Some(5), 5), PolicyPut::Stale { current: 5 });
        assert_eq!(plan_policy_put(Some(6), 5), PolicyPut::Stale { current: 6 });
    }

    #[test]
    fn a_new_id_enrolls_with_a_usable_secret_and_not_with_one_expired_used_up_revoked_or_unknown() {
        let a = attempt(1, None);
        assert_eq!(
            plan_enroll(&a, Some(&fleet(Some(100), Some(2), 1, false)), None, None, at(50)),
            enroll_new()
        );
        for (secret, why) in [
            (fleet(Some(100), None, 0, false), "expired"),
            (fleet(None, Some(2), 2, false), "used up"),
            (fleet(None, None, 0, true), "revoked"),
        ] {
            let plan = plan_enroll(&a, Some(&secret), None, None, at(100));
            assert!(matches!(plan, EnrollPlan::Unauthorized(m) if m.contains(why)), "{why}: {plan:?}");
        }
        assert!(
            matches!(plan_enroll(&a, None, None, None, at(0)), EnrollPlan::Unauthorized(m) if m.contains("not recognised"))
        );
    }

    #[test]
    fn an_enrolled_id_is_a_conflict_for_the_fleet_secret_and_enrolls_with_an_approval_or_its_own_key() {
        let enrolled = enrolled_in("default", false);
        let secret = fleet(None, None, 0, false);
        let plan = plan_enroll(&attempt(1, None), Some(&secret), None, Some(&enrolled), at(0));
        let EnrollPlan::Conflict { message, finding } = plan else { panic!("{plan:?}") };
        assert!(message.contains("wardlockctl workstation re-enroll ws-b"), "{message}");
        assert!(finding.contains("impostor") && finding.contains("ward 4"), "{finding}");
        // Someone else's key is no proof; the workstation's own is.
        assert!(matches!(
            plan_enroll(&attempt(1, Some(8)), Some(&secret), None, Some(&enrolled), at(0)),
            EnrollPlan::Conflict { .. }
        ));
        assert_eq!(
            plan_enroll(&attempt(1, Some(7)), Some(&secret), None, Some(&enrolled), at(0)),
            EnrollPlan::Enroll {
                use_secret: false,
                use_approval: false,
                group: "default".into(),
                finding: None
            }
        );
        // The approval's code is the secret, once, until it expires.
        let approval = approval(None);
        assert_eq!(
            plan_enroll(&attempt(4, None), None, Some(&approval), Some(&enrolled), at(99)),
            EnrollPlan::Enroll {
                use_secret: false,
                use_approval: true,
                group: "default".into(),
                finding: None
            }
        );
        assert!(matches!(
            plan_enroll(&attempt(4, None), None, Some(&approval), Some(&enrolled), at(100)),
            EnrollPlan::Unauthorized(_)
        ));
        // Without a usable secret nothing is learnt about the ID: no conflict, no finding.
        assert!(matches!(
            plan_enroll(&attempt(3, None), None, None, Some(&enrolled), at(0)),
            EnrollPlan::Unauthorized(_)
        ));
    }

    #[test]
    fn a_revoked_workstation_comes_back_only_with_an_approval() {
        let revoked = enrolled_in("default", true);
        let secret = fleet(None, None, 0, false);
        assert!(matches!(
            plan_enroll(&attempt(1, Some(7)), Some(&secret), None, Some(&revoked), at(0)),
            EnrollPlan::Conflict { message, .. } if message.contains("was revoked")
        ));
        let approval = approval(None);
        assert!(matches!(
            plan_enroll(&attempt(4, None), None, Some(&approval), Some(&revoked), at(0)),
            EnrollPlan::Enroll { use_approval: true, .. }
        ));
    }

    fn claiming(group: &str, presented: Option<u8>, transport: u8) -> EnrollAttempt {
        let mut a = attempt(1, presented);
        a.workstation.group = group.into();
        a.workstation.transport_key = vec![transport; 32];
        a
    }

    #[test]
    fn a_workstation_cannot_choose_its_group_with_the_fleet_secret_or_its_own_key() {
        // A new ID: the secret's group, not the one it claims.
        let plan =
            plan_enroll(&claiming("icu", None, 0), Some(&fleet(None, None, 0, false)), None, None, at(0));
        assert!(
            matches!(&plan, EnrollPlan::WrongGroup(m) if m.contains("\"default\"") && m.contains("\"icu\"")),
            "{plan:?}"
        );
        // A secret from before groups were bound enrolls nothing.
        let mut old = fleet(None, None, 0, false);
        old.group = None;
        assert!(
            matches!(plan_enroll(&attempt(1, None), Some(&old), None, None, at(0)), EnrollPlan::Unauthorized(m) if m.contains("no group"))
        );
        // Its own node key: neither another group nor another transport key.
        let ward4 = enrolled_in("ward4", false);
        for (who, what) in
            [(claiming("icu", Some(7), 0), "group"), (claiming("ward4", Some(7), 9), "transport key")]
        {
            let plan = plan_enroll(&who, None, None, Some(&ward4), at(0));
            let EnrollPlan::Conflict { message, finding } = plan else { panic!("{what}: {plan:?}") };
            assert!(
                message.contains("administrator's approval") && finding.contains(what),
                "{message} / {finding}"
            );
        }
        // An administrator's approval (its code is the secret) may move it, and the move is a finding.
        let mut approved = claiming("icu", None, 9);
        approved.secret = [4; 32];
        let plan = plan_enroll(&approved, None, Some(&approval(Some("icu"))), Some(&ward4), at(0));
        let EnrollPlan::Enroll { group, finding: Some(("group_changed", detail)), .. } = plan else {
            panic!("{plan:?}")
        };
        assert_eq!(group, "icu");
        assert!(detail.contains("\"ward4\" -> \"icu\""), "{detail}");
        // An approval without a group keeps the one it has, whatever the workstation says.
        let plan = plan_enroll(&approved, None, Some(&approval(None)), Some(&ward4), at(0));
        assert!(matches!(plan, EnrollPlan::WrongGroup(_)), "{plan:?}");
    }
}
