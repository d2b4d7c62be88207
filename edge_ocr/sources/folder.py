"""Drop-folder source: watch (inotify via ctypes, or polling), stability check, claim by atomic
rename into ``.processing/``, resume after restart, done/ and failed/ (SPEC "Sources: Folder").

Lifecycle of ``inbox/NAME.ext``: seen (inotify IN_CLOSE_WRITE/IN_MOVED_TO, IN_CREATE of a
link, a poll, the periodic rescan or start-up) → size and mtime unchanged for ``stability_delay`` and the
format's trailer present → renamed to ``.processing/NAME.ext`` → one Job → on success
``done/NAME.json`` (+ the original unless ``delete_original``), on failure
``failed/NAME.ext`` + ``failed/NAME.error.json``. A crash leaves the file in ``.processing/``
and it is resumed on start; a result already written for the same bytes is not redone.
Imports results, config, errors, stats, engine types.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import logging
import math
import os
import queue
import re
import select
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from edge_ocr import access, imageformat, sandbox
from edge_ocr.atomic import fit_stem, remove_stale_temps, split_name, write_atomic
from edge_ocr.config import FolderSourceConfig, SourceConfig
from edge_ocr.engine.types import EngineOutput
from edge_ocr.errors import EdgeOcrError, ImageTooLarge, SinkError, SourceError
from edge_ocr.results import Job, Result, Status, log_name, output_from_dict, printable_name
from edge_ocr.sources.base import SourceStatus, Submit
from edge_ocr.stats import Stats

log = logging.getLogger(__name__)

PROCESSING = ".processing"
CACHE = ".cache"
RESUMED = ".resumed.json"  # in .processing/: files resumed at the last start whose reading has not ended
# A file whose readings after restarts were cut short this often goes to failed/, not round again.
# Two, not one: a kill while a file only waited in the queue, then one while it was read, is no
# reason to give a sound file up; a file that ends the daemon each time it is read is.
RESUMES_MAX = 2
STALL_RETRY_MIN_S = 2.0  # a file whose result could not be written (disk full) is offered again
STALL_RETRY_MAX_S = 60.0
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")
CLAIM_COUNTER = re.compile(r"^(.+)-\d+(\.[^.]*)?$")  # a name _claim gave: NAME-N.ext
IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_DELETE_SELF, IN_MOVE_SELF = 0x8, 0x80, 0x100, 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED, IN_ONLYDIR, IN_ISDIR = 0x4000, 0x8000, 0x01000000, 0x40000000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
EVENT = struct.Struct("iIII")


# A store's errors that no file would escape: the directory's file system is full or read-only.
DIRECTORY_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def not_a_folder(path: Path) -> str | None:
    """Why the daemon must not use ``path``, one of its folders inside the inbox, or None. Writers
    of the inbox could put a symlink there (to done/, to the spool): moves and prunes would follow
    it into files not theirs to touch. A folder that does not exist is fine (made when needed).
    Its owner is not checked: one made by a root run, or shown under one uid by a vfat, CIFS or
    NFS mount, is the daemon's all the same."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return "cannot inspect %s: %s" % (path, exc.strerror)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return "%s is %s, not a folder of edge-ocr's own: remove it (a writer of the inbox may have put it there)" % (
            path, "a symlink" if stat.S_ISLNK(info.st_mode) else "not a folder")
    return None


def _blocks_every_file(error: SinkError) -> bool:
    """Whether ``error`` would stop any file's result as well (by its OSError's errno), not only
    this one's: a file the service cannot read, a name the file system refuses, no."""
    cause = error.__cause__
    return isinstance(cause, OSError) and cause.errno in DIRECTORY_ERRNOS


def newest_mtime_ns(directory: Path) -> int:
    """The latest mtime of the files in ``directory`` (0 when there are none or it cannot be read)."""
    newest = 0
    try:
        with os.scandir(directory) as found:
            for entry in found:
                try:
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime_ns)
                except OSError:
                    continue
    except OSError:
        return 0
    return newest


def prune_least_recent(directory: Path, keep: int) -> int:
    """Delete the least recently modified files of ``directory`` beyond ``keep``; returns how
    many went. Files that vanish meanwhile are skipped."""
    entries = []
    with os.scandir(directory) as found:
        for entry in found:
            try:
                if entry.is_file(follow_symlinks=False):
                    entries.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.path))
            except FileNotFoundError:
                continue
    if len(entries) <= keep:
        return 0
    entries.sort()
    removed = 0
    for _, path in entries[: len(entries) - keep]:
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            continue
    return removed


def ignored(name: str) -> bool:
    """Hidden and temporary names (``.*``, ``~*``, ``*.tmp``, ``*.part``, ...) are never taken."""
    return name.startswith((".", "~")) or name.lower().endswith(TEMP_SUFFIXES)


def jpeg_ends(data: bytes) -> bool:
    """Whether a JPEG's own end marker (FF D9) is in ``data``, wherever it lies. The segments
    before the first scan are skipped by their lengths (an EXIF thumbnail's end marker there does
    not count); after it, FF D9 can only be that marker, as the scan data stuffs every FF. So data
    appended after the image (a phone's motion-photo video, a maker's trailer) does not hide it."""
    pos, size = 2, len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return False  # not a marker where one must be: damaged, or cut inside a segment
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", pos + 2) != -1
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


