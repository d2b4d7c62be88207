"""The EdgeOcrError tree: every error edge-ocr raises on purpose. Imports nothing.

    EdgeOcrError                 base; ``code`` is stable and appears in result JSON
    ├── ConfigError              bad config or usage (exit 2)
    ├── ModelError               missing pack, checksum mismatch, session failure
    │   └── UnknownPack          no pack of that name (a usage error: exit 2, never retried)
    ├── ImageError               input that is not a usable image (HTTP 4xx, ``failed/``)
    │   ├── UnsupportedImage     not an image format we decode, or corrupt/truncated
    │   ├── ImageTooLarge        over the byte or pixel cap (decompression bombs)
    │   └── RegionOutsideImage   a region asked of an image lies wholly outside it
    ├── SourceError              a source cannot deliver (offline, retry)
    └── SinkError                a sink cannot accept (spool, broker)
"""

from __future__ import annotations

from enum import IntEnum


class EdgeOcrError(Exception):
    """Base of all edge-ocr errors; ``code`` is a stable machine-readable name."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(EdgeOcrError):
    """``problems``: each problem on its own (a config file may have several, one per section or
    source); ``message`` joins them."""

    code = "config"

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


class ModelError(EdgeOcrError):
    code = "model"


class UnknownPack(ModelError):
    """No pack of the name asked for: a typo in ``engine.pack`` or ``--pack``, which restarting
    the daemon every 5 s cannot fix."""


class ImageError(EdgeOcrError):
    code = "image"


class UnsupportedImage(ImageError):
    code = "unsupported_image"


class ImageTooLarge(ImageError):
    code = "image_too_large"


class RegionOutsideImage(ImageError):
    """A region asked of one image (HTTP ``rois``, a fleet job) has no pixel inside it."""

    code = "invalid_rois"


class SourceError(EdgeOcrError):
    code = "source"


class SinkError(EdgeOcrError):
    code = "sink"


class ExitCode(IntEnum):
    """The process's exit codes (SPEC: 0 ok, 1 runtime failure, 2 usage or config error)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    MEMORY = 3  # the memory guard's hard limit: systemd restarts the daemon with fresh memory
