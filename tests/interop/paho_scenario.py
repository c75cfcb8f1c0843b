#!/usr/bin/python3
"""Goal: ringmq as paho-mqtt (1.6 API, MQTT 3.1.1) sees it: a will on abnormal close and none
after DISCONNECT, retained messages, and a persistent session that receives what was queued while
it was offline.

Usage: paho_scenario.py HOST PORT. Prints one line per check; exits 1 with the mismatch on any
failure. Every wait is bounded.
"""

import socket
import sys
import time

import paho.mqtt.client as mqtt

TIMEOUT_SECS = 10.0
QUIET_SECS = 1.0


def fail(message):
    print(f"paho: FAIL {message}", file=sys.stderr)
    sys.exit(1)


def wait_for(predicate, what, timeout=TIMEOUT_SECS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    fail(f"timed out after {timeout}s waiting for {what}")


class Client:
    """A paho client on its own network thread that records what it receives."""

    def __init__(self, host, port, client_id, clean_session=True, will=None):
        self.client_id = client_id
        self.messages = []
        self.connack = None
        self.subacks = []
        self.mqtt = mqtt.Client(
            client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311
        )
        if will is not None:
            topic, payload = will
            self.mqtt.will_set(topic, payload, qos=1, retain=False)
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_message = self._on_message
        self.mqtt.on_subscribe = self._on_subscribe
        self.mqtt.connect(host, port, keepalive=30)
        self.mqtt.loop_start()
        wait_for(lambda: self.connack is not None, f"CONNACK for {client_id}")
        if self.connack[0] != 0:
            fail(f"{client_id}: CONNACK return code {self.connack[0]}")

    @property
    def session_present(self):
        return bool(self.connack[1].get("session present"))

    def _on_connect(self, _client, _userdata, flags, rc):
        self.connack = (rc, flags)

    def _on_message(self, _client, _userdata, message):
        self.messages.append(message)

    def _on_subscribe(self, _client, _userdata, mid, granted_qos):
        self.subacks.append((mid, granted_qos))

    def subscribe(self, topic, qos):
        result, mid = self.mqtt.subscribe(topic, qos)
        if result != mqtt.MQTT_ERR_SUCCESS:
            fail(f"{self.client_id}: subscribe {topic}: {mqtt.error_string(result)}")
        wait_for(lambda: any(m == mid for m, _ in self.subacks), f"SUBACK for {topic}")
        granted = next(g for m, g in self.subacks if m == mid)
        if list(granted) != [qos]:
            fail(f"{self.client_id}: {topic} granted {granted}, asked {qos}")

    def publish(self, topic, payload, qos, retain=False):
        info = self.mqtt.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=TIMEOUT_SECS)
        if not info.is_published():
            fail(f"{self.client_id}: publish to {topic} not acknowledged")

    def wait_messages(self, count, what):
        wait_for(lambda: len(self.messages) >= count, f"{count} message(s): {what}")

    def disconnect(self):
        self.mqtt.disconnect()
        self.mqtt.loop_stop()

    def drop(self):
        """Closes the TCP connection without DISCONNECT."""
        self.mqtt.loop_stop()
        sock = self.mqtt.socket()
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def expect(condition, message):
    if not condition:
        fail(message)


def check_will(host, port):
    watcher = Client(host, port, "paho-watcher")
    watcher.subscribe("paho/will/+", 1)

    polite = Client(host, port, "paho-polite", will=("paho/will/polite", b"polite-gone"))
    polite.disconnect()
    mortal = Client(host, port, "paho-mortal", will=("paho/will/mortal", b"mortal-gone"))
    mortal.drop()
    watcher.wait_messages(1, "the will of the dropped client")
    time.sleep(QUIET_SECS)
    got = [(m.topic, m.payload) for m in watcher.messages]
    expect(
        got == [("paho/will/mortal", b"mortal-gone")],
        f"wills: expected only the dropped client's, got {got}",
    )
    expect(watcher.messages[0].qos == 1, f"will QoS {watcher.messages[0].qos}, expected 1")
    watcher.disconnect()
    print("paho: will published on abnormal close, none after DISCONNECT")


def check_retained(host, port):
    publisher = Client(host, port, "paho-retainer")
    publisher.publish("paho/retained", b"first", qos=1, retain=True)
    publisher.publish("paho/retained", b"kept", qos=1, retain=True)
    late = Client(host, port, "paho-late")
    late.subscribe("paho/#", 2)
    late.wait_messages(1, "the retained message")
    message = late.messages[0]
    expect(
        (message.topic, message.payload, message.retain, message.qos)
        == ("paho/retained", b"kept", 1, 1),
        f"retained: got {(message.topic, message.payload, message.retain, message.qos)}",
    )
    publisher.publish("paho/retained", b"live", qos=1, retain=True)
    late.wait_messages(2, "the live message")
    expect(late.messages[1].retain == 0, "a live message reached a subscriber with RETAIN set")
    publisher.publish("paho/retained", b"", qos=1, retain=True)
    late.disconnect()
    empty = Client(host, port, "paho-empty")
    empty.subscribe("paho/retained", 1)
    time.sleep(QUIET_SECS)
    expect(empty.messages == [], "a deleted retained message was still delivered")
    empty.disconnect()
    publisher.disconnect()
    print("paho: retained message delivered on subscribe, replaced, deleted")


def check_persistent_session(host, port):
    keeper = Client(host, port, "paho-keeper", clean_session=True)
    keeper.disconnect()
    keeper = Client(host, port, "paho-keeper", clean_session=False)
    expect(not keeper.session_present, "session present on a fresh persistent session")
    keeper.subscribe("paho/queue/1", 1)
    keeper.subscribe("paho/queue/2", 2)
    keeper.disconnect()

    publisher = Client(host, port, "paho-queuer")
    sent = []
    for i in range(10):
        for qos in (1, 2):
            payload = f"{qos}-{i}".encode()
            publisher.publish(f"paho/queue/{qos}", payload, qos=qos)
            sent.append(payload)
    publisher.disconnect()

    keeper = Client(host, port, "paho-keeper", clean_session=False)
    expect(keeper.session_present, "session not present on resume")
    keeper.wait_messages(len(sent), "the messages queued while offline")
    time.sleep(QUIET_SECS)
    expect(len(keeper.messages) == len(sent), f"{len(keeper.messages)} messages, sent {len(sent)}")
    # Order is kept per topic (MQTT 3.1.1 section 4.6), not across topics.
    for qos in (1, 2):
        topic = f"paho/queue/{qos}"
        got = [(m.payload, m.qos) for m in keeper.messages if m.topic == topic]
        want = [(payload, qos) for payload in sent if payload.startswith(f"{qos}-".encode())]
        expect(got == want, f"{topic}: expected {want}, got {got}")
    keeper.disconnect()
    print(f"paho: persistent session resumed with {len(sent)} queued QoS 1/2 messages")


def main():
    if len(sys.argv) != 3:
        fail("usage: paho_scenario.py HOST PORT")
    host, port = sys.argv[1], int(sys.argv[2])
    check_will(host, port)
    check_retained(host, port)
    check_persistent_session(host, port)


if __name__ == "__main__":
    main()
