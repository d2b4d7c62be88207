"""edge_ocr.allocator: glibc's malloc settings, applied for real in this process."""

from __future__ import annotations

import pytest


def test_the_allocator_is_configured_on_glibc():
    import platform

    from edge_ocr import allocator

    assert allocator.configure("default") is (platform.libc_ver()[0] == "glibc")
    assert allocator.configure("low") is (platform.libc_ver()[0] == "glibc")
    with pytest.raises(ValueError, match="memory"):
        allocator.configure("tiny")


def _rss_mb() -> float:
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_trim_gives_the_free_heap_back_to_the_kernel():
    import platform

    from edge_ocr import allocator

    if platform.libc_ver()[0] != "glibc":
        assert allocator.trim() is False
        return
    # 80 MB of 4 KB blocks, every 50th kept: the freed pages sit between live ones, so glibc
    # cannot shrink its heap from the top and keeps them until trimmed.
    blocks = [bytearray(4096) for _ in range(20_000)]
    kept = blocks[::50]
    del blocks
    before = _rss_mb()
    assert allocator.trim() is True
    assert before - _rss_mb() > 40
    assert len(kept) == 400
