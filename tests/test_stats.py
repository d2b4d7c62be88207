"""edge_ocr.stats: counters, labelled counters and histograms as Prometheus text."""

from __future__ import annotations

import pytest

from edge_ocr.stats import Stats
from tests.helpers import promtool_check


def test_prometheus_text_has_counters_labels_and_histograms():
    stats = Stats()
    stats.inc("jobs_total", 3)
    stats.inc_labelled("errors_total", "unsupported_image")
    stats.inc_labelled("errors_total", "unsupported_image")
    stats.observe("stage_ms", 42.0, "detect")
    stats.observe("stage_ms", 700.0, "detect")
    text = stats.to_prometheus()
    assert "edge_ocr_jobs_total 3" in text
    assert 'edge_ocr_errors_total{code="unsupported_image"} 2' in text
    # Prometheus names carry base units (seconds); the JSON stats keep their millisecond keys.
    assert "# TYPE edge_ocr_stage_seconds histogram" in text
    assert 'edge_ocr_stage_seconds_bucket{stage="detect",le="0.05"} 1.0' in text
    assert 'edge_ocr_stage_seconds_bucket{stage="detect",le="1.0"} 2.0' in text
    assert 'edge_ocr_stage_seconds_bucket{stage="detect",le="+Inf"} 2.0' in text
    assert 'edge_ocr_stage_seconds_sum{stage="detect"} 0.742' in text
    assert "errors_total" not in stats.snapshot()  # JSON stays flat numbers
    assert "engine_last_ms" in stats.snapshot() and "edge_ocr_engine_last_seconds 0.0" in text
    promtool_check(text.encode())


def test_label_values_are_escaped():
    stats = Stats()
    stats.inc_labelled("errors_total", 'odd "code"\\n')
    assert 'edge_ocr_errors_total{code="odd \\"code\\"\\\\n"} 1' in stats.to_prometheus()


def test_typos_fail_loudly():
    stats = Stats()
    with pytest.raises(KeyError):
        stats.inc_labelled("jobs_total", "x")
    with pytest.raises(KeyError):
        stats.observe("nope", 1.0)
