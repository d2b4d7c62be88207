"""edge_ocr.atomic: the one crash-safe write, used for results, the spool and tune.json."""

from __future__ import annotations

import errno
import os
import time

import pytest

from edge_ocr.atomic import fsync_dir, remove_stale_temps, write_atomic


def test_a_write_replaces_the_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "result.json"
    target.write_bytes(b"old")
    write_atomic(target, b'{"text": "new"}')
    assert target.read_bytes() == b'{"text": "new"}'
    assert os.listdir(tmp_path) == ["result.json"]
    fsync_dir(tmp_path)


def test_a_write_the_disk_cannot_hold_keeps_the_old_file_whole_and_removes_its_temp(small_disk):
    """The disk fills mid-write (a 64 KB tmpfs, 200 KB of result): the old result stays as it was,
    never half the new one, and no temp file is left to fill the disk further."""
    target = small_disk / "result.json"
    write_atomic(target, b"old")
    with pytest.raises(OSError) as failed:
        write_atomic(target, b"n" * 200_000)
    assert failed.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert os.listdir(small_disk) == ["result.json"]


def test_stale_temps_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited: its temp file is garbage
    (tmp_path / (".a.json.%d.tmp" % dead_pid)).write_bytes(b'{"trunc')
    (tmp_path / (".b.json.%d.tmp" % os.getpid())).write_bytes(b"{}")  # ours: a write in progress
    (tmp_path / "c.json").write_bytes(b"{}")
    assert remove_stale_temps(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.json.%d.tmp" % os.getpid(), "c.json"]


def test_a_temp_file_older_than_the_live_process_of_its_pid_is_stale(tmp_path):
    """After a power cut the daemon often gets the PID it had before (a boot starts the same
    services in the same order): the temp file its last life left has our PID but predates us."""
    import psutil

    ours = tmp_path / (".photo.jpg.%d.tmp" % os.getpid())
    ours.write_bytes(b"half a copy")
    before_us = psutil.Process().create_time() - 3600
    os.utime(ours, (before_us, before_us))
    init = tmp_path / ".photo.jpg.1.tmp"  # PID 1 lives (another user's, maybe), started before any of these
    init.write_bytes(b"half a copy")
    os.utime(init, (0, 0))
    (tmp_path / (".fresh.json.%d.tmp" % os.getpid())).write_bytes(b"{}")  # written now: in progress
    # A Pi without a clock of its own starts at the time it last saved (fake-hwclock), before the
    # write the power cut interrupted: that temp file looks newer than the process.
    ahead = tmp_path / (".scan.jpg.%d.tmp" % os.getpid())
    ahead.write_bytes(b"half a copy")
    os.utime(ahead, (time.time() + 1800, time.time() + 1800))
    assert remove_stale_temps(tmp_path) == 3
    assert [p.name for p in tmp_path.iterdir()] == [".fresh.json.%d.tmp" % os.getpid()]


def test_a_stem_is_cut_to_fit_with_its_counter_and_temp_name():
    from edge_ocr.atomic import NAME_MAX, NAME_ROOM, fit_stem

    assert fit_stem("scan", ".json") == "scan"  # short names are untouched
    for stem in ("a" * 300, "读" * 100, "é" * 130 + "x"):
        cut = fit_stem(stem, ".error.json")
        assert len(cut.encode()) + NAME_ROOM + len(b".error.json") <= NAME_MAX
        assert cut.encode().decode("utf-8") == cut and stem.startswith(cut[:-9]) and cut[-9] == "~"
    # two long names that begin alike stay apart
    assert fit_stem("b" * 300 + "1", ".json") != fit_stem("b" * 300 + "2", ".json")

