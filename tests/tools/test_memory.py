"""edge_ocr.tools.memory: the per-stage memory table, measured in a real child process."""

from __future__ import annotations

import pytest

from edge_ocr.engine import models
from edge_ocr.tools import memory


@pytest.mark.slow
def test_the_memory_table_has_every_stage_with_its_own_figures(eval_dev):
    images = sorted((eval_dev / "pages").glob("ic15_*.jpg"))[:2]
    rows = {r["step"]: r for r in memory.measure("ppocrv6-small", "int8", 1, images, det=True)}
    assert rows["imports: numpy, OpenCV, ONNX Runtime, engine"]["delta_mb"] > 20  # OpenCV and ORT are not free
    pack = models.load_pack("ppocrv6-small")
    for name in ("det", "rec_fast", "rec", "rec_zh"):
        variant = models.choose_variant(pack.stages[name], "int8")
        row = rows["session %s (%s)" % (name, variant.precision)]
        assert row["weights_mb"] == round(variant.path.stat().st_size / 2**20, 1)
        assert row["delta_mb"] > 0
    assert rows["detector activations"]["mb_per_mp"] > 10
    assert rows["kept by glibc"]["delta_mb"] >= 0
    assert rows["peak RSS of the process"]["rss_mb"] >= rows["the engine (every session above, loaded together)"][
        "rss_mb"]
    table = memory.format_rows(list(rows.values()))
    assert table.count("\n") == len(rows) + 2
