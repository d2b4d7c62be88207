"""`edge-ocr eval`: score an OCR callable on a labelled set in the eval-dev formats.

Two manifest formats (see shared/eval-dev/README.md):
- lines: ``labels.tsv`` with ``file<TAB>text<TAB>lang<TAB>source``, one cropped line each;
- pages: ``labels.jsonl`` with ``{"file", "source", "lines": [{"box", "text", "ignore"}]}``.
Predictions come from the engine or from a JSON Lines file made by another OCR
(``bench/reference_predict.py``), so every engine is scored by this one module.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_ocr.errors import ConfigError, EdgeOcrError
from edge_ocr.tools import scoring

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prediction:
    text: str
    boxes: tuple[np.ndarray, ...] = ()
    texts: tuple[str, ...] = ()
    elapsed_ms: float = 0.0
    cpu_ms: float = 0.0
    error: str | None = None


Predict = Callable[[Path, bool], Prediction]  # (image path, detect?) -> Prediction


@dataclass(frozen=True, slots=True)
class LineSample:
    path: Path
    text: str
    source: str


@dataclass(frozen=True, slots=True)
class PageSample:
    path: Path
    source: str
    boxes: tuple[np.ndarray, ...]
    texts: tuple[str, ...]
    ignored: tuple[bool, ...]


def manifest_kind(manifest: Path) -> str:
    if manifest.suffix == ".tsv":
        return "lines"
    if manifest.suffix == ".jsonl":
        return "pages"
    raise ConfigError("%s: expected a lines manifest (.tsv) or a pages manifest (.jsonl)" % manifest)


def source_name(label: str) -> str:
    """A source as the yardstick groups it: ``SROIE2019-task1(zzzDavid/…)`` → ``SROIE2019-task1``."""
    return label.split("(")[0] or "unk"


def load_lines(manifest: Path) -> list[LineSample]:
    samples = []
    for number, row in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not row.strip():
            continue
        fields = row.split("\t")
        if len(fields) < 2:
            raise ConfigError("%s:%d: expected file<TAB>text[<TAB>lang<TAB>source]" % (manifest, number))
        source = fields[3] if len(fields) > 3 else ""  # no source column: one source, "unk", beside "all"
        samples.append(LineSample(manifest.parent / fields[0], fields[1], source_name(source)))
    return samples


def load_pages(manifest: Path) -> list[PageSample]:
    samples = []
    for number, row in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not row.strip():
            continue
        try:
            page = json.loads(row)
            lines = page["lines"]
            samples.append(
                PageSample(
                    path=manifest.parent / page["file"],
                    source=source_name(page.get("source", "")),
                    boxes=tuple(np.asarray(line["box"], dtype=np.float32) for line in lines),
                    texts=tuple(line["text"] for line in lines),
                    ignored=tuple(bool(line.get("ignore")) or line["text"] == "###" for line in lines),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError("%s:%d: malformed page record: %s" % (manifest, number, exc)) from exc
    return samples


def engine_predictor(engine: Any) -> Predict:
    """Wrap an OcrEngine: full pipeline for pages, whole-image recognition for lines."""

    def predict(path: Path, det: bool) -> Prediction:
        try:
            data = path.read_bytes()
        except OSError as exc:  # a manifest row whose image is missing: an error row, as a bad image is
            log.warning("eval cannot read file=%s error=%s", path, exc.strerror)
            return Prediction("", error="unreadable")
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            output = engine(data, det=det)
        except EdgeOcrError as exc:
            return Prediction("", error=exc.code)
        elapsed = (time.perf_counter() - wall) * 1000
        cpu_ms = (time.process_time() - cpu) * 1000
        return Prediction(
            text=output.text,
            # the result JSON's whole-pixel boxes, as the yardstick scores them: float quads moved
            # a box whose IoU sits at 0.5 across it, and rows grouped for page CER (1.0 point on zh pages)
            boxes=tuple(np.asarray(line.box_list(), dtype=np.float32) for line in output.lines),
            texts=tuple(line.text for line in output.lines),
            elapsed_ms=elapsed,
            cpu_ms=cpu_ms,
        )

    return predict


def file_predictor(predictions: Path) -> Predict:
    """Predictions recorded by another OCR, keyed by file name (JSON Lines: file, text,
    lines[{text, box}], elapsed_ms, cpu_ms)."""
    try:
        rows = predictions.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("--predictions: cannot read %s: %s"
                          % (predictions, getattr(exc, "strerror", None) or exc)) from exc
    table: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows, 1):
        if not row.strip():
            continue
        try:
            record = json.loads(row)
            if isinstance(record, dict) and "file" not in record and "meta" in record:
                continue  # the yardstick's closing {"meta": ...} line: about the run, no image
            # By base name: `edge-ocr ocr --json` records the path as given, the manifests' images
            # are found relative to them.
            table[Path(record["file"]).name] = record
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError('--predictions: %s line %d: expected a JSON object with "file" (%s: %s)'
                              % (predictions, number, type(exc).__name__, exc)) from exc

    def predict(path: Path, det: bool) -> Prediction:
        record = table.get(path.name)
        if record is None:
            return Prediction("", error="missing")
        lines = [line for line in record.get("lines", []) if line.get("box") is not None]
        return Prediction(
            text=record.get("text", ""),
            boxes=tuple(np.asarray(line["box"], dtype=np.float32) for line in lines),
            texts=tuple(line["text"] for line in lines),
            elapsed_ms=float(record.get("elapsed_ms", 0.0)),
            cpu_ms=float(record.get("cpu_ms", 0.0)),
        )

    return predict


@dataclass(slots=True)
class _Tally:
    count: int = 0
    exact: int = 0
    relaxed: int = 0
    alnum: int = 0
    cer_sum: float = 0.0  # lines: strict CER; pages: relaxed page CER (sum over items with a text)
    cer_relaxed_sum: float = 0.0
    cer_items: int = 0
    errors: int = 0
    tp: int = 0
    detections: int = 0
    truths: int = 0
    e2e_hits: int = 0
    elapsed_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def evaluate(manifest: Path, predict: Predict, limit: int | None = None, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score ``predict`` on ``manifest``; returns a report dict (see ``format_report``)."""
    kind = manifest_kind(manifest)
    tallies: dict[str, _Tally] = defaultdict(_Tally)
    samples: list = load_lines(manifest) if kind == "lines" else load_pages(manifest)
    if limit:
        samples = samples[:limit]
    for done, sample in enumerate(samples, start=1):
        prediction = predict(sample.path, kind == "pages")
        for key in (sample.source, "all"):
            tally = tallies[key]
            tally.count += 1
            tally.errors += prediction.error is not None
            if prediction.error is None:  # a failed image's 0 ms would pull p50 down (scored, not timed)
                tally.elapsed_ms.append(prediction.elapsed_ms)
                tally.cpu_ms.append(prediction.cpu_ms)
            if kind == "lines":
                _score_line(tally, sample, prediction)
            else:
                _score_page(tally, sample, prediction)
        if progress:
            progress(done, len(samples))
    return {
        "manifest": str(manifest),
        "kind": kind,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "sources": {name: _summary(kind, tally) for name, tally in sorted(tallies.items())},
    }


