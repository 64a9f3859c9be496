//! The state of a running `wardlockd` and every decision it makes, apart from the
//! socket. Methods here block (SQLite, Argon2); the server calls them off the async
//! threads. Each one that changes something audits it in the same transaction.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use zeroize::Zeroizing;

use wardlock_core::audit::{AuditDraft, AuditKind};
use wardlock_core::clock::UtcMillis;
use wardlock_core::policy::{Policy, PolicyError};
use wardlock_core::protocol::local::{
    AdminCredentials, GuardEvent, ServiceStatus, UnlockReply, UnlockRequest,
};
use wardlock_core::secret::SecretString;
use wardlock_core::unlock::{self, Attempt, GrantMethod, Outcome, TotpCheck, TotpSeed};

use crate::auth::{self, AuthError, Context, Purpose};
use crate::central::{self, Central};
use crate::config::ServiceConfig;
use crate::directory::{self, Actor, CredentialChange, DirectoryError, NewUser};
use crate::oslock::OsLocker;
use crate::peer::Peer;
use crate::secrets::{self, DataKey, SecretError};
use crate::store::{OpenOptions, Store, StoreError};
use crate::throttle::{Admission, AttemptBudget};

const META_RUNNING: &str = "service_running";
const META_POLICY_TEXT: &str = "machine_policy_last_good";
const META_POLICY_HASH: &str = "policy_hash_applied";
const META_CENTRAL: &str = "central_policy_envelope";
const META_CENTRAL_SERIAL: &str = "central_policy_serial_high_water";

#[derive(Debug, Clone, Default)]
struct Layers {
    machine_text: String,
    central: Option<Central>,
}

/// What became of a central policy from the collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CentralOutcome {
    Applied { serial: u64 },
    Refused { why: String },
}
/// A session runs one guard; two allow a restart to overlap the old one's exit.
const GUARDS_PER_ACCOUNT: u32 = 2;
const GUARD_STARTS_PER_MINUTE: u32 = 20;
/// Text a client sends that ends up in the audit log (an app name, a failure) is cut here.
const MAX_CLIENT_TEXT: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Startup(String),
    #[error("a worker thread failed: {0}")]
    Worker(String),
    #[error("the OS random generator failed: {0}")]
    Random(String),
}

/// An administrator's approval, as the client may learn it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    Granted,
    Refused { attempts_left: u32, retry_after_secs: Option<u64> },
}

#[derive(Debug)]
pub struct Service {
    store: Mutex<Store>,
    key: DataKey,
    config: ServiceConfig,
    policy: watch::Sender<Arc<Policy>>,
    /// The layers the policy in force is made of.
    layers: Mutex<Layers>,
    budget: Mutex<AttemptBudget>,
    /// The clinician the session is attributed to (the last one who unlocked).
    session_user: Mutex<Option<String>>,
    /// OS accounts whose guard last reported the session locked and has not unlocked it
    /// since: a guard that starts again for such an account is told to lock at once.
    locked_accounts: Mutex<std::collections::HashSet<String>>,
    guards: AtomicU32,
    /// Whether the last exchange with the collector worked (`None`: no collector, or
    /// not tried yet).
    collector_reachable: Mutex<Option<bool>>,
    /// Rung when something worth sending soon was audited.
    pub sync_wakeup: tokio::sync::Notify,
    /// Guards connected per OS account, and how fast each account starts them: a
    /// process in the session posing as guards must not flood the audit log.
    guard_accounts: Mutex<HashMap<u32, (u32, AttemptBudget)>>,
    pub locker: Box<dyn OsLocker>,
}

pub fn utc_now() -> UtcMillis {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    UtcMillis::from_unix_millis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// Client text bound for the audit log: control characters dropped, length capped.
pub fn client_text(text: &str) -> String {
    capped(text, MAX_CLIENT_TEXT)
}

/// A policy's problems for the audit log: every line kept, within reason.
fn policy_problems(text: &str) -> String {
    capped(&text.replace('\n', "; "), 2000)
}

fn capped(text: &str, max_chars: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max_chars).collect()
}

