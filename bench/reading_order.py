"""Dev only: how well the engine's reading order follows the labelled order, rows alone against
columns first (``edge_ocr.engine.layout``), per set and half of eval-dev.

Detects every eval-dev page (``pages/`` and ``zh/pages``) with the pack's detector, and pages made
of two eval-dev pages side by side (receipts, and the Chinese book and report pages: a spread, as a
phone photographs one), paired within each half. Each labelled line is matched to the detected box
that covers at least half of it; the measure is the CER of the matched lines' labels joined in the
engine's order against the same labels joined in the labelled order (the annotators' reading order:
OmniDocBench's is documented, SROIE's is its rows; IC15's words are in no reading order and shown
for the changes only). Boxes come from the detector, not the labels, so the order is judged where
it is made. Each receipt, document page and spread is also turned by ``--angles`` degrees (a photo
a little off square) and detected again: the ``turned`` sets. Each figure has a bootstrap 95 % interval over the pages of its half.

    .venv/bin/python bench/reading_order.py [--cache /tmp/edge-ocr-order.pkl] [--set COLUMN_MIN_WIDTH=8]

``--set`` overrides one of ``layout``'s constants for the run (repeat it), so a threshold is
chosen on half a and confirmed on half b.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import sys
import unicodedata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from halves import halves

from edge_ocr.engine import layout, ocr
from edge_ocr.engine.types import EngineOptions
from edge_ocr.tools.scoring import cer

EVAL_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "eval-dev"
PAIR_GAP = 40  # white pixels between the two pages of a spread


def _pages(root: Path) -> list[dict[str, Any]]:
    pages = []
    for labels in (root / "pages" / "labels.jsonl", root / "zh" / "pages" / "labels.jsonl"):
        for line in labels.read_text(encoding="utf-8").splitlines():
            page = json.loads(line)
            kept = [x for x in page["lines"] if not x.get("ignore")]
            pages.append({"file": page["file"], "source": page["source"], "path": labels.parent / page["file"],
                          "boxes": [np.array(x["box"], np.float32) for x in kept], "texts": [x["text"] for x in kept]})
    return pages


def _kind(source: str) -> str:
    return "sroie" if source.startswith("SROIE") else "ic15" if source.startswith("ICDAR2015") else "zh"


def _detect(engine: ocr.OcrEngine, image: np.ndarray) -> list[np.ndarray]:
    """The detector's boxes in the order they were found (the engine's own order undone)."""
    unordered = layout.reading_order
    layout.reading_order = lambda quads, columns=True: list(range(len(quads)))  # type: ignore[assignment]
    try:
        quads, _ = engine._detect(image, {}, engine.options.det_limit_side)
    finally:
        layout.reading_order = unordered  # type: ignore[assignment]
    return [np.asarray(q, np.float32) for q in quads]


def _spread(a: dict[str, Any], b: dict[str, Any]) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    left, right = cv2.imread(str(a["path"])), cv2.imread(str(b["path"]))
    canvas = np.full((max(left.shape[0], right.shape[0]), left.shape[1] + PAIR_GAP + right.shape[1], 3), 255, np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    shift = left.shape[1] + PAIR_GAP
    canvas[: right.shape[0], shift:] = right
    return canvas, a["boxes"] + [q + np.array([shift, 0], np.float32) for q in b["boxes"]], a["texts"] + b["texts"]


def _turned(image: np.ndarray, boxes: list[np.ndarray], degrees: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """``image`` turned by ``degrees`` (anticlockwise) on a white canvas that holds all of it, and
    its boxes with it."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    size = (int(height * sin + width * cos), int(height * cos + width * sin))
    matrix[:, 2] += (size[0] - width) / 2, (size[1] - height) / 2
    turned = cv2.warpAffine(image, matrix, size, borderValue=(255, 255, 255))
    return turned, [(np.c_[box, np.ones(4)] @ matrix.T).astype(np.float32) for box in boxes]


