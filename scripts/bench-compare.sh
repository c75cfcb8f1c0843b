#!/usr/bin/env bash
# Side-by-side: ringmq, Mosquitto and rumqttd under the same load from ringmq-bench, one broker at
# a time on the same pinned core, scenarios alternating between brokers, REPS repetitions, median
# reported. Prints one table (msgs/s, broker CPU-seconds per million messages, latency
# percentiles, peak RSS, ratio to ringmq) and keeps every run's JSON under OUT.
#
# MQTT over WebSocket: the brokers `ringmq-ws`, `rumqttd-ws` and `mosquitto-ws` run the same
# scenarios with ringmq-bench --ws (path /mqtt, subprotocol mqtt, each client write one binary
# message) against the broker's WebSocket listener, e.g.
#   BROKERS="ringmq ringmq-ws rumqttd-ws" SCENARIOS="pairs16-q0 fanin8-q0" scripts/bench-compare.sh
# Debian's mosquitto 2.0.11 (bookworm) is built without libwebsockets, so for mosquitto-ws the
# script uses scripts/mosquitto-ws.sh: the same Debian source package built with websockets.
#
# Environment (defaults in brackets):
#   DURATION   seconds per scenario run [10]          REPS       repetitions, median reported [3]
#   BROKER_CPU core for the broker [0]                LOAD_CPU   core for ringmq-bench [1]
#   BROKERS    which brokers ["ringmq mosquitto rumqttd"]; also ringmq-ws, rumqttd-ws, mosquitto-ws,
#              and ringmq-recv0 (ringmq without the receive buffer pool: runtime.recv_buffers = 0)
#              and ringmq-base (the ringmq binary BASE_RINGMQ, e.g. a build of the commit before a
#              change, with ringmq's config: before/after in one run; not RINGMQ_*, which ringmq
#              reads as configuration)
#   SCENARIOS  which scenarios [all; see scenario_args]
#   PORT       first broker port [19883]; one more each run  OUT        results folder [target/bench-compare/<time>]
#   IDLE_CONNS connections of the idle scenario [10000]
#   PERSIST    off | always | periodic [off]: ringmq's [persistence] fsync mode (a fresh store per
#              run); anything but off also turns on Mosquitto's `persistence true` (its own
#              model: a snapshot every autosave_interval, 1800 s by default, and at exit)
#   SKIP_BUILD=1  use the release binaries already in CARGO_TARGET_DIR (or target/)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
REPS="${REPS:-3}"
BROKER_CPU="${BROKER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
BROKERS="${BROKERS:-ringmq mosquitto rumqttd}"
SCENARIOS="${SCENARIOS:-fanin8-q0 fanin8-q1 fanin8-q1s0 pairs16-q0 fanout16-q0 pairs16-4k lat20k-q0 lat20k-q1 idle10k}"
PORT_BASE="${PORT:-19883}"
PORT="$PORT_BASE"
IDLE_CONNS="${IDLE_CONNS:-10000}"
PERSIST="${PERSIST:-off}"
OUT="${OUT:-$ROOT/target/bench-compare/$(date +%Y%m%d-%H%M%S)}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PEERS="$ROOT/target/peers"
PYTHON="$(command -v python3 || echo /usr/bin/python3)"
CLK_TCK="$(getconf CLK_TCK)"

say() { echo "== $*" >&2; }
die() { echo "bench-compare: $*" >&2; exit 1; }

