"""edge_ocr.tuning: what `edge-ocr tune` stored is applied to threads/precision left on "auto"."""

from __future__ import annotations

from dataclasses import replace

from edge_ocr import tuning
from edge_ocr.engine.ocr import EngineOptions


def test_auto_settings_take_the_tuning_explicit_ones_win(tmp_path):
    stored = tuning.Tuning("crnn", "1", threads=1, precision="int8", cpus=(0,), machine="x", measured_at="now")
    auto = EngineOptions(pack="crnn")
    assert (tuning.apply(auto, stored).threads, tuning.apply(auto, stored).precision) == (1, "int8")
    explicit = EngineOptions(pack="crnn", threads=2, precision="fp32")
    assert tuning.apply(explicit, stored) == explicit
    assert tuning.apply(EngineOptions(pack="ppocrv6-tiny"), stored) == EngineOptions(pack="ppocrv6-tiny")
    assert tuning.apply(auto, replace(stored, pack_version="0")) == auto  # made for another pack version
    assert tuning.apply(auto, None) == auto


def test_an_unreadable_tuning_file_is_ignored(tmp_path):
    (tmp_path / "tune.json").write_text("{not json")
    assert tuning.load(tmp_path) is None
    assert tuning.load(tmp_path / "nowhere") is None
