"""Counters and gauges, each with help text and unit, as JSON (``<p>/stats``, /api/stats) or
Prometheus text (/metrics). Thread-safe. stdlib only.

``render`` is the one writer of the Prometheus text format: the guard's gauges and the HTTP
API's own counters go through it too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: str  # counter | gauge | histogram
    unit: str
    help: str
    label: str = ""  # labelled metrics (one series per label value) are kept apart from snapshot()
    # /metrics follows Prometheus's naming (base units: seconds, bytes); JSON keeps ``name``.
    exposed: str = ""  # the Prometheus name, when it differs from ``name``
    scale: float = 1.0  # multiplies values (and histogram bounds) for /metrics

    @property
    def prometheus_name(self) -> str:
        return self.exposed or self.name

    @property
    def prometheus_unit(self) -> str:
        return {"ms": "seconds", "s": "seconds", "MB": "bytes"}.get(self.unit, self.unit)


MB = 1024 * 1024

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
    Metric("files_stalled_total", "counter", "files", "folder files kept for retry because a result could not be "
           "written (disk full)"),
    Metric("sink_errors_total", "counter", "results", "results a sink could not take (the spool's disk failed)"),
    Metric("fleet_jobs_taken_total", "counter", "jobs", "fleet jobs this worker took from the broker"),
    Metric("fleet_jobs_done_total", "counter", "jobs", "fleet jobs answered and acknowledged"),
    Metric("fleet_jobs_failed_total", "counter", "jobs", "fleet jobs answered with an error, or unanswerable"),
    Metric("fleet_jobs_redelivered_total", "counter", "jobs", "fleet jobs the broker delivered again (DUP set)"),
    Metric("fleet_jobs_returned_total", "counter", "jobs", "fleet jobs handed back to the group at a clean stop"),
    Metric("frames_total", "counter", "frames", "frames captured by camera sources"),
    Metric("frames_skipped_total", "counter", "frames", "camera frames skipped as unchanged (no OCR run)"),
    Metric("frames_dropped_total", "counter", "frames", "camera frames dropped because the queue was full"),
    Metric("camera_errors_total", "counter", "errors", "failed camera opens and reads (each is retried)"),
    Metric("queue_depth", "gauge", "jobs", "jobs waiting for the engine"),
    Metric("engine_last_ms", "gauge", "ms", "duration of the last engine call", exposed="engine_last_seconds",
           scale=0.001),
    Metric("mqtt_connected", "gauge", "bool", "1 while connected to the broker"),
    Metric("mqtt_published_total", "counter", "messages", "spooled messages acknowledged by the broker"),
    Metric("spool_depth", "gauge", "messages", "messages waiting in the on-disk spool"),
    Metric("spool_dropped_total", "counter", "messages", "oldest spool messages dropped at the bound"),
    Metric("mqtt_refused_total", "counter", "messages", "messages set aside because the broker dropped the "
           "connection at each resend (over its maximum packet size)"),
    Metric("uptime_s", "gauge", "s", "time since the daemon started", exposed="uptime_seconds"),
    # The guard's last sample, here so that ``<p>/stats`` and /api/stats carry it too (SPEC "Memory guard").
    Metric("guard_level", "gauge", "level", "memory guard level: 0 ok, 1 soft, 2 hard"),
    Metric("rss_mb", "gauge", "MB", "resident memory of this process", exposed="guard_rss_bytes", scale=MB),
    Metric("heap_trims_total", "counter", "trims", "idle trims: malloc_trim after guard.idle_trim_s without work"),
    Metric("lines_total", "counter", "lines", "text lines recognised"),
    Metric("errors_total", "counter", "results", "results with status error, by error code", label="code"),
    Metric("stage_ms", "histogram", "ms", "engine stage latency, by stage", label="stage", exposed="stage_seconds",
           scale=0.001),
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One line of a family: ``<prefix><name><suffix>{labels} value``."""

    value: float
    labels: tuple[tuple[str, str], ...] = ()
    suffix: str = ""  # histograms: "_bucket", "_sum", "_count"


@dataclass(frozen=True, slots=True)
class Family:
    """A metric with its samples, as the text format groups them under one HELP and TYPE."""

    name: str
    kind: str  # counter | gauge | histogram
    unit: str
    help: str
    samples: tuple[Sample, ...]


def render(families: Iterable[Family], prefix: str = "edge_ocr_") -> str:
    """The Prometheus text exposition format (version 0.0.4) of ``families``."""
    lines = []
    for family in families:
        name = prefix + family.name
        lines.append("# HELP %s %s (%s)" % (name, _escape_help(family.help), family.unit))
        lines.append("# TYPE %s %s" % (name, family.kind))
        for sample in family.samples:
            labels = ",".join('%s="%s"' % (key, _escape_label(value)) for key, value in sample.labels)
            lines.append("%s%s%s %s" % (name, sample.suffix, "{%s}" % labels if labels else "", _number(sample.value)))
    return "\n".join(lines) + "\n" if lines else ""


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _scaled(value: float, scale: float) -> float:
    """``value`` in the base unit, rounded to drop float noise (0.001 * 5.0 is 0.005, not 0.005000000000000001)."""
    return value if scale == 1.0 else round(value * scale, 9)


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


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

    def view(self) -> dict[str, Any]:
        """The counters for JSON readers (``/api/stats``, ``<p>/stats``): ``snapshot`` plus the errors by
        code as ``errors_by_code`` (a Node-RED flow cannot read /metrics' labelled series)."""
        view: dict[str, Any] = self.snapshot()
        with self._lock:
            view["errors_by_code"] = {label: value for (name, label), value in sorted(self._series.items())
                                      if name == "errors_total"}
        return view

    def families(self) -> list[Family]:
        """Every metric with its current samples (labelled ones after the plain ones)."""
        values = self.snapshot()
        with self._lock:
            series = dict(self._series)
            histograms = {k: list(v) for k, v in self._histograms.items()}
        out = []
        for name, value in values.items():
            m = self._metrics[name]
            out.append(Family(m.prometheus_name, m.kind, m.prometheus_unit, m.help, (Sample(_scaled(value, m.scale)),)))
        for m in self._metrics.values():
            if not m.label:
                continue
            samples = [Sample(value, ((m.label, label),)) for (name, label), value in sorted(series.items())
                       if name == m.name]
            for (name, label), counts in sorted(histograms.items()):
                if name != m.name:
                    continue
                for bound, count in zip(LATENCY_BUCKETS_MS, counts):
                    samples.append(Sample(count, ((m.label, label), ("le", repr(_scaled(bound, m.scale)))), "_bucket"))
                samples.append(Sample(counts[-1], ((m.label, label), ("le", "+Inf")), "_bucket"))
                samples.append(Sample(_scaled(counts[-2], m.scale), ((m.label, label),), "_sum"))
                samples.append(Sample(counts[-1], ((m.label, label),), "_count"))
            out.append(Family(m.prometheus_name, m.kind, m.prometheus_unit, m.help, tuple(samples)))
        return out

    def to_prometheus(self, prefix: str = "edge_ocr_") -> str:
        return render(self.families(), prefix)