# Load-generator flags of each scenario (-V 4 everywhere: the version every peer speaks fully).
scenario_args() {
  local common=(-V 4 -i 1 --threads 1 --quiet --duration "$DURATION")
  case "$1" in
    fanin8-q0)   echo pubsub "${common[@]}" -c 8 --subs 1 -t 'bench/%i' --sub-topic 'bench/#' -q 0 -I 0 -s 64 ;;
    fanin8-q1)   echo pubsub "${common[@]}" -c 8 --subs 1 -t 'bench/%i' --sub-topic 'bench/#' -q 1 -F 100 -I 0 -s 64 ;;
    fanin8-q1s0) echo pubsub "${common[@]}" -c 8 --subs 1 -t 'bench/%i' --sub-topic 'bench/#' -q 1 --sub-qos 0 -F 100 -I 0 -s 64 ;;
    # Into persistent sessions (clean session 0): what persistence writes for.
    fanin8-q1p)  echo pubsub "${common[@]}" -c 8 --subs 1 -t 'bench/%i' --sub-topic 'bench/#' -q 1 -F 100 -I 0 -s 64 -C false ;;
    pairs16-q1p) echo pubsub "${common[@]}" -c 16 --subs 16 -t 'bench/%i' -q 1 -F 100 -I 0 -s 64 -C false ;;
    # The same at a fixed 100k msgs/s that every mode sustains: CPU per message like for like.
    pairs16-q1p-100k) echo pubsub "${common[@]}" -c 16 --subs 16 -t 'bench/%i' -q 1 -F 100 --rate 100000 -s 64 -C false ;;
    pairs16-q0)  echo pubsub "${common[@]}" -c 16 --subs 16 -t 'bench/%i' -q 0 -I 0 -s 64 ;;
    fanout16-q0) echo pubsub "${common[@]}" -c 1 --subs 16 -t bench/fan --sub-topic bench/fan -q 0 -I 0 -s 64 ;;
    pairs16-4k)  echo pubsub "${common[@]}" -c 16 --subs 16 -t 'bench/%i' -q 0 -I 0 -s 4096 ;;
    # One packet per client write (per WebSocket message under --ws), as browsers send them.
    pairs16-q0-p1) echo pubsub "${common[@]}" -c 16 --subs 16 -t 'bench/%i' -q 0 -I 0 -s 64 --batch-bytes 1 ;;
    fanin8-q0-p1)  echo pubsub "${common[@]}" -c 8 --subs 1 -t 'bench/%i' --sub-topic 'bench/#' -q 0 -I 0 -s 64 --batch-bytes 1 ;;
    lat20k-q0)   echo pubsub "${common[@]}" -c 16 --subs 16 -t 'bench/%i' -q 0 --rate 20000 -s 64 --spin-us 1000 ;;
    lat20k-q1)   echo pubsub "${common[@]}" -c 16 --subs 16 -t 'bench/%i' -q 1 -F 64 --rate 20000 -s 64 --spin-us 1000 ;;
    idle10k)     echo conn -V 4 --threads 1 --quiet -c "$IDLE_CONNS" -R 20000 -k 300 --duration 2 ;;
    *) die "unknown scenario $1" ;;
  esac
}

build() {
  if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
    say "SKIP_BUILD=1: using $TARGET/release as it is"
  else
    say "building release (target: $TARGET)"
    (cd "$ROOT" && cargo build --release -p ringmq -p bench) >&2 || die "release build failed"
  fi
  [[ -x "$TARGET/release/ringmq" && -x "$TARGET/release/ringmq-bench" ]] \
    || die "release binaries missing in $TARGET/release"
}

need_mosquitto() {
  command -v mosquitto >/dev/null && return 0
  if [[ "$(id -u)" == 0 ]]; then
    say "installing mosquitto"
    apt-get install -y mosquitto >&2 || { apt-get update >&2 && apt-get install -y mosquitto >&2; }
  fi
  command -v mosquitto >/dev/null \
    || die "mosquitto not found: install the Debian package (sudo apt-get install mosquitto), or drop it from BROKERS"
}

# The mosquitto binary of mosquitto-ws: the installed one when it can open a `protocol
# websockets` listener (Debian's 2.0.11 cannot), else Debian's source built with websockets.
MOSQUITTO_WS=mosquitto
need_mosquitto_ws() {
  local conf="$OUT/mosquitto-probe.conf"
  printf 'listener %s 127.0.0.1\nprotocol websockets\nallow_anonymous true\n' "$PORT_BASE" >"$conf"
  local said
  said="$(timeout 2 mosquitto -c "$conf" 2>&1 || true)"
  [[ "$said" != *"Unable to start any listening sockets"* ]] && return 0
  say "this mosquitto is built without websockets; using Debian's source built with them"
  MOSQUITTO_WS="$("$ROOT/scripts/mosquitto-ws.sh")" \
    || die "scripts/mosquitto-ws.sh could not build mosquitto with websockets (see above), or drop mosquitto-ws from BROKERS"
}

