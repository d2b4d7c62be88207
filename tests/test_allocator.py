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
