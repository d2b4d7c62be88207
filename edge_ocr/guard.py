"""The memory guard of SPEC "Memory guard": a psutil sampler thread → GuardState ok/soft/hard,
and ``IdleTrim``, the rule that hands the free heap back once the daemon has been idle a while.

``classify()`` is the pure rule (limits plus hysteresis); ``Guard`` samples this process's RSS
and the system's available memory every ``interval_s`` on a thread named ``guard`` and calls the
caller's ``on_change`` when the level changes. What a level means (drop camera frames, shrink
batches, stop and exit non-zero) is the caller's business. Imports psutil, config and errors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import psutil

from edge_ocr.config import GuardConfig
from edge_ocr.stats import MB, Family, Sample, Stats, render

log = logging.getLogger(__name__)


class Level(str, Enum):
    OK = "ok"
    SOFT = "soft"
    HARD = "hard"

    @property
    def rank(self) -> int:
        """0 ok, 1 soft, 2 hard."""
        return LEVEL_ORDER.index(self.value)


LEVEL_ORDER = ("ok", "soft", "hard")


# A level is left only once every value is back past its limit by this margin: RSS below
# ``limit * RECOVER_RATIO``, available memory above ``floor / RECOVER_RATIO`` (no flapping).
RECOVER_RATIO = 0.9


@dataclass(frozen=True, slots=True)
class GuardState:
    """One sample and the level it led to. ``available_mb`` is None when psutil could not tell."""

    level: Level = Level.OK
    rss_mb: float = 0.0
    available_mb: float | None = None
    reason: str = ""
    changes: int = 0  # level changes since start
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        """The guard's part of /readyz and ``<p>/stats``."""
        return {
            "level": self.level.value,
            "rss_mb": round(self.rss_mb, 1),
            "available_mb": None if self.available_mb is None else round(self.available_mb, 1),
            "reason": self.reason,
            "changes": self.changes,
        }


def classify(rss_mb: float, available_mb: float | None, limits: GuardConfig, previous: Level = Level.OK,
             recover_ratio: float = RECOVER_RATIO) -> Level:
    """The level for one sample. Escalation is immediate (RSS over a limit, or available memory
    under a floor); a level reached before is kept until RSS falls below ``limit * recover_ratio``
    and available memory rises above ``floor / recover_ratio`` (hysteresis, no flapping)."""
    if _over(rss_mb, available_mb, limits.rss_hard_mb, limits.min_available_hard_mb, recover_ratio, previous.rank >= 2):
        return Level.HARD
    if _over(rss_mb, available_mb, limits.rss_soft_mb, limits.min_available_soft_mb, recover_ratio, previous.rank >= 1):
        return Level.SOFT
    return Level.OK


def _over(rss_mb: float, available_mb: float | None, rss_limit: float, floor: float, recover_ratio: float,
          held: bool) -> bool:
    ratio = recover_ratio if held else 1.0
    over_rss = rss_mb >= rss_limit * ratio if held else rss_mb > rss_limit
    under_floor = False
    if floor > 0 and available_mb is not None:
        under_floor = available_mb <= floor / ratio if held else available_mb < floor
    return over_rss or under_floor


def _reason(level: Level, rss_mb: float, available_mb: float | None, limits: GuardConfig) -> str:
    if level is Level.OK:
        return ""
    text = "rss %.0f MB (soft %g, hard %g)" % (rss_mb, limits.rss_soft_mb, limits.rss_hard_mb)
    if available_mb is not None and (limits.min_available_soft_mb or limits.min_available_hard_mb):
        text += ", available %.0f MB (soft floor %g, hard floor %g)" % (
            available_mb, limits.min_available_soft_mb, limits.min_available_hard_mb)
    return text


def read_memory(process: psutil.Process) -> tuple[float, float | None]:
    """(RSS of ``process``, system available memory) in MB, read defensively as glances does:
    ``available`` is missing on some platforms (fall back to free + buffers + cached) and can
    exceed ``total`` in containers (clamped). Raises psutil.Error/OSError if RSS is unreadable."""
    rss_mb = process.memory_info().rss / MB
    try:
        vm = psutil.virtual_memory()
    except (psutil.Error, OSError):
        return rss_mb, None
    available = getattr(vm, "available", None)
    if available is None:
        parts = [getattr(vm, name, None) for name in ("free", "buffers", "cached")]
        known = [p for p in parts if isinstance(p, (int, float))]
        available = sum(known) if known else None
    total = getattr(vm, "total", None)
    if available is not None and isinstance(total, (int, float)) and total > 0:
        available = min(available, total)
    return rss_mb, None if available is None else available / MB


