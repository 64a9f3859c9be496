//! The state of a running `wardlockd` and every decision it makes, apart from the
//! socket. Methods here block (SQLite, Argon2); the server calls them off the async
//! threads. Each one that changes something audits it in the same transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use zeroize::Zeroizing;

use wardlock_core::audit::{AuditDraft, AuditKind};
use wardlock_core::policy::{PolicyError, ValidPolicy};
use wardlock_core::protocol::local::{ClientRole, ServiceStatus};
use wardlock_core::supervision::Supervision;

use crate::central::{self, Central};
use crate::config::ServiceConfig;
use crate::os_session::OsSessions;
use crate::peer::Peer;
use crate::throttle::AttemptBudgets;
pub use enroll::Enrollment;
pub use guards::GuardRefusal;
pub use outbox::Outbox;
pub use requests::{Answer, Client};
pub use supervisor::SessionView;
use wardlock_store::auth::AuthError;
use wardlock_store::directory::{self, DirectoryError};
use wardlock_store::machine_policy::MachinePolicy;
use wardlock_store::secrets::{self, DataKey, SecretError};
use wardlock_store::store::{OpenOptions, Store, StoreError};

mod enroll;
mod guards;
mod outbox;
mod policy;
pub mod requests;
mod supervisor;
mod unlock;

const META_RUNNING: &str = "service_running";
const META_POLICY_TEXT: &str = "machine_policy_last_good";
const META_POLICY_HASH: &str = "policy_hash_applied";
const META_CENTRAL: &str = "central_policy_envelope";
const META_CENTRAL_SERIAL: &str = "central_policy_serial_high_water";

#[derive(Debug, Clone, Default)]
struct Layers {
    machine: MachinePolicy,
    central: Option<Central>,
}

/// What the last exchange with the collector came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectorContact {
    /// No collector configured, or not tried yet.
    None,
    Reachable,
    /// Reachable, and over its quota: asked to wait.
    Throttled {
        retry_after_secs: u64,
    },
    Failed {
        error: String,
    },
}

impl CollectorContact {
    fn reachable(&self) -> Option<bool> {
        match self {
            CollectorContact::None => None,
            CollectorContact::Reachable | CollectorContact::Throttled { .. } => Some(true),
            CollectorContact::Failed { .. } => Some(false),
        }
    }
}

/// What became of a central policy from the collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CentralOutcome {
    Applied { serial: u64 },
    Refused { why: String },
}
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
    #[error("{0}")]
    Startup(String),
    /// The request is not for this client (its role, or what policy lets tools do).
    #[error("{0}")]
    NotAllowed(String),
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

/// The running service. Each lock below is held for one short step and never while
/// another is taken; what changes together per session is the supervisor's alone.
#[derive(Debug)]
pub struct Service {
    store: Mutex<Store>,
    key: DataKey,
    config: ServiceConfig,
    /// The workstation's ID as the database holds it.
    workstation_id: String,
    policy: watch::Sender<Arc<ValidPolicy>>,
    /// The layers the policy in force is made of.
    layers: Mutex<Layers>,
    /// Attempts considered per minute: the admitted guards' and the other clients'.
    budgets: Mutex<AttemptBudgets>,
    /// What the last exchange with the collector came to.
    collector: Mutex<CollectorContact>,
    /// Rung when something worth sending soon was audited.
    pub sync_wakeup: tokio::sync::Notify,
    /// How fast each OS account starts guards, and its impostors: a process in the
    /// session posing as guards must not flood the audit log.
    guard_accounts: Mutex<HashMap<u32, guards::GuardAccount>>,
    pub sessions: Box<dyn OsSessions>,
    /// The one owner of who guards which session, what is locked, and escalations.
    supervisor: supervisor::Supervisor,
}

pub use wardlock_store::utc_now;

/// Proof that the code holding it runs on the blocking pool: only [`blocking`] makes
/// one, and lends it to its closure. The store and every method that blocks (SQLite,
/// Argon2, `/proc`, NSS) take it, so async code cannot reach them by accident.
#[derive(Debug)]
pub struct Blocking(());

