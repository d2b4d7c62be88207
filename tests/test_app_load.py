"""The daemon under load and reconfiguration: a 1,000-file burst with the broker down stays in
bounded memory and loses nothing; SIGHUP applies live keys and names the ones needing a restart."""

from __future__ import annotations

import json
import re
import shutil
import signal
import threading
import urllib.request

import pytest

from tests.broker import wait_until
from tests.helpers import Daemon, line_samples


def _config_text(port: int, low_confidence: float = 0.6, pack: str = "default") -> str:
    return (
        '[engine]\nthreads = 2\npack = "%s"\nlow_confidence = %s\n\n[http]\nbind = "127.0.0.1:0"\n\n'
        '[pipeline]\nqueue_size = 8\n\n[[sources]]\nname = "inbox"\ntype = "folder"\npath = "inbox"\n'
        'done_dir = "done"\nfailed_dir = "failed"\nstability_delay = 0.1\ndelete_original = true\n\n'
        '[mqtt]\nhost = "127.0.0.1"\nport = %d\nspool_dir = "spool"\nqos = 1\n' % (pack, low_confidence, port)
    )


def _rss_mb(daemon: Daemon) -> float:
    url = re.search(r"http listening url=(\S+)", daemon.text()).group(1)
    with urllib.request.urlopen(url + "/readyz", timeout=30) as response:
        return json.loads(response.read())["guard"]["rss_mb"]


@pytest.mark.slow
def test_a_1000_file_burst_with_the_broker_down_stays_bounded(eval_dev, tmp_path, closed_port):
    config = tmp_path / "edge-ocr.toml"
    config.write_text(_config_text(closed_port))  # nobody listens there: everything spools
    daemon = Daemon(config).start()
    assert wait_until(lambda: _rss_mb(daemon) > 0, 10)
    idle_mb = _rss_mb(daemon)
    samples = [p for p, _ in line_samples(eval_dev, "SROIE2019-task1", 250)]
    inbox = tmp_path / "inbox"
    for i in range(1000):  # 1,000 real receipt-line crops, written as fast as the disk allows
        shutil.copyfile(samples[i % len(samples)], inbox / ("burst-%04d.png" % i))
    peak = [idle_mb]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], _rss_mb(daemon))

    sampler = threading.Thread(target=sample, name="test-rss", daemon=True)
    sampler.start()
    try:
        finished = lambda: len(list((tmp_path / "done").glob("*.json"))) == 1000  # noqa: E731
        assert wait_until(finished, 900), daemon.text()[-2000:]
    finally:
        done.set()
        sampler.join(5)
    # The queue holds 8 jobs; the spool is on disk. Memory must not track the backlog.
    assert peak[0] < idle_mb + 150, (idle_mb, peak[0])
    spooled = list((tmp_path / "spool").glob("*"))
    assert len(spooled) >= 1000  # state + text (+ event on change) per result, waiting for a broker
    # The last original is deleted just after its JSON lands (delete_original).
    assert wait_until(lambda: not list(inbox.glob("*.png")) and not list((inbox / ".processing").iterdir()), 30)
    assert daemon.terminate() == 0


def test_sighup_applies_live_keys_and_names_the_rest(tmp_path, closed_port):
    config = tmp_path / "edge-ocr.toml"
    port = closed_port
    config.write_text(_config_text(port))
    daemon = Daemon(config).start()
    config.write_text(_config_text(port, low_confidence=0.8, pack="crnn"))
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "config reload" in daemon.text() and "restart needed" in daemon.text(), 20), daemon.text()
    text = daemon.text()
    assert re.search(r"config reload applied keys=.*engine\.low_confidence", text), text
    assert re.search(r"restart needed for keys=.*engine\.pack", text), text
    config.write_text("[engine]\nthreads = many\n")  # a broken file keeps the running config
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "config reload failed, keeping the running config" in daemon.text(), 20)
    assert daemon.proc.poll() is None
    # a home of a user this machine lacks: before, a RuntimeError out of the reload ended the daemon
    config.write_text(_config_text(port).replace('path = "', 'path = "~no-such-user-here/', 1))
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "no such user's home here" in daemon.text(), 20), daemon.text()[-2000:]
    assert daemon.proc.poll() is None
    # a pack that does not exist was taken as "restart needed": the next start would have failed
    config.write_text(_config_text(port, pack="ppocrv6-smal"))
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "engine.pack: no model pack 'ppocrv6-smal'" in daemon.text(), 20), daemon.text()[-2000:]
    assert "restart needed for keys=engine.pack" not in daemon.text().split("no such user's home here")[-1]
    assert daemon.proc.poll() is None
    assert daemon.terminate() == 0


def test_a_daemon_started_on_the_built_in_defaults_reads_a_config_file_written_since_at_sighup(tmp_path, monkeypatch,
                                                                                             caplog):
    """`edge-ocr run` with no file anywhere, then /etc/edge-ocr/config.toml written and SIGHUP sent:
    the reload re-read the defaults and said "no changes". (/etc is this test's own directory.)"""
    import dataclasses
    import logging

    from edge_ocr import config as config_module
    from edge_ocr.app import App
    from edge_ocr.config import load_config
    from tests.fakes import FakeEngine

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.delenv("EDGE_OCR_CONFIG", raising=False)
    etc = tmp_path / "etc" / "config.toml"
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", etc)
    defaults = load_config(None)
    assert defaults.path is None and defaults.engine.low_confidence == 0.6
    started = dataclasses.replace(  # no broker, no port 8080 and no guard on this pytest process
        defaults, mqtt=dataclasses.replace(defaults.mqtt, enabled=False),
        http=dataclasses.replace(defaults.http, enabled=False),
        guard=dataclasses.replace(defaults.guard, rss_soft_mb=100000, rss_hard_mb=200000))
    app = App(started, engine_factory=lambda cfg, pages: (FakeEngine(), ("fake", "0")))
    runner = threading.Thread(target=app.run, name="test-app", daemon=True)
    runner.start()
    try:
        assert wait_until(lambda: "inbox" in app.sources and app.sources["inbox"].ready.is_set(), 30)
        etc.parent.mkdir()
        etc.write_text("[engine]\nlow_confidence = 0.3\n\n[mqtt]\nenabled = false\n")
        with caplog.at_level(logging.INFO, logger="edge_ocr.app"):
            app.reload_event.set()  # what SIGHUP sets
            assert wait_until(lambda: app.config.engine.low_confidence == 0.3, 20), caplog.text
        assert app.config.path == etc
        assert "config reload: reading %s (started on the built-in defaults)" % etc in caplog.text
        assert "config reload applied keys=engine.low_confidence" in caplog.text
    finally:
        app.stop_event.set()
        runner.join(20)
