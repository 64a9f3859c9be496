//! Where the collector keeps everything, behind one trait so that the embedded SQLite
//! backend and a PostgreSQL one answer the same API. Methods block; the HTTP layer
//! calls them off the async threads. Secrets (node keys, enrollment secrets, API
//! tokens) arrive here only as SHA-256 hashes.

pub mod pg;
pub mod sqlite;

use wardlock_core::audit::AuditEntry;
use wardlock_core::clock::UtcMillis;
use wardlock_core::protocol::collector::{AuditAck, Heartbeat, SeqRange};

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
}

pub type Hash = [u8; 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Policy, users, enrollment secrets, tokens; and everything an auditor may do.
    Admin,
    /// Read-only: events and reports.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

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

#[derive(Debug, Clone)]
pub struct NewWorkstation {
    pub id: String,
    pub hostname: String,
    pub group: String,
    pub agent_version: String,
    pub transport_key: Vec<u8>,
}

/// A user in the central directory. Secrets stay protected: the PIN as an Argon2id
/// PHC string, the TOTP seed sealed with the collector's data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub display_name: String,
    pub role: String,
    pub disabled: bool,
    pub pin_hash: Option<String>,
    pub totp_sealed: Option<Vec<u8>>,
    pub updated: UtcMillis,
}

/// Milliseconds since the epoch, as both backends store times.
fn ms(t: UtcMillis) -> i64 {
    t.unix_millis()
}

/// A stored 32-byte hash (zeros if the column was tampered to another length; the chain
/// check then flags it).
fn hash_of(blob: Vec<u8>) -> Hash {
    blob.try_into().unwrap_or([0; 32])
}

/// The ETag of a stored policy envelope: its content, so every collector on one
/// database answers the same.
fn policy_etag(envelope: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("\"{}\"", hex::encode(&Sha256::digest(envelope.as_bytes())[..16]))
}

/// A chain problem found in a batch: (seq, kind, what was seen).
pub type ChainFinding = (u64, &'static str, String);

/// The finding for a chain error from `continue_chain`.
pub fn chain_finding(e: &wardlock_core::audit::ChainError) -> ChainFinding {
    use wardlock_core::audit::ChainError;
    let kind = match e {
        ChainError::Altered { .. } => "altered",
        ChainError::BrokenLink { .. } => "broken_link",
        ChainError::Missing { .. } => "missing",
    };
    (e.seq(), kind, e.to_string())
}

/// The finding for an entry received again under a stored seq with another content.
pub fn rewritten(seq: u64, stored_hash: &[u8], received_hash: &[u8]) -> Option<ChainFinding> {
    (stored_hash != received_hash).then(|| {
        (
            seq,
            "rewritten",
            format!("stored hash {} but received {}", hex::encode(stored_hash), hex::encode(received_hash)),
        )
    })
}

impl Ingest {
    /// The answer to a batch: `head` is the contiguous head after it, `next_stored` the
    /// first seq stored beyond a gap (if any).
    pub fn new(
        head: u64,
        next_stored: Option<u64>,
        findings: &[ChainFinding],
        stored: u64,
        duplicates: u64,
    ) -> Ingest {
        let gaps =
            next_stored.map(|next| vec![SeqRange { first: head + 1, last: next - 1 }]).unwrap_or_default();
        let chain_break_at = findings.iter().map(|(seq, _, _)| *seq).min();
        Ingest {
            ack: AuditAck { highest_contiguous_seq: head, gaps, chain_break_at },
            stored,
            duplicates,
            findings: findings.len() as u64,
        }
    }
}

/// What one audit batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingest {
    pub ack: AuditAck,
    pub stored: u64,
    pub duplicates: u64,
    pub findings: u64,
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

#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub workstation: Option<String>,
    pub user: Option<String>,
    pub kind: Option<String>,
    pub since: Option<UtcMillis>,
    pub until: Option<UtcMillis>,
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

/// A problem with a workstation's chain, kept for compliance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Finding {
    pub workstation: String,
    pub seq: u64,
    /// `altered`, `broken_link`, `rewritten` (another entry under a stored seq), `truncated`
    /// (the workstation reports fewer entries than the collector holds).
    pub kind: String,
    pub detail: String,
    pub found: UtcMillis,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FailureCount {
    pub user: String,
    pub workstation: String,
    pub failed_attempts: u64,
    pub lockouts: u64,
    pub last: UtcMillis,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AdminAction {
    pub time: UtcMillis,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

pub trait CollectorStore: Send + Sync + std::fmt::Debug {
    fn add_enroll_secret(&self, secret: &Hash, label: &str, now: UtcMillis) -> Result<(), StoreError>;
    /// Enrolls (or re-enrolls) a workstation when `secret` is a known enrollment secret.
    fn enroll(
        &self,
        secret: &Hash,
        ws: &NewWorkstation,
        node_key: &Hash,
        now: UtcMillis,
    ) -> Result<bool, StoreError>;
    fn workstation_by_key(&self, node_key: &Hash) -> Result<Option<Workstation>, StoreError>;
    fn workstations(&self) -> Result<Vec<Workstation>, StoreError>;
    /// Stores a batch idempotently by (workstation, seq), follows the chain, flags
    /// problems (never dropping an entry), all in one transaction.
    fn ingest(
        &self,
        workstation: &str,
        entries: Vec<AuditEntry>,
        now: UtcMillis,
    ) -> Result<Ingest, StoreError>;
    fn heartbeat(&self, workstation: &str, beat: &Heartbeat, now: UtcMillis) -> Result<(), StoreError>;
    fn put_policy(
        &self,
        group: &str,
        serial: u64,
        envelope: &str,
        now: UtcMillis,
    ) -> Result<PolicyPut, StoreError>;
    /// The signed envelope for a group, and its ETag.
    fn policy(&self, group: &str) -> Result<Option<(String, String)>, StoreError>;
    fn add_token(&self, token: &Hash, role: Role, label: &str, now: UtcMillis) -> Result<(), StoreError>;
    fn token(&self, token: &Hash) -> Result<Option<(Role, String)>, StoreError>;
    fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;
    fn findings(&self) -> Result<Vec<Finding>, StoreError>;
    fn log_admin(&self, action: &AdminAction) -> Result<(), StoreError>;
    fn admin_log(&self) -> Result<Vec<AdminAction>, StoreError>;
    fn entry_count(&self) -> Result<u64, StoreError>;
    /// Adds or replaces a user; `false` when `must_be_new` and the user exists.
    /// Failed unlocks and lockouts per user (and workstation) since a time.
    fn failures_by_user(&self, since: UtcMillis) -> Result<Vec<FailureCount>, StoreError>;
    /// The last successful unlock of every user who ever unlocked.
    fn last_unlocks(&self) -> Result<Vec<(String, UtcMillis)>, StoreError>;
    fn put_user(&self, user: &UserRecord, must_be_new: bool) -> Result<bool, StoreError>;
    /// How far a forwarder (`syslog`) has delivered: the last event id it may skip.
    fn forward_cursor(&self, name: &str) -> Result<i64, StoreError>;
    fn set_forward_cursor(&self, name: &str, id: i64) -> Result<(), StoreError>;
    fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
}
