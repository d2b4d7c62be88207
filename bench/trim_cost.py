"""Dev only: what a malloc_trim costs the next image (the daemon's idle trim, guard.idle_trim_s).

The engine reads each image twice, in alternating order: once right after ``malloc_trim(0)`` and
once without, another image read before each so the heap is warm both times. Prints the median
and total time ratio (after a trim / without), the p50s, and the RSS a trim leaves.

    .venv/bin/python bench/trim_cost.py [--set pages|lines] [--limit 40] [--threads 2]
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 .venv/bin/python bench/trim_cost.py   # as the unit runs it
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

from edge_ocr import allocator
from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.tools import bench

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="pages")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    allocator.configure("default")
    files = bench.image_set(args.set, EVAL_DEV, args.limit)
    det = args.set != "lines"
    engine = OcrEngine(EngineOptions(threads=args.threads))
    for warm in files[:3]:
        engine(warm.read_bytes(), det=det)
    process = psutil.Process()
    times: dict[str, list[float]] = {"trim": [], "plain": []}
    rss_after_trim = []
    for index, path in enumerate(files):
        data = path.read_bytes()
        for kind in ("plain", "trim") if index % 2 == 0 else ("trim", "plain"):
            engine(files[(index + 7) % len(files)].read_bytes(), det=det)
            if kind == "trim":
                allocator.trim()
                rss_after_trim.append(process.memory_info().rss / 2**20)
            started = time.perf_counter()
            engine(data, det=det)
            times[kind].append(time.perf_counter() - started)
    ratios = [t / p for t, p in zip(times["trim"], times["plain"])]
    print("%s, %d images, %d threads, GLIBC_TUNABLES=%s: after a trim / without: median %.3f, total %.3f; "
          "p50 %.1f vs %.1f ms; RSS after a trim %.0f MB"
          % (args.set, len(files), args.threads, os.environ.get("GLIBC_TUNABLES", ""), statistics.median(ratios),
             sum(times["trim"]) / sum(times["plain"]), 1000 * statistics.median(times["trim"]),
             1000 * statistics.median(times["plain"]), statistics.median(rss_after_trim)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
