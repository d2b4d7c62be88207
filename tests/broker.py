"""A real Mosquitto for tests: free loopback ports, a password file, a TLS listener with a CA
made here by the openssl CLI, persistence so queued QoS 1 messages survive a broker restart.
Never the system service. Plus ``Collector``, a subscriber that records what arrives.
"""

from __future__ import annotations

import getpass
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

USER, PASSWORD = "edge", "s3cret-pass"
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"  # Debian installs mosquitto there, often not on a user's PATH


def tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=SBIN)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path) -> dict[str, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edge-ocr test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
             "-out", "server.csr", cwd=directory)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=directory)
    return {name: directory / name for name in ("ca.crt", "server.crt", "server.key")}


class Mosquitto:
    """One mosquitto process; ``restart()`` keeps ports, users and persisted sessions.

    ``config``: a mosquitto.conf of its own instead of the test's listeners and auth (e.g. the
    README's), where ``{port}`` is this broker's port and ``{dir}`` its directory (certificates
    in ``{dir}/certs``, ``{dir}/passwd`` with ``users``, each with PASSWORD)."""

    def __init__(self, directory: Path, config: str | None = None, users: tuple[str, ...] = (USER,)) -> None:
        self.dir = directory
        self.port = free_port()
        self.tls_port = free_port()
        self.certs = make_ca(directory / "certs")
        passwd = directory / "passwd"
        for i, user in enumerate(users):
            subprocess.run([tool("mosquitto_passwd") or "mosquitto_passwd", "-b", *(["-c"] if i == 0 else []),
                            str(passwd), user, PASSWORD], check=True, capture_output=True, timeout=30)
        passwd.chmod(0o600)
        (directory / "data").mkdir()
        self.conf = directory / "mosquitto.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = False  # once started, restarts keep the ports
        base = [
            "user %s" % getpass.getuser(),  # as root, mosquitto would otherwise switch to 'mosquitto'
            "persistence_location %s/" % (directory / "data"),
            "log_dest file %s" % (directory / "mosquitto.log"),
        ]
        if config is not None:
            self.conf.write_text("\n".join(base) + "\n" + config.replace("{port}", str(self.port))
                                 .replace("{dir}", str(directory)))
            return
        self.conf.write_text(
            "\n".join([
                *base,
                "persistence true",
                "max_queued_messages 5000",
                "per_listener_settings false",
                "allow_anonymous false",
                "password_file %s" % passwd,
                "listener %d 127.0.0.1" % self.port,
                "listener %d 127.0.0.1" % self.tls_port,
                "cafile %s" % self.certs["ca.crt"],
                "certfile %s" % self.certs["server.crt"],
                "keyfile %s" % self.certs["server.key"],
                "",
            ])
        )

    def start(self, timeout_s: float = 10.0) -> None:
        """Start mosquitto and wait until it listens. ``free_port()`` only found ports free a moment
        ago: if another process took one first, the first start moves to new ports and retries
        (twice); a restart keeps its ports, which clients already know."""
        for _ in range(1 if self._started else 3):
            failed = self._launch(timeout_s)
            if failed is None:
                self._started = True
                return
            if self._started or "Address already in use" not in failed:
                break
            self._move()
        raise RuntimeError("mosquitto exited: %s" % failed[-2000:])

    def _launch(self, timeout_s: float) -> str | None:
        """None once this mosquitto logs that it runs (every listener bound), else its log lines."""
        log = self.dir / "mosquitto.log"
        seen = log.stat().st_size if log.exists() else 0
        self.proc = subprocess.Popen([tool("mosquitto") or "mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            exited = self.proc.poll() is not None
            lines = log.read_bytes()[seen:].decode(errors="replace") if log.exists() else ""
            if exited:
                self.proc = None
                return lines or "?"
            # mosquitto logs "running" after binding every listener; a connect could reach whoever took the port
            if re.search(r"mosquitto version \S+ running", lines):
                return None
            threading.Event().wait(0.05)  # mosquitto logs to a file: nothing to wait on
        self.stop()
        raise RuntimeError("mosquitto did not start listening on %d within %.0f s" % (self.port, timeout_s))

    def _move(self) -> None:
        """New ports in the config, keeping any lines a test added to it."""
        moved = {self.port: free_port(), self.tls_port: free_port()}
        self.conf.write_text(re.sub(r"^listener (\d+) ", lambda m: "listener %d " % moved.get(int(m[1]), int(m[1])),
                                    self.conf.read_text(), flags=re.M))
        self.port, self.tls_port = moved[self.port], moved[self.tls_port]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def wait_until(pred: Callable[[], bool], timeout_s: float = 20.0, step_s: float = 0.05) -> bool:
    """Poll ``pred`` until true or the deadline (for state with no event to wait on, e.g. files)."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while time.monotonic() < deadline:
        if pred():
            return True
        pause.wait(step_s)
    return pred()


def require_mosquitto() -> None:
    if not tool("mosquitto") or not tool("mosquitto_passwd") or not tool("openssl"):
        pytest.skip("mosquitto, mosquitto_passwd or openssl not installed (.ci/run installs them)")


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on, for the whole test: held bound but never listening, so
    a connect there is refused and no other process can take the port meanwhile (``free_port()``
    only found one free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def mosquitto(tmp_path_factory):
    """A started Mosquitto with a password and TLS listener, stopped after the test."""
    require_mosquitto()
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class Collector:
    """A subscriber that records every message; ``wait(pred)`` blocks until pred(messages) holds."""

    def __init__(self, broker: Mosquitto, topics: list[str], client_id: str = "", persistent: bool = False) -> None:
        self.messages: list[Received] = []
        self.cond = threading.Condition()
        self.connected = threading.Event()
        # imported here: this module is a pytest plugin of every test run, also the aarch64 one without paho
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "collector-%d" % free_port(),
                                  clean_session=not persistent)
        self.client.username_pw_set(USER, PASSWORD)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.topics = topics

        def on_connect(c, u, f, rc, p):
            if not rc.is_failure:
                c.subscribe([(t, 1) for t in topics])

        def on_subscribe(c, u, mid, rcs, p):
            self.connected.set()

        def on_message(c, u, msg):
            with self.cond:
                self.messages.append(Received(msg.topic, msg.payload, bool(msg.retain)))
                self.cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect_async("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.connected.wait(10), "collector could not subscribe"

    def on(self, topic: str) -> list[Received]:
        with self.cond:
            return [m for m in self.messages if m.topic == topic]

    def wait(self, pred: Callable[[list[Received]], bool], timeout_s: float = 30.0) -> list[Received]:
        with self.cond:
            if not self.cond.wait_for(lambda: pred(self.messages), timeout_s):
                raise AssertionError("timed out; got %d messages: %s" % (
                    len(self.messages), [m.topic for m in self.messages][-10:]))
            return list(self.messages)

    def wait_topic(self, topic: str, count: int = 1, timeout_s: float = 30.0) -> list[Received]:
        self.wait(lambda ms: sum(m.topic == topic for m in ms) >= count, timeout_s)
        return self.on(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
