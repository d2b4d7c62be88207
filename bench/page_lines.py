"""Dev only: a page's lines on one intra-op thread each against all threads, paired in one process.

Two engines (``page_line_threads`` 1 and 0, 2 threads, lines in parallel) read each eval-dev page
in turn, in alternating order, so the shared machine's drift falls on both alike; the figure is
the median per-page time ratio with a bootstrap 95 % interval, then the texts are compared.

    .venv/bin/python bench/page_lines.py [--set pages] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.tools import bench

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"


def interval(ratios: list[float], draws: int = 2000) -> tuple[float, float]:
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--set", default="pages")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    datas = [p.read_bytes() for p in bench.image_set(args.set, EVAL_DEV, args.limit or 10_000)]
    one = OcrEngine(EngineOptions(threads=args.threads, page_line_threads=1))
    every = OcrEngine(EngineOptions(threads=args.threads, page_line_threads=0))
    for data in datas[:2]:  # warm-up
        one(data), every(data)
    times: dict[str, list[float]] = {"one": [], "every": []}
    same = 0
    for index, data in enumerate(datas):
        order = (("one", one), ("every", every)) if index % 2 else (("every", every), ("one", one))
        texts = []
        for name, engine in order:
            start = time.perf_counter()
            texts.append([line.text for line in engine(data).lines])
            times[name].append((time.perf_counter() - start) * 1000)
        same += texts[0] == texts[1]
    ratios = [a / b for a, b in zip(times["one"], times["every"])]
    low, high = interval(ratios)
    p95 = lambda xs: sorted(xs)[int(0.95 * (len(xs) - 1))]  # noqa: E731
    print("%s, %d images, %d threads: one thread per line / all threads per line: median per-page time ratio "
          "%.3f [%.3f, %.3f]; total %.3f; p50 %.0f vs %.0f ms, p95 %.0f vs %.0f ms; same texts on %d of %d"
          % (args.set, len(datas), args.threads, statistics.median(ratios), low, high,
             sum(times["one"]) / sum(times["every"]), statistics.median(times["one"]), statistics.median(times["every"]),
             p95(times["one"]), p95(times["every"]), same, len(datas)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
