"""The tuning the daemon uses: what `edge-ocr tune` measured on this device, stored as
``<state>/tune.json``, read at start-up, applied to ``threads``/``precision`` left on "auto".

The measuring itself is in edge_ocr.tools.tune (never imported by the daemon).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from edge_ocr.atomic import write_atomic
from edge_ocr.engine.models import load_pack
from edge_ocr.engine.ocr import EngineOptions
from edge_ocr.engine.types import MAX_THREADS

log = logging.getLogger(__name__)

TUNE_FILE = "tune.json"
TUNED_PRECISIONS = ("fp32", "int8")


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
        tuning = Tuning(**data)
        # A value this release cannot run (a newer release's precision, a hand edit) would stop the
        # daemon with a config error about "auto", which the config does not hold.
        threads_ok = isinstance(tuning.threads, int) and not isinstance(tuning.threads, bool) and (
            1 <= tuning.threads <= MAX_THREADS)
        if tuning.precision not in TUNED_PRECISIONS or not threads_ok:
            raise ValueError("threads=%r precision=%r: not a tuning this release can use" % (
                tuning.threads, tuning.precision))
        return tuning
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
        # A warning: an upgrade (a pack's version names its content since 2026-12-05) leaves the
        # device on default threads and precision until it is tuned again.
        log.warning("tuning is for pack=%s version=%s, not %s %s: not used (run edge-ocr tune again)",
                    tuning.pack, tuning.pack_version, pack.name, pack.version)
        return options
    threads = tuning.threads if options.threads == "auto" else options.threads
    precision = tuning.precision if options.precision == "auto" else options.precision
    return replace(options, threads=threads, precision=precision)
