"""Helpers shared by test modules (fixtures live in conftest.py and tests/broker.py)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import urllib.request
import zlib
from pathlib import Path
from typing import ClassVar

import pytest

from edge_ocr import allocator
from tests.broker import PASSWORD, USER, Mosquitto, wait_until

REPO = Path(__file__).resolve().parents[1]
EVAL_DEV = Path(os.environ.get("EDGE_OCR_EVAL_DEV", REPO.parent / "shared" / "eval-dev"))


def models_build(monkeypatch):
    """models/build.py as a module (it sits beside its helpers, not in the package), imported
    afresh and not left in sys.modules for the next test; skipped without onnx."""
    monkeypatch.syspath_prepend(str(REPO / "models"))
    sys.modules.pop("build", None)
    build = pytest.importorskip("build", reason="models/build.py needs onnx (the dev extra)")
    sys.modules.pop("build", None)
    return build


def promtool_check(text: bytes) -> None:
    """Fail unless Prometheus's own linter accepts ``text`` without a word (Debian's
    ``prometheus`` package has promtool; install.sh --dev installs it as root)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (apt-get install prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    run = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert run.returncode == 0 and not run.stdout.strip() and not run.stderr.strip(), run.stdout + run.stderr


PREFIX = "e2e/dev"


def write_config(tmp_path: Path, broker: Mosquitto | None, extra_mqtt: str = "", extra_source: str = "") -> Path:
    (tmp_path / "secret").write_text(PASSWORD + "\n")
    mqtt = (
        '[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = %d\nusername = "%s"\npassword_file = "secret"\n'
        'topic_prefix = "%s"\nclient_id = "edge-ocr-e2e"\nspool_dir = "spool"\n'
        "reconnect_min_delay = 0.1\nreconnect_max_delay = 0.5\n%s"
        % (broker.port, USER, PREFIX, extra_mqtt)
        if broker
        else "[mqtt]\nenabled = false\n"
    )
    config = tmp_path / "edge-ocr.toml"
    config.write_text(
        '[engine]\nthreads = 2\n\n[http]\nbind = "127.0.0.1:0"\n\n[[sources]]\nname = "inbox"\ntype = "folder"\npath = "inbox"\n'
        'done_dir = "done"\nfailed_dir = "failed"\nstability_delay = 0.1\n%s\n%s' % (extra_source, mqtt)
    )
    return config


class Daemon:
    started: ClassVar[list[Daemon]] = []

    def __init__(self, config: Path, umask: int = -1, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.umask = umask  # -1: inherit; 0o027 is the unit's UMask=
        # None: inherit, plus the systemd unit's GLIBC_TUNABLES (huge pages), so the daemon under
        # test allocates as the service does
        self.env = env if env is not None else allocator.with_hugepages(os.environ)
        self.log = config.parent / ("daemon-%d.log" % len(list(config.parent.glob("daemon-*.log"))))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: bool = True) -> Daemon:
        """Start it; with ``ready``, return once it says so (it may be reading files already)."""
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "edge_ocr", "run", "-c", str(self.config)],
                                         stdout=fh, stderr=subprocess.STDOUT, umask=self.umask, env=self.env)
        self.started.append(self)
        if not ready:
            return self
        assert wait_until(lambda: "daemon ready" in self.text() or self.proc.poll() is not None, 60), self.text()
        assert self.proc.poll() is None, self.text()
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str) -> float:
        """The value of ``edge_ocr_<name>`` on the daemon's GET /metrics (0 when absent)."""
        url = re.search(r"http listening url=(\S+)", self.text()).group(1)
        with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
            found = re.search(r"^edge_ocr_%s (\S+)$" % name, response.read().decode(), re.M)
        return float(found.group(1)) if found else 0.0

    def terminate(self, timeout_s: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


def drop(src: Path, inbox: Path, name: str) -> None:
    """Write like a scanner or Syncthing: a temp name, then an atomic rename."""
    tmp = inbox / (name + ".part")
    shutil.copyfile(src, tmp)
    os.rename(tmp, inbox / name)


def line_samples(eval_dev: Path, source: str, count: int, folder: str = "lines") -> list[tuple[Path, str]]:
    """The first ``count`` labelled line crops of ``source`` (a fixed, deterministic subset),
    from ``lines/`` or ``zh/lines``."""
    directory = eval_dev / folder
    rows = (row.split("\t") for row in (directory / "labels.tsv").read_text(encoding="utf-8").splitlines())
    picked = [(directory / r[0], r[1]) for r in rows if len(r) >= 4 and r[3] == source]
    return picked[:count]


def png_bomb(width: int, height: int) -> bytes:
    """A real grey PNG of width x height pixels that compresses to almost nothing."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", body) + chunk(b"IEND", b"")
