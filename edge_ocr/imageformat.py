"""Which image format a file is, from its first bytes: the one magic-number table, used by the
engine's header probe (pixel cap before decoding) and the drop folder's completeness check.
Imports nothing from edge_ocr.
"""

from __future__ import annotations

FORMATS = ("jpeg", "png", "bmp", "tiff", "webp")
SNIFF_BYTES = 12  # how much of the file start ``sniff`` needs


def sniff(head: bytes) -> str | None:
    """``"jpeg"``, ``"png"``, ``"bmp"``, ``"tiff"``, ``"webp"`` or None for anything else."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None
