//! The workstation service's library: everything `wardlockd` does with files and
//! secrets. The binary (added by the service issue) is a thin shell around it, and
//! `wardlockctl` uses it directly when run with the service account's rights.
//!
//! Architecture invariant: only this crate (and so only the service account) opens the
//! workstation database or the data key. The session guard never links it.

pub mod auth;
pub mod directory;
pub mod private_fs;
pub mod secrets;
pub mod store;

pub use store::{Store, StoreError};
