"""Crash-safe file moves and JSON writes for results: write a temp file, fsync, rename, fsync
the directory (edge_ocr.atomic). Used by the folder source (injected by app) for done/ and failed/.
Imports atomic and errors only.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_ocr.atomic import fit_stem, fsync_dir, split_name, write_atomic
from edge_ocr.errors import SinkError

log = logging.getLogger(__name__)


def write_result(path: Path, data: bytes) -> None:
    """``atomic.write_atomic``, raising SinkError."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise SinkError("cannot write %s: %s" % (path, exc.strerror)) from exc


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None if missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def move(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` (never overwriting), copying across filesystems (fsynced)."""
    if dst.exists() or dst.is_symlink():
        raise SinkError("cannot move %s: %s exists" % (src, dst))
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise SinkError("cannot move %s to %s: %s" % (src, dst, exc.strerror)) from exc
        tmp = dst.with_name(".%s.%d.tmp" % (dst.name, os.getpid()))
        try:
            if src.is_symlink():  # moved as the link it is: its target is never opened
                os.symlink(os.readlink(src), tmp)
            else:
                shutil.copyfile(src, tmp)
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, dst)
            fsync_dir(dst.parent)
            src.unlink()
        except OSError as exc2:
            tmp.unlink(missing_ok=True)
            raise SinkError("cannot copy %s to %s: %s" % (src, dst, exc2.strerror)) from exc2
    else:
        fsync_dir(dst.parent)


def stored_parts(name: str, suffix: str) -> tuple[str, str]:
    """(stem, ext) under which file ``name`` and its ``stem + suffix`` JSON are stored: the
    original is ``stem + ext``. A name whose extension is the suffix (an image dropped as
    ``scan.json``) keeps it in the stem, so its JSON (``scan.json.json``) is not the original;
    a long name is cut to fit a directory entry with its counter and temp file
    (``atomic.fit_stem``); the JSON's ``file`` keeps the name as dropped."""
    stem, ext = split_name(name)
    if ext.lower() == suffix.lower():
        stem, ext = name, ""
    longest = max(ext, suffix, key=lambda part: len(os.fsencode(part)))
    return fit_stem(stem, longest), ext


def _encoded(data: dict[str, Any]) -> bytes:
    """A result's JSON as stored: readable (indented, UTF-8 as is), one newline at the end."""
    return (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def _made(directory: Path) -> None:
    """``directory`` made again if it was removed while the daemon runs (someone cleaning up done/)."""
    if directory.is_dir():
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError("cannot create %s: %s" % (directory, exc.strerror)) from exc
    log.warning("made again dir=%s (it was removed)", directory)


def _same_file(stored: dict[str, Any] | None, sha256: str, ext: str, suffix: str) -> bool:
    """Whether a stored JSON is this file's own: the same bytes dropped under the same extension.
    The same bytes as ``a.png`` and ``a.jpg`` are two files, each with its JSON."""
    if stored is None or stored.get("sha256") != sha256:
        return False
    dropped = stored.get("file")
    return not isinstance(dropped, str) or stored_parts(dropped, suffix)[1].lower() == ext.lower()


NUMBERED_SLOTS = 10  # NAME, NAME-1 ... NAME-9, then names from the content (``_slots``)
CONTENT_SLOTS = 100


def _slots(stem: str, sha256: str | None) -> Iterator[str]:
    """The base names a file of ``stem`` may take, in order: ``stem``, ``stem-1`` ... ``stem-9``, then
    ``stem-<12 hex digits of its sha256>`` (and ``-1`` ... for the same bytes under another
    extension). Numbered to the end, the 10,000th ``snapshot.jpg`` (a camera automation writing the
    same name once a minute: a week) read every earlier JSON to find its name, 0.6 s, and the
    10,001st found none: the folder stopped. A file not read (refused unread) has no sha256: a
    random name instead. ``stem`` is already cut to leave room for these (``atomic.fit_stem``)."""
    yield stem
    for n in range(1, NUMBERED_SLOTS):
        yield "%s-%d" % (stem, n)
    tag = sha256[:12] if sha256 else uuid.uuid4().hex[:12]
    yield "%s-%s" % (stem, tag)
    for n in range(1, CONTENT_SLOTS):
        yield "%s-%s-%d" % (stem, tag, n)


class ResultFiles:
    """Places an original and its JSON in a directory under a free base name.

    ``NAME.ext`` gets ``NAME.json`` (``suffix``); if either exists for different content (the
    JSON's ``sha256`` differs) or another extension, ``NAME-1.ext``/``NAME-1.json`` up to ``-9``, then
    12 hex digits of the sha256 (``_slots``). An
    existing JSON for the same file is overwritten, so finishing an interrupted move is idempotent.
    Names are made to fit (``stored_parts``); a directory removed while the daemon runs is made
    again. Every failure is a SinkError. Thread-safe: a store finds its free name and takes it
    under one lock, so two files finishing at once never pick the same name (pipeline.workers > 1,
    or the folder source refusing one file while the pipeline stores another).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def find(self, directory: Path, name: str, suffix: str, sha256: str | None) -> tuple[Path, Path]:
        """The (original, json) targets in ``directory`` for file ``name``."""
        try:
            return self._find(directory, name, suffix, sha256)
        except OSError as exc:
            raise SinkError("cannot look for a free name in %s: %s" % (directory, exc.strerror)) from exc

    def _find(self, directory: Path, name: str, suffix: str, sha256: str | None) -> tuple[Path, Path]:
        stem, ext = stored_parts(name, suffix)
        for base in _slots(stem, sha256):
            original, meta = directory / (base + ext), directory / (base + suffix)
            if not meta.exists() and not original.exists() and not original.is_symlink():
                return original, meta
            stored = read_json(meta) if meta.exists() else None
            if sha256 and _same_file(stored, sha256, ext, suffix):
                return original, meta
        raise SinkError("no free name for %s in %s" % (name, directory))

    def existing(self, directory: Path, name: str, suffix: str, sha256: str) -> Path | None:
        """The JSON already written for this content (an interrupted move), if any."""
        stem, ext = stored_parts(name, suffix)
        try:
            for base in _slots(stem, sha256):  # the slots find() walks, to the first free one
                meta, original = directory / (base + suffix), directory / (base + ext)
                if not meta.exists():
                    if original.exists() or original.is_symlink():
                        continue
                    return None
                if _same_file(read_json(meta), sha256, ext, suffix):
                    return meta
        except OSError as exc:
            raise SinkError("cannot look for a result in %s: %s" % (directory, exc.strerror)) from exc
        return None

    def put(self, directory: Path, name: str, data: dict[str, Any]) -> Path:
        """Write ``data`` as the JSON file ``name`` in ``directory``, replacing one of that name: a
        store keyed by content (the reuse store's ``<sha256>.json``), where no free name is sought."""
        with self._lock:
            _made(directory)
            path = directory / name
            write_result(path, _encoded(data))
        return path

    def store(self, src: Path | None, directory: Path, name: str, suffix: str, data: dict[str, Any],
              sha256: str | None) -> Path:
        """Write ``data`` as JSON then move ``src`` (None = delete nothing, keep no original) beside it."""
        with self._lock:
            _made(directory)
            if src is not None and not (src.exists() or src.is_symlink()):
                # Another attempt at the same file stored it already: touch nothing of what it wrote.
                raise SinkError("cannot store %s: it is gone" % src)
            original, meta = self.find(directory, name, suffix, sha256)
            earlier = meta.exists()  # an interrupted earlier attempt's, which a resume finishes
            write_result(meta, _encoded(data))
            if src is None:
                return meta
            if original.exists() and not original.is_symlink():
                original.unlink()  # same content, an interrupted earlier attempt: keep one copy
            try:
                move(src, original)
            except SinkError:
                if not earlier and not os.path.lexists(original):  # no orphan JSON: the retry writes both
                    meta.unlink(missing_ok=True)
                raise
        return meta
