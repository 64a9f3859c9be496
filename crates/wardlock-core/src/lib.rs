//! Wardlock's pure logic.
//!
//! Architecture invariant: this crate does no IO (no files, sockets, clocks, threads or
//! randomness of its own). Time and randomness come in as arguments; state that must
//! survive a restart goes out as return values for the caller to persist. Everything here
//! is therefore testable without a display, a database or a network.

pub mod audit;
pub mod charts;
pub mod clock;
pub mod console;
pub mod identity;
pub mod lock;
pub mod phi;
pub mod policy;
pub mod protocol;
pub mod sealing;
pub mod secret;
pub mod supervision;
pub mod transport;
pub mod unlock;
