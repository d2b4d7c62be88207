"""The Source Protocol: a named producer of Jobs handed to a submit callable.

Imports results and config only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum
from typing import Protocol

from edge_ocr.config import SourceConfig
from edge_ocr.results import Job

# submit(job) -> True once queued; False when the pipeline is stopping (the job was not taken).
Submit = Callable[[Job], bool]


class SourceStatus(str, Enum):
    ONLINE = "online"
    OFFLINE = "offline"


class Source(Protocol):
    """What the daemon needs of a source: it runs on its own thread, says when its first start-up
    attempt is over (``ready``), reports online/offline, takes live config keys and commands."""

    name: str
    ready: threading.Event

    @property
    def status(self) -> SourceStatus: ...

    def update(self, cfg: SourceConfig) -> None:
        """Apply the live keys of a reloaded config (of this source's own type)."""

    def run(self, stop: threading.Event) -> None:
        """The source's thread body: produce jobs until ``stop`` is set."""

    def capture_now(self) -> str:
        """Take an image (camera) or rescan (folder) as soon as possible; returns a short note."""
