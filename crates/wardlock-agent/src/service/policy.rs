//! The policy in force: the machine file, the signed central layer, and the last good
//! one kept when a new one is refused.

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
use wardlock_store::machine_policy::MachinePolicy;
use wardlock_store::store::Store;

impl Service {
    /// Reads the machine policy file again. A bad one is refused and audited and the
    /// policy in force stays; a good, changed one is applied, audited and pushed.
    pub fn reload_policy(&self, b: &Blocking) -> Result<bool, ServiceError> {
        let read = MachinePolicy::read(&self.config.policy, self.config.policy_required);
        let source =
            read.as_ref().map_or_else(|_| self.config.policy.display().to_string(), |m| m.source_name());
        let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let base = self.config.base_policy.as_deref();
        let composed = read.and_then(|machine| {
            let alone = central::compose(base, &machine, None).map_err(|e| e.to_string())?;
            // Keep the central layer only while the new machine policy still trusts it.
            let central = layers.central.and_then(|c| central::check(&c.envelope, &alone, None).ok());
            let policy = central::compose(base, &machine, central.as_ref()).map_err(|e| e.to_string())?;
            Ok((policy, Layers { machine, central }))
        });
        match composed {
            Ok((policy, layers)) => {
                let mut store = self.store(b);
                let tx = store.write()?;
                tx.set_meta(META_POLICY_TEXT, &layers.machine.to_stored())?;
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
        // The highest serial ever applied, even when that policy is no longer in force
        // (its key was since removed): an older one must not come back by replay.
        let high_water = self.store(b).meta(META_CENTRAL_SERIAL)?.and_then(|v| v.parse::<u64>().ok());
        let newer_than = layers.central.as_ref().map(|c| c.serial).max(high_water);
        let base = self.config.base_policy.as_deref();
        let checked =
            central::compose(base, &layers.machine, None).map_err(|e| e.to_string()).and_then(|machine| {
                let central = central::check(envelope, &machine, newer_than)?;
                let policy =
                    central::compose(base, &layers.machine, Some(&central)).map_err(|e| e.to_string())?;
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
                let layers = Layers { machine: layers.machine, central: Some(central) };
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

/// The machine policy files to start with, and why they were refused when they were. A
/// bad set falls back to the last good one this service applied; with none, the service
/// does not start.
pub(super) fn initial_policy(
    config: &ServiceConfig,
    store: &Store,
) -> Result<(MachinePolicy, Option<String>), ServiceError> {
    let base = config.base_policy.as_deref();
    let error = match MachinePolicy::read(&config.policy, config.policy_required) {
        Ok(machine) => match central::compose(base, &machine, None) {
            Ok(_) => {
                store.set_meta(META_POLICY_TEXT, &machine.to_stored())?;
                return Ok((machine, None));
            }
            Err(e) => e.to_string(),
        },
        Err(e) => e,
    };
    match store.meta(META_POLICY_TEXT)? {
        Some(last_good) => {
            let last_good = MachinePolicy::from_stored(&last_good);
            central::compose(base, &last_good, None)?;
            tracing::warn!(event = "policy_refused", error = %error, "{error}; keeping the last good machine policy");
            Ok((last_good, Some(policy_problems(&error))))
        }
        None => Err(ServiceError::Startup(format!(
            "{error}\nFix the files (check them with `wardlockctl policy check {}`) and start again; \
             there is no earlier good policy to fall back to",
            config.policy.display()
        ))),
    }
}
