"""The bad inputs of the reliability suite, made from real eval-dev images (test code).

Each maker returns the bytes of one kind of file a user might drop or upload. Pillow writes
the formats OpenCV cannot (CMYK JPEG, animated GIF/WebP, multi-page TIFF)."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from tests.helpers import png_bomb


def _pil(photo: Path) -> Image.Image:
    return Image.open(photo).convert("RGB")


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def cmyk_jpeg(photo: Path) -> bytes:
    return _save(_pil(photo).convert("CMYK"), "JPEG", quality=90)


def png16(photo: Path) -> bytes:
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    ok, data = cv2.imencode(".png", image.astype(np.uint16) * 257)
    assert ok
    return data.tobytes()


def multipage_tiff(photo: Path) -> bytes:
    first = _pil(photo)
    return _save(first, "TIFF", save_all=True, append_images=[first.rotate(90, expand=True)])


def animated(photo: Path, fmt: str) -> bytes:
    first = _pil(photo)
    frames = [first.rotate(5 * i) for i in range(1, 3)]
    return _save(first, fmt, save_all=True, append_images=frames, duration=100, loop=0)


def makers(photo: Path) -> dict[str, bytes]:
    """name → bytes for the folder kinds whose bytes are all that matter."""
    good = photo.read_bytes()
    return {
        "corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8 + b"IEND\xaeB`\x82",
        "truncated.jpg": good[: len(good) // 2],
        "empty.png": b"",
        "png-named.jpg": cv2.imencode(".png", cv2.imread(str(photo)))[1].tobytes(),
        "notes.txt": b"not an image at all\n" * 20,
        "script.sh.jpg": b"#!/bin/sh\nrm -rf /\n",
        "huge-100mp.png": png_bomb(10_000, 10_000),
        "bomb-400mp.png": png_bomb(20_000, 20_000),
        "multipage.tiff": multipage_tiff(photo),
        "animated.gif": animated(photo, "GIF"),
        "animated.webp": animated(photo, "WEBP"),
        "cmyk.jpg": cmyk_jpeg(photo),
        "sixteen-bit.png": png16(photo),
    }
