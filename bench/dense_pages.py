"""Dev only: dense Chinese pages built from eval-dev's, to measure small text on a big image.

eval-dev's Chinese document pages hold 35-123 lines; a newspaper page or a two-page spread
scanned at 300 dpi holds several hundred at the same text size. Each mosaic here puts four
document pages (the book page and the two research reports) in a 2x2 grid at their own
resolution: four times the lines, text as large in pixels as on the pages, the image twice as
large each way. Written outside the repository (the data is for measuring only), with a
pages manifest the yardstick and ``edge-ocr eval`` read:

    .venv/bin/python bench/dense_pages.py /tmp/dense
    python3 ../shared/yardstick/bench.py run --task pages --manifest /tmp/dense/labels.jsonl ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"
DOCUMENTS = ("zhpage_8c1a908c02f6.jpg", "zhpage_c600fccdb4e4.jpg", "zhpage_8da5496bf574.jpg")
# Which document fills each cell (top left, top right, bottom left, bottom right) of each mosaic.
LAYOUTS = ((0, 1, 2, 1), (1, 2, 0, 2), (2, 0, 1, 0), (1, 1, 2, 2))


def mosaic(rows: list[dict], base: Path, cell: tuple[int, int] | None = None) -> tuple[np.ndarray, list[dict]]:
    """Four pages (``rows`` of a pages manifest, images in ``base``) in a 2x2 grid, and their
    labels moved with them. Cells are ``cell`` (width, height), by default as large as the largest
    of the four pages; white around smaller ones."""
    images = [cv2.imread(str(base / r["file"])) for r in rows]
    cell_w, cell_h = cell or (max(i.shape[1] for i in images), max(i.shape[0] for i in images))
    canvas = np.full((2 * cell_h, 2 * cell_w, 3), 255, np.uint8)
    truth = []
    for cell, (image, row) in enumerate(zip(images, rows)):
        dx, dy = (cell % 2) * cell_w, (cell // 2) * cell_h
        canvas[dy:dy + image.shape[0], dx:dx + image.shape[1]] = image
        truth += [dict(t, box=[[x + dx, y + dy] for x, y in t["box"]]) for t in row["lines"]]
    return canvas, truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a directory outside the repository")
    args = parser.parse_args(argv)
    source = EVAL_DEV / "zh" / "pages"
    rows = {row["file"]: row for row in map(json.loads, (source / "labels.jsonl").read_text().splitlines()) if row}
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = [cv2.imread(str(source / name)).shape[:2] for name in DOCUMENTS]
    cell = (max(w for _, w in sizes), max(h for h, _ in sizes))  # one size for every mosaic
    manifest = []
    for number, layout in enumerate(LAYOUTS):
        canvas, lines = mosaic([rows[DOCUMENTS[d]] for d in layout], source, cell)
        name = "zhdense_%d.jpg" % number
        cv2.imwrite(str(args.out / name), canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])
        height, width = canvas.shape[:2]
        manifest.append(dict(rows[DOCUMENTS[layout[0]]], file=name, orig_size=[width, height], lines=lines,
                             source="mosaic"))
        print("%s %dx%d, %d lines" % (name, width, height, len(lines)))
    (args.out / "labels.jsonl").write_text("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in manifest),
                                           encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
