"""Dev only: the narrow page reader (``EngineOptions.narrow_sample``) against reading every line of
a page whole, paired in one process, per source and half of eval-dev (docs/benchmarks.md).

The page reader's last layer maps 120 features to 18,710 classes at each time step; with its
bias, dequantization and softmax it is ~20 % of a line's time at 1 thread. The pack's
``rec_page_narrow`` (``models/build.py``: ``narrow_classes``, ``narrow_classifier``) keeps 6,762
of them: every class that is not a CJK ideograph and GB2312's level-1 hanzi as sentinels. The
engine reads a page's sample lines whole first and, on a page without Chinese, the rest narrow,
reading again whole any that looks Chinese (``OcrEngine._read_page``).

Both engines (shipped, and ``narrow_sample = 0``) read every eval-dev page (``pages/`` and
``zh/pages``) in turn, in alternating order; printed: end-to-end F1 / page CER per source and half
(``bench/halves.py``), the lines read by each reader, and the time per page as a ratio
narrow / whole (median with a bootstrap 95 % interval, and totals).

    .venv/bin/python bench/narrow_head.py --threads 1        # and --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from det_variants import GROUPS, in_group
from halves import halves
from paired import interval

from edge_ocr.engine.models import Model
from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.tools import scoring
from edge_ocr.tools.evaluate import PageSample, load_pages

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"
MANIFESTS = (EVAL_DEV / "pages" / "labels.jsonl", EVAL_DEV / "zh" / "pages" / "labels.jsonl")


def counted(model: Model, counts: dict[str, int], key: str) -> None:
    """Count the lines ``model`` reads (one per batch row) under ``counts[key]``."""
    run = model.run

    def run_counted(batch: np.ndarray) -> np.ndarray:
        counts[key] += len(batch)
        return run(batch)

    model.run = run_counted  # type: ignore[method-assign]


def accuracy(pages: Sequence[PageSample], half: dict[str, str], lines: dict[str, tuple[list, list[str]]]) -> str:
    cells = []
    for group, prefixes in GROUPS.items():
        for h in "ab":
            matches = [scoring.match_page(s.boxes, s.texts, s.ignored, [np.asarray(b, np.float32) for b in
                                                                        lines[s.path.name][0]],
                                          lines[s.path.name][1])
                       for s in pages if in_group(s, prefixes) and half[s.path.name] == h]
            detections, truths = sum(m.detections for m in matches), sum(m.truths for m in matches)
            e2e = scoring.f1(sum(m.e2e_hits for m in matches), detections, truths)[2]
            cer = np.mean([m.page_edits / m.page_length for m in matches if m.page_length])
            cells.append("%s %s %.1f / %.1f" % (group, h, 100 * e2e, 100 * cer))
    return " | ".join(cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    pages = [s for m in MANIFESTS for s in load_pages(m)]
    half = halves({s.path.name: s.source for s in pages})
    engines = {"whole": OcrEngine(EngineOptions(threads=args.threads, narrow_sample=0)),
               "narrow": OcrEngine(EngineOptions(threads=args.threads))}
    counts = {"whole": 0, "narrow": 0}
    narrow = engines["narrow"]
    assert narrow.rec_page_narrow is not None and narrow.page_lines is not None
    counted(narrow.page_lines, counts, "whole")
    counted(narrow.rec_page_narrow, counts, "narrow")
    lines: dict[str, dict[str, tuple[list, list[str]]]] = {name: {} for name in engines}
    seconds: dict[str, dict[str, float]] = {name: {} for name in engines}
    for engine in engines.values():
        engine(pages[0].path.read_bytes())  # sessions made, first-run costs paid
        engine(pages[-1].path.read_bytes())
    counts.update(whole=0, narrow=0)
    for index, sample in enumerate(pages):
        data = sample.path.read_bytes()
        for name in (list(engines) if index % 2 == 0 else list(engines)[::-1]):
            started = time.perf_counter()
            output = engines[name](data)
            seconds[name][sample.path.name] = time.perf_counter() - started
            lines[name][sample.path.name] = ([line.box for line in output.lines], [line.text for line in output.lines])
    print("threads %d; lines read by the shipped engine: %d whole, %d narrow"
          % (args.threads, counts["whole"], counts["narrow"]))
    for name in engines:
        print("%-6s e2e F1 / page CER: %s" % (name, accuracy(pages, half, lines[name])))
    changed = sum(lines["whole"][n][1] != lines["narrow"][n][1] for n in lines["whole"])
    print("pages whose texts differ: %d of %d" % (changed, len(pages)))
    for group, prefixes in GROUPS.items():
        names = [s.path.name for s in pages if in_group(s, prefixes)]
        whole = np.array([seconds["whole"][n] for n in names])
        cut = np.array([seconds["narrow"][n] for n in names])
        ratios = [float(r) for r in cut / whole]
        low, high = interval(ratios)
        print("%-5s time per page, narrow / whole: median %.3f [%.3f, %.3f], total %.3f; p50 %.0f -> %.0f ms, "
              "p95 %.0f -> %.0f ms" % (group, np.median(ratios), low, high, cut.sum() / whole.sum(),
                                       1000 * np.median(whole), 1000 * np.median(cut),
                                       1000 * np.percentile(whole, 95), 1000 * np.percentile(cut, 95)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
