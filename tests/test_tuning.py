"""edge_ocr.tuning: what `edge-ocr tune` stored is applied to threads/precision left on "auto"."""

from __future__ import annotations

from dataclasses import replace

from edge_ocr import tuning
from edge_ocr.engine.models import load_pack
from edge_ocr.engine.ocr import EngineOptions


def test_auto_settings_take_the_tuning_explicit_ones_win(tmp_path):
    version = load_pack("crnn").version  # "1+" and the pack's content id
    stored = tuning.Tuning("crnn", version, threads=1, precision="int8", cpus=(0,), machine="x", measured_at="now")
    auto = EngineOptions(pack="crnn")
    assert (tuning.apply(auto, stored).threads, tuning.apply(auto, stored).precision) == (1, "int8")
    explicit = EngineOptions(pack="crnn", threads=2, precision="fp32")
    assert tuning.apply(explicit, stored) == explicit
    assert tuning.apply(EngineOptions(pack="ppocrv6-tiny"), stored) == EngineOptions(pack="ppocrv6-tiny")
    assert tuning.apply(auto, replace(stored, pack_version="1")) == auto  # made for another build of the pack
    assert tuning.apply(auto, None) == auto


def test_an_unreadable_tuning_file_is_ignored(tmp_path):
    (tmp_path / "tune.json").write_text("{not json")
    assert tuning.load(tmp_path) is None
    assert tuning.load(tmp_path / "nowhere") is None


def test_a_tuning_this_release_cannot_run_is_ignored_not_a_config_error(tmp_path, caplog):
    """A newer release's precision or a hand-edited thread count stopped the daemon with
    "engine.precision: expected one of auto|fp32|int8", though the config said auto."""
    stored = tuning.Tuning("crnn", load_pack("crnn").version, threads=1, precision="int8", cpus=(0,), machine="x",
                           measured_at="now")
    tuning.save(stored, tmp_path)
    assert tuning.load(tmp_path) == stored
    for bad in (replace(stored, precision="fp16"), replace(stored, threads=0), replace(stored, threads=True)):
        tuning.save(bad, tmp_path)
        assert tuning.load(tmp_path) is None
    assert "not a tuning this release can use" in caplog.text
