#!/usr/bin/env bash
# What one message costs a broker at a moderate load, in counts rather than time: system calls,
# io_uring_enter calls and context switches per message and per read, plus CPU time, from
# `perf stat -p` on the broker while ringmq-bench sends 16 pairs at a fixed 20k msgs/s, QoS 0,
# 64 B (the load of bench-compare's lat20k-q0). Broker on BROKER_CPU, load on LOAD_CPU.
#
#   scripts/syscalls-20k.sh ringmq mosquitto rumqttd relay epoll-relay
#
# ringmq-stamps runs ringmq with `observability.kernel_timestamps = true` (reads are `recvmsg`
# with the kernel's receive timestamp, plus one wall-clock reading per read).
# ringmq-recv0 and relay-recv0 run them without the shards' receive buffer pool
# (`runtime.recv_buffers = 0`): reads wait for readiness and `recv`, as before the pool. With the
# pool a read is an io_uring receive, not a system call, so the columns per read are empty.
#
# Brokers: ringmq (RINGMQ, default $CARGO_TARGET_DIR/release/ringmq), mosquitto (PATH), rumqttd
# (RUMQTTD, default target/peers/bin/rumqttd, as bench-compare installs it), relay (RELAY, the
# shards example `mqtt_relay`: the runtime with no broker in it), epoll-relay (EPOLL_RELAY, the
# shards example `epoll_relay`: the same relay on plain epoll, the floor reference).
#
# Two windows of WINDOW seconds each inside the load: the first counts CPU time and context
# switches alone, the second the system calls. They are kept apart because tracing every system
# call's entry makes each system call dearer: with the syscall tracepoints on, CPU per message read
# 26-30 CPU-s per million for both relays (epoll and shards) where it is 13-16.5 without them.
#
# Environment: DURATION of the load [13], WINDOW of each perf stat [5], RATE [20000],
# QOS [0], PORT [19950]; RT [10] runs the broker SCHED_FIFO at that priority (`chrt -f`; 0: an
# ordinary task); LOAD_RT [0] the same for the generator; SPIN_US [1000] the generator's spin
# before sleeping (bench-compare's value; a spinning generator must not run at real-time
# priority, the kernel's RT throttling would stop it 50 ms in every second). KEEP=1 keeps the
# temporary folder (configs, logs). RECORD=DIR records a profile of each broker instead of
# counting (`perf record -g` at FREQ [4000] Hz over the window, into DIR/NAME.perf.data).
#
# On a machine busy with other work an ordinary broker waits for its core, messages pile up and
# each wake-up handles a batch: per-message counts then measure the machine's load. Real-time
# priority gives the broker its core the moment it wakes. How many messages one read brings still
# varies with the generator's timing, so the columns per read (a read is one wake-up of one
# connection) are the ones to compare between runs. Needs perf (Debian: linux-perf) and root (the
# syscalls tracepoints, chrt).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
RINGMQ="${RINGMQ:-$TARGET/release/ringmq}"
BENCH="${BENCH:-$TARGET/release/ringmq-bench}"
RELAY="${RELAY:-$TARGET/release/examples/mqtt_relay}"
EPOLL_RELAY="${EPOLL_RELAY:-$TARGET/release/examples/epoll_relay}"
RUMQTTD="${RUMQTTD:-$ROOT/target/peers/bin/rumqttd}"
BROKER_CPU="${BROKER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
DURATION="${DURATION:-13}"
WINDOW="${WINDOW:-5}"
RATE="${RATE:-20000}"
QOS="${QOS:-0}"
PORT="${PORT:-19950}"
RT="${RT:-10}"
OUT="$(mktemp -d)"
trap '[[ -n "${KEEP:-}" ]] || rm -rf "$OUT"' EXIT

command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 1; }
[[ -x "$BENCH" ]] || { echo "$BENCH missing: cargo build --release -p bench" >&2; exit 1; }

# Runs "$@" on CPU $1 (shifted off), at real-time priority RT unless RT=0. Only in the background
# (`on_cpu ... &`): it execs, so $! is the command's own pid, the one perf attaches to.
on_cpu() {
  local cpu="$1"; shift
  if [[ "$RT" == 0 ]]; then exec taskset -c "$cpu" "$@"; fi
  exec chrt -f "$RT" taskset -c "$cpu" "$@"
}

