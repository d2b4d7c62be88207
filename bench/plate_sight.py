"""Dev only: choose how much plate colour sends a single line to the plate specialist first.

``EngineOptions.plate_sight_share``: a single line or region shaped like a licence plate with at
least that share of its pixels in a plate's background colour is read by the plate specialist
(PP-OCRv4) first, and that reading kept when it is a whole registration number
(``recognize.plate_in_sight``, ``recognize.is_plate_number``); before, every plate was read by the
page reader and then by the specialist.

Every eval-dev line crop (``lines/`` and ``zh/lines``) is read once by the engine with the rule
off and once by the specialist alone, each timed, in one process (2 threads). For each candidate
share the rule is then replayed per crop: a crop in sight costs the specialist's reading, plus the
usual reading where the specialist's is not a whole number. (The specialist's time leaves out the
decode and the colour share, well under a millisecond; bench/paired.py times the engine itself.) The share is chosen on half a
(``bench/halves.py``: split by source image) as the least time whose scores are no worse on any
source, and confirmed on half b, with a bootstrap 95 % interval of the per-crop time ratio.

    .venv/bin/python bench/plate_sight.py [--shares 0.1,0.2,0.25,0.3,0.4,0.5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from halves import halves

from edge_ocr.engine import recognize
from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.engine.preprocess import plate_colour_share
from edge_ocr.tools import scoring

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"
PLATES = "LPRNet_Pytorch-test-plates"


def read_all(threads: int) -> list[dict[str, Any]]:
    """Each crop's reading and time with the rule off, and the specialist's alone."""
    engine = OcrEngine(EngineOptions(threads=threads, plate_sight_share=0))
    specialist = engine._specialist()
    rows = []
    for folder in ("lines", "zh/lines"):
        for record in (EVAL_DEV / folder / "labels.tsv").read_text(encoding="utf-8").splitlines():
            file, label, _, source = record.split("\t")[:4]
            data = (EVAL_DEV / folder / file).read_bytes()
            crop = cv2.imread(str(EVAL_DEV / folder / file))
            rows.append({"file": file, "label": label, "source": source.split("(")[0], "data": data, "crop": crop,
                         "share": plate_colour_share(crop), "aspect": crop.shape[1] / max(crop.shape[0], 1)})
    for row in rows[:5]:  # warm-up: every session made
        engine(row["data"], det=False)
        engine._recognize(specialist, [row["crop"]], [])
    for index, row in enumerate(rows):
        # alternating order, so the machine's drift falls on both alike
        for step in ("usual", "specialist") if index % 2 else ("specialist", "usual"):
            start = time.perf_counter()
            if step == "usual":
                row["usual"] = " ".join(line.text for line in engine(row["data"], det=False).lines)
            else:
                text = engine._recognize(specialist, [row["crop"]], [])[0].text
                row["specialist"] = recognize.plate_number(text) if recognize.is_plate_number(text) else None
            row[step + "_ms"] = (time.perf_counter() - start) * 1000
    return rows


def replay(row: dict[str, Any], share: float) -> tuple[str, float]:
    """The text and time of one crop with the rule at ``share`` (0 = off)."""
    low, high = recognize.PLATE_ASPECT
    in_sight = share > 0 and low <= row["aspect"] <= high and row["share"] >= share
    if not in_sight:
        return row["usual"], row["usual_ms"]
    if row["specialist"] is not None:
        return row["specialist"], row["specialist_ms"]
    return row["usual"], row["specialist_ms"] + row["usual_ms"]


def interval(ratios: list[float], draws: int = 2000) -> tuple[float, float]:
    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws)]


def scores(rows: list[dict[str, Any]], share: float) -> dict[str, tuple[float, float]]:
    """Per source: alnum accuracy and relaxed exact match (NFKC, no white space), in %."""
    by_source: dict[str, list[tuple[bool, bool]]] = {}
    for row in rows:
        text, _ = replay(row, share)
        by_source.setdefault(row["source"], []).append(
            (scoring.alnum(text) == scoring.alnum(row["label"]), scoring.relaxed(text) == scoring.relaxed(row["label"])))
    return {source: (100 * sum(a for a, _ in marks) / len(marks), 100 * sum(e for _, e in marks) / len(marks))
            for source, marks in sorted(by_source.items())}


def summary(rows: list[dict[str, Any]], share: float) -> dict[str, Any]:
    times = sorted(replay(row, share)[1] for row in rows)
    base = [row["usual_ms"] for row in rows]
    ratios = [replay(row, share)[1] / b for row, b in zip(rows, base)]
    return {"total": sum(times) / sum(base), "interval": interval(ratios), "p50": scoring.percentile(times, 50),
            "p95": scoring.percentile(times, 95), "in_sight": sum(replay(row, share)[1] != row["usual_ms"] for row in rows),
            "scores": scores(rows, share)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shares", default="0.1,0.15,0.2,0.25,0.3,0.4,0.5")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    candidates = [float(s) for s in args.shares.split(",")]
    rows = read_all(args.threads)
    half = halves({row["file"]: row["source"] for row in rows})
    by_half = {name: [row for row in rows if half[row["file"]] == name] for name in "ab"}
    results = {name: {share: summary(part, share) for share in [0.0, *candidates]} for name, part in by_half.items()}
    sources = sorted({row["source"] for row in rows})
    print("| share | half | crops in sight | time vs off (mean of per-crop ratios, 95 %%) | total | p50 / p95 ms | %s |"
          % " | ".join("%s alnum / relaxed exact" % s for s in sources))
    print("|---|---|---|---|---|---|%s" % ("---|" * len(sources)))
    for share in [0.0, *candidates]:
        for name in "ab":
            r = results[name][share]
            cells = " | ".join("%.1f / %.1f" % r["scores"][s] if s in r["scores"] else "" for s in sources)
            print("| %s | %s | %d | %.3f [%.3f, %.3f] | %.3f | %.1f / %.1f | %s |"
                  % (share or "off", name, r["in_sight"], statistics.fmean(
                      [replay(row, share)[1] / row["usual_ms"] for row in by_half[name]]),
                     *r["interval"], r["total"], r["p50"], r["p95"], cells))
    off = results["a"][0.0]["scores"]

    def no_worse(scores: dict[str, tuple[float, float]], reference: dict[str, tuple[float, float]]) -> bool:
        return all(a >= ra and e >= re for k, (ra, re) in reference.items() for a, e in [scores[k]])

    fair = [s for s in candidates if no_worse(results["a"][s]["scores"], off)]
    if not fair:
        print("no share keeps every source's scores on half a")
        return 1
    chosen = min(fair, key=lambda s: results["a"][s]["total"])
    b, b_off = results["b"][chosen], results["b"][0.0]
    worse = [k for k in b_off["scores"] if not no_worse({k: b["scores"][k]}, {k: b_off["scores"][k]})]
    print("chosen on half a: %s (total time %.3f of off); half b: total %.3f, per-crop %.3f [%.3f, %.3f], %s"
          % (chosen, results["a"][chosen]["total"], b["total"], statistics.fmean(
              [replay(row, chosen)[1] / row["usual_ms"] for row in by_half["b"]]), *b["interval"],
             "scores no worse on any source" if not worse else "worse on " + ", ".join(worse)))
    for name in "ab":
        changed = [(scoring.alnum(replay(row, chosen)[0]) == scoring.alnum(row["label"]))
                   - (scoring.alnum(row["usual"]) == scoring.alnum(row["label"]))
                   for row in by_half[name] if row["source"] == PLATES]
        low, high = interval([100.0 * c for c in changed])
        print("half %s, plates: alnum %+.1f [%+.1f, %+.1f] (%d gained, %d lost of %d)"
              % (name, 100 * statistics.fmean(changed), low, high, changed.count(1), changed.count(-1), len(changed)))
    misread = [row for row in rows if row["specialist"] is not None
               and row["source"] != PLATES]
    print("crops of other sources the specialist read as a whole plate number: %d" % len(misread))
    return 0


if __name__ == "__main__":
    sys.exit(main())
