"""Print the engine's text for each image, one JSON object a line: the aarch64 proof runs this
same script under the host's Python (x86_64) and under qemu-aarch64 and compares the outputs.

    python engine_texts.py [--pack P] [--precision X] [--threads N] (line|page|pageline):IMAGE ...

`line:` images are recognised directly (det=False), `page:` images go through detection, and
`pageline:` line crops are read by the recogniser of a page's lines (the pack's `rec_page`).
stdlib + edge_ocr only; the repo must be importable (PYTHONPATH) and its models/ beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import cv2
import numpy as np

from edge_ocr.engine import recognize
from edge_ocr.engine.ocr import EngineOptions, OcrEngine


def page_reader_text(engine: OcrEngine, crop: np.ndarray) -> str:
    model = engine.rec_page or engine.rec
    stage = model.stage
    assert stage.charset is not None
    (decoded,) = recognize.recognize([crop], model.run, stage.charset, stage.height, stage.min_width,
                                     stage.width or stage.height * 64, 1)
    return decoded.text


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pack", default="default")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("images", nargs="+")
    args = parser.parse_args()
    start = time.monotonic()
    engine = OcrEngine(EngineOptions(pack=args.pack, precision=args.precision, threads=args.threads))
    print(json.dumps({"machine": platform.machine(), "load_s": round(time.monotonic() - start, 1)}), flush=True)
    for item in args.images:
        kind, _, path = item.partition(":")
        if kind not in ("line", "page", "pageline"):
            parser.error("expected line:IMAGE, page:IMAGE or pageline:IMAGE, got %r" % item)
        with open(path, "rb") as handle:
            data = handle.read()
        began = time.monotonic()
        if kind == "pageline":
            text = page_reader_text(engine, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
        else:
            text = engine(data, det=kind == "page").text
        seconds = round(time.monotonic() - began, 1)
        print(json.dumps({"image": item, "text": text, "s": seconds}, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
