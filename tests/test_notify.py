"""edge_ocr.notify and the daemon's use of it: a fake $NOTIFY_SOCKET receives what systemd would."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from edge_ocr.app import App
from edge_ocr.config import load_config
from edge_ocr.notify import Notifier
from tests.fakes import FakeEngine


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket; collects every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []

    def next(self, predicate, timeout_s: float) -> str | None:
        """The next message matching ``predicate`` within ``timeout_s`` (None if none came)."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                return None
            self.messages.append((time.monotonic(), message))
            if predicate(message):
                return message
        return None

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    server = NotifySocket(tmp_path / "notify.sock")
    yield server
    server.close()


def test_notifier_speaks_the_sd_notify_protocol(notify_socket):
    notifier = Notifier({"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "30000000"})
    assert notifier.enabled and notifier.watchdog_s == 15.0
    assert notifier.ready("idle")
    assert notify_socket.next(lambda m: True, 2) == "READY=1\nSTATUS=idle"
    notifier.watchdog()
    assert notify_socket.next(lambda m: True, 2) == "WATCHDOG=1"


def test_without_a_socket_it_is_a_no_op():
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_s == 0.0
    assert notifier.ready() is False


def test_ready_after_loading_watchdog_only_while_the_pipeline_moves(tmp_path, notify_socket):
    config_path = tmp_path / "edge-ocr.toml"
    config_path.write_text(
        '[[sources]]\nname = "inbox"\ntype = "folder"\npath = "inbox"\ndone_dir = "done"\n'
        'failed_dir = "failed"\nstability_delay = 0.05\n\n[mqtt]\nenabled = false\n\n[http]\nbind = "127.0.0.1:0"\n'
        # The guard watches this whole pytest process (models of other tests included).
        '\n[guard]\nrss_soft_mb = 100000\nrss_hard_mb = 200000\n'
    )
    gate = threading.Event()
    gate.set()
    engine = FakeEngine(gate)
    loaded = threading.Event()

    def factory(cfg, pages):
        loaded.set()
        return engine, ("fake", "0")

    # WATCHDOG_USEC 0.4 s → pings every 0.2 s while the pipeline progressed in the last 0.8 s.
    notifier = Notifier({"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000"})
    app = App(load_config(config_path), engine_factory=factory, notifier=notifier)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(app.run()), name="test-app")
    runner.start()
    try:
        assert notify_socket.next(lambda m: m.startswith("READY=1"), 20)
        assert loaded.is_set()  # READY only after the models were loaded
        statuses = [m for _, m in notify_socket.messages if m.startswith("STATUS=")]
        assert statuses and statuses[0] == "STATUS=loading models"
        assert notify_socket.next(lambda m: m == "WATCHDOG=1", 5)  # idle by design still pings

        gate.clear()  # the next image hangs in the engine: a stuck worker
        (tmp_path / "inbox" / "stuck.png").write_bytes(b"TEXT:stuck")
        deadline = time.monotonic() + 10
        while not engine.calls and time.monotonic() < deadline:
            notify_socket.next(lambda m: False, 0.1)
        assert engine.calls, "the fake engine never got the file"
        # Progress stops; after at most 4 x 0.2 s the pings must stop and stay stopped.
        # Fixed windows: the daemon sends nothing else this often (STATUS= every 10 s) to mark their end.
        notify_socket.next(lambda m: False, 1.0)
        assert notify_socket.next(lambda m: m == "WATCHDOG=1", 1.5) is None

        gate.set()  # the worker finishes: pings resume
        assert notify_socket.next(lambda m: m == "WATCHDOG=1", 5)
    finally:
        gate.set()
        app.stop_event.set()
        runner.join(15)
    assert not runner.is_alive() and codes == [0]
    assert any(m.startswith("STOPPING=1") for _, m in notify_socket.messages) or notify_socket.next(
        lambda m: m.startswith("STOPPING=1"), 2
    )


def test_a_stop_asked_while_the_models_load_never_sends_ready_and_waits_for_no_source(tmp_path, notify_socket):
    config_path = tmp_path / "edge-ocr.toml"
    config_path.write_text(''.join(
        '[[sources]]\nname = "%s"\ntype = "folder"\npath = "%s"\n' % (name, name) for name in ("a", "b", "c"))
        + '\n[mqtt]\nenabled = false\n\n[http]\nenabled = false\n\n[guard]\nrss_soft_mb = 100000\nrss_hard_mb = 200000\n')
    notifier = Notifier({"NOTIFY_SOCKET": str(notify_socket.path)})
    app: App

    def factory(cfg, pages):  # SIGTERM while the models load: the sources start after the stop was asked
        app.stop_event.set()
        return FakeEngine(), ("fake", "0")

    app = App(load_config(config_path), engine_factory=factory, notifier=notifier)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(app.run()), name="test-app")
    runner.start()
    assert notify_socket.next(lambda m: m == "STOPPING=1\nSTATUS=stopping", 20)
    runner.join(20)  # three sources whose first attempt never came: no 10 s wait for each (30 s, past the
    # unit's TimeoutStopSec=20s, when systemd kills)
    assert not runner.is_alive() and codes == [0]
    assert not any(m.startswith("READY=1") for _, m in notify_socket.messages)


def test_systemctl_status_names_what_readyz_fails_on(tmp_path, notify_socket):
    """STATUS= showed only the counters ("jobs=0 queue=0 mqtt=off spool=0") while /readyz said 503:
    `systemctl status` looked healthy with the drop folder unable to store a single result."""
    (tmp_path / "done").write_text("a file where done/ should be")
    config_path = tmp_path / "edge-ocr.toml"
    config_path.write_text(
        '[[sources]]\nname = "inbox"\ntype = "folder"\npath = "inbox"\ndone_dir = "done"\nfailed_dir = "failed"\n'
        '\n[mqtt]\nenabled = false\n\n[http]\nenabled = false\n\n[guard]\nrss_soft_mb = 100000\nrss_hard_mb = 200000\n')
    app = App(load_config(config_path), engine_factory=lambda cfg, pages: (FakeEngine(), ("fake", "0")),
              notifier=Notifier({"NOTIFY_SOCKET": str(notify_socket.path)}))
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(app.run()), name="test-app")
    runner.start()
    try:
        ready = notify_socket.next(lambda m: m.startswith("READY=1"), 20)
        assert ready is not None
        assert "STATUS=not ready: source inbox offline; jobs=0 queue=0 mqtt=off spool=0" in ready, ready
    finally:
        app.stop_event.set()
        runner.join(15)
    assert codes == [0]
