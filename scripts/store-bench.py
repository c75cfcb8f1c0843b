#!/usr/bin/env python3
"""Persistence figures of docs/BENCHMARKS.md with a large store, against real ringmq processes.

  scripts/store-bench.py start BINARY STORE [SHARDS]
      Copies STORE (made by `store_fill`), starts BINARY on it, polls the port, then times a
      3.1.1 CONNECT until its CONNACK. Prints seconds to listening and to the first CONNACK,
      the broker's CPU seconds (utime + stime) at both, when the log said the new generation
      was in force, and RSS half a second after that.

  scripts/store-bench.py stall BINARY STORE
      One shard on a copy of STORE. Once the new generation is in force, a probe publishes QoS 0
      to a topic it subscribes to, one message in flight, and times each round trip, while a
      loader publishes 1 MB retained QoS 1 messages to one topic until the shard has written a
      new snapshot file (the log grows past twice the last snapshot). Prints the longest round
      trips, dated from the moment the new snapshot file got its name.

Both use 127.0.0.1 and an OS-chosen port, and a temporary folder (removed unless KEEP=1).
Wall-clock figures depend on the machine's load: the load average is printed with each run.
"""
import glob, os, shutil, socket, struct, subprocess, sys, tempfile, threading, time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(binary, store, shards, work):
    run = os.path.join(work, "store")
    subprocess.run(["cp", "-a", store, run], check=True)
    subprocess.run(["sync"], check=True)
    port = free_port()
    config = os.path.join(work, "ringmq.toml")
    with open(config, "w") as f:
        f.write(f'[runtime]\nshards = {shards}\npin = false\n'
                f'[listeners.tcp.default]\nbind = "127.0.0.1:{port}"\n'
                f'[admin]\nenabled = false\n'
                f'[persistence]\nenabled = true\ndir = "{run}"\n')
    log_path = os.path.join(work, "broker.log")
    log = open(log_path, "w")
    proc = subprocess.Popen([binary, "-c", config], stdout=log, stderr=subprocess.STDOUT)
    return proc, port, run, log_path


def in_force(log_path):
    return "new generation in force" in open(log_path).read()


def connect(port, client_id, deadline_s=120):
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=deadline_s)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def packet(kind, body):
    n, length = len(body), bytearray()
    while True:
        b, n = n % 128, n // 128
        length.append(b | (0x80 if n else 0))
        if not n:
            return bytes([kind]) + bytes(length) + body


def mqtt_str(s):
    return struct.pack(">H", len(s)) + s


def send_connect(s, client_id):
    s.sendall(packet(0x10, mqtt_str(b"MQTT") + bytes([4, 2, 0, 0]) + mqtt_str(client_id)))


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("the broker closed the connection")
        buf += chunk
    return buf


def read_packet(s):
    head, n, shift = read_exact(s, 1)[0], 0, 0
    while True:
        b = read_exact(s, 1)[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return head, read_exact(s, n)


def start_time(binary, store, shards, work):
    t0 = time.monotonic()
    proc, port, _, log_path = start_broker(binary, store, shards, work)

    def cpu():
        fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        s = connect(port, b"probe")
        listening, cpu_listening = time.monotonic() - t0, cpu()
        send_connect(s, b"probe")
        head, _ = read_packet(s)
        assert head == 0x20, head
        connack, cpu_connack = time.monotonic() - t0, cpu()
        forced = None
        while time.monotonic() - t0 < 300:
            if in_force(log_path):
                forced = time.monotonic() - t0
                break
            time.sleep(0.02)
        time.sleep(0.5)
        rss = [l for l in open(f"/proc/{proc.pid}/status") if l.startswith("VmRSS")][0]
        rss_gib = int(rss.split()[1]) / (1 << 20)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    print(f"listening {listening:.2f} s, first CONNACK {connack:.2f} s, CPU {cpu_listening:.2f} / "
          f"{cpu_connack:.2f} s, in force {forced and round(forced, 2)} s, RSS {rss_gib:.2f} GiB, "
          f"load {os.getloadavg()[0]:.1f}")


def stall(binary, store, work):
    t0 = time.monotonic()
    proc, port, run, log_path = start_broker(binary, store, 1, work)
    try:
        while not in_force(log_path):
            if time.monotonic() - t0 > 300 or proc.poll() is not None:
                sys.exit("the new generation was not put in force")
            time.sleep(0.05)
        snapshots = lambda: {p for p in glob.glob(f"{run}/gen-*/shard-0/snap-*") if not p.endswith(".tmp")}
        first = snapshots()
        probe = connect(port, b"probe")
        send_connect(probe, b"probe")
        read_packet(probe)
        probe.sendall(packet(0x82, struct.pack(">H", 1) + mqtt_str(b"probe/x") + b"\x00"))
        read_packet(probe)
        stop, samples, errors = threading.Event(), [], []

        def probe_loop():
            publish = packet(0x30, mqtt_str(b"probe/x") + b"p" * 16)
            while not stop.is_set():
                start = time.monotonic()
                probe.sendall(publish)
                read_packet(probe)
                samples.append((start, time.monotonic() - start))
                time.sleep(0.001)

        def load_loop():
            try:
                s = connect(port, b"loader")
                send_connect(s, b"loader")
                read_packet(s)
                payload, pid = b"x" * 1_000_000, 1
                while not stop.is_set():
                    body = mqtt_str(b"load/0") + struct.pack(">H", pid) + payload
                    s.sendall(packet(0x33, body))
                    read_packet(s)
                    pid = pid % 65535 + 1
            except Exception as error:  # reported below; the run then fails
                errors.append(error)

        threads = [threading.Thread(target=probe_loop), threading.Thread(target=load_loop)]
        for thread in threads:
            thread.start()
        deadline, written = time.monotonic() + 300, None
        while time.monotonic() < deadline and not errors:
            if snapshots() - first:
                written = time.monotonic()
                break
            time.sleep(0.002)
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    if errors or written is None:
        sys.exit(f"no new snapshot: {errors}")
    rtts = sorted(r for _, r in samples)
    top = sorted(samples, key=lambda x: -x[1])[:5]
    print(f"{len(rtts)} round trips, median {rtts[len(rtts) // 2] * 1000:.2f} ms, "
          f"over 50 ms: {sum(r > 0.05 for r in rtts)}; longest: "
          + ", ".join(f"{r * 1000:.0f} ms at {t - written:+.2f} s" for t, r in top)
          + f"; load {os.getloadavg()[0]:.1f}")


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("start", "stall"):
        sys.exit(__doc__)
    binary, store = sys.argv[2], sys.argv[3]
    work = tempfile.mkdtemp(prefix="ringmq-store-bench-")
    try:
        if sys.argv[1] == "start":
            start_time(binary, store, int(sys.argv[4]) if len(sys.argv) > 4 else 2, work)
        else:
            stall(binary, store, work)
    finally:
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
