#!/usr/bin/env bash
# Cross-node throughput of a two-node cluster (docs/CLUSTER.md): nats-server with JetStream,
# node A and node B (one shard each, so each node is one process with one shard thread and its
# NATS link thread). ringmq-bench publishes on A for DURATION seconds and subscribers receive:
# one on B subscribed to bench/# (PAIRS=0), or PAIRS pairs, publisher i on A publishing to
# bench/i and subscriber i subscribed to it, on B (PLACE=cross) or on A itself (PLACE=same: the
# same work without the cluster hop, B idle beside it). Prints, per QoS and place: messages/s
# received, and CPU-seconds per million messages of A, B and nats-server (utime + stime over
# the run, from /proc).
#
# Environment (defaults in brackets):
#   DURATION  seconds per run [10]     QOS       QoS values ["0 1"]
#   PUBS      publishers [4]           INFLIGHT  QoS 1 in flight per publisher [64]
#   PAIRS     publisher/subscriber pairs instead of PUBS and one subscriber [0]
#   PLACE     where the pairs' subscribers are: "cross" (B), "same" (A), or both ["cross"]
#   RATE      publish rate over all publishers, msgs/s [closed loop: as fast as acknowledged]
#   JETSTREAM cluster.jetstream on the nodes [true]
#   SUB_EXPIRY  the subscribers' Session Expiry Interval, s [0]; above 0 their sessions are
#             persistent, so B keeps a copy of each QoS 1/2 message for them in the stream of
#             queued messages until acknowledged (docs/CLUSTER.md)
#   SKIP_BUILD=1  use the release binaries already in CARGO_TARGET_DIR (or target/)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
QOS="${QOS:-0 1}"
PUBS="${PUBS:-4}"
INFLIGHT="${INFLIGHT:-64}"
JETSTREAM="${JETSTREAM:-true}"
PAIRS="${PAIRS:-0}"
PLACE="${PLACE:-cross}"
SUB_EXPIRY="${SUB_EXPIRY:-0}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT

# shellcheck source=lib/bench-common.sh
source "$ROOT/scripts/lib/bench-common.sh"
NATS="$(command -v nats-server || echo /usr/sbin/nats-server)"
[[ -x $NATS ]] || { echo "install nats-server: apt-get install nats-server" >&2; exit 1; }


start_node() { # id port nats_port -> pid
    local id=$1 port=$2 nats_port=$3
    {
        one_shard_toml "$port"
        cat <<EOT
[cluster]
enabled = true
nats_urls = ["nats://127.0.0.1:$nats_port"]
node_id = "$id"
jetstream = $JETSTREAM
EOT
    } > "$WORK/$id.toml"
    "$RINGMQ" --config "$WORK/$id.toml" >"$WORK/$id.log" 2>&1 &
    echo $!
}

printf '%-4s %-6s %12s %14s %14s %14s\n' qos place msgs/s "A CPU-s/M" "B CPU-s/M" "NATS CPU-s/M"
for qos in $QOS; do
for place in $PLACE; do
    nats_port=$(free_port); a_port=$(free_port); b_port=$(free_port)
    rm -rf "$WORK/js"
    "$NATS" -a 127.0.0.1 -p "$nats_port" -js -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
    nats_pid=$!
    wait_port "$nats_port"
    a_pid=$(start_node a "$a_port" "$nats_port")
    b_pid=$(start_node b "$b_port" "$nats_port")
    wait_port "$a_port"; wait_port "$b_port"
    sleep 2
    if [[ $PAIRS -gt 0 ]]; then
        pubs=$PAIRS; subs=(-c "$PAIRS" -t 'bench/%i')
    else
        pubs=$PUBS; subs=(-c 1 -t 'bench/#')
    fi
    sub_port=$b_port
    [[ $place == same ]] && sub_port=$a_port
    "$BENCH" sub -p "$sub_port" "${subs[@]}" -q "$qos" -x "$SUB_EXPIRY" --duration $((DURATION + 4)) --quiet --json "$WORK/sub.json" >/dev/null 2>&1 &
    sub_pid=$!
    # The subscription's interest reaches A within a heartbeat.
    sleep 2
    a_before=$(cpu_ticks "$a_pid"); b_before=$(cpu_ticks "$b_pid"); n_before=$(cpu_ticks "$nats_pid")
    rate_args=(-I 0)
    [[ -n "${RATE:-}" ]] && rate_args=(--rate "$RATE")
    "$BENCH" pub -p "$a_port" -c "$pubs" -q "$qos" -F "$INFLIGHT" "${rate_args[@]}" --duration "$DURATION" --quiet >/dev/null 2>&1 || true
    sleep 1
    a_after=$(cpu_ticks "$a_pid"); b_after=$(cpu_ticks "$b_pid"); n_after=$(cpu_ticks "$nats_pid")
    wait "$sub_pid" || true
    received=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["totals"]["received"])' "$WORK/sub.json" 2>/dev/null || echo 0)
    python3 - "$received" "$DURATION" "$(getconf CLK_TCK)" "$qos" "$place" \
        "$a_before" "$a_after" "$b_before" "$b_after" "$n_before" "$n_after" <<'PY'
import sys
received, duration, hz = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
qos, place = sys.argv[4], sys.argv[5]
ticks = [int(x) for x in sys.argv[6:]]
def per_million(before, after):
    return (after - before) / hz / received * 1e6 if received else float("nan")
a, b, n = (per_million(ticks[i], ticks[i + 1]) for i in (0, 2, 4))
print(f"{qos:<4} {place:<6} {received / duration:12.0f} {a:14.2f} {b:14.2f} {n:14.2f}")
PY
    kill "$a_pid" "$b_pid" "$nats_pid" 2>/dev/null || true
    wait "$a_pid" "$b_pid" "$nats_pid" 2>/dev/null || true
done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
