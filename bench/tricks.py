"""Each speed trick of the engine measured on and off, in one run, on the same images.

Every configuration runs through `edge-ocr bench`'s worker (its own process, pinned to the same
CPUs), so the ratios compare like with like on a shared, noisy machine. The tricks:

* fast reader: PP-OCRv6 tiny drafts every line, PP-OCRv6 small re-reads only drafts under 0.95
  (``use_rec_fast``), against the accurate recogniser on every line;
* lines in parallel: with 2 threads, one line per thread (``parallel_lines``), against ONNX
  Runtime's intra-op threads inside each line;
* page lines on one intra-op thread each (``page_line_threads = 1``), against every line on a
  session with all threads (``0``);
* width-bucket batching: lines sorted by width and run 8 at a time (``rec_batch_size = 8``),
  against one line per call;
* spinning: ONNX Runtime's worker threads busy-waiting between ops while a run lasts
  (``allow_spinning``, stopped when it returns);
* result cache by content hash (the drop folder's ``reuse_results``, the HTTP API's ``cache_entries``): sha256 of the file
  against a full OCR of it, timed here in this process.

Usage (from the repository root)::

    .venv/bin/python bench/tricks.py [--set pages] [--limit 40] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from edge_ocr.tools import bench

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"

# (trick, threads, (reader, options) with the trick, (reader, options) without it)
TRICKS: tuple[tuple[str, int, tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]], ...] = (
    ("fast reader, unsure lines re-read", 1, ("cascade", {}), ("accurate", {})),
    ("lines in parallel (2 threads)", 2, ("cascade", {}), ("cascade", {"parallel_lines": False})),
    ("page lines on one intra-op thread each (2 threads)", 2, ("cascade", {}), ("cascade", {"page_line_threads": 0})),
    ("width-bucket batching (8 lines)", 1, ("cascade", {"rec_batch_size": 8}), ("cascade", {})),
    ("ORT spinning while a run lasts (2 threads)", 2, ("cascade", {}), ("cascade", {"allow_spinning": False})),
)


def measure(images: list[Path], threads: int, reader: str, options: dict[str, Any], cpus: set[int]) -> dict[str, Any]:
    config = bench.BenchConfig("ppocrv6-small", "auto", threads, reader, json.dumps(options) if options else "")
    result = bench.measure(config, images, det=True, warmup=1, cpus=cpus)
    labels = EVAL_DEV / "pages" / "labels.jsonl"
    result["e2e_f1"] = bench.score_pages(result, labels) if labels.is_file() else None
    result.pop("predictions", None)
    return result


def hash_vs_ocr_ms(images: list[Path]) -> tuple[float, float]:
    """Median ms to sha256 a file (the cache key) and to OCR it, single-threaded, in this process."""
    from edge_ocr.engine.ocr import EngineOptions, OcrEngine

    engine = OcrEngine(EngineOptions(threads=1))
    hashes, ocrs = [], []
    for path in images[:10]:
        data = path.read_bytes()
        start = time.perf_counter()
        hashlib.sha256(data).hexdigest()
        hashes.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        engine(data)
        ocrs.append((time.perf_counter() - start) * 1000)
    engine.close()
    return statistics.median(hashes), statistics.median(ocrs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="pages")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    images = bench.image_set(args.set, EVAL_DEV, args.limit)
    cpus = set(sorted(os.sched_getaffinity(0))[:2])
    rows, raw = [], []
    for trick, threads, (on_reader, on_options), (off_reader, off_options) in TRICKS:
        print("measuring: %s" % trick, file=sys.stderr, flush=True)
        on = measure(images, threads, on_reader, on_options, cpus)
        off = measure(images, threads, off_reader, off_options, cpus)
        raw.append({"trick": trick, "on": on, "off": off})
        f1 = lambda r: (r.get("e2e_f1") or {}).get("all", "-")  # noqa: E731
        rows.append(
            "| %s | %d | %.2fx | %.2fx | %.0f / %.0f | %s / %s |"
            % (
                trick,
                threads,
                on["cpu_ms_per_image"] / off["cpu_ms_per_image"],
                off["images_per_s"] / on["images_per_s"],
                on["peak_rss_mb"],
                off["peak_rss_mb"],
                f1(on),
                f1(off),
            )
        )
    hash_ms, ocr_ms = hash_vs_ocr_ms(images)
    print("edge-ocr tricks · set=%s images=%d · %s\n" % (args.set, len(images), bench.machine()))
    print("| trick | threads | CPU with / without | time with / without | peak RSS MB with / without | e2e F1 with / without |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("| result cache hit (sha256 of the file) vs OCR | 1 | %.4fx (%.2f ms vs %.0f ms) | | | same result |"
          % (hash_ms / ocr_ms, hash_ms, ocr_ms))
    if args.json:
        args.json.write_text(json.dumps({"machine": bench.machine(), "tricks": raw,
                                         "hash_ms": hash_ms, "ocr_ms": ocr_ms}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
