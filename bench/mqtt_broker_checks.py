"""Two broker behaviours the fleet depends on, measured against the local Mosquitto:

    .venv/bin/python bench/mqtt_broker_checks.py

1. An answer's publish → PUBACK time, with and without TCP_NODELAY on the client and on the
   broker (``set_tcp_nodelay``): a "worker" takes a job, works 15 ms, publishes a 2.5 KB answer
   and waits for its PUBACK, 60 times.
2. Whether the broker keeps to a client's Receive Maximum (2): the most jobs held unacknowledged
   at once while acking one at a time.

Plain paho clients, no edge-ocr code. Dev-only: never imported by the daemon.
"""

from __future__ import annotations

import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from fleet_scaling import free_port
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

JOBS = 60


def no_delay(client: paho.Client, userdata: object, sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def start_broker(directory: Path, nodelay: bool) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = directory / ("mosquitto-%d.conf" % port)
    conf.write_text("listener %d 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay %s\n" % (
        port, "true" if nodelay else "false"))
    proc = subprocess.Popen([shutil.which("mosquitto") or "mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            threading.Event().wait(0.05)
    raise RuntimeError("mosquitto did not start")


def worker(port: int, nodelay: bool, jobs: queue.Queue[paho.MQTTMessage]) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="check-worker", protocol=paho.MQTTv5,
                         manual_ack=True)
    if nodelay:
        client.on_socket_open = no_delay
    client.on_message = lambda c, u, msg: jobs.put(msg)
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 2
    client.connect("127.0.0.1", port, properties=props)
    client.loop_start()
    client.subscribe("$share/check/jobs", qos=1)
    threading.Event().wait(0.3)  # the SUBACK
    return client


def run(directory: Path, client_nodelay: bool, broker_nodelay: bool) -> tuple[float, int]:
    """(median publish → PUBACK ms, most jobs held unacknowledged at once)."""
    broker, port = start_broker(directory, broker_nodelay)
    try:
        jobs: queue.Queue[paho.MQTTMessage] = queue.Queue()
        client = worker(port, client_nodelay, jobs)
        sender = paho.Client(CallbackAPIVersion.VERSION2, client_id="check-sender", protocol=paho.MQTTv5)
        sender.connect("127.0.0.1", port)
        sender.loop_start()
        for _ in range(JOBS):
            sender.publish("jobs", b"x" * 3000, qos=1)
        held = 0
        latencies = []
        for _ in range(JOBS):
            msg = jobs.get(timeout=10)
            held = max(held, jobs.qsize() + 1)
            threading.Event().wait(0.015)  # the engine
            started = time.perf_counter()
            client.publish("answers", b"y" * 2500, qos=1).wait_for_publish(10)
            latencies.append((time.perf_counter() - started) * 1000)
            client.ack(msg.mid, 1)
        for c in (client, sender):
            c.disconnect()
            c.loop_stop()
        return statistics.median(latencies), held
    finally:
        broker.terminate()
        broker.wait(10)


def main() -> int:
    print("| client TCP_NODELAY | broker set_tcp_nodelay | answer publish → PUBACK, median ms | "
          "most jobs held at once (Receive Maximum 2) |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="edge-ocr-mqtt-checks.") as tmp:
        for client_nodelay in (False, True):
            for broker_nodelay in (False, True):
                median_ms, held = run(Path(tmp), client_nodelay, broker_nodelay)
                print("| %s | %s | %.1f | %d |" % (client_nodelay, broker_nodelay, median_ms, held))
    return 0


if __name__ == "__main__":
    sys.exit(main())