start() { # name port
  case "$1" in
    ringmq|ringmq-recv0|ringmq-stamps)
      printf '[runtime]\nshards = 1\ncpus = [%s]\npin = true\nrecv_buffers = %s\n\n[listeners.tcp.default]\nbind = "127.0.0.1:%s"\n\n[admin]\nenabled = false\n\n[log]\nlevel = "warn"\n\n[observability]\nkernel_timestamps = %s\n' \
        "$BROKER_CPU" "$([[ "$1" == ringmq-recv0 ]] && echo 0 || echo 64)" "$2" \
        "$([[ "$1" == ringmq-stamps ]] && echo true || echo false)" >"$OUT/ringmq.toml"
      on_cpu "$BROKER_CPU" "$RINGMQ" --config "$OUT/ringmq.toml" >"$OUT/log" 2>&1 & ;;
    mosquitto)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\nlog_dest none\n' "$2" >"$OUT/m.conf"
      on_cpu "$BROKER_CPU" mosquitto -c "$OUT/m.conf" >"$OUT/log" 2>&1 & ;;
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
      on_cpu "$BROKER_CPU" "$RUMQTTD" --config "$OUT/r.toml" >"$OUT/log" 2>&1 & ;;
    relay) on_cpu "$BROKER_CPU" "$RELAY" "$2" "$BROKER_CPU" >"$OUT/log" 2>&1 & ;;
    relay-recv0) on_cpu "$BROKER_CPU" "$RELAY" "$2" "$BROKER_CPU" 0 >"$OUT/log" 2>&1 & ;;
    epoll-relay) on_cpu "$BROKER_CPU" "$EPOLL_RELAY" "$2" "$BROKER_CPU" >"$OUT/log" 2>&1 & ;;
    *) echo "unknown broker $1" >&2; exit 1 ;;
  esac
  PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not listen on $2" >&2; cat "$OUT/log" >&2; exit 1
}

if [[ -z "${RECORD:-}" ]]; then
  printf '| broker | syscalls/msg | io_uring_enter/msg | reads/msg | syscalls per read | io_uring_enter per read | ctx switches/msg | CPU-s per million | top syscalls per msg |\n'
  printf '|---|---|---|---|---|---|---|---|---|\n'
fi
for broker in "$@"; do
  PORT=$((PORT + 1))
  start "$broker" "$PORT"
  # bench-compare's lat20k-q0: the generator spins up to 1 ms instead of sleeping between sends,
  # so it sends each message on time (a sleeping generator wakes late and sends bursts). It runs
  # at ordinary priority: spinning at real-time priority would trip the kernel's RT throttling.
  RT="${LOAD_RT:-0}" on_cpu "$LOAD_CPU" "$BENCH" pubsub -V 4 -i 1 --threads 1 --quiet -c 16 --subs 16 \
    -t 'bench/%i' -q "$QOS" --rate "$RATE" -s 64 --spin-us "${SPIN_US:-1000}" --duration "$DURATION" \
    -p "$PORT" >"$OUT/bench.log" 2>&1 &
  LOAD=$!
  sleep $(((DURATION - 2 * WINDOW) / 2 + 1))
  if [[ -n "${RECORD:-}" ]]; then
    perf record -q -F "${FREQ:-4000}" -g -o "$RECORD/$broker.perf.data" -p "$PID" -- sleep "$WINDOW" \
      >/dev/null 2>&1 || true
  else
    perf stat -x, -e 'context-switches,task-clock' -p "$PID" -- sleep "$WINDOW" \
      2>"$OUT/cpu.csv" >/dev/null || true
    perf stat -x, -e 'syscalls:sys_enter_*' -p "$PID" -- sleep "$WINDOW" \
      2>"$OUT/perf.csv" >/dev/null || true
  fi
  wait "$LOAD" || true
  kill "$PID"
  for _ in $(seq 20); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  grep -E "^(messages|e2e)" "$OUT/bench.log" | sed "s/^/  $broker: /" >&2
  if [[ -n "${RECORD:-}" ]]; then
    echo "  $broker: profile in $RECORD/$broker.perf.data" >&2
    continue
  fi
  # Deliveries in the window: the fixed rate times the window (the load generator holds the rate).
  python3 - "$OUT/cpu.csv" "$OUT/perf.csv" "$broker" "$((RATE * WINDOW))" <<'EOF'
import sys
broker, msgs = sys.argv[3], int(sys.argv[4])
counts = {}
for path in sys.argv[1:3]:
    for line in open(path):
        parts = line.strip().split(",")
        if len(parts) < 3 or not parts[0].replace(".", "").isdigit():
            continue
        counts[parts[2]] = float(parts[0])
sys_total = sum(v for k, v in counts.items() if k.startswith("syscalls:"))
name = lambda k: k.replace("syscalls:sys_enter_", "")
enter = counts.get("syscalls:sys_enter_io_uring_enter", 0)
reads = sum(counts.get("syscalls:sys_enter_" + k, 0) for k in ("recvfrom", "read", "readv", "recvmsg"))
top = sorted(((v, name(k)) for k, v in counts.items() if k.startswith("syscalls:") and v > 0), reverse=True)[:5]
cpu_ms = counts.get("task-clock", 0)
switches = counts.get("context-switches", 0)
per_read = lambda n: f"{n / reads:.2f}" if reads else "-"
print(f"| {broker} | {sys_total / msgs:.2f} | {enter / msgs:.2f} | {reads / msgs:.2f} | "
      f"{per_read(sys_total)} | {per_read(enter)} | {switches / msgs:.2f} | "
      f"{cpu_ms / 1000 / msgs * 1e6:.1f} | "
      + ", ".join(f"{n} {v / msgs:.2f}" for v, n in top) + " |")
EOF
done
