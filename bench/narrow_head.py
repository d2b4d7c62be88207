"""Dev only: a page with no Chinese read by the page reader with its classifier cut to the
classes that are not CJK ideographs; measured on 2026-12-02 and not kept (README, Benchmarks).

The page reader's last layer maps 120 features to 18,710 classes at each time step; with its
bias, dequantization and softmax it is ~20 % of a line's time at 1 thread. Cut to the 3,008
classes that are not CJK ideographs (blank, Latin, digits, punctuation, kana, symbols), it gives
the very same logits for those classes (int8 weights quantized per output column, one output
scale), so its softmax is the full one renormalised over them: the same as decoding with an
allowed-characters mask.

How a page is read here: ``--sample`` lines spread over the page in reading order are read with
the full classifier; if none has a CJK mass of ``--mass`` or more (``Decoded.cjk_mass``) or a CJK
character, the other lines are read with the cut one, and a reading that is empty or holds
CJK punctuation, kana, full-width forms or compatibility ideographs (signs that the line was
Chinese after all) is read again with the full classifier. Pages of ``--sample`` lines or fewer
are read as shipped. ``--sentinels gb2312-1`` also keeps GB2312's 3,755 level-1 hanzi (the
commonest) in the cut classifier, so that a Chinese line on a page taken for English reads as
Chinese and is read again whole.

Both engines read every eval-dev page (``pages/`` and ``zh/pages``) in turn, in alternating order,
in one process; printed: end-to-end F1 / page CER per source and half (``bench/halves.py``) and
the time per page as a ratio to the shipped engine.

    .venv/bin/python bench/narrow_head.py --threads 1 [--sample 8] [--mass 0.5] [--sentinels gb2312-1]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from det_variants import GROUPS, in_group
from halves import halves

from edge_ocr.engine.decode import Charset, Decoded, is_cjk
from edge_ocr.engine.models import Model, Variant
from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.tools import scoring
from edge_ocr.tools.evaluate import PageSample, load_pages

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"
MANIFESTS = (EVAL_DEV / "pages" / "labels.jsonl", EVAL_DEV / "zh" / "pages" / "labels.jsonl")
# The page reader's classifier: int8 weights, their per-column scales and zero points, the bias.
CLASSIFIER = ("linear_8.w_0_quantized", "linear_8.w_0_scale", "linear_8.w_0_zero_point", "linear_8.b_0")


def cut_classifier(model_path: Path, keep: np.ndarray, out: Path) -> Path:
    """The model with its classifier cut to the classes ``keep`` (ascending, blank first)."""
    model = onnx.load(model_path)
    for initializer in model.graph.initializer:
        if initializer.name in CLASSIFIER:
            values = numpy_helper.to_array(initializer)
            values = np.ascontiguousarray(values[..., keep] if values.ndim == 2 else values[keep])
            initializer.CopyFrom(numpy_helper.from_array(values, initializer.name))
    model.graph.output[0].type.tensor_type.shape.dim[2].dim_value = len(keep)
    onnx.save(model, out)
    return out


def gb2312_level1(char: str) -> bool:
    """One of GB2312's level-1 hanzi (rows 16-55: the 3,755 commonest)."""
    try:
        encoded = char.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return len(encoded) == 2 and 0xB0 <= encoded[0] <= 0xD7


def looks_chinese(text: str) -> bool:
    """A reading of the cut classifier that hints at a Chinese line: empty, or holding a CJK
    ideograph (a sentinel), CJK punctuation, kana, bopomofo, hangul, full-width forms or
    compatibility ideographs."""
    if not text.strip():
        return True
    return any(is_cjk(c) or 0x3000 <= ord(c) <= 0x31FF or 0xAC00 <= ord(c) <= 0xD7AF or 0xF900 <= ord(c) <= 0xFAFF
               or 0xFF00 <= ord(c) <= 0xFFEF or ord(c) >= 0x20000 for c in text)