def _score_line(tally: _Tally, sample: LineSample, prediction: Prediction) -> None:
    """The yardstick's line metrics: exact (white space collapsed), relaxed (NFKC, case-folded,
    no white space), alnum, and CER strict and relaxed averaged over lines with a label."""
    truth, predicted = sample.text, prediction.text
    tally.exact += scoring.strict(predicted) == scoring.strict(truth)
    tally.relaxed += scoring.relaxed(predicted) == scoring.relaxed(truth)
    tally.alnum += scoring.alnum(predicted) == scoring.alnum(truth)
    if scoring.strict(truth):
        tally.cer_items += 1
        tally.cer_sum += scoring.cer(scoring.strict(truth), scoring.strict(predicted))
        tally.cer_relaxed_sum += scoring.cer(scoring.relaxed(truth), scoring.relaxed(predicted))


def _score_page(tally: _Tally, sample: PageSample, prediction: Prediction) -> None:
    match = scoring.match_page(sample.boxes, sample.texts, sample.ignored, prediction.boxes, prediction.texts)
    tally.tp += match.true_positives
    tally.detections += match.detections
    tally.truths += match.truths
    tally.e2e_hits += match.e2e_hits
    if match.page_length:
        tally.cer_items += 1
        tally.cer_sum += match.page_edits / match.page_length


def _summary(kind: str, t: _Tally) -> dict[str, Any]:
    n = max(t.count, 1)
    with_text = max(t.cer_items, 1)
    out: dict[str, Any] = {"n": t.count, "errors": t.errors}
    if kind == "lines":
        out.update(
            exact=round(100 * t.exact / n, 2),
            relaxed=round(100 * t.relaxed / n, 2),
            alnum=round(100 * t.alnum / n, 2),
            cer=round(100 * t.cer_sum / with_text, 2),
            cer_relaxed=round(100 * t.cer_relaxed_sum / with_text, 2),
        )
    else:
        precision, recall, det_f1 = scoring.f1(t.tp, t.detections, t.truths)
        _, _, e2e_f1 = scoring.f1(t.e2e_hits, t.detections, t.truths)
        out.update(
            det_precision=round(100 * precision, 2),
            det_recall=round(100 * recall, 2),
            det_f1=round(100 * det_f1, 2),
            e2e_f1=round(100 * e2e_f1, 2),
            page_cer=round(100 * t.cer_sum / with_text, 2),
        )
    out.update(
        p50_ms=round(scoring.percentile(t.elapsed_ms, 50), 1),
        p95_ms=round(scoring.percentile(t.elapsed_ms, 95), 1),
        cpu_ms_mean=round(float(np.mean(t.cpu_ms)) if t.cpu_ms else 0.0, 1),
    )
    return out


ACCURACY_FIELDS = ("alnum", "exact", "relaxed", "cer", "cer_relaxed", "det_f1", "e2e_f1", "page_cer")


def accuracy_record(report: dict[str, Any], engine: str) -> dict[str, Any]:
    """The part of a report worth keeping in a pack manifest: accuracy per source."""
    return {
        "engine": engine,
        "sources": {
            name: {k: v for k, v in summary.items() if k in ACCURACY_FIELDS or k == "n"}
            for name, summary in report["sources"].items()
        },
    }


def format_report(report: dict[str, Any]) -> str:
    """A markdown table, one row per source plus ``all``."""
    if report["kind"] == "lines":
        columns = ["n", "exact", "relaxed", "alnum", "cer", "cer_relaxed", "p50_ms", "p95_ms", "cpu_ms_mean", "errors"]
    else:
        columns = ["n", "det_precision", "det_recall", "det_f1", "e2e_f1", "page_cer", "p50_ms", "p95_ms", "cpu_ms_mean", "errors"]
    rows = ["| source | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, summary in report["sources"].items():
        rows.append("| %s | " % name + " | ".join(str(summary[c]) for c in columns) + " |")
    rows.append("\npeak RSS %.1f MB · %s" % (report["peak_rss_mb"], report["manifest"]))
    return "\n".join(rows)
