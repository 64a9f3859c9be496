//! Integration tests of the workstation library against real files, a real SQLite
//! database, real key stores and real processes.

mod crash;
mod secrets;
mod store;
mod unlock;
mod util;
