"""Dev only: choose how the default pack reads a page's lines on half a of eval-dev pages, confirm on half b.

Detects every eval-dev page (``pages/`` and ``zh/pages``) once with the pack's detector, reads every detected
line with each recogniser (PP-OCRv6 tiny; PP-OCRv6 small as the page reader's static int8, the dynamic
int8 of single lines, and fp32), caches the readings, then replays
each candidate rule over them and scores the pages as the yardstick does (``edge_ocr.tools.scoring``), per
source and half (``bench/halves.py``: split by page). Candidates:

* ``drafts``: the rule before 2026-12: tiny drafts every line, drafts under ``recheck_below`` are re-read by
  small, drafts under 0.5 with no Chinese sensed are dropped;
* ``drafts > W``: lines up to W px (at 48 px high) are read by small directly, longer ones drafted;
* ``small ...``: every line read once by small (the rule now, with the static int8 variant);
* ``padded to W px``: the same with less padding than the pack's 160 px (``page_min_width``, 96 now);
  their cost counts the padded columns.
* ``Chinese pages drafted ...``: the page reader (padded to 96 px) reads a sample of 8 lines; where it
  shows Chinese (``recognize.shows_chinese``) tiny drafts the other lines and the drafts a rule flags are
  read again by the page reader (``recognize.needs_page_recheck`` is the rule now); other pages as before.
  Where tiny keeps too few of its first drafts (the probe), the rest are read by the page reader.

Cost is recogniser work per page relative to reading every line once with small fp32 (columns times the
measured per-column ratio of each reader); mean over the half's pages.

    .venv/bin/python bench/page_rules.py [--cache /tmp/edge-ocr-page-rules.pkl]
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from halves import halves

from edge_ocr.engine import preprocess, recognize
from edge_ocr.engine.decode import Decoded
from edge_ocr.engine.models import Model, choose_variant
from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.tools import scoring
from edge_ocr.tools.evaluate import PageSample, load_pages

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"
MANIFESTS = (EVAL_DEV / "pages" / "labels.jsonl", EVAL_DEV / "zh" / "pages" / "labels.jsonl")
# Per column, relative to small fp32 (interleaved on the same eval-dev page lines, 2 threads, x86_64):
COST = {"tiny": 0.20, "small_static": 0.54, "small_dynamic": 0.90, "small_fp32": 1.0}
Reading = tuple[str, float, float]  # text, mean confidence, Chinese mass
Rule = Callable[[dict[str, Any]], tuple[str | None, list[str]]]
PageRule = Callable[[list[dict[str, Any]]], list[tuple[str | None, list[str]]]]


# The page reader with less padding than the pack's 160 px (``page_min_width``): "small_static@W".
MIN_WIDTHS = (64, 96, 128)


def read_all(cache: Path) -> list[dict[str, Any]]:
    if cache.is_file():
        pages = pickle.loads(cache.read_bytes())
        if all("small_static@%d" % w in line for page in pages for line in page["lines"] for w in MIN_WIDTHS):
            return pages
        add_min_widths(pages)
        cache.write_bytes(pickle.dumps(pages))
        return pages
    engine = OcrEngine(EngineOptions(threads=2))
    assert engine.det is not None and engine.rec_fast is not None and engine.rec_page is not None
    readers = {"tiny": engine.rec_fast, "small_static": engine.rec_page, "small_dynamic": engine.rec,
               "small_fp32": Model(engine.rec.stage, choose_variant(engine.rec.stage, "fp32"), 2)}
    pages = []
    for manifest in MANIFESTS:
        for sample in load_pages(manifest):
            image = preprocess.decode_image(sample.path.read_bytes(), 100.0)
            quads, _ = engine._detect(image, {}, engine.options.det_limit_side)
            lines = []
            for quad in quads:
                crop = preprocess.crop_quad(image, quad)
                line: dict[str, Any] = {"quad": quad, "width": recognize.line_width(crop, 48)}
                for name, model in readers.items():
                    line[name] = read_line(model, crop, model.stage.min_width)
                lines.append(line)
            pages.append({"file": sample.path.name, "source": sample.source, "lines": lines})
            print(sample.path.name, len(lines), file=sys.stderr)
    add_min_widths(pages)
    cache.write_bytes(pickle.dumps(pages))
    return pages


def read_line(model: Model, crop: np.ndarray, min_width: int) -> Reading:
    """One crop read by ``model``, padded to ``min_width``."""
    stage = model.stage
    (decoded,) = recognize.recognize([crop], model.run, stage.charset, stage.height, min_width,
                                     stage.width or stage.height * 64, 1)
    return decoded.text, decoded.score, decoded.cjk_mass


def add_min_widths(pages: list[dict[str, Any]]) -> None:
    """Each cached line read again by the page reader padded to ``MIN_WIDTHS`` instead of 160 px."""
    engine = OcrEngine(EngineOptions(threads=2))
    assert engine.rec_page is not None
    model = engine.rec_page
    samples = {s.path.name: s for m in MANIFESTS for s in load_pages(m)}
    for page in pages:
        image = preprocess.decode_image(samples[page["file"]].path.read_bytes(), 100.0)
        for line in page["lines"]:
            crop = preprocess.crop_quad(image, line["quad"])
            for width in MIN_WIDTHS:
                line["small_static@%d" % width] = read_line(model, crop, width)
        print(page["file"], "min widths", file=sys.stderr)


def kept(reading: Reading, floor: float = 0.5) -> str | None:
    """The engine's page filter: empty or unsure readings are dropped (``min_line_score``)."""
    return reading[0] if reading[0].strip() and reading[1] >= floor else None


