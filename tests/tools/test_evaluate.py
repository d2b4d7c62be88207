"""`edge-ocr eval` scores as the yardstick (../shared/yardstick/bench.py) does, the judge of
accuracy: the same recorded predictions of another engine (RapidOCR 1.3.24 on eval-dev, in
bench/ref/) get the same figures from both scorers, per source."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from edge_ocr.tools.evaluate import evaluate, file_predictor

REPO = Path(__file__).resolve().parents[2]
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


# Our figure → the yardstick's name for it, per task.
FIGURES = {
    "pages": {"det_f1": "det_f1", "e2e_f1": "e2e_f1", "page_cer": "page_cer_mean"},
    "lines": {"exact": "acc", "relaxed": "acc_relaxed", "alnum": "acc_alnum", "cer": "cer_mean",
              "cer_relaxed": "cer_relaxed_mean"},
}


@pytest.mark.parametrize("task, manifest, recorded", [
    ("pages", "pages/labels.jsonl", "rapidocr-1.3.24-pages.jsonl"),
    ("lines", "lines/labels.tsv", "rapidocr-1.3.24-lines.jsonl"),
])
@pytest.mark.slow
def test_figures_agree_with_the_yardstick(yardstick, eval_dev, task, manifest, recorded):
    predictions = REPO / "bench" / "ref" / recorded
    ours = evaluate(eval_dev / manifest, file_predictor(predictions))["sources"]
    theirs = _yardstick_scores(yardstick, task, eval_dev / manifest, predictions)
    assert set(ours) == {"all"} | {key[len("src:"):] for key in theirs if key.startswith("src:")}
    for source, figures in ours.items():
        judge = theirs["all" if source == "all" else "src:" + source]
        for ours_name, their_name in FIGURES[task].items():
            assert figures[ours_name] == pytest.approx(judge[their_name], abs=0.05), (source, ours_name)


def test_a_manifest_without_sources_counts_each_sample_once_and_a_missing_image_is_an_error_row(tmp_path):
    from edge_ocr.engine.types import EngineOutput
    from edge_ocr.errors import UnsupportedImage
    from edge_ocr.tools.evaluate import engine_predictor

    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"TEXT")
    manifest = tmp_path / "labels.tsv"
    manifest.write_text("a.png\tHELLO\nb.png\tWORLD\ngone.png\tLOST\n")  # file<TAB>text: the source is optional

    def engine(data: bytes, det: bool) -> EngineOutput:
        if not data.startswith(b"TEXT"):
            raise UnsupportedImage("not an image")
        return EngineOutput((), (1, 1), {})

    report = evaluate(manifest, engine_predictor(engine))
    assert report["sources"]["all"]["n"] == 3 and report["sources"]["unk"]["n"] == 3
    assert report["sources"]["all"]["errors"] == 1  # gone.png: read as an error, the run goes on


def test_predictions_are_matched_by_base_name_and_a_bad_line_is_named(tmp_path):
    """`edge-ocr ocr --json` records each file as given (a path): such output scored 0 before, and
    a line that is not a JSON object with "file" was a traceback."""
    from edge_ocr.errors import ConfigError

    (tmp_path / "a.png").write_bytes(b"x")
    manifest = tmp_path / "labels.tsv"
    manifest.write_text("a.png\tHELLO\n")
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text('{"file": "%s", "text": "HELLO"}\n' % (tmp_path / "a.png"))
    assert evaluate(manifest, file_predictor(predictions))["sources"]["all"]["exact"] == 100.0
    # the yardstick's own prediction files end with a line about the run
    predictions.write_text('{"file": "a.png", "text": "HELLO"}\n{"meta": {"engine": "edge-ocr"}}\n')
    assert evaluate(manifest, file_predictor(predictions))["sources"]["all"]["exact"] == 100.0
    predictions.write_text('{"file": "a.png", "text": "HELLO"}\n\nnot json\n')
    with pytest.raises(ConfigError, match=r"pred\.jsonl line 3: expected a JSON object"):
        file_predictor(predictions)
    with pytest.raises(ConfigError, match=r"cannot read .*gone\.jsonl"):
        file_predictor(tmp_path / "gone.jsonl")


def test_the_engine_is_scored_on_the_whole_pixel_boxes_of_its_result_json(tmp_path):
    """The yardstick reads the result JSON, whose boxes are whole pixels: scoring the float quads
    instead moved a box whose IoU sat at 0.5, and page CER's rows (1 point on the zh pages)."""
    import numpy as np

    from edge_ocr.engine.types import EngineOutput, TextLine
    from edge_ocr.tools.evaluate import engine_predictor

    quad = np.array([[10.4, 20.6], [99.5, 20.6], [99.5, 40.49], [10.4, 40.49]], dtype=np.float32)
    line = TextLine("TOTAL", 0.99, quad)
    (tmp_path / "page.png").write_bytes(b"TEXT")
    predicted = engine_predictor(lambda data, det: EngineOutput((line,), (200, 100), {}))(tmp_path / "page.png", True)
    assert [box.tolist() for box in predicted.boxes] == [line.box_list()] == [[[10, 21], [100, 21], [100, 40], [10, 40]]]
