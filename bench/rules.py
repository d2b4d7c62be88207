"""Dev only: choose the engine's line rules on half a of eval-dev and confirm them on half b.

Reads every eval-dev line crop (``lines/`` and ``zh/lines``) once with each recogniser of the
default pack (PP-OCRv6 tiny, PP-OCRv6 small in its dynamic and static int8 variants, PP-OCRv4), caches the readings, then replays the
engine's own rule functions (``edge_ocr.engine.recognize``) over them for each candidate
setting, per half (``bench/halves.py``: split by source image) and per source:

* routing: which lines PP-OCRv4 reads (``needs_specialist`` and ``take_specialist``; ``all``
  is the old rule, any line with Chinese sensed; ``none`` never);
* ``specialist_mass``: Chinese mass in an accurate reading that counts as Chinese sensed;
* ``draft_min_width``: single lines up to this width skip the draft;
* ``confirm_below`` and ``confirm_chinese_mass``: which single lines the static int8 page
  reader's reading is confirmed by the dynamic int8 recogniser.

Cost is the recogniser work per line relative to reading it once with PP-OCRv6 small
(PP-OCRv6 tiny measured at a fifth per column); p50 and p95 over the half's lines.

    .venv/bin/python bench/rules.py [--cache /tmp/edge-ocr-rules.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from halves import halves

from edge_ocr.engine import recognize
from edge_ocr.engine.decode import Decoded
from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.tools import scoring

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"
READERS = ("rec_fast", "rec", "rec_zh", "rec_page")
STATIC_COST = 0.7  # the static int8 page reader per column, relative to the dynamic int8 one (7.0 vs 9.8 ms)
TINY_COST = 1 / 4.5  # PP-OCRv6 tiny per column, relative to PP-OCRv6 small (bench: 2.9 vs 13.1 ms)


def read_all(cache: Path) -> list[dict[str, Any]]:
    """Every crop's reading by each of ``READERS``; a cache missing a reader is completed."""
    cached = {r["file"]: r for r in json.loads(cache.read_text(encoding="utf-8"))} if cache.is_file() else {}
    if cached and all(name in r for r in cached.values() for name in READERS):
        return list(cached.values())
    engine = OcrEngine(EngineOptions(threads=2))
    models = {"rec_fast": engine.rec_fast, "rec": engine.rec, "rec_zh": engine._specialist(), "rec_page": engine.rec_page}
    rows = []
    for folder in ("lines", "zh/lines"):
        for record in (EVAL_DEV / folder / "labels.tsv").read_text(encoding="utf-8").splitlines():
            file, label, _, source = record.split("\t")[:4]
            crop = cv2.imread(str(EVAL_DEV / folder / file))
            row: dict[str, Any] = cached.get(file) or {"file": file, "label": label, "source": source.split("(")[0],
                                                       "width": recognize.line_width(crop, engine.rec.stage.height)}
            for name in READERS:
                if name in row:
                    continue
                model = models[name]
                assert model is not None
                stage = model.stage
                (decoded,) = recognize.recognize([crop], model.run, stage.charset, stage.height, stage.min_width,
                                                 stage.width or stage.height * 64, 1)
                row[name] = [decoded.text, decoded.score, decoded.cjk_mass]
            rows.append(row)
    cache.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return rows


def replay(row: dict[str, Any], routing: str, draft_min_width: float, specialist_mass: float = 0.005,
           recheck_below: float = 0.95, draft_mass: float = 0.05, confirm: tuple[float, float] | None = (0.9, 0.01),
           chinese_drafts: tuple[str, float] | None = None) -> tuple[str, float]:
    """(text, cost) of one single-line read under the given rules, as OcrEngine._read does it.

    ``confirm``: (confirm_below, confirm_chinese_mass) when lines are read by the static int8 page
    reader and confirmed by the dynamic int8 one (``recognize.needs_confirmation``); None reads
    them with the dynamic one alone (the engine before the page reader read single lines).
    ``chinese_drafts``: (reader, mass): a draft with that much Chinese sensed is re-read however
    confident, by the page reader ("static", then confirmed as any accurate reading) or by the
    dynamic int8 one ("dynamic", final).
    """
    tiny, small, v4, static = (Decoded(*row[name]) for name in READERS)
    width = max(row["width"], 160) / 160  # PP-OCRv6 small pads to 160 px
    first, first_cost = (small, 1.0) if confirm is None else (static, STATIC_COST)
    if row["width"] <= draft_min_width:
        draft = reading = first
        cost = width * first_cost
    else:
        draft, cost = tiny, width * TINY_COST
        if chinese_drafts is not None and chinese_drafts[0] == "page rule":
            # As on a Chinese page: a draft with hanzi is kept only when needs_page_recheck passes it.
            flagged = recognize.has_cjk(tiny.text) and recognize.needs_page_recheck([tiny], recheck_below)
            reading = first if flagged or recognize.needs_recheck([tiny], recheck_below) else tiny
        elif chinese_drafts is not None and recognize.maybe_chinese(tiny, chinese_drafts[1]):
            if chinese_drafts[0] == "dynamic":
                return small.text, cost + width
            reading = first
        else:
            reading = first if recognize.needs_recheck([tiny], recheck_below) else tiny
        cost += width * first_cost if reading is first else 0.0
    accurate = reading is first
    reading_mass = specialist_mass if accurate else draft_mass

    def sensed() -> bool:
        return recognize.maybe_chinese(draft, draft_mass) or recognize.maybe_chinese(reading, reading_mass)

    if routing == "all" and (recognize.maybe_chinese(draft, draft_mass) or recognize.maybe_chinese(reading, draft_mass)):
        return v4.text, cost + width
    plate = routing == "plate" and recognize.needs_specialist([reading], [sensed()])
    if plate:
        cost += width
        if recognize.take_specialist(reading, v4) is v4:
            return v4.text, cost
    if accurate and confirm is not None and recognize.needs_confirmation([reading], *confirm):
        reading = recognize.confirmed(reading, small, confirm[1])
        cost += width
        if not plate and routing == "plate" and recognize.needs_specialist([reading], [sensed()]):
            return recognize.take_specialist(reading, v4).text, cost + width
    return reading.text, cost


