"""edge_ocr.sinks.mqtt against a real Mosquitto: topics, spool across a broker outage, TLS,
credentials, commands, Home Assistant discovery."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_ocr.config import MqttConfig, Secret
from edge_ocr.engine.types import EngineOutput, TextLine
from edge_ocr.results import Result, Status
from edge_ocr.sinks.mqtt import MqttSink, probe
from edge_ocr.stats import Stats
from tests.broker import PASSWORD, USER, Collector, Mosquitto, wait_until

pytestmark = pytest.mark.broker
PREFIX = "test/edge"


def mqtt_config(broker: Mosquitto, tmp_path: Path, **kw) -> MqttConfig:
    base = MqttConfig(spool_dir=tmp_path / "spool", topic_prefix=PREFIX, client_id="edge-ocr-test",
                      host="127.0.0.1", port=broker.port, username=USER, password=Secret(PASSWORD),
                      reconnect_min_delay=0.1, reconnect_max_delay=0.5)
    return replace(base, **kw)


def result(text: str, source: str = "inbox", changed: bool = True) -> Result:
    quad = np.array([[0, 0], [10, 0], [10, 5], [0, 5]], dtype=np.float32)
    output = EngineOutput((TextLine(text, 0.97, quad),), (10, 5), {"total": 1.0})
    return Result(source, Status.OK, output, ("pack", "1"), changed=changed)


class Captures:
    def __init__(self):
        self.calls: list[str | None] = []

    def __call__(self, source):
        self.calls.append(source)
        return (source in (None, "inbox")), "rescan requested"


@pytest.fixture
def sink_factory(tmp_path):
    made: list[MqttSink] = []

    def make(cfg: MqttConfig, captures=None, announce: bool = True) -> MqttSink:
        sink = MqttSink(cfg, ("inbox",), Stats(), captures or Captures())
        sink.start()
        if announce:  # as the daemon does once its sources are up
            sink.announce()
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.close(timeout_s=2)


def test_result_topics_availability_and_clean_offline(mosquitto, tmp_path, sink_factory):
    sub = Collector(mosquitto, ["%s/#" % PREFIX])
    sink = sink_factory(mqtt_config(mosquitto, tmp_path))
    sub.wait_topic(PREFIX + "/availability")
    sink.publish(result("hello"))
    sink.publish(result("hello", changed=False))
    states = sub.wait_topic(PREFIX + "/inbox/state", 2)
    texts = sub.wait_topic(PREFIX + "/inbox/text", 2)
    assert json.loads(states[-1].payload)["text"] == "hello"
    assert texts[-1].payload == b"hello"
    assert len(sub.on(PREFIX + "/inbox/event")) == 1  # on change only
    assert sub.on(PREFIX + "/availability")[0].payload == b"online"
    assert sub.on(PREFIX + "/inbox/status")[-1].payload == b"online"
    sink.close()
    assert sub.wait_topic(PREFIX + "/availability", 2)[-1].payload == b"offline"
    assert len(list((tmp_path / "spool").glob("*.msg"))) == 0  # all acknowledged
    sub.close()
    late = Collector(mosquitto, [PREFIX + "/inbox/state", PREFIX + "/inbox/text"])
    assert {m.topic for m in late.wait(lambda ms: len(ms) >= 2)} == {PREFIX + "/inbox/state", PREFIX + "/inbox/text"}
    assert all(m.retain for m in late.messages)
    late.close()


def test_a_status_that_changes_while_the_sink_connects_is_the_one_retained(mosquitto, tmp_path):
    """A source comes online just as the sink (re)connects and publishes every status: the value
    read before the change must not be the one left retained (Home Assistant would show the sensor
    unavailable). Before, the change was dropped as "not connected yet"."""
    statuses = {"inbox": "offline"}
    changers: list[threading.Thread] = []
    sink: MqttSink | None = None

    def source_status(name: str) -> str:
        value = statuses[name]
        if not changers:  # the folder source opens right after its status was read
            def change() -> None:
                statuses[name] = "online"
                assert sink is not None
                sink.set_source_status(name, "online")
            changers.append(threading.Thread(target=change))
            changers[0].start()
            changers[0].join(5)
        return value

    sink = MqttSink(mqtt_config(mosquitto, tmp_path), ("inbox",), Stats(), Captures(), source_status)
    sink.start()
    try:
        assert wait_until(lambda: sink.connected, 10)
        sub = Collector(mosquitto, [PREFIX + "/inbox/status"])
        last = lambda: [m.payload for m in sub.on(PREFIX + "/inbox/status")][-1:]  # noqa: E731
        assert wait_until(lambda: last() == [b"online"], 10), sub.on(PREFIX + "/inbox/status")
        sub.close()
    finally:
        sink.close(timeout_s=2)


def test_spooled_while_broker_down_then_published_in_order(mosquitto, tmp_path, sink_factory):
    # A persistent subscriber: the broker keeps its session (and queues QoS 1) across the restart.
    sub = Collector(mosquitto, [PREFIX + "/inbox/event"], client_id="ordered-sub", persistent=True)
    mosquitto.stop()
    sink = sink_factory(mqtt_config(mosquitto, tmp_path, publish_every=True, max_inflight=5))
    sent = [result("r%02d" % i) for i in range(30)]
    for r in sent:
        sink.publish(r)
    assert len(list((tmp_path / "spool").glob("*.msg"))) == 90
    mosquitto.start()
    events = [json.loads(m.payload) for m in sub.wait_topic(PREFIX + "/inbox/event", 30)]
    assert [e["id"] for e in events] == [r.id for r in sent]
    assert wait_until(lambda: len(sink.spool) == 0)
    sub.close()


def test_spool_survives_restart_and_keeps_original_ts(mosquitto, tmp_path):
    mosquitto.stop()
    cfg = mqtt_config(mosquitto, tmp_path, publish_every=True)
    first = MqttSink(cfg, ("inbox",), Stats(), Captures())
    first.start()
    sent = [result("old%d" % i) for i in range(3)]
    for r in sent:
        first.publish(r)
    first.close(timeout_s=1)
    mosquitto.start()
    sub = Collector(mosquitto, [PREFIX + "/inbox/event"])
    second = MqttSink(cfg, ("inbox",), Stats(), Captures())
    second.start()
    try:
        events = sub.wait_topic(PREFIX + "/inbox/event", 3)
        got = [json.loads(m.payload) for m in events]
        assert [g["text"] for g in got] == ["old0", "old1", "old2"]
        assert [g["id"] for g in got] == [r.id for r in sent]
        assert got[0]["ts"] == json.loads(sent[0].to_json())["ts"]
    finally:
        second.close()
        sub.close()


def test_results_spooled_before_the_topic_prefix_changed_go_out_under_the_new_one(mosquitto, tmp_path, caplog):
    """The default prefix names the host: a Pi renamed while its broker was away published its
    spooled results, retained, under the old name, where Home Assistant no longer listens."""
    mosquitto.stop()
    old = MqttSink(mqtt_config(mosquitto, tmp_path, topic_prefix="site/old", publish_every=True), ("inbox",),
                   Stats(), Captures())
    old.start()
    for i in range(2):
        old.publish(result("r%d" % i))
    old.close(timeout_s=1)
    mosquitto.start()
    sub = Collector(mosquitto, ["site/#"])
    taken: list[tuple[str, str, dict]] = []
    new = MqttSink(mqtt_config(mosquitto, tmp_path, topic_prefix="site/new", publish_every=True), ("inbox",),
                   Stats(), Captures(), on_previous=lambda s, t, r: taken.append((s, t, dict(r))))
    with caplog.at_level(logging.WARNING):
        new.start()
    try:
        events = sub.wait_topic("site/new/inbox/event", 2)
        assert [json.loads(m.payload)["text"] for m in events] == ["r0", "r1"]
        assert wait_until(lambda: len(new.spool) == 0)
        assert json.loads(sub.wait_topic("site/new/inbox/state", 2)[-1].payload)["text"] == "r1"
        assert not [m.topic for m in sub.messages if m.topic.startswith("site/old/inbox/")]
        assert taken[:1] == [("inbox", "r1", {})]  # the spooled state seeds the new prefix's source
        assert "spooled=site/old/inbox/state now=site/new/inbox/state" in caplog.text
    finally:
        new.close()
        sub.close()


def test_spool_overflow_drops_oldest_and_counts(mosquitto, tmp_path, sink_factory):
    mosquitto.stop()
    sink = sink_factory(mqtt_config(mosquitto, tmp_path, spool_max_messages=10))
    for i in range(10):
        sink.publish(result("x%d" % i))  # 3 messages each (state, text, event)
    assert len(sink.spool) == 10
    # The 18 states and texts newer ones replace went first (not counted), then the 2 oldest events.
    kept = [(m.topic.rpartition("/")[2], json.loads(m.payload)["text"] if m.topic.endswith(("state", "event"))
             else m.payload.decode()) for _, m in sink.spool.after(0, 100)]
    assert kept == [("event", "x%d" % i) for i in range(2, 9)] + [("state", "x9"), ("text", "x9"), ("event", "x9")]
    assert sink.spool.dropped == 2
    assert sink.stats.snapshot()["spool_dropped_total"] == 2  # while the broker is down, when it is watched


def test_online_is_said_once_the_daemon_announces_it_and_again_at_each_reconnect(mosquitto, tmp_path, sink_factory):
    """Connected, the sink takes commands but says nothing on <p>/availability until ``announce``
    (the daemon's sources are up); then ``online``, and again after the broker comes back."""
    sub = Collector(mosquitto, [PREFIX + "/availability", PREFIX + "/inbox/state"])
    sink = sink_factory(mqtt_config(mosquitto, tmp_path), announce=False)
    assert wait_until(lambda: sink.connected)
    sink.publish(result("hello"))  # sent after the connect's own messages: none of them said online
    sub.wait_topic(PREFIX + "/inbox/state")
    assert sub.on(PREFIX + "/availability") == []
    sink.announce()
    assert sub.wait_topic(PREFIX + "/availability")[-1].payload == b"online"
    mosquitto.stop()  # its will (offline) may come in between
    mosquitto.start()
    sub.wait(lambda ms: sum(m.topic == PREFIX + "/availability" and m.payload == b"online" for m in ms) == 2)
    sub.close()


def test_tls_with_ca_and_credentials(mosquitto, tmp_path, sink_factory):
    sub = Collector(mosquitto, [PREFIX + "/availability"])
    cfg = mqtt_config(mosquitto, tmp_path, port=mosquitto.tls_port, tls=True,
                      ca_file=str(mosquitto.certs["ca.crt"]))
    assert probe(cfg) is None
    sink = sink_factory(cfg)
    assert sub.wait_topic(PREFIX + "/availability")[-1].payload == b"online"
    assert sink.connected
    sub.close()


def test_wrong_password_is_reported_clearly(mosquitto, tmp_path, sink_factory, caplog):
    cfg = mqtt_config(mosquitto, tmp_path, password=Secret("wrong-pass"))
    assert "refused" in (probe(cfg) or "")
    with caplog.at_level(logging.INFO, logger="edge_ocr.sinks.mqtt"):
        sink = sink_factory(cfg)
        assert wait_until(lambda: "refused" in sink.last_error)
        assert wait_until(lambda: any("connection refused" in r.getMessage() for r in caplog.records))
    refusals = [r for r in caplog.records if "connection refused" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR
    assert "password" in refusals[0].getMessage() and "authori" in refusals[0].getMessage().lower()
    assert PASSWORD not in caplog.text and "wrong-pass" not in caplog.text
    assert not sink.connected


def test_a_clean_stop_leaves_the_last_counters_retained(mosquitto, tmp_path, sink_factory):
    sub = Collector(mosquitto, [PREFIX + "/stats"])
    sink = sink_factory(mqtt_config(mosquitto, tmp_path, stats_interval=3600.0))
    assert json.loads(sub.wait_topic(PREFIX + "/stats")[0].payload)["jobs_total"] == 0  # at the connect
    sink.stats.inc("jobs_total", 9)
    sink.close(timeout_s=3)
    late = Collector(mosquitto, [PREFIX + "/stats"])  # what `fleet status` reads after the stop
    assert json.loads(late.wait_topic(PREFIX + "/stats")[0].payload)["jobs_total"] == 9
    late.close()
    sub.close()


def test_a_reloaded_stats_interval_counts_from_the_last_stats_not_the_old_tick(mosquitto, tmp_path, sink_factory):
    sub = Collector(mosquitto, [PREFIX + "/stats"])
    cfg = mqtt_config(mosquitto, tmp_path, stats_interval=3600.0)
    sink = sink_factory(cfg)
    sub.wait_topic(PREFIX + "/stats")  # one at the connect, the next in an hour
    sink.update(replace(cfg, stats_interval=1.0))  # what SIGHUP applies
    assert len(sub.wait_topic(PREFIX + "/stats", 3, timeout_s=10)) == 3
    sub.close()


def test_a_flood_of_commands_is_each_answered_and_logged_in_a_few_lines(mosquitto, tmp_path, sink_factory, caplog):
    """50,000 commands in a second were 50,000 journal lines, past journald's rate limit (which then
    drops every service's lines). Each is answered; the journal gets 20 and a count of the rest."""
    import edge_ocr.sinks.mqtt as mqtt_module

    captures = Captures()
    sub = Collector(mosquitto, [PREFIX + "/cmd/result", PREFIX + "/availability"])
    sink = sink_factory(mqtt_config(mosquitto, tmp_path), captures)
    sub.wait_topic(PREFIX + "/availability")
    with caplog.at_level(logging.INFO, logger="edge_ocr.sinks.mqtt"):
        for _ in range(300):
            sub.client.publish(PREFIX + "/inbox/capture", b"", qos=1)
        assert len(sub.wait_topic(PREFIX + "/cmd/result", 300)) == 300 and len(captures.calls) == 300
        assert caplog.text.count("command capture source=inbox") == mqtt_module.COMMAND_LOG_LINES
        window = sink._command_window
        sink._command_window = (window[0] - mqtt_module.COMMAND_LOG_WINDOW_S, *window[1:])  # the window ends
        sub.client.publish(PREFIX + "/inbox/capture", b"", qos=1)
        assert len(sub.wait_topic(PREFIX + "/cmd/result", 301)) == 301
    assert "commands not logged: 280 more in" in caplog.text
    assert caplog.text.count("command capture source=inbox") == mqtt_module.COMMAND_LOG_LINES + 1
    sub.close()


def test_capture_commands_are_acknowledged(mosquitto, tmp_path, sink_factory):
    captures = Captures()
    sub = Collector(mosquitto, [PREFIX + "/cmd/result", PREFIX + "/availability"])
    sink_factory(mqtt_config(mosquitto, tmp_path), captures)
    sub.wait_topic(PREFIX + "/availability")
    sub.client.publish(PREFIX + "/cmd/capture", b"", qos=1)
    sub.client.publish(PREFIX + "/inbox/capture", b"now", qos=1)
    sub.client.publish(PREFIX + "/nope/capture", b"", qos=1)
    # cmd/capture may name its source in a JSON payload; any other payload is only echoed back.
    sub.client.publish(PREFIX + "/cmd/capture", b'{"source": "inbox", "id": 7}', qos=1)
    sub.client.publish(PREFIX + "/cmd/capture", b'{"id": 8}', qos=1)
    sub.client.publish(PREFIX + "/cmd/capture", b"inbox", qos=1)
    # A UTF-8 byte order mark before the JSON (some Windows and .NET publishers): it named no
    # source then, so every camera fired.
    sub.client.publish(PREFIX + "/cmd/capture", b'\xef\xbb\xbf{"source": "inbox"}', qos=1)
    acks = [json.loads(m.payload) for m in sub.wait_topic(PREFIX + "/cmd/result", 7)]
    assert [(a["source"], a["ok"]) for a in acks] == [(None, True), ("inbox", True), ("nope", False),
                                                      ("inbox", True), (None, True), (None, True), ("inbox", True)]
    assert captures.calls == [None, "inbox", "nope", "inbox", None, None, "inbox"]
    assert acks[3]["request"] == '{"source": "inbox", "id": 7}'
    # A JSON object that names no source properly and an unknown command are refused with their
    # reason, and capture nothing: a typo must not fire every camera.
    sub.client.publish(PREFIX + "/cmd/capture", b'{"source": 5}', qos=1)
    sub.client.publish(PREFIX + "/cmd/capture", b'{"source": "inbox"', qos=1)
    sub.client.publish(PREFIX + "/cmd/reboot", b"{}", qos=1)
    refused = [json.loads(m.payload) for m in sub.wait_topic(PREFIX + "/cmd/result", 10)][7:]
    assert [(a["command"], a["ok"]) for a in refused] == [("capture", False), ("capture", False), ("reboot", False)]
    assert '"source" must name a source, got 5' in refused[0]["message"]
    assert "not valid JSON" in refused[1]["message"]
    assert refused[2]["message"] == "unknown command 'reboot' (expected capture)"
    assert captures.calls == [None, "inbox", "nope", "inbox", None, None, "inbox"]
    # A command published retained runs once, live; a daemon that connects later (a restart, a
    # reconnect) gets it from the broker as retained and does not run it again.
    sub.client.publish(PREFIX + "/inbox/capture", b"go", qos=1, retain=True)
    assert sub.wait_topic(PREFIX + "/cmd/result", 11)[10] and captures.calls[-1] == "inbox"
    later = Captures()
    sink_factory(mqtt_config(mosquitto, tmp_path, client_id="edge-ocr-test-later", spool_dir=tmp_path / "later"), later)
    again = json.loads(sub.wait_topic(PREFIX + "/cmd/result", 12)[11].payload)
    assert (again["ok"], later.calls) == (False, []) and "retained command ignored" in again["message"]
    sub.client.publish(PREFIX + "/inbox/capture", b"", qos=1, retain=True)  # clears it on the broker
    sub.close()


def test_home_assistant_discovery_resent_when_ha_comes_online(mosquitto, tmp_path, sink_factory):
    sub = Collector(mosquitto, ["homeassistant/#"])
    sink_factory(mqtt_config(mosquitto, tmp_path))
    topic = "homeassistant/sensor/edge-ocr-test/inbox/config"
    first = sub.wait_topic(topic)
    config = json.loads(first[0].payload)
    assert config["unique_id"] == "edge-ocr-test_inbox"
    # Home Assistant 2026.4 dropped object_id; the entity id asked for is default_entity_id, a slug.
    assert "object_id" not in config and re.fullmatch(r"sensor\.edge_ocr_[a-z0-9_]+_inbox", config["default_entity_id"])
    assert config["state_topic"] == PREFIX + "/inbox/state"
    assert [a["topic"] for a in config["availability"]] == [PREFIX + "/availability", PREFIX + "/inbox/status"]
    assert config["availability_mode"] == "all"  # the daemon down, or this source offline: unavailable
    assert config["device"]["identifiers"] == ["edge-ocr-test"] and "value_template" in config
    late = Collector(mosquitto, [topic])  # retained: a subscriber arriving later gets it
    assert late.wait_topic(topic)[0].retain
    late.close()
    sub.client.publish("homeassistant/status", b"online", qos=1)
    assert len(sub.wait_topic(topic, 2)) == 2


class HomeAssistantSensor:
    """An MQTT sensor as Home Assistant renders one from its discovery config: each state message's
    payload is ``value_json`` in a sandboxed Jinja2 environment, and ``this`` is the entity's own
    state before the message (homeassistant/components/mqtt/models.py, MqttValueTemplate)."""

    def __init__(self, config: dict):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment()
        self.value = env.from_string(config["value_template"])
        self.attributes_template = env.from_string(config["json_attributes_template"])
        self.state, self.attributes = "unknown", {}

    def receive(self, payload: bytes) -> None:
        value_json = json.loads(payload)
        this = type("State", (), {"state": self.state})()
        self.state = self.value.render(value_json=value_json, value=payload.decode(), this=this)
        self.attributes = json.loads(self.attributes_template.render(value_json=value_json, this=this))


def test_home_assistant_sensor_keeps_its_text_through_an_error_result(mosquitto, tmp_path, sink_factory):
    """A corrupt file between two readings: the sensor keeps the last text (as <p>/<source>/text
    does) and its attributes say what failed; the next reading replaces it."""
    from edge_ocr.errors import UnsupportedImage

    sub = Collector(mosquitto, ["homeassistant/#", PREFIX + "/inbox/state"])
    sink = sink_factory(mqtt_config(mosquitto, tmp_path))
    config = json.loads(sub.wait_topic("homeassistant/sensor/edge-ocr-test/inbox/config")[0].payload)
    sensor = HomeAssistantSensor(config)
    failed = Result("inbox", Status.ERROR, None, ("pack", "1"), error=UnsupportedImage("not an image: scan.jpg"),
                    changed=False, previous_text="TOTAL 12.30")
    for published in (result("TOTAL 12.30"), failed, result("TOTAL 4.10")):
        sink.publish(published)
    states = sub.wait_topic(PREFIX + "/inbox/state", 3)
    seen = []
    for message in states:
        sensor.receive(message.payload)
        seen.append((sensor.state, sensor.attributes["status"], sensor.attributes["error"]))
    assert seen == [("TOTAL 12.30", "ok", None),
                    ("TOTAL 12.30", "error", {"code": "unsupported_image", "message": "not an image: scan.jpg"}),
                    ("TOTAL 4.10", "ok", None)]
    # Home Assistant restarted: its new entity starts "unknown" and gets the retained error result,
    # which still carries the last text read
    restarted = HomeAssistantSensor(config)
    restarted.receive(states[1].payload)
    assert restarted.state == "TOTAL 12.30"
    sub.close()


def test_a_region_sensor_keeps_its_text_when_a_state_lacks_its_region(tmp_path):
    """The retained state of before the region was added or renamed (Home Assistant gets it with
    the new discovery config), or an error result: the template used to fail on the missing
    region ("'dict object' has no attribute ..."); the sensor keeps what it shows."""
    from edge_ocr.sinks.mqtt import discovery_config

    cfg = MqttConfig(client_id="edge-ocr-test", topic_prefix=PREFIX, spool_dir=tmp_path / "spool")
    sensor = HomeAssistantSensor(discovery_config(cfg, "edge-ocr-test", "meter", "reading"))
    reading = {"text": "12.3", "score": 0.98, "status": "ok", "read": True}
    for state in ({"status": "ok", "text": "12.3", "regions": {"reading": reading}, "ts": "t1"},
                  {"status": "ok", "text": "12.4", "regions": {"value": dict(reading, text="12.4")}, "ts": "t2"},
                  {"status": "error", "text": "", "ts": "t3"}):
        sensor.receive(json.dumps(state).encode())
        assert sensor.state == "12.3"
    assert sensor.attributes == {"score": None, "status": None, "read": None, "ts": "t3"}
    sensor.receive(json.dumps({"status": "ok", "regions": {"reading": dict(reading, text="x" * 300)}, "ts": "t4"}).encode())
    assert sensor.state == "x" * 255 and sensor.attributes["score"] == 0.98


def test_discovery_turned_off_removes_the_sensors_it_made(mosquitto, tmp_path, sink_factory):
    """Home Assistant keeps an entity while its retained config is on the broker: with
    ``discovery = false`` the daemon clears the configs an earlier run of it left."""
    topics = ["homeassistant/sensor/edge-ocr-test/%s/config" % ident for ident in ("inbox", "meter", "meter_reading")]
    sub = Collector(mosquitto, ["homeassistant/#"])
    for topic in topics + ["homeassistant/sensor/another-device/inbox/config"]:  # the last is not ours
        sub.client.publish(topic, b'{"name": "left"}', qos=1, retain=True).wait_for_publish(5)
    sink_factory(mqtt_config(mosquitto, tmp_path, discovery=False))
    assert sub.wait(lambda ms: {m.topic for m in ms if m.payload == b""} == set(topics))
    later = Collector(mosquitto, ["homeassistant/#"])  # what the broker now keeps
    assert [m.topic for m in later.wait(lambda ms: len(ms) >= 1)] == ["homeassistant/sensor/another-device/inbox/config"]
    later.close()
    sub.client.publish("homeassistant/sensor/another-device/inbox/config", b"", qos=1, retain=True)
    sub.close()


def test_starts_and_spools_with_no_broker_logging_one_warning(tmp_path, caplog):
    cfg = MqttConfig(spool_dir=tmp_path / "spool", topic_prefix=PREFIX, client_id="edge-ocr-none",
                     host="127.0.0.1", port=1, reconnect_min_delay=0.1, reconnect_max_delay=0.2)
    with caplog.at_level(logging.DEBUG, logger="edge_ocr.sinks.mqtt"):
        sink = MqttSink(cfg, ("inbox",), Stats(), Captures())
        sink.start()
        sink.publish(result("kept"))
        assert wait_until(lambda: sum("connect failed" in r.getMessage() for r in caplog.records) >= 2)
        assert wait_until(lambda: any("unreachable" in r.getMessage() for r in caplog.records))
        sink.close(timeout_s=1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    # the journal says why, as `edge-ocr check` does, not only that it failed
    assert "reason=cannot connect to 127.0.0.1:1: Connection refused" in warnings[0].getMessage()
    assert len(sink.spool) == 3


@pytest.mark.parametrize("payload, seeded", [
    ({"status": "ok", "text": "12.3", "regions": {}}, [("inbox", "12.3", {})]),
    ({"status": "error", "text": "", "previous_text": "12.3", "regions": {"r": {"text": "12.3"}}},
     [("inbox", "12.3", {"r": "12.3"})]),  # an error kept the reading before it
    ({"status": "ok", "text": "7", "regions": {"r": {"text": 12.3}, "s": {"text": ""}}}, [("inbox", "7", {})]),
    ({"status": "ok", "text": 12}, []),  # another tool's retained state: not text, not taken
    ("not json at all", []),
    ([1, 2], []),
    # Too large to be ours: a 42 MB retained state became the first result's previous_text, in
    # done/, /api/latest, the spool and the broker (and the daemon's peak near the guard's limit).
    ({"status": "ok", "text": "9" * (3 * 1024 * 1024)}, []),
    ({"status": "ok", "text": "9" * (300 * 1024), "regions": {}}, []),
    ({"status": "ok", "text": "7", "regions": {"r": {"text": "9" * (300 * 1024)}}}, [("inbox", "7", {})]),
])
def test_a_retained_state_seeds_only_text(tmp_path, payload, seeded):
    import paho.mqtt.client as paho

    taken: list[tuple[str, str, dict]] = []
    cfg = MqttConfig(client_id="seed-test", topic_prefix="t", spool_dir=tmp_path / "spool")
    sink = MqttSink(cfg, ("inbox",), Stats(), Captures(), on_previous=lambda s, t, r: taken.append((s, t, dict(r))))
    message = paho.MQTTMessage(topic=b"t/inbox/state")
    message.payload = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    message.retain = True
    assert sink._take_previous(message)
    live = paho.MQTTMessage(topic=b"t/inbox/state")  # our own result coming back live: never a seed
    live.payload, live.retain = json.dumps({"status": "ok", "text": "mine"}).encode(), False
    assert not sink._take_previous(live)
    assert taken == seeded


def test_results_the_last_run_could_not_send_seed_before_the_retained_state(tmp_path):
    """The spool's newest state of a source is newer than what the broker retained: it seeds first
    (before any connect: no broker here)."""
    from edge_ocr.sinks.spool import Message, Spool

    spool = Spool(tmp_path / "spool", 100)
    for text in ("11", "12"):  # two readings made while the broker was down, newest last
        spool.append(Message("t/inbox/state", json.dumps({"status": "ok", "text": text}).encode(), 1, True))
    spool.append(Message("t/inbox/event", b"{}", 1, False))
    taken: list[tuple[str, str, dict]] = []
    cfg = MqttConfig(client_id="seed-test", topic_prefix="t", spool_dir=tmp_path / "spool", port=1,
                     reconnect_min_delay=5.0, reconnect_max_delay=5.0)
    sink = MqttSink(cfg, ("inbox", "gate"), Stats(), Captures(),
                    on_previous=lambda s, t, r: taken.append((s, t, dict(r))))
    sink.start()
    try:
        assert taken == [("inbox", "12", {})]
    finally:
        sink.close(timeout_s=1)


@pytest.mark.broker
def test_the_retained_states_are_read_once_before_the_sources_start_and_own_results_never_seed(mosquitto, tmp_path):
    cfg = mqtt_config(mosquitto, tmp_path)
    before = MqttSink(cfg, ("inbox",), Stats(), Captures())
    before.start()
    before.publish(result("12.3"))  # the last run's reading, retained by the broker
    assert wait_until(lambda: len(before.spool) == 0)
    before.close()
    taken: list[tuple[str, str, dict]] = []
    sink = MqttSink(cfg, ("inbox",), Stats(), Captures(), on_previous=lambda s, t, r: taken.append((s, t, dict(r))))
    sink.start()
    try:
        assert sink.previous_read.wait(10)  # set by the UNSUBACK, which follows the retained states
        assert taken == [("inbox", "12.3", {})]
        sink.publish(result("12.4"))  # its own result: not subscribed any more, never a seed
        assert wait_until(lambda: len(sink.spool) == 0)
        assert taken == [("inbox", "12.3", {})]
    finally:
        sink.close()
    assert MqttSink(cfg, ("inbox",), Stats(), Captures()).previous_read.is_set()  # nothing to wait for


def test_an_unreachable_broker_is_not_waited_for_as_if_it_had_answered(tmp_path):
    cfg = MqttConfig(client_id="seed-test", topic_prefix="t", spool_dir=tmp_path / "spool", port=1,
                     reconnect_min_delay=5.0, reconnect_max_delay=5.0)
    sink = MqttSink(cfg, ("inbox",), Stats(), Captures(), on_previous=lambda s, t, r: None)
    sink.start()
    try:
        assert wait_until(lambda: sink.last_error.startswith("unreachable"), 10)  # the broker's answer: refused
        assert not sink.previous_read.is_set()  # the daemon's start waits app.PREVIOUS_WAIT_S at most
    finally:
        sink.close(timeout_s=1)


def test_a_stop_keeps_its_budget_while_a_connect_hangs(tmp_path, caplog):
    """A broker host that drops packets (a firewall): paho's connect waits its own 5 s timeout, and
    its loop_stop joined that wait, so the daemon's stop overran its budget. Now the stop returns
    within it and leaves that attempt behind, saying so."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []  # fill the accept queue: further connects get no answer at all
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        queued.append(filler)
    cfg = MqttConfig(client_id="hang-test", topic_prefix="t", spool_dir=tmp_path / "spool", port=port)
    sink = MqttSink(cfg, ("inbox",), Stats(), Captures())
    try:
        sink.start()
        assert not wait_until(lambda: sink.connected, 0.5)  # a fixed window: a connect that hangs sends no event
        with caplog.at_level(logging.WARNING, logger="edge_ocr.sinks.mqtt"):
            sink.close(timeout_s=1)
        assert "mqtt stop left a connect attempt behind" in caplog.text
    finally:
        for s in [listener, *queued]:
            s.close()


def test_a_message_the_broker_refuses_is_set_aside_and_the_rest_get_through(tmp_path):
    """A result over the broker's maximum packet size (a dense page's JSON against AWS IoT's
    128 KB, here Mosquitto's max_packet_size) dropped the connection at every resend: paho resends
    it first after each reconnect, so no later result was ever delivered, and availability flapped.
    After a few such drops it is set aside (counted), and the results after it arrive."""
    broker = Mosquitto(tmp_path / "broker")
    broker.conf.write_text(broker.conf.read_text() + "max_packet_size 20000\n")
    broker.start()
    stats = Stats()
    sink = MqttSink(mqtt_config(broker, tmp_path), ("inbox",), stats, Captures())
    sub = None
    try:
        sink.start()
        assert wait_until(lambda: sink.connected, 10)
        sub = Collector(broker, [PREFIX + "/inbox/text"])
        sink.publish(result("small-1"))
        sink.publish(result("X" * 30000))  # state, text and event each over the limit
        for i in range(2, 5):
            sink.publish(result("small-%d" % i))
        texts = lambda: [m.payload for m in sub.on(PREFIX + "/inbox/text")]  # noqa: E731
        assert wait_until(lambda: b"small-4" in texts(), 90), texts()
        assert [t for t in texts() if t.startswith(b"small")][-3:] == [b"small-2", b"small-3", b"small-4"]
        assert stats.get("mqtt_refused_total") == 3
        assert wait_until(lambda: len(sink.spool) == 0, 10)
        kept = sorted((tmp_path / "spool" / "set-aside").iterdir())  # kept, not lost: the three large ones
        assert len(kept) == 3 and all(path.stat().st_size > 30000 for path in kept)
    finally:
        sink.close(timeout_s=2)
        if sub is not None:
            sub.close()
        broker.stop()


def test_a_connection_two_devices_fight_over_is_one_line_a_minute_naming_the_client_id(mosquitto, tmp_path,
                                                                                        sink_factory, caplog):
    """Two Pis cloned from one SD card share a client_id: the broker hands the session to each in
    turn, and the journal got "mqtt disconnected ... reason=Unspecified error" and "mqtt connected"
    twice a second for as long as both ran, with no word of why."""
    import paho.mqtt.client as paho

    with caplog.at_level(logging.INFO, logger="edge_ocr.sinks.mqtt"):
        sink = sink_factory(mqtt_config(mosquitto, tmp_path))
        assert wait_until(lambda: sink.connected, 10)
        twin = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="edge-ocr-test")
        twin.username_pw_set(USER, PASSWORD)
        twin.reconnect_delay_set(0.1, 0.2)
        twin.connect("127.0.0.1", mosquitto.port)
        twin.loop_start()
        try:
            drops = lambda: sum("disconnected" in r.getMessage() or "keeps dropping" in r.getMessage()  # noqa: E731
                                for r in caplog.records)
            assert wait_until(lambda: "keeps dropping" in caplog.text, 30), caplog.text[-3000:]
            told = drops()
            wait_until(lambda: False, 3)  # the fight goes on
        finally:
            twin.loop_stop()
            twin.disconnect()
    assert "client_id=edge-ocr-test? (each device needs its own mqtt.client_id)" in caplog.text
    assert caplog.text.count("keeps dropping") == 1 and drops() == told  # nothing more within the minute
    assert caplog.text.count("mqtt disconnected") <= 2, caplog.text[-3000:]


def test_a_host_the_resolver_refuses_is_a_line_from_the_probe_not_a_traceback(mosquitto, tmp_path):
    """`check` and `submit` probe the broker: paho's ValueError ("Invalid host.") or the resolver's
    UnicodeError came out as a traceback (config refuses such hosts now; the probe is the second guard)."""
    cfg = mqtt_config(mosquitto, tmp_path)
    object.__setattr__(cfg, "host", "broker..lan")  # past the config's own check
    assert probe(cfg, timeout_s=2).startswith("cannot connect to broker..lan:")


def test_the_readme_broker_acl_lets_a_device_clear_the_discovery_of_a_removed_source(tmp_path, tmp_path_factory):
    """config/mosquitto/ as the README shows it: a device renamed its source `inbox` to `meter`;
    at the next start it reads back its own retained discovery configs and clears the old one
    (the ACL let it write them but not read them: Home Assistant kept a dead `inbox` sensor).
    Another device's configs it may not write (the ACL let every user rewrite any of them)."""
    from edge_ocr.mqtt_client import make_client
    from tests.broker import require_mosquitto

    require_mosquitto()
    shipped = Path(__file__).resolve().parents[2] / "config" / "mosquitto"
    directory = tmp_path_factory.mktemp("mosquitto")
    (directory / "acl").write_text((shipped / "acl").read_text() + "\nuser observer\ntopic read #\n")
    broker = Mosquitto(directory, (shipped / "fleet.conf").read_text().replace("listener 8883", "listener {port} 127.0.0.1")
                       .replace("/etc/mosquitto/", "{dir}/"), users=("gate-pi", "observer"))
    broker.start()
    device = MqttConfig(spool_dir=tmp_path / "spool", topic_prefix="edge-ocr/gate-pi", client_id="edge-ocr-gate-pi",
                        host="127.0.0.1", port=broker.port, username="gate-pi", password=Secret(PASSWORD), tls=True,
                        ca_file=str(broker.certs["ca.crt"]), reconnect_min_delay=0.1, reconnect_max_delay=0.5)
    retained: dict[str, bytes] = {}
    observer = make_client(replace(device, username="observer", topic_prefix="observer"), "observer", will=False)
    observer.on_connect = lambda c, u, f, rc, p: c.subscribe([("homeassistant/sensor/#", 1), ("edge-ocr/#", 1)])
    observer.on_message = lambda c, u, msg: retained.__setitem__(msg.topic, msg.payload)
    old, new = ("homeassistant/sensor/edge-ocr-gate-pi/%s/config" % name for name in ("inbox", "meter"))
    try:
        observer.connect("127.0.0.1", broker.port)
        observer.loop_start()
        first = MqttSink(device, ("inbox",), Stats(), Captures())
        first.start()
        assert wait_until(lambda: retained.get(old, b"").startswith(b"{"))
        first.close(timeout_s=5)
        second = MqttSink(device, ("meter",), Stats(), Captures())
        second.start()
        assert wait_until(lambda: retained.get(new, b"").startswith(b"{") and retained.get(old) == b"")
        second.close(timeout_s=5)
        intruder = make_client(device, "edge-ocr-gate-pi-2", will=False)  # gate-pi's login, another client id
        intruder.connect("127.0.0.1", broker.port)
        intruder.loop_start()
        forged = "homeassistant/sensor/edge-ocr-other/meter/config"
        intruder.publish(forged, b'{"state_topic": "edge-ocr/gate-pi/fake"}', qos=1, retain=True).wait_for_publish(5)
        intruder.publish("edge-ocr/gate-pi/marker", b"after", qos=1).wait_for_publish(5)  # allowed, sent after
        assert wait_until(lambda: "edge-ocr/gate-pi/marker" in retained)
        intruder.loop_stop()
        intruder.disconnect()
        assert forged not in retained
    finally:
        observer.loop_stop()
        observer.disconnect()
        broker.stop()


def test_devices_named_in_chinese_keep_apart_in_home_assistant():
    """client_id 客厅扫描仪 and 书房扫描仪 were both node "_____": each daemon cleared the other's
    sensors as stale. A name in another script keeps a hash of itself; ASCII names as before."""
    from edge_ocr.sinks.mqtt import discovery_node

    living, study = discovery_node("客厅扫描仪"), discovery_node("书房扫描仪")
    assert living != study and living.startswith("_____-") and re.fullmatch(r"[A-Za-z0-9_-]+", living)
    assert discovery_node("edge-ocr-gate-pi-1a2b3c4d") == "edge-ocr-gate-pi-1a2b3c4d"
    assert discovery_node("gate.pi") == "gate_pi"  # as before: no existing entity moves