def every_line(reader: str) -> Rule:
    return lambda line: (kept(line[reader]), [reader])


def drafts(direct_up_to: int = 0, recheck_below: float = 0.95, reader: str = "small_dynamic") -> Rule:
    def rule(line: dict[str, Any]) -> tuple[str | None, list[str]]:
        if line["width"] <= direct_up_to:
            return kept(line[reader]), [reader]
        draft = Decoded(*line["tiny"])
        if not recognize.needs_recheck([draft], recheck_below):
            return kept(line["tiny"]), ["tiny"]
        if draft.score < 0.5 and not recognize.maybe_chinese(draft, 0.05):
            return None, ["tiny"]  # the old rule: hopeless drafts dropped unread
        return kept(line[reader]), ["tiny", reader]
    return rule


def chinese_pages(flagged: Callable[[Decoded], bool], reader: str = "small_static@96", sample_size: int = 8,
                  mass: float = 0.5, chinese_lines: int = 5, probe_kept: int = 3) -> PageRule:
    """The engine's page rule (``OcrEngine._read_page``): a page whose sample shows Chinese, with
    ``chinese_lines`` of its lines holding hanzi, has its other lines drafted by tiny, and the drafts
    ``flagged`` read again by ``reader``; unless tiny keeps fewer than ``probe_kept`` of its first
    ``sample_size`` drafts (the probe, spread over the other lines): then the lines after the probe
    are read by ``reader`` alone."""
    def page_rule(lines: list[dict[str, Any]]) -> list[tuple[str | None, list[str]]]:
        sample = recognize.spread(len(lines), sample_size)
        readings = [Decoded(*lines[i][reader]) for i in sample]
        if (len(sample) == len(lines) or not recognize.shows_chinese(readings, mass)
                or sum(recognize.has_cjk(r.text) for r in readings) < chinese_lines):
            return [(kept(line[reader]), [reader]) for line in lines]
        rest = [i for i in range(len(lines)) if i not in sample]
        probe = {rest[i] for i in recognize.spread(len(rest), sample_size)}
        stopped = sum(not flagged(Decoded(*lines[i]["tiny"])) for i in probe) < probe_kept
        out: list[tuple[str | None, list[str]]] = []
        for index, line in enumerate(lines):
            if index in sample or (stopped and index not in probe):
                out.append((kept(line[reader]), [reader]))
            elif flagged(Decoded(*line["tiny"])):
                out.append((kept(line[reader]), ["tiny", reader]))
            else:
                out.append((kept(line["tiny"]), ["tiny"]))
        return out
    return page_rule


def sure_chinese(below: float, latin: str, spaces: bool) -> Callable[[Decoded], bool]:
    """Alternatives to ``recognize.needs_page_recheck``: flag all but sure drafts with Chinese, and
    (``latin``) with no ASCII ``letter`` or ``alnum``, (``spaces``) with no white space."""
    def flagged(draft: Decoded) -> bool:
        text = draft.text
        latin_found = latin and any(c.isascii() and (c.isalpha() if latin == "letter" else c.isalnum()) for c in text)
        return (not text.strip() or draft.score < below or not recognize.has_cjk(text) or bool(latin_found)
                or (spaces and any(c.isspace() for c in text)))
    return flagged