def _jpeg_ends_inside(path: Path) -> bool:
    """``jpeg_ends`` on the whole file: only for a JPEG whose last bytes are not its end marker, and
    under max_file_mb (larger files are taken as they are). Read, not mapped: a writer truncating
    the file meanwhile would make a mapped read a SIGBUS, which ends the process."""
    try:
        with open(path, "rb") as fh:
            return jpeg_ends(fh.read())
    except OSError:
        return False


def read_regular(path: Path, max_mb: float) -> bytes:
    """The bytes of the regular file ``path``, never through a symlink (OSError ELOOP: a link put in
    .processing/, or swapped in after the claim's check). Raises ImageTooLarge over ``max_mb``."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > max_mb * 1024 * 1024:
            raise ImageTooLarge("file is %.1f MB, over max_file_mb=%s" % (st.st_size / 1048576, max_mb))
        return fh.read()


def looks_complete(path: Path, size: int) -> bool:
    """Cheap check that a file's format trailer is there (JPEG EOI, PNG IEND, BMP/WebP sizes).

    Unknown formats count as complete; the engine's decoder is the final judge.
    """
    if size == 0:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            fh.seek(max(0, size - 32))
            tail = fh.read(32)
    except OSError:
        return False
    kind = imageformat.sniff(head)
    if kind == "jpeg":
        return b"\xff\xd9" in tail or _jpeg_ends_inside(path)
    if kind == "png":
        return b"IEND" in tail[-12:]
    if kind == "bmp" and len(head) >= 6:
        return int.from_bytes(head[2:6], "little") <= size
    if kind == "webp":
        return int.from_bytes(head[4:8], "little") + 8 <= size
    if kind == "tiff":
        return _tiff_within(path, size)
    return True


TIFF_MAX_DIRECTORIES = 64  # pages walked before a file is taken as it is (the decoder then judges)
TIFF_DATA_TAGS = ((273, 279), (324, 325))  # (StripOffsets, StripByteCounts), (TileOffsets, TileByteCounts)
TIFF_INT_TYPES = {3: "H", 4: "I"}  # SHORT, LONG
# Bytes per value of each TIFF field type (BYTE, ASCII, SHORT, LONG, RATIONAL, SBYTE, UNDEFINED, SSHORT,
# SLONG, SRATIONAL, FLOAT, DOUBLE, IFD)
TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


def _tiff_within(path: Path, size: int) -> bool:
    """Whether every directory of a TIFF, and every strip or tile it names, lies within ``size``
    bytes: a scan written over SMB with a pause has its header first and its strips later, and no
    trailer to look for. Read piece by piece (a scan may be tens of MB). Anything malformed counts
    as complete: the decoder is the judge."""
    try:
        with open(path, "rb") as fh:
            def at(offset: int, length: int) -> bytes:
                if offset + length > size:
                    raise EOFError
                fh.seek(offset)
                return fh.read(length)

            endian = "<" if at(0, 2) == b"II" else ">"
            (offset,) = struct.unpack(endian + "I", at(4, 4))
            for _ in range(TIFF_MAX_DIRECTORIES):
                if offset == 0:
                    return True
                (count,) = struct.unpack(endian + "H", at(offset, 2))
                table = at(offset + 2, 12 * count + 4)
                entries = {}
                for i in range(count):
                    tag, kind, n, value = struct.unpack_from(endian + "HHI4s", table, 12 * i)
                    entries[tag] = (kind, n, value)
                    width = TIFF_TYPE_SIZES.get(kind, 0) * n
                    if width > 4:  # a value stored elsewhere (ImageMagick writes them after the directory)
                        (where,) = struct.unpack(endian + "I", value)
                        if where + width > size:  # bounds only: nothing read (a crafted file has thousands)
                            return False
                for starts_tag, lengths_tag in TIFF_DATA_TAGS:
                    if starts_tag in entries and lengths_tag in entries:
                        starts = _tiff_ints(at, endian, *entries[starts_tag])
                        lengths = _tiff_ints(at, endian, *entries[lengths_tag])
                        if any(start + length > size for start, length in zip(starts, lengths)):
                            return False
                (offset,) = struct.unpack_from(endian + "I", table, 12 * count)
            return True
    except EOFError:  # a directory or an array past the end: not written yet
        return False
    except OSError:
        return False
    except struct.error:
        return True


def _tiff_ints(at: Callable[[int, int], bytes], endian: str, kind: int, count: int, value: bytes) -> list[int]:
    """A SHORT or LONG array of a TIFF entry, inline when it fits in 4 bytes (EOFError past the end)."""
    code = TIFF_INT_TYPES.get(kind)
    if code is None or count > 1 << 20:
        return []
    width = struct.calcsize(code)
    if count * width <= 4:
        return list(struct.unpack_from(endian + code * count, value))
    (where,) = struct.unpack(endian + "I", value)
    return list(struct.unpack(endian + code * count, at(where, count * width)))


class Inotify:
    """inotify(7) on one directory through libc (no dependency): names closed-after-write or moved
    in, and links made in it (``ln``, ``ln -s``: created whole, so no close-after-write follows)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fd = _watch(directory)
        self.broken = False  # the watched directory was removed or moved: caller must rescan/reopen

    def reopen(self) -> None:
        """Watch the directory afresh (after it was removed and made again), in this same object, so
        whoever closes it closes the watch in use. Raises OSError (and is left closed) when it
        cannot be watched."""
        self.close()
        self.fd = _watch(self.directory)
        self.broken = False

    def read(self, timeout_s: float) -> tuple[list[str], bool]:
        """Names reported within ``timeout_s``, and whether a full rescan is needed (overflow)."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout_s))
        if not ready:
            return [], False
        try:
            buf = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return [], False
        names, rescan, offset = [], False, 0
        while offset + EVENT.size <= len(buf):
            _, mask, _, length = EVENT.unpack_from(buf, offset)
            raw = buf[offset + EVENT.size: offset + EVENT.size + length].split(b"\0", 1)[0]
            offset += EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                rescan = True
            if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                self.broken = rescan = True
            if raw and mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
                names.append(os.fsdecode(raw))
            elif raw and mask & IN_CREATE and not mask & IN_ISDIR and self._is_link(raw):
                names.append(os.fsdecode(raw))
        return names, rescan

    def _is_link(self, raw: bytes) -> bool:
        """A created name that is a symlink or a second name of an existing file: complete at
        once. A new file (one link) is still being written: its close-after-write will follow."""
        try:
            st = os.lstat(os.path.join(os.fsencode(self.directory), raw))
        except OSError:
            return False
        return stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1)

    def close(self) -> None:
        """Idempotent: a second close must not close an fd number that is by then someone else's."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def _watch(directory: Path) -> int:
    """A non-blocking inotify fd watching ``directory``. Raises OSError."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, "inotify_init1: %s" % os.strerror(err))
    mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
    if libc.inotify_add_watch(fd, os.fsencode(directory), mask) < 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, "inotify_add_watch %s: %s" % (directory, os.strerror(err)))
    return fd


class FileStore(Protocol):
    """Crash-safe placement of results (``sinks.files.ResultFiles``, injected by app)."""

    def store(self, src: Path | None, directory: Path, name: str, suffix: str, data: dict[str, Any],
              sha256: str | None) -> Path: ...

    def existing(self, directory: Path, name: str, suffix: str, sha256: str) -> Path | None: ...

    def put(self, directory: Path, name: str, data: dict[str, Any]) -> Path: ...


@dataclass(slots=True)
class _Seen:
    size: int
    mtime_ns: int
    stable_since: float
    first_seen: float


class FolderSource:
    """One drop folder. ``run(stop)`` is the body of thread ``source:<name>``."""

    def __init__(
        self,
        cfg: FolderSourceConfig,
        submit: Submit,
        files: FileStore,
        stats: Stats,
        on_status: Callable[[str, SourceStatus], None] | None = None,
        reading: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.reading = reading  # the engine's reading_id: stored results of another are read again; None: any
        self.submit = submit
        self.files = files
        self.stats = stats
        self.on_status = on_status
        self.processing = cfg.path / PROCESSING
        self.cache = cfg.path / CACHE
        self._cache_problem: str | None = None  # why .cache/ is not used, as last logged (under _stamp_lock)
        self._processing_refused = False  # a claim found .processing/ replaced (source thread only)
        self._told_left_alone: set[str] = set()  # subfolders, pipes, sockets already named in the journal
        self._status: SourceStatus | None = None
        self._rescan = threading.Event()
        # Claimed files whose result could not be written (disk full), with the name they were
        # dropped as: offered again with backoff.
        # (claimed, name, how to write its result again: None = read it again)
        self._stalled: queue.SimpleQueue[tuple[Path, str, Callable[[], object] | None]] = queue.SimpleQueue()
        self._stall_delay = STALL_RETRY_MIN_S
        # The claimed files whose result is not written yet after a stall, and the last reason:
        # while there are any the source is offline, so /readyz and <p>/<source>/status show it,
        # not only the journal. Under _status_lock (the source thread and the pipeline thread).
        self._stalled_files: set[Path] = set()
        self._blocking_stalls: set[Path] = set()  # those whose directory takes nothing (disk full): intake waits
        self._stall_reason = ""
        self._paused = False  # new files left in the folder while results are stalled (source thread)
        # The reuse store's use order (_stamp) and its problem last logged (_cache_problem): the
        # source and pipeline threads (and a reload's) use the store.
        self._stamp_lock = threading.Lock()
        self._last_stamp_ns: int | None = None
        self._status_lock = threading.RLock()
        self.ready = threading.Event()  # set once the folders are open and the start-up scan is queued
        self.mode = "none"
        # Claimed files -> (how many times a reading of theirs began after a restart and did not
        # end, size, mtime_ns) (RESUMED, under _status_lock): a file whose reading ends the daemon
        # (the guard's hard limit, the kernel's MemoryMax) would otherwise be read again at every
        # start, for ever.
        self._resumed: dict[str, tuple[int, int, int]] = {}

    @property
    def status(self) -> SourceStatus:
        return self._status or SourceStatus.OFFLINE

    def update(self, cfg: SourceConfig) -> None:
        """Apply live keys of a reloaded config (timings, delete_original, reuse_results)."""
        if not isinstance(cfg, FolderSourceConfig):
            raise TypeError("%s: a %s cannot update a %s" % (self.name, type(cfg).__name__, type(self).__name__))
        if cfg.reuse_results and not self.cfg.reuse_results:
            # Turned on by a reload: its store is made here, as _prepare makes it at start.
            try:
                self.cache.mkdir(exist_ok=True)
            except OSError as exc:
                log.warning("cannot create reuse store source=%s dir=%s error=%s", self.name, self.cache, exc.strerror)
            self._reuse_store_usable()  # says so now if it is not (each use checks again)
        self.cfg = cfg

    def capture_now(self) -> str:
        self._rescan.set()
        return "rescan requested"

    # -- thread body -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                self._prepare()
                break
            except SourceError as exc:
                self._set_status(SourceStatus.OFFLINE, exc.message)
                self.ready.set()  # the first attempt is over: do not hold READY=1 for a missing folder
                stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
        if stop.is_set():
            return
        backoff, resumed = STALL_RETRY_MIN_S, False
        while not stop.is_set():
            inotify = self._open_inotify()
            self.mode = "inotify" if inotify else "poll"
            self._set_status(SourceStatus.ONLINE, "mode=%s" % self.mode)
            try:
                if not resumed:  # once: after a failed loop, .processing/ holds files still being read
                    resumed = True
                    self._resume(stop)
                self._loop(stop, inotify)
            except Exception as exc:  # a defect must not stop the folder for good: say so, start again
                log.exception("folder source failed, starting again in %.0f s source=%s", backoff, self.name)
                self._set_status(SourceStatus.OFFLINE, "internal error: %s" % exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, STALL_RETRY_MAX_S)
            finally:
                if inotify is not None:
                    inotify.close()

    def _set_status(self, status: SourceStatus, why: str = "") -> None:
        """Online only while no result is stalled (``_stalled_files``)."""
        with self._status_lock:
            if status is SourceStatus.ONLINE and self._stalled_files:
                status, why = SourceStatus.OFFLINE, "cannot write results: %s" % self._stall_reason
            if status is self._status:
                return
            self._status = status
            if status is SourceStatus.ONLINE:
                log.info("source online source=%s path=%s %s", self.name, self.cfg.path, why)
            else:
                log.warning("source offline source=%s path=%s reason=%s", self.name, self.cfg.path, why)
            if self.on_status is not None:
                self.on_status(self.name, status)

    def _stored(self, claimed: Path | None) -> None:
        """The result of ``claimed`` was written (or it is gone): once no file is stalled, the
        source is online again."""
        with self._status_lock:
            if claimed not in self._stalled_files:
                return
            self._stalled_files.discard(claimed)
            self._blocking_stalls.discard(claimed)
            if not self._stalled_files:
                self._set_status(SourceStatus.ONLINE, "results written again")

    def _prepare(self) -> None:
        for directory in (self.cfg.path, self.processing, self.cfg.done_dir, self.cfg.failed_dir):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SourceError("cannot create %s: %s%s" % (directory, exc.strerror,
                                                             sandbox.hint(directory, exc.errno or 0))) from exc
            problem = access.dir_problem(directory)  # tried: os.access says yes on a read-only mount as root
            if problem:
                raise SourceError(problem)
        if self.cfg.reuse_results:
            self.cache.mkdir(exist_ok=True)
        for directory in (self.processing, self.cache):
            problem = not_a_folder(directory)
            if problem:
                raise SourceError(problem)
        for directory in (self.cfg.done_dir, self.cfg.failed_dir, self.cache, self.processing):
            if directory.is_dir() and remove_stale_temps(directory):  # writes a crash interrupted
                log.info("removed interrupted writes source=%s dir=%s", self.name, directory)

    def _open_inotify(self) -> Inotify | None:
        if self.cfg.watch == "poll":
            return None
        try:
            return Inotify(self.cfg.path)
        except (OSError, AttributeError) as exc:
            self._polling(exc)
            return None

    def _polling(self, why: Exception) -> None:
        log.warning("inotify unavailable, polling source=%s interval_s=%s error=%s",
                    self.name, self.cfg.poll_interval, why)

    def _resume(self, stop: threading.Event) -> None:
        """Files left in .processing/ by a stop or crash: finish an interrupted move, or run them again."""
        try:
            entries = sorted(self.processing.iterdir(), key=_mtime_name)
        except OSError as exc:
            log.error("cannot list source=%s dir=%s error=%s", self.name, self.processing, exc.strerror)
            return
        files = [e for e in entries if not e.name.startswith(".") and e.is_file()]
        if files:
            log.info("resuming source=%s files=%d", self.name, len(files))
        recorded = self._read_resumed()
        # A count is the file's only while it is the same file (size and mtime): a name used again
        # by another file after a ledger write failed must not inherit it.
        before = {f.name: recorded[f.name][0] for f in files
                  if f.name in recorded and recorded[f.name][1:] == _identity(f)}
        cut_short = [f for f in files if before.get(f.name, 0) >= RESUMES_MAX]
        given_up = {f.name for f in cut_short}
        with self._status_lock:  # the counts of files still here, kept until their reading ends
            self._resumed = {name: recorded[name] for name in before if name not in given_up}
            if self._resumed != recorded:
                self._write_resumed()
        for claimed in cut_short:
            count = before[claimed.name]
            self._guarded(claimed, partial(self._fail_unread, claimed, claimed.name, SourceError(
                "read again after %d restarts, its reading was cut short each time, the daemon ending while it read "
                "it (the memory guard's hard limit, out of memory, a crash, or a stop that outlasted its budget); "
                "not read again" % count)))
        for claimed in files:
            if stop.is_set():
                return
            if claimed not in cut_short:
                self._guarded(claimed, partial(self._submit_claimed, claimed, resumed=True))

    def _read_resumed(self) -> dict[str, tuple[int, int, int]]:
        """RESUMED: claimed name -> (readings cut short, size, mtime_ns)."""
        try:
            data = json.loads((self.processing / RESUMED).read_text(encoding="utf-8"))
            return {str(name): (int(entry[0]), int(entry[1]), int(entry[2])) for name, entry in data.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
            log.warning("resume ledger unreadable, starting it afresh source=%s error=%s", self.name, exc)
            return {}

    def _write_resumed(self) -> None:
        """Under _status_lock."""
        path = self.processing / RESUMED
        try:
            if self._resumed:
                write_atomic(path, json.dumps(self._resumed, ensure_ascii=False).encode())
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:  # a full disk: the count is lost, the file is still read
            log.warning("cannot write the resume ledger source=%s error=%s", self.name, exc.strerror)

    def _read_starts(self, claimed: Path) -> None:
        """A resumed file's reading begins (pipeline thread): counted until it ends, so a start
        that ends inside it finds it cut short."""
        identity = _identity(claimed)
        if identity is None:
            return
        with self._status_lock:
            count = self._resumed.get(claimed.name, (0, 0, 0))[0]
            self._resumed[claimed.name] = (count + 1, *identity)
            self._write_resumed()

    def _read_ended(self, claimed: Path) -> None:
        """The reading of ``claimed`` ended, or it left .processing/: no longer counted as cut short."""
        if claimed.parent != self.processing:
            return
        with self._status_lock:
            if self._resumed.pop(claimed.name, None) is not None:
                self._write_resumed()

    def _loop(self, stop: threading.Event, inotify: Inotify | None) -> None:
        seen: dict[str, _Seen] = {}
        last_scan = -math.inf
        next_retry = 0.0
        lost = False  # the watch broke and could not be made again yet: polling, tried again at each scan
        while not stop.is_set():
            cfg = self.cfg
            now = time.monotonic()
            watching = inotify is not None and not lost
            # From the current config each time round: a reloaded poll_interval or rescan_interval
            # counts from the last scan, not from a tick the old value set (an hour away, say).
            next_scan = last_scan + (cfg.rescan_interval if watching else cfg.poll_interval)
            if self._stalled.empty():
                self._stall_delay = STALL_RETRY_MIN_S
                next_retry = now + self._stall_delay
            elif now >= next_retry:
                self._retry_stalled()
                self._stall_delay = min(self._stall_delay * 2, STALL_RETRY_MAX_S)
                next_retry = now + self._stall_delay
            if self._rescan.is_set() or now >= next_scan or (watching and inotify is not None and inotify.broken):
                self._rescan.clear()
                if inotify is not None and inotify.broken:
                    try:  # in place: the caller closes this same object, so the watch in use
                        inotify.reopen()
                        if lost:  # the folder is back (it was removed and made again)
                            log.info("inotify watching again source=%s", self.name)
                            lost, self.mode = False, "inotify"
                    except OSError as exc:
                        if not lost:
                            self._polling(exc)
                            lost, self.mode = True, "poll"
                for name in self._list():
                    self._note(seen, name, now)
                last_scan = now
                next_scan = now + (cfg.rescan_interval if inotify is not None and not lost else cfg.poll_interval)
                self.ready.set()
            # While results cannot be written (disk full, done/ read-only) new files wait in the
            # folder: claimed, each would be read and its result held in memory for nothing.
            paused = self._intake_paused(len(seen))
            ready = [] if paused else self._ready(seen, now)
            for index, name in enumerate(ready):
                if stop.is_set():
                    return
                if self._intake_paused(len(seen) + len(ready) - index):  # within a batch too (a backlog)
                    for waiting in ready[index:]:
                        self._note(seen, waiting, now)  # taken, oldest first, once results can be written
                    paused = True
                    break
                self._guarded(self.cfg.path / name, partial(self._claim, name))
            now = time.monotonic()
            wake = [next_scan] + ([] if paused else [s.stable_since + cfg.stability_delay for s in seen.values()])
            if not self._stalled.empty():
                wake.append(next_retry)
            timeout = min(max(min(wake) - now, 0.02), 0.25)
            if inotify is not None and not lost:
                names, rescan = inotify.read(timeout)
                for name in names:
                    self._note(seen, name, time.monotonic())
                if rescan:
                    self._rescan.set()
            else:
                self._rescan.wait(timeout)

    def _intake_paused(self, waiting: int) -> bool:
        """True while a claimed file's result is stalled; the journal says when new files start
        and stop waiting (source thread only)."""
        with self._status_lock:
            paused, reason = bool(self._blocking_stalls), self._stall_reason
        if paused != self._paused:
            self._paused = paused
            if paused:
                log.warning("new files wait in the folder until results can be written source=%s waiting=%d "
                            "reason=%s", self.name, waiting, reason)
            else:
                log.info("taking new files again source=%s waiting=%d", self.name, waiting)
        return paused

    def _list(self) -> list[str]:
        try:
            names = [n for n in os.listdir(self.cfg.path) if not ignored(n)]
        except OSError as exc:
            self._set_status(SourceStatus.OFFLINE, "cannot list: %s" % exc.strerror)
            return []
        problem = not_a_folder(self.processing)
        if problem:  # no file is claimed into it; online again at the first scan after it is removed
            self._set_status(SourceStatus.OFFLINE, problem)
            return []
        self._set_status(SourceStatus.ONLINE)
        # Only names still here stay "told" (a scanner's dated subfolders, made and removed, would
        # grow the set for ever; one made again is named again).
        self._told_left_alone.intersection_update(names)
        return names

    def _note(self, seen: dict[str, _Seen], name: str, now: float) -> None:
        if name in seen or ignored(name) or "/" in name:
            return
        seen[name] = _Seen(-1, -1, now, now)

    def _ready(self, seen: dict[str, _Seen], now: float) -> list[str]:
        """Names whose size and mtime held still for stability_delay and that look complete, oldest first."""
        cfg = self.cfg
        ready: list[tuple[int, str]] = []
        for name, s in list(seen.items()):
            path = cfg.path / name
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                del seen[name]
                continue
            except OSError as exc:
                log.warning("cannot stat source=%s file=%s error=%s", self.name, log_name(name), exc.strerror)
                continue
            if stat.S_ISLNK(st.st_mode):
                del seen[name]
                self._refuse(name, "symlinks are refused")
                continue
            if not stat.S_ISREG(st.st_mode):
                del seen[name]  # sub-directories, fifos, sockets, devices: not ours, and never opened
                if name not in self._told_left_alone:
                    # Said once per name: someone who dropped a folder of scans learns why nothing comes.
                    self._told_left_alone.add(name)
                    if stat.S_ISDIR(st.st_mode):
                        log.warning("subfolder not read source=%s dir=%s (only files in the folder itself are "
                                    "taken)", self.name, log_name(name))
                    else:  # moving it to failed/ could mean reading it (across file systems): left alone
                        log.warning("not a regular file, left alone source=%s file=%s kind=%s", self.name,
                                    log_name(name), "named pipe" if stat.S_ISFIFO(st.st_mode) else
                                    "socket" if stat.S_ISSOCK(st.st_mode) else "device")
                continue
            if (st.st_size, st.st_mtime_ns) != (s.size, s.mtime_ns):
                s.size, s.mtime_ns, s.stable_since = st.st_size, st.st_mtime_ns, now
                continue
            if now - s.stable_since < cfg.stability_delay:
                continue
            too_big = st.st_size > cfg.max_file_mb * 1024 * 1024
            if too_big or looks_complete(path, st.st_size) or now - s.first_seen >= cfg.incomplete_timeout:
                del seen[name]
                ready.append((st.st_mtime_ns, name))
            else:  # still growing, or truncated: looked at again after stability_delay, not at every tick
                s.stable_since = now
        return [name for _, name in sorted(ready)]

    def _claim(self, name: str) -> None:
        """Atomic rename into .processing/ (a free name there), then hand it to the pipeline."""
        src = self.cfg.path / name
        problem = not_a_folder(self.processing)  # swapped since the last scan (an inbox without the sticky bit)
        if problem:
            self._set_status(SourceStatus.OFFLINE, problem)
            self._processing_refused = True
            return  # the file stays in the inbox; offered again by the scan that finds the folder sound
        if self._processing_refused:  # the link is gone: a watched folder need not wait for its rescan
            self._processing_refused = False
            self._set_status(SourceStatus.ONLINE, "%s is a folder again" % self.processing)
        if not self.processing.is_dir():  # the inbox was removed and made again while we ran
            self.processing.mkdir(exist_ok=True)
            log.warning("made again source=%s dir=%s (it was removed)", self.name, self.processing)
        claimed = self.processing / name
        n = 0
        while claimed.exists():  # this thread is the only writer of .processing/
            n += 1
            stem, ext = split_name(name)
            claimed = self.processing / ("%s-%d%s" % (fit_stem(stem, ext), n, ext))
        try:
            os.rename(src, claimed)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("cannot claim source=%s file=%s error=%s", self.name, log_name(name), exc.strerror)
            return
        log.debug("claimed source=%s file=%s", self.name, log_name(claimed.name))
        self._guarded(claimed, partial(self._submit_claimed, claimed, name=name))

    def _submit_claimed(self, claimed: Path, resumed: bool = False, name: str | None = None) -> bool:
        """``name``: as dropped, where the claim took another (the same name still in .processing/);
        a file resumed after a restart is known by its claimed name."""
        name, cfg = name or claimed.name, self.cfg
        try:
            data = read_regular(claimed, cfg.max_file_mb)
        except ImageTooLarge as exc:
            self._fail_unread(claimed, name, exc)
            return True
        except OSError as exc:
            why = "symlinks are refused" if exc.errno == errno.ELOOP else "cannot read file: %s" % exc.strerror
            self._fail_unread(claimed, name, SourceError(why))
            return True
        sha = hashlib.sha256(data).hexdigest()
        try:
            if resumed and self._finish_interrupted(claimed, name, sha):
                return True
        except SinkError as exc:  # done/ or failed/ unreadable now: offered again later
            self._stall(claimed, exc, name)
            return True
        cached = self._cached(sha) if cfg.reuse_results else None
        job = Job(self.name, data, file=name, sha256=sha, cached=cached,
                  on_read_start=partial(self._read_starts, claimed) if resumed and cached is None else None,
                  on_read_end=partial(self._read_ended, claimed) if resumed and cached is None else None,
                  on_done=partial(self._finish, claimed, name, cached is not None),
                  on_stalled=partial(self._stall, claimed, name=name))
        return self.submit(job)  # False: stopping; the file stays in .processing/ for the next start

    def _finish_interrupted(self, claimed: Path, name: str, sha: str) -> bool:
        """A crash between writing NAME.json and moving the original: complete the move, no re-run."""
        # After a restart a file claimed as same-1.txt (same.txt still in .processing/) is known by
        # that name alone: its result may be under same.* (same bytes, so the same result).
        names = dict.fromkeys((name, CLAIM_COUNTER.sub(r"\1\2", name)))
        for directory, suffix, counter in ((self.cfg.done_dir, ".json", "files_done_total"),
                                           (self.cfg.failed_dir, ".error.json", "files_failed_total")):
            meta = next(filter(None, (self.files.existing(directory, n, suffix, sha) for n in names)), None)
            if meta is None:
                continue
            data = json.loads(meta.read_text(encoding="utf-8"))
            delete = directory == self.cfg.done_dir and self.cfg.delete_original
            self.files.store(None if delete else claimed, directory, name, suffix, data, sha)
            if delete:
                claimed.unlink(missing_ok=True)
            self.stats.inc(counter)
            self._stored(claimed)
            self._read_ended(claimed)
            log.info("finished interrupted move source=%s file=%s dir=%s", self.name, log_name(name), directory)
            return True
        return False

    def _reuse_store_usable(self) -> bool:
        """Whether .cache/ is a folder (checked at each use: a writer of the inbox may swap it for a
        link to done/, whose results its pruning would delete); the journal says when it stops being one."""
        with self._stamp_lock:  # one check-and-record at a time: each change is logged once
            problem = not_a_folder(self.cache)
            if problem != self._cache_problem:
                self._cache_problem = problem
                if problem:
                    log.warning("reuse store not used source=%s reason=%s", self.name, problem)
        return problem is None

    def _cached(self, sha: str) -> EngineOutput | None:
        if not self._reuse_store_usable():
            return None
        path = self.cache / (sha + ".json")
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if self.reading is not None and stored.get("reading") != self.reading:
                return None  # read by another release, pack or setting: read again (the new result replaces it)
            output = output_from_dict(stored)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("stored result unreadable, running OCR again file=%s error=%s", path, exc)
            return None
        try:
            self._stamp(path)  # recently used: pruned last
        except OSError as exc:  # an entry a root run left: readable, not ours to stamp; pruned earlier
            log.debug("cannot mark stored result as used file=%s error=%s", path, exc.strerror)
        return output

    # -- completion (on the pipeline thread) ---------------------------------------------------

    def _stamp(self, entry: Path) -> None:
        """Mark a reuse store ``entry`` as its most recently used: an mtime after every other entry's
        (at full ns precision: a write or a bare utime() takes the kernel's coarse clock, 1-4 ms ticks,
        so two uses in one tick would tie), even after the wall clock stepped back (a Pi booted with a
        stale clock, then set by NTP), when "now" would make each new entry the first pruned."""
        with self._stamp_lock:
            if self._last_stamp_ns is None:
                self._last_stamp_ns = newest_mtime_ns(self.cache)
            now = self._last_stamp_ns = max(time.time_ns(), self._last_stamp_ns + 1)
        os.utime(entry, ns=(now, now))

    def _finish(self, claimed: Path, name: str, reused: bool, result: Result) -> None:
        self._read_ended(claimed)
        if result.status is Status.ERROR:
            self._fail(claimed, name, result.error or EdgeOcrError("unknown error"), result.traceback, result.sha256)
            return
        cfg = self.cfg
        data = result.to_dict()
        try:
            meta = self.files.store(None if cfg.delete_original else claimed, cfg.done_dir, name, ".json", data,
                                    result.sha256)
        except SinkError as exc:  # the result is kept: a retry writes it, with no second OCR run or publish
            self._stall(claimed, exc, name, partial(self._finish, claimed, name, reused, result))
            return
        if cfg.delete_original:
            claimed.unlink(missing_ok=True)
        self._stored(claimed)
        # A reading at the guard's smaller detection size is not these bytes' reading: not kept.
        if cfg.reuse_results and not reused and result.sha256 and not result.degraded and self._reuse_store_usable():
            try:
                self._stamp(self.files.put(self.cache, result.sha256 + ".json", {**data, "reading": self.reading}))
                removed = prune_least_recent(self.cache, cfg.reuse_max_entries)
                if removed:
                    # debug: once the store is full, one entry goes with every new file
                    log.debug("reuse store pruned source=%s removed=%d kept=%d", self.name, removed,
                              cfg.reuse_max_entries)
            except EdgeOcrError as exc:
                log.warning("cannot store result for reuse source=%s error=%s", self.name, exc.message)
        self.stats.inc("files_done_total")
        log.info("file done source=%s file=%s status=%s result=%s", self.name, log_name(name), result.status.value,
                 log_name(meta.name))

    def _fail_unread(self, src: Path, name: str, error: EdgeOcrError) -> None:
        """Fail a file refused before any reading (a symlink, over max_file_mb, unreadable) and
        announce it as a corrupt image's error is announced (MQTT state and event, /api/latest):
        the pipeline publishes the error result, with no engine run; the file is in failed/ already."""
        if self._fail(src, name, error, None, None):
            self.submit(Job(self.name, b"", file=name, refused=error))

    def _fail(self, src: Path, name: str, error: EdgeOcrError, tb: str | None, sha: str | None) -> bool:
        """Move ``src`` to failed/ with NAME.error.json; False when that could not be written."""
        self._read_ended(src)
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        data: dict[str, Any] = {
            "file": printable_name(name),
            "source": self.name,
            "reason": "%s: %s" % (error.code, error.message),
            "error": {"code": error.code, "message": error.message},
            "time": now,
            "traceback": tb,
            "sha256": sha,
        }
        try:
            meta = self.files.store(src, self.cfg.failed_dir, name, ".error.json", data, sha)
        except EdgeOcrError as exc:
            if src.parent == self.processing:
                self._stall(src, exc if isinstance(exc, SinkError) else exc.message, name,
                            partial(self._fail, src, name, error, tb, sha))
            else:  # a refused file still in the inbox: the next scan offers it again
                log.error("cannot move to failed_dir source=%s file=%s error=%s", self.name, log_name(name), exc.message)
            return False
        self.stats.inc("files_failed_total")
        self._stored(src)
        log.warning("file failed source=%s file=%s error=%s %s result=%s",
                    self.name, log_name(name), error.code, error.message, log_name(meta.name))
        return True

    def _stall(self, claimed: Path, reason: str | SinkError, name: str | None = None,
               write_again: Callable[[], object] | None = None) -> None:
        """The result of ``claimed`` could not be written (pipeline or source thread): it stays in
        .processing/ and is offered again, from STALL_RETRY_MIN_S up to STALL_RETRY_MAX_S apart:
        ``write_again`` writes the result kept in memory; without it the file is read again. New
        files wait in the folder only while a stall is the directory's (``_blocks_every_file``), not
        one file's own (a file the service cannot read, a name done/'s file system refuses)."""
        blocks_all = not isinstance(reason, SinkError) or _blocks_every_file(reason)
        reason = reason.message if isinstance(reason, SinkError) else reason
        self._read_ended(claimed)
        self.stats.inc("files_stalled_total")
        with self._status_lock:
            again = claimed in self._stalled_files
        # Once per file: its retries, for as long as done/ stays unwritable, are the round's summary
        # line (``_retry_stalled``), not two lines a file a minute for ever.
        log.log(logging.DEBUG if again else logging.ERROR, "cannot write result, file kept for retry source=%s "
                "file=%s error=%s", self.name, log_name(claimed.name), reason)
        self._stalled.put((claimed, name or claimed.name, write_again))
        with self._status_lock:
            self._stalled_files.add(claimed)
            if blocks_all:
                self._blocking_stalls.add(claimed)
            else:
                self._blocking_stalls.discard(claimed)
            self._stall_reason = reason
            self._set_status(SourceStatus.OFFLINE, "cannot write results: %s" % reason)

    def _retry_stalled(self) -> None:
        """Offer the stalled files again (on the source thread): a result kept in memory is written
        (no second OCR run, nothing published twice); a file whose result a sink could not take is
        read again, and a finished write is completed without a second run (``_finish_interrupted``)."""
        stalled: list[tuple[Path, str, Callable[[], object] | None]] = []
        while not self._stalled.empty():
            stalled.append(self._stalled.get_nowait())
        if stalled:
            log.info("retrying stalled files source=%s files=%d last_error=%s", self.name, len(stalled),
                     self._stall_reason)
        for claimed, name, write_again in stalled:
            if claimed.exists():
                log.debug("retrying stalled file source=%s file=%s", self.name, log_name(claimed.name))
                self._guarded(claimed, write_again or partial(self._submit_claimed, claimed, resumed=True, name=name))
            else:  # removed by hand meanwhile: nothing left to write
                self._stored(claimed)

    def _guarded(self, path: Path, action: Callable[[], object]) -> None:
        """Run one file's ``action``; a defect it meets fails that file (kept in failed/ with the
        error) instead of stopping the folder: the next files go on."""
        try:
            action()
        except Exception as exc:  # anything the handlers above did not expect, from this one file
            log.exception("file failed on an internal error source=%s file=%s", self.name, log_name(path.name))
            if path.exists():
                self._fail(path, path.name, EdgeOcrError("internal error: %s: %s" % (type(exc).__name__, exc)),
                           None, None)

    def _refuse(self, name: str, reason: str) -> None:
        self._fail_unread(self.cfg.path / name, name, SourceError(reason))


def _identity(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a claimed file: which file a resume count belongs to; None once it is gone."""
    try:
        st = path.lstat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _mtime_name(path: Path) -> tuple[int, str]:
    try:
        return (path.lstat().st_mtime_ns, path.name)
    except OSError:
        return (0, path.name)
