//! What the integration tests of several crates share: a real `wardlockd` (`agent`), a
//! real `wardlock-collector` and throwaway PostgreSQL clusters (`collector`). Every piece
//! runs the workspace's built binaries as the product ships them; nothing is mocked.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

pub mod agent;
pub mod collector;

use std::path::PathBuf;

/// A binary of the workspace. Test binaries live in `target/<profile>/deps`, the
/// workspace's binaries one directory up (`cargo test --workspace` builds them all first;
/// `make test` runs `cargo build --workspace --bins` before).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (or `make test`)",
        path.display()
    );
    path
}
