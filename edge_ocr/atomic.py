"""Crash-safe file writes: a temp file beside the target, fsynced, renamed over it, and the
directory fsynced, so a reader or a crash sees the old file or the whole new one.

The one place this is done (results in done/ and failed/, the MQTT spool, tune.json).
Imports nothing from edge_ocr (psutil for a writer's start time); raises OSError, which callers turn into their own errors.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import psutil

TEMP_NAME = re.compile(r"^\..+\.(\d+)\.tmp$")  # .<name>.<pid>.tmp
NAME_MAX = 255  # bytes in one directory entry (ext4, xfs, btrfs, vfat's long names: 255 characters)
# What a stored name may gain: a tag against a clash (sinks/files._slots: at most "-" + 12 hex
# digits of the sha256 + "-99") and write_atomic's temp name around it ("." + name + ".<pid up to
# 7 digits>.tmp").
NAME_ROOM = len("-0123456789ab-99") + len(".") + len(".9999999.tmp")
# An extension longer than this is no extension ("notes.from the meeting"): the whole name is the stem.
MAX_EXT_BYTES = 16
# A process's start time is known to a second or so (the kernel's boot time is whole seconds).
START_SLACK_S = 2.0


def split_name(name: str) -> tuple[str, str]:
    """(stem, ext) of a file name, where counters and suffixes go between the two."""
    stem, ext = os.path.splitext(name)
    return (name, "") if len(os.fsencode(ext)) > MAX_EXT_BYTES else (stem, ext)


def fit_stem(stem: str, tail: str) -> str:
    """``stem`` short enough that ``stem + counter + tail`` and its temp file fit in NAME_MAX
    bytes. A stem that is cut keeps its start and gets ``~`` and 8 hex digits of its sha256, so
    two long names that begin alike stay apart; the cut never splits a UTF-8 character."""
    raw = os.fsencode(stem)
    room = NAME_MAX - NAME_ROOM - len(os.fsencode(tail))
    if len(raw) <= room:
        return stem
    tag = "~" + hashlib.sha256(raw).hexdigest()[:8]
    end = max(room - len(tag), 1)
    for cut in range(end, max(end - 4, 0), -1):
        try:
            raw[:cut].decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data":
                continue  # a character cut in two: one byte shorter
            cut = end  # not UTF-8 anyway (kept as bytes): cut where the room ends
        break
    else:
        cut = end
    return os.fsdecode(raw[:cut]) + tag


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably. The temp file is named
    ``.<name>.<pid>.tmp`` (a leading dot and ``.tmp``: listings of results skip it) and is
    removed when the write fails."""
    tmp = path.with_name(".%s.%d.tmp" % (path.name, os.getpid()))
    try:
        with os.fdopen(_create(tmp), "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _create(tmp: Path) -> int:
    """A new file at ``tmp``, never one found there: a symlink planted at the predictable name (by
    a writer of a shared inbox) would have had the service write through it, as itself, into any
    file it may write. A leftover entry is removed (not followed) and the name made anew once."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(tmp, flags, 0o666)
    except FileExistsError:
        tmp.unlink()
        return os.open(tmp, flags, 0o666)


def remove_stale_temps(directory: Path) -> int:
    """Delete the temp files that writes of dead processes left in ``directory`` (a kill -9
    between create and rename); returns how many. A live process's temp file is kept."""
    removed = 0
    for path in directory.glob(".*.tmp"):
        match = TEMP_NAME.match(path.name)
        if match is None:
            continue
        try:
            written = path.lstat().st_mtime
        except FileNotFoundError:
            continue
        if _writing(int(match.group(1)), written):  # a write in progress, ours included (two sources, one done/)
            continue
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _writing(pid: int, written: float) -> bool:
    """Whether process ``pid`` may still be writing a temp file last written at ``written``: it
    is alive and was started before that. After a power cut the daemon often gets the very PID it
    had (a boot starts the same services in the same order), or another live process has it: a
    temp file older than the process was left by a dead one. So was one written in the future: a
    Pi has no clock of its own and starts at the last time it saved (fake-hwclock), before the
    time of the write the power cut interrupted."""
    if written > time.time() + START_SLACK_S:
        return False
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # another user's process, details hidden: take it as writing
        return True
    return written >= started - START_SLACK_S
