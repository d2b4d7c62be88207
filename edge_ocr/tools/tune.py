"""`edge-ocr tune`: the device measures its own best thread count and precision (edge_ocr.tuning stores it).

int8 wins on some CPUs and loses on others (x86 with VNNI, Cortex-A76 with dot-product
instructions: yes; Cortex-A72 in a Pi 4: often not), and more threads stop paying off at
different points, so the daemon's ``threads = "auto"`` and ``precision = "auto"`` use what
this measured on the device itself, stored as ``<state>/tune.json``.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from datetime import UTC, datetime

import cv2
import numpy as np

from edge_ocr.engine.models import big_cores, cpu_capacities, load_pack
from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.tuning import Trial, Tuning

log = logging.getLogger(__name__)

def sample_images() -> list[np.ndarray]:
    """Deterministic, synthetic test images (no data set needed on the device): a meter-like
    camera frame, a receipt-like page and a single line."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    frame = np.full((480, 640, 3), 235, np.uint8)
    cv2.putText(frame, "0012345.6 kWh", (60, 260), font, 2.0, (20, 20, 20), 4, cv2.LINE_AA)
    page = np.full((1400, 1000, 3), 250, np.uint8)
    for i in range(22):
        text = "ITEM %02d  QTY %d  PRICE %d.%02d" % (i, i % 4 + 1, 3 + i, (i * 37) % 100)
        cv2.putText(page, text, (60, 80 + 58 * i), font, 1.1, (30, 30, 30), 2, cv2.LINE_AA)
    line = np.full((48, 420, 3), 255, np.uint8)
    cv2.putText(line, "TOTAL 128.40", (10, 36), font, 1.1, (0, 0, 0), 2, cv2.LINE_AA)
    return [frame, page, line]


def measure(pack: str, precision: str, threads: int, images: list[np.ndarray], runs: int,
            spinning: bool = True) -> tuple[float, list[str]]:
    """Median wall ms of one pass over ``images`` and the texts read, for one configuration
    (``spinning``: as the daemon will run, ``app.engine_config``)."""
    engine = OcrEngine(EngineOptions(pack=pack, precision=precision, threads=threads, verify_checksums=False,
                                     allow_spinning=spinning))
    texts = [engine(image).text for image in images]  # warm-up pass, also the texts compared
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for image in images:
            engine(image)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), texts


def tune(pack: str, runs: int = 3, spinning: bool = True) -> Tuning:
    """Measure every precision the pack ships × 1..(big cores) threads on this device.

    The process is pinned to the big cores first, as the daemon will be. The choice is the
    fastest configuration that reads exactly what fp32 on one thread reads.
    """
    caller = os.sched_getaffinity(0)
    cpus = tuple(sorted(big_cores(set(caller), cpu_capacities())))
    os.sched_setaffinity(0, cpus)
    try:
        return _tune_on(cpus, pack, runs, spinning)
    finally:
        os.sched_setaffinity(0, caller)  # the caller's affinity is its own: give it back


def _tune_on(cpus: tuple[int, ...], pack: str, runs: int, spinning: bool) -> Tuning:
    loaded = load_pack(pack)
    precisions = ["fp32"] + (["int8"] if any("int8" in s.variants for s in loaded.stages.values()) else [])
    images = sample_images()
    trials: list[Trial] = []
    reference: list[str] | None = None
    for precision in precisions:
        for threads in range(1, len(cpus) + 1):
            median_ms, texts = measure(loaded.name, precision, threads, images, runs, spinning)
            reference = texts if reference is None else reference
            trials.append(Trial(precision, threads, round(median_ms, 1), texts == reference))
            log.info("tune precision=%s threads=%d median_ms=%.1f same_text=%s", precision, threads, median_ms,
                     texts == reference)
    best = min((t for t in trials if t.same_text), key=lambda t: t.median_ms)
    return Tuning(
        pack=loaded.name,
        pack_version=loaded.version,
        threads=best.threads,
        precision=best.precision,
        cpus=cpus,
        machine="%s, %d CPUs" % (platform.machine(), os.cpu_count() or 0),
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        trials=tuple(trials),
    )


