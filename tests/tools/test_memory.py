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
    assert rows["import OpenCV (cv2)"]["delta_mb"] > 5 and rows["import ONNX Runtime"]["delta_mb"] > 5
    pack = models.load_pack("ppocrv6-small")
    weights = deltas = 0.0
    for name in ("det", "rec_fast", "rec", "rec_page", "rec_zh"):
        variant = models.choose_variant(pack.stages[name], "int8")
        row = rows["session %s (%s)" % (name, variant.precision)]
        assert row["weights_mb"] == round(variant.path.stat().st_size / 2**20, 1)
        weights, deltas = weights + row["weights_mb"], deltas + row["delta_mb"]
    # One session can reuse the heap the previous one freed (rec_page after rec measured 0.0 MB in
    # CI), so only the sessions together are bound to hold at least their weights.
    assert deltas >= weights
    assert rows["detector activations"]["mb_per_mp"] > 10
    assert rows["kept by glibc"]["delta_mb"] >= 0
    engine = rows["the engine as built"]
    assert engine["note"].startswith("sessions det, rec_page;")  # the single-line readers wait for a line
    after = rows["sessions after the images"]["note"].split(", ")
    assert "rec_page" in after and "rec" not in after and "rec_fast" not in after  # pages never need them
    assert rows["peak RSS of the process"]["rss_mb"] >= engine["rss_mb"]
    table = memory.format_rows(list(rows.values()))
    assert table.count("\n") == len(rows) + 2


def test_the_import_table_has_each_of_the_daemons_imports():
    rows = memory.measure_imports()
    assert [r["step"] for r in rows] == ["interpreter"] + ["import %s" % label for _, label in memory.DAEMON_IMPORTS]
    assert all(r["delta_mb"] >= 0 for r in rows) and rows[-1]["rss_mb"] > 40
