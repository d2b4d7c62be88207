"""What SIGTERM does to an image still being read: the daemon waits for it (up to app.STOP_BUDGET_S,
under the unit's TimeoutStopSec) and writes its result; an image that outlives even that is left
in .processing/ for the next start and the process leaves at once (``App.leave_now``) instead of
letting Python's exit unwind a thread inside ONNX Runtime (an abort: exit 134, a core dump)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from edge_ocr import app as app_module
from edge_ocr.app import App
from edge_ocr.config import load_config
from edge_ocr.engine.types import EngineOutput, TextLine
from tests.broker import wait_until
from tests.fakes import QUAD
from tests.helpers import Daemon, write_config


class SlowEngine:
    """pipeline.Engine that takes ``seconds`` per image, as a 48 MP photo does on a small board."""

    reading_id = "fake"  # what it reads never changes

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = threading.Event()

    def __call__(self, image, rois=None, det=True, limit_side=None) -> EngineOutput:
        self.started.set()
        time.sleep(self.seconds)
        return EngineOutput((TextLine(image[5:].decode(), 0.99, QUAD),), (10, 5), {"total": self.seconds * 1000})

    def release_idle(self) -> tuple[str, ...]:
        return ()

    def close(self) -> None:
        pass


def run_and_stop_mid_image(tmp_path, seconds: float) -> tuple[App, int]:
    config = tmp_path / "edge-ocr.toml"
    config.write_text(
        '[[sources]]\nname = "inbox"\ntype = "folder"\npath = "inbox"\ndone_dir = "done"\nfailed_dir = "failed"\n'
        'stability_delay = 0.05\n\n[mqtt]\nenabled = false\n\n[http]\nenabled = false\n'
        '\n[guard]\nrss_soft_mb = 100000\nrss_hard_mb = 200000\n')  # the guard watches this pytest process
    engine = SlowEngine(seconds)
    app = App(load_config(config), engine_factory=lambda cfg, pages: (engine, ("fake", "0")))
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(app.run()), name="test-app")
    runner.start()
    (tmp_path / "inbox").mkdir(exist_ok=True)
    assert wait_until(lambda: (tmp_path / "inbox").is_dir())
    (tmp_path / "inbox" / "big.png").write_bytes(b"TEXT:big photo")
    assert engine.started.wait(20)
    app.stop_event.set()  # what SIGTERM sets
    runner.join(60)
    assert not runner.is_alive()
    return app, codes[0]


def test_an_image_longer_than_the_join_timeout_is_finished_and_written(tmp_path):
    app, code = run_and_stop_mid_image(tmp_path, app_module.JOIN_TIMEOUT_S + 2)
    assert (code, app.leave_now) == (0, False)
    assert json.loads((tmp_path / "done" / "big.json").read_text())["text"] == "big photo"


def test_an_image_past_the_stop_budget_stays_for_the_next_start_and_the_process_leaves_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(app_module, "STOP_BUDGET_S", 0.5)
    monkeypatch.setattr(app_module, "JOIN_TIMEOUT_S", 0.5)
    app, code = run_and_stop_mid_image(tmp_path, 2.0)
    assert (code, app.leave_now) == (0, True)  # nothing lost: a clean stop for systemd
    assert [p.name for p in (tmp_path / "inbox" / ".processing").iterdir()] == ["big.png"]
    assert not (tmp_path / "done" / "big.json").exists()


def test_a_request_past_the_stop_budget_is_a_clean_stop_too(tmp_path, monkeypatch, eval_dev):
    """POST /api/ocr still in the engine when SIGTERM's budget runs out: the client's connection
    is closed, nothing else is lost; it used to exit 1 (`systemctl stop` left the unit failed)."""
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(app_module, "STOP_BUDGET_S", 0.5)
    monkeypatch.setattr(app_module, "JOIN_TIMEOUT_S", 0.5)
    config = tmp_path / "edge-ocr.toml"
    config.write_text('[[sources]]\nname = "inbox"\ntype = "folder"\npath = "inbox"\n\n[mqtt]\nenabled = false\n'
                      '\n[http]\nbind = "127.0.0.1:0"\n\n[guard]\nrss_soft_mb = 100000\nrss_hard_mb = 200000\n')
    engine = SlowEngine(3.0)
    app = App(load_config(config), engine_factory=lambda cfg, pages: (engine, ("fake", "0")))
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(app.run()), name="test-app", daemon=True)
    runner.start()
    try:
        assert wait_until(lambda: app.http is not None and app.http.port > 0, 30)
        word = next((eval_dev / "lines").glob("*.png")).read_bytes()
        request = urllib.request.Request(app.http.url + "/api/ocr", data=word, headers={"Content-Type": "image/png"})
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(urllib.request.urlopen, request, timeout=30)
            assert engine.started.wait(20)
            app.stop_event.set()  # what SIGTERM sets
            runner.join(30)
            assert not runner.is_alive()
            with pytest.raises(OSError):  # its connection closed by the stop
                answer.result(30).read()
    finally:
        app.stop_event.set()
    assert (codes, app.leave_now) == ([0], True)


def test_the_stop_budget_fits_under_the_units_stop_timeout():
    text = (Path(__file__).resolve().parents[1] / "systemd" / "edge-ocr.service").read_text()
    stop_timeout = float(next(line.split("=", 1)[1].rstrip("s") for line in text.splitlines()
                              if line.startswith("TimeoutStopSec=")))
    assert app_module.STOP_BUDGET_S + 5 <= stop_timeout  # 5 s: the broker's goodbyes (MqttSink.close: 3 s) and the guard


@pytest.mark.slow  # ~20 s: the camera's stream timeout
def test_a_camera_blocked_on_a_stream_that_never_answers_does_not_fail_the_stop(tmp_path):
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers: a hung IP camera
    held: list[socket.socket] = []
    acceptor = threading.Thread(target=lambda: held.extend(silent.accept() for _ in range(50)), daemon=True)
    acceptor.start()
    camera = ('[[sources]]\nname = "gate"\ntype = "camera"\ndevice = "http://127.0.0.1:%d/video.mjpg"\n'
              "retry_min_delay = 0.1\nretry_max_delay = 0.2\n" % silent.getsockname()[1])
    daemon = Daemon(write_config(tmp_path, None, extra_source=camera)).start()
    time.sleep(1.0)  # ready once the first attempt timed out; the next one is blocked in OpenCV now
    assert daemon.terminate(30) == 0, daemon.text()
    assert "left behind source=gate" in daemon.text() and "Traceback" not in daemon.text()
    silent.close()
