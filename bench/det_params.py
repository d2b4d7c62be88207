"""Dev only: the detector's DB post-processing thresholds at our input size, per half of eval-dev pages.

The pack's detector ships with the thresholds it was published with (thresh 0.2, box_thresh 0.45,
unclip_ratio 1.4), chosen by its authors for inputs whose shorter side is at least 736 px; the
engine detects at a longer side of 960 px, where words are closer together in the probability map.
On SROIE, most receipt lines the peers find and we miss are two ground-truth boxes merged into one
("COUNTER:" + "7290") or boxes grown past IoU 0.5 around short items ("2", "RM").

Step 1 runs the detector once per page (``pages/`` and ``zh/pages``), keeps the probability maps,
and replays the post-processing for every candidate: detection F1 per source group and half
(``bench/halves.py``). Step 2 reads the pages end to end with the engine for the candidates given
with ``--e2e`` (and the published thresholds) and prints detection and end-to-end F1 per half.

    .venv/bin/python bench/det_params.py [--e2e 0.3:0.45:1.4,0.3:0.45:1.6]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from halves import halves

from edge_ocr.engine import detect, preprocess
from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.engine.types import DbParams, Transform
from edge_ocr.tools import scoring
from edge_ocr.tools.evaluate import PageSample, load_pages

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"
GROUPS = {"SROIE": lambda s: s.startswith("SROIE"), "IC15": lambda s: s.startswith("ICDAR"),
          "zh": lambda s: not s.startswith(("SROIE", "ICDAR"))}
THRESH = (0.2, 0.25, 0.3, 0.35, 0.4)
BOX_THRESH = (0.45, 0.55)
UNCLIP = (1.3, 1.4, 1.5, 1.6)


def parse_params(text: str, base: DbParams) -> DbParams:
    """``base`` with ``thresh:box_thresh:unclip_ratio[:crop_unclip]``, e.g. ``0.3:0.45:1.5``."""
    thresh, box_thresh, unclip = (float(v) for v in text.split(":")[:3])
    return replace(base, thresh=thresh, box_thresh=box_thresh, unclip_ratio=unclip)


def probability_map(engine: OcrEngine, image: np.ndarray) -> tuple[np.ndarray, Transform]:
    """The detector's map of ``image`` at the engine's input size, and the way back to the image."""
    assert engine.det is not None
    stage = engine.det.stage
    resized, transform = preprocess.resize_for_detection(image, engine.options.det_limit_side, stage.multiple)
    return engine.det.run(preprocess.normalize(resized, stage.mean, stage.std)[None])[0, 0], transform


def label(params: DbParams) -> str:
    return "%g / %g / %g" % (params.thresh, params.box_thresh, params.unclip_ratio)


def table(rows: dict[str, dict[str, scoring.PageMatch]], samples: list[PageSample], half: dict[str, str],
          e2e: bool) -> None:
    """One line per candidate and half: detection F1 (and end-to-end F1) per source group."""
    what = "det F1 / e2e F1" if e2e else "det F1"
    print("| thresh / box_thresh / unclip | half | %s |" % " | ".join("%s %s" % (g, what) for g in GROUPS))
    print("|---|---|" + "---|" * len(GROUPS))
    for name, matches in rows.items():
        for h in "ab":
            cells = []
            for in_group in GROUPS.values():
                group = [matches[s.path.name] for s in samples if in_group(s.source) and half[s.path.name] == h]
                dets, truths = sum(m.detections for m in group), sum(m.truths for m in group)
                det_f1 = 100 * scoring.f1(sum(m.true_positives for m in group), dets, truths)[2]
                e2e_f1 = 100 * scoring.f1(sum(m.e2e_hits for m in group), dets, truths)[2]
                cells.append("%.1f / %.1f" % (det_f1, e2e_f1) if e2e else "%.1f" % det_f1)
            print("| %s | %s | %s |" % (name if h == "a" else "", h, " | ".join(cells)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--e2e", default="", help="candidates read end to end: thresh:box_thresh:unclip,...")
    parser.add_argument("--no-grid", action="store_true", help="skip step 1")
    args = parser.parse_args(argv)
    samples = [s for m in (EVAL_DEV / "pages" / "labels.jsonl", EVAL_DEV / "zh" / "pages" / "labels.jsonl")
               for s in load_pages(m)]
    half = halves({s.path.name: s.source for s in samples})
    engine = OcrEngine(EngineOptions(threads=2))
    published = engine.db_params
    maps = {sample.path.name: probability_map(engine, preprocess.decode_image(sample.path.read_bytes(), 100.0))
            for sample in ([] if args.no_grid else samples)}
    candidates = [] if args.no_grid else [replace(published, thresh=t, box_thresh=b, unclip_ratio=u)
                                          for t, b, u in itertools.product(THRESH, BOX_THRESH, UNCLIP)]
    rows: dict[str, dict[str, scoring.PageMatch]] = {}
    for params in candidates:
        matches = {}
        for sample in samples:
            prob, transform = maps[sample.path.name]
            quads, _ = detect.boxes_from_map(prob, params)
            boxes = [transform.to_source(q) for q in quads]
            matches[sample.path.name] = scoring.match_page(sample.boxes, sample.texts, sample.ignored, boxes,
                                                           [""] * len(boxes))
        rows[label(params) + (" (published)" if params == published else "")] = matches
    if rows:
        print("Step 1: detection F1 of each post-processing candidate (one detector run per page)\n")
        table(rows, samples, half, e2e=False)

    chosen = [(published, None)] + [(parse_params(t, published), crop_unclip(t)) for t in args.e2e.split(",") if t]
    e2e_rows: dict[str, dict[str, scoring.PageMatch]] = {}
    for params, crop_ratio in chosen:
        reader = OcrEngine(EngineOptions(threads=2, det=params))
        matches = {}
        for sample in samples:
            boxes, texts = read_page(reader, sample.path.read_bytes(), crop_ratio)
            matches[sample.path.name] = scoring.match_page(sample.boxes, sample.texts, sample.ignored, boxes, texts)
        name = label(params) + (" (published)" if params == published else "")
        e2e_rows[name + (", crops grown at %g" % crop_ratio if crop_ratio else "")] = matches
    print("\nStep 2: end to end, the whole engine\n")
    table(e2e_rows, samples, half, e2e=True)
    return 0


def crop_unclip(text: str) -> float | None:
    """The optional 4th field of a candidate: the unclip ratio of the recogniser's crops."""
    fields = text.split(":")
    return float(fields[3]) if len(fields) > 3 else None


