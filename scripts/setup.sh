#!/usr/bin/env bash
# Installs what Wardlock's build, demo and tests need on Debian 12, and nothing that is
# already there. Safe to run again. Needs root (or sudo) only when something is missing.
set -euo pipefail

APT_PACKAGES=(
  build-essential pkg-config ca-certificates
  sqlite3     # tests edit the database by hand, as an attacker would
  oathtool    # an independent TOTP implementation the tests compare against
  keyutils    # `keyctl session` for the keyring back-end test
  systemd     # `systemd-creds`, which seals the data key; also `systemd-analyze verify`
  dbus        # a private bus for the stand-in logind the supervision tests lock through
  passwd util-linux  # useradd and runuser: tests act as a second OS account
  nodejs npm  # the guard's TypeScript front end
  curl        # `make run` talks to the collector's API with it
  postgresql  # the collector's second backend; tests start throwaway clusters on loopback
  python3 python3-venv  # independent checkers (FHIR validation) in .venv-tools
  rsyslog rsyslog-gnutls openssl  # a real SIEM receiver over TLS for the syslog forwarding test
  # The session guard (Tauri v2 on WebKitGTK) and its end-to-end tests on a private X server.
  libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev libssl-dev libxss-dev
  xvfb openbox xdotool wmctrl xterm x11-utils fonts-dejavu-core
  xserver-xorg-core xserver-xorg-video-dummy  # Xorg with sixteen RandR outputs: the tests plug monitors in and out while locked
  x11-xkb-utils  # xkbcomp (the guard hardens the keymap while locked) and setxkbmap for its test
  xclip  # a chart excerpt on the clipboard, which the lock page must not take
  xsettingsd  # an XSETTINGS manager: a test pushes Gtk/Modules at the running guard
  x11-xserver-utils  # xset and xrandr: the tests' keep-awake script (xset s reset) must not keep a session open
  webkit2gtk-driver  # WebKitWebDriver, under tauri-driver, for the WebDriver end-to-end test
  lintian dpkg-dev  # `make packages`: Debian's own checks of the packages, and dpkg-shlibdeps for their Depends
  apt-utils gnupg  # `make apt-repo`: apt-ftparchive and the signature; tests read it with apt itself
  debootstrap  # a bare Debian root the packages are installed into by the tests
  chromium  # the console's end-to-end tests (Playwright drives Debian's browser; none is downloaded)
)
# `make bench` measures the guard beside what a Linux admin would deploy instead.
if [ "${WARDLOCK_SETUP_BENCH:-0}" = 1 ]; then
  APT_PACKAGES+=(xss-lock xsecurelock)
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup: need root to run: $*" >&2; exit 1
  fi
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# A Node.js from elsewhere (nodesource, nvm) is as good as Debian's.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]}"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  cat >&2 <<'MSG'
setup: Rust is not installed. Install it with rustup (https://rustup.rs), then run this again:
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
MSG
  exit 1
fi
if command -v rustup >/dev/null; then
  for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
  done
fi

# The WebDriver bridge to the guard's web pages (pinned; built from crates.io).
if ! command -v tauri-driver >/dev/null; then
  echo "setup: installing tauri-driver 2.1.0 (cargo install)"
  cargo install tauri-driver --version 2.1.0 --locked --quiet
fi

# Licences, sources and duplicates of every dependency, checked by `make check` (pinned).
if ! cargo deny --version 2>/dev/null | grep -q "^cargo-deny 0.20.2"; then
  echo "setup: installing cargo-deny 0.20.2 (cargo install; a few minutes, once)"
  cargo install cargo-deny --version 0.20.2 --locked --quiet
fi

# The Debian packages (`make packages`) are made by cargo-deb (pinned).
if ! cargo deb --version 2>/dev/null | grep -q "^cargo-deb 3.6.3$"; then
  echo "setup: installing cargo-deb 3.6.3 (cargo install; a minute or two, once)"
  cargo install cargo-deb --version 3.6.3 --locked --quiet
fi

# Again whenever a lock file changed since the last install (the stamp is a copy of it):
# the guard's front end (ui/) and the collector's console (console/).
for front in ui console; do
  if [ -f "$front/package-lock.json" ] && ! cmp -s "$front/package-lock.json" "$front/node_modules/.wardlock-installed"; then
    echo "setup: installing the packages of $front/"
    # Not `npm ci`: npm leaves other platforms' optional packages (rollup's, esbuild's) out of
    # the lock file and `npm ci` then refuses it; `npm install` keeps the locked versions.
    # Playwright drives Debian's chromium: it downloads no browser of its own.
    (cd "$front" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error)
    cp "$front/package-lock.json" "$front/node_modules/.wardlock-installed"
  fi
done

# Independent checkers the tests use (FHIR R4 validation), in a venv of their own.
if ! .venv-tools/bin/python -c "import fhir.resources" 2>/dev/null \
   || ! cmp -s scripts/requirements-tools.txt .venv-tools/requirements-tools.txt; then
  echo "setup: installing the test tools (scripts/requirements-tools.txt) into .venv-tools"
  rm -rf .venv-tools
  /usr/bin/python3 -m venv .venv-tools
  .venv-tools/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-tools.txt
  cp scripts/requirements-tools.txt .venv-tools/requirements-tools.txt
fi
