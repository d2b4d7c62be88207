"""A progress line on stderr for the CLI's long runs (`edge-ocr ocr`, `eval`, `bench`):
items done, rate and time left, redrawn in place, only when stderr is a terminal (never in
journald, a pipe or a CI log). stdlib only; the daemon does not use it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``step()`` after each item; ``close()`` at the end (clears the line)."""

    def __init__(self, total: int, what: str = "files", stream: TextIO | None = None, min_interval_s: float = 0.2):
        self.total, self.what = total, what
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = total > 1 and self.stream.isatty()
        self.done = 0
        self._started = time.monotonic()
        self._drawn = 0.0
        self._min_interval_s = min_interval_s

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= self._min_interval_s or self.done >= self.total):
            self._drawn = now
            self.stream.write("\r\x1b[K" + self.line(now - self._started))
            self.stream.flush()

    def line(self, elapsed_s: float) -> str:
        """``"12/200 files · 3.4/s · 55 s left"``."""
        rate = self.done / elapsed_s if elapsed_s > 0 else 0.0
        text = "%d/%d %s" % (self.done, self.total, self.what)
        if rate > 0:
            text += " · %.1f/s" % rate
            left = (self.total - self.done) / rate
            text += " · %s left" % _duration(left) if self.done < self.total else " · %s" % _duration(elapsed_s)
        return text

    def clear(self) -> None:
        """Wipe the line, before printing something else to the same terminal (``step`` redraws it)."""
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def close(self) -> None:
        self.clear()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return "%d s" % seconds if seconds < 90 else "%d min %02d s" % divmod(seconds, 60)
