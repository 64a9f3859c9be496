//! Which machine a workstation's identity belongs to. The identity (its database with the
//! audit chain, the workstation ID, the node key the collector gave it) is made on one
//! machine; an image cloned onto another machine carries it along, and there it must not
//! be used: two machines would share one node key and one chain.

use sha2::{Digest, Sha256};

/// The machine's tag: a hash of its `/etc/machine-id`, which machine-id(5) asks
/// applications not to show as it is.
pub fn machine_tag(machine_id: &str) -> Option<String> {
    let id = machine_id.trim();
    // systemd's placeholder while a first boot has not yet committed an ID.
    if id.is_empty() || id == "uninitialized" {
        return None;
    }
    let digest = Sha256::digest(format!("wardlock-machine-identity\n{id}").as_bytes());
    Some(hex::encode(&digest[..16]))
}

/// What to do with the database at start, from the machine it was made on and this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityPlan {
    /// Made on this machine, or no machine ID to compare with.
    Keep,
    /// A database from before machines were recorded, or a new one: this machine's now.
    Record,
    /// Made on `previous`: set it aside, whole, and make a new identity here.
    Renew { previous: String },
}

pub fn plan(recorded: Option<&str>, this_machine: Option<&str>) -> IdentityPlan {
    match (recorded, this_machine) {
        (_, None) => IdentityPlan::Keep,
        (None, Some(_)) => IdentityPlan::Record,
        (Some(was), Some(now)) if was == now => IdentityPlan::Keep,
        (Some(was), Some(_)) => IdentityPlan::Renew { previous: was.to_owned() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_hides_the_id_and_an_unset_id_has_none() {
        let tag = machine_tag("4c4c4544003510368052b4c04f4e3632\n").unwrap();
        assert_eq!(tag.len(), 32);
        assert!(!tag.contains("4c4c4544"));
        assert_eq!(machine_tag("4c4c4544003510368052b4c04f4e3632"), Some(tag));
        assert_eq!(machine_tag(""), None);
        assert_eq!(machine_tag("uninitialized\n"), None);
    }

    #[test]
    fn only_another_machine_renews_the_identity() {
        assert_eq!(plan(Some("a"), Some("a")), IdentityPlan::Keep);
        assert_eq!(plan(None, Some("a")), IdentityPlan::Record);
        assert_eq!(plan(Some("a"), None), IdentityPlan::Keep);
        assert_eq!(plan(Some("a"), Some("b")), IdentityPlan::Renew { previous: "a".into() });
    }
}
