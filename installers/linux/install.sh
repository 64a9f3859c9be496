#!/usr/bin/env bash
# Installs wardlockd on this Debian/Ubuntu workstation as a systemd system service.
# Run as root from the repository after `cargo build --release`:
#   sudo installers/linux/install.sh
# To sync with a collector, set sync.endpoint, sync.ca_file and sync.trusted_keys in
# /etc/wardlock/policy.toml and pass the enrollment secret once:
#   sudo WARDLOCK_ENROLL_SECRET=./enroll-secret installers/linux/install.sh
# WARDLOCK_SESSION_USERS="ward4 ward5" adds the ward's shared accounts to the group the
# shipped policy lets talk to wardlockd.
# Safe to run again: it keeps an existing policy, key and database.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${WARDLOCK_BIN_DIR:-$repo/target/release}"
prefix="${PREFIX:-/usr/local}"

if [[ $EUID -ne 0 ]]; then
    echo "install.sh: run as root (sudo $0)" >&2
    exit 1
fi
for b in wardlockd wardlockctl; do
    if [[ ! -x "$bin/$b" ]]; then
        echo "install.sh: $bin/$b is missing; build it first: cargo build --release" >&2
        exit 1
    fi
done

install -m 0755 "$bin/wardlockd" "$bin/wardlockctl" "$prefix/bin/"
# The session guard (built only where its desktop libraries are): a user unit that
# restarts it, and an XDG autostart entry for desktops without graphical-session.target.
if [[ -x "$bin/wardlock" ]]; then
    install -m 0755 "$bin/wardlock" "$prefix/bin/"
    install -D -m 0644 "$here/wardlock-guard.service" /usr/lib/systemd/user/wardlock-guard.service
    install -D -m 0644 "$here/wardlock-guard.desktop" /etc/xdg/autostart/wardlock-guard.desktop
    systemctl --global enable wardlock-guard.service 2>/dev/null || true
fi
install -D -m 0644 "$here/sysusers-wardlock.conf" /usr/lib/sysusers.d/wardlock.conf
systemd-sysusers /usr/lib/sysusers.d/wardlock.conf
# The ward's shared accounts, which the shipped policy lets talk to wardlockd.
for account in ${WARDLOCK_SESSION_USERS:-}; do
    usermod -aG wardlock-session "$account"
done
if [[ -z "${WARDLOCK_SESSION_USERS:-}" ]]; then
    echo "install.sh: add the ward's shared account(s) to the group wardlock-session" \
        "(usermod -aG wardlock-session ACCOUNT); the shipped policy lets only them use wardlockd"
fi
install -D -m 0644 "$here/wardlockd.service" /etc/systemd/system/wardlockd.service
if [[ -d /etc/polkit-1/rules.d ]]; then
    install -m 0644 "$here/polkit-wardlock.rules" /etc/polkit-1/rules.d/50-wardlock.rules
fi
install -D -m 0644 "$repo/README.md" "$prefix/share/doc/wardlock/README.md"

# The machine policy: IT's file, never overwritten.
install -d -m 0755 /etc/wardlock
if [[ ! -e /etc/wardlock/policy.toml ]]; then
    install -m 0644 "$here/policy.toml" /etc/wardlock/policy.toml
fi
"$prefix/bin/wardlockctl" policy check /etc/wardlock/policy.toml >/dev/null

# The data key that seals TOTP seeds: made on this machine by wardlock-identity (at the
# first start of wardlockd; again on a clone of this machine), never here.
install -D -m 0755 "$here/wardlock-identity" "$prefix/libexec/wardlock/wardlock-identity"
sed "s|/usr/local/libexec/|$prefix/libexec/|" "$here/wardlock-identity.service" \
    >/etc/systemd/system/wardlock-identity.service

# The collector's enrollment secret, if given (WARDLOCK_ENROLL_SECRET=FILE): readable by
# the service's group only; wardlockd reads it once, at its first sync.
if [[ -n "${WARDLOCK_ENROLL_SECRET:-}" ]]; then
    install -m 0640 -o root -g wardlock "$WARDLOCK_ENROLL_SECRET" /etc/wardlock/enroll-secret
fi

if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
    systemctl enable wardlock-identity.service
    systemctl enable --now wardlockd.service
    systemctl --no-pager status wardlockd.service | head -n 5
else
    echo "install.sh: systemd is not running here; start it later with: systemctl enable --now wardlockd"
fi
