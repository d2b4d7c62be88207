"""Dev-only reference predictions from RapidOCR 1.3.24 (PP-OCRv4) on eval-dev.

Runs in its own venv (``.venv-ref``, with ``rapidocr-onnxruntime==1.3.24 psutil``)
and has no dependency on ``edge_ocr``. Writes one JSON line per image::

    {"file", "text", "lines": [{"text", "score", "box"}], "elapsed_ms", "cpu_ms"}

* lines manifest (``labels.tsv``): recognition only,
  ``engine(path, use_det=False, use_cls=False, use_rec=True)``; ``box`` is null.
* pages manifest (``labels.jsonl``): full det+cls+rec with RapidOCR's defaults,
  ``engine(path)``; ``box`` is the detected quad ``[[x, y]] * 4``.

``elapsed_ms``/``cpu_ms`` are wall and process CPU time (all threads) of that one
call, which includes RapidOCR's own image decoding from the path. A one-line
summary (p50/p95 elapsed, peak RSS) is printed to stderr at the end.

Usage::

    .venv-ref/bin/python bench/rapidocr_predict.py MANIFEST --out FILE.jsonl \
        [--limit N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from rapidocr_onnxruntime import RapidOCR


def read_manifest(manifest: Path) -> list[str]:
    """Return image file names (as written in the manifest), in manifest order."""
    names: list[str] = []
    with manifest.open(encoding="utf-8") as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            if manifest.suffix == ".jsonl":
                names.append(json.loads(line)["file"])
            else:
                names.append(line.split("\t", 1)[0])
    return names


def to_lines(result: Any, rec_only: bool) -> list[dict[str, Any]]:
    """Normalise RapidOCR's result list to ``[{"text", "score", "box"}]``."""
    if not result:
        return []
    if rec_only:  # [[text, score], ...]
        return [{"text": str(t), "score": float(s), "box": None} for t, s in result]
    # [[box, text, score], ...], box = [[x, y]] * 4
    return [
        {
            "text": str(t),
            "score": float(s),
            "box": [[float(x), float(y)] for x, y in box],
        }
        for box, t, s in result
    ]


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
    ap.add_argument("--out", type=Path, required=True, help="output .jsonl")
    ap.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    ap.add_argument("--threads", type=int, default=0,
                    help="ONNX Runtime intra_op_num_threads (0 = RapidOCR default)")
    args = ap.parse_args(argv)

    rec_only = args.manifest.suffix != ".jsonl"
    names = read_manifest(args.manifest)
    if args.limit > 0:
        names = names[: args.limit]
    img_dir = args.manifest.parent

    kwargs: dict[str, Any] = {}
    if args.threads > 0:
        kwargs["intra_op_num_threads"] = args.threads  # propagated to Det/Cls/Rec
    t_load = time.perf_counter()
    engine = RapidOCR(**kwargs)
    load_ms = (time.perf_counter() - t_load) * 1000.0

    elapsed: list[float] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as out:
        for name in names:
            path = str(img_dir / name)
            w0, c0 = time.perf_counter(), time.process_time()
            if rec_only:
                result, _ = engine(path, use_det=False, use_cls=False, use_rec=True)
            else:
                result, _ = engine(path)
            wall_ms = (time.perf_counter() - w0) * 1000.0
            cpu_ms = (time.process_time() - c0) * 1000.0
            lines = to_lines(result, rec_only)
            elapsed.append(wall_ms)
            rec = {
                "file": name,
                "text": "\n".join(ln["text"] for ln in lines),
                "lines": lines,
                "elapsed_ms": round(wall_ms, 3),
                "cpu_ms": round(cpu_ms, 3),
            }
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    rss_mib = psutil.Process().memory_info().rss / 2**20
    print(
        f"rapidocr-1.3.24 {'rec' if rec_only else 'det+cls+rec'} n={len(elapsed)} "
        f"threads={args.threads or 'default'} load_ms={load_ms:.0f} "
        f"p50_ms={percentile(elapsed, 50):.1f} p95_ms={percentile(elapsed, 95):.1f} "
        f"mean_ms={sum(elapsed) / max(1, len(elapsed)):.1f} "
        f"peak_rss_mib={peak_mib:.0f} end_rss_mib={rss_mib:.0f} out={args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
