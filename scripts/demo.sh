#!/usr/bin/env bash
# A tour of what exists so far, on embedded defaults and in ./demo only (nothing system-wide):
# policies are checked, signed and verified, a clinician is enrolled, the audit log verifies.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet -p wardlockctl -p wardlock-agent -p wardlock-collector -p wardlock
ctl() { echo; echo "\$ wardlockctl $*"; target/debug/wardlockctl "$@"; }

rm -rf demo && mkdir -p demo
export WARDLOCK_DB=demo/data/wardlock.db WARDLOCK_KEY_STORE=file:demo/credentials
export WARDLOCK_POLICY=installers/linux/policy.toml

ctl policy check installers/linux/policy.toml | head -20
echo "  ... (the whole effective policy is printed)"

printf '[lock]\nidle_timeout = "0s"\nidle_timout = "5m"\n' > demo/broken.toml
ctl policy check demo/broken.toml || echo "  (refused, as it should be)"

ctl policy keygen --out demo/it-keys
cat > demo/icu.toml <<'TOML'
[lock]
idle_timeout = "3m"
warning = "20s"
[unlock]
methods = ["pin_totp"]
TOML
ctl policy sign demo/icu.toml --key demo/it-keys/policy-signing.key --group icu --out demo/icu.signed.json
ctl policy verify demo/icu.signed.json --pubkey demo/it-keys/policy-signing.pub
sed 's/"body": "ey/"body": "ez/' demo/icu.signed.json > demo/icu.tampered.json
ctl policy verify demo/icu.tampered.json --pubkey demo/it-keys/policy-signing.pub || echo "  (refused, as it should be)"

echo; echo "\$ echo 730284 | wardlockctl user add n.nurse --name 'Nora Nurse' --role nurse --pin-stdin --totp"
echo 730284 | target/debug/wardlockctl user add n.nurse --name "Nora Nurse" --role nurse --pin-stdin --totp
echo; echo "\$ echo 1234 | wardlockctl user add d.doc ... --pin-stdin"
echo 1234 | target/debug/wardlockctl user add d.doc --name "Dee Doc" --role physician --pin-stdin || echo "  (refused, as it should be)"
echo 582039 | target/debug/wardlockctl user add d.doc --name "Dee Doc" --role physician --pin-stdin
ctl user disable d.doc
ctl user list
ctl audit verify
ctl audit export --format csv

echo; echo "# Someone with the database file edits an entry (dropping the append-only triggers first):"
echo "\$ sqlite3 demo/data/wardlock.db \"... UPDATE audit SET user = 'someone.else' WHERE seq = 2\""
sqlite3 demo/data/wardlock.db "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; UPDATE audit SET user = 'someone.else' WHERE seq = 2"
ctl audit verify || echo "  (tampering detected, as it should be)"


echo; echo "# The central collector in --dev mode (SQLite, self-signed TLS) under demo/collector"
port=18443
echo "\$ wardlock-collector serve --dev demo/collector --listen 127.0.0.1:$port &"
target/debug/wardlock-collector serve --dev demo/collector --listen 127.0.0.1:$port \
  > demo/collector.out 2> >(sed -u 's/^/  [collector] /' >&2) &
collector_pid=$!
trap 'kill $collector_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s demo/collector/admin-token ] && break; sleep 0.1; done
sed 's/^/  /' demo/collector.out
token=$(cat demo/collector/admin-token)

echo; echo "# The workstation service, wardlockd, in --dev mode under demo/agent, enrolled to the collector"
export WARDLOCK_DB=demo/agent/data/wardlock.db WARDLOCK_KEY_STORE=file:demo/agent/credentials
export WARDLOCK_SOCKET=demo/agent/agent.sock
mkdir -p demo/agent
cp demo/collector/enroll-secret demo/agent/enroll-secret
{
  # The demo runs as you, not as a ward account in wardlock-session, and shows
  # `wardlockctl agent unlock`: both are the template's to loosen here, never on a ward.
  sed -e '/^\[sync\]/,/^\[audit\]/{/^\[audit\]/!d}' \
      -e 's/^allowed_groups = .*/allowed_groups = []/' \
      -e 's/^tool_unlock = false.*/tool_unlock = true/' installers/linux/policy.toml
  echo '[sync]'
  echo "endpoint = \"https://localhost:$port\""
  echo "ca_file = \"$PWD/demo/collector/tls/cert.pem\""
  echo 'interval = "5s"'
  echo "trusted_keys = ['''"
  cat demo/it-keys/policy-signing.pub
  echo "''']"
} > demo/agent/policy.toml
target/debug/wardlockctl policy check demo/agent/policy.toml > /dev/null
echo "\$ wardlockd --dev demo/agent &"
target/debug/wardlockd --dev demo/agent 2> >(sed -u 's/^/  [wardlockd] /' >&2) &
agent_pid=$!
trap 'kill $agent_pid $collector_pid 2>/dev/null || true' EXIT
# Ready once it answers (connections made earlier wait in the socket's queue).
for _ in $(seq 100); do target/debug/wardlockctl agent status >/dev/null 2>&1 && break; sleep 0.1; done
echo 730284 | target/debug/wardlockctl user add n.nurse --name "Nora Nurse" --role nurse --pin-stdin
echo 915372 | target/debug/wardlockctl user add it.admin --name "Ida Admin" --role admin --pin-stdin
echo; echo "\$ echo 111111 | wardlockctl agent unlock n.nurse --pin-stdin"
echo 111111 | target/debug/wardlockctl agent unlock n.nurse --pin-stdin || echo "  (refused, as it should be)"
sleep 1.1  # the policy's 1 s throttle after a failure
echo; echo "\$ echo 730284 | wardlockctl agent unlock n.nurse --pin-stdin"
echo 730284 | target/debug/wardlockctl agent unlock n.nurse --pin-stdin
ctl audit verify

