# Sourced by the benchmark scripts that start brokers on loopback (bench-bridge.sh,
# bench-cluster.sh): builds the release binaries unless SKIP_BUILD is set, and gives
# free_port (an OS-chosen free port), wait_port PORT (up to 10 s, else exit 1) and
# cpu_ticks PID (utime + stime of a process, in clock ticks), and one_shard_toml PORT (the config
# of a one-shard, unpinned broker on 127.0.0.1:PORT with deep outboxes, no admin, no $SYS).
#
# Expects ROOT (the repository) and sets TARGET, RINGMQ and BENCH.
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ -z "${SKIP_BUILD:-}" ]]; then
    (cd "$ROOT" && cargo build --release --bins --workspace)
fi
RINGMQ="$TARGET/release/ringmq"
BENCH="$TARGET/release/ringmq-bench"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 not listening" >&2; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
one_shard_toml() {
    cat <<TOML
[runtime]
shards = 1
pin = false
[listeners.tcp.default]
bind = "127.0.0.1:$1"
[admin]
enabled = false
[sys]
enabled = false
[limits]
outbox_messages_max = 100000
outbox_bytes_max = 67108864
TOML
}
