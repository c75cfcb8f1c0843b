#!/usr/bin/env bash
# Measurement (not a test): 1,000,000 QoS 0 messages through one broker core, ringmq (1 shard
# pinned to CPU 0) and then Mosquitto (taskset -c 0), with mosquitto_pub -l and mosquitto_sub on
# CPU 1. Prints, per broker: messages received, wall seconds, messages/s and broker CPU seconds
# (utime + stime from /proc/PID/stat, before and after).
#
# Usage: tests/interop/measure_qos0.sh RINGMQ_BINARY [MESSAGES]
set -euo pipefail

binary=${1:?usage: tests/interop/measure_qos0.sh RINGMQ_BINARY [MESSAGES]}
messages=${2:-1000000}
python=/usr/bin/python3
for tool in mosquitto mosquitto_pub mosquitto_sub taskset; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "measure: missing $tool (apt-get install mosquitto mosquitto-clients util-linux)" >&2
        exit 1
    }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/ringmq-measure.XXXXXX")
broker_pid=
cleanup() {
    [ -n "$broker_pid" ] && kill -KILL "$broker_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

seq -f 'message-%07g' 1 "$messages" >"$work/lines"
ticks=$(getconf CLK_TCK)

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_accepting() {
    for _ in $(seq 100); do
        "$python" -c "import socket; socket.create_connection(('127.0.0.1', $1), timeout=1).close()" \
            2>/dev/null && return 0
        sleep 0.1
    done
    echo "measure: broker not accepting on port $1" >&2
    exit 1
}

cpu_ticks() {
    # Fields 14 and 15 of /proc/PID/stat (after the parenthesised command name).
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}


# Receive time ends at the last message: when all have arrived, or when the count has not grown
# for 3 s (a broker may drop QoS 0 messages for a subscriber that falls behind).
run() {
    local name=$1 port=$2
    wait_accepting "$port"
    taskset -c 1 mosquitto_sub -h 127.0.0.1 -p "$port" -t bench/qos0 -q 0 -C "$messages" -W 300 \
        >"$work/sub.got" &
    local sub_pid=$!
    sleep 0.5
    local before start end after received=0 last=-1 still=0
    before=$(cpu_ticks "$broker_pid")
    start=$(date +%s.%N)
    taskset -c 1 mosquitto_pub -h 127.0.0.1 -p "$port" -t bench/qos0 -q 0 -l <"$work/lines"
    end=$(date +%s.%N)
    while [ "$received" -lt "$messages" ] && [ "$still" -lt 15 ]; do
        sleep 0.2
        received=$(wc -l <"$work/sub.got")
        if [ "$received" -eq "$last" ]; then
            still=$((still + 1))
        else
            still=0
            last=$received
            end=$(date +%s.%N)
        fi
    done
    after=$(cpu_ticks "$broker_pid")
    kill "$sub_pid" 2>/dev/null || true
    wait "$sub_pid" 2>/dev/null || true
    "$python" - "$name" "$received" "$start" "$end" "$before" "$after" "$ticks" <<'EOF'
import sys
name, received, start, end, before, after, ticks = sys.argv[1:]
wall = float(end) - float(start)
cpu = (int(after) - int(before)) / int(ticks)
print(f"{name}: received {int(received):,} messages in {wall:.2f} s = "
      f"{int(received) / wall:,.0f} msg/s; broker CPU {cpu:.2f} s "
      f"({int(received) / cpu if cpu else float('inf'):,.0f} msg per CPU second)")
EOF
}

# ringmq_run NAME [LIMITS]: ringmq on one shard pinned to CPU 0, with extra [limits] lines.
ringmq_run() {
    local name=$1 limits=${2:-}
    local port
    port=$(free_port)
    cat >"$work/ringmq.toml" <<EOF
[runtime]
shards = 1
cpus = [0]
pin = true

[listeners.tcp.default]
bind = "127.0.0.1:$port"

[log]
level = "warn"

[limits]
$limits
EOF
    "$binary" --config "$work/ringmq.toml" >"$work/ringmq.log" 2>&1 &
    broker_pid=$!
    run "$name" "$port"
    kill -TERM "$broker_pid"
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=
}

ringmq_run "ringmq, default limits (outbox_messages_max = 1000)"
ringmq_run "ringmq, outbox_messages_max = $messages" "outbox_messages_max = $messages
outbox_bytes_max = 1073741824"

port=$(free_port)
taskset -c 0 mosquitto -p "$port" >"$work/mosquitto.log" 2>&1 &
broker_pid=$!
run "mosquitto 2.0.11, defaults" "$port"
kill -TERM "$broker_pid"
wait "$broker_pid" 2>/dev/null || true
broker_pid=
