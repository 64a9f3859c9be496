//! The collector as it ships, end to end: real `wardlock-collector` processes over TLS on
//! loopback, on SQLite and on throwaway PostgreSQL clusters, with real `wardlockd`
//! workstations syncing to them (`wardlock-testkit`).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod contract;
mod strangers;
mod sync;