class NarrowPages(OcrEngine):
    """The shipped engine, except that a page whose sampled lines show no Chinese is read with
    the cut classifier (single lines and regions: as shipped)."""

    def __init__(self, options: EngineOptions, work: Path, sample: int, mass: float, sentinels: bool) -> None:
        super().__init__(options)
        self.sample, self.mass = sample, mass
        reader = self.page_lines
        assert reader is not None and reader.stage.charset is not None
        charset = reader.stage.charset
        assert charset.other_classes is not None
        keep = np.asarray(charset.other_classes)  # ascending, blank (0) first
        if sentinels:
            hanzi = [k for k, char in enumerate(charset.chars, start=1) if gb2312_level1(char)]
            keep = np.union1d(keep, hanzi)
        path = cut_classifier(reader.variant.path, keep, work / "rec_page.non_cjk.onnx")
        stage = dataclasses.replace(reader.stage, name="rec_page_non_cjk",
                                    charset=Charset(tuple(charset.chars[k - 1] for k in keep[1:])))
        self.narrow = Model(stage, Variant("int8", path, ""), reader._threads, lazy=True)
        self.kept = len(keep)
        self.counts = {"pages": 0, "narrow": 0, "read_again": 0}

    def _read(self, crops: list[np.ndarray], allowed: list[str], detected: bool) -> list[Decoded]:
        if not detected or len(crops) <= self.sample:
            return super()._read(crops, allowed, detected)
        reader = self.page_lines if self._line_pool is not None else self.rec_page
        assert reader is not None
        min_width = min(self.options.page_min_width, reader.stage.min_width or 0)
        count = len(crops)
        sampled = sorted({round(i * (count - 1) / (self.sample - 1)) for i in range(self.sample)})
        rest = sorted(set(range(count)) - set(sampled))
        decoded = [Decoded("", 0.0)] * count
        self._read_into(decoded, reader, crops, allowed, sampled, min_width)
        chinese = any(decoded[i].cjk_mass >= self.mass or any(map(is_cjk, decoded[i].text)) for i in sampled)
        self.counts["pages"] += 1
        if chinese:
            self._read_into(decoded, reader, crops, allowed, rest, min_width)
        else:
            self.counts["narrow"] += 1
            self._read_into(decoded, self.narrow, crops, allowed, rest, min_width)
            again = [i for i in rest if looks_chinese(decoded[i].text)]
            self.counts["read_again"] += len(again)
            self._read_into(decoded, reader, crops, allowed, again, min_width)
        self._specialise(decoded, crops, allowed, self._plates(decoded, decoded, set(range(count)), range(count)))
        return decoded


def accuracy(pages: Sequence[PageSample], half: dict[str, str], lines: dict[str, tuple[list, list[str]]]) -> str:
    cells = []
    for group, prefixes in GROUPS.items():
        for h in "ab":
            matches = [scoring.match_page(s.boxes, s.texts, s.ignored, [np.asarray(b, np.float32) for b in
                                                                        lines[s.path.name][0]],
                                          lines[s.path.name][1])
                       for s in pages if in_group(s, prefixes) and half[s.path.name] == h]
            detections, truths = sum(m.detections for m in matches), sum(m.truths for m in matches)
            e2e = scoring.f1(sum(m.e2e_hits for m in matches), detections, truths)[2]
            cer = np.mean([m.page_edits / m.page_length for m in matches if m.page_length])
            cells.append("%s %s %.1f / %.1f" % (group, h, 100 * e2e, 100 * cer))
    return " | ".join(cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sample", type=int, default=8, help="lines read with the full classifier first")
    parser.add_argument("--mass", type=float, default=0.5, help="CJK mass that marks a sampled line Chinese")
    parser.add_argument("--sentinels", choices=("none", "gb2312-1"), default="none",
                        help="hanzi kept in the cut classifier")
    args = parser.parse_args(argv)
    pages = [s for m in MANIFESTS for s in load_pages(m)]
    half = halves({s.path.name: s.source for s in pages})
    with tempfile.TemporaryDirectory() as work:
        engines = {"shipped": OcrEngine(EngineOptions(threads=args.threads)),
                   "narrow": NarrowPages(EngineOptions(threads=args.threads), Path(work), args.sample,
                                                 args.mass, args.sentinels != "none")}
        lines: dict[str, dict[str, tuple[list, list[str]]]] = {name: {} for name in engines}
        seconds: dict[str, dict[str, float]] = {name: {} for name in engines}
        for engine in engines.values():
            engine(pages[0].path.read_bytes())  # sessions made, first-run costs paid
        for index, sample in enumerate(pages):
            data = sample.path.read_bytes()
            for name in (list(engines) if index % 2 == 0 else list(engines)[::-1]):
                started = time.perf_counter()
                output = engines[name](data)
                seconds[name][sample.path.name] = time.perf_counter() - started
                lines[name][sample.path.name] = ([line.box for line in output.lines], [line.text for line in output.lines])
    narrow = engines["narrow"]
    assert isinstance(narrow, NarrowPages)
    print("threads %d, sample %d, mass %.2f, sentinels %s, %d classes kept: %s"
          % (args.threads, args.sample, args.mass, args.sentinels, narrow.kept, narrow.counts))
    for name in engines:
        print("%-8s e2e F1 / page CER: %s" % (name, accuracy(pages, half, lines[name])))
    for group, prefixes in GROUPS.items():
        names = [s.path.name for s in pages if in_group(s, prefixes)]
        shipped = np.array([seconds["shipped"][n] for n in names])
        cut = np.array([seconds["narrow"][n] for n in names])
        print("%-5s time per page, narrow / shipped: median %.3f, total %.3f; p50 %.0f -> %.0f ms, p95 %.0f -> %.0f ms"
              % (group, np.median(cut / shipped), cut.sum() / shipped.sum(), 1000 * np.median(shipped),
                 1000 * np.median(cut), 1000 * np.percentile(shipped, 95), 1000 * np.percentile(cut, 95)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
