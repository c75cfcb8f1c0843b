#!/usr/bin/env bash
# Churn soak: starts the release broker, then for DURATION seconds runs rounds of ringmq-bench
# `pubsub` (CLIENTS publishers and as many subscribers connect, subscribe, publish QoS 1 for a
# couple of seconds, disconnect), back to back. Every INTERVAL seconds it samples the broker's RSS,
# open file descriptors and threads (/proc/PID) and its connections and sessions gauges
# (/metrics), and prints the curve. It fails if, after the warm-up, RSS grows by more than
# RSS_GROWTH_MAX_KIB, or if once the load has stopped file descriptors, connections or sessions
# are above what they were before the load (a leak of sockets, connection tasks or sessions).
#
# Usage: scripts/soak.sh [DURATION_SECS=600]
# Environment: CLIENTS=50 INTERVAL=5 WARMUP=20 (seconds) RSS_GROWTH_MAX_KIB=32768 SHARDS=2
#              PORT=28830 ADMIN_PORT=28831 ROUND_SECS=2
set -euo pipefail

duration="${1:-600}"
clients="${CLIENTS:-50}"
interval="${INTERVAL:-5}"
warmup="${WARMUP:-20}"
rss_growth_max_kib="${RSS_GROWTH_MAX_KIB:-32768}"
shards="${SHARDS:-2}"
port="${PORT:-28830}"
admin_port="${ADMIN_PORT:-28831}"
round_secs="${ROUND_SECS:-2}"

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
cd "$root"
cargo build --release -q -p ringmq -p bench
broker_bin="$target/release/ringmq"
bench_bin="$target/release/ringmq-bench"

work="$(mktemp -d)"
cat >"$work/soak.toml" <<EOF
[runtime]
shards = $shards
pin = false
[listeners.tcp.default]
bind = "127.0.0.1:$port"
[admin]
bind = "127.0.0.1:$admin_port"
[sys]
enabled = false
EOF

"$broker_bin" --config "$work/soak.toml" >"$work/broker.log" 2>&1 &
broker=$!
load=""
cleanup() {
    if [[ -n "$load" ]]; then kill "$load" 2>/dev/null || true; fi
    kill "$broker" 2>/dev/null || true
    wait "$broker" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

metric() { # name -> value of name{shard="all"}
    curl -s "http://127.0.0.1:$admin_port/metrics" |
        awk -v name="ringmq_$1{shard=\"all\"}" '$1 == name { print $2; exit }'
}
sample() { # -> "rss_kib fds threads connections sessions"
    local rss threads fds
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$broker/status")
    # The broker's own threads; io_uring's kernel workers (iou-wrk-*) come and go with the load.
    threads=$(cat /proc/"$broker"/task/*/comm 2>/dev/null | grep -vc '^iou-wrk' || true)
    fds=$(find "/proc/$broker/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    echo "$rss $fds $threads $(metric connections) $(metric sessions)"
}

for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$admin_port/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
sleep 1.5 # the first metrics snapshot
read -r rss0 fds0 threads0 conns0 sessions0 <<<"$(sample)"
echo "soak: ${duration}s, $clients publishers + $clients subscribers per ${round_secs}s round, $shards shards, pid $broker"
echo "before load: rss ${rss0} KiB, fds $fds0, threads $threads0, connections $conns0, sessions $sessions0"

# The load: rounds of connect, subscribe, publish, disconnect until the deadline.
(
    deadline=$((SECONDS + duration))
    round=0
    while ((SECONDS < deadline)); do
        round=$((round + 1))
        "$bench_bin" pubsub -h 127.0.0.1 -p "$port" -c "$clients" -R 2000 -q 1 -s 256 -I 10 \
            -t "soak/%i" --prefix "soak$round" --duration "$round_secs" --drain 1 --threads 1 \
            --pin false --quiet >/dev/null 2>&1 || echo "soak: round $round failed" >&2
    done
) &
load=$!

printf '%6s %10s %6s %8s %12s %9s\n' secs rss_kib fds threads connections sessions
start=$SECONDS
rss_warm=""
rss_max=0
while kill -0 "$load" 2>/dev/null; do
    sleep "$interval"
    read -r rss fds threads conns sessions <<<"$(sample)"
    elapsed=$((SECONDS - start))
    printf '%6d %10d %6d %8d %12s %9s\n' "$elapsed" "$rss" "$fds" "$threads" "$conns" "$sessions"
    if ((elapsed >= warmup)); then
        [[ -z "$rss_warm" ]] && rss_warm=$rss
        ((rss > rss_max)) && rss_max=$rss
    fi
done
wait "$load" || true
load=""
sleep 3 # closes complete and the metrics snapshot catches up
read -r rss fds threads conns sessions <<<"$(sample)"
echo "after load:  rss ${rss} KiB, fds $fds, threads $threads, connections $conns, sessions $sessions"

failures=()
if [[ -n "$rss_warm" ]]; then
    growth=$((rss_max - rss_warm))
    echo "rss after warm-up: $rss_warm KiB, max $rss_max KiB, growth $growth KiB (bound $rss_growth_max_kib)"
    ((growth > rss_growth_max_kib)) && failures+=("RSS grew by $growth KiB after warm-up")
fi
((fds > fds0)) && failures+=("file descriptors: $fds after load, $fds0 before")
((threads > threads0)) && failures+=("threads: $threads after load, $threads0 before")
[[ "$conns" != "$conns0" ]] && failures+=("connections: $conns after load, $conns0 before")
[[ "$sessions" != "$sessions0" ]] && failures+=("sessions: $sessions after load, $sessions0 before")
if ! kill -0 "$broker" 2>/dev/null; then
    failures+=("the broker exited: $(tail -5 "$work/broker.log")")
fi

if [[ ${#failures[@]} -gt 0 ]]; then
    printf 'soak: FAIL: %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "soak: OK"