def figures(rows: list[dict[str, Any]], read: Callable[[dict[str, Any]], tuple[str, float]]) -> dict[str, float]:
    texts = [read(r) for r in rows]
    costs = sorted(c for _, c in texts)
    n = max(len(rows), 1)
    return {
        "alnum": 100 * sum(scoring.alnum(t) == scoring.alnum(r["label"]) for r, (t, _) in zip(rows, texts)) / n,
        "exact": 100 * sum(scoring.relaxed(t) == scoring.relaxed(r["label"]) for r, (t, _) in zip(rows, texts)) / n,
        "raw": 100 * sum(t == r["label"] for r, (t, _) in zip(rows, texts)) / n,
        "cer": 100 * sum(scoring.cer(scoring.relaxed(r["label"]), scoring.relaxed(t)) for r, (t, _) in zip(rows, texts)) / n,
        "cost_p50": costs[len(costs) // 2] if costs else 0.0,
        "cost_p95": costs[int(0.95 * (len(costs) - 1))] if costs else 0.0,
    }


# The first three rules were chosen while single lines were read by the dynamic int8 recogniser
# alone (confirm=None), and replay as they were measured then; the last one on top of them.
BEFORE_CONFIRM: dict[str, Any] = dict(confirm=None)
CANDIDATES = {
    "specialist_mass": [(str(m), dict(routing="plate", draft_min_width=320, specialist_mass=m, **BEFORE_CONFIRM))
                        for m in (0.05, 0.02, 0.01, 0.005, 0.0)],
    "routing": [(name, dict(routing=name, draft_min_width=320, **BEFORE_CONFIRM)) for name in ("all", "none", "plate")],
    "draft_min_width": [(str(w), dict(routing="plate", draft_min_width=w, **BEFORE_CONFIRM)) for w in (0, 240, 320, 480)]
    + [("all lines (no draft)", dict(routing="plate", draft_min_width=float("inf"), **BEFORE_CONFIRM))],
    "confirm_below, confirm_chinese_mass": [("dynamic int8 alone", dict(routing="plate", draft_min_width=320,
                                                                        confirm=None))]
    + [("%s, %s" % (below, mass), dict(routing="plate", draft_min_width=320, confirm=(below, mass)))
       for below in (0.0, 0.8, 0.9, 0.95) for mass in (0.001, 0.01)],
    "chinese_drafts": [("kept when sure (now)", dict(routing="plate", draft_min_width=320))]
    + [("%s, %s" % (reader, mass), dict(routing="plate", draft_min_width=320, chinese_drafts=(reader, mass)))
       for reader in ("static", "dynamic") for mass in (0.05, 0.01)]
    + [("with hanzi: as on a Chinese page", dict(routing="plate", draft_min_width=320, chinese_drafts=("page rule", 0.0)))],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/edge-ocr-rules.json"))
    args = ap.parse_args(argv)
    rows = read_all(args.cache)
    half = halves({r["file"]: r["source"] for r in rows})
    sources = sorted({r["source"] for r in rows})
    zh = {r["source"] for r in rows if r["file"].startswith("zhline_")}
    for rule, candidates in CANDIDATES.items():
        print("\n### %s\n" % rule)
        print("Latin and plate sources: alnum %; Chinese sources: CER % and exact % (NFKC, no white space), "
              "exact % as printed.\n")
        print("| half | %s | %s | cost p50 / p95 |" % (rule, " | ".join(sources)))
        print("|---" * (len(sources) + 3) + "|")
        for part in "ab":
            in_half = [r for r in rows if half[r["file"]] == part]
            for name, settings in candidates:
                cells = []
                for source in sources:
                    group = [r for r in in_half if r["source"] == source]
                    if not group:
                        cells.append("")
                        continue
                    f = figures(group, lambda r, settings=settings: replay(r, **settings))
                    cells.append("%.2f / %.1f / %.1f" % (f["cer"], f["exact"], f["raw"]) if source in zh
                                 else "%.1f" % f["alnum"])
                total = figures(in_half, lambda r, settings=settings: replay(r, **settings))
                print("| %s | %s | %s | %.2f / %.2f |" % (part, name, " | ".join(cells), total["cost_p50"], total["cost_p95"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
