"""Usage: partial-flood.py PORT BROKER_PID CONNECTIONS

CONNECTIONS clients each send a 3.1.1 CONNECT and the first 1,047,000 bytes of a 1 MiB PUBLISH,
then go quiet; prints the broker's VmRSS before, while they are held, and once the broker has
closed them (limits.packet_timeout_ms). Loopback only."""
import socket, sys, time
port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
def vbi(v):
    out = bytearray()
    while True:
        b = v % 128; v //= 128
        if v == 0:
            out.append(b); return bytes(out)
        out.append(b | 0x80)
def connect(cid):
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + vbi(len(body)) + body
body_len = 1_048_000
publish = (b"\x30" + vbi(body_len) + b"\x00\x01t").ljust(1_047_000, b"x")
print("rss before", rss(), "MiB", flush=True)
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(connect(b"p%d" % i))
    assert s.recv(4)[:1] == b"\x20"
    s.setblocking(False)
    sent = 0
    try:
        while sent < len(publish):
            sent += s.send(publish[sent:])
    except BlockingIOError:
        pass
    socks.append(s)
time.sleep(2)
print("rss held with", n, "partial packets:", rss(), "MiB", flush=True)
t = time.time()
closed = 0
for s in socks:
    s.setblocking(True); s.settimeout(max(0.1, 60 - (time.time() - t)))
    try:
        if s.recv(1) == b"": closed += 1
    except (ConnectionResetError,):
        closed += 1
    except socket.timeout:
        pass
print("closed by the broker:", closed, "of", n, "after", round(time.time() - t, 1), "s; rss", rss(), "MiB", flush=True)
