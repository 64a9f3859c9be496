//! `wardlockctl` as an administrator runs it: a real binary, real files, real tools.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod agent;
mod audit;
mod policy;
mod server;
mod user;
mod util;
