"""Dev only: does drafting a Chinese page's lines with PP-OCRv6 tiny hold off eval-dev's pages?

A page whose sample shows Chinese has its other lines drafted by PP-OCRv6 tiny, and only the drafts
``recognize.needs_page_recheck`` flags are read again by the page reader (PP-OCRv6 small, static
int8). The rule was chosen on eval-dev's own crops; this reads lines unlike them: eval-dev's Chinese
line texts rendered again in the printed AR PL UMing and the brush-written AR PL UKai (the fonts and
degradations of ``bench/punctuation.py``), dark on paper, light on dark and light on blue; and, as a
stand-in for handwriting (eval-dev has none; the held-out set has handwritten notes), "hand-like": each
glyph drawn on its own with its own size, height, slant and gap, the line warped by a smooth random
field, strokes thickened at random, at four strengths (``scrawl``; 1.0 looks like hurried notes).
For each it prints the page reader alone against the rule: CER and exact lines (NFKC, white space
removed, the eval-dev rule), exact lines as printed (spaces count), the share of drafts kept, and the
kept drafts that are wrong where the page reader was right (what the rule costs when tiny is sure and
wrong); for the hand-like lines also tiny alone. Then pages drawn from each style's lines, per half,
with and without the probe that stops drafting a page tiny is unsure of (``pages``).

    .venv/bin/python bench/chinese_drafts.py [--lines 240]
"""

from __future__ import annotations

import argparse
import random
import sys
import unicodedata
from pathlib import Path

import cv2
import numpy as np

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


def scrawl(text: str, font_file: str, index: int, rng: random.Random, strength: float) -> np.ndarray:
    """A BGR crop of ``text`` written as if by hand: each glyph its own size (-15 % to +12 %),
    height (±10 %), slant (±7°), shear and gap, all times ``strength``; the line warped by a smooth
    random displacement field; strokes thickened at random; then paper, pen, blur, noise and JPEG."""
    from PIL import Image, ImageDraw, ImageFont  # dev only, like the fonts

    size = rng.choice([32, 40])
    glyphs = []
    for char in text:
        font = ImageFont.truetype(font_file, int(size * rng.uniform(1 - 0.15 * strength, 1 + 0.12 * strength)),
                                  index=index)
        left, top, right, bottom = font.getbbox(char)
        width, height = max(right - left, 1) + 8, max(bottom - top, 1) + 8
        image = Image.new("L", (width, height), 0)
        ImageDraw.Draw(image).text((4 - left, 4 - top), char, font=font, fill=255)
        turn = cv2.getRotationMatrix2D((width / 2, height / 2), rng.uniform(-7, 7) * strength, 1.0)
        turn[0, 1] += rng.uniform(-0.15, 0.15) * strength
        glyphs.append(cv2.warpAffine(np.array(image), turn, (width, height)))
    canvas = np.zeros((int(size * 1.8), sum(g.shape[1] for g in glyphs) + int(size * 0.3 * len(glyphs)) + 40),
                      np.float32)
    x = 16
    for glyph in glyphs:
        h, w = glyph.shape
        y = min(max(int((canvas.shape[0] - h) / 2 + rng.uniform(-0.1, 0.1) * size * strength), 0), canvas.shape[0] - h)
        canvas[y:y + h, x:x + w] = np.maximum(canvas[y:y + h, x:x + w], glyph)
        x = max(x + w + int(rng.uniform(-0.12, 0.25) * size * strength), 0)
    canvas = canvas[:, :x + 16]
    noise = np.random.default_rng(rng.randint(0, 1 << 30))
    dx, dy = (cv2.GaussianBlur(noise.normal(0, 1, canvas.shape).astype(np.float32), (0, 0), 6) * 40 * strength
              for _ in range(2))
    ys, xs = np.mgrid[0:canvas.shape[0], 0:canvas.shape[1]].astype(np.float32)
    canvas = cv2.remap(canvas, xs + dx, ys + dy, cv2.INTER_LINEAR)
    thicken = rng.choice([0, 0, 1, 2])
    if thicken:
        canvas = cv2.dilate(canvas, np.ones((thicken, thicken), np.uint8))
    ink = np.clip(canvas / 255, 0, 1)
    pixels = rng.randint(215, 250) * (1 - ink) + rng.randint(20, 90) * ink
    pixels = cv2.GaussianBlur(pixels, (3, 3), rng.uniform(0.3, 0.9))
    pixels = np.clip(pixels + noise.normal(0, 5, pixels.shape), 0, 255).astype(np.uint8)
    _, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(60, 90)])
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR)


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
    styles = [(font, style, 0.0) for font in FONTS for style in ("paper", "inverted", "slide")]
    styles += [(font, "hand-like", strength) for font in FONTS for strength in (0.6, 0.8, 1.0, 1.2)]
    truth = [relaxed(t) for t in lines]
    read_by: dict[tuple[str, str, float], tuple[list[Decoded], list[Decoded]]] = {}
    for font, style, strength in styles:
        font_file, index = FONTS[font]
        rng = random.Random(11)
        if style == "hand-like":
            crops = [scrawl(t, font_file, index, rng, strength) for t in lines]
        else:
            crops = [restyle(render(t, font_file, index, rng), style) for t in lines]
        page = read(engine.rec_page, crops, engine.options.page_min_width)
        drafts = read(engine.rec_fast, crops, 0)
        read_by[font, style, strength] = page, drafts
        again = set(recognize.needs_page_recheck(drafts, below))
        rule = [page[i] if i in again else drafts[i] for i in range(len(lines))]
        costly = sum(i not in again and relaxed(drafts[i].text) != truth[i] and relaxed(page[i].text) == truth[i]
                     for i in range(len(lines)))
        readers = [("page reader", page), ("tiny drafts, rechecked", rule)]
        if style == "hand-like":
            readers.append(("tiny alone", drafts))
        for name, readings in readers:
            got = [relaxed(r.text) for r in readings]
            cer = 100 * sum(edit_distance(t, g) for t, g in zip(truth, got)) / sum(map(len, truth))
            exact = 100 * sum(t == g for t, g in zip(truth, got)) / len(lines)
            printed = 100 * sum(r.text == t for r, t in zip(readings, lines)) / len(lines)
            kept = "%.1f" % (100 * (1 - len(again) / len(lines))) if readings is rule else ""
            wrong = str(costly) if readings is rule else ""
            print(f"| {font} | {label(style, strength)} | {name} | {cer:.2f} | {exact:.1f} | {printed:.1f} | {kept} | {wrong} |")
    print()
    pages(read_by, truth, below, engine.options.narrow_sample)


