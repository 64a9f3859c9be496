//! The sync client's one way into the service: entries out, acknowledgements in, the
//! collector's answers (directory, central policy, used TOTP steps, conflicts) handed
//! over. It holds no store and no data key: the node key is sealed and opened here, and
//! every write is the service's, on the blocking pool.

use std::sync::Arc;

use tokio::sync::watch;
use zeroize::Zeroizing;

use wardlock_core::audit::{AuditEntry, AuditKind};
use wardlock_core::policy::ValidPolicy;
use wardlock_core::protocol::collector::{Directory, UsedTotpStep};
use wardlock_core::protocol::local::ServiceStatus;
use wardlock_store::directory::RemoteChanges;

use super::{utc_now, Blocking, CentralOutcome, CollectorContact, Service, ServiceError};

const META_NODE_KEY: &str = "collector_node_key";
const META_NODE_ENDPOINT: &str = "collector_node_endpoint";
const META_TRANSPORT_KEY: &str = "collector_transport_key";
const NODE_KEY_PURPOSE: &[u8] = b"collector-node-key";
const TRANSPORT_KEY_PURPOSE: &[u8] = b"collector-transport-key";

/// What the sync client may ask of the service.
#[derive(Debug, Clone)]
pub struct Outbox {
    service: Arc<Service>,
}

impl Service {
    pub fn outbox(self: &Arc<Self>) -> Outbox {
        Outbox { service: self.clone() }
    }
}

