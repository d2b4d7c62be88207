"""edge_ocr.imageformat: the one magic-number table."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_ocr.imageformat import FORMATS, SNIFF_BYTES, sniff


@pytest.mark.parametrize("extension, kind", [(".jpg", "jpeg"), (".png", "png"), (".bmp", "bmp"), (".tiff", "tiff"),
                                              (".webp", "webp")])
def test_each_format_opencv_writes_is_known_by_its_first_bytes(extension, kind):
    ok, encoded = cv2.imencode(extension, np.full((8, 8, 3), 200, np.uint8))
    assert ok and sniff(encoded.tobytes()[:SNIFF_BYTES]) == kind and kind in FORMATS


def test_anything_else_is_unknown():
    assert sniff(b"") is None and sniff(b"%PDF-1.7") is None and sniff(b"GIF89a") is None


def test_formats_it_does_not_read_are_named_and_the_ones_it_reads_are_not():
    from edge_ocr.imageformat import unsupported_kind

    assert unsupported_kind(b"\x00\x00\x00\x18ftypmif1\x00\x00").startswith("HEIC/HEIF")
    assert unsupported_kind(b"%PDF-1.4\n%") is not None
    for extension in (".jpg", ".png", ".bmp", ".tiff", ".webp"):
        encoded = cv2.imencode(extension, np.full((8, 8, 3), 200, np.uint8))[1]
        assert unsupported_kind(encoded.tobytes()[:SNIFF_BYTES]) is None
