"""edge_ocr.guard: the classification table with its hysteresis, and the real sampler thread pushed
past its soft and hard limits by memory this process really allocates."""

from __future__ import annotations

import logging
import threading

import numpy as np
import psutil
import pytest

from edge_ocr.config import GuardConfig
from edge_ocr.errors import ConfigError
from edge_ocr.guard import Guard, GuardState, IdleTrim, Level, classify, read_memory
from edge_ocr.stats import Stats
from tests.helpers import promtool_check

OK, SOFT, HARD = Level.OK, Level.SOFT, Level.HARD
LIMITS = GuardConfig(rss_soft_mb=300, rss_hard_mb=450, min_available_soft_mb=200, min_available_hard_mb=100)
WAIT_S = 30.0


@pytest.mark.parametrize(
    ("rss_mb", "available_mb", "previous", "expected"),
    [
        # escalation is immediate, from any level
        (100, 4000, OK, OK),
        (300, 4000, OK, OK),  # at the limit is not over it
        (301, 4000, OK, SOFT),
        (451, 4000, OK, HARD),
        (451, 4000, SOFT, HARD),
        (100, 199, OK, SOFT),  # available under the soft floor
        (100, 99, OK, HARD),
        (100, 99, SOFT, HARD),
        (100, None, OK, OK),  # available unknown: judged on RSS alone
        (460, None, OK, HARD),
        # hysteresis: soft holds until RSS < 270 (300 * 0.9) and available > 222 (200 / 0.9)
        (290, 4000, SOFT, SOFT),
        (271, 4000, SOFT, SOFT),
        (269, 4000, SOFT, OK),
        (100, 210, SOFT, SOFT),
        (100, 223, SOFT, OK),
        (290, 4000, OK, OK),  # the same value never raises a level that was not reached
        (100, 210, OK, OK),
        # hard holds until RSS < 405 (450 * 0.9) and available > 111 (100 / 0.9); then soft or ok
        (420, 4000, HARD, HARD),
        (100, 105, HARD, HARD),
        (400, 4000, HARD, SOFT),
        (280, 4000, HARD, SOFT),  # below hard's band but still in soft's
        (260, 4000, HARD, OK),
        (100, 150, HARD, SOFT),
        (100, 250, HARD, OK),
        (420, 4000, SOFT, SOFT),  # hard's band applies only once hard was reached
    ],
)
def test_classify_table(rss_mb, available_mb, previous, expected):
    assert classify(rss_mb, available_mb, LIMITS, previous) is expected


def test_classify_without_available_floors_ignores_available_memory():
    limits = GuardConfig(rss_soft_mb=300, rss_hard_mb=450)
    assert classify(100, 1, limits, OK) is OK
    assert classify(350, 1, limits, OK) is SOFT


def test_a_rising_then_falling_series_changes_level_once_each_way():
    series = [250, 290, 301, 320, 298, 285, 271, 302, 268, 250]
    level, seen = OK, []
    for rss in series:
        level = classify(rss, None, LIMITS, level)
        seen.append(level.value)
    assert seen == ["ok", "ok", "soft", "soft", "soft", "soft", "soft", "soft", "ok", "ok"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rss_soft_mb": 400, "rss_hard_mb": 300}, "rss_hard_mb"),
        ({"rss_soft_mb": 0}, "rss_soft_mb: expected >= 16"),
        ({"min_available_soft_mb": 100, "min_available_hard_mb": 200}, "min_available_soft_mb"),
        ({"min_available_soft_mb": -1}, "min_available"),
    ],
)
def test_limits_refuse_unusable_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        GuardConfig(**kwargs)


def test_the_sampler_refuses_unusable_timing():
    with pytest.raises(ValueError, match="interval_s"):
        Guard(GuardConfig(), threading.Event(), interval_s=0)
    with pytest.raises(ValueError, match="recover_ratio"):
        Guard(GuardConfig(), threading.Event(), recover_ratio=1.5)


def test_read_memory_reads_this_process():
    rss_mb, available_mb = read_memory(psutil.Process())
    assert rss_mb > 10
    assert available_mb is not None and 0 < available_mb <= psutil.virtual_memory().total / 2**20


def test_state_json_and_prometheus_text():
    stop = threading.Event()
    stats = Stats()
    guard = Guard(GuardConfig(rss_soft_mb=16, rss_hard_mb=100_000), stop, stats=stats)
    state = guard.sample()
    assert state.level is SOFT and state.changes == 1 and "rss" in state.reason
    data = state.to_dict()
    assert data["level"] == "soft" and data["rss_mb"] > 10 and data["changes"] == 1
    assert stats.snapshot()["guard_level"] == 1 and stats.snapshot()["rss_mb"] == state.rss_mb  # <p>/stats
    text = stats.to_prometheus() + guard.to_prometheus()
    assert "# TYPE edge_ocr_guard_level gauge\nedge_ocr_guard_level 1\n" in text
    assert "edge_ocr_guard_rss_bytes " in text and "edge_ocr_guard_available_bytes " in text
    promtool_check(text.encode())


