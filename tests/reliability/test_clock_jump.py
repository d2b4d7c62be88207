"""A wall-clock jump (an NTP step, a Pi without RTC that learns the time late): libfaketime
moves the daemon's CLOCK_REALTIME 2 days back, then 3 hours forward, mid-burst, while the
monotonic clock runs on. Timers do not stall or fire early (they use the monotonic clock),
every file is read once, and results carry the wall clock as it was."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import Daemon, drop, line_samples, wait_until, write_config

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def _done(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "done").glob("*.json"))


def _kept(tmp_path: Path) -> list[str]:
    # The result JSON is written before the original is moved beside it (so an interrupted
    # move can be finished): count the originals too before comparing names.
    return sorted(p.name for p in (tmp_path / "done").glob("*.png"))


def test_the_wall_clock_jumping_back_and_forth_mid_burst_loses_nothing(eval_dev, tmp_path, report):
    if not LIBFAKETIME.exists() or not shutil.which("faketime"):
        if os.environ.get("CI"):
            pytest.fail("libfaketime is not installed (install.sh --dev installs faketime)")
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = dict(os.environ, LD_PRELOAD=str(LIBFAKETIME), FAKETIME_TIMESTAMP_FILE=str(offset),
               FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
    samples = [p for p, _ in line_samples(eval_dev, "SROIE2019-task1", 60)]
    names = ["c%02d.png" % i for i in range(len(samples))]
    daemon = Daemon(write_config(tmp_path, None), env=env).start()
    for src, name in zip(samples[:20], names[:20]):
        drop(src, tmp_path / "inbox", name)
    assert wait_until(lambda: len(_done(tmp_path)) >= 10, 60)
    offset.write_text("-2d\n")  # back two days
    for src, name in zip(samples[20:40], names[20:40]):
        drop(src, tmp_path / "inbox", name)
    assert wait_until(lambda: len(_done(tmp_path)) >= 30, 60)
    offset.write_text("+3h\n")  # and forward
    for src, name in zip(samples[40:], names[40:]):
        drop(src, tmp_path / "inbox", name)
    assert wait_until(lambda: len(_done(tmp_path)) == len(_kept(tmp_path)) == len(names), 120), len(_done(tmp_path))
    stamps = [datetime.fromisoformat(json.loads(p.read_text())["ts"].replace("Z", "+00:00")) for p in _done(tmp_path)]
    span_h = (max(stamps) - min(stamps)).total_seconds() / 3600
    assert span_h > 24, "the fake clock did not reach the daemon"  # results carry the jumped wall clock
    assert _kept(tmp_path) == names
    assert daemon.terminate() == 0
    report("wall clock stepped 2 days back, then 3 h forward, mid-burst", runs=1, inputs=len(names), lost=0,
           duplicated=0, errors="0 (result ts span %.0f h)" % span_h)