def collect(root: Path, threads: int, angles: list[float]) -> list[dict[str, Any]]:
    engine = ocr.OcrEngine(EngineOptions(threads=threads))
    pages = _pages(root)
    half = halves({p["file"]: p["source"] for p in pages})
    items = []
    for page in pages:
        image = cv2.imread(str(page["path"]))
        items.append({"set": _kind(page["source"]), "half": half[page["file"]], "file": page["file"],
                      "boxes": page["boxes"], "texts": page["texts"], "quads": _detect(engine, image)})
        if _kind(page["source"]) != "ic15":
            for degrees in angles:
                turned, boxes = _turned(image, page["boxes"], degrees)
                items.append({"set": _kind(page["source"]) + " turned", "half": half[page["file"]],
                              "file": "%s@%+g" % (page["file"], degrees), "boxes": boxes, "texts": page["texts"],
                              "quads": _detect(engine, turned)})
    for side in "ab":
        receipts = [p for p in pages if _kind(p["source"]) == "sroie" and half[p["file"]] == side]
        documents = [p for p in pages if p["source"].startswith("omnidocbench") and half[p["file"]] == side]
        pairs = [("sroie spread", receipts[i], receipts[i + 1]) for i in range(0, len(receipts) - 1, 2)]
        # every ordered pair of the half's documents, or a document beside itself if it is alone
        pairs += [("zh spread", x, y) for x in documents for y in documents if x is not y or len(documents) == 1]
        for name, a, b in pairs:
            image, boxes, texts = _spread(a, b)
            items.append({"set": name, "half": side, "file": a["file"] + "+" + b["file"], "boxes": boxes,
                          "texts": texts, "quads": _detect(engine, image)})
            for degrees in angles:
                turned, moved = _turned(image, boxes, degrees)
                items.append({"set": name + " turned", "half": side, "file": "%s+%s@%+g" % (a["file"], b["file"], degrees),
                              "boxes": moved, "texts": texts, "quads": _detect(engine, turned)})
    return items


def _rect(quad: np.ndarray) -> tuple[float, float, float, float]:
    return float(quad[:, 0].min()), float(quad[:, 1].min()), float(quad[:, 0].max()), float(quad[:, 1].max())


def _matches(quads: list[np.ndarray], boxes: list[np.ndarray]) -> list[int | None]:
    """For each labelled box, the detected box covering most of it (at least half), if any."""
    rects = [_rect(q) for q in quads]
    found: list[int | None] = []
    for box in boxes:
        x0, y0, x1, y1 = _rect(box)
        area, best, chosen = max((x1 - x0) * (y1 - y0), 1e-6), 0.5, None
        for index, (u0, v0, u1, v1) in enumerate(rects):
            cover = max(0.0, min(u1, x1) - max(u0, x0)) * max(0.0, min(v1, y1) - max(v0, y0)) / area
            if cover > best:
                best, chosen = cover, index
        found.append(chosen)
    return found


def _normal(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).upper().split())


def order_cer(item: dict[str, Any], columns: bool) -> float | None:
    position = {line: rank for rank, line in enumerate(layout.reading_order(item["quads"], columns=columns))}
    matched = sorted((position[d], label) for label, d in enumerate(_matches(item["quads"], item["boxes"]))
                     if d is not None)
    if len(matched) < 2:
        return None
    engine_order = [label for _, label in matched]
    texts = item["texts"]
    return cer(_normal("".join(texts[i] for i in sorted(engine_order))), _normal("".join(texts[i] for i in engine_order)))


def _interval(values: list[float], reps: int = 1000) -> tuple[float, float]:
    rng = random.Random(0)
    means = sorted(sum(rng.choice(values) for _ in values) / len(values) for _ in range(reps))
    return means[int(0.025 * reps)], means[int(0.975 * reps) - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-dev", type=Path, default=EVAL_DEV)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge-ocr-order.pkl"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--angles", default="-3,3", help="degrees each page is also turned by (comma-separated)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a constant of edge_ocr.engine.layout for this run")
    args = parser.parse_args(argv)
    for assignment in args.set:
        name, _, value = assignment.partition("=")
        setattr(layout, name, type(getattr(layout, name))(value))
    if args.cache.is_file():
        items = pickle.loads(args.cache.read_bytes())
    else:
        items = collect(args.eval_dev, args.threads, [float(a) for a in args.angles.split(",") if a])
        args.cache.write_bytes(pickle.dumps(items))
    print("| set | half | pages | order CER %, rows | columns first | change [95 %] | pages changed |")
    print("|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for item in items:
        rows, columns = order_cer(item, False), order_cer(item, True)
        if rows is not None and columns is not None:
            groups.setdefault((item["set"], item["half"]), []).append((rows, columns))
    for (name, side), pairs in sorted(groups.items()):
        change = [c - r for r, c in pairs]
        low, high = _interval(change)
        print("| %s | %s | %d | %.1f | %.1f | %+.1f [%+.1f, %+.1f] | %d |" % (
            name, side, len(pairs), 100 * np.mean([r for r, _ in pairs]), 100 * np.mean([c for _, c in pairs]),
            100 * np.mean(change), 100 * low, 100 * high, sum(abs(x) > 1e-9 for x in change)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
