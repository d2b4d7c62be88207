"""Dev only: the page reader with ONNX Runtime's tanh approximation of its GELUs, against as shipped.

ONNX Runtime turns each fused ``Gelu`` into ``FastGelu`` when a session is made with
``optimization.enable_gelu_approximation`` (1.7x faster per op here; the detector's GELUs are not
fused, so only the recognisers have any). This gives two engines that differ only there: the
second one's page reader sessions (``rec_page``, ``page_lines``, ``rec_page_narrow``) are made again
with the approximation. Both read every eval-dev page and line crop; printed: how many texts differ,
e2e F1 / page CER and alnum / CER per source and half (``bench/halves.py``), and the page reader's own
time per line with and without, timed in turn on the pages' lines.

    .venv/bin/python bench/fast_gelu.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from halves import halves

from edge_ocr.engine import preprocess, recognize
from edge_ocr.engine.models import Model
from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.tools.scoring import alnum, cer, f1, match_page, relaxed

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"
APPROXIMATED = ("rec_page", "page_lines", "rec_page_narrow")


def approximated(model: Model) -> ort.InferenceSession:
    """A session of ``model``'s file with the engine's options for it, and the GELU approximation on."""
    options = model.session.get_session_options()
    options.add_session_config_entry("optimization.enable_gelu_approximation", "1")
    return ort.InferenceSession(str(model.variant.path), options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    shipped = OcrEngine(EngineOptions(threads=args.threads))
    fast = OcrEngine(EngineOptions(threads=args.threads))
    for role, model in fast.models().items():
        if role in APPROXIMATED:
            model._session = approximated(model)  # dev only: the same Model, another session
    engines = {"shipped": shipped, "tanh GELU": fast}

    pages = [(EVAL_DEV / folder / row["file"], row) for folder in ("pages", "zh/pages")
             for row in map(json.loads, (EVAL_DEV / folder / "labels.jsonl").read_text(encoding="utf-8").splitlines())]
    page_half = halves({row["file"]: row["file"].split("_")[0] for _, row in pages})
    matches: dict[str, dict[str, Any]] = {name: {} for name in engines}
    crops: list[np.ndarray] = []
    differ = 0
    for path, row in pages:
        image = cv2.imread(str(path))
        texts = []
        for name, engine in engines.items():
            output = engine(image)
            texts.append(output.text)
            truth = row["lines"]
            matches[name][row["file"]] = match_page(
                [np.asarray(t["box"], float) for t in truth], [t["text"] for t in truth],
                [t.get("ignore", False) for t in truth], [line.box for line in output.lines],
                [line.text for line in output.lines])
            if name == "shipped":
                crops += [preprocess.crop_quad(image, np.asarray(line.box, np.float32)) for line in output.lines]
        differ += texts[0] != texts[1]
    print("pages: %d of %d read to another text" % (differ, len(pages)))
    for source in ("sroie", "ic15", "zhpage"):
        for part in "ab":
            files = [r["file"] for _, r in pages if r["file"].startswith(source) and page_half[r["file"]] == part]
            cells = []
            for name in engines:
                m = [matches[name][f] for f in files]
                e2e = 100 * f1(sum(x.e2e_hits for x in m), sum(x.detections for x in m), sum(x.truths for x in m))[2]
                page_cer = 100 * statistics.fmean(x.page_edits / max(x.page_length, 1) for x in m)
                cells.append("%s e2e F1 %.2f, page CER %.2f" % (name, e2e, page_cer))
            print("  %-6s %s (%d): %s" % (source, part, len(files), "; ".join(cells)))

    rows = [(EVAL_DEV / folder / r[0], r[0], r[1], r[3].split("(")[0]) for folder in ("lines", "zh/lines")
            for r in (x.split("\t") for x in (EVAL_DEV / folder / "labels.tsv").read_text(encoding="utf-8").splitlines())]
    line_half = halves({file: source for _, file, _, source in rows})
    read = {name: {file: engine(cv2.imread(str(path)), det=False).text for path, file, _, _ in rows}
            for name, engine in engines.items()}
    print("line crops: %d of %d read to another text" % (sum(read["shipped"][f] != read["tanh GELU"][f] for _, f, _, _ in rows), len(rows)))
    for source in sorted({s for *_, s in rows}):
        for part in "ab":
            group = [(f, label) for _, f, label, s in rows if s == source and line_half[f] == part]
            if group:
                print("  %-28s %s (%d): %s" % (source[:28], part, len(group), "; ".join(
                    "%s alnum %.1f, CER %.2f" % (name, 100 * statistics.fmean(alnum(read[name][f]) == alnum(t) for f, t in group),
                                                100 * statistics.fmean(cer(relaxed(t), relaxed(read[name][f])) for f, t in group))
                    for name in engines)))

    # The page reader alone on the pages' lines, each line read by both in turn.
    times: dict[str, list[float]] = {name: [] for name in engines}
    for index, crop in enumerate(crops):
        order = list(engines) if index % 2 else list(reversed(engines))
        for name in order:
            model = engines[name].page_lines
            stage = model.stage
            assert stage.charset is not None
            start = time.perf_counter()
            recognize.recognize([crop], model.run, stage.charset, stage.height, 96, stage.width or stage.height * 64, 1)
            times[name].append(time.perf_counter() - start)
    ratios = [b / a for a, b in zip(times["shipped"], times["tanh GELU"])]
    print("page reader on %d page lines, %d thread(s) per line: time with / without %.3f (median per line), %.3f in total"
          % (len(crops), engines["shipped"].page_lines.session.get_session_options().intra_op_num_threads,
             statistics.median(ratios), sum(times["tanh GELU"]) / sum(times["shipped"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
