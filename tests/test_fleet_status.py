"""edge_ocr.fleet_status and ``edge-ocr fleet status``: the pure reading and formatting of the
retained messages, then the command against a real Mosquitto, a real worker daemon and a
device that went offline (its retained messages published by hand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_ocr.fleet_status import DeviceStatus, default_root, format_table, read_devices, to_json_line
from tests.broker import PASSWORD, USER, Collector, Mosquitto, free_port
from tests.helpers import PREFIX, Daemon, line_samples, wait_until, write_config

ROOT = PREFIX.rpartition("/")[0]  # "e2e": the daemon of write_config() is e2e/dev
STATS = {"jobs_total": 12, "queue_depth": 3, "jobs_per_s": 1.5, "rss_mb": 201.4375, "guard_level": 1,
         "fleet_jobs_taken_total": 10, "fleet_jobs_done_total": 8, "fleet_jobs_failed_total": 1,
         "fleet_jobs_redelivered_total": 2, "ts": "2026-01-02T03:04:05Z"}


def edge_ocr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ocr", *args], capture_output=True, text=True, timeout=120)


def test_devices_are_read_from_availability_and_stats_whatever_is_missing_or_broken():
    messages = {
        "edge-ocr/pi-gate/availability": b"online",
        "edge-ocr/pi-gate/stats": json.dumps(STATS).encode(),
        "edge-ocr/old-box/availability": b"offline",  # no stats: a daemon that never connected long
        "edge-ocr/odd/stats": b"{not json",  # known by its topic, nothing else
        "edge-ocr/odd/availability": b"maybe",
        "other/x/availability": b"online",  # not under the root
    }
    devices = read_devices(messages, "edge-ocr")
    assert [d.device for d in devices] == ["odd", "old-box", "pi-gate"]
    assert devices[0] == DeviceStatus("odd", "unknown")
    assert devices[1] == DeviceStatus("old-box", "offline")
    assert devices[2] == DeviceStatus("pi-gate", "online", queue_depth=3, jobs_per_s=1.5, rss_mb=201.4, guard="soft",
                                      taken=10, done=8, failed=1, redelivered=2, stats_ts="2026-01-02T03:04:05Z")
    table = format_table(devices).splitlines()
    assert table[0].split() == ["device", "state", "queue", "jobs/s", "rss", "MB", "guard", "taken", "done",
                                "failed", "redelivered", "stats", "at"]
    assert table[1].split() == ["odd", "unknown"] + ["-"] * 9
    assert table[3].split() == ["pi-gate", "online", "3", "1.50", "201.4", "soft", "10", "8", "1", "2",
                                "2026-01-02T03:04:05Z"]
    assert table[3].index("2026") == table[0].index("stats at")  # columns line up
    end = table[0].index("redelivered") + len("redelivered")
    assert [row[end - 1] for row in table] == ["d", "-", "-", "2"]  # numbers right-aligned
    assert json.loads(to_json_line(devices[2]))["guard"] == "soft"
    # Stopped: its queue, rate, RSS and guard are not now's; its counters are, as of its last stats.
    stopped = read_devices({"edge-ocr/w2/availability": b"offline", "edge-ocr/w2/stats": json.dumps(STATS).encode()},
                           "edge-ocr")
    assert format_table(stopped).splitlines()[1].split() == ["w2", "offline", "-", "-", "-", "-", "10", "8", "1", "2",
                                                             "2026-01-02T03:04:05Z"]


def test_the_root_is_the_topic_prefix_without_the_device_level():
    assert default_root("edge-ocr/pi-gate") == "edge-ocr"
    assert default_root("site/a/edge-ocr/pi") == "site/a/edge-ocr"
    assert default_root("flat") == ""
    assert read_devices({"flat/stats": json.dumps(STATS).encode()}, "")[0].done == 8


def _publish_retained(broker: Mosquitto, messages: dict[str, bytes]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="ghost-%d" % free_port())
    client.username_pw_set(USER, PASSWORD)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for topic, payload in messages.items():
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.broker
def test_fleet_status_shows_a_working_daemon_and_an_offline_device(eval_dev, tmp_path: Path, mosquitto):
    config = write_config(tmp_path, mosquitto, extra_mqtt="stats_interval = 1\n")
    config.write_text(config.read_text() + '\n[fleet]\nenabled = true\njobs_topic = "test/jobs"\n')
    ghost = dict(STATS, guard_level=0)
    _publish_retained(mosquitto, {ROOT + "/ghost/availability": b"offline",
                                  ROOT + "/ghost/stats": json.dumps(ghost).encode()})
    daemon = Daemon(config).start()
    assert wait_until(lambda: "fleet worker connected" in daemon.text(), 30)  # subscribed: jobs reach it
    images = [p for p, _ in line_samples(eval_dev, "IIIT5K-test", 3)]
    submitted = edge_ocr("submit", "-c", str(config), "--wait", "--timeout", "60", *map(str, images))
    assert submitted.returncode == 0, submitted.stderr
    watcher = Collector(mosquitto, [PREFIX + "/stats"])
    watcher.wait(lambda ms: any(json.loads(m.payload).get("fleet_jobs_done_total") == 3 for m in ms))
    watcher.close()

    run = edge_ocr("fleet", "status", "-c", str(config), "--wait", "1", "--json")
    assert run.returncode == 0, run.stderr
    seen = {d["device"]: d for d in map(json.loads, run.stdout.splitlines())}
    assert set(seen) == {"dev", "ghost"}
    dev = seen["dev"]
    assert dev["availability"] == "online" and dev["guard"] == "ok" and dev["queue_depth"] == 0
    assert (dev["taken"], dev["done"], dev["failed"], dev["redelivered"]) == (3, 3, 0, 0)
    assert dev["rss_mb"] > 50 and dev["jobs_per_s"] >= 0 and dev["stats_ts"].endswith("Z")
    assert seen["ghost"]["availability"] == "offline" and seen["ghost"]["done"] == 8

    assert daemon.terminate() == 0  # a clean stop publishes offline, retained
    table = edge_ocr("fleet", "status", "-c", str(config), "--wait", "0.5")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
    assert rows["dev"][1] == "offline" and rows["dev"][6:10] == ["3", "3", "0", "0"]
    assert rows["ghost"][1] == "offline"


@pytest.mark.broker
def test_no_device_or_a_broker_out_of_reach_exits_1_and_a_bad_root_exits_2(tmp_path: Path, mosquitto, closed_port):
    config = write_config(tmp_path, mosquitto)
    none = edge_ocr("fleet", "status", "-c", str(config), "--wait", "0.3", "--root", "nobody/here")
    assert none.returncode == 1 and "no device under nobody/here/+" in none.stderr
    assert none.stdout == ""
    config.write_text(config.read_text().replace("port = %d" % mosquitto.port, "port = %d" % closed_port))
    away = edge_ocr("fleet", "status", "-c", str(config), "--wait", "0.3")
    assert away.returncode == 1 and len(away.stderr.strip().splitlines()) == 1  # as check and submit
    assert "cannot reach the broker 127.0.0.1" in away.stderr
    assert edge_ocr("fleet", "status", "-c", str(config), "--root", "a/+").returncode == 2
