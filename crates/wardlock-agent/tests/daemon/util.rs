//! The shared harness (`wardlock-testkit`): a real `wardlockd` in `--dev` mode and a plain
//! socket client.

pub use wardlock_testkit::agent::*;
