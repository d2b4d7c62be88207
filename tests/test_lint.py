"""The code passes ruff (rules in pyproject.toml) and mypy on the package: run here so that the
one test command, and so CI, checks them. Both come with `install.sh --dev`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("%s is not installed (install.sh --dev installs it)" % name)
        pytest.skip("%s is not installed (install.sh --dev installs it)" % name)
    return found


def test_ruff_finds_nothing():
    run = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_mypy_finds_nothing_in_the_package():
    run = subprocess.run([_tool("mypy"), "--cache-dir", os.devnull, "edge_ocr"], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
