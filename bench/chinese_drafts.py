"""Dev only: does drafting a Chinese page's lines with PP-OCRv6 tiny hold off eval-dev's pages?

A page whose sample shows Chinese has its other lines drafted by PP-OCRv6 tiny, and only the drafts
``recognize.needs_page_recheck`` flags are read again by the page reader (PP-OCRv6 small, static
int8). The rule was chosen on eval-dev's own crops; this reads lines unlike them: eval-dev's Chinese
line texts rendered again in the printed AR PL UMing and the brush-written AR PL UKai (the fonts and
degradations of ``bench/punctuation.py``), dark on paper, light on dark and light on blue. For each
it prints the page reader alone against the rule: CER and exact lines (NFKC, white space removed, the
eval-dev rule), exact lines as printed (spaces count), the share of drafts kept, and the kept drafts
that are wrong where the page reader was right (what the rule costs when tiny is sure and wrong).

    .venv/bin/python bench/chinese_drafts.py [--lines 240]
"""

from __future__ import annotations

import argparse
import random
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from punctuation import FONTS, render, restyle  # noqa: E402

from edge_ocr.engine import recognize  # noqa: E402
from edge_ocr.engine.decode import Decoded  # noqa: E402
from edge_ocr.engine.models import Model  # noqa: E402
from edge_ocr.engine.ocr import EngineOptions, OcrEngine  # noqa: E402
from edge_ocr.tools.scoring import edit_distance  # noqa: E402


def texts(eval_dev: Path, limit: int) -> list[str]:
    """eval-dev's Chinese line labels with at least 4 hanzi, as page lines are: whole."""
    out = []
    for row in (eval_dev / "zh" / "lines" / "labels.tsv").read_text(encoding="utf-8").splitlines():
        text = row.split("\t")[1].strip()
        if sum("\u4e00" <= c <= "\u9fff" for c in text) >= 4:
            out.append(text)
    return out[:limit]


def read(model: Model, crops: list, min_width: int) -> list[Decoded]:
    stage = model.stage
    assert stage.charset is not None
    return recognize.recognize(crops, model.run, stage.charset, stage.height, min_width or stage.min_width,
                               stage.width or stage.height * 64, 1)


def relaxed(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-dev", type=Path, default=ROOT.parent / "shared" / "eval-dev")
    parser.add_argument("--lines", type=int, default=240)
    args = parser.parse_args()
    missing = [f for f, _ in FONTS.values() if not Path(f).is_file()]
    if missing:
        sys.exit(f"needs {', '.join(missing)}: apt-get install fonts-arphic-uming fonts-arphic-ukai")
    engine = OcrEngine(EngineOptions(threads=2))
    assert engine.rec_page is not None and engine.rec_fast is not None
    lines = texts(args.eval_dev, args.lines)
    below = engine.options.recheck_below
    print("| font | style | reader | CER % | exact % | exact as printed % | drafts kept % | kept and wrong, page reader right |")
    print("|---|---|---|---|---|---|---|---|")
    for font, (font_file, index) in FONTS.items():
        for style in ("paper", "inverted", "slide"):
            rng = random.Random(11)
            crops = [restyle(render(t, font_file, index, rng), style) for t in lines]
            page = read(engine.rec_page, crops, engine.options.page_min_width)
            drafts = read(engine.rec_fast, crops, 0)
            again = set(recognize.needs_page_recheck(drafts, below))
            rule = [page[i] if i in again else drafts[i] for i in range(len(lines))]
            truth = [relaxed(t) for t in lines]
            costly = sum(i not in again and relaxed(drafts[i].text) != truth[i] and relaxed(page[i].text) == truth[i]
                         for i in range(len(lines)))
            for name, readings in (("page reader", page), ("tiny drafts, rechecked", rule)):
                got = [relaxed(r.text) for r in readings]
                cer = 100 * sum(edit_distance(t, g) for t, g in zip(truth, got)) / sum(map(len, truth))
                exact = 100 * sum(t == g for t, g in zip(truth, got)) / len(lines)
                printed = 100 * sum(r.text == t for r, t in zip(readings, lines)) / len(lines)
                kept = "%.1f" % (100 * (1 - len(again) / len(lines))) if readings is rule else ""
                wrong = str(costly) if readings is rule else ""
                print(f"| {font} | {style} | {name} | {cer:.2f} | {exact:.1f} | {printed:.1f} | {kept} | {wrong} |")


if __name__ == "__main__":
    main()
