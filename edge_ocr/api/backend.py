"""The one seam between the API and the daemon: what the routes may ask of it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

from edge_ocr.engine.types import Region
from edge_ocr.readiness import Readiness
from edge_ocr.results import Result


class ApiBackend(Protocol):
    """What the HTTP API needs from the daemon: one typed seam, which the daemon (App) and the
    API's tests both implement."""

    def ocr(self, image: bytes, *, det: bool, rois: tuple[Region, ...]) -> Result:
        """OCR one uploaded image. Raises ImageError for a bad image and TimeoutError when the
        work cannot be scheduled in time (→ 503 busy); may instead return a Result whose
        ``error`` is set (an ImageError maps to its 4xx, anything else to 500)."""

    def capture(self, source: str | None) -> tuple[bool, str]:
        """Take an image now from ``source`` (None: every source): ``(ok, message)``."""

    def latest(self, source: str | None) -> Result | None:
        """The newest result of ``source``, or of any source for None."""

    def source_names(self) -> Collection[str]:
        """The names /api/latest/<s> and /api/capture/<s> accept."""

    def stats_view(self) -> Mapping[str, Any]:
        """GET /api/stats."""

    def metrics_text(self) -> str:
        """The daemon's part of GET /metrics (Prometheus text)."""

    def readiness(self) -> Readiness:
        """GET /readyz."""

    def config_view(self) -> Mapping[str, Any]:
        """GET /api/config: the config as JSON, secrets masked."""

    def accepting(self) -> bool:
        """False at the memory guard's hard level: OCR is refused with 503 not_ready."""