def read_page(engine: OcrEngine, data: bytes, crop_ratio: float | None) -> tuple[list, list[str]]:
    """(boxes, texts) of one page as the engine reads it; with ``crop_ratio`` the boxes are the
    detector's and each line is read from its box grown as unclip ``crop_ratio`` would have."""
    if crop_ratio is None:
        output = engine(data)
        return [ln.box for ln in output.lines], [ln.text for ln in output.lines]
    image = preprocess.decode_image(data, 100.0)
    prob, transform = probability_map(engine, image)
    tight, _ = detect.boxes_from_map(prob, engine.db_params)
    grown, _ = detect.boxes_from_map(prob, replace(engine.db_params, unclip_ratio=crop_ratio))
    if len(tight) != len(grown):  # a box dropped by the size filter at one ratio only: skip the page's pairing
        grown = tight
    boxes = [transform.to_source(q) for q in tight]
    crops = [preprocess.crop_quad(image, transform.to_source(q)) for q in grown]
    decoded = engine._read(crops, [], detected=True)
    kept = [(b, d.text) for b, d in zip(boxes, decoded) if d.text.strip() and d.score >= engine.options.min_line_score]
    return [b for b, _ in kept], [t for _, t in kept]


if __name__ == "__main__":
    sys.exit(main())
