# Sourced by scripts that measure one pinned shard (slow-consumer.sh, flood.sh).
#
# start_pinned_broker NAME BINARY CPU PORT WORKDIR [EXTRA_TOML]
#   Writes WORKDIR/broker.toml (one shard pinned to CPU, a TCP listener on 127.0.0.1:PORT, then
#   EXTRA_TOML), starts BINARY on CPU with it (log in WORKDIR/broker.log), sets broker_pid, and
#   waits up to 10 s for the port; if the broker does not listen, prints its log and exits 1.
start_pinned_broker() {
    local name="$1" binary="$2" cpu="$3" port="$4" work="$5" extra="${6:-}"
    cat >"$work/broker.toml" <<TOML
[runtime]
shards = 1
cpus = [$cpu]
pin = true
[listeners.tcp.default]
bind = "127.0.0.1:$port"
$extra
TOML
    taskset -c "$cpu" "$binary" --config "$work/broker.toml" >"$work/broker.log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name: the broker did not start; its log:" >&2
    cat "$work/broker.log" >&2
    exit 1
}
