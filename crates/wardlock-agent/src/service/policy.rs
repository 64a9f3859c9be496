//! The policy in force: the machine file, the signed central layer, and the last good
//! one kept when a new one is refused.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use wardlock_core::audit::{AuditDraft, AuditKind};
use wardlock_core::policy::ValidPolicy;

use super::{
    policy_problems, utc_now, Blocking, CentralOutcome, Layers, Service, ServiceError, META_CENTRAL,
    META_CENTRAL_SERIAL, META_POLICY_HASH, META_POLICY_TEXT,
};
use crate::central;
use crate::config::ServiceConfig;
use wardlock_store::store::Store;

impl Service {
    /// Reads the machine policy file again. A bad one is refused and audited and the
    /// policy in force stays; a good, changed one is applied, audited and pushed.
    pub fn reload_policy(&self, b: &Blocking) -> Result<bool, ServiceError> {
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
            let machine = central::compose(self.config.base_policy.as_deref(), &source, &text, None)
                .map_err(|e| e.to_string())?;
            // Keep the central layer only while the new machine policy still trusts it.
            let central = layers.central.and_then(|c| central::check(&c.envelope, &machine, None).ok());
            let policy =
                central::compose(self.config.base_policy.as_deref(), &source, &text, central.as_ref())
                    .map_err(|e| e.to_string())?;
            Ok((policy, Layers { machine_text: text, central }))
        });
        match composed {
            Ok((policy, layers)) => {
                let mut store = self.store(b);
                let tx = store.write()?;
                tx.set_meta(META_POLICY_TEXT, &layers.machine_text)?;
                if layers.central.is_none() {
                    tx.delete_meta(META_CENTRAL)?;
                }
                tx.commit()?;
                drop(store);
                self.apply(b, policy, layers, &source, None)
            }
            Err(why) => {
                self.audit(
                    b,
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
    pub fn apply_central(&self, b: &Blocking, envelope: &str) -> Result<CentralOutcome, ServiceError> {
        let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let source = self.config.policy.display().to_string();
        // The highest serial ever applied, even when that policy is no longer in force
        // (its key was since removed): an older one must not come back by replay.
        let high_water = self.store(b).meta(META_CENTRAL_SERIAL)?.and_then(|v| v.parse::<u64>().ok());
        let newer_than = layers.central.as_ref().map(|c| c.serial).max(high_water);
        let checked =
            central::compose(self.config.base_policy.as_deref(), &source, &layers.machine_text, None)
                .map_err(|e| e.to_string())
                .and_then(|machine| {
                    let central = central::check(envelope, &machine, newer_than)?;
                    let policy = central::compose(
                        self.config.base_policy.as_deref(),
                        &source,
                        &layers.machine_text,
                        Some(&central),
                    )
                    .map_err(|e| e.to_string())?;
                    Ok((policy, central))
                });
        match checked {
            Ok((policy, central)) => {
                let serial = central.serial;
                {
                    let store = self.store(b);
                    store.set_meta(META_CENTRAL, &central.envelope)?;
                    store.set_meta(META_CENTRAL_SERIAL, &serial.to_string())?;
                }
                let key_id = central.key_id.clone();
                let layers = Layers { machine_text: layers.machine_text, central: Some(central) };
                self.apply(
                    b,
                    policy,
                    layers,
                    &format!("collector (serial {serial}, key {key_id})"),
                    Some(serial),
                )?;
                Ok(CentralOutcome::Applied { serial })
            }
            Err(why) => {
                self.audit(
                    b,
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
        b: &Blocking,
        policy: ValidPolicy,
        layers: Layers,
        source: &str,
        serial: Option<u64>,
    ) -> Result<bool, ServiceError> {
        *self.layers.lock().unwrap_or_else(|p| p.into_inner()) = layers;
        if policy == *self.policy() {
            return Ok(false);
        }
        let hash = policy.hash();
        let mut store = self.store(b);
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
        self.budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_rate(policy.service.max_attempts_per_minute, Instant::now());
        self.policy.send_replace(Arc::new(policy));
        Ok(true)
    }
}

/// The machine policy text to start with, and why the file was refused when it was. A
/// bad file falls back to the last good one this service applied; with none, the
/// service does not start.
pub(super) fn initial_policy(
    config: &ServiceConfig,
    store: &Store,
) -> Result<(String, Option<String>), ServiceError> {
    let path: &Path = &config.policy;
    let source = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !config.policy_required => {
            return Ok((String::new(), None));
        }
        Err(e) => return Err(ServiceError::Io { path: source, source: e }),
    };
    match central::compose(config.base_policy.as_deref(), &source, &text, None) {
        Ok(_) => {
            store.set_meta(META_POLICY_TEXT, &text)?;
            Ok((text, None))
        }
        Err(error) => match store.meta(META_POLICY_TEXT)? {
            Some(last_good) => {
                central::compose(
                    config.base_policy.as_deref(),
                    "last good machine policy",
                    &last_good,
                    None,
                )?;
                tracing::warn!(event = "policy_refused", error = %error, "{error}; keeping the last good machine policy");
                Ok((last_good, Some(policy_problems(&error.to_string()))))
            }
            None => Err(ServiceError::Startup(format!(
                "{error}\nFix the file (check it with `wardlockctl policy check {source}`) and start again; \
                 there is no earlier good policy to fall back to"
            ))),
        },
    }
}
