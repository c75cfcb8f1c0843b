#!/usr/bin/env bash
# Slow-consumer check: does a subscriber that never reads hurt anyone else?
#
# Starts the release broker on one pinned shard and runs the same ringmq-bench scenario twice:
# PUBLISHERS publishers at RATE msgs/s in total (open loop, QoS 0, 64-byte payloads) to one
# healthy subscriber, first alone, then with SLOW extra subscribers on the same topics that
# connect, subscribe and never read a byte (raw sockets with a small receive buffer). It prints
# the healthy subscriber's latency both times, the broker's peak RSS against the memory budget it
# printed at start-up, and the outbox drops, and fails if the healthy p99 more than doubles
# (P99_RATIO_MAX), if anything sent to the healthy subscriber is lost, or if the RSS exceeds the
# budget. A third, closed-loop run (publishers as fast as they can) checks memory only: its
# latency is queueing in socket buffers by design.
#
# Usage: scripts/slow-consumer.sh [SECONDS=30]
# Environment: RATE=100000 PUBLISHERS=8 SLOW=4 BROKER_CPU=0 LOAD_CPU=1 PORT=28840
#              ADMIN_PORT=28841 P99_RATIO_MAX=2 SKIP_BUILD=1 (use the existing release binaries)
set -euo pipefail

seconds="${1:-30}"
rate="${RATE:-100000}"
publishers="${PUBLISHERS:-8}"
slow="${SLOW:-4}"
broker_cpu="${BROKER_CPU:-0}"
load_cpu="${LOAD_CPU:-1}"
port="${PORT:-28840}"
admin_port="${ADMIN_PORT:-28841}"
ratio_max="${P99_RATIO_MAX:-2}"

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
cd "$root"
# shellcheck source=lib/pinned-broker.sh
source "$root/scripts/lib/pinned-broker.sh"
for tool in taskset python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "slow-consumer.sh: needs $tool (apt-get install util-linux python3 curl)" >&2
        exit 1
    }
done
if [[ -z "${SKIP_BUILD:-}" ]]; then
    cargo build --release -q -p ringmq -p bench
fi

work="$(mktemp -d)"
broker_pid=""
slow_pid=""
cleanup() {
    [[ -n "$slow_pid" ]] && kill "$slow_pid" 2>/dev/null || true
    [[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start_pinned_broker slow-consumer.sh "$target/release/ringmq" "$broker_cpu" "$port" "$work" \
    "$(printf '[admin]\nbind = "127.0.0.1:%s"' "$admin_port")"

# The slow subscribers: CONNECT (3.1.1, clean session) and SUBSCRIBE to every publisher topic at
# QoS 1, then sleep without reading until killed.
start_slow() {
    python3 - "$port" "$slow" "$work/slow.ready" >"$work/slow.log" 2>&1 <<'PY' &
import socket, sys, time
port, count, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def frame(kind, body):
    out, n = bytearray([kind]), len(body)
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out) + body
def utf8(s):
    return len(s).to_bytes(2, "big") + s.encode()
sockets = []
for i in range(count):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(frame(0x10, utf8("MQTT") + bytes([4, 0x02]) + (600).to_bytes(2, "big") + utf8(f"slow{i}")))
    s.sendall(frame(0x82, (1).to_bytes(2, "big") + utf8("slow/#") + bytes([1])))
    sockets.append(s)
time.sleep(0.5)
open(ready, "w").close()
time.sleep(86400)
PY
    slow_pid=$!
    for _ in $(seq 100); do
        [[ -e "$work/slow.ready" ]] && return 0
        sleep 0.1
    done
    echo "slow-consumer.sh: the slow subscribers did not connect; their log:" >&2
    cat "$work/slow.log" >&2
    exit 1
}

bench() { # NAME EXTRA_ARGS...
    local name="$1"
    shift
    taskset -c "$load_cpu" "$target/release/ringmq-bench" pubsub -p "$port" -V 4 --threads 1 \
        --quiet -c "$publishers" --subs 1 -t 'slow/%i' --sub-topic 'slow/#' -q 0 -s 64 \
        --duration "$seconds" --json "$work/$name.json" "$@" >"$work/$name.out" 2>&1 || {
        echo "slow-consumer.sh: ringmq-bench failed in the $name run:" >&2
        cat "$work/$name.out" >&2
        exit 1
    }
}

echo "== healthy subscriber alone: $publishers publishers, $rate msgs/s, ${seconds}s"
bench alone --rate "$rate"
echo "== the same with $slow subscribers that never read"
start_slow
bench with_slow --rate "$rate"
echo "== closed loop (as fast as the publishers can), slow subscribers still connected"
bench closed -I 0

hwm_kib="$(awk '/VmHWM/{print $2}' "/proc/$broker_pid/status")"
curl -fsS "http://127.0.0.1:$admin_port/metrics" >"$work/metrics.txt"
"$target/release/ringmq" check-config "$work/broker.toml" >"$work/budget.txt"
python3 - "$work" "$hwm_kib" "$ratio_max" <<'EOF'
import json, re, sys
work, hwm_kib, ratio_max = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
metrics = open(f"{work}/metrics.txt").read()
def report(name):
    with open(f"{work}/{name}.json") as f:
        return json.load(f)
def ms(ns):
    return ns / 1e6
failed = []
rows = {}
for name in ("alone", "with_slow", "closed"):
    r = report(name)
    lat, t = r.get("latency") or {}, r["totals"]
    rows[name] = (lat, t)
    print(f"{name:<10} received {t['received']:>10,}  lost {t['lost']:>8,}  "
          f"p50 {ms(lat.get('p50_ns', 0)):8.3f} ms  p99 {ms(lat.get('p99_ns', 0)):8.3f} ms  "
          f"p99.9 {ms(lat.get('p999_ns', 0)):8.3f} ms")
a, b = rows["alone"][0].get("p99_ns"), rows["with_slow"][0].get("p99_ns")
if not a or not b:
    failed.append("no latency measured")
else:
    ratio = b / a
    print(f"healthy p99 with slow subscribers / alone: {ratio:.2f} (at most {ratio_max})")
    if ratio > ratio_max:
        failed.append(f"p99 ratio {ratio:.2f} > {ratio_max}")
for name in ("alone", "with_slow"):
    if rows[name][1]["lost"]:
        failed.append(f"{name}: the healthy subscriber lost {rows[name][1]['lost']} messages")
units = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50}
worst = re.search(r"worst case\s+([\d.]+) (\w+) of ([\d.]+) (\w+)", open(f"{work}/budget.txt").read())
drops = sum(float(v) for v in re.findall(
    r'^ringmq_messages_dropped_total\{[^}]*shard="all"[^}]*\} (\S+)', metrics, re.M))
print(f"broker peak RSS {hwm_kib / 1024:.1f} MiB; messages dropped (all reasons) {drops:,.0f}")
if worst is None:
    failed.append("no memory budget in 'ringmq check-config' output")
else:
    worst_bytes = float(worst.group(1)) * units[worst.group(2)]
    budget = float(worst.group(3)) * units[worst.group(4)]
    print(f"memory budget per shard: worst case {worst.group(1)} {worst.group(2)}, "
          f"budget {worst.group(3)} {worst.group(4)}")
    if hwm_kib * 1024 > min(worst_bytes, budget):
        failed.append("peak RSS over the computed worst case or the budget")
if failed:
    print("slow-consumer.sh: FAILED: " + "; ".join(failed), file=sys.stderr)
    sys.exit(1)
print("slow-consumer.sh: ok")
EOF
