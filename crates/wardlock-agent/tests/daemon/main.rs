//! End-to-end tests of the real `wardlockd` binary over its real socket: unlocks,
//! lockouts across `kill -9`, TOTP by an independent implementation, enrollment,
//! supervision of the guard, OS-account separation and a fuzzing flood.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod access;
mod cli;
mod enroll;
mod fuzz;
mod installer;
mod logs;
mod protocol;
mod slow_directory;
mod supervision;
mod unlock;
mod upgrade;
mod util;
