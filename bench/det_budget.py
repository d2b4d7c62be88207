"""Dev only: budget the detector by input area instead of by its longer side, per half of eval-dev pages.

Today the detector's input has its longer side capped at ``det_limit_side`` (960), so a tall receipt gets
fewer pixels than a 4:3 photo. This reads every eval-dev page (``pages/`` and ``zh/pages``) with the
default engine at the longer-side cap and at area budgets (megapixels, never enlarging), and prints det
and e2e F1 and CPU seconds per source and half (``bench/halves.py``). Measured 2026-12-01: 0.55 MP gained
1.2 e2e F1 on SROIE half a and lost 0.9 on half b (and 6 on the Chinese pages' half a), so the rule was
not adopted.

    .venv/bin/python bench/det_budget.py [--budgets 0.55,0.7,0.9]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from halves import halves

from edge_ocr.engine import preprocess
from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.tools import scoring
from edge_ocr.tools.evaluate import load_pages

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"
GROUPS = {"SROIE": lambda s: s.startswith("SROIE"), "IC15": lambda s: s.startswith("ICDAR"),
          "zh": lambda s: not s.startswith(("SROIE", "ICDAR"))}


def longer_side_for(height: int, width: int, megapixels: float) -> int:
    """The longer-side cap that gives an image of this size at most ``megapixels`` of detection input."""
    return int(max(height, width) * min(1.0, math.sqrt(megapixels * 1e6 / (height * width))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="0.55,0.7,0.9", help="megapixels, comma-separated")
    args = parser.parse_args(argv)
    samples = [s for m in (EVAL_DEV / "pages" / "labels.jsonl", EVAL_DEV / "zh" / "pages" / "labels.jsonl")
               for s in load_pages(m)]
    half = halves({s.path.name: s.source for s in samples})
    engine = OcrEngine(EngineOptions(threads=2, det_limit_side=8192))
    configs = [("longer side 960", None)] + [("%.2f MP" % float(b), float(b)) for b in args.budgets.split(",")]
    scored: dict[str, dict[str, tuple[scoring.PageMatch, float]]] = {name: {} for name, _ in configs}
    for sample in samples:
        image = preprocess.decode_image(sample.path.read_bytes(), 100.0)
        for name, budget in configs:
            side = 960 if budget is None else longer_side_for(*image.shape[:2], budget)
            started = time.process_time()
            output = engine(image, limit_side=side)
            cpu = time.process_time() - started
            match = scoring.match_page(sample.boxes, sample.texts, sample.ignored,
                                       [line.box for line in output.lines], [line.text for line in output.lines])
            scored[name][sample.path.name] = (match, cpu)
    print("| detection input | half | " + " | ".join("%s det F1 / e2e F1 / CPU s" % g for g in GROUPS) + " |")
    print("|---|---|" + "---|" * len(GROUPS))
    for name, _ in configs:
        for h in "ab":
            cells = []
            for pred in GROUPS.values():
                rows = [scored[name][s.path.name] for s in samples if pred(s.source) and half[s.path.name] == h]
                matches = [m for m, _ in rows]
                dets, truths = sum(m.detections for m in matches), sum(m.truths for m in matches)
                det_f1 = scoring.f1(sum(m.true_positives for m in matches), dets, truths)[2]
                e2e_f1 = scoring.f1(sum(m.e2e_hits for m in matches), dets, truths)[2]
                cells.append("%.1f / %.1f / %.0f" % (100 * det_f1, 100 * e2e_f1, sum(c for _, c in rows)))
            print("| %s | %s | %s |" % (name if h == "a" else "", h, " | ".join(cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
