#!/usr/bin/env bash
# Broker CPU per connect+CONNACK and RSS per idle connection, measured on the connect phase alone
# (issue #15 targets 4 and 5). One broker at a time on a pinned core; ringmq-bench opens CONNS
# idle 3.1.1 connections (keepalive 300) from another core. The broker's CPU is read from
# /proc/PID/task/*/schedstat (nanoseconds, all threads) before the first connect and once the
# last one is accepted and the broker has gone quiet (under 2 ms of CPU in 50 ms); user and
# system time come from /proc/PID/stat (10 ms ticks, so only a rough split). The disconnects are
# not counted. The broker's CPU over the next idle second (its timers with all connections open)
# is measured too, and a second figure takes that rate over the connect phase off: an upper
# bound of what timers took meanwhile, so the two figures bracket the cost of the connects.
# Before starting, the script waits (at most 65 s) until fewer than 1,000 sockets are in
# TIME_WAIT: thousands left by an earlier run slow the client's search for a free port, the
# connect phase gets longer, and the broker's timers take a larger share of it.
#
# Usage: scripts/connect-cost.sh NAME -- BROKER COMMAND...   (the broker listens on $PORT)
# Environment: PORT [19960], CONNS [10000], RATE connects/s asked [20000], BROKER_CPU [0],
#   LOAD_CPU [1], BENCH [ringmq-bench of CARGO_TARGET_DIR or target, release], SETTLE seconds
#   between the broker's start and the first connect [3]: ringmq allocates several MB for its
#   metric snapshots in its first second, which a start-up RSS read earlier would count as the
#   connections' (about 860 B per connection of 10,000 when read half a second after the
#   start; bench-compare.sh reads it 0.3 s after the port answers), IDLE_SECS length of the
#   idle window whose CPU rate is reported [1] (10 gives a steadier figure).
# Example, ringmq against Mosquitto:
#   scripts/connect-cost.sh ringmq -- target/release/ringmq --config one-shard.toml
#   scripts/connect-cost.sh mosquitto -- mosquitto -c mosquitto.conf
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${PORT:-19960}"
CONNS="${CONNS:-10000}"
RATE="${RATE:-20000}"
BROKER_CPU="${BROKER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
BENCH="${BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ringmq-bench}"
SETTLE="${SETTLE:-3}"
IDLE_SECS="${IDLE_SECS:-1}"

die() { echo "connect-cost: $*" >&2; exit 1; }
[[ $# -ge 3 && "$2" == "--" ]] || die "usage: $0 NAME -- BROKER COMMAND..."
name="$1"
shift 2
[[ -x "$BENCH" ]] || die "$BENCH not found: cargo build --release -p bench, or set BENCH"
command -v taskset >/dev/null || die "taskset not found: apt-get install util-linux"

if command -v ss >/dev/null; then
  for _ in $(seq 65); do
    (( $(ss -tan state time-wait 2>/dev/null | tail -n +2 | wc -l) < 1000 )) && break
    sleep 1
  done
else
  echo "connect-cost: ss not found (apt-get install iproute2): not waiting for TIME_WAIT sockets" >&2
fi
log="$(mktemp)"
taskset -c "$BROKER_CPU" "$@" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "the broker exited"; }
  sleep 0.1
done
# Settled: its first metric snapshots are taken, so their memory is not counted as the
# connections'.
sleep "$SETTLE"

cpu_ns() { cat /proc/"$pid"/task/*/schedstat | awk '{ns += $1} END {printf "%.0f\n", ns}'; }
ticks() {
  local stat
  stat="$(cat /proc/"$pid"/stat)"
  stat="${stat##*) }"
  awk '{print $12, $13}' <<<"$stat"
}
rss_kib() { awk '/VmRSS/ {print $2}' /proc/"$pid"/status; }
fds() { find /proc/"$pid"/fd -mindepth 1 -maxdepth 1 | wc -l; }

fds0="$(fds)"
ns0="$(cpu_ns)"
read -r user0 sys0 < <(ticks)
rss0="$(rss_kib)"
start="$(date +%s.%N)"
taskset -c "$LOAD_CPU" "$BENCH" conn -V 4 --threads 1 --quiet -c "$CONNS" -R "$RATE" -k 300 \
  --duration "$(( CONNS / RATE + 70 ))" -p "$PORT" >"$log.bench" 2>&1 &
bench=$!
# Every connection accepted (one descriptor each), at most 60 s.
connected=no
for _ in $(seq 1200); do
  sleep 0.05
  if (( $(fds) >= fds0 + CONNS )); then connected=yes; break; fi
done
# Then the broker goes quiet: its last CONNACKs are out (at most 5 s).
previous="$(cpu_ns)"
for _ in $(seq 100); do
  sleep 0.05
  now="$(cpu_ns)"
  (( now - previous < 2000000 )) && break
  previous="$now"
done
ns1="$now"
read -r user1 sys1 < <(ticks)
rss1="$(rss_kib)"
end="$(date +%s.%N)"
sleep "$IDLE_SECS"
ns2="$(cpu_ns)"
idle_end="$(date +%s.%N)"
# The connections must still be open through the idle second: its figure would count their
# disconnects otherwise. The generator holds them well past it and is stopped here.
kill -0 "$bench" 2>/dev/null \
  || die "$name: ringmq-bench ended before the idle second: $(tail -3 "$log.bench")"
kill "$bench" 2>/dev/null
wait "$bench" 2>/dev/null || true
rm -f "$log" "$log.bench"
[[ "$connected" == yes ]] || die "$name: not all $CONNS connections were accepted within 60 s"
awk -v name="$name" -v n="$CONNS" -v ns0="$ns0" -v ns1="$ns1" -v ns2="$ns2" \
  -v u0="$user0" -v u1="$user1" -v s0="$sys0" -v s1="$sys1" -v tck="$(getconf CLK_TCK)" \
  -v r0="$rss0" -v r1="$rss1" -v t0="$start" -v t1="$end" -v t2="$idle_end" 'BEGIN {
  idle = (ns2 - ns1) / 1e9 / (t2 - t1)
  printf "%s: %d connections in %.2f s; broker CPU per connect %.1f us (%.1f without the idle rate; user %.1f, system %.1f by ticks); idle CPU %.1f ms/s; RSS per connection %d B\n",
    name, n, t1 - t0, (ns1 - ns0) / 1000 / n, ((ns1 - ns0) / 1e9 - idle * (t1 - t0)) * 1e6 / n,
    (u1 - u0) * 1e6 / tck / n, (s1 - s0) * 1e6 / tck / n, idle * 1000, (r1 - r0) * 1024 / n }'
