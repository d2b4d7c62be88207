"""Model packs: loading, sha256 checks, variant choice, ONNX Runtime sessions.

The only module that imports onnxruntime. A pack is a directory under the models root with a
``manifest.json`` whose schema is ``engine/manifest.py`` (the one models/build.py writes);
nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# ONNX Runtime's Linux wheels (1.32) send usage telemetry to Microsoft unless this is set before they
# load: a device ID kept in ~/.cache/Microsoft/DeveloperTools, events queued in SQLite there while
# offline (2.5 MB after a day of tests here), a thread to upload them. An OCR daemon on a private
# network talks to its own broker and nothing else; ORT_DISABLE_TELEMETRY=0 in the environment wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # after the line above: it is read once, as the library loads

from edge_ocr.engine.decode import Charset, load_charset
from edge_ocr.engine.manifest import InputSpec, Manifest, ManifestError, SourceRef, StageEntry
from edge_ocr.errors import ConfigError, ModelError, UnknownPack

DEFAULT_PACK = "ppocrv6-small"
PRECISIONS = ("auto", "fp32", "int8")
STAGES = ("det", "rec", "cls")


def models_root() -> Path:
    """Where packs live: ``$EDGE_OCR_MODELS``, the repo's ``models/`` (development and
    editable installs), or ``<prefix>/share/edge-ocr/models`` (wheel installs)."""
    env = os.environ.get("EDGE_OCR_MODELS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2] / "models"
    if repo.is_dir():
        return repo
    return Path(sys.prefix) / "share" / "edge-ocr" / "models"


@dataclass(frozen=True, slots=True)
class Variant:
    precision: str
    path: Path
    sha256: str
    speed_vs_fp32: float = 1.0


@dataclass(frozen=True, slots=True)
class Stage:
    """One model of a pack and how to feed it (input fields as in the manifest)."""

    name: str
    kind: str
    variants: dict[str, Variant]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    height: int = 0
    width: int = 0  # cls: fixed width; rec: max width
    min_width: int = 0  # rec: pad narrower batches to this width
    multiple: int = 32
    charset: Charset | None = None
    postprocess: dict[str, float] = field(default_factory=dict)  # det: DB thresholds for this model
    source: SourceRef = field(default_factory=SourceRef)


@dataclass(frozen=True, slots=True)
class Pack:
    name: str
    version: str
    description: str
    licence: str
    directory: Path
    stages: dict[str, Stage]
    accuracy: dict[str, Any] = field(default_factory=dict)

    def files(self) -> list[tuple[str, Variant]]:
        """Every (stage, variant) of the pack."""
        return [(s.name, v) for s in self.stages.values() for v in s.variants.values()]


def list_packs(root: Path | None = None) -> list[str]:
    """Names of the packs under ``root`` (directories with a manifest declaring det or rec)."""
    root = root or models_root()
    return [manifest.parent.name for manifest in sorted(root.glob("*/manifest.json"))
            if {"det", "rec"} & set(read_manifest(manifest).stages)]


def read_manifest(path: Path) -> Manifest:
    """One ``manifest.json``, checked against the schema. Raises ModelError naming the key."""
    try:
        return Manifest.from_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ManifestError) as exc:
        raise ModelError("malformed manifest %s: %s" % (path, exc)) from exc


def content_id(manifest: Manifest) -> str:
    """12 hex digits that change whenever what the pack reads with does: every file's sha256, each
    charset's, how each stage is fed and post-processed (not the figures a build re-measures). The
    manifest's own ``version`` is the schema's, "1" in every build: without this, a result stored
    by an older pack (the drop folder's reuse) or a tuning made for it passed for the new one's."""
    stages = {
        name: {"files": sorted(v.sha256 for v in entry.variants.values()),
               "charset": repr(entry.charset),
               "input": repr(entry.input), "postprocess": sorted((entry.postprocess or {}).items())}
        for name, entry in sorted(manifest.stages.items())
    }
    return hashlib.sha256(json.dumps(stages, sort_keys=True).encode()).hexdigest()[:12]


def resolve_pack_name(name: str) -> str:
    return DEFAULT_PACK if name == "default" else name


def load_pack(name: str, root: Path | None = None) -> Pack:
    """Parse ``<root>/<name>/manifest.json``. Raises ModelError if missing or malformed."""
    root = root or models_root()
    name = resolve_pack_name(name)
    directory = root / name
    path = directory / "manifest.json"
    if not path.is_file():
        available = ", ".join(list_packs(root)) or "none"
        raise UnknownPack("model pack %r not found in %s (available: %s)" % (name, root, available))
    manifest = read_manifest(path)
    return Pack(
        name=manifest.name,
        version="%s+%s" % (manifest.version, content_id(manifest)),
        description=manifest.description,
        licence=manifest.licence,
        directory=directory,
        stages={key: _stage(key, entry, directory) for key, entry in manifest.stages.items()},
        accuracy=manifest.accuracy,
    )


def _stage(name: str, entry: StageEntry, directory: Path) -> Stage:
    spec = entry.input or InputSpec()
    variants = {
        precision: Variant(precision, (directory / item.file).resolve(), item.sha256, item.speed_vs_fp32 or 1.0)
        for precision, item in entry.variants.items()
    }
    charset = None
    if entry.charset is not None:
        charset_path = directory / entry.charset.file
        try:
            raw = charset_path.read_bytes()
        except OSError as exc:
            raise ModelError("cannot read charset %s: %s" % (charset_path, exc)) from exc
        # Checked at every load, as it is small: two characters swapped keep the class count and
        # would read every 4 as 7 without a word.
        actual = hashlib.sha256(raw).hexdigest()
        if entry.charset.sha256 is not None and actual != entry.charset.sha256:
            raise ModelError("charset %s: sha256 mismatch (manifest %s…, file %s…)"
                             % (charset_path, entry.charset.sha256[:12], actual[:12]))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelError("cannot read charset %s: %s" % (charset_path, exc)) from exc
        charset = load_charset(text, entry.charset.space_appended)
        if charset.num_classes != entry.charset.num_classes:
            raise ModelError("charset %s gives %d classes, manifest says %d"
                             % (charset_path, charset.num_classes, entry.charset.num_classes))
    mean, std = spec.mean or (0.5, 0.5, 0.5), spec.std or (0.5, 0.5, 0.5)
    return Stage(
        name=name,
        kind=entry.kind,
        variants=variants,
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        height=spec.height or 0,
        width=spec.width or spec.max_width or 0,
        min_width=spec.min_width or 0,
        multiple=spec.multiple or 32,
        charset=charset,
        postprocess=dict(entry.postprocess or {}),
        source=entry.source,
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_pack(pack: Pack) -> list[str]:
    """One message per missing file or sha256 mismatch; empty when the pack is intact. A file
    two stages share (rec_page's fp32 variant is rec's) is checked and reported once."""
    problems = []
    checked: set[Path] = set()
    for stage, variant in pack.files():
        if variant.path in checked:
            continue
        checked.add(variant.path)
        if not variant.path.is_file():
            problems.append("%s %s %s: file missing: %s" % (pack.name, stage, variant.precision, variant.path))
            continue
        actual = sha256_file(variant.path)
        if actual != variant.sha256:
            problems.append(
                "%s %s %s: sha256 mismatch for %s (manifest %s…, file %s…)"
                % (pack.name, stage, variant.precision, variant.path.name, variant.sha256[:12], actual[:12])
            )
    return problems


PACK_NOTICES = ("LICENSE", "NOTICE")  # the weights' licence and where they came from: shipped with them
PACK_MORE_NOTICES = ("MODEL_LICENSES.md",)  # a source's own model notice, where it has one (models/build.py)


def unlisted_files(pack: Pack) -> list[str]:
    """A pack folder's files its manifest does not list (it ships as it is: nothing may ride along,
    eval-dev data least of all), and a missing LICENSE or NOTICE: for ``models verify`` and
    ``check``, not a reason to refuse the models at start (``verify_pack``)."""
    manifest = read_manifest(pack.directory / "manifest.json")
    listed = {"manifest.json", *PACK_NOTICES, *PACK_MORE_NOTICES}
    for entry in manifest.stages.values():
        listed |= {entry_file for entry_file in (v.file for v in entry.variants.values()) if "/" not in entry_file}
        if entry.charset is not None and "/" not in entry.charset.file:
            listed.add(entry.charset.file)
    problems = ["%s: %s missing" % (pack.name, name) for name in PACK_NOTICES if not (pack.directory / name).is_file()]
    problems += ["%s: %s is not in its manifest" % (pack.name, path.name)
                 for path in sorted(pack.directory.iterdir()) if path.name not in listed]
    return problems


def choose_variant(stage: Stage, precision: str) -> Variant:
    """The variant to load for ``precision``: fp32, int8, or for auto the fastest shipped
    variant (int8 variants ship only after passing their accuracy check)."""
    if precision not in PRECISIONS:
        raise ConfigError("engine.precision: expected one of %s, got %r" % ("|".join(PRECISIONS), precision))
    if precision == "auto":
        return min(stage.variants.values(), key=lambda v: (v.speed_vs_fp32, v.precision != "fp32"))
    if precision in stage.variants:
        return stage.variants[precision]
    # A stage with no int8 variant (it failed its check) runs fp32: the user asked for
    # the fastest accurate model, not for a broken one.
    return stage.variants["fp32"]


def cpu_capacities(sys_cpu: Path = Path("/sys/devices/system/cpu")) -> dict[int, int]:
    """Per-CPU capacity as the kernel reports it on heterogeneous SoCs (empty elsewhere)."""
    capacities = {}
    for path in sys_cpu.glob("cpu[0-9]*/cpu_capacity"):
        try:
            capacities[int(path.parent.name[3:])] = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
    return capacities


def big_cores(usable: set[int], capacities: dict[int, int]) -> set[int]:
    """The usable CPUs of the highest capacity class (all of them on homogeneous CPUs).

    LITTLE cores would make ONNX Runtime's intra-op threads wait for the slowest worker.
    """
    known = {cpu: capacities[cpu] for cpu in usable if cpu in capacities}
    if not known or len(set(known.values())) == 1:
        return set(usable)
    top = max(known.values())
    return {cpu for cpu, cap in known.items() if cap == top}


def auto_threads() -> int:
    """``threads = "auto"``: the number of big cores this process may run on."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    return max(1, len(big_cores(set(usable), cpu_capacities())))