def score(pages: list[dict[str, Any]], truth: dict[str, PageSample], rule: Rule | PageRule, padded: bool = False,
          whole_page: bool = False) -> dict[str, tuple]:
    """Each page's match and cost; ``padded`` counts a line's columns as read (padded to the reader's
    minimum width, 160 px unless ``@W`` says otherwise) instead of the line's own width. A
    ``whole_page`` rule reads a page's lines at once (a ``PageRule``)."""
    out = {}
    for page in pages:
        sample, boxes, texts, cost = truth[page["file"]], [], [], 0.0
        results = rule(page["lines"]) if whole_page else [rule(line) for line in page["lines"]]  # type: ignore[arg-type]
        for line, (text, used) in zip(page["lines"], results):
            for reader in used:
                base, _, at = reader.partition("@")
                columns = max(line["width"], int(at) if at else 48 if base == "tiny" else 160) if padded else line["width"]
                cost += columns * COST[base]
            if text is not None:
                boxes.append(np.asarray(line["quad"], dtype=np.float32))
                texts.append(text)
        out[page["file"]] = (scoring.match_page(sample.boxes, sample.texts, sample.ignored, boxes, texts), cost)
    return out


def figures(scored: dict[str, tuple], files: list[str]) -> str:
    matches = [scored[f][0] for f in files]
    _, _, f1 = scoring.f1(sum(m.e2e_hits for m in matches), sum(m.detections for m in matches),
                          sum(m.truths for m in matches))
    cer = np.mean([m.page_edits / m.page_length for m in matches if m.page_length])
    cost = np.mean([scored[f][1] for f in files]) / 1000
    return "%.1f / %.1f / %.2f" % (100 * f1, 100 * cer, cost)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge-ocr-page-rules.pkl"))
    args = parser.parse_args(argv)
    pages = read_all(args.cache)
    truth = {s.path.name: s for m in MANIFESTS for s in load_pages(m)}
    half = halves({p["file"]: p["source"] for p in pages})
    groups = {"SROIE": lambda s: s.startswith("SROIE"), "IC15": lambda s: s.startswith("ICDAR"),
              "zh": lambda s: not s.startswith(("SROIE", "ICDAR"))}
    rules: dict[str, Rule] = {"drafts, dynamic int8 rechecks (before)": drafts(),
                              "drafts, recheck under 0.98": drafts(recheck_below=0.98),
                              "drafts, static int8 rechecks": drafts(reader="small_static")}
    rules |= {"drafts over %d px, static int8" % w: drafts(direct_up_to=w, reader="small_static") for w in (320, 640, 960)}
    rules |= {"**every line, static int8**": every_line("small_static"),
              "every line, dynamic int8": every_line("small_dynamic"), "every line, fp32": every_line("small_fp32")}
    print("| rule | half | " + " | ".join("%s e2e F1 / page CER / cost" % g for g in groups) + " |")
    print("|---|---|" + "---|" * len(groups))
    padded = {"every line, static int8, padded to 160 px (before)": every_line("small_static")}
    padded |= {"every line, static int8, padded to %d px" % w: every_line("small_static@%d" % w) for w in MIN_WIDTHS}
    now = lambda d: bool(recognize.needs_page_recheck([d], 0.95))  # noqa: E731
    whole_pages: dict[str, PageRule] = {
        "Chinese pages drafted, sure Chinese drafts kept": chinese_pages(sure_chinese(0.95, "", False)),
        "Chinese pages drafted, ... with no Latin letter or digit": chinese_pages(sure_chinese(0.95, "alnum", False)),
        "**Chinese pages drafted, ... with no Latin letter, no space (now)**": chinese_pages(now),
        "Chinese pages drafted, the same at 0.98": chinese_pages(lambda d: bool(recognize.needs_page_recheck([d], 0.98))),
        "Chinese pages drafted, sure Chinese drafts with no space": chinese_pages(sure_chinese(0.95, "", True)),
    }
    whole_pages |= {"the rule now, drafted where %d of the 8 sample lines hold hanzi%s" % (k, " (now)" if k == 5 else ""):
                    chinese_pages(now, chinese_lines=k) for k in (1, 2, 3, 4, 5)}
    whole_pages |= {"the rule now, drafting stopped where tiny keeps under %d of its first 8 drafts%s"
                    % (k, " (now)" if k == 3 else " (never stopped: before)" if k == 0 else ""):
                    chinese_pages(now, probe_kept=k) for k in (0, 3, 4, 6)}
    for name, rule in list(rules.items()) + list(padded.items()) + list(whole_pages.items()):
        scored = score(pages, truth, rule, padded=name in padded or name in whole_pages, whole_page=name in whole_pages)
        for h in "ab":
            cells = [figures(scored, [p["file"] for p in pages if pred(p["source"]) and half[p["file"]] == h])
                     for pred in groups.values()]
            print("| %s | %s | %s |" % (name if h == "a" else "", h, " | ".join(cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
