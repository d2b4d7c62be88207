"""A bounded, thread-safe least-recently-used store of engine outputs keyed by request content.

The HTTP API uses it so that the same image posted again (an automation re-sending an unchanged
snapshot) is answered without running the models: hashing a page costs ~0.1 ms, reading it
~350 ms (bench/tricks.py). The drop folder keeps its own store on disk (sources/folder.py).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace

from edge_ocr.engine.types import EngineOutput, Region


def content_key(data: bytes, *options: Hashable) -> str:
    """sha256 of the bytes and the request options that change the output (det, regions)."""
    digest = hashlib.sha256(data)
    digest.update(repr(options).encode("utf-8"))
    return digest.hexdigest()


class OutputCache:
    """At most ``capacity`` outputs; ``capacity = 0`` stores nothing."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, EngineOutput] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> EngineOutput | None:
        with self._lock:
            output = self._items.get(key)
            if output is not None:
                self._items.move_to_end(key)
            return output

    def put(self, key: str, output: EngineOutput) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[key] = output
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class CachedOcr:
    """The HTTP API's OCR path: ``engine(image, rois=..., det=..., limit_side=...)`` behind an
    OutputCache of ``capacity`` outputs; ``on_hit`` is called for each request answered from the
    cache, ``on_read`` with each output the engine made and its milliseconds."""

    def __init__(self, engine: Callable[..., EngineOutput], capacity: int,
                 on_hit: Callable[[], None] | None = None,
                 on_read: Callable[[EngineOutput, float], None] | None = None) -> None:
        self._engine = engine
        self._cache = OutputCache(capacity)
        self._on_hit = on_hit
        self._on_read = on_read

    def __call__(self, image: bytes, det: bool, rois: Sequence[Region], limit_side: int | None = None
                 ) -> EngineOutput:
        """``limit_side``: the memory guard's smaller detection input, part of the key (it changes
        the output)."""
        start = time.perf_counter()
        key = content_key(image, det, tuple(rois), limit_side)
        output = self._cache.get(key)
        if output is not None:
            if self._on_hit is not None:
                self._on_hit()
            # This answer's own time, as the drop folder's reuse reports it: no stage ran.
            return replace(output, timing_ms={"total": round((time.perf_counter() - start) * 1000.0, 2)})
        output = self._engine(image, rois=list(rois) or None, det=det, limit_side=limit_side)
        if self._on_read is not None:
            self._on_read(output, (time.perf_counter() - start) * 1000.0)
        self._cache.put(key, output)
        return output

    def clear(self) -> None:
        """Release the stored outputs (the memory guard's soft level)."""
        self._cache.clear()
