"""edge_ocr.bench: the bench command measures real configurations in child processes.
(Numbers are never asserted: only that each configuration was measured and reported.)"""

from __future__ import annotations

import json
import subprocess
import sys

from edge_ocr import bench


def test_bench_measures_each_configuration_in_its_own_process(eval_dev, tmp_path):
    report = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "edge_ocr", "bench", "--set", "frames", "--limit", "2", "--packs", "ppocrv6-tiny,crnn",
         "--precisions", "fp32,int8", "--threads", "1", "--warmup", "0", "--eval-dev", str(eval_dev),
         "--json", str(report)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(report.read_text())["results"]
    # ppocrv6-tiny ships no int8 variant, so it is measured once; crnn twice.
    assert [(r["config"]["pack"], r["config"]["precision"]) for r in results] == [
        ("ppocrv6-tiny", "fp32"), ("crnn", "fp32"), ("crnn", "int8")
    ]
    assert results[2]["precisions"]["rec"] == "int8"
    for result in results:
        assert result["images"] == 2 and result["peak_rss_mb"] > 50
        assert {"detect", "recognize", "total"} <= set(result["stages"])
    assert "| crnn int8 t1 |" in run.stdout


def test_camera_frames_are_640x480(eval_dev, tmp_path):
    import cv2

    frames = bench.camera_frames(eval_dev, 2, tmp_path)
    assert [cv2.imread(str(f)).shape for f in frames] == [(480, 640, 3)] * 2