def label(style: str, strength: float) -> str:
    return "%s %.1f" % (style, strength) if style == "hand-like" else style


def pages(read_by: dict[tuple[str, str, float], tuple[list[Decoded], list[Decoded]]], truth: list[str],
          below: float, probe_size: int, rest: int = 32, count: int = 300) -> None:
    """The probe (``EngineOptions.draft_probe_kept``) on pages drawn from each style's lines: per half
    of the lines (even and odd), ``count`` pages of ``rest`` lines past the sample, drawn with
    replacement; the first ``probe_size`` drafts (spread) decide whether the others are drafted. Prints
    CER / exact % / the share of pages stopped / cost relative to reading every line with the page
    reader (a draft ~0.37 of a page reader's line, by ``bench/page_rules.py``'s per-column costs)."""
    stops = (0, 3, 4, 5, 6)
    print("| font | style | half | page reader: CER / exact | " + " | ".join(
        "stop under %d kept: CER / exact / stopped %% / cost" % k if k else "never stopped" for k in stops) + " |")
    print("|---|---|---|---|" + "---|" * len(stops))
    probe = recognize.spread(rest, probe_size)
    for (font, style, strength), (page, drafts) in read_by.items():
        flagged = set(recognize.needs_page_recheck(drafts, below))
        for half in "ab":
            lines = list(range(0 if half == "a" else 1, len(truth), 2))
            edits = sum(edit_distance(truth[i], relaxed(page[i].text)) for i in lines)
            exact = sum(truth[i] == relaxed(page[i].text) for i in lines)
            cells = ["%.2f / %.1f" % (100 * edits / sum(len(truth[i]) for i in lines), 100 * exact / len(lines))]
            for stop_under in stops:
                rng = random.Random(5)
                edits = length = exact = stopped = 0
                cost = 0.0
                for _ in range(count):
                    drawn = [rng.choice(lines) for _ in range(rest)]
                    stop = sum(drawn[j] not in flagged for j in probe) < stop_under
                    stopped += stop
                    for j, i in enumerate(drawn):
                        drafted = not stop or j in probe
                        reading = drafts[i] if drafted and i not in flagged else page[i]
                        cost += (0.37 if drafted else 0.0) + (1.0 if not drafted or i in flagged else 0.0)
                        got = relaxed(reading.text)
                        edits += edit_distance(truth[i], got)
                        length += len(truth[i])
                        exact += got == truth[i]
                cells.append("%.2f / %.1f / %d / %.2f" % (100 * edits / length, 100 * exact / (count * rest),
                                                          100 * stopped / count, cost / (count * rest)))
            print(f"| {font} | {label(style, strength)} | {half} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
