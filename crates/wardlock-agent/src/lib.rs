//! The workstation service `wardlockd`: its store and secrets (`store`, `secrets`),
//! the running service and every decision it makes (`service`, with its unlock
//! decisions `service::auth` and users `service::directory`) and its local socket
//! (`server`). The binary is a thin shell around it, and `wardlockctl`
//! uses the store directly when run with the service account's rights.
//!
//! Architecture invariant: only this crate (and so only the service account) opens the
//! workstation database or the data key. The session guard never links it.

pub mod central;
pub mod config;
pub mod os_session;
pub mod peer;
pub mod private_fs;
pub mod secrets;
#[cfg(unix)]
pub mod server;
pub mod service;
pub mod store;
#[cfg(unix)]
pub mod sync;
pub mod throttle;

pub use store::{Store, StoreError};