class IdleTrim:
    """Calls ``trim`` once when the daemon has had no work for ``after_s`` seconds.

    glibc keeps the pages of freed image buffers for reuse (docs/memory.md): a busy daemon
    reuses them at no cost, an idle one holds tens to hundreds of MB that other services on a
    small board could use. So the heap is trimmed once per idle spell, never between
    back-to-back images; the next image pays the page faults. ``tick`` is called periodically
    with a count of the work started so far and whether any is in progress or waiting
    (``pipeline.WorkMeter``). ``after_s <= 0`` never trims.
    """

    def __init__(self, after_s: float, trim: Callable[[], object], now: float = 0.0) -> None:
        self._after_s = after_s
        self._trim = trim
        self._seen = 0
        self._since = now  # the last moment work was seen
        self._armed = True  # start-up (model loading) leaves free heap too

    def tick(self, now: float, work_seen: int, busy: bool) -> bool:
        """True when this tick trimmed."""
        if busy or work_seen != self._seen:
            self._seen, self._since, self._armed = work_seen, now, True
            return False
        if not self._armed or self._after_s <= 0 or now - self._since < self._after_s:
            return False
        self._armed = False
        self._trim()
        return True


class Guard:
    """Samples memory on a thread named ``guard`` until ``stop`` is set.

    ``on_change(state, previous_level)`` runs on the guard thread at every level change
    (an exception there is logged, the guard keeps running). ``sample()`` takes one sample
    now, e.g. before start-up work. ``limits`` may be replaced while running (SIGHUP): the
    next sample uses the new ones. Each sample's level and RSS go into ``stats`` (``guard_level``,
    ``rss_mb``) when given. Nothing runs until ``start()``.
    """

    def __init__(
        self,
        limits: GuardConfig,
        stop: threading.Event,
        on_change: Callable[[GuardState, Level], None] | None = None,
        process: psutil.Process | None = None,
        *,
        interval_s: float = 1.0,
        recover_ratio: float = RECOVER_RATIO,
        stats: Stats | None = None,
    ) -> None:
        if interval_s <= 0 or not 0 < recover_ratio <= 1:
            raise ValueError("guard: expected interval_s > 0 and 0 < recover_ratio <= 1")
        self.limits = limits
        self.interval_s = interval_s
        self.recover_ratio = recover_ratio
        self._stop = stop
        self._on_change = on_change
        self._process = process
        self._stats = stats
        self._state = GuardState()
        self._lock = threading.Lock()  # one sample at a time: start-up sample() vs the thread
        self._thread: threading.Thread | None = None
        self._failures = 0

    @property
    def state(self) -> GuardState:
        return self._state  # replaced whole (frozen), so a plain read is consistent

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("guard already started")
        if self._process is None:
            self._process = psutil.Process()
        self._thread = threading.Thread(target=self._run, name="guard", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> bool:
        """Wait for the thread after ``stop`` was set; False (logged) if it is still running."""
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("guard stop timed out thread=%s", self._thread.name)
            return False
        return True

    def _run(self) -> None:
        log.info(
            "guard started rss_soft_mb=%g rss_hard_mb=%g min_available_soft_mb=%g min_available_hard_mb=%g",
            self.limits.rss_soft_mb, self.limits.rss_hard_mb,
            self.limits.min_available_soft_mb, self.limits.min_available_hard_mb,
        )
        while True:
            try:
                self.sample()
            except Exception:  # thread boundary: the guard itself must keep running
                log.exception("guard sample failed")
            if self._stop.wait(self.interval_s):
                break

    def sample(self) -> GuardState:
        """Read memory, classify, and on a level change call ``on_change``. Returns the state."""
        with self._lock:
            if self._process is None:
                self._process = psutil.Process()
            try:
                rss_mb, available_mb = read_memory(self._process)
            except (psutil.Error, OSError) as exc:
                self._failures += 1
                if self._failures == 1:
                    log.warning("guard cannot read memory error=%s", type(exc).__name__)
                return self._state
            self._failures = 0
            previous = self._state
            level = classify(rss_mb, available_mb, self.limits, previous.level, self.recover_ratio)
            changed = level is not previous.level
            state = GuardState(
                level,
                rss_mb,
                available_mb,
                _reason(level, rss_mb, available_mb, self.limits),
                previous.changes + (1 if changed else 0),
            )
            self._state = state
            if self._stats is not None:
                self._stats.set("guard_level", level.rank)
                self._stats.set("rss_mb", rss_mb)
        if changed:
            self._report(state, previous.level)
        return state

    def _report(self, state: GuardState, previous: Level) -> None:
        if state.level.rank > previous.rank:
            log.warning("memory guard level=%s previous=%s %s", state.level.value, previous.value, state.reason)
        else:
            log.info("memory guard level=%s previous=%s rss_mb=%.0f", state.level.value, previous.value, state.rss_mb)
        if self._on_change is not None:
            try:
                self._on_change(state, previous)
            except Exception:  # the caller's reaction failing must not stop the sampling
                log.exception("guard on_change failed level=%s", state.level.value)

    def to_prometheus(self, prefix: str = "edge_ocr_") -> str:
        """System memory in Prometheus text, for /metrics, when psutil can tell it (level and RSS
        are in ``stats``)."""
        s = self._state
        if s.available_mb is None:
            return ""
        return render([Family("guard_available_bytes", "gauge", "bytes", "memory available on the system",
                              (Sample(int(s.available_mb * MB)),))], prefix)


__all__ = ["RECOVER_RATIO", "Guard", "GuardState", "Level", "classify", "read_memory"]
