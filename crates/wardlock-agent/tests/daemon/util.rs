//! The shared harness (`wardlock-testkit`): a real `wardlockd` in `--dev` mode and a plain
//! socket client.

pub use wardlock_testkit::agent::*;

/// Whether this test runs as root, which `needs` root for. Not root is a failure, rather
/// than a pass that checked nothing, unless WARDLOCK_SKIP_ROOT_TESTS says to skip.
pub fn running_as_root(needs: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("WARDLOCK_SKIP_ROOT_TESTS").is_some(),
        "{needs} needs root; run it as root (CI does) or set WARDLOCK_SKIP_ROOT_TESTS=1"
    );
    false
}
