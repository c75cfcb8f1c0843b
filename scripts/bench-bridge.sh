#!/usr/bin/env bash
# Forwarding rate of one bridge: an edge ringmq (one shard, so the bridging shard is the whole
# process) bridges `bench/#` out to a remote broker (ringmq or Mosquitto). ringmq-bench publishes
# on the edge for DURATION seconds and subscribes on the remote. Prints, per remote and QoS:
# messages/s received on the remote and the edge's CPU-seconds per million messages (utime +
# stime of the edge process over the run, from /proc).
#
# Environment (defaults in brackets):
#   DURATION  seconds per run [10]     QOS       QoS values ["0 1"]
#   REMOTES   ["ringmq mosquitto"]     RATE      publish rate, msgs/s [closed loop: as fast as acked]
#   PUBS      publishers [4]           INFLIGHT  QoS 1 in flight per publisher [64]
#   SKIP_BUILD=1  use the release binaries already in CARGO_TARGET_DIR (or target/)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
QOS="${QOS:-0 1}"
REMOTES="${REMOTES:-ringmq mosquitto}"
PUBS="${PUBS:-4}"
INFLIGHT="${INFLIGHT:-64}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT

# shellcheck source=lib/bench-common.sh
source "$ROOT/scripts/lib/bench-common.sh"
command -v mosquitto >/dev/null || { echo "install mosquitto: apt-get install mosquitto" >&2; exit 1; }


start_remote() { # kind port -> pid
    local kind=$1 port=$2
    if [[ $kind == mosquitto ]]; then
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n' "$port" > "$WORK/mosquitto.conf"
        mosquitto -c "$WORK/mosquitto.conf" >/dev/null 2>&1 &
    else
        printf '[runtime]\nshards = 1\npin = false\n[listeners.tcp.default]\nbind = "127.0.0.1:%s"\n[admin]\nenabled = false\n[sys]\nenabled = false\n' "$port" > "$WORK/remote.toml"
        "$RINGMQ" --config "$WORK/remote.toml" >/dev/null 2>&1 &
    fi
    echo $!
}

printf '%-10s %-4s %12s %18s\n' remote qos msgs/s "edge CPU-s/M"
for remote in $REMOTES; do
    for qos in $QOS; do
        remote_port=$(free_port); edge_port=$(free_port)
        remote_pid=$(start_remote "$remote" "$remote_port")
        wait_port "$remote_port"
        {
            one_shard_toml "$edge_port"
            cat <<EOF
[bridges.bench]
addresses = ["127.0.0.1:$remote_port"]
inflight_max = 1000
[[bridges.bench.topics]]
topic = "bench/#"
direction = "out"
qos = $qos
EOF
        } > "$WORK/edge.toml"
        "$RINGMQ" --config "$WORK/edge.toml" >/dev/null 2>&1 &
        edge_pid=$!
        wait_port "$edge_port"
        sleep 1
        "$BENCH" sub -p "$remote_port" -c 1 -t 'bench/#' -q "$qos" --duration $((DURATION + 3)) --quiet --json "$WORK/sub.json" >/dev/null 2>&1 &
        sub_pid=$!
        sleep 1
        before=$(cpu_ticks "$edge_pid")
        rate_args=(-I 0)
        [[ -n "${RATE:-}" ]] && rate_args=(--rate "$RATE")
        "$BENCH" pub -p "$edge_port" -c "$PUBS" -q "$qos" -F "$INFLIGHT" "${rate_args[@]}" --duration "$DURATION" --quiet >/dev/null 2>&1 || true
        after=$(cpu_ticks "$edge_pid")
        wait "$sub_pid" || true
        received=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["totals"]["received"])' "$WORK/sub.json" 2>/dev/null || echo 0)
        hz=$(getconf CLK_TCK)
        python3 - "$received" "$DURATION" "$before" "$after" "$hz" "$remote" "$qos" <<'PY'
import sys
received, duration, before, after, hz = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cpu = (after - before) / hz
rate = received / duration if duration else 0
per_million = cpu / received * 1e6 if received else float("nan")
print(f"{sys.argv[6]:<10} {sys.argv[7]:<4} {rate:12.0f} {per_million:18.3f}")
PY
        kill "$edge_pid" "$remote_pid" 2>/dev/null || true
        wait "$edge_pid" "$remote_pid" 2>/dev/null || true
    done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
