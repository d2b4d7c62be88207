"""PixelBudget: how many megapixels of images the engine reads at once, across threads.

A decoded image and its buffers grow with its pixels (a 48 MP photo peaks at ~400 MB here), so two
big ones read together (two HTTP requests, a request beside a dropped file) can take the daemon
past its memory guard's hard level, which restarts it. Each call holds its image's megapixels
while it is read; a call that does not fit waits for the others to finish. No image needs more
than the whole budget (``max_megapixels`` refuses bigger ones first), so none waits forever.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class PixelBudget:
    """At most ``capacity`` megapixels held at once; ``hold(mp)`` waits for room, in arrival order
    (a big image is not passed over for ever by small ones that keep fitting beside others)."""

    def __init__(self, capacity: float) -> None:
        self.capacity = capacity
        self._free = capacity
        self._line: deque[object] = deque()  # the holds waiting, first come first
        self._changed = threading.Condition()

    @property
    def free(self) -> float:
        with self._changed:
            return self._free

    @property
    def waiting(self) -> int:
        """How many holds wait for room now."""
        with self._changed:
            return len(self._line)

    @contextmanager
    def hold(self, megapixels: float) -> Iterator[None]:
        need = min(max(megapixels, 0.0), self.capacity)
        ticket = object()
        with self._changed:
            self._line.append(ticket)
            try:
                self._changed.wait_for(lambda: self._line[0] is ticket and self._free >= need)
            finally:
                self._line.remove(ticket)
                self._changed.notify_all()  # the next in line may fit beside this one
            self._free -= need
        try:
            yield
        finally:
            with self._changed:
                self._free += need
                self._changed.notify_all()
