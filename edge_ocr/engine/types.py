"""Value types passed between engine stages and out of the engine. numpy only."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# A quadrilateral as 4 (x, y) points, clockwise from top-left, float32, shape (4, 2).
Quad = np.ndarray


@dataclass(frozen=True, slots=True)
class Transform:
    """Maps source pixel coordinates to a working image: ``work = src * scale + offset``.

    Every resize/crop in preprocessing returns one, so detected quads can be mapped back
    to the pixels of the image the user gave us.
    """

    scale_x: float = 1.0
    scale_y: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) working-image points back to source coordinates (float32)."""
        pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        out = np.empty_like(pts)
        out[:, 0] = (pts[:, 0] - self.offset_x) / self.scale_x
        out[:, 1] = (pts[:, 1] - self.offset_y) / self.scale_y
        return out

    def then(self, other: Transform) -> Transform:
        """The transform that applies ``self`` first, then ``other``."""
        return Transform(
            scale_x=self.scale_x * other.scale_x,
            scale_y=self.scale_y * other.scale_y,
            offset_x=self.offset_x * other.scale_x + other.offset_x,
            offset_y=self.offset_y * other.scale_y + other.offset_y,
        )


@dataclass(frozen=True, slots=True)
class Region:
    """A named region of interest to recognise directly, skipping detection.

    ``box`` is ``(x, y, width, height)`` in source pixels. ``allowed_chars`` restricts the
    decoder (an empty string means every character of the pack's charset).
    """

    name: str
    box: tuple[int, int, int, int]
    allowed_chars: str = ""


@dataclass(frozen=True, slots=True)
class TextLine:
    """One recognised line: text, confidence in [0, 1], quad in source pixels."""

    text: str
    score: float
    box: Quad
    det_score: float = 1.0
    roi: str | None = None

    def box_list(self) -> list[list[int]]:
        return [[int(round(x)), int(round(y))] for x, y in np.asarray(self.box).reshape(4, 2)]


@dataclass(frozen=True, slots=True)
class EngineOutput:
    """What one engine call returns. ``timing_ms`` keys: decode, preprocess, detect,
    classify, recognize, total (stages that did not run are absent)."""

    lines: tuple[TextLine, ...]
    image_size: tuple[int, int]  # (width, height) of the decoded source image
    timing_ms: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines if line.text)
