"""The daemon with camera sources, in-process: the real engine and default pack, a real MJPG video
file with ROIs, picamera2 through the fake module, a real Mosquitto."""

from __future__ import annotations

import json
import sys

import pytest

from edge_ocr.app import App
from edge_ocr.config import load_config
from edge_ocr.sources.base import SourceStatus
from tests.broker import PASSWORD, USER, Collector, wait_until
from tests.fake_picamera2 import CameraBus
from tests.frames import BOX, text_frame, write_video

PREFIX = "cam/dev"
NODE = "edge-ocr-cam"


@pytest.mark.broker
def test_video_meter_events_once_per_change_and_picamera_appearing_later(tmp_path, mosquitto, engines, monkeypatch):
    bus = CameraBus("missing", frame=text_frame("42", (640, 480)))
    monkeypatch.setitem(sys.modules, "picamera2", bus.module())
    texts = ["12.3"] * 6 + ["45.6"] * 6 + ["78.9"] * 6
    video = write_video(tmp_path / "meter.avi", [text_frame(t) for t in texts], fps=20)
    (tmp_path / "secret").write_text(PASSWORD + "\n")
    config = tmp_path / "edge-ocr.toml"
    config.write_text(
        '[[sources]]\nname = "meter"\ntype = "camera"\ndevice = "%s"\ninterval = 0.05\n'
        'rois = [ { name = "reading", box = [%d, %d, %d, %d], allowed_chars = "0123456789.", pattern = \'\\d+\\.\\d\' } ]\n'
        '\n[[sources]]\nname = "pi"\ntype = "camera"\nbackend = "picamera2"\ninterval = 0\n'
        "retry_min_delay = 0.05\nretry_max_delay = 0.2\n"
        '\n[mqtt]\nhost = "127.0.0.1"\nport = %d\nusername = "%s"\npassword_file = "secret"\n'
        'topic_prefix = "%s"\nclient_id = "%s"\nspool_dir = "spool"\nreconnect_min_delay = 0.1\n'
        "reconnect_max_delay = 0.5\n" % (video, *BOX, mosquitto.port, USER, PREFIX, NODE)
        # In-process: a free HTTP port, and a guard that tolerates this whole pytest process.
        + '\n[http]\nbind = "127.0.0.1:0"\n\n[guard]\nrss_soft_mb = 100000\nrss_hard_mb = 200000\n')
    stale = "homeassistant/sensor/%s/meter_old/config" % NODE
    seed = Collector(mosquitto, [stale])
    seed.client.publish(stale, json.dumps({"name": "a removed ROI"}), qos=1, retain=True).wait_for_publish(5)
    seed.wait_topic(stale)
    seed.close()
    sub = Collector(mosquitto, ["%s/#" % PREFIX, "homeassistant/#"])
    app = App(load_config(config), engine_factory=lambda cfg, pages: (engines(), ("default", "test")))
    try:
        app.start()
        # The meter: each value published once, after two agreeing reads; the file's end → offline.
        events = [json.loads(m.payload) for m in sub.wait_topic(PREFIX + "/meter/event", 3)]
        assert wait_until(lambda: app.sources["meter"].status is SourceStatus.OFFLINE)
        assert wait_until(lambda: app.pipeline.queue.qsize() == 0 and app.pipeline.busy == 0)
        states = sub.wait_topic(PREFIX + "/meter/state", 6)
        assert [e["regions"]["reading"]["text"] for e in events] == ["12.3", "45.6", "78.9"]
        assert [e["previous_text"] for e in events] == [None, "12.3", "45.6"]
        assert all(e["changed"] and e["status"] == "ok" for e in events)
        assert [m.payload for m in sub.on(PREFIX + "/meter/text")][-1] == b"78.9"
        assert len(states) == 6 and len(sub.on(PREFIX + "/meter/event")) == 3
        assert sub.wait(lambda ms: any(m.topic == PREFIX + "/meter/status" and m.payload == b"offline" for m in ms))
        # Home Assistant: a sensor for the ROI, and the stale one cleared with an empty retained payload.
        roi_config = json.loads(sub.wait_topic("homeassistant/sensor/%s/meter_reading/config" % NODE)[-1].payload)
        assert roi_config["unique_id"] == "%s_meter_reading" % NODE
        assert '.get("reading")' in roi_config["value_template"]
        assert roi_config["state_topic"] == PREFIX + "/meter/state"
        assert sub.wait(lambda ms: any(m.topic == stale and m.payload == b"" for m in ms))
        # The Pi camera: missing at start, plugged in later, online without a restart; capture on command.
        assert app.sources["pi"].status is SourceStatus.OFFLINE and bus.created == 0
        bus.state = "present"
        sub.wait(lambda ms: any(m.topic == PREFIX + "/pi/status" and m.payload == b"online" for m in ms))
        assert sub.on(PREFIX + "/pi/state") == []  # interval = 0: nothing until asked
        sub.client.publish(PREFIX + "/pi/capture", b"", qos=1)
        ack = json.loads(sub.wait_topic(PREFIX + "/cmd/result")[-1].payload)
        assert ack["ok"] and ack["source"] == "pi" and ack["message"] == "capture requested"
        state = json.loads(sub.wait_topic(PREFIX + "/pi/state")[-1].payload)
        assert state["text"] == "42" and state["changed"] and bus.created == 1
        assert sub.wait_topic(PREFIX + "/pi/event")
        stats = app.stats.snapshot()
        assert stats["frames_skipped_total"] == 12 and stats["frames_dropped_total"] == 0
    finally:
        assert app.shutdown() == 0
        sub.close()
    assert bus.closed == 1