pub fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, ServiceError> {
    let mut bytes = Zeroizing::new([0u8; N]);
    getrandom::getrandom(&mut bytes[..]).map_err(|e| ServiceError::Random(e.to_string()))?;
    Ok(bytes)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Service {
    /// Opens the database and the data key, loads the policy, and audits the start
    /// (after an unclean stop, that first).
    pub fn start(config: ServiceConfig, locker: Box<dyn OsLocker>) -> Result<Arc<Service>, ServiceError> {
        let options = OpenOptions { create: true, workstation_id: config.workstation_id.clone() };
        let mut store = Store::open(&config.db_path(), &options)?;
        let secret_store = secrets::from_spec(&config.key_store)?;
        let key = DataKey::open_or_create(secret_store.as_ref(), &store)?;
        let now = utc_now();

        let source = config.policy.display().to_string();
        let (machine_text, refusal) = initial_policy(&config, &store)?;
        let machine = central::compose(&source, &machine_text, None)?;
        // The central layer applied before, checked again: the trusted keys may have changed.
        let (central, central_refusal) = match store.meta(META_CENTRAL)? {
            None => (None, None),
            Some(envelope) => match central::check(&envelope, &machine, None).and_then(|c| {
                central::compose(&source, &machine_text, Some(&c)).map(|_| c).map_err(|e| e.to_string())
            }) {
                Ok(c) => (Some(c), None),
                Err(why) => (None, Some(why)),
            },
        };
        let policy = central::compose(&source, &machine_text, central.as_ref())?;
        let hash = policy.hash();
        let mut tx = store.write()?;
        if tx.meta(META_RUNNING)?.as_deref() == Some("1") {
            tx.append(
                AuditDraft::new(now, AuditKind::ServiceUncleanStop)
                    .policy_hash(&hash)
                    .detail("detected", "at the next start; the previous run ended without service_stopped"),
            )?;
        }
        if let Some(why) = refusal {
            tx.append(
                AuditDraft::new(now, AuditKind::PolicyRefused)
                    .policy_hash(&hash)
                    .detail("source", config.policy.display())
                    .detail("why", why)
                    .detail("kept", "last good machine policy"),
            )?;
        }
        if let Some(why) = central_refusal {
            tx.append(
                AuditDraft::new(now, AuditKind::PolicyRefused)
                    .policy_hash(&hash)
                    .detail("source", "stored central policy")
                    .detail("why", policy_problems(&why))
                    .detail("kept", "machine policy alone"),
            )?;
        }
        if tx.meta(META_POLICY_HASH)?.as_deref() != Some(hash.as_str()) {
            let mut d =
                AuditDraft::new(now, AuditKind::PolicyApplied).policy_hash(&hash).detail("source", &source);
            if let Some(c) = &central {
                d = d.detail("central_serial", c.serial);
            }
            tx.append(d)?;
            tx.set_meta(META_POLICY_HASH, &hash)?;
        }
        tx.append(
            AuditDraft::new(now, AuditKind::ServiceStarted)
                .policy_hash(&hash)
                .detail("version", env!("CARGO_PKG_VERSION"))
                .detail("pid", std::process::id()),
        )?;
        tx.set_meta(META_RUNNING, "1")?;
        tx.commit()?;

        let budget = AttemptBudget::new(policy.service.max_attempts_per_minute, Instant::now());
        Ok(Arc::new(Service {
            store: Mutex::new(store),
            key,
            config,
            policy: watch::Sender::new(Arc::new(policy)),
            layers: Mutex::new(Layers { machine_text, central }),
            budget: Mutex::new(budget),
            session_user: Mutex::new(None),
            locked_accounts: Mutex::new(Default::default()),
            guards: AtomicU32::new(0),
            collector_reachable: Mutex::new(None),
            sync_wakeup: tokio::sync::Notify::new(),
            guard_accounts: Mutex::new(HashMap::new()),
            locker,
        }))
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.borrow().clone()
    }

    pub fn subscribe_policy(&self) -> watch::Receiver<Arc<Policy>> {
        self.policy.subscribe()
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock left no half transaction behind (SQLite rolled
        // it back), so the store is still usable.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn draft(&self, kind: AuditKind, peer: Option<&Peer>) -> AuditDraft {
        AuditDraft::new(utc_now(), kind)
            .os_account(peer.map(|p| p.account.clone()))
            .policy_hash(self.policy().hash())
    }

    pub fn audit(&self, draft: AuditDraft) -> Result<u64, ServiceError> {
        let seq = self.store().append(draft)?.seq;
        self.sync_wakeup.notify_one();
        Ok(seq)
    }

    /// The store, for the sync client (batches out, acknowledgements in).
    pub fn with_store<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, ServiceError> {
        Ok(f(&mut self.store())?)
    }

    /// The data key, for sealing the collector's node key.
    pub fn data_key(&self) -> &DataKey {
        &self.key
    }

    pub fn set_collector_reachable(&self, reachable: Option<bool>) {
        *self.collector_reachable.lock().unwrap_or_else(|p| p.into_inner()) = reachable;
    }

    /// Takes one attempt from the budget; audits what was refused unheard before it.
    fn admit(&self) -> Result<Option<u64>, ServiceError> {
        let admission = self.budget.lock().unwrap_or_else(|p| p.into_inner()).admit(Instant::now());
        match admission {
            Admission::Admit { suppressed_before } => {
                if suppressed_before > 0 {
                    self.audit_suppressed(suppressed_before)?;
                }
                Ok(None)
            }
            Admission::Refuse { retry_after } => Ok(Some(ceil_secs(retry_after).max(1))),
        }
    }

    fn audit_suppressed(&self, count: u64) -> Result<(), ServiceError> {
        let per_minute = self.policy().service.max_attempts_per_minute;
        self.audit(
            self.draft(AuditKind::AttemptsRateLimited, None)
                .detail("count", count)
                .detail("limit_per_minute", per_minute),
        )?;
        Ok(())
    }

    /// Decides an unlock. A `Granted` answer is only built after its audit entry is on disk.
    pub fn unlock(&self, request: UnlockRequest, peer: &Peer) -> Result<UnlockReply, ServiceError> {
        if let Some(retry) = self.admit()? {
            return Ok(UnlockReply::Refused { attempts_left: 0, retry_after_secs: Some(retry) });
        }
        let attempt = Attempt {
            user_id: request.user,
            pin: request.pin,
            totp: request.totp,
            emergency_reason: request.emergency_reason,
        };
        let session_user = self.session_user.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let context = Context { os_account: Some(peer.account.clone()), session_user };
        let result = match self.attempt(&attempt, Purpose::Unlock, &context)? {
            Ok(result) => result,
            Err(refused) => return Ok(refused),
        };
        Ok(match result.outcome {
            Outcome::Granted { method, previous_unlock, failures_since_last_unlock } => {
                *self.session_user.lock().unwrap_or_else(|p| p.into_inner()) = Some(attempt.user_id.clone());
                UnlockReply::Granted {
                    display_name: result.display_name.unwrap_or_else(|| attempt.user_id.clone()),
                    user: attempt.user_id,
                    emergency: method == GrantMethod::Emergency,
                    last_unlock: previous_unlock,
                    failures_since_last_unlock,
                }
            }
            Outcome::Refused { attempts_left, retry_after, .. } => {
                UnlockReply::Refused { attempts_left, retry_after_secs: retry_after.map(ceil_secs) }
            }
        })
    }

    /// Runs one attempt; a sealed seed that will not open is audited as tampering and
    /// answered as a plain refusal.
    fn attempt(
        &self,
        attempt: &Attempt,
        purpose: Purpose,
        context: &Context,
    ) -> Result<Result<auth::UnlockResult, UnlockReply>, ServiceError> {
        let policy = self.policy();
        let outcome = {
            let mut store = self.store();
            auth::attempt_unlock(&mut store, &self.key, &policy, attempt, purpose, context, utc_now())
        };
        self.sync_wakeup.notify_one();
        match outcome {
            Ok(result) => Ok(Ok(result)),
            Err(AuthError::Secret(SecretError::Unseal)) | Err(AuthError::BadCredentialRecord { .. }) => {
                self.audit(
                    self.draft(AuditKind::TamperDetected, None)
                        .user(&attempt.user_id)
                        .os_account(context.os_account.clone())
                        .detail("what", "stored credentials of this user do not open with the data key")
                        .detail("alert", "compliance"),
                )?;
                Ok(Err(UnlockReply::Refused { attempts_left: 0, retry_after_secs: None }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Checks an administrator's credentials for `action` (throttled and audited like an
    /// unlock; only the role `admin` passes).
    pub fn approve(
        &self,
        creds: AdminCredentials,
        action: &'static str,
        peer: &Peer,
    ) -> Result<Approval, ServiceError> {
        if let Some(retry) = self.admit()? {
            return Ok(Approval::Refused { attempts_left: 0, retry_after_secs: Some(retry) });
        }
        let attempt =
            Attempt { user_id: creds.user, pin: creds.pin, totp: creds.totp, emergency_reason: None };
        let context = Context { os_account: Some(peer.account.clone()), session_user: None };
        Ok(match self.attempt(&attempt, Purpose::AdminApproval { action }, &context)? {
            Ok(auth::UnlockResult { outcome: Outcome::Granted { .. }, .. }) => Approval::Granted,
            Ok(auth::UnlockResult {
                outcome: Outcome::Refused { attempts_left, retry_after, .. }, ..
            }) => Approval::Refused { attempts_left, retry_after_secs: retry_after.map(ceil_secs) },
            Err(_) => Approval::Refused { attempts_left: 0, retry_after_secs: None },
        })
    }

    /// Enrollment: the user to enroll exists (or is added now, with `display_name`).
    pub fn enroll_user(
        &self,
        user: &str,
        display_name: Option<String>,
        actor: &Actor,
    ) -> Result<Result<(), String>, ServiceError> {
        if let Err(e) = directory::validate_user_id(user) {
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
    pub fn set_pin(
        &self,
        user: &str,
        pin: SecretString,
        actor: &Actor,
    ) -> Result<Result<(), String>, ServiceError> {
        let policy = self.policy();
        let change = CredentialChange { pin: Some(pin), new_totp_seed: false };
        let mut store = self.store();
        match directory::change_credentials(&mut store, &self.key, &policy, user, &change, actor, utc_now()) {
            Ok(_) => Ok(Ok(())),
            Err(e @ DirectoryError::PinRule(_)) => Ok(Err(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// A fresh seed and the URI to show as a QR code; nothing is stored until confirmed.
    pub fn new_totp(&self, user: &str) -> Result<(TotpSeed, Zeroizing<String>), ServiceError> {
        let seed = directory::generate_totp_seed()?;
        let uri = directory::totp_uri(&self.policy(), &seed, user)?;
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
        let TotpCheck::Accepted { step } = unlock::check_totp(&policy.totp, seed, code, now, None) else {
            return Ok(false);
        };
        let mut store = self.store();
        directory::set_totp_seed(&mut store, &self.key, &policy, user, seed, step, actor, now)?;
        Ok(true)
    }

    /// Audits what the guard reports. Client text is cleaned and capped first.
    pub fn record_event(&self, event: &GuardEvent, peer: &Peer) -> Result<(), ServiceError> {
        let d = |kind| self.draft(kind, Some(peer));
        let draft = match event {
            GuardEvent::WarningShown { seconds_left } => {
                d(AuditKind::WarningShown).detail("seconds_left", seconds_left)
            }
            GuardEvent::WarningCancelled {} => d(AuditKind::WarningCancelled),
            GuardEvent::Locked { reason } => {
                let reason = serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_owned));
                d(AuditKind::Locked).detail("reason", reason.unwrap_or_default())
            }
            GuardEvent::LockFailed { what } => d(AuditKind::LockFailed).detail("what", client_text(what)),
            GuardEvent::LockRestored {} => {
                d(AuditKind::LockFailed).detail("what", "restored: the lock holds again")
            }
            GuardEvent::PhiAppHidden { app } => d(AuditKind::PhiAppHidden).detail("app", client_text(app)),
            GuardEvent::PhiAppRestored { app } => {
                d(AuditKind::PhiAppRestored).detail("app", client_text(app))
            }
            GuardEvent::PhiAppClosed { app } => d(AuditKind::PhiAppClosed).detail("app", client_text(app)),
            GuardEvent::IdleUnavailable { why } => d(AuditKind::LockFailed)
                .detail("what", "idle detection unavailable")
                .detail("why", client_text(why)),
        };
        let user = self.session_user.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let draft = match (event, user) {
            (GuardEvent::Locked { .. } | GuardEvent::WarningShown { .. }, Some(u)) => draft.user(u),
            (_, _) => draft,
        };
        self.audit(draft)?;
        Ok(())
    }

    /// Admits a new guard of `peer`'s account, or says why not.
    pub fn admit_guard(&self, peer: &Peer) -> Result<(), String> {
        let mut accounts = self.guard_accounts.lock().unwrap_or_else(|p| p.into_inner());
        let (connected, starts) = accounts
            .entry(peer.uid)
            .or_insert_with(|| (0, AttemptBudget::new(GUARD_STARTS_PER_MINUTE, Instant::now())));
        if *connected >= GUARDS_PER_ACCOUNT {
            return Err(format!("{GUARDS_PER_ACCOUNT} guards of this account are connected already"));
        }
        if let Admission::Refuse { .. } = starts.admit(Instant::now()) {
            return Err(format!("more than {GUARD_STARTS_PER_MINUTE} guard starts a minute"));
        }
        *connected += 1;
        Ok(())
    }

    fn release_guard(&self, peer: &Peer) {
        self.guards.fetch_sub(1, Ordering::SeqCst);
        let mut accounts = self.guard_accounts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((connected, _)) = accounts.get_mut(&peer.uid) {
            *connected = connected.saturating_sub(1);
        }
    }

    /// Remembers whether this account's session is behind the lock, across guard restarts
    /// and restarts of the service itself (kept in the database too).
    pub fn set_session_locked(&self, account: &str, locked: bool) {
        let mut accounts = self.locked_accounts.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if locked { accounts.insert(account.to_owned()) } else { accounts.remove(account) };
        if changed || locked {
            let value = if locked { "1" } else { "0" };
            if let Err(e) = self.store().set_meta(&format!("session_locked:{account}"), value) {
                eprintln!("wardlockd: could not record the lock state of {account}: {e}");
            }
        }
    }

    pub fn session_locked(&self, account: &str) -> bool {
        let mut accounts = self.locked_accounts.lock().unwrap_or_else(|p| p.into_inner());
        if accounts.contains(account) {
            return true;
        }
        let stored = self.store().meta(&format!("session_locked:{account}")).ok().flatten();
        if stored.as_deref() == Some("1") {
            accounts.insert(account.to_owned());
            return true;
        }
        false
    }

    pub fn guard_started(&self, peer: &Peer, client: &str) -> Result<(), ServiceError> {
        self.guards.fetch_add(1, Ordering::SeqCst);
        self.audit(
            self.draft(AuditKind::GuardStarted, Some(peer))
                .detail("client", client_text(client))
                .detail("pid", peer.pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string())),
        )?;
        Ok(())
    }

    /// The guard left with an administrator's approval.
    pub fn guard_stopped(&self, peer: &Peer, admin: &str) -> Result<(), ServiceError> {
        self.release_guard(peer);
        self.audit(self.draft(AuditKind::GuardStopped, Some(peer)).detail("by", admin))?;
        Ok(())
    }

    /// The guard vanished or fell silent; `escalation` says what the service did about it.
    pub fn guard_lost(&self, peer: &Peer, why: &str, escalation: &str) -> Result<(), ServiceError> {
        self.release_guard(peer);
        self.audit(
            self.draft(AuditKind::GuardLost, Some(peer))
                .detail("why", why)
                .detail("escalation", escalation)
                .detail("alert", "compliance"),
        )?;
        Ok(())
    }

    /// Audits an escalation to the OS lock after a guard's lock failure.
    pub fn escalated(&self, peer: &Peer, result: &Result<String, String>) -> Result<(), ServiceError> {
        let d = self.draft(AuditKind::LockFailed, Some(peer)).detail("what", "escalated to the OS lock");
        let d = match result {
            Ok(what) => d.detail("os_lock", format!("locked {what}")),
            Err(why) => d.detail("os_lock", format!("failed: {why}")).detail("alert", "compliance"),
        };
        self.audit(d)?;
        Ok(())
    }

    pub fn status(&self) -> Result<ServiceStatus, ServiceError> {
        let policy = self.policy();
        let store = self.store();
        let last = store.last_seq()?;
        let unsent = last.saturating_sub(store.acked_seq()?);
        Ok(ServiceStatus {
            workstation_id: store.workstation_id().to_owned(),
            policy_hash: policy.hash(),
            audit_last_seq: last,
            audit_unsent: unsent,
            backlog_warning: policy.sync.endpoint.is_some() && unsent > policy.sync.backlog_warning,
            collector_reachable: *self.collector_reachable.lock().unwrap_or_else(|p| p.into_inner()),
            guards_connected: self.guards.load(Ordering::SeqCst),
        })
    }

    /// Reads the machine policy file again. A bad one is refused and audited and the
    /// policy in force stays; a good, changed one is applied, audited and pushed.
    pub fn reload_policy(&self) -> Result<bool, ServiceError> {
        let source = self.config.policy.display().to_string();
        let text = match std::fs::read_to_string(&self.config.policy) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.config.policy_required => {
                Ok(String::new())
            }
            Err(e) => Err(format!("cannot read it: {e}")),
        };
        let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let composed = text.and_then(|text| {
            let machine = central::compose(&source, &text, None).map_err(|e| e.to_string())?;
            // Keep the central layer only while the new machine policy still trusts it.
            let central = layers.central.and_then(|c| central::check(&c.envelope, &machine, None).ok());
            let policy = central::compose(&source, &text, central.as_ref()).map_err(|e| e.to_string())?;
            Ok((policy, Layers { machine_text: text, central }))
        });
        match composed {
            Ok((policy, layers)) => {
                let mut store = self.store();
                let tx = store.write()?;
                tx.set_meta(META_POLICY_TEXT, &layers.machine_text)?;
                if layers.central.is_none() {
                    tx.delete_meta(META_CENTRAL)?;
                }
                tx.commit()?;
                drop(store);
                self.apply(policy, layers, &source, None)
            }
            Err(why) => {
                self.audit(
                    self.draft(AuditKind::PolicyRefused, None)
                        .detail("source", &source)
                        .detail("why", policy_problems(&why))
                        .detail("kept", "policy in force"),
                )?;
                Ok(false)
            }
        }
    }

    /// A central policy from the collector: checked against the machine policy and the
    /// serial in force; applied and audited, or refused and audited (the policy in
    /// force stays).
    pub fn apply_central(&self, envelope: &str) -> Result<CentralOutcome, ServiceError> {
        let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let source = self.config.policy.display().to_string();
        // The highest serial ever applied, even when that policy is no longer in force
        // (its key was since removed): an older one must not come back by replay.
        let high_water = self.store().meta(META_CENTRAL_SERIAL)?.and_then(|v| v.parse::<u64>().ok());
        let newer_than = layers.central.as_ref().map(|c| c.serial).max(high_water);
        let checked = central::compose(&source, &layers.machine_text, None)
            .map_err(|e| e.to_string())
            .and_then(|machine| {
                let central = central::check(envelope, &machine, newer_than)?;
                let policy = central::compose(&source, &layers.machine_text, Some(&central))
                    .map_err(|e| e.to_string())?;
                Ok((policy, central))
            });
        match checked {
            Ok((policy, central)) => {
                let serial = central.serial;
                {
                    let store = self.store();
                    store.set_meta(META_CENTRAL, &central.envelope)?;
                    store.set_meta(META_CENTRAL_SERIAL, &serial.to_string())?;
                }
                let key_id = central.key_id.clone();
                let layers = Layers { machine_text: layers.machine_text, central: Some(central) };
                self.apply(
                    policy,
                    layers,
                    &format!("collector (serial {serial}, key {key_id})"),
                    Some(serial),
                )?;
                Ok(CentralOutcome::Applied { serial })
            }
            Err(why) => {
                self.audit(
                    self.draft(AuditKind::PolicyRefused, None)
                        .detail("source", "collector")
                        .detail("why", policy_problems(&why))
                        .detail("kept", "policy in force")
                        .detail("alert", "compliance"),
                )?;
                Ok(CentralOutcome::Refused { why })
            }
        }
    }

    /// Applies a directory snapshot from the collector (see `directory::apply_remote`);
    /// a user whose secret did not open is left alone and audited as tampering.
    pub fn apply_directory(
        &self,
        remote: &wardlock_core::protocol::collector::Directory,
    ) -> Result<directory::RemoteChanges, ServiceError> {
        let policy = self.policy();
        let transport = {
            let store = self.store();
            let sealed = store.meta("collector_transport_key")?.and_then(|h| hex::decode(h).ok());
            match sealed {
                Some(sealed) => self.key.open(&sealed, b"collector-transport-key")?,
                None => {
                    return Err(ServiceError::Startup(
                        "no transport key: enroll with the collector first".into(),
                    ))
                }
            }
        };
        let changes = {
            let mut store = self.store();
            directory::apply_remote(&mut store, &self.key, &policy, remote, &transport, utc_now())?
        };
        for (user, why) in &changes.rejected {
            self.audit(
                self.draft(AuditKind::TamperDetected, None)
                    .user(user)
                    .detail("what", format!("directory entry refused: {why}"))
                    .detail("alert", "compliance"),
            )?;
        }
        Ok(changes)
    }

    /// The envelope of the central policy in force, as received.
    pub fn central_envelope(&self) -> Option<String> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner()).central.as_ref().map(|c| c.envelope.clone())
    }

    /// The serial of the central policy in force, if any.
    pub fn central_serial(&self) -> Option<u64> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner()).central.as_ref().map(|c| c.serial)
    }

    fn apply(
        &self,
        policy: Policy,
        layers: Layers,
        source: &str,
        serial: Option<u64>,
    ) -> Result<bool, ServiceError> {
        *self.layers.lock().unwrap_or_else(|p| p.into_inner()) = layers;
        if policy == *self.policy() {
            return Ok(false);
        }
        let hash = policy.hash();
        let mut store = self.store();
        let mut tx = store.write()?;
        let mut d =
            AuditDraft::new(utc_now(), AuditKind::PolicyApplied).policy_hash(&hash).detail("source", source);
        if let Some(serial) = serial {
            d = d.detail("serial", serial);
        }
        tx.append(d)?;
        tx.set_meta(META_POLICY_HASH, &hash)?;
        tx.commit()?;
        drop(store);
        self.budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_rate(policy.service.max_attempts_per_minute, Instant::now());
        self.policy.send_replace(Arc::new(policy));
        Ok(true)
    }

    /// Audits the stop; after this the next start is not an unclean one.
    pub fn stop(&self, why: &str) -> Result<(), ServiceError> {
        let suppressed = self.budget.lock().unwrap_or_else(|p| p.into_inner()).take_suppressed();
        if suppressed > 0 {
            self.audit_suppressed(suppressed)?;
        }
        let mut store = self.store();
        let mut tx = store.write()?;
        tx.append(self.draft(AuditKind::ServiceStopped, None).detail("why", why))?;
        tx.set_meta(META_RUNNING, "0")?;
        tx.commit()?;
        Ok(())
    }
}

/// The machine policy text to start with, and why the file was refused when it was. A
/// bad file falls back to the last good one this service applied; with none, the
/// service does not start.
fn initial_policy(config: &ServiceConfig, store: &Store) -> Result<(String, Option<String>), ServiceError> {
    let path: &Path = &config.policy;
    let source = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !config.policy_required => {
            return Ok((String::new(), None));
        }
        Err(e) => return Err(ServiceError::Io { path: source, source: e }),
    };
    match central::compose(&source, &text, None) {
        Ok(_) => {
            store.set_meta(META_POLICY_TEXT, &text)?;
            Ok((text, None))
        }
        Err(error) => match store.meta(META_POLICY_TEXT)? {
            Some(last_good) => {
                central::compose("last good machine policy", &last_good, None)?;
                eprintln!("wardlockd: {error}\nwardlockd: keeping the last good machine policy");
                Ok((last_good, Some(policy_problems(&error.to_string()))))
            }
            None => Err(ServiceError::Startup(format!(
                "{error}\nFix the file (check it with `wardlockctl policy check {source}`) and start again; \
                 there is no earlier good policy to fall back to"
            ))),
        },
    }
}
