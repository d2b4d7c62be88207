"""The daemon under load and reconfiguration: a 1,000-file burst with the broker down stays in
bounded memory and loses nothing; SIGHUP applies live keys and names the ones needing a restart."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
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


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(daemon: Daemon) -> float:
    url = re.search(r"http listening url=(\S+)", daemon.text()).group(1)
    with urllib.request.urlopen(url + "/readyz", timeout=30) as response:
        return json.loads(response.read())["guard"]["rss_mb"]


@pytest.mark.slow
def test_a_1000_file_burst_with_the_broker_down_stays_bounded(eval_dev, tmp_path):
    config = tmp_path / "edge-ocr.toml"
    config.write_text(_config_text(_unused_port()))  # nobody listens there: everything spools
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


def test_sighup_applies_live_keys_and_names_the_rest(tmp_path):
    config = tmp_path / "edge-ocr.toml"
    port = _unused_port()
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
    assert daemon.terminate() == 0
