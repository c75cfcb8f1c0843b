#!/usr/bin/env bash
# The whole test suite: installs what the tests need (through apt when root, cargo-deb through
# cargo install), then runs formatting and lint checks, the Prometheus alert rules check,
# `cargo test --workspace`, the interop tests against the release binary, the browser suite
# (chromium + MQTT.js over WebSocket), the Debian package checks and a 60-second churn soak.
# A missing tool is a failure that says what to install, never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."
# One build per run: incremental state would add about 1 GiB to target/ (CI builds a fresh clone
# on a small disk) and makes a clean build slower. Set CARGO_INCREMENTAL=1 to keep it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

missing=()
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
/usr/bin/python3 -c 'import paho.mqtt.client' >/dev/null 2>&1 || missing+=(python3-paho-mqtt)
# The browser suite: Debian's chromium (playwright-core drives it; nothing downloads a browser),
# node and npm for its packages.
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The package checks (scripts/package.sh) and the alert rules check.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v adduser >/dev/null 2>&1 || missing+=(adduser)
[ -x /bin/kill ] || missing+=(procps)
# The cluster tests (tests/cluster.rs) start their own nats-server on a free port.
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: installing ${missing[*]} with apt-get"
        apt-get update -qq
        # No recommends: prometheus would bring node-exporter and its friends; promtool is enough.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    else
        echo "scripts/test.sh: missing ${missing[*]}; install with: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

if ! cargo deb --version >/dev/null 2>&1; then
    echo "scripts/test.sh: installing cargo-deb with cargo install (about 5 minutes)"
    cargo install cargo-deb --locked --quiet || {
        echo "scripts/test.sh: cannot install cargo-deb; install it with:" \
            "cargo install cargo-deb --locked" >&2
        exit 1
    }
fi

echo "== disk free where target/ goes (a full run fills about 5 GiB)"
df -h "$(dirname "${CARGO_TARGET_DIR:-target}/x")" 2>/dev/null || df -h .
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== alert rules (promtool check rules docs/prometheus/alerts.yml)"
promtool check rules docs/prometheus/alerts.yml
echo "== cargo test --workspace"
# Build first, then run under a time limit: a test that hangs fails the suite with a message
# instead of stalling CI until its own limit. cargo prints "has been running for over 60 seconds"
# for the test that hangs.
cargo test --workspace --no-run --quiet
status=0
timeout --kill-after=30 "${RINGMQ_TEST_LIMIT:-1800}" cargo test --workspace || status=$?
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    echo "scripts/test.sh: cargo test ran over ${RINGMQ_TEST_LIMIT:-1800} s and was stopped; a test" \
        "hangs: the 'has been running for over 60 seconds' lines above name it" >&2
fi
if [ "$status" != 0 ]; then
    exit "$status"
fi
if [ -x scripts/interop.sh ]; then
    echo "== interop (release binary against mosquitto clients and paho)"
    # The same build as the package's (scripts/package.sh), so the broker is linked once.
    cargo build --release --quiet -p ringmq -p bench --bins
    scripts/interop.sh "${CARGO_TARGET_DIR:-target}/release/ringmq"
fi
echo "== browser (chromium + MQTT.js over ws:// and wss://)"
scripts/browser.sh "${CARGO_TARGET_DIR:-target}/release/ringmq"
echo "== Debian package (build, inspect, install, upgrade, purge)"
scripts/package.sh
echo "== churn soak (60 s, 1,000 clients connecting, subscribing, publishing, disconnecting)"
CLIENTS=500 scripts/soak.sh 60
