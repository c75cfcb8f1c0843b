#!/usr/bin/env bash
# What one message costs a broker at a moderate load, in counts that do not depend on how busy the
# machine is: system calls, io_uring_enter calls and context switches per message, plus CPU time,
# from `perf stat -p` on the broker while ringmq-bench sends 16 pairs at a fixed 20k msgs/s, QoS 0,
# 64 B (bench-compare's lat20k-q0). The broker runs on BROKER_CPU, the load on LOAD_CPU.
#
#   scripts/syscalls-20k.sh ringmq mosquitto rumqttd relay
#
# Brokers: ringmq (RINGMQ, default $CARGO_TARGET_DIR/release/ringmq), mosquitto (PATH), rumqttd
# (RUMQTTD, default target/peers/bin/rumqttd, as bench-compare installs it), relay (RELAY, the
# shards example `mqtt_relay`: the runtime with no broker in it). Environment: DURATION of the
# load [8], WINDOW of perf stat inside it [5], RATE [20000], QOS [0], PORT [19950].
# Needs perf (Debian: linux-perf) and the syscalls tracepoints (root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
RINGMQ="${RINGMQ:-$TARGET/release/ringmq}"
BENCH="${BENCH:-$TARGET/release/ringmq-bench}"
RELAY="${RELAY:-$TARGET/release/examples/mqtt_relay}"
RUMQTTD="${RUMQTTD:-$ROOT/target/peers/bin/rumqttd}"
BROKER_CPU="${BROKER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
DURATION="${DURATION:-8}"
WINDOW="${WINDOW:-5}"
RATE="${RATE:-20000}"
QOS="${QOS:-0}"
PORT="${PORT:-19950}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 1; }
[[ -x "$BENCH" ]] || { echo "$BENCH missing: cargo build --release -p bench" >&2; exit 1; }

start() { # name port
  case "$1" in
    ringmq)
      printf '[runtime]\nshards = 1\ncpus = [%s]\npin = true\n\n[listeners.tcp.default]\nbind = "127.0.0.1:%s"\n\n[log]\nlevel = "warn"\n' \
        "$BROKER_CPU" "$2" >"$OUT/ringmq.toml"
      taskset -c "$BROKER_CPU" "$RINGMQ" --config "$OUT/ringmq.toml" >"$OUT/log" 2>&1 & ;;
    mosquitto)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\nlog_dest none\n' "$2" >"$OUT/m.conf"
      taskset -c "$BROKER_CPU" mosquitto -c "$OUT/m.conf" >"$OUT/log" 2>&1 & ;;
    rumqttd)
      cat >"$OUT/r.toml" <<EOF
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:$2"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 65536
    max_inflight_count = 100
    dynamic_filters = true
EOF
      taskset -c "$BROKER_CPU" "$RUMQTTD" --config "$OUT/r.toml" >"$OUT/log" 2>&1 & ;;
    relay) taskset -c "$BROKER_CPU" "$RELAY" "$2" "$BROKER_CPU" >"$OUT/log" 2>&1 & ;;
    *) echo "unknown broker $1" >&2; exit 1 ;;
  esac
  PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not listen on $2" >&2; cat "$OUT/log" >&2; exit 1
}

printf '| broker | syscalls/msg | io_uring_enter/msg | recv+send/msg | ctx switches/msg | CPU-s per million | top syscalls per msg |\n'
printf '|---|---|---|---|---|---|---|\n'
for broker in "$@"; do
  PORT=$((PORT + 1))
  start "$broker" "$PORT"
  taskset -c "$LOAD_CPU" "$BENCH" pubsub -V 4 -i 1 --threads 1 --quiet -c 16 --subs 16 -t 'bench/%i' \
    -q "$QOS" --rate "$RATE" -s 64 --duration "$DURATION" -p "$PORT" >"$OUT/bench.log" 2>&1 &
  LOAD=$!
  sleep $(((DURATION - WINDOW) / 2 + 1))
  perf stat -x, -e 'syscalls:sys_enter_*,context-switches,task-clock' -p "$PID" -- sleep "$WINDOW" \
    2>"$OUT/perf.csv" >/dev/null || true
  wait "$LOAD" || true
  kill "$PID"; wait "$PID" 2>/dev/null || true
  # Deliveries in the window: the fixed rate times the window (the load generator holds the rate).
  python3 - "$OUT/perf.csv" "$broker" "$((RATE * WINDOW))" <<'EOF'
import sys
path, broker, msgs = sys.argv[1], sys.argv[2], int(sys.argv[3])
counts = {}
for line in open(path):
    parts = line.strip().split(",")
    if len(parts) < 3 or not parts[0].replace(".", "").isdigit():
        continue
    counts[parts[2]] = float(parts[0])
sys_total = sum(v for k, v in counts.items() if k.startswith("syscalls:"))
name = lambda k: k.replace("syscalls:sys_enter_", "")
enter = counts.get("syscalls:sys_enter_io_uring_enter", 0)
io = sum(counts.get("syscalls:sys_enter_" + k, 0) for k in ("recvfrom", "sendto", "read", "write", "readv", "writev", "sendmsg", "recvmsg"))
top = sorted(((v, name(k)) for k, v in counts.items() if k.startswith("syscalls:") and v > 0), reverse=True)[:5]
cpu_ms = counts.get("task-clock", 0)
print(f"| {broker} | {sys_total / msgs:.2f} | {enter / msgs:.2f} | {io / msgs:.2f} | "
      f"{counts.get('context-switches', 0) / msgs:.2f} | {cpu_ms / 1000 / msgs * 1e6:.1f} | "
      + ", ".join(f"{n} {v / msgs:.2f}" for v, n in top) + " |")
EOF
done