def make_session(variant: Variant, threads: int, allow_spinning: bool = False,
                 exact_sums: bool = False) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with our measured settings.

    The CPU memory arena and memory-pattern planning are off: with them, the buffers of one
    large input stay reserved for the life of the process (358 MB after one big page here;
    with dynamic shapes a pattern is planned per input shape). ``allow_spinning``: the worker
    threads busy-wait for work only while a run lasts (``session.force_spinning_stop``), so an idle
    daemon burns no core (EngineOptions.allow_spinning).

    ``exact_sums`` (``session.x64quantprecision``): x86 CPUs without VNNI (AVX2 only, as AMD Zen 1-3
    and Intel before Ice Lake) add an int8 model's u8 x s8 products in pairs into int16, which
    saturates; with it ONNX Runtime computes those layers exactly (u8 x u8) on such CPUs, and
    changes nothing elsewhere (VNNI, ARM). The engine asks it for the detector (see
    ``EngineOptions.exact_detector_sums``).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    if allow_spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if exact_sums:
        options.add_session_config_entry("session.x64quantprecision", "1")
    try:
        return ort.InferenceSession(str(variant.path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own untyped Fail/InvalidGraph errors
        raise ModelError("cannot load %s: %s" % (variant.path, exc)) from exc


class Model:
    """One stage: a session and its input name; ``run`` is the only hot path.

    With ``lazy=True`` the session is created at the first ``run`` (or ``session``), not in the
    constructor, so a stage a deployment never uses costs no memory (docs/memory.md). The load
    is double-checked under a lock: lines are read on several threads, and the second thread to
    ask waits for the first one's session instead of making its own. ``stage`` and ``variant``
    are known either way. A lazy stage's load errors (ModelError) surface at its first use.
    """

    def __init__(self, stage: Stage, variant: Variant, threads: int, allow_spinning: bool = False,
                 lazy: bool = False, exact_sums: bool = False) -> None:
        self.stage = stage
        self.variant = variant
        self._threads = threads
        self._allow_spinning = allow_spinning
        self._exact_sums = exact_sums
        self._lock = threading.Lock()
        self._session: ort.InferenceSession | None = None
        self.input_name = ""
        self.lazy = lazy
        self.last_used = 0.0  # time.monotonic() of the last run
        if not lazy:
            self._open()

    @property
    def loaded(self) -> bool:
        """True once the session exists."""
        return self._session is not None

    @property
    def session(self) -> ort.InferenceSession:
        """The session, created on first access."""
        return self._session or self._open()

    def _open(self) -> ort.InferenceSession:
        with self._lock:
            if self._session is None:
                session = make_session(self.variant, self._threads, self._allow_spinning, self._exact_sums)
                self.input_name = session.get_inputs()[0].name
                self._session = session  # published last: a reader never sees it without its input name
            return self._session

    def release(self, idle_s: float = 0.0) -> bool:
        """Drop a lazy stage's session unused for ``idle_s`` seconds (made again at its next run);
        True if one was dropped. A run in progress on another thread keeps its own reference and
        finishes."""
        with self._lock:
            if not self.lazy or self._session is None or time.monotonic() - self.last_used < idle_s:
                return False
            self._session = None
            return True

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.last_used = time.monotonic()
        session = self._session or self._open()
        return session.run(None, {self.input_name: batch})[0]
