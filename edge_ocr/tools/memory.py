"""`edge-ocr bench --memory`: where one process's memory goes, stage by stage.

Runs in a fresh child process (``python -m edge_ocr.tools.memory JOB.json``), so nothing of
the caller is counted, and reports RSS after each step, from /proc/self/status:

- the interpreter, then each import (numpy, OpenCV, ONNX Runtime, the engine); ``imports()``
  measures, in a child of its own, the daemon's import graph one module at a time;
- each session of the pack, loaded one at a time: its file's bytes (the weights) and the rest
  of its growth (graph, prepacked weights, buffers);
- the detector's activations per megapixel of detection input: the peak over the steady state
  while the detector alone runs on each page's input (VmHWM, reset through /proc/self/clear_refs);
- a full engine call per image: its peak over the steady state;
- Python objects alive and at peak during the images (tracemalloc);
- what glibc keeps: free bytes held in the heap after the images (mallinfo2).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MB = 1024 * 1024
# (module, label) in the order the process imports them: the engine's, then the rest of the
# daemon's (the CLI's `run` imports edge_ocr.app, which brings the MQTT, HTTP and guard modules).
ENGINE_IMPORTS = (("numpy", "numpy"), ("cv2", "OpenCV (cv2)"), ("onnxruntime", "ONNX Runtime"),
                  ("edge_ocr.engine.ocr", "the engine (edge_ocr.engine.*)"))
DAEMON_IMPORTS = ENGINE_IMPORTS + (("psutil", "psutil"), ("paho.mqtt.client", "paho-mqtt (and ssl)"),
                                   ("bottle", "bottle"), ("edge_ocr.app", "the daemon (edge_ocr.app and the rest)"))


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {key: int(re.search(r"^%s:\s+(\d+) kB" % key, text, re.M).group(1)) * 1024  # type: ignore[union-attr]
            for key in ("VmRSS", "VmHWM")}


def _rss() -> int:
    return _status()["VmRSS"]


def _reset_peak() -> None:
    """VmHWM back to the current RSS (Linux >= 4.0), so the next peak is this step's."""
    Path("/proc/self/clear_refs").write_text("5")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _glibc_free_bytes() -> int | None:
    """Bytes glibc holds free in its heap (freed by us, not given back to the kernel)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().fordblks)


def profile(pack: str, precision: str, threads: int, images: Sequence[Path], det: bool,
            memory: str = "default") -> list[dict[str, Any]]:
    """The rows of the table, measured in this process (call it in a fresh one)."""
    from edge_ocr import allocator

    allocator.configure(memory)  # as the CLI and the daemon do
    rows: list[dict[str, Any]] = []

    def row(step: str, before: int, note: str = "", **extra: Any) -> int:
        now = _rss()
        rows.append({"step": step, "rss_mb": round(now / MB, 1), "delta_mb": round((now - before) / MB, 1),
                     "note": note, **extra})
        return now

    start = row("interpreter", 0)
    before = start
    for module, label in ENGINE_IMPORTS:
        importlib.import_module(module)
        before = row("import %s" % label, before)
    import numpy as np

    from edge_ocr.engine import models, preprocess
    from edge_ocr.engine.ocr import EngineOptions, OcrEngine

    row("imports: numpy, OpenCV, ONNX Runtime, engine", start, "the four rows above")
    pack_spec = models.load_pack(pack)
    loaded = []
    for name, stage in pack_spec.stages.items():
        if name == "cls":
            continue  # off by default (engine.cls = false)
        variant = models.choose_variant(stage, precision)
        before = _rss()
        loaded.append(models.Model(stage, variant, threads))
        weights = variant.path.stat().st_size
        row("session %s (%s)" % (name, variant.precision), before,
                   "weights %.1f MB, graph and prepacked buffers %.1f MB" % (
                       weights / MB, (_rss() - before - weights) / MB), weights_mb=round(weights / MB, 1))
    det_model = next((m for m in loaded if m.stage.name == "det"), None)
    per_mp = []
    if det and det_model is not None:
        for path in images:
            image = preprocess.decode_image(path.read_bytes(), 50.0)
            resized, _ = preprocess.resize_for_detection(image, EngineOptions().det_limit_side, det_model.stage.multiple)
            tensor = preprocess.normalize(resized, det_model.stage.mean, det_model.stage.std)[None]
            gc.collect()
            allocator.trim()  # else the run may fit in heap that glibc kept free, and count as ~0 MB
            base = _rss()
            _reset_peak()
            det_model.run(tensor)
            per_mp.append((_status()["VmHWM"] - base) / (resized.shape[0] * resized.shape[1] / 1e6))
            del image, resized, tensor
        rows.append({"step": "detector activations", "rss_mb": round(_rss() / MB, 1), "delta_mb": None,
                     "note": "%.0f MB per MP of detection input (median of %d pages; %d px side = %.2f MP max)" % (
                         float(np.median(per_mp)) / MB, len(per_mp), EngineOptions().det_limit_side,
                         EngineOptions().det_limit_side ** 2 * 0.75 / 1e6),
                     "mb_per_mp": round(float(np.median(per_mp)) / MB, 1)})
    del loaded, det_model
    gc.collect()
    allocator.trim()  # the activations' heap, kept by glibc's default settings, is not the engine's
    engine = OcrEngine(EngineOptions(pack=pack, precision=precision, threads=threads, verify_checksums=False))
    steady = row("the engine as built", start, "sessions %s; others at the line that first needs one"
                 % ", ".join(engine.loaded))
    tracemalloc.start()
    peaks, run_peak = [], 0  # each image's rise over its start; the highest RSS of the whole run
    for path in images:
        data = path.read_bytes()
        _reset_peak()
        before = _rss()
        engine(data, det=det)
        high = _status()["VmHWM"]
        peaks.append(high - before)
        run_peak = max(run_peak, high)  # VmHWM is reset per image: the last one's alone said little
    current, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    engine.close()
    rows.append({"step": "sessions after the images", "rss_mb": None, "delta_mb": None,
                 "note": ", ".join(engine.loaded)})
    rows.append({"step": "one image, over the steady state", "rss_mb": round(_rss() / MB, 1),
                 "delta_mb": round(float(np.percentile(peaks, 95)) / MB, 1),
                 "note": "p50 %.1f MB, p95 %.1f MB, max %.1f MB over %d images" % (
                     float(np.median(peaks)) / MB, float(np.percentile(peaks, 95)) / MB, max(peaks) / MB,
                     len(peaks))})
    rows.append({"step": "Python objects", "rss_mb": None, "delta_mb": round(current / MB, 1),
                 "note": "alive after the images %.1f MB, peak during them %.1f MB (tracemalloc)" % (
                     current / MB, traced_peak / MB)})
    free = _glibc_free_bytes()
    rows.append({"step": "kept by glibc", "rss_mb": round(_rss() / MB, 1),
                 "delta_mb": None if free is None else round(free / MB, 1),
                 "note": "free bytes held in the heap after the images (mallinfo2), of RSS %.0f MB; steady "
                         "state before them %.0f MB" % (_rss() / MB, steady / MB)})
    rows.append({"step": "peak RSS of the process", "rss_mb": round(run_peak / MB, 1), "delta_mb": None,
                 "note": "the highest VmHWM over the images' run"})
    return rows


def import_profile(modules: Sequence[tuple[str, str]] = DAEMON_IMPORTS) -> list[dict[str, Any]]:
    """RSS after each import of ``modules`` in turn, in this process (call it in a fresh one)."""
    rows = [{"step": "interpreter", "rss_mb": round(_rss() / MB, 1), "delta_mb": round(_rss() / MB, 1), "note": ""}]
    for module, label in modules:
        before = _rss()
        importlib.import_module(module)
        now = _rss()
        rows.append({"step": "import %s" % label, "rss_mb": round(now / MB, 1),
                     "delta_mb": round((now - before) / MB, 1), "note": module})
    return rows


def _child_environment() -> dict[str, str]:
    """The children run with glibc's huge pages on, as the systemd unit and the bench's children
    have them (the allocator imported here, not at the top: the child's import profile would
    count its ctypes)."""
    from edge_ocr.allocator import with_hugepages

    return with_hugepages(os.environ)


def measure_imports() -> list[dict[str, Any]]:
    """``import_profile`` of the daemon's imports in a fresh child process."""
    run = subprocess.run([sys.executable, "-m", "edge_ocr.tools.memory", "--imports"], capture_output=True,
                         text=True, timeout=600, env=_child_environment())
    if run.returncode != 0:
        raise RuntimeError("import profile failed: %s" % run.stderr[-2000:])
    rows: list[dict[str, Any]] = json.loads(run.stdout)
    return rows


def measure(pack: str, precision: str, threads: int, images: Sequence[Path], det: bool,
            memory: str = "default") -> list[dict[str, Any]]:
    """``profile`` in a fresh child process."""
    with tempfile.TemporaryDirectory(prefix="edge-ocr-memory.") as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"pack": pack, "precision": precision, "threads": threads, "det": det,
                                   "memory": memory, "images": [str(p) for p in images]}))
        run = subprocess.run([sys.executable, "-m", "edge_ocr.tools.memory", str(job)], capture_output=True,
                             text=True, timeout=3600, env=_child_environment())
    if run.returncode != 0:
        raise RuntimeError("memory profile failed: %s" % run.stderr[-2000:])
    rows: list[dict[str, Any]] = json.loads(run.stdout)
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| step | RSS MB | + MB | note |", "|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %s | %s |" % (r["step"], "" if r["rss_mb"] is None else r["rss_mb"],
                                               "" if r["delta_mb"] is None else r["delta_mb"], r["note"]))
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["--imports"]:
        print(json.dumps(import_profile()))
        return 0
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    rows = profile(job["pack"], job["precision"], job["threads"], [Path(p) for p in job["images"]], job["det"],
                   job["memory"])
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
