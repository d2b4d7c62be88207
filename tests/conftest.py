"""Shared fixtures: where the real eval-dev images are, and one engine per pack per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Test modules that import onnxruntime themselves (the model rewrites) load it before the engine
# would set this (edge_ocr/engine/models.py): no telemetry from the tests either.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# The broker fixture (a real mosquitto on a free loopback port) for every test module that asks for it.
pytest_plugins = ("tests.broker",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The booted-systemd and aarch64 proofs take minutes: they are slow too, so that
    ``pytest -m "not slow"`` is the quick loop (CI runs everything)."""
    for item in items:
        if item.get_closest_marker("system") or item.get_closest_marker("aarch64"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def reap_daemons():
    """Kill any daemon (tests.helpers.Daemon) a failed test left running."""
    from tests.helpers import Daemon

    Daemon.started = []
    yield
    for daemon in Daemon.started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()


@pytest.fixture
def small_disk(tmp_path, request):
    """A 64 KB tmpfs, a disk that fills at once (a mount: root only, as CI runs); another size with
    ``@pytest.mark.parametrize("small_disk", ["1m"], indirect=True)``."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounts a tmpfs: run as root")
    disk = tmp_path / "disk"
    disk.mkdir()
    size = getattr(request, "param", "64k")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", str(disk)], check=True, timeout=30)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], timeout=30)


@pytest.fixture(scope="session")
def eval_dev() -> Path:
    """The labelled eval-dev set beside the repo (../shared/eval-dev). CI must have it."""
    from tests.helpers import EVAL_DEV  # imported late: tests.broker must load as a plugin first

    if not (EVAL_DEV / "lines" / "labels.tsv").is_file():
        if os.environ.get("CI"):
            pytest.fail("eval-dev not found at %s (set EDGE_OCR_EVAL_DEV)" % EVAL_DEV)
        pytest.skip("eval-dev not found at %s (set EDGE_OCR_EVAL_DEV)" % EVAL_DEV)
    return EVAL_DEV


@pytest.fixture(scope="session")
def engines():
    """OcrEngine per (pack, precision), built once per test session: loading is the slow part."""
    from edge_ocr.engine.ocr import EngineOptions, OcrEngine

    cache: dict[tuple[str, str], OcrEngine] = {}

    def get(pack: str = "default", precision: str = "auto") -> OcrEngine:
        key = (pack, precision)
        if key not in cache:
            cache[key] = OcrEngine(EngineOptions(pack=pack, precision=precision, threads=2))
        return cache[key]

    return get