need_rumqttd() {
  [[ -x "$PEERS/bin/rumqttd" ]] && return 0
  say "installing rumqttd 0.20.0 into $PEERS"
  # Not --locked: the lock file shipped with 0.20.0 pins metrics 0.22.1, which current rustc
  # refuses (E0521); the newest 0.22.x builds.
  if ! cargo install rumqttd --version 0.20.0 --root "$PEERS" >&2; then
    echo "bench-compare: cargo install rumqttd failed; continuing without rumqttd" >&2
    return 1
  fi
}

write_configs() {
  cat >"$OUT/ringmq.toml" <<EOF
[runtime]
shards = 1
cpus = [$BROKER_CPU]
pin = true

[listeners.tcp.default]
bind = "127.0.0.1:$PORT"

[log]
level = "warn"
EOF
  cat >"$OUT/ringmq-ws.toml" <<EOF
[runtime]
shards = 1
cpus = [$BROKER_CPU]
pin = true

[listeners.ws.default]
bind = "127.0.0.1:$PORT"
path = "/mqtt"

[log]
level = "warn"
EOF
  cat >"$OUT/mosquitto-ws.conf" <<EOF
listener $PORT 127.0.0.1
protocol websockets
allow_anonymous true
log_dest none
EOF
  rm -rf "$OUT/ringmq-data" "$OUT/mosquitto-data"
  if [[ "$PERSIST" != off ]]; then
    printf '\n[persistence]\nenabled = true\ndir = "%s"\nfsync = "%s"\n' \
      "$OUT/ringmq-data" "$PERSIST" >>"$OUT/ringmq.toml"
  fi
  sed 's/^pin = true$/pin = true\nrecv_buffers = 0/' "$OUT/ringmq.toml" >"$OUT/ringmq-recv0.toml"
  cp "$OUT/ringmq.toml" "$OUT/ringmq-base.toml"
  cat >"$OUT/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
log_dest none
EOF
  if [[ "$PERSIST" != off ]]; then
    mkdir -p "$OUT/mosquitto-data"
    printf 'persistence true\npersistence_location %s/\n' "$OUT/mosquitto-data" >>"$OUT/mosquitto.conf"
  fi
  cat >"$OUT/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = $((IDLE_CONNS + 100))
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

EOF
  # rumqttd-ws: the same router, a WebSocket listener instead of the TCP one.
  cp "$OUT/rumqttd.toml" "$OUT/rumqttd-ws.toml"
  rumqttd_listener v4 >>"$OUT/rumqttd.toml"
  rumqttd_listener ws >>"$OUT/rumqttd-ws.toml"
}

rumqttd_listener() { # v4 | ws
  cat <<EOF

[$1.1]
name = "$1-1"
listen = "127.0.0.1:$PORT"
next_connection_delay_ms = 0
    [$1.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 65536
    max_inflight_count = 100
    dynamic_filters = true
EOF
}

BROKER_PID=""

start_broker() {
  local log="$OUT/$1.log"
  case "$1" in
    ringmq | ringmq-ws | ringmq-recv0)
      taskset -c "$BROKER_CPU" "$TARGET/release/ringmq" --config "$OUT/$1.toml" >"$log" 2>&1 & ;;
    ringmq-base) taskset -c "$BROKER_CPU" "$BASE_RINGMQ" --config "$OUT/$1.toml" >"$log" 2>&1 & ;;
    mosquitto) taskset -c "$BROKER_CPU" mosquitto -c "$OUT/$1.conf" >"$log" 2>&1 & ;;
    mosquitto-ws) taskset -c "$BROKER_CPU" "$MOSQUITTO_WS" -c "$OUT/$1.conf" >"$log" 2>&1 & ;;
    rumqttd | rumqttd-ws)
      taskset -c "$BROKER_CPU" "$PEERS/bin/rumqttd" --config "$OUT/$1.toml" >"$log" 2>&1 & ;;
  esac
  BROKER_PID=$!
  for _ in $(seq 100); do
    kill -0 "$BROKER_PID" 2>/dev/null || break
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      sleep 0.2
      kill -0 "$BROKER_PID" 2>/dev/null && return 0
      break
    fi
    sleep 0.1
  done
  echo "bench-compare: $1 did not start listening on $PORT; its log:" >&2
  tail -20 "$log" >&2
  stop_broker
  return 1
}

