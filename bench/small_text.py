"""Dev only: choose ``engine.det_small_text`` per half of eval-dev, on real pages and on mosaics.

The second detection pass for small text (README, How the engine works) fires on no single eval-dev
page at a low bound, so it is judged on two kinds of image per half (``bench/halves.py``):

- the real pages (``pages/`` and ``zh/pages``): what the bound costs where it should not matter;
- 2x2 mosaics built from that half's pages: four receipts on one scan (as on a flatbed), and
  each Chinese document page of more than 20 lines four times. Text keeps its size in pixels,
  the image doubles each way, so at 960 px the lines are half as high.

Prints end-to-end F1 per source and half, the pages the pass fired on, and the total time.

    .venv/bin/python bench/small_text.py 9 12 14 [--min-boxes 20,100]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dense_pages import mosaic
from halves import halves

from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.tools import scoring
from edge_ocr.tools.evaluate import load_pages, source_name

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"
MANIFESTS = (EVAL_DEV / "pages" / "labels.jsonl", EVAL_DEV / "zh" / "pages" / "labels.jsonl")
GROUPS = {"SROIE": lambda s: s.startswith("SROIE"), "IC15": lambda s: s.startswith("ICDAR"),
          "zh": lambda s: not s.startswith(("SROIE", "ICDAR"))}
Mosaic = tuple[str, np.ndarray, list[dict]]


def mosaics(rows: list[dict], half: dict[str, str]) -> dict[str, list[Mosaic]]:
    out: dict[str, list[Mosaic]] = {"a": [], "b": []}
    for h in "ab":
        receipts = [r for r in rows if r["file"].startswith("sroie") and half[r["file"]] == h]
        for k in range(0, len(receipts) - 3, 4):
            out[h].append(("en receipts x4", *mosaic(receipts[k:k + 4], EVAL_DEV / "pages")))
        for row in rows:
            if row["file"].startswith("zhpage") and half[row["file"]] == h and len(row["lines"]) > 20:
                out[h].append(("zh page x4", *mosaic([row] * 4, EVAL_DEV / "zh" / "pages")))
    return out


def f1(matches: list[scoring.PageMatch]) -> float:
    return 100 * scoring.f1(sum(m.e2e_hits for m in matches), sum(m.detections for m in matches),
                            sum(m.truths for m in matches))[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bounds", nargs="+", type=float, help="det_small_text values (px)")
    parser.add_argument("--min-boxes", type=lambda text: [int(v) for v in text.split(",")],
                        default=[EngineOptions.det_small_text_min_boxes],
                        help="comma-separated values of EngineOptions.det_small_text_min_boxes to try with each bound")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for m in MANIFESTS for line in m.read_text(encoding="utf-8").splitlines() if line.strip()]
    half = halves({r["file"]: source_name(r.get("source", "all")) for r in rows})
    samples = [s for m in MANIFESTS for s in load_pages(m)]
    built = mosaics(rows, half)
    for bound, min_boxes in itertools.product(args.bounds, args.min_boxes):
        engine = OcrEngine(EngineOptions(threads=2, det_small_text=bound, det_small_text_min_boxes=min_boxes))
        real, fired, start = {}, [], time.perf_counter()
        for sample in samples:
            output = engine(sample.path.read_bytes())
            fired += [sample.path.name] if "detect_small_text" in output.timing_ms else []
            real[sample.path.name] = scoring.match_page(sample.boxes, sample.texts, sample.ignored,
                                                        [ln.box for ln in output.lines], [ln.text for ln in output.lines])
        seconds = time.perf_counter() - start
        cells = []
        for h in "ab":
            cells += ["%s %s %.1f" % (group, h, f1([real[s.path.name] for s in samples
                                                    if in_group(s.source) and half[s.path.name] == h]))
                      for group, in_group in GROUPS.items()]
            for kind in ("en receipts x4", "zh page x4"):
                matches, passes = [], 0
                for name, image, truth in built[h]:
                    if name != kind:
                        continue
                    output = engine(image)
                    passes += "detect_small_text" in output.timing_ms
                    matches.append(scoring.match_page(
                        [np.asarray(t["box"], np.float32) for t in truth], [t["text"] for t in truth],
                        [bool(t.get("ignore")) or t["text"] == "###" for t in truth],
                        [ln.box for ln in output.lines], [ln.text for ln in output.lines]))
                cells.append("%s %s %.1f (%d/%d passes)" % (kind, h, f1(matches), passes, len(matches)))
        print("det_small_text %g, min boxes %d: %s | real pages with a second pass: %s | real pages %.1f s"
              % (bound, min_boxes, " | ".join(cells), ", ".join("%s (%s)" % (n, half[n]) for n in sorted(fired)) or "none",
                 seconds), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
