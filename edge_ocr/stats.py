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
    kind: str  # counter | gauge
    unit: str
    help: str


METRICS: tuple[Metric, ...] = (
    Metric("jobs_total", "counter", "jobs", "images taken by the pipeline"),
    Metric("results_ok_total", "counter", "results", "results with status ok, no_text or low_confidence"),
    Metric("results_error_total", "counter", "results", "results with status error"),
    Metric("results_reused_total", "counter", "results", "results reused for identical content (no OCR run)"),
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
)


class Stats:
    """Named counters and gauges; unknown names raise KeyError (typos fail loudly)."""

    def __init__(self, metrics: tuple[Metric, ...] = METRICS) -> None:
        self._metrics = {m.name: m for m in metrics}
        self._values: dict[str, float] = {m.name: 0 for m in metrics}
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def inc(self, name: str, n: float = 1) -> None:
        with self._lock:
            self._values[name] += n

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
        return "\n".join(lines) + "\n"
