"""Result: what a source's image became, in the JSON shape of SPEC (MQTT, done/, HTTP).

Imports engine.types and errors only.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import numpy as np

from edge_ocr.engine.types import EngineOutput, Region, TextLine
from edge_ocr.errors import EdgeOcrError

CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # in a file name: shown escaped in the journal (log_name)

TIMING_STAGES = ("capture", "preprocess", "detect", "recognize", "total")  # SPEC's timing_ms keys


class Status(str, Enum):
    OK = "ok"
    NO_TEXT = "no_text"
    LOW_CONFIDENCE = "low_confidence"
    REJECTED = "rejected"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class RegionResult:
    """One region of one frame. ``text`` is the published value: it changes only after
    ``stable_reads`` consecutive agreeing ``ok`` reads; ``read``/``score``/``status`` are this frame's."""

    name: str
    text: str
    score: float
    status: Status
    read: str
    changed: bool = False
    previous_text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "score": round(self.score, 4), "status": self.status.value, "read": self.read,
                "changed": self.changed, "previous_text": self.previous_text}


@dataclass(frozen=True, slots=True)
class Result:
    """One image's outcome. ``to_json`` gives the SPEC's result JSON."""

    source: str
    status: Status
    output: EngineOutput | None = None
    model: tuple[str, str] = ("", "")  # (pack name, version)
    error: EdgeOcrError | None = None
    file: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    changed: bool = True
    previous_text: str | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)
    sha256: str | None = None  # of the input bytes, for folder sources (resume, reuse)
    traceback: str | None = None  # summary for failed/NAME.error.json; never in to_dict()
    regions: tuple[RegionResult, ...] = ()  # sources with ROIs: per-region values (then ``text`` joins them)
    publish_every: bool | None = None  # the source's override of mqtt.publish_every; never in to_dict()
    # Detected at the memory guard's smaller size (soft level): not kept for reuse as the reading
    # of these bytes; never in to_dict().
    degraded: bool = False

    @property
    def text(self) -> str:
        if self.regions:
            return "\n".join(r.text for r in self.regions if r.text)
        return self.output.text if self.output else ""

    @property
    def confidence(self) -> float:
        """The least score among the lines that read text; 0.0 when none did. A region that read
        nothing (no_text, outside the frame) says so in its own status, not by zeroing the others'."""
        scores = [line.score for line in (self.output.lines if self.output else ()) if line.text.strip()]
        return round(min(scores), 4) if scores else 0.0

    def to_dict(self) -> dict[str, Any]:
        lines = self.output.lines if self.output else ()
        if self.regions:
            regions = {r.name: r.to_dict() for r in self.regions}
        else:
            regions = {
                line.roi: {"text": line.text, "score": round(line.score, 4), "status": self.status.value}
                for line in lines
                if line.roi
            }
        # SPEC's five stages always, 0 for one that did not run (a file is not captured, regions are
        # not detected), so a script can read any of them; the engine's finer ones (decode, classify,
        # detect_small_text) besides.
        timing = dict.fromkeys(TIMING_STAGES, 0.0)
        timing.update(self.output.timing_ms if self.output else {})
        timing.update(self.timing_ms)
        data: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "ts": self.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "status": self.status.value,
            "text": self.text,
            "confidence": self.confidence,
            "changed": self.changed,
            "previous_text": self.previous_text,
            "lines": [
                {"text": line.text, "score": round(line.score, 4), "box": line.box_list(), "roi": line.roi}
                for line in lines
            ],
            "regions": regions,
            "timing_ms": timing,
            "model": {"name": self.model[0], "version": self.model[1]},
            "error": {"code": self.error.code, "message": self.error.message} if self.error else None,
        }
        if self.file is not None:
            data["file"] = printable_name(self.file)
        if self.sha256 is not None:
            data["sha256"] = self.sha256
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


def status_for(output: EngineOutput, low_confidence: float) -> Status:
    """ok / no_text / low_confidence for an engine output."""
    if not output.text.strip():
        return Status.NO_TEXT
    if min(line.score for line in output.lines) < low_confidence:
        return Status.LOW_CONFIDENCE
    return Status.OK


@dataclass(frozen=True, slots=True)
class Job:
    """One image a source hands to the pipeline.

    ``cached`` is an earlier engine output for identical bytes (the engine is skipped);
    ``on_done`` is called on the pipeline thread after the sinks took the result (a folder
    source moves the file to done/ or failed/ there). A job the pipeline never ran (shutdown)
    gets no call: the source must cope (a folder file stays in ``.processing/``).

    ``image`` is the encoded file (bytes) or, from a camera, the frame itself (BGR uint8, H×W×3).
    A ``droppable`` job (a camera frame) is not waited for when the queue is full and is the
    first thing shed under memory pressure; a file never is. With ``regions`` the engine reads
    ``rois`` (boxes in ``image``, which may be a canvas of preprocessed region crops) and the pipeline reports each region against its rule
    (pattern, ``stable_reads``), with line boxes mapped back to the rule's box in camera pixels.
    """

    source: str
    image: bytes | np.ndarray
    file: str | None = None
    sha256: str | None = None
    rois: tuple[Region, ...] = ()
    det: bool = True
    cached: EngineOutput | None = None
    on_done: Callable[[Result], None] | None = None
    # On the pipeline thread, around the engine's reading of it (a folder source counts resumed
    # files whose reading a stop or kill cut short).
    # Refused before any reading (a folder's symlink, a file over max_file_mb): the pipeline
    # publishes this error as the job's result without running the engine.
    refused: EdgeOcrError | None = None
    on_read_start: Callable[[], None] | None = None
    on_read_end: Callable[[], None] | None = None
    # Called instead of on_done when a sink could not take the result (a disk failure: the spool
    # is full): the source keeps the input and offers it again later. None: the result is dropped.
    on_stalled: Callable[[str], None] | None = None
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    droppable: bool = False
    to_sinks: bool = True  # False: the source answers itself (a fleet job's answer goes to its response topic)
    # False: unrelated to the source's last reading (fleet jobs come from many clients): no
    # previous_text, always changed, and not remembered, so no job shows another client's text.
    compared: bool = True
    regions: tuple[Region, ...] = ()  # the source's rules: boxes in camera pixels, patterns
    stable_reads: int = 1
    publish_every: bool | None = None
    capture_ms: float | None = None


def printable_name(name: str) -> str:
    """A file name as JSON can carry it: bytes that are not UTF-8 (kept by Python as surrogate
    escapes) become ``\\xff`` text, so a result always encodes; valid names are unchanged."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def log_name(name: str) -> str:
    """A file name for a one-line log: ``printable_name`` with control characters as ``\\xNN``, so a
    name holding a newline cannot start a line of its own in the journal."""
    return CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()), printable_name(name))


def output_from_dict(data: dict[str, Any]) -> EngineOutput:
    """Rebuild the engine output of a stored result JSON (``Result.to_dict()``); KeyError/ValueError if malformed."""
    lines = tuple(
        TextLine(
            str(line["text"]),
            float(line["score"]),
            np.asarray(line["box"], dtype=np.float32).reshape(4, 2),
            roi=line.get("roi"),
        )
        for line in data["lines"]
    )
    return EngineOutput(lines, (0, 0), {})
