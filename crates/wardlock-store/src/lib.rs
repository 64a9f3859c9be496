//! The workstation's database and secrets: the hash-chained audit log (`store`), the
//! data key and where it lives (`secrets`), users and their sealed credentials
//! (`directory`), the unlock check against them (`auth`), files only the service
//! account may read (`private_fs`), and the machine policy's files (`machine_policy`).
//!
//! Boundary: this is the only crate that opens the workstation database or the data
//! key, and so the only one that writes audit entries. `wardlockd` links it (and keeps it
//! from its network-facing sync client behind an outbox), and `wardlockctl` links it for
//! IT run with the service account's rights. The session guard never does.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "the workstation store is built for Linux only so far (README: Windows and macOS are not built yet)"
);

pub mod auth;
pub mod directory;
pub mod machine_policy;
pub mod private_fs;
pub mod secrets;
pub mod store;

pub use store::{Store, StoreError};

/// Now, on the wall clock, as the audit log and lockouts count time.
pub fn utc_now() -> wardlock_core::clock::UtcMillis {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    wardlock_core::clock::UtcMillis::from_unix_millis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}
