"""Helpers shared by test modules (fixtures live in conftest.py and tests/broker.py)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


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
