//! The workstation's identity belongs to the machine it was made on (`wardlock_core::identity`).
//! At start the database's machine is compared with `/etc/machine-id`; a database made on
//! another machine (a cloned image) is set aside whole and a new one begun, whose first
//! entry says so. The next sync then enrolls this machine as a workstation of its own.

use std::path::{Path, PathBuf};

use wardlock_core::identity::{self, IdentityPlan};
use wardlock_store::store::{OpenOptions, Store, StoreError};

const META_MACHINE: &str = "machine_identity";

/// A database set aside because it was made on another machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    pub machine: String,
    pub previous_machine: String,
    pub image_database: PathBuf,
    pub image_entries: u64,
    pub image_workstation: String,
}

/// This machine's tag; `None` (and a warning) when the file cannot say.
pub fn this_machine(machine_id_file: &Path) -> Option<String> {
    match std::fs::read_to_string(machine_id_file) {
        Ok(text) => identity::machine_tag(&text),
        Err(e) => {
            tracing::warn!(
                event = "machine_id_unreadable",
                file = %machine_id_file.display(),
                error = %e,
                "cannot read {}: a database cloned from another machine would not be noticed",
                machine_id_file.display()
            );
            None
        }
    }
}

/// Opens the database for this machine: as it is, or new after setting aside one made on
/// another machine.
pub fn open_for_this_machine(
    db: &Path,
    options: &OpenOptions,
    machine: Option<&str>,
) -> Result<(Store, Option<Renewed>), StoreError> {
    let store = Store::open(db, options)?;
    let recorded = store.meta(META_MACHINE)?;
    match identity::plan(recorded.as_deref(), machine) {
        IdentityPlan::Keep => Ok((store, None)),
        IdentityPlan::Record => {
            store.set_meta(META_MACHINE, machine.unwrap_or_default())?;
            Ok((store, None))
        }
        IdentityPlan::Renew { previous } => {
            let machine = machine.unwrap_or_default().to_owned();
            let image_entries = store.last_seq()?;
            let image_workstation = store.workstation_id().to_owned();
            let base = format!(
                "{}.from-machine-{}",
                db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                &previous[..previous.len().min(12)]
            );
            // A machine ID that went back and forth leaves one database per change.
            let name = (1..)
                .map(|n| if n == 1 { base.clone() } else { format!("{base}.{n}") })
                .find(|name| !db.with_file_name(name).exists())
                .unwrap_or(base);
            let image_database = store.set_aside(&name)?;
            let store = Store::open(db, options)?;
            store.set_meta(META_MACHINE, &machine)?;
            tracing::warn!(
                event = "workstation_identity_made",
                image_database = %image_database.display(),
                "this database was made on another machine (a cloned image): kept as {} and a new identity made",
                image_database.display()
            );
            Ok((
                store,
                Some(Renewed {
                    machine,
                    previous_machine: previous,
                    image_database,
                    image_entries,
                    image_workstation,
                }),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_from_another_machine_is_kept_whole_and_a_new_one_begun() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wardlock.db");
        let options = |id: &str| OpenOptions { create: true, workstation_id: id.into() };
        let (mut store, renewed) = open_for_this_machine(&db, &options("image"), Some("aaaa")).unwrap();
        assert!(renewed.is_none());
        store
            .append(wardlock_core::audit::AuditDraft::new(
                wardlock_core::clock::UtcMillis::from_unix_millis(1),
                wardlock_core::audit::AuditKind::ServiceStarted,
            ))
            .unwrap();
        drop(store);
        let (store, renewed) = open_for_this_machine(&db, &options("image"), Some("aaaa")).unwrap();
        assert!(renewed.is_none(), "same machine");
        drop(store);

        let (store, renewed) = open_for_this_machine(&db, &options("clone"), Some("bbbb")).unwrap();
        let renewed = renewed.expect("another machine");
        assert_eq!(renewed.previous_machine, "aaaa");
        assert_eq!(renewed.image_entries, 1);
        assert_eq!(renewed.image_workstation, "image");
        assert_eq!(store.last_seq().unwrap(), 0, "a new chain");
        assert_eq!(store.workstation_id(), "clone");
        let kept = Store::open(
            &renewed.image_database,
            &OpenOptions { create: false, workstation_id: String::new() },
        )
        .unwrap();
        assert_eq!(kept.verify_audit().unwrap().entries, 1, "the image's chain, whole");
    }
}
