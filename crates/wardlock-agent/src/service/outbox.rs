//! What the sync client reads and writes: the log to send, the collector's answers.

use wardlock_core::audit::AuditKind;

use super::{utc_now, Service, ServiceError};
use crate::secrets::DataKey;
use crate::store::{Store, StoreError};

impl Service {
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

    /// What the last exchange with the collector came to, for `status`.
    pub fn set_collector_contact(&self, contact: super::CollectorContact) {
        *self.collector.lock().unwrap_or_else(|p| p.into_inner()) = contact;
    }

    /// Applies a directory snapshot from the collector (see `super::directory::apply_remote`);
    /// a user whose secret did not open is left alone and audited as tampering.
    pub fn apply_directory(
        &self,
        remote: &wardlock_core::protocol::collector::Directory,
    ) -> Result<super::directory::RemoteChanges, ServiceError> {
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
            super::directory::apply_remote(&mut store, &self.key, &policy, remote, &transport, utc_now())?
        };
        for (user, why) in &changes.admin_refused {
            self.audit(
                self.draft(AuditKind::AdminGrantRefused, None)
                    .user(user)
                    .detail("what", super::client_text(why))
                    .detail("alert", "compliance"),
            )?;
        }
        for user in &changes.local_kept {
            self.audit(
                self.draft(AuditKind::DirectoryConflict, None)
                    .user(user)
                    .detail("what", "a local user of this ID exists here; the directory's was not taken (an administrator decides: remove the local user to let the directory's in)")
                    .detail("alert", "it"),
            )?;
        }
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

    /// TOTP steps the collector says were used at other workstations: codes of those
    /// steps (and earlier) are refused here too. Only for users of this directory, and
    /// never a step beyond what the clock allows now (a collector cannot lock a user's
    /// codes out for good).
    pub fn used_elsewhere(
        &self,
        steps: &[wardlock_core::protocol::collector::UsedTotpStep],
    ) -> Result<u32, ServiceError> {
        let policy = self.policy();
        let step_ms = (policy.totp.step.as_millis() as u64).max(1);
        let now_step = (utc_now().unix_millis().max(0) as u64) / step_ms;
        let latest = now_step + u64::from(policy.totp.skew_steps);
        let mut store = self.store();
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

    /// The workstation enrolled with the collector at `endpoint`.
    pub fn collector_enrolled(&self, endpoint: &str) -> Result<u64, ServiceError> {
        self.audit(self.draft(AuditKind::CollectorEnrolled, None).detail("endpoint", endpoint))
    }

    /// The collector holds another entry under `seq` than this log's: this one is not
    /// delivered. Recorded and audited once per seq.
    pub fn collector_conflict(&self, seq: u64) -> Result<(), ServiceError> {
        let (new, kind) = {
            let store = self.store();
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
            self.audit(draft)?;
        }
        Ok(())
    }

    /// The collector says this log's chain breaks at `seq`.
    pub fn collector_found_chain_break(&self, seq: u64) -> Result<u64, ServiceError> {
        self.audit(
            self.draft(AuditKind::SyncGap, None)
                .detail("what", "the collector found this log's chain broken")
                .detail("seq", seq)
                .detail("alert", "compliance"),
        )
    }

    /// The unsent backlog crossed the policy's threshold.
    pub fn sync_backlog(&self, unsent: u64, threshold: u64) -> Result<u64, ServiceError> {
        self.audit(
            self.draft(AuditKind::SyncBacklog, None)
                .detail("unsent", unsent)
                .detail("threshold", threshold)
                .detail("note", "entries are kept until the collector has them"),
        )
    }
}
