#!/usr/bin/env bash
# Instructions the broker executes for a fixed amount of work, under callgrind: a measure that a
# busy machine does not disturb (wall-clock throughput does). One shard pinned to BROKER_CPU,
# ringmq-bench on LOAD_CPU, a fixed message count per scenario; prints the bench summary and the
# broker's total instructions (Ir) and leaves the profile for callgrind_annotate.
#
#   scripts/callgrind-bench.sh SCENARIO [BROKER_BINARY]
#
# SCENARIO: fanin (8->1 QoS 0, 200,000 messages), fanout (1->16 QoS 0, 200,000 deliveries),
# pairs (16 pairs QoS 0, 200,000 messages), pairs-q1 (the same at QoS 1: publishers and
# subscribers), pairs4k (16 pairs QoS 0 with 4 KiB payloads), pair1k (one pair at a fixed 1,000 msgs/s, 5,000
# messages: about one message per read and per write, where per-read costs show), none (the
# connections and one message each: the fixed cost to subtract). Per message: (Ir - Ir of `none`) / 200,000.
#
# TOOL=perf runs the broker at full speed under `perf stat` instead, with SCALE times the
# messages (default 10: 2,000,000), and prints its CPU time (task-clock, kernel included: system
# calls, TCP, io_uring; it moves with the machine's load) and its system calls by kind; per
# message = (count - count of `none`) / messages. (Hardware counters such as `instructions`
# would be better; the development VM has no PMU: `perf stat -e instructions` is
# `<not supported>` there.)
# TOOL=record runs it at full speed under `perf record` (FREQ [4000] samples a second, no call
# graphs) into OUT/record.SCENARIO.TIME: where the time goes, for `perf report --no-children
# --sort symbol -i` on two builds' records side by side.
# BROKER_TOML: more lines for the broker's config (e.g. 'observability.kernel_timestamps = true').
#
# Environment: BROKER_CPU [0], LOAD_CPU [1], PORT [19883], OUT [target/callgrind], TOOL
# [callgrind], SCALE [1 for callgrind, 10 for perf], BROKER_TOML [].
# Needs valgrind and release builds of ringmq and ringmq-bench in CARGO_TARGET_DIR (or target/).
# The broker runs about 50 times slower under callgrind, so its reads see larger batches than
# at full speed: compare runs of this script with each other, not with `perf stat` figures.
set -euo pipefail
: "${BROKER_CPU:=0}" "${LOAD_CPU:=1}" "${PORT:=19883}" "${TOOL:=callgrind}" "${BROKER_TOML:=}"
if [ "$TOOL" = callgrind ]; then : "${SCALE:=1}"; else : "${SCALE:=10}"; fi

scenario="${1:?usage: callgrind-bench.sh fanin|fanout|pairs|pairs-q1|pairs4k|pair1k|none [broker binary]}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
out="${OUT:-$root/target/callgrind}"
mkdir -p "$out"
broker="${2:-$target/release/ringmq}"
bench="$target/release/ringmq-bench"

common=(pubsub -V 4 -i 1 --threads 1 --quiet -I 0 --drain 60 -p "$PORT")
q0=(-q 0 -s 64)
case "$scenario" in
  fanin)  args=("${q0[@]}" -c 8 --subs 1 -t 'bench/%i' --sub-topic 'bench/#' -L $((25000 * SCALE))) ;;
  fanout) args=("${q0[@]}" -c 1 --subs 16 -t bench/fan --sub-topic bench/fan -L $((12500 * SCALE))) ;;
  pairs)  args=("${q0[@]}" -c 16 --subs 16 -t 'bench/%i' -L $((12500 * SCALE))) ;;
  pairs-q1) args=(-q 1 -F 16 -s 64 -c 16 --subs 16 -t 'bench/%i' -L $((12500 * SCALE))) ;;
  pairs4k) args=(-q 0 -s 4096 -c 16 --subs 16 -t 'bench/%i' -L $((12500 * SCALE))) ;;
  pair1k) args=("${q0[@]}" -c 1 --subs 1 -t 'bench/%i' --rate 1000 -L $((5000 * SCALE))) ;;
  none)   args=("${q0[@]}" -c 8 --subs 1 -t 'bench/%i' --sub-topic 'bench/#' -L 1) ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac

# One shard pinned, plain TCP, no admin listener, quiet log.
cat >"$out/broker.toml" <<EOF
runtime = { shards = 1, cpus = [$BROKER_CPU], pin = true }
listeners.tcp.default.bind = "127.0.0.1:$PORT"
admin.enabled = false
log.level = "warn"
$BROKER_TOML
EOF

profile="$out/$TOOL.$scenario.$(date +%H%M%S)"
if [ "$TOOL" = perf ]; then
  events=task-clock,raw_syscalls:sys_enter,syscalls:sys_enter_recvfrom,syscalls:sys_enter_recvmsg
  events+=,syscalls:sys_enter_sendto,syscalls:sys_enter_io_uring_enter
  taskset -c "$BROKER_CPU" perf stat -x, -e "$events" -o "$profile" \
    "$broker" -c "$out/broker.toml" >"$profile.log" 2>&1 &
elif [ "$TOOL" = record ]; then
  taskset -c "$BROKER_CPU" perf record -F "${FREQ:-4000}" -o "$profile" \
    "$broker" -c "$out/broker.toml" >"$profile.log" 2>&1 &
else
  taskset -c "$BROKER_CPU" valgrind --tool=callgrind --callgrind-out-file="$profile" \
    "$broker" -c "$out/broker.toml" >"$profile.log" 2>&1 &
fi
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.3
done
taskset -c "$LOAD_CPU" "$bench" "${common[@]}" "${args[@]}" | grep -E '^(connections|messages|streams)'
if [ "$TOOL" = perf ] || [ "$TOOL" = record ]; then
  # perf stat prints its counts when the broker it runs exits: stop the broker, not perf.
  kill -TERM "$(ps -o pid= --ppid "$pid")"
else
  kill -TERM "$pid"
fi
wait "$pid" || true
trap - EXIT
if [ "$TOOL" = perf ]; then
  awk -F, '/task-clock|sys_enter/ { print "broker " $3 ": " $1 }' "$profile"
elif [ "$TOOL" = record ]; then
  echo "profile: $profile (perf report --no-children --sort symbol -i $profile)"
else
  grep -o 'Collected : [0-9]*' "$profile.log" | sed "s/Collected :/broker instructions (Ir):/"
  echo "profile: $profile (callgrind_annotate $profile | head -60)"
fi
