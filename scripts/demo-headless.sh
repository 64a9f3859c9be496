#!/usr/bin/env bash
# The guard without a desktop: its end-to-end tests run the real wardlockd and the real
# guard under a private Xvfb, warn, lock, refuse a wrong PIN, unlock; the screenshots they
# take are copied to demo/screenshots.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --workspace --bins
cargo test --quiet -p wardlock-e2e -- --test-threads 1 idle_warns wrong_pins 2>&1 | grep -E "^test |test result" || true
mkdir -p demo/screenshots
cp target/e2e-screenshots/{warning,lock-screen,lock-screen-refused,lock-screen-lockout}.png demo/screenshots/
echo "Screenshots of the guard, taken under Xvfb just now:"
ls -1 demo/screenshots/*.png
