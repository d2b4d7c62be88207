"""`edge-ocr tune`: the device measures its own best thread count and precision.

int8 wins on some CPUs and loses on others (x86 with VNNI, Cortex-A76 with dot-product
instructions: yes; Cortex-A72 in a Pi 4: often not), and more threads stop paying off at
different points, so the daemon's ``threads = "auto"`` and ``precision = "auto"`` use what
this measured on the device itself, stored as ``<state>/tune.json``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from edge_ocr.atomic import write_atomic
from edge_ocr.engine.models import big_cores, cpu_capacities, load_pack
from edge_ocr.engine.ocr import EngineOptions, OcrEngine

log = logging.getLogger(__name__)

TUNE_FILE = "tune.json"


@dataclass(frozen=True, slots=True)
class Trial:
    precision: str
    threads: int
    median_ms: float
    same_text: bool


@dataclass(frozen=True, slots=True)
class Tuning:
    """The stored choice: for ``pack`` (at ``pack_version``), on these ``cpus``."""

    pack: str
    pack_version: str
    threads: int
    precision: str
    cpus: tuple[int, ...]
    machine: str
    measured_at: str
    trials: tuple[Trial, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


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


def measure(pack: str, precision: str, threads: int, images: list[np.ndarray], runs: int) -> tuple[float, list[str]]:
    """Median wall ms of one pass over ``images`` and the texts read, for one configuration."""
    engine = OcrEngine(EngineOptions(pack=pack, precision=precision, threads=threads, verify_checksums=False))
    texts = [engine(image).text for image in images]  # warm-up pass, also the texts compared
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for image in images:
            engine(image)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), texts


def tune(pack: str, runs: int = 3) -> Tuning:
    """Measure every precision the pack ships × 1..(big cores) threads on this device.

    The process is pinned to the big cores first, as the daemon will be. The choice is the
    fastest configuration that reads exactly what fp32 on one thread reads.
    """
    cpus = tuple(sorted(big_cores(set(os.sched_getaffinity(0)), cpu_capacities())))
    os.sched_setaffinity(0, cpus)
    loaded = load_pack(pack)
    precisions = ["fp32"] + (["int8"] if any("int8" in s.variants for s in loaded.stages.values()) else [])
    images = sample_images()
    trials: list[Trial] = []
    reference: list[str] | None = None
    for precision in precisions:
        for threads in range(1, len(cpus) + 1):
            median_ms, texts = measure(loaded.name, precision, threads, images, runs)
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


def save(tuning: Tuning, state_dir: Path) -> Path:
    path = state_dir / TUNE_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, tuning.to_json().encode("utf-8"))
    return path


def load(state_dir: Path) -> Tuning | None:
    """The stored tuning, or None when there is none or it is unreadable (then auto = defaults)."""
    path = state_dir / TUNE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["cpus"] = tuple(data["cpus"])
        data["trials"] = tuple(Trial(**t) for t in data.get("trials", ()))
        return Tuning(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring unreadable tuning file=%s error=%s", path, exc)
        return None


def apply(options: EngineOptions, tuning: Tuning | None) -> EngineOptions:
    """``threads``/``precision`` left on "auto" take the tuned values when the tuning was made
    for the same pack and version; explicit settings always win."""
    if tuning is None:
        return options
    pack = load_pack(options.pack)
    if (pack.name, pack.version) != (tuning.pack, tuning.pack_version):
        log.info("tuning is for pack=%s version=%s, not %s %s: not used", tuning.pack, tuning.pack_version,
                 pack.name, pack.version)
        return options
    threads = tuning.threads if options.threads == "auto" else options.threads
    precision = tuning.precision if options.precision == "auto" else options.precision
    return replace(options, threads=threads, precision=precision)