stop_broker() {
  if [[ -n "$BROKER_PID" ]]; then
    kill "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$BROKER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
  fi
  # The next broker binds the same port: wait until nothing answers on it.
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || return 0
    sleep 0.1
  done
  die "port $PORT is still in use after stopping the broker"
}
trap stop_broker EXIT

# utime+stime ticks, VmHWM and VmRSS (KiB) of the broker.
broker_stats() {
  local stat ticks
  stat="$(cat "/proc/$BROKER_PID/stat")"
  stat="${stat##*) }"
  ticks="$(awk '{print $12 + $13}' <<<"$stat")"
  echo "$ticks $(awk '/VmHWM/{h=$2} /VmRSS/{r=$2} END{print h, r}' "/proc/$BROKER_PID/status")"
}

# Every broker start gets a port of its own: each run leaves its client ports in TIME_WAIT towards
# the port it used, and a later run to the same port finds its connects slowed by the search for a
# free client port.
RUNS=0

# Thousands of client ports in TIME_WAIT (from any earlier run) still slow the kernel's search for
# a free one, so before a connection-rate run wait, at most 65 s, until they have expired.
wait_for_time_wait() {
  local count
  if ! command -v ss >/dev/null; then
    say "ss not found (apt install iproute2): not waiting for TIME_WAIT sockets to expire"
    return 0
  fi
  for _ in $(seq 65); do
    count="$(ss -tan state time-wait 2>/dev/null | tail -n +2 | wc -l)"
    (( count < 1000 )) && return 0
    sleep 1
  done
  say "still $count sockets in TIME_WAIT; connects may be slower in this run"
}

run_one() {
  local scenario="$1" broker="$2" rep="$3"
  local name="$scenario-$broker-$rep"
  PORT=$((PORT_BASE + RUNS % 1000))
  RUNS=$((RUNS + 1))
  write_configs
  [[ "$scenario" == idle* ]] && wait_for_time_wait
  start_broker "$broker" || return 0
  sleep 0.3
  read -r ticks0 _ rss0 < <(broker_stats)
  local transport=()
  [[ "$broker" == *-ws ]] && transport=(--ws --ws-path /mqtt)
  # shellcheck disable=SC2046
  taskset -c "$LOAD_CPU" "$TARGET/release/ringmq-bench" $(scenario_args "$scenario") \
    "${transport[@]}" -p "$PORT" --json "$OUT/$name.json" >"$OUT/$name.out" 2>&1 \
    || echo "bench-compare: $name: ringmq-bench exited non-zero (see $OUT/$name.out)" >&2
  read -r ticks1 hwm rss1 < <(broker_stats)
  echo "{\"cpu_secs\": $(awk -v a="$ticks0" -v b="$ticks1" -v t="$CLK_TCK" 'BEGIN{print (b-a)/t}'), \"hwm_kib\": $hwm, \"rss_before_kib\": $rss0, \"rss_after_kib\": $rss1}" \
    >"$OUT/$name.broker.json"
  stop_broker
  say "$name done"
}

main() {
  mkdir -p "$OUT"
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  build
  local brokers=()
  for broker in $BROKERS; do
    case "$broker" in
      ringmq | ringmq-ws | ringmq-recv0) brokers+=("$broker") ;;
      ringmq-base) [[ -x "${BASE_RINGMQ:-}" ]] || die "ringmq-base needs BASE_RINGMQ, a ringmq binary"
        brokers+=(ringmq-base) ;;
      mosquitto) need_mosquitto && brokers+=(mosquitto) ;;
      mosquitto-ws) need_mosquitto && need_mosquitto_ws && brokers+=(mosquitto-ws) ;;
      rumqttd | rumqttd-ws) if need_rumqttd; then brokers+=("$broker"); fi ;;
      *) die "unknown broker $broker (ringmq, ringmq-recv0, ringmq-base, mosquitto, rumqttd, ringmq-ws, mosquitto-ws, rumqttd-ws)" ;;
    esac
  done
  write_configs
  say "brokers: ${brokers[*]}; scenarios: $SCENARIOS; $REPS reps of ${DURATION}s; broker on CPU $BROKER_CPU, load on CPU $LOAD_CPU"
  for rep in $(seq "$REPS"); do
    for scenario in $SCENARIOS; do
      for broker in "${brokers[@]}"; do
        run_one "$scenario" "$broker" "$rep"
      done
    done
  done
  "$PYTHON" - "$OUT" "$SCENARIOS" "${brokers[*]}" "$REPS" <<'EOF'
