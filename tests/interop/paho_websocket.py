#!/usr/bin/python3
"""Goal: ringmq's WebSocket listeners as paho-mqtt with transport="websockets" sees them: a
WebSocket client and a plain TCP client exchange messages at QoS 0, 1 and 2 both ways.

Usage: paho_websocket.py HOST TCP_PORT WS_PORT PATH [--tls CAFILE] [--user USER PASSWORD]
       [--v5]
Prints one line per check; exits 1 with the mismatch on any failure. Every wait is bounded.
"""

import argparse
import sys
import time

import paho.mqtt.client as mqtt

TIMEOUT_SECS = 10.0


def fail(message):
    print(f"paho-ws: FAIL {message}", file=sys.stderr)
    sys.exit(1)


def wait_for(predicate, what):
    deadline = time.monotonic() + TIMEOUT_SECS
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    fail(f"timed out after {TIMEOUT_SECS}s waiting for {what}")


class Client:
    """A paho client on its own network thread that records what it receives."""

    def __init__(self, args, client_id, transport, port):
        self.messages = []
        self.connected = None
        self.subscribed = False
        protocol = mqtt.MQTTv5 if args.v5 else mqtt.MQTTv311
        self.mqtt = mqtt.Client(client_id=client_id, protocol=protocol, transport=transport)
        if transport == "websockets":
            self.mqtt.ws_set_options(path=args.path)
            if args.tls:
                self.mqtt.tls_set(ca_certs=args.tls)
        if args.user:
            self.mqtt.username_pw_set(args.user[0], args.user[1])
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_message = self._on_message
        self.mqtt.on_subscribe = lambda *_: setattr(self, "subscribed", True)
        self.mqtt.connect(args.host, port, keepalive=30)
        self.mqtt.loop_start()
        wait_for(lambda: self.connected is not None, f"{client_id}: CONNACK")
        if self.connected != 0:
            fail(f"{client_id}: CONNACK {self.connected}")

    def _on_connect(self, _client, _userdata, _flags, reason, _properties=None):
        self.connected = reason if isinstance(reason, int) else reason.value

    def _on_message(self, _client, _userdata, message):
        self.messages.append((message.topic, message.qos, message.payload.decode()))

    def subscribe(self, topic):
        self.subscribed = False
        self.mqtt.subscribe(topic, qos=2)
        wait_for(lambda: self.subscribed, f"SUBACK for {topic}")

    def publish_each_qos(self, topic):
        for qos in (0, 1, 2):
            info = self.mqtt.publish(f"{topic}/q{qos}", f"qos {qos}", qos=qos)
            info.wait_for_publish(timeout=TIMEOUT_SECS)
            if not info.is_published():
                fail(f"publish to {topic}/q{qos} was not acknowledged")

    def close(self):
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("tcp_port", type=int)
    parser.add_argument("ws_port", type=int)
    parser.add_argument("path")
    parser.add_argument("--tls")
    parser.add_argument("--user", nargs=2)
    parser.add_argument("--v5", action="store_true")
    args = parser.parse_args()
    scheme = "wss" if args.tls else "ws"
    base = f"interop/paho-{scheme}"
    web = Client(args, f"paho-{scheme}", "websockets", args.ws_port)
    native = Client(args, f"paho-{scheme}-tcp", "tcp", args.tcp_port)
    web.subscribe(f"{base}/down/#")
    native.subscribe(f"{base}/up/#")
    web.publish_each_qos(f"{base}/up")
    native.publish_each_qos(f"{base}/down")
    for client, direction in ((native, "up"), (web, "down")):
        expected = [(f"{base}/{direction}/q{qos}", qos, f"qos {qos}") for qos in (0, 1, 2)]
        wait_for(lambda c=client: len(c.messages) >= 3, f"3 messages {direction}")
        if sorted(client.messages) != expected:
            fail(f"{direction}: expected {expected}, got {client.messages}")
    version = "5.0" if args.v5 else "3.1.1"
    print(f"paho-ws: ok   {scheme}://{args.host}:{args.ws_port}{args.path} (MQTT {version}) "
          "and TCP exchange QoS 0, 1 and 2 both ways")
    web.close()
    native.close()


main()
