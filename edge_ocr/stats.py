"""Counters and gauges, each with help text and unit, as JSON (``<p>/stats``, /api/stats) or
Prometheus text (/metrics). Thread-safe. stdlib only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: str  # counter | gauge | histogram
    unit: str
    help: str
    label: str = ""  # labelled metrics (one series per label value) are kept apart from snapshot()


# Upper bounds (ms) of the stage latency histogram: from a cropped digit to a dense receipt on a Pi.
LATENCY_BUCKETS_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0)


METRICS: tuple[Metric, ...] = (
    Metric("jobs_total", "counter", "jobs", "images taken by the pipeline"),
    Metric("results_ok_total", "counter", "results", "results with status ok, no_text or low_confidence"),
    Metric("results_error_total", "counter", "results", "results with status error"),
    Metric("results_reused_total", "counter", "results", "results reused for identical content (no OCR run)"),
    Metric("http_cache_hits_total", "counter", "requests", "POST /api/ocr answered from recent identical requests"),
    Metric("files_done_total", "counter", "files", "folder files moved to done_dir"),
    Metric("files_failed_total", "counter", "files", "folder files moved to failed_dir"),
    Metric("frames_total", "counter", "frames", "frames captured by camera sources"),
    Metric("frames_skipped_total", "counter", "frames", "camera frames skipped as unchanged (no OCR run)"),
    Metric("frames_dropped_total", "counter", "frames", "camera frames dropped because the queue was full"),
    Metric("camera_errors_total", "counter", "errors", "failed camera opens and reads (each is retried)"),
    Metric("queue_depth", "gauge", "jobs", "jobs waiting for the engine"),
    Metric("engine_last_ms", "gauge", "ms", "duration of the last engine call"),
    Metric("mqtt_connected", "gauge", "bool", "1 while connected to the broker"),
    Metric("mqtt_published_total", "counter", "messages", "spooled messages acknowledged by the broker"),
    Metric("spool_depth", "gauge", "messages", "messages waiting in the on-disk spool"),
    Metric("spool_dropped_total", "counter", "messages", "oldest spool messages dropped at the bound"),
    Metric("uptime_s", "gauge", "s", "seconds since the daemon started"),
    Metric("lines_total", "counter", "lines", "text lines recognised"),
    Metric("errors_total", "counter", "results", "results with status error, by error code", label="code"),
    Metric("stage_ms", "histogram", "ms", "engine stage latency, by stage", label="stage"),
)


class Stats:
    """Named counters and gauges; unknown names raise KeyError (typos fail loudly)."""

    def __init__(self, metrics: tuple[Metric, ...] = METRICS) -> None:
        self._metrics = {m.name: m for m in metrics}
        self._values: dict[str, float] = {m.name: 0 for m in metrics if not m.label}
        self._series: dict[tuple[str, str], float] = {}  # labelled counters
        self._histograms: dict[tuple[str, str], list[float]] = {}  # bucket counts..., sum, count
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def inc(self, name: str, n: float = 1) -> None:
        with self._lock:
            self._values[name] += n

    def inc_labelled(self, name: str, label: str, n: float = 1) -> None:
        """Count one series of a labelled counter (e.g. ``errors_total{code="unsupported_image"}``)."""
        if self._metrics[name].kind != "counter" or not self._metrics[name].label:
            raise KeyError(name)
        with self._lock:
            self._series[(name, label)] = self._series.get((name, label), 0) + n

    def observe(self, name: str, value: float, label: str = "") -> None:
        """Add one observation to a histogram (buckets ``LATENCY_BUCKETS_MS``)."""
        if self._metrics[name].kind != "histogram":
            raise KeyError(name)
        with self._lock:
            counts = self._histograms.setdefault((name, label), [0.0] * (len(LATENCY_BUCKETS_MS) + 2))
            for i, bound in enumerate(LATENCY_BUCKETS_MS):
                if value <= bound:
                    counts[i] += 1
            counts[-2] += value
            counts[-1] += 1

    def set(self, name: str, value: float) -> None:
        with self._lock:
            if name not in self._values:
                raise KeyError(name)
            self._values[name] = value

    def get(self, name: str) -> float:
        with self._lock:
            return self._values[name]

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            self._values["uptime_s"] = round(time.monotonic() - self._started, 1)
            return dict(self._values)

    def to_prometheus(self, prefix: str = "edge_ocr_") -> str:
        lines = []
        for name, value in self.snapshot().items():
            m = self._metrics[name]
            lines.append("# HELP %s%s %s (%s)" % (prefix, name, m.help, m.unit))
            lines.append("# TYPE %s%s %s" % (prefix, name, m.kind))
            lines.append("%s%s %s" % (prefix, name, repr(float(value)) if isinstance(value, float) else value))
        with self._lock:
            series = dict(self._series)
            histograms = {k: list(v) for k, v in self._histograms.items()}
        for m in self._metrics.values():
            if not m.label:
                continue
            lines.append("# HELP %s%s %s (%s)" % (prefix, m.name, m.help, m.unit))
            lines.append("# TYPE %s%s %s" % (prefix, m.name, m.kind))
            for (name, label), value in sorted(series.items()):
                if name == m.name:
                    lines.append('%s%s{%s="%s"} %s' % (prefix, name, m.label, label, value))
            for (name, label), counts in sorted(histograms.items()):
                if name != m.name:
                    continue
                tag = '%s="%s"' % (m.label, label)
                for bound, count in zip(LATENCY_BUCKETS_MS, counts):
                    lines.append('%s%s_bucket{%s,le="%s"} %s' % (prefix, name, tag, bound, count))
                lines.append('%s%s_bucket{%s,le="+Inf"} %s' % (prefix, name, tag, counts[-1]))
                lines.append("%s%s_sum{%s} %s" % (prefix, name, tag, counts[-2]))
                lines.append("%s%s_count{%s} %s" % (prefix, name, tag, counts[-1]))
        return "\n".join(lines) + "\n"
