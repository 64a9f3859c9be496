//! The central policy layer: a signed envelope from the collector, accepted only when
//! one of the machine policy's `sync.trusted_keys` signed it, it is for this
//! workstation's group, its serial is newer than the one in force, and it is a valid
//! central layer over the machine policy.

use wardlock_core::policy::{
    parse_public_key, Layer, Policy, PolicyDocument, PolicyError, SignedPolicy, ValidPolicy,
};
use wardlock_store::machine_policy::MachinePolicy;

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

/// The effective policy: the service's base layer (`--dev`'s), the machine files, then
/// the central layer over them.
pub fn compose(
    base: Option<&str>,
    machine: &MachinePolicy,
    central: Option<&Central>,
) -> Result<ValidPolicy, PolicyError> {
    let mut docs = Vec::new();
    if let Some(base) = base {
        docs.push(PolicyDocument::parse("development defaults (--dev)", Layer::Machine, base)?);
    }
    for doc in &machine.documents {
        docs.push(PolicyDocument::parse(&doc.source, Layer::Machine, &doc.text)?);
    }
    if let Some(c) = central {
        docs.push(PolicyDocument::parse(&c.source_name(), Layer::Central, &c.text)?);
    }
    Policy::layered(&docs)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use wardlock_core::clock::UtcMillis;
    use wardlock_core::policy::{public_key_pem, SignedPolicyBody};

    use super::*;

    fn envelope(key: &SigningKey, serial: u64, group: &str) -> String {
        let body = SignedPolicyBody {
            serial,
            issued_at: UtcMillis::from_unix_millis(1_795_000_000_000),
            group: Some(group.into()),
            policy: "[lock]\nidle_timeout = \"2m\"\n".into(),
        };
        SignedPolicy::sign(&body, key).to_json()
    }

    #[test]
    fn only_a_newer_policy_for_this_group_signed_by_a_trusted_key_passes() {
        let key = SigningKey::from_bytes(&[21; 32]);
        let mut machine = Policy::default();
        assert!(check(&envelope(&key, 5, "default"), &machine, None).unwrap_err().contains("trusted_keys"));
        machine.sync.trusted_keys = vec![public_key_pem(&key.verifying_key())];

        assert_eq!(check(&envelope(&key, 5, "default"), &machine, Some(4)).unwrap().serial, 5);
        let replay = check(&envelope(&key, 4, "default"), &machine, Some(5)).unwrap_err();
        assert!(replay.contains("not newer"), "{replay}");
        assert!(check(&envelope(&key, 5, "default"), &machine, Some(5)).is_err(), "the same serial again");
        let other_group = check(&envelope(&key, 6, "icu"), &machine, Some(5)).unwrap_err();
        assert!(other_group.contains("group"), "{other_group}");
        let stranger = SigningKey::from_bytes(&[22; 32]);
        assert!(check(&envelope(&stranger, 9, "default"), &machine, None).is_err());
    }
}