impl Outbox {
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Service, &Blocking) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let service = self.service.clone();
        super::blocking(move |b| f(&service, b)).await
    }

    pub fn policy(&self) -> Arc<ValidPolicy> {
        self.service.policy()
    }

    pub fn subscribe_policy(&self) -> watch::Receiver<Arc<ValidPolicy>> {
        self.service.subscribe_policy()
    }

    pub fn workstation_id(&self) -> &str {
        self.service.workstation_id()
    }

    /// Rung when something worth sending soon was audited.
    pub async fn wakeup(&self) {
        self.service.sync_wakeup.notified().await
    }

    pub async fn status(&self) -> Result<ServiceStatus, ServiceError> {
        self.service.status().await
    }

    /// What the last exchange with the collector came to, for `status`.
    pub fn set_contact(&self, contact: CollectorContact) {
        *self.service.collector.lock().unwrap_or_else(|p| p.into_inner()) = contact;
    }

    /// The last acknowledged seq and up to `limit` entries after it: the next batch.
    pub async fn next_batch(&self, limit: u32) -> Result<(u64, Vec<AuditEntry>), ServiceError> {
        self.run(move |s, b| {
            let store = s.store(b);
            let acked = store.acked_seq()?;
            Ok((acked, store.entries_after(acked, limit)?))
        })
        .await
    }

    /// The collector holds every entry up to `seq`.
    pub async fn acknowledged(&self, seq: u64) -> Result<(), ServiceError> {
        self.run(move |s, b| Ok(s.store(b).set_acked_seq(seq)?)).await
    }

    /// The node key this workstation was given by the collector at `endpoint`, if any.
    pub async fn node_key(&self, endpoint: &str) -> Result<Option<Zeroizing<String>>, ServiceError> {
        let endpoint = endpoint.to_owned();
        self.run(move |s, b| {
            let sealed = {
                let store = s.store(b);
                if store.meta(META_NODE_ENDPOINT)?.as_deref() != Some(endpoint.as_str()) {
                    return Ok(None);
                }
                store.meta(META_NODE_KEY)?
            };
            let opened = sealed
                .and_then(|hex_sealed| hex::decode(hex_sealed).ok())
                .and_then(|b| s.key.open(&b, NODE_KEY_PURPOSE).ok());
            Ok(opened.and_then(|bytes| String::from_utf8(bytes.to_vec()).ok()).map(Zeroizing::new))
        })
        .await
    }

    /// The collector's enrollment secret, from where the configuration says.
    pub async fn enroll_secret(&self) -> Result<Zeroizing<String>, String> {
        let path = self.service.config.enroll_secret.clone();
        let read =
            tokio::task::spawn_blocking(move || std::fs::read_to_string(&path).map_err(|e| (path, e))).await;
        match read {
            Ok(Ok(text)) => Ok(Zeroizing::new(text.trim().to_owned())),
            Ok(Err((path, e))) => {
                Err(format!("enrolling needs the collector's enrollment secret in {}: {e}", path.display()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Enrolled at `endpoint`: the node key and the transport key sealed and kept, audited.
    pub async fn enrolled(
        &self,
        endpoint: &str,
        node_key: Zeroizing<String>,
        transport_secret: Zeroizing<Vec<u8>>,
    ) -> Result<(), ServiceError> {
        let endpoint = endpoint.to_owned();
        self.run(move |s, b| {
            let sealed = s.key.seal(node_key.as_bytes(), NODE_KEY_PURPOSE)?;
            let transport = s.key.seal(&transport_secret[..], TRANSPORT_KEY_PURPOSE)?;
            {
                let store = s.store(b);
                store.set_meta(META_NODE_KEY, &hex::encode(sealed))?;
                store.set_meta(META_TRANSPORT_KEY, &hex::encode(transport))?;
                store.set_meta(META_NODE_ENDPOINT, &endpoint)?;
            }
            s.audit(b, s.draft(AuditKind::CollectorEnrolled, None).detail("endpoint", endpoint))?;
            Ok(())
        })
        .await
    }

    /// The collector refused the node key: the next cycle enrolls again.
    pub async fn forget_node_key(&self) -> Result<(), ServiceError> {
        self.run(|s, b| Ok(s.store(b).set_meta(META_NODE_ENDPOINT, "")?)).await
    }

    pub async fn apply_directory(&self, directory: Directory) -> Result<RemoteChanges, ServiceError> {
        self.run(move |s, b| s.apply_directory(b, &directory)).await
    }

    pub async fn used_elsewhere(&self, steps: Vec<UsedTotpStep>) -> Result<u32, ServiceError> {
        self.run(move |s, b| s.used_elsewhere(b, &steps)).await
    }

    pub async fn conflict(&self, seq: u64) -> Result<(), ServiceError> {
        self.run(move |s, b| s.collector_conflict(b, seq)).await
    }

    pub async fn chain_break(&self, seq: u64) -> Result<(), ServiceError> {
        self.run(move |s, b| s.collector_found_chain_break(b, seq).map(drop)).await
    }

    pub async fn backlog(&self, unsent: u64, threshold: u64) -> Result<(), ServiceError> {
        self.run(move |s, b| s.sync_backlog(b, unsent, threshold).map(drop)).await
    }

    pub async fn apply_central(&self, envelope: String) -> Result<CentralOutcome, ServiceError> {
        self.run(move |s, b| s.apply_central(b, &envelope)).await
    }

    /// The envelope of the central policy in force, as received, and its serial.
    pub fn central(&self) -> (Option<String>, Option<u64>) {
        (self.service.central_envelope(), self.service.central_serial())
    }
}

impl Service {
    /// Applies a directory snapshot from the collector (see `wardlock_store::directory::apply_remote`);
    /// a user whose secret did not open is left alone and audited as tampering.
    fn apply_directory(&self, b: &Blocking, remote: &Directory) -> Result<RemoteChanges, ServiceError> {
        let policy = self.policy();
        let transport = {
            let store = self.store(b);
            let sealed = store.meta(META_TRANSPORT_KEY)?.and_then(|h| hex::decode(h).ok());
            match sealed {
                Some(sealed) => self.key.open(&sealed, TRANSPORT_KEY_PURPOSE)?,
                None => {
                    return Err(ServiceError::Startup(
                        "no transport key: enroll with the collector first".into(),
                    ))
                }
            }
        };
        let changes = {
            let mut store = self.store(b);
            wardlock_store::directory::apply_remote(
                &mut store,
                &self.key,
                &policy,
                remote,
                &transport,
                utc_now(),
            )?
        };
        for (user, why) in &changes.admin_refused {
            self.audit(
                b,
                self.draft(AuditKind::AdminGrantRefused, None)
                    .user(user)
                    .detail("what", super::client_text(why))
                    .detail("alert", "compliance"),
            )?;
        }
        for user in &changes.local_kept {
            self.audit(
                b,
                self.draft(AuditKind::DirectoryConflict, None)
                    .user(user)
                    .detail("what", "a local user of this ID exists here; the directory's was not taken (an administrator decides: remove the local user to let the directory's in)")
                    .detail("alert", "it"),
            )?;
        }
        for (user, why) in &changes.rejected {
            self.audit(
                b,
                self.draft(AuditKind::TamperDetected, None)
                    .user(user)
                    .detail("what", format!("directory entry refused: {why}"))
                    .detail("alert", "compliance"),
            )?;
        }
        Ok(changes)
    }

    /// TOTP steps the collector says were used at other workstations: codes of those
    /// steps (and earlier) are refused here too. Only for users of this directory, and
    /// never a step beyond what the clock allows now (a collector cannot lock a user's
    /// codes out for good).
    fn used_elsewhere(&self, b: &Blocking, steps: &[UsedTotpStep]) -> Result<u32, ServiceError> {
        let policy = self.policy();
        let step_ms = (policy.totp.step.as_millis() as u64).max(1);
        let now_step = (utc_now().unix_millis().max(0) as u64) / step_ms;
        let latest = now_step + u64::from(policy.totp.skew_steps);
        let mut store = self.store(b);
        let tx = store.write()?;
        let mut taken = 0;
        for used in steps {
            let step = (used.at.unix_millis().max(0) as u64) / step_ms;
            if step > latest || tx.user(&used.user)?.is_none() {
                continue;
            }
            let mut state = tx.user_auth(&used.user)?;
            if state.last_totp_step.is_none_or(|last| last < step) {
                state.last_totp_step = Some(step);
                tx.save_user_auth(&used.user, &state)?;
                taken += 1;
            }
        }
        tx.commit()?;
        Ok(taken)
    }

    /// The collector holds another entry under `seq` than this log's: this one is not
    /// delivered. Recorded and audited once per seq.
    fn collector_conflict(&self, b: &Blocking, seq: u64) -> Result<(), ServiceError> {
        let (new, kind) = {
            let store = self.store(b);
            let new = store.record_conflict(seq, utc_now())?;
            let kind = store
                .entries_after(seq.saturating_sub(1), 1)?
                .into_iter()
                .find(|e| e.seq == seq)
                .map(|e| e.kind);
            (new, kind)
        };
        if new {
            tracing::warn!(
                event = "collector_conflict",
                seq,
                "the collector holds another entry under seq {seq}; this one is kept here, not delivered"
            );
            let mut draft = self
                .draft(AuditKind::CollectorConflict, None)
                .detail("seq", seq)
                .detail(
                    "what",
                    "the collector holds another entry under this seq; this one is kept here, not delivered",
                )
                .detail("alert", "it");
            if let Some(kind) = kind {
                draft = draft.detail("entry_kind", kind.as_str());
            }
            self.audit(b, draft)?;
        }
        Ok(())
    }

    /// The collector says this log's chain breaks at `seq`.
    fn collector_found_chain_break(&self, b: &Blocking, seq: u64) -> Result<u64, ServiceError> {
        self.audit(
            b,
            self.draft(AuditKind::SyncGap, None)
                .detail("what", "the collector found this log's chain broken")
                .detail("seq", seq)
                .detail("alert", "compliance"),
        )
    }

    /// The unsent backlog crossed the policy's threshold.
    fn sync_backlog(&self, b: &Blocking, unsent: u64, threshold: u64) -> Result<u64, ServiceError> {
        self.audit(
            b,
            self.draft(AuditKind::SyncBacklog, None)
                .detail("unsent", unsent)
                .detail("threshold", threshold)
                .detail("note", "entries are kept until the collector has them"),
        )
    }
}
