"""edge_ocr.cache: the HTTP API's store of recent outputs."""

from __future__ import annotations

from edge_ocr.cache import CachedOcr, OutputCache, content_key
from edge_ocr.engine.types import EngineOutput, Region


def _output(text: str) -> EngineOutput:
    return EngineOutput((), (10, 10), {"total": 1.0}) if not text else EngineOutput((), (len(text), 1), {})


def test_the_key_covers_the_bytes_and_the_options():
    region = Region("meter", (0, 0, 10, 10), allowed_chars="0123456789")
    assert content_key(b"img", True, ()) == content_key(b"img", True, ())
    assert content_key(b"img", True, ()) != content_key(b"img2", True, ())
    assert content_key(b"img", True, ()) != content_key(b"img", False, ())
    assert content_key(b"img", False, (region,)) != content_key(b"img", False, ())


def test_least_recently_used_outputs_go_first():
    cache = OutputCache(2)
    a, b, c = _output("a"), _output("bb"), _output("ccc")
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # a is now the most recent
    cache.put("c", c)
    assert cache.get("b") is None and cache.get("a") is a and cache.get("c") is c and len(cache) == 2
    cache.clear()
    assert cache.get("a") is None


def test_capacity_zero_stores_nothing():
    cache = OutputCache(0)
    cache.put("a", _output("a"))
    assert cache.get("a") is None and len(cache) == 0


def test_cached_ocr_runs_the_engine_once_per_distinct_request():
    calls: list[tuple[bytes, object, bool, object]] = []
    hits: list[int] = []
    reads: list[EngineOutput] = []

    def engine(image: bytes, rois=None, det=True, limit_side=None) -> EngineOutput:
        calls.append((image, rois, det, limit_side))
        return _output(image.decode())

    ocr = CachedOcr(engine, capacity=4, on_hit=lambda: hits.append(1), on_read=lambda out, ms: reads.append(out))
    region = Region("meter", (0, 0, 5, 5))
    first = ocr(b"abc", True, ())
    again = ocr(b"abc", True, ())
    assert again.lines is first.lines and len(calls) == 1 and len(hits) == 1 and reads == [first]
    assert set(again.timing_ms) == {"total"}  # the answer's own time: no stage ran for it
    ocr(b"abc", False, (region,))  # other options: another engine run, regions passed as a list
    assert calls[-1] == (b"abc", [region], False, None) and len(calls) == 2
    ocr(b"abc", True, (), 640)  # the memory guard's smaller detection input: another output, not the cached one
    assert calls[-1] == (b"abc", None, True, 640) and len(calls) == 3 and len(reads) == 3
    ocr.clear()
    ocr(b"abc", True, ())
    assert len(calls) == 4