class StubSource:
    """Just what App.capture reads of a source: its status and capture_now()."""

    def __init__(self, status: SourceStatus) -> None:
        self.status = status

    def capture_now(self) -> str:
        return "capture requested" if self.status is SourceStatus.ONLINE else "offline (no camera); capture when back"


def test_capture_now_on_an_offline_source_is_not_ok_but_says_it_will_capture_when_back(tmp_path):
    config = tmp_path / "edge-ocr.toml"
    config.write_text("[mqtt]\nenabled = false\n[http]\nenabled = false\n")
    app = App(load_config(config))
    app.sources = {"gate": StubSource(SourceStatus.ONLINE), "gone": StubSource(SourceStatus.OFFLINE)}
    assert app.capture("gate") == (True, "capture requested")
    ok, message = app.capture("gone")
    assert not ok and "capture when back" in message  # POST /api/capture/gone answers 503 capture_failed
    assert app.capture(None)[0]  # all sources: one took it
    app.sources.pop("gate")
    assert not app.capture(None)[0]


def test_a_meter_camera_reading_only_regions_loads_no_detector_until_a_page_comes(tmp_path, eval_dev):
    """Cameras that read only their regions never detect: the daemon makes each session at its first
    use (app.reads_pages), so a meter holds the region reader alone; a page over HTTP still reads."""
    import httpx

    from edge_ocr.app import reads_pages

    texts = ["12.3"] * 4 + ["45.6"] * 4
    video = write_video(tmp_path / "meter.avi", [text_frame(t) for t in texts], fps=20)
    config = tmp_path / "edge-ocr.toml"
    meter = ('[[sources]]\nname = "meter"\ntype = "camera"\ndevice = "%s"\ninterval = 0.05\n'
             'rois = [ { name = "reading", box = [%d, %d, %d, %d], allowed_chars = "0123456789." } ]\n'
             % (video, *BOX))
    config.write_text(meter + '\n[mqtt]\nenabled = false\n[http]\nbind = "127.0.0.1:0"\n'
                      '\n[guard]\nrss_soft_mb = 100000\nrss_hard_mb = 200000\n')
    loaded = load_config(config)
    assert not reads_pages(loaded)
    assert reads_pages(load_config(_with(config, '\n[[sources]]\nname = "inbox"\ntype = "folder"\npath = "in"\n')))
    assert reads_pages(load_config(_with(config, '\n[[sources]]\nname = "door"\ntype = "camera"\ninterval = 0\n')))
    app = App(loaded)
    try:
        app.start()
        assert app.engine.loaded == ()  # nothing made before a line needs it
        assert wait_until(lambda: app.sources["meter"].status is SourceStatus.OFFLINE, timeout_s=60)
        assert wait_until(lambda: app.pipeline.queue.qsize() == 0 and app.pipeline.busy == 0, timeout_s=60)
        with httpx.Client(base_url=app.http.url, timeout=60) as client:
            assert client.get("/api/latest/meter").json()["regions"]["reading"]["text"] == "45.6"
            assert "det" not in app.engine.loaded and "rec" in app.engine.loaded
            page = (eval_dev / "pages" / sorted(p.name for p in (eval_dev / "pages").glob("sroie_*"))[0]).read_bytes()
            assert len(client.post("/api/ocr", content=page, headers={"Content-Type": "image/jpeg"}).json()["lines"]) > 5
        assert "det" in app.engine.loaded
    finally:
        app.stop_event.set()
        app.shutdown()


def _with(config, text: str):
    other = config.with_name("other.toml")
    other.write_text(text + config.read_text())
    return other
