"""systemd/edge-ocr.service: systemd's own checks on the unit we install."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_ocr.errors import ExitCode

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "edge-ocr.service"


@pytest.fixture
def unit_here(tmp_path) -> Path:
    """The unit with ExecStart pointed at this venv's edge-ocr, which verify requires to exist."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze not found (apt-get install systemd)")
        pytest.skip("systemd-analyze not found")
    executable = Path(sys.executable).with_name("edge-ocr")
    assert executable.exists()
    text = UNIT.read_text().replace("/opt/edge-ocr/venv/bin/edge-ocr", str(executable))
    target = tmp_path / "edge-ocr.service"
    target.write_text(text)
    return target


def test_unit_verifies_without_a_single_warning(unit_here):
    # systemd-analyze exits 0 on unknown keys and typos: any output at all is a failure.
    run = subprocess.run(["systemd-analyze", "verify", str(unit_here)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "" and run.stderr == "", run.stdout + run.stderr


def test_unit_keeps_its_hardening_score(unit_here):
    run = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit_here)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", run.stdout)
    assert match, run.stdout + run.stderr
    assert float(match.group(1)) <= 2.0, run.stdout


def test_unit_is_a_notify_service_with_a_watchdog():
    keys = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    assert keys["Type"] == "notify" and keys["Restart"] == "on-failure"
    assert keys["RestartPreventExitStatus"] == str(int(ExitCode.USAGE))  # a config typo fails the unit, no loop
    assert int(keys["WatchdogSec"].rstrip("s")) > 0
    assert keys["User"] == "edge-ocr" and keys["SupplementaryGroups"] == "video"


def test_the_kernels_memory_caps_sit_above_the_guards_levels():
    from edge_ocr.config import GuardConfig

    keys = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    high, cap = int(keys["MemoryHigh"].rstrip("M")), int(keys["MemoryMax"].rstrip("M"))
    guard = GuardConfig()
    # The guard must act (soft, then hard and exit 3) before the kernel throttles or kills.
    assert guard.rss_soft_mb < guard.rss_hard_mb < high < cap


def test_the_unit_runs_the_daemon_on_glibcs_huge_pages():
    """The same tunable the bench's children get (allocator.with_hugepages), so benchmarks
    measure what the service runs."""
    from edge_ocr.allocator import HUGEPAGE_TUNABLE

    environment = [line.split("=", 1)[1].split() for line in UNIT.read_text().splitlines() if line.startswith("Environment=")]
    assert "GLIBC_TUNABLES=" + HUGEPAGE_TUNABLE in [item for items in environment for item in items]


def test_the_unit_keeps_onnx_runtimes_telemetry_off():
    environment = [line.split("=", 1)[1].split() for line in UNIT.read_text().splitlines() if line.startswith("Environment=")]
    assert "ORT_DISABLE_TELEMETRY=1" in [item for items in environment for item in items]


def test_the_readmes_drop_in_for_a_folder_elsewhere_verifies_and_allows_both_folders(unit_here):
    readme = (UNIT.parents[1] / "README.md").read_text()
    drop_in = re.search(r"```ini\n(\[Service\]\n.*?ReadWritePaths=.*?)```", readme, re.S)
    assert drop_in, "README's drop-in for a folder outside /var/lib/edge-ocr"
    unit_here.write_text(unit_here.read_text() + "\n" + drop_in.group(1))
    run = subprocess.run(["systemd-analyze", "verify", str(unit_here)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "" and run.stderr == "", run.stdout + run.stderr
    from edge_ocr import sandbox

    allowed = sandbox.parse_show(unit_here.read_text())
    assert allowed is not None
    assert [sandbox.problem(f, write=True, sandbox=allowed) for f in ("/srv/scans", "/home/pi/scans")] == [None, None]
