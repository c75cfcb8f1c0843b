#!/usr/bin/env bash
# Interop: the ringmq binary against independent clients, mosquitto_pub/mosquitto_sub (MQTT 5.0,
# 3.1.1 and 3.1) and paho-mqtt (tests/interop/paho_scenario.py, and over WebSocket
# tests/interop/paho_websocket.py); then a second broker with TLS, mutual TLS, secure WebSocket, a
# password file written by Debian's mosquitto_passwd and an ACL file.
#
# Usage: scripts/interop.sh BINARY
#
# Starts BINARY with a generated config (4 unpinned shards on a free 127.0.0.1 port), prints one
# line per check and exits non-zero at the first failure, saying what failed. The broker is always
# stopped on exit. Every wait is bounded. A missing tool is a failure naming its package.
set -euo pipefail

cd "$(dirname "$0")/.."
binary=${1:?usage: scripts/interop.sh BINARY}
python=/usr/bin/python3
readonly WAIT_SECS=10

fail() {
    echo "interop: FAIL $*" >&2
    exit 1
}

ok() {
    echo "interop: ok   $*"
}

need_tools() {
    local missing=()
    command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
    command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
    command -v timeout >/dev/null 2>&1 || missing+=(coreutils)
    command -v stdbuf >/dev/null 2>&1 || missing+=(coreutils)
    command -v mosquitto_passwd >/dev/null 2>&1 || missing+=(mosquitto)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    [ -x "$python" ] || missing+=(python3)
    "$python" -c 'import paho.mqtt.client' >/dev/null 2>&1 || missing+=(python3-paho-mqtt)
    if ((${#missing[@]})); then
        fail "missing tools; install with: sudo apt-get install $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')"
    fi
    [ -x "$binary" ] || fail "$binary is not an executable (build it with cargo build --release)"
}

need_tools
work=$(mktemp -d "${TMPDIR:-/tmp}/ringmq-interop.XXXXXX")
broker_pid=
secure_pid=
client_pids=()

cleanup() {
    local status=$?
    for pid in "${client_pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    for pid in "$broker_pid" "$secure_pid"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [ "$status" -ne 0 ]; then
        for log in broker secure; do
            if [ -s "$work/$log.log" ]; then
                echo "interop: last $log log lines:" >&2
                tail -n 20 "$work/$log.log" >&2
            fi
        done
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
admin_port=$(free_port)
ws_port=$(free_port)
cat >"$work/ringmq.toml" <<EOF
[runtime]
shards = 4
pin = false

[listeners.tcp.default]
bind = "127.0.0.1:$port"

[listeners.ws.default]
bind = "127.0.0.1:$ws_port"
path = "/mqtt"

# Room for every message of the 10,000-line check: at the default (1,000) a subscriber that falls
# behind a fast publisher has QoS 1/2 messages dropped as the limit says, and on a loaded machine
# it does.
[limits]
outbox_messages_max = 20000

[admin]
bind = "127.0.0.1:$admin_port"

[sys]
interval_secs = 1
EOF

# --- broker -----------------------------------------------------------------------------------

"$binary" --config "$work/ringmq.toml" >"$work/broker.log" 2>&1 &
broker_pid=$!
accepting() { # PORT
    "$python" -c "import socket; socket.create_connection(('127.0.0.1', $1), timeout=1).close()" 2>/dev/null
}
wait_accepting() { # PID PORT LOG
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || fail "broker exited at start: $(tail -n 5 "$3")"
        accepting "$2" && return 0
        sleep 0.1
    done
    fail "broker not accepting on 127.0.0.1:$2 within 10 s"
}
wait_accepting "$broker_pid" "$port" "$work/broker.log"
ok "broker $binary accepts on 127.0.0.1:$port (4 shards)"

# --- helpers ----------------------------------------------------------------------------------

# Lines of the form MSG|topic|qos|retain|payload, one per message.
readonly FORMAT='MSG|%t|%q|%r|%p'

# sub_start NAME ARGS...: a mosquitto_sub in the background writing to $work/NAME.out; returns
# once its SUBACK has arrived.
sub_start() {
    local name=$1
    shift
    # Line-buffered, so that the SUBACK line shows while it runs.
    stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$port" -d -F "$FORMAT" "$@" >"$work/$name.out" 2>&1 &
    local pid=$!
    client_pids+=("$pid")
    echo "$pid" >"$work/$name.pid"
    for _ in $(seq $((WAIT_SECS * 20))); do
        grep -qs 'received SUBACK' "$work/$name.out" && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            # It may have subscribed, received all it waited for and exited between the checks.
            grep -qs 'received SUBACK' "$work/$name.out" && return 0
            fail "mosquitto_sub $name ($*) exited before its SUBACK: $(cat "$work/$name.out")"
        fi
        sleep 0.05
    done
    fail "mosquitto_sub $name ($*): no SUBACK within ${WAIT_SECS} s"
}

# sub_wait NAME: waits for a mosquitto_sub started with -C/-W to exit (bounded by its -W).
sub_wait() {
    local pid
    pid=$(cat "$work/$1.pid")
    wait "$pid" 2>/dev/null || true
}

# messages NAME: the received messages of NAME, as FORMAT lines without the MSG| prefix.
messages() {
    grep '^MSG|' "$work/$1.out" | cut -d'|' -f2- || true
}

pub() {
    timeout "$WAIT_SECS" mosquitto_pub -h 127.0.0.1 -p "$port" "$@" ||
        fail "mosquitto_pub $* exited with status $?"
}

expect_messages() {
    local name=$1 what=$2 expected=$3 got
    got=$(messages "$name")
    [ "$got" = "$expected" ] || fail "$what: expected
$expected
got
$got"
}

# --- QoS round trips --------------------------------------------------------------------------

for qos in 0 1 2; do
    sub_start "qos$qos" -t "interop/qos$qos" -q "$qos" -C 3 -W "$WAIT_SECS"
    for i in 1 2 3; do
        pub -t "interop/qos$qos" -q "$qos" -m "m$i"
    done
    sub_wait "qos$qos"
    expect_messages "qos$qos" "QoS $qos round trip" "interop/qos$qos|$qos|0|m1
interop/qos$qos|$qos|0|m2
interop/qos$qos|$qos|0|m3"
    ok "QoS $qos round trip (3 messages, in order)"
done

# --- protocol versions, each way ----------------------------------------------------------------

for sub_version in mqttv5 mqttv311 mqttv31; do
    for pub_version in mqttv5 mqttv311 mqttv31; do
        name="v-$sub_version-$pub_version"
        sub_start "$name" -V "$sub_version" -t "interop/$name" -q 2 -C 2 -W "$WAIT_SECS"
        pub -V "$pub_version" -t "interop/$name" -q 1 -m one
        pub -V "$pub_version" -t "interop/$name" -q 2 -m two
        sub_wait "$name"
        expect_messages "$name" "$pub_version publisher to $sub_version subscriber" \
            "interop/$name|1|0|one
interop/$name|2|0|two"
    done
    ok "$sub_version subscriber receives from mqttv5, mqttv311 and mqttv31 publishers"
done

# --- retained ---------------------------------------------------------------------------------

for version in mqttv5 mqttv311 mqttv31; do
    pub -V "$version" -t "interop/retained/$version" -q 1 -r -m "old"
    pub -V "$version" -t "interop/retained/$version" -q 1 -r -m "kept"
    sub_start "retained-$version" -V "$version" -t "interop/retained/$version" -q 1 -C 1 -W "$WAIT_SECS"
    sub_wait "retained-$version"
    expect_messages "retained-$version" "retained ($version)" "interop/retained/$version|1|1|kept"
    pub -V "$version" -t "interop/retained/$version" -r -n
    sub_start "deleted-$version" -V "$version" -t "interop/retained/$version" -q 1 -W 1
    sub_wait "deleted-$version"
    expect_messages "deleted-$version" "deleted retained ($version)" ""
    ok "retained ($version): last one delivered with RETAIN set on subscribe, deleted by an empty one"
done

# --- will ---------------------------------------------------------------------------------------

for version in mqttv5 mqttv311 mqttv31; do
    sub_start "watch-$version" -V "$version" -t "interop/will/$version/+" -q 1 -C 1 -W "$WAIT_SECS"
    # A clean exit sends DISCONNECT: no will.
    pub -V "$version" -t "interop/other" -m x \
        --will-topic "interop/will/$version/polite" --will-payload polite-gone --will-qos 1
    sub_start "mortal-$version" -V "$version" -i "mortal-$version" -t "interop/nothing" \
        --will-topic "interop/will/$version/mortal" --will-payload mortal-gone --will-qos 1
    mortal_pid=$(cat "$work/mortal-$version.pid")
    kill -KILL "$mortal_pid"
    wait "$mortal_pid" 2>/dev/null || true
    sub_wait "watch-$version"
    expect_messages "watch-$version" "will ($version)" "interop/will/$version/mortal|1|0|mortal-gone"
    ok "will ($version) published when the client is killed, none after DISCONNECT"
done

# --- 10,000 lines -------------------------------------------------------------------------------

seq 1 10000 >"$work/lines"
for qos in 1 2; do
    sub_start "bulk$qos" -t "interop/bulk$qos" -q "$qos" -C 10000 -W 60
    timeout 60 mosquitto_pub -h 127.0.0.1 -p "$port" -t "interop/bulk$qos" -q "$qos" -l \
        <"$work/lines" || fail "mosquitto_pub -l (QoS $qos) exited with status $?"
    sub_wait "bulk$qos"
    messages "bulk$qos" | cut -d'|' -f4 >"$work/bulk$qos.got"
    count=$(wc -l <"$work/bulk$qos.got")
    [ "$count" -eq 10000 ] || fail "mosquitto_pub -l at QoS $qos: $count of 10000 messages arrived"
    cmp -s "$work/lines" "$work/bulk$qos.got" ||
        fail "mosquitto_pub -l at QoS $qos: 10000 messages arrived, not in publish order"
    ok "mosquitto_pub -l: 10000 lines at QoS $qos into mosquitto_sub -C 10000, all in order"
done

# --- paho ---------------------------------------------------------------------------------------

timeout 120 "$python" tests/interop/paho_scenario.py 127.0.0.1 "$port" ||
    fail "tests/interop/paho_scenario.py exited with status $?"
ok "paho-mqtt scenario"

for version in "" --v5; do
    timeout 60 "$python" tests/interop/paho_websocket.py 127.0.0.1 "$port" "$ws_port" /mqtt $version ||
        fail "tests/interop/paho_websocket.py $version exited with status $?"
done
ok "paho-mqtt over WebSocket (transport=\"websockets\", MQTT 3.1.1 and 5.0)"

kill -0 "$broker_pid" 2>/dev/null || fail "the broker died during the run"
# --- observability ------------------------------------------------------------------------------

sys_version=$(timeout 10 mosquitto_sub -p "$port" -t '$SYS/broker/version' -C 1 -W 8 2>&1) ||
    fail "\$SYS/broker/version not received within 8 s: $sys_version"
[ -n "$sys_version" ] || fail "\$SYS/broker/version is empty"
ok "\$SYS/broker/version: $sys_version"
sleep 1.5
metrics=$("$python" - "$admin_port" <<'PY'
import sys, urllib.request
port = sys.argv[1]
with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
    assert r.status == 200, r.status
    body = r.read().decode()
with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
    assert r.status == 200, r.status
for line in body.splitlines():
    if line.startswith('ringmq_connections_accepted_total{shard="all"}'):
        print(line.split()[-1])
PY
) || fail "admin endpoint: /metrics or /ready did not answer 200"
[ "${metrics:-0}" -gt 10 ] 2>/dev/null || fail "ringmq_connections_accepted_total is '$metrics', expected the connections of this run"
ok "/metrics reports $metrics accepted connections; /ready is 200"

# --- security: TLS, mutual TLS, mosquitto_passwd, ACL, SIGHUP ------------------------------------

certs="$work/certs"
scripts/certs.sh "$certs" >/dev/null || fail "scripts/certs.sh could not write test certificates"
# Debian's mosquitto_passwd writes the file; the broker reads it as is.
mosquitto_passwd -c -b "$work/passwd" alice secret >/dev/null || fail "mosquitto_passwd -c -b failed"
mosquitto_passwd -H sha512 -b "$work/passwd" bob hunter2 >/dev/null ||
    fail "mosquitto_passwd -H sha512 -b failed"
cat >"$work/acl" <<EOF
user alice
topic interop/#
user bob
topic read interop/#
user client1
topic interop/#
EOF
secure_port=$(free_port)
tls_port=$(free_port)
mtls_port=$(free_port)
wss_port=$(free_port)
cat >"$work/secure.toml" <<EOF
[runtime]
shards = 4
pin = false

[listeners.tcp.plain]
bind = "127.0.0.1:$secure_port"

[listeners.tls.secure]
bind = "127.0.0.1:$tls_port"
cert_chain_file = "$certs/server.pem"
key_file = "$certs/server-key.pem"

[listeners.tls.mutual]
bind = "127.0.0.1:$mtls_port"
cert_chain_file = "$certs/server.pem"
key_file = "$certs/server-key.pem"
ca_file = "$certs/ca.pem"
require_certificate = true
use_identity_as_username = true

[listeners.wss.secure]
bind = "127.0.0.1:$wss_port"
path = "/mqtt"
cert_chain_file = "$certs/server.pem"
key_file = "$certs/server-key.pem"

[admin]
enabled = false

[sys]
enabled = false

[auth]
password_file = "$work/passwd"
acl_file = "$work/acl"
EOF
"$binary" check-config "$work/secure.toml" >/dev/null || fail "ringmq check-config refused $work/secure.toml"
"$binary" --config "$work/secure.toml" >"$work/secure.log" 2>&1 &
secure_pid=$!
wait_accepting "$secure_pid" "$secure_port" "$work/secure.log"
ok "second broker with TLS, mTLS, password and ACL files accepts on 127.0.0.1:$secure_port"

# secure_round_trip NAME PORT SUB_ARGS PUB_ARGS: one QoS 1 message through the second broker
# (sub_start and pub see this function's `port`).
secure_round_trip() {
    local name=$1 port=$2 sub_args=$3 pub_args=$4
    # shellcheck disable=SC2086
    sub_start "$name" -t "interop/$name" -q 1 -C 1 -W "$WAIT_SECS" $sub_args
    # shellcheck disable=SC2086
    pub -t "interop/$name" -q 1 -m "$name" $pub_args
    sub_wait "$name"
    expect_messages "$name" "$name" "interop/$name|1|0|$name"
}

secure_round_trip passwords "$secure_port" "-u bob -P hunter2" "-u alice -P secret"
ok "password file from mosquitto_passwd (\$7\$ and \$6\$) read as is: alice publishes, bob receives"

if refused=$(timeout "$WAIT_SECS" mosquitto_pub -h 127.0.0.1 -p "$secure_port" -t interop/x -m x \
    -u alice -P wrong 2>&1); then
    fail "a wrong password was accepted"
fi
case $refused in
*"not authorised"* | *"ad user name or password"*) ;;
*) fail "a wrong password: expected a refusal, mosquitto_pub said: $refused" ;;
esac
if timeout "$WAIT_SECS" mosquitto_pub -h 127.0.0.1 -p "$secure_port" -t interop/x -m x >/dev/null 2>&1; then
    fail "an anonymous client was accepted with a password file set"
fi
ok "wrong password and anonymous client refused"

secure_round_trip tls "$tls_port" "--cafile $certs/ca.pem -u bob -P hunter2" \
    "--cafile $certs/ca.pem -u alice -P secret"
ok "mosquitto_pub/mosquitto_sub over TLS with --cafile (and passwords)"

client_cert="--cafile $certs/ca.pem --cert $certs/client.pem --key $certs/client-key.pem"
secure_round_trip mtls "$mtls_port" "$client_cert" "$client_cert"
ok "mosquitto_pub/mosquitto_sub over mutual TLS, the certificate's CN as username (ACL user client1)"

if timeout "$WAIT_SECS" mosquitto_pub -h 127.0.0.1 -p "$mtls_port" --cafile "$certs/ca.pem" \
    -t interop/x -m x >/dev/null 2>&1; then
    fail "mutual TLS accepted a client without a certificate"
fi
ok "mutual TLS refuses a client without a certificate"

timeout 60 "$python" tests/interop/paho_websocket.py 127.0.0.1 "$secure_port" "$wss_port" /mqtt \
    --tls "$certs/ca.pem" --user alice secret --v5 ||
    fail "tests/interop/paho_websocket.py over wss exited with status $?"
ok "paho-mqtt over secure WebSocket with --cafile and passwords (ACL applies)"

kill -HUP "$secure_pid"
for _ in $(seq 50); do
    grep -qs 'reloaded the password file' "$work/secure.log" && break
    sleep 0.1
done
grep -qs 'reloaded the password file' "$work/secure.log" || fail "SIGHUP: no reload in the log"
kill -0 "$secure_pid" 2>/dev/null || fail "the second broker died on SIGHUP"
secure_round_trip reloaded "$tls_port" "--cafile $certs/ca.pem -u bob -P hunter2" \
    "--cafile $certs/ca.pem -u alice -P secret"
ok "SIGHUP reloads the files; the broker keeps serving"

ok "all interop checks passed"