/// Runs `f` on the blocking pool with the proof that it does.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce(&Blocking) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(move || f(&Blocking(())))
        .await
        .map_err(|e| ServiceError::Worker(e.to_string()))?
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
    pub fn start(
        _on: &Blocking,
        config: ServiceConfig,
        sessions: Box<dyn OsSessions>,
    ) -> Result<Arc<Service>, ServiceError> {
        let options = OpenOptions { create: true, workstation_id: config.workstation_id.clone() };
        let machine = crate::identity::this_machine(&config.machine_id_file);
        let (mut store, renewed) =
            crate::identity::open_for_this_machine(&config.db_path(), &options, machine.as_deref())?;
        // Entries may follow from now on: an earlier clearance to purge no longer holds.
        match std::fs::remove_file(store.purge_clearance()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ServiceError::Startup(format!(
                    "cannot withdraw {}: {e}",
                    store.purge_clearance().display()
                )))
            }
            _ => {}
        }
        let secret_store = secrets::from_spec(&config.key_store)?;
        let key = DataKey::open_or_create(secret_store.as_ref(), &store)?;
        let now = utc_now();

        let (machine_files, refusal) = policy::initial_policy(&config, &store)?;
        let source = machine_files.source_name();
        let machine = central::compose(config.base_policy.as_deref(), &machine_files, None)?;
        // The central layer applied before, checked again: the trusted keys may have changed.
        let (central, central_refusal) = match store.meta(META_CENTRAL)? {
            None => (None, None),
            Some(envelope) => match central::check(&envelope, &machine, None).and_then(|c| {
                central::compose(config.base_policy.as_deref(), &machine_files, Some(&c))
                    .map(|_| c)
                    .map_err(|e| e.to_string())
            }) {
                Ok(c) => (Some(c), None),
                Err(why) => (None, Some(why)),
            },
        };
        let policy = central::compose(config.base_policy.as_deref(), &machine_files, central.as_ref())?;
        let hash = policy.hash();
        let mut tx = store.write()?;
        if let Some(r) = renewed {
            tx.append(
                AuditDraft::new(now, AuditKind::WorkstationIdentityMade)
                    .policy_hash(&hash)
                    .detail("machine", r.machine)
                    .detail("previous_machine", r.previous_machine)
                    .detail("image_database", r.image_database.display())
                    .detail("image_entries", r.image_entries)
                    .detail("image_workstation", r.image_workstation),
            )?;
        }
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
        tx.commit()?;
        // A database of an earlier release: its PIN hashes are sealed before any unlock.
        let resealed = directory::seal_plain_pin_hashes(&mut store, &key, &policy, now)?;
        if resealed > 0 {
            tracing::info!(
                event = "pin_hashes_sealed",
                users = resealed,
                "sealed the PIN hashes of {resealed} users with the data key"
            );
        }
        let mut tx = store.write()?;
        tx.append(
            AuditDraft::new(now, AuditKind::ServiceStarted)
                .policy_hash(&hash)
                .detail("version", env!("CARGO_PKG_VERSION"))
                .detail("pid", std::process::id()),
        )?;
        tx.set_meta(META_RUNNING, "1")?;
        tx.commit()?;

        let budgets = AttemptBudgets::new(policy.service.max_attempts_per_minute, Instant::now());
        let locked_accounts = store
            .meta_with_prefix(supervisor::META_SESSION_LOCKED)?
            .into_iter()
            .filter(|(_, locked)| locked == "1")
            .map(|(account, _)| account);
        let supervisor = supervisor::Supervisor::new(Supervision::new(locked_accounts));
        Ok(Arc::new(Service {
            workstation_id: store.workstation_id().to_owned(),
            store: Mutex::new(store),
            key,
            config,
            policy: watch::Sender::new(Arc::new(policy)),
            layers: Mutex::new(Layers { machine: machine_files, central }),
            budgets: Mutex::new(budgets),
            collector: Mutex::new(CollectorContact::None),
            sync_wakeup: tokio::sync::Notify::new(),
            guard_accounts: Mutex::new(HashMap::new()),
            sessions,
            supervisor,
        }))
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    pub fn workstation_id(&self) -> &str {
        &self.workstation_id
    }

    pub fn policy(&self) -> Arc<ValidPolicy> {
        self.policy.borrow().clone()
    }

    pub fn subscribe_policy(&self) -> watch::Receiver<Arc<ValidPolicy>> {
        self.policy.subscribe()
    }

    fn store(&self, _on: &Blocking) -> MutexGuard<'_, Store> {
        // A panic while holding the lock left no half transaction behind (SQLite rolled
        // it back), so the store is still usable.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn draft(&self, kind: AuditKind, peer: Option<&Peer>) -> AuditDraft {
        AuditDraft::new(utc_now(), kind)
            .os_account(peer.map(|p| p.account.clone()))
            .policy_hash(self.policy().hash())
    }

    fn audit(&self, b: &Blocking, draft: AuditDraft) -> Result<u64, ServiceError> {
        let seq = self.store(b).append(draft)?.seq;
        self.sync_wakeup.notify_one();
        Ok(seq)
    }

    /// The service's state as `status` answers it: the supervisor's counts, the audit
    /// log's from the store (on the blocking pool).
    pub async fn status(self: &Arc<Self>) -> Result<ServiceStatus, ServiceError> {
        let view = self.supervisor.view("").await?;
        let service = self.clone();
        blocking(move |b| {
            let policy = service.policy();
            let (last, acked) = {
                let store = service.store(b);
                (store.last_seq()?, store.acked_seq()?)
            };
            let unsent = last.saturating_sub(acked);
            let contact = service.collector.lock().unwrap_or_else(|p| p.into_inner()).clone();
            Ok(ServiceStatus {
                workstation_id: service.workstation_id.clone(),
                policy_hash: policy.hash(),
                audit_last_seq: last,
                audit_unsent: unsent,
                backlog_warning: policy.sync.endpoint.is_some() && unsent > policy.sync.backlog_warning,
                collector_reachable: contact.reachable(),
                collector_error: match &contact {
                    CollectorContact::Failed { error } => Some(error.clone()),
                    _ => None,
                },
                collector_retry_after_secs: match contact {
                    CollectorContact::Throttled { retry_after_secs } => Some(retry_after_secs),
                    _ => None,
                },
                guards_connected: view.guards_connected,
                ptrace_scope: guards::ptrace_scope(),
                escalations_active: view.escalations_active,
            })
        })
        .await
    }

    /// Audits the stop; after this the next start is not an unclean one.
    pub fn stop(&self, b: &Blocking, why: &str) -> Result<(), ServiceError> {
        for role in [ClientRole::Guard, ClientRole::Tool] {
            let suppressed =
                self.budgets.lock().unwrap_or_else(|p| p.into_inner()).of(role).take_suppressed();
            if suppressed > 0 {
                self.audit_suppressed(b, role, suppressed)?;
            }
        }
        let mut store = self.store(b);
        let mut tx = store.write()?;
        tx.append(self.draft(AuditKind::ServiceStopped, None).detail("why", why))?;
        tx.set_meta(META_RUNNING, "0")?;
        tx.commit()?;
        Ok(())
    }
}
