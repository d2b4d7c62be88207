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


# Formats people send that are not read, by what they are called, so the error says which one
# (an iPhone's HEIC, a scanner's PDF) instead of showing its first bytes.
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
AVIF_BRANDS = (b"avif", b"avis")


def unsupported_kind(head: bytes) -> str | None:
    """A sentence naming a known format that is not read (HEIC, AVIF, PDF, GIF, SVG, JPEG 2000,
    BigTIFF), with what to send instead; None for anything else."""
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return ("HEIC/HEIF (the iPhone's \"High Efficiency\" photos) is not supported: send JPEG or PNG "
                "(iPhone: Settings > Camera > Formats > Most Compatible)")
    if head[4:8] == b"ftyp" and head[8:12] in AVIF_BRANDS:
        return "AVIF is not supported: send JPEG, PNG or WebP"
    if (head[4:8] == b"ftyp" and head[8:12] == b"jp2 ") or (head[:4] == b"\x00\x00\x00\x0c" and head[4:8] == b"jP  "):
        return "JPEG 2000 is not supported: send JPEG, PNG or TIFF"
    if head[:5] == b"%PDF-":
        return "PDF is not supported: send each page as an image (JPEG, PNG or TIFF)"
    if head[:4] == b"GIF8":
        return "GIF is not supported: send PNG"
    if head[:4] == b"<svg" or head[:5] == b"<?xml":
        return "SVG and other XML are not supported: send a raster image (PNG)"
    if head[:4] in (b"II+\x00", b"MM\x00+"):
        return "BigTIFF is not supported: send a TIFF under 4 GB, or PNG"
    return None