import json, os, statistics, sys
out, scenarios, brokers, reps = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), int(sys.argv[4])

def load(scenario, broker, rep):
    base = os.path.join(out, f"{scenario}-{broker}-{rep}")
    try:
        with open(base + ".json") as f: report = json.load(f)
        with open(base + ".broker.json") as f: broker_stats = json.load(f)
    except (OSError, ValueError):
        return None
    t, r, lat = report["totals"], report["rates"], report.get("latency") or {}
    row = {
        "msgs": r["recv_per_sec"],
        "cpu_per_m": broker_stats["cpu_secs"] / t["received"] * 1e6 if t["received"] else None,
        "p50": lat.get("p50_ns", 0) / 1e6 if lat else None,
        "p99": lat.get("p99_ns", 0) / 1e6 if lat else None,
        "p999": lat.get("p999_ns", 0) / 1e6 if lat else None,
        "rss": broker_stats["hwm_kib"] / 1024,
        "lost": t["lost"],
        "conns": t["connected"],
        "conn_rate": r["connect_per_sec"],
        # Peak RSS while the connections were open, less the RSS before they opened.
        "bytes_per_conn": (broker_stats["hwm_kib"] - broker_stats["rss_before_kib"]) * 1024 / t["connected"] if t["connected"] else None,
    }
    return row

def median(rows, key):
    values = [row[key] for row in rows if row and row.get(key) is not None]
    return statistics.median(values) if values else None

def fmt(value, spec):
    return "-" if value is None else format(value, spec)

header = f"{'scenario':<12} {'broker':<12} {'msgs/s':>10} {'cpu-s/M':>8} {'p50 ms':>9} {'p99 ms':>9} {'p99.9 ms':>9} {'RSS MiB':>8} {'lost':>9} {'x ringmq':>9}"
print(header)
print("-" * len(header))
for scenario in scenarios:
    base = None
    for broker in brokers:
        rows = [load(scenario, broker, rep) for rep in range(1, reps + 1)]
        m = {key: median(rows, key) for key in ("msgs", "cpu_per_m", "p50", "p99", "p999", "rss", "lost", "conn_rate", "bytes_per_conn", "conns")}
        if scenario.startswith("idle"):
            if broker == "ringmq": base = m["conn_rate"]
            ratio = m["conn_rate"] / base if base and m["conn_rate"] else None
            print(f"{scenario:<12} {broker:<12} {fmt(m['conn_rate'], '>10,.0f')} conn/s  {fmt(m['conns'], '>8,.0f')} conns  {fmt(m['bytes_per_conn'], '>8,.0f')} B/conn  RSS {fmt(m['rss'], '.1f')} MiB  x{fmt(ratio, '.2f')}")
            continue
        if broker == "ringmq": base = m["msgs"]
        ratio = m["msgs"] / base if base and m["msgs"] else None
        print(f"{scenario:<12} {broker:<12} {fmt(m['msgs'], '>10,.0f')} {fmt(m['cpu_per_m'], '>8.2f')} {fmt(m['p50'], '>9.3f')} {fmt(m['p99'], '>9.3f')} {fmt(m['p999'], '>9.3f')} {fmt(m['rss'], '>8.1f')} {fmt(m['lost'], '>9,.0f')} {fmt(ratio, '>9.2f')}")
print(f"\nmedian of {reps} run(s); msgs/s = messages received by subscribers per second; cpu-s/M = broker CPU seconds per million received; x ringmq = msgs/s (conn/s for idle) relative to ringmq. Runs: {out}")
EOF
}

main "$@"
