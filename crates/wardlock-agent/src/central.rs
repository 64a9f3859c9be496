//! The central policy layer: a signed envelope from the collector, accepted only when
//! one of the machine policy's `sync.trusted_keys` signed it, it is for this
//! workstation's group, its serial is newer than the one in force, and it is a valid
//! central layer over the machine policy.

use wardlock_core::policy::{parse_public_key, Layer, Policy, PolicyDocument, PolicyError, SignedPolicy};

/// A central policy that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Central {
    pub serial: u64,
    pub key_id: String,
    /// The policy document (TOML) the envelope carries.
    pub text: String,
    /// The envelope as received, kept to check it again at the next start.
    pub envelope: String,
}

impl Central {
    pub fn source_name(&self) -> String {
        format!("central policy (serial {})", self.serial)
    }
}

/// Checks an envelope against the machine policy. `newer_than`: the serial in force,
/// which a replayed or stale policy does not beat.
pub fn check(envelope: &str, machine: &Policy, newer_than: Option<u64>) -> Result<Central, String> {
    let signed = SignedPolicy::from_json(envelope).map_err(|e| e.to_string())?;
    if machine.sync.trusted_keys.is_empty() {
        return Err(
            "no key is trusted to sign central policies: set sync.trusted_keys in the machine policy".into(),
        );
    }
    let trusted = machine
        .sync
        .trusted_keys
        .iter()
        .map(|k| parse_public_key(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sync.trusted_keys: {e}"))?;
    let body = signed.verify(&trusted).map_err(|e| e.to_string())?;
    if let Some(group) = body.group.as_deref().filter(|g| *g != machine.workstation.group) {
        return Err(format!(
            "signed for group {group:?}, but this workstation is in {:?}",
            machine.workstation.group
        ));
    }
    if let Some(current) = newer_than.filter(|c| body.serial <= *c) {
        return Err(format!(
            "serial {} is not newer than the policy in force (serial {current}): a replay or a stale policy",
            body.serial
        ));
    }
    let central = Central {
        serial: body.serial,
        key_id: signed.key_id,
        text: body.policy,
        envelope: envelope.to_owned(),
    };
    PolicyDocument::parse(&central.source_name(), Layer::Central, &central.text)
        .map_err(|e| e.to_string())?;
    Ok(central)
}

/// The effective policy: the machine file, then the central layer over it.
pub fn compose(
    machine_source: &str,
    machine_text: &str,
    central: Option<&Central>,
) -> Result<Policy, PolicyError> {
    let mut docs = vec![PolicyDocument::parse(machine_source, Layer::Machine, machine_text)?];
    if let Some(c) = central {
        docs.push(PolicyDocument::parse(&c.source_name(), Layer::Central, &c.text)?);
    }
    Policy::layered(&docs)
}
