#!/usr/bin/env bash
# Connection flood: do existing clients keep being served while 10,000 connections arrive at once?
#
# Starts the release broker on one pinned shard (default limits: 5,000 connects/s per shard), runs
# an open-loop QoS 1 stream (4 publishers, 4 subscribers, RATE msgs/s) for SECONDS alone, then
# again while `ringmq-bench conn` opens CONNS connections as fast as it can. Prints the stream's
# latency both times, how many flood connections got their CONNACK and how long that took, and
# fails if the stream lost or duplicated anything, if a stream client was disconnected, or if not
# every flood connection was accepted. Both generators share LOAD_CPU; the flood generator runs at
# nice 19 so that it takes only what the stream's generator leaves.
#
# Usage: scripts/flood.sh [SECONDS=10]
# Environment: CONNS=10000 RATE=2000 BROKER_CPU=0 LOAD_CPU=1 PORT=28860 SKIP_BUILD=1
set -euo pipefail

seconds="${1:-10}"
conns="${CONNS:-10000}"
rate="${RATE:-2000}"
broker_cpu="${BROKER_CPU:-0}"
load_cpu="${LOAD_CPU:-1}"
port="${PORT:-28860}"

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
cd "$root"
# shellcheck source=lib/pinned-broker.sh
source "$root/scripts/lib/pinned-broker.sh"
command -v python3 >/dev/null 2>&1 || {
    echo "flood.sh: needs python3 (apt-get install python3)" >&2
    exit 1
}
# The broker and the flood generator each hold CONNS descriptors.
if ! ulimit -n $((conns + 1000)) 2>/dev/null; then
    echo "flood.sh: cannot raise the open-file limit to $((conns + 1000)) (hard limit" \
        "$(ulimit -Hn)); raise it (e.g. in /etc/security/limits.conf) or lower CONNS" >&2
    exit 1
fi
if [[ -z "${SKIP_BUILD:-}" ]]; then
    cargo build --release -q -p ringmq -p bench
fi

work="$(mktemp -d)"
broker_pid=""
cleanup() {
    [[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start_pinned_broker flood.sh "$target/release/ringmq" "$broker_cpu" "$port" "$work" "[admin]
enabled = false
[limits]
connections_per_shard_max = $((conns + 100))
connections_max = $((conns + 100))
sessions_per_shard_max = $((conns + 100))"

stream() { # NAME
    taskset -c "$load_cpu" "$target/release/ringmq-bench" pubsub -p "$port" -V 4 --threads 1 \
        --quiet --prefix "$1" -c 4 --subs 4 -t "flood/$1/%i" -q 1 -s 64 --rate "$rate" \
        --duration "$seconds" --json "$work/$1.json" >"$work/$1.out" 2>&1 || {
        echo "flood.sh: the $1 stream failed:" >&2
        cat "$work/$1.out" >&2
        exit 1
    }
}

echo "== stream alone: 4 publishers -> 4 subscribers, QoS 1, $rate msgs/s, ${seconds}s"
stream alone
echo "== the same stream while $conns connections arrive at once"
stream during &
stream_pid=$!
sleep 1
nice -n 19 taskset -c "$load_cpu" "$target/release/ringmq-bench" conn -p "$port" -V 4 --threads 1 --quiet \
    --prefix flood -c "$conns" -R 1000000 -k 300 --duration $((seconds > 4 ? seconds - 3 : 1)) \
    --json "$work/flood.json" >"$work/flood.out" 2>&1 || {
    echo "flood.sh: the flood generator failed:" >&2
    cat "$work/flood.out" >&2
    exit 1
}
wait "$stream_pid"
kill -0 "$broker_pid" 2>/dev/null || {
    echo "flood.sh: the broker exited; its log:" >&2
    tail -20 "$work/broker.log" >&2
    exit 1
}

python3 - "$work" "$conns" <<'EOF'
import json, sys
work, conns = sys.argv[1], int(sys.argv[2])
def load(name):
    with open(f"{work}/{name}.json") as f:
        return json.load(f)
def ms(ns):
    return ns / 1e6
failed = []
for name in ("alone", "during"):
    r = load(name)
    t, lat = r["totals"], r.get("latency") or {}
    print(f"stream {name:<7} published {t['published']:>8,}  received {t['received']:>8,}  "
          f"lost {t['lost']}  dup {t.get('duplicates', 0)}  "
          f"p50 {ms(lat.get('p50_ns', 0)):7.3f} ms  p99 {ms(lat.get('p99_ns', 0)):7.3f} ms  "
          f"p99.9 {ms(lat.get('p999_ns', 0)):7.3f} ms  max {ms(lat.get('max_ns', 0)):7.3f} ms")
    if t["lost"] or t.get("duplicates", 0):
        failed.append(f"the {name} stream lost or duplicated messages")
    if t["connected"] != 8 or t.get("disconnected", 0) > 8:
        failed.append(f"the {name} stream's clients: {t['connected']} connected")
    if r.get("first_error"):
        failed.append(f"the {name} stream: {r['first_error']}")
f = load("flood")
connected, rate = f["totals"]["connected"], f["rates"]["connect_per_sec"]
print(f"flood: {connected:,} of {conns:,} connections got their CONNACK, {rate:,.0f} per second")
if connected != conns:
    failed.append(f"only {connected} of {conns} flood connections were accepted")
if failed:
    print("flood.sh: FAILED: " + "; ".join(failed), file=sys.stderr)
    sys.exit(1)
print("flood.sh: ok")
EOF
