#!/usr/bin/env bash
# The browser suite: Debian's chromium, driven by npm playwright-core, loads a page whose MQTT.js
# (npm mqtt's browser bundle) talks to the ringmq binary over ws:// and wss://, with
# mosquitto_pub/mosquitto_sub as the native TCP side (tests/browser/browser_test.mjs). Keeps a
# screenshot in tests/browser/artifacts/browser.png (git ignores it).
#
# Usage: scripts/browser.sh BINARY
#
# Installs the npm packages from tests/browser/package-lock.json (npm ci) when they are missing;
# nothing downloads a browser. A missing tool is a failure naming its package. Takes about 10 s
# once the packages are there.
set -euo pipefail

cd "$(dirname "$0")/.."
binary=${1:?usage: scripts/browser.sh BINARY}
python=/usr/bin/python3
chromium=/usr/bin/chromium

fail() {
    echo "browser: FAIL $*" >&2
    exit 1
}

missing=()
[ -x "$chromium" ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v stdbuf >/dev/null 2>&1 || missing+=(coreutils)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x "$python" ] || missing+=(python3)
if ((${#missing[@]})); then
    fail "missing tools; install with: sudo apt-get install ${missing[*]}"
fi
[ -x "$binary" ] || fail "$binary is not an executable (build it with cargo build --release)"

# playwright-core never downloads a browser; the variable makes sure no install step tries.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
# node_modules/.ringmq-lock is the package-lock.json it was installed from.
if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.ringmq-lock 2>/dev/null; then
    echo "browser: npm ci in tests/browser (mqtt, playwright-core)"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) ||
        fail "npm ci in tests/browser failed; the npm registry must be reachable"
    cp tests/browser/package-lock.json tests/browser/node_modules/.ringmq-lock
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ringmq-browser.XXXXXX")
broker_pid=
cleanup() {
    local status=$?
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -KILL "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    if [ "$status" -ne 0 ] && [ -s "$work/broker.log" ]; then
        echo "browser: last broker log lines:" >&2
        tail -n 20 "$work/broker.log" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
scripts/certs.sh "$work/certs" >/dev/null || fail "scripts/certs.sh could not write test certificates"
port=$(free_port)
ws_port=$(free_port)
wss_port=$(free_port)
cat >"$work/ringmq.toml" <<EOF
[runtime]
shards = 4
pin = false

[listeners.tcp.default]
bind = "127.0.0.1:$port"

[listeners.ws.browser]
bind = "127.0.0.1:$ws_port"
path = "/mqtt"

[listeners.wss.browser]
bind = "127.0.0.1:$wss_port"
path = "/mqtt"
cert_chain_file = "$work/certs/server.pem"
key_file = "$work/certs/server-key.pem"

[admin]
enabled = false
EOF
"$binary" --config "$work/ringmq.toml" >"$work/broker.log" 2>&1 &
broker_pid=$!
for _ in $(seq 100); do
    kill -0 "$broker_pid" 2>/dev/null || fail "broker exited at start: $(tail -n 5 "$work/broker.log")"
    "$python" -c "import socket; socket.create_connection(('127.0.0.1', $wss_port), timeout=1).close()" \
        2>/dev/null && break
    sleep 0.1
done

timeout 90 node tests/browser/browser_test.mjs "$port" "ws://127.0.0.1:$ws_port/mqtt" \
    "wss://localhost:$wss_port/mqtt" || fail "tests/browser/browser_test.mjs exited with status $?"
kill -0 "$broker_pid" 2>/dev/null || fail "the broker died during the run"
echo "browser: ok   all browser checks passed"
