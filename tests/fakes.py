"""Fakes that implement our Protocols (never MagicMock): an engine that reads ``TEXT:<text>`` files."""

from __future__ import annotations

import threading

import numpy as np

from edge_ocr.engine.types import EngineOutput, TextLine
from edge_ocr.errors import UnsupportedImage

QUAD = np.array([[0, 0], [10, 0], [10, 5], [0, 5]], dtype=np.float32)


class FakeEngine:
    """pipeline.Engine: ``TEXT:hello`` → one line "hello"; anything else → UnsupportedImage."""

    reading_id = "fake"  # what it reads never changes

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[bytes] = []
        self.gate = gate  # when given, each call waits for it (to hold the worker busy)

    def __call__(self, image, rois=None, det=True, limit_side=None) -> EngineOutput:
        self.calls.append(bytes(image))
        if self.gate is not None:
            assert self.gate.wait(10)
        if not image.startswith(b"TEXT:"):
            raise UnsupportedImage("not an image")
        text = image[5:].decode()
        lines = (TextLine(text, 0.99, QUAD),) if text else ()
        return EngineOutput(lines, (10, 5), {"total": 1.0})

    def release_idle(self) -> tuple[str, ...]:
        return ()

    def close(self) -> None:
        pass


class ScriptedRegionEngine:
    """pipeline.Engine for region jobs: each call answers the next ``{roi: (text, score)}`` of the script."""

    reading_id = "fake"  # what it reads never changes

    def __init__(self, script: list[dict[str, tuple[str, float]]]) -> None:
        self.script = list(script)
        self.calls = 0

    def __call__(self, image, rois=None, det=True, limit_side=None) -> EngineOutput:
        reads = self.script[self.calls]
        self.calls += 1
        lines = tuple(TextLine(*reads[r.name], QUAD, roi=r.name) for r in rois or () if r.name in reads)
        return EngineOutput(lines, (10, 5), {"total": 1.0})

    def release_idle(self) -> tuple[str, ...]:
        return ()

    def close(self) -> None:
        pass
