"""Dev only: two engine settings timed against each other, paired in one process.

Two engines (``EngineOptions`` overrides ``--a`` and ``--b``, JSON) read each image of a set in turn,
in alternating order, so the shared machine's drift falls on both alike; the figure is the median
per-image time ratio b / a with a bootstrap 95 % interval, then the texts are compared.

    .venv/bin/python bench/paired.py --a '{"page_line_threads": 0}' --b '{}' [--set pages] [--threads 2]

``--a-det FILE`` gives the reference another detector file (an older pack's, say:
``git show 8ba36f0:models/ppocrv6-small/det.int8.onnx > /tmp/old-det.onnx``).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from edge_ocr.engine.models import Model
from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.tools import bench

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"


def interval(ratios: list[float], draws: int = 2000) -> tuple[float, float]:
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws)]


def p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--set", default="pages")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="read the set this many times (a small set, e.g. zh)")
    parser.add_argument("--a", default="{}", help="EngineOptions overrides of the reference, JSON")
    parser.add_argument("--b", default="{}", help="EngineOptions overrides of the candidate, JSON")
    parser.add_argument("--no-det", action="store_true", help="read each image as one line")
    parser.add_argument("--a-det", type=Path, help="another detector file for the reference")
    args = parser.parse_args(argv)
    datas = [p.read_bytes() for p in bench.image_set(args.set, EVAL_DEV, args.limit or 10_000)] * args.repeat
    engines = {name: OcrEngine(EngineOptions(threads=args.threads, **json.loads(overrides)))
               for name, overrides in (("a", args.a), ("b", args.b))}
    if args.a_det:
        det = engines["a"].det
        assert det is not None
        engines["a"].det = Model(det.stage, replace(det.variant, path=args.a_det), engines["a"].threads,
                                 exact_sums=engines["a"].options.exact_detector_sums)
    det = not args.no_det
    for data in datas[:2]:  # warm-up
        for engine in engines.values():
            engine(data, det=det)
    times: dict[str, list[float]] = {"a": [], "b": []}
    cpu: dict[str, float] = {"a": 0.0, "b": 0.0}  # the process's CPU seconds (every thread's) in each engine's calls
    same = 0
    for index, data in enumerate(datas):
        texts = []
        for name in ("a", "b") if index % 2 else ("b", "a"):
            start, start_cpu = time.perf_counter(), _cpu_s()
            texts.append([line.text for line in engines[name](data, det=det).lines])
            times[name].append((time.perf_counter() - start) * 1000)
            cpu[name] += _cpu_s() - start_cpu
        same += texts[0] == texts[1]
    ratios = [b / a for a, b in zip(times["a"], times["b"])]
    low, high = interval(ratios)
    print("%s, %d images, %d threads, b %s against a %s: median per-image time ratio b / a %.3f [%.3f, %.3f]; "
          "total %.3f; CPU %.3f; p50 %.1f vs %.1f ms, p95 %.1f vs %.1f ms; same texts on %d of %d"
          % (args.set, len(datas), args.threads, args.b, args.a, statistics.median(ratios), low, high,
             sum(times["b"]) / sum(times["a"]), cpu["b"] / cpu["a"], statistics.median(times["b"]), statistics.median(times["a"]),
             p95(times["b"]), p95(times["a"]), same, len(datas)))
    return 0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())
