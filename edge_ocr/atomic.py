"""Crash-safe file writes: a temp file beside the target, fsynced, renamed over it, and the
directory fsynced, so a reader or a crash sees the old file or the whole new one.

The one place this is done (results in done/ and failed/, the MQTT spool, tune.json).
Imports nothing from edge_ocr; raises OSError, which callers turn into their own errors.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TEMP_NAME = re.compile(r"^\..+\.(\d+)\.tmp$")  # .<name>.<pid>.tmp


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
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(directory: Path) -> int:
    """Delete the temp files that writes of dead processes left in ``directory`` (a kill -9
    between create and rename); returns how many. A live process's temp file is kept."""
    removed = 0
    for path in directory.glob(".*.tmp"):
        match = TEMP_NAME.match(path.name)
        if match is None:
            continue
        if _alive(int(match.group(1))):  # a write in progress, ours included (two sources, one done/)
            continue
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
