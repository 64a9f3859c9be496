//! Integration tests of the workstation library against real files, a real SQLite
//! database, real key stores and real processes.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod crash;
mod secrets;
mod store;
mod unlock;
mod util;
