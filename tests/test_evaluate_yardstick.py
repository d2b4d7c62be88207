"""`edge-ocr eval` scores as the yardstick (../shared/yardstick/bench.py) does, the judge of
accuracy: the same recorded predictions of another engine (RapidOCR 1.3.24 on eval-dev, in
bench/ref/) get the same figures from both scorers, per source."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from edge_ocr.evaluate import evaluate, file_predictor

REPO = Path(__file__).resolve().parents[1]
YARDSTICK = REPO.parent / "shared" / "yardstick" / "bench.py"


@pytest.fixture(scope="module")
def yardstick():
    if not YARDSTICK.is_file():
        pytest.skip("no yardstick at %s" % YARDSTICK)
    pytest.importorskip("rapidfuzz")  # the yardstick's edit distance
    spec = importlib.util.spec_from_file_location("yardstick_bench", YARDSTICK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _yardstick_scores(yardstick, task: str, manifest: Path, predictions: Path) -> dict:
    items = yardstick.read_manifest(task, str(manifest))
    preds = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines() if line.strip()]
    scores, _ = (yardstick.score_lines if task == "lines" else yardstick.score_pages)(items, preds)
    return scores


def test_page_figures_agree_with_the_yardstick(yardstick, eval_dev):
    manifest = eval_dev / "pages" / "labels.jsonl"
    predictions = REPO / "bench" / "ref" / "rapidocr-1.3.24-pages.jsonl"
    ours = evaluate(manifest, file_predictor(predictions))["sources"]
    theirs = _yardstick_scores(yardstick, "pages", manifest, predictions)
    for source, figures in ours.items():
        judge = theirs["all" if source == "all" else "src:" + source]
        assert figures["det_f1"] == pytest.approx(judge["det_f1"], abs=0.05), source
        assert figures["e2e_f1"] == pytest.approx(judge["e2e_f1"], abs=0.05), source
        assert figures["page_cer"] == pytest.approx(judge["page_cer_mean"], abs=0.05), source


def test_line_figures_agree_with_the_yardstick(yardstick, eval_dev):
    manifest = eval_dev / "lines" / "labels.tsv"
    predictions = REPO / "bench" / "ref" / "rapidocr-1.3.24-lines.jsonl"
    ours = evaluate(manifest, file_predictor(predictions))["sources"]
    theirs = _yardstick_scores(yardstick, "lines", manifest, predictions)
    for source, figures in ours.items():
        judge = theirs["all" if source == "all" else "src:" + source]
        assert figures["exact"] == pytest.approx(judge["acc"], abs=0.05), source
        assert figures["relaxed"] == pytest.approx(judge["acc_relaxed"], abs=0.05), source
        assert figures["alnum"] == pytest.approx(judge["acc_alnum"], abs=0.05), source
        assert figures["cer"] == pytest.approx(judge["cer_mean"], abs=0.05), source
        assert figures["cer_relaxed"] == pytest.approx(judge["cer_relaxed_mean"], abs=0.05), source
