"""edge_ocr.tools.tune: the device measures its own threads/precision (edge_ocr.tuning stores it)."""

from __future__ import annotations

import os

import pytest

from edge_ocr import tuning
from edge_ocr.tools import tune


@pytest.mark.slow
def test_tune_measures_every_variant_and_keeps_only_same_text_choices(tmp_path):
    before = os.sched_getaffinity(0)
    measured = tune.tune("crnn", runs=1)
    assert os.sched_getaffinity(0) == before  # measured pinned to the big cores, the caller's affinity given back
    combos = {(t.precision, t.threads) for t in measured.trials}
    assert {("fp32", 1), ("int8", 1)} <= combos  # crnn ships an int8 recogniser
    assert measured.pack == "crnn" and measured.threads >= 1 and measured.precision in ("fp32", "int8")
    chosen = next(t for t in measured.trials if (t.precision, t.threads) == (measured.precision, measured.threads))
    assert chosen.same_text and chosen.median_ms == min(t.median_ms for t in measured.trials if t.same_text)
    path = tuning.save(measured, tmp_path)
    assert path.name == "tune.json" and tuning.load(tmp_path) == measured


def test_sample_images_have_readable_text(engines):
    texts = [engines("crnn")(image).text for image in tune.sample_images()]
    assert "TOTAL" in texts[2] and "ITEM" in texts[1] and "12345" in texts[0]