echo; echo "# IT pushes a signed policy for the group 'default'; the workstation verifies and applies it"
# Short timeouts, so the guard started below warns and locks soon enough to watch.
printf '[lock]\nidle_timeout = "1m"\nwarning = "15s"\nbanner = "Ward 4: authorised staff only"\n' > demo/ward4.toml
ctl policy sign demo/ward4.toml --key demo/it-keys/policy-signing.key --group default --serial 1 --out demo/ward4.signed.json
echo "\$ curl -X PUT https://localhost:$port/api/v1/admin/policies/default --data-binary @demo/ward4.signed.json"
curl -s --cacert demo/collector/tls/cert.pem -H "Authorization: Bearer $token" -X PUT \
  --data-binary @demo/ward4.signed.json "https://localhost:$port/api/v1/admin/policies/default"; echo
echo "  (the workstation pulls it within its 5 s sync interval)"
for _ in $(seq 100); do
  sqlite3 demo/agent/data/wardlock.db "select count(*) from audit where kind = 'policy_applied' and details like '%serial%'" | grep -q '^[1-9]' && break
  sleep 0.2
done
sleep 6  # one more sync interval, so the entries about it reach the collector too
ctl agent status

echo; echo "# Compliance reads the workstation's log at the collector"
echo "\$ curl -H 'Accept: text/csv' https://localhost:$port/api/v1/events?workstation=$(hostname)"
curl -s --cacert demo/collector/tls/cert.pem -H "Authorization: Bearer $token" -H "Accept: text/csv" \
  "https://localhost:$port/api/v1/events?workstation=$(hostname)" | cut -d, -f1-7

echo; echo "# The web console: an account for IT (password from standard input, TOTP from the QR code)"
console_password="demo-$(head -c 15 /dev/urandom | base64 | tr -d '/+=')"
echo "\$ echo \$PASSWORD | wardlock-collector account create it.admin --role admin --db sqlite://demo/collector/collector.db --data-key demo/collector/data.key"
echo "$console_password" | target/debug/wardlock-collector account create it.admin --role admin \
  --db sqlite://demo/collector/collector.db --data-key demo/collector/data.key | tee demo/console-account.txt
echo "$console_password" >> demo/console-account.txt
chmod 600 demo/console-account.txt
echo "Open https://localhost:$port/console/ (the certificate is the demo's own, self-signed), sign in as"
echo "it.admin with the password $console_password and a code from the app that scanned the QR code"
echo "(no app at hand: oathtool --totp -b SECRET, SECRET from the otpauth URI above). Kept in demo/console-account.txt."

echo; echo "# The session guard, wardlock: a clinician with a PIN and an authenticator app"
echo "\$ echo 640273 | wardlockctl user add d.demo --name 'Dana Demo' --role nurse --pin-stdin --totp"
echo 640273 | target/debug/wardlockctl user add d.demo --name "Dana Demo" --role nurse --pin-stdin --totp
guard_pid=
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -z "${DEMO_EXIT:-}" ]; then
  echo "\$ wardlock --socket demo/agent/agent.sock &"
  target/debug/wardlock --socket demo/agent/agent.sock 2> >(sed -u 's/^/  [wardlock] /' >&2) &
  guard_pid=$!
  trap 'kill $guard_pid $agent_pid $collector_pid 2>/dev/null || true' EXIT
  echo "The guard is in the tray (its menu: Lock now, Enroll a clinician, Quit). Leave the mouse"
  echo "and keyboard alone for 45 s: a countdown appears, then the lock screen. Unlock as n.nurse"
  echo "with PIN 730284, or as d.demo with PIN 640273 or a code from the app. To lock at once:"
  echo "  target/debug/wardlock --lock"
else
  echo "No graphical display here (DISPLAY is unset: SSH or a server), so the guard is not started."
  echo "To see it anyway, 'make demo-headless' runs it under Xvfb and saves screenshots to demo/screenshots."
fi

echo
echo "Everything is in ./demo: the service's database (demo/agent/data, owner-only), its sealed data key"
echo "(demo/agent/credentials), the collector (demo/collector: database, certificate, admin token), the"
echo "IT signing keys (demo/it-keys). Run 'make run' again to start over."
if [ -n "${DEMO_EXIT:-}" ]; then exit 0; fi
echo
echo "wardlockd (demo/agent/agent.sock) and the collector (https://localhost:$port) keep running."
echo "In another terminal, for example:"
echo "  WARDLOCK_SOCKET=demo/agent/agent.sock target/debug/wardlockctl agent status"
echo "  open https://localhost:$port/console/ (it.admin, see demo/console-account.txt)"
echo "  curl --cacert demo/collector/tls/cert.pem -H \"Authorization: Bearer \$(cat demo/collector/admin-token)\" \\"
echo "       https://localhost:$port/api/v1/events"
echo "  kill -HUP $agent_pid   # after editing demo/agent/policy.toml: reload it"
echo "Ctrl+C stops them all."
wait $agent_pid
