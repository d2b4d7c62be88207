"""edge_ocr.tune: the device measures its own threads/precision; auto settings use the result."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edge_ocr import tune
from edge_ocr.engine.ocr import EngineOptions


@pytest.mark.slow
def test_tune_measures_every_variant_and_keeps_only_same_text_choices(tmp_path):
    tuning = tune.tune("crnn", runs=1)
    combos = {(t.precision, t.threads) for t in tuning.trials}
    assert {("fp32", 1), ("int8", 1)} <= combos  # crnn ships an int8 recogniser
    assert tuning.pack == "crnn" and tuning.threads >= 1 and tuning.precision in ("fp32", "int8")
    chosen = next(t for t in tuning.trials if (t.precision, t.threads) == (tuning.precision, tuning.threads))
    assert chosen.same_text and chosen.median_ms == min(t.median_ms for t in tuning.trials if t.same_text)
    path = tune.save(tuning, tmp_path)
    assert path.name == "tune.json" and tune.load(tmp_path) == tuning


def test_sample_images_have_readable_text(engines):
    texts = [engines("crnn")(image).text for image in tune.sample_images()]
    assert "TOTAL" in texts[2] and "ITEM" in texts[1] and "12345" in texts[0]


def test_auto_settings_take_the_tuning_explicit_ones_win(tmp_path):
    tuning = tune.Tuning("crnn", "1", threads=1, precision="int8", cpus=(0,), machine="x", measured_at="now")
    auto = EngineOptions(pack="crnn")
    assert (tune.apply(auto, tuning).threads, tune.apply(auto, tuning).precision) == (1, "int8")
    explicit = EngineOptions(pack="crnn", threads=2, precision="fp32")
    assert tune.apply(explicit, tuning) == explicit
    assert tune.apply(EngineOptions(pack="ppocrv6-tiny"), tuning) == EngineOptions(pack="ppocrv6-tiny")
    assert tune.apply(auto, replace(tuning, pack_version="0")) == auto  # made for another pack version
    assert tune.apply(auto, None) == auto


def test_an_unreadable_tuning_file_is_ignored(tmp_path):
    (tmp_path / "tune.json").write_text("{not json")
    assert tune.load(tmp_path) is None
    assert tune.load(tmp_path / "nowhere") is None