def test_an_available_memory_floor_above_what_the_system_has_is_soft_at_once():
    available = psutil.virtual_memory().available / 2**20
    limits = GuardConfig(rss_soft_mb=100_000, rss_hard_mb=200_000, min_available_soft_mb=available * 4,
                         min_available_hard_mb=1)
    state = Guard(limits, threading.Event()).sample()
    assert state.level is SOFT and "available" in state.reason


class Changes:
    """on_change callback: records each change and sets an event per level reached."""

    def __init__(self) -> None:
        self.seen: list[tuple[Level, Level]] = []
        self.reached = {level: threading.Event() for level in Level}
        self.threads: set[str] = set()

    def __call__(self, state: GuardState, previous: Level) -> None:
        self.seen.append((previous, state.level))
        self.threads.add(threading.current_thread().name)
        self.reached[state.level].set()


def test_the_guard_thread_sees_real_allocations_cross_soft_and_hard_and_recover(caplog):
    baseline = psutil.Process().memory_info().rss / 2**20
    # ratio 0.95: after freeing, RSS is back near baseline, well under soft * 0.95
    limits = GuardConfig(rss_soft_mb=int(baseline) + 96, rss_hard_mb=int(baseline) + 224)
    stop = threading.Event()
    changes = Changes()
    guard = Guard(limits, stop, changes, interval_s=0.01, recover_ratio=0.95)
    held: list[np.ndarray] = []
    with caplog.at_level(logging.INFO, logger="edge_ocr.guard"):
        guard.start()
        try:
            assert guard.sample().level is OK
            held.append(np.ones(160 * 2**20, dtype=np.uint8))  # 160 MB, every page touched
            assert changes.reached[SOFT].wait(WAIT_S), guard.state
            held.append(np.ones(160 * 2**20, dtype=np.uint8))  # 320 MB in all: past hard
            assert changes.reached[HARD].wait(WAIT_S), guard.state
            held.clear()  # numpy's large blocks are mmapped: freeing gives the pages back
            assert changes.reached[OK].wait(WAIT_S), guard.state
        finally:
            stop.set()
            assert guard.join(5)
    assert changes.seen[:2] == [(OK, SOFT), (SOFT, HARD)]
    assert changes.seen[-1][1] is OK  # down in one step or via soft, as the pages were given back
    assert all(new.rank < old.rank for old, new in changes.seen[2:])
    assert changes.threads == {"guard"}
    assert guard.state.level is OK and guard.state.changes == len(changes.seen)
    messages = [r.getMessage() for r in caplog.records]
    assert any("memory guard level=hard previous=soft" in m for m in messages)
    assert any(r.levelno == logging.WARNING and "level=soft" in r.getMessage() for r in caplog.records)


def test_a_failing_callback_does_not_stop_the_guard(caplog):
    stop = threading.Event()
    calls: list[Level] = []
    reached = {level: threading.Event() for level in Level}

    def on_change(state: GuardState, previous: Level) -> None:
        calls.append(state.level)
        reached[state.level].set()
        raise RuntimeError("caller bug")

    guard = Guard(GuardConfig(rss_soft_mb=16, rss_hard_mb=17), stop, on_change, interval_s=0.01)
    with caplog.at_level(logging.ERROR, logger="edge_ocr.guard"):
        guard.start()
        try:
            assert reached[HARD].wait(WAIT_S)
            # the thread survives the failing callback: new limits (as SIGHUP would set) still reach it
            guard.limits = GuardConfig(rss_soft_mb=100_000, rss_hard_mb=200_000)
            assert reached[OK].wait(WAIT_S)
        finally:
            stop.set()
            assert guard.join(5)
    assert calls == [HARD, OK]
    assert any("guard on_change failed" in r.getMessage() for r in caplog.records)


def test_nothing_runs_before_start_and_start_twice_is_an_error():
    stop = threading.Event()
    guard = Guard(GuardConfig(), stop, interval_s=0.01)
    assert not any(t.name == "guard" for t in threading.enumerate())
    assert guard.join(1)
    guard.start()
    try:
        with pytest.raises(RuntimeError):
            guard.start()
    finally:
        stop.set()
        assert guard.join(5)


def test_the_idle_trim_runs_once_per_idle_spell_never_between_jobs():
    trims: list[float] = []
    idle = IdleTrim(10.0, lambda: trims.append(1), now=0.0)
    assert not idle.tick(9.9, 0, busy=False)
    assert idle.tick(10.0, 0, busy=False)  # start-up leaves free heap: trimmed once
    assert not idle.tick(30.0, 0, busy=False)  # and not again while nothing happens
    # jobs back to back (a busy pipeline, or a new job every 5 s) never reach the threshold
    for second, jobs in ((31, 1), (36, 2), (41, 3), (46, 4)):
        assert not idle.tick(second, jobs, busy=False)
    assert not idle.tick(58.0, 4, busy=True)  # an image that takes long is work, not idleness
    assert not idle.tick(67.0, 4, busy=False)
    assert idle.tick(68.0, 4, busy=False)  # 10 s after the last work was seen
    assert trims == [1, 1]


def test_an_idle_trim_of_zero_never_trims():
    idle = IdleTrim(0.0, lambda: pytest.fail("trimmed"), now=0.0)
    assert not idle.tick(1e6, 0, busy=False)
