"""Pure image operations of camera sources: region crops and their light preprocessing, the
canvas of crops handed to the engine, and the cheap difference that skips unchanged frames.

Arrays in, arrays out: no I/O, logging, clock or state. Frames are BGR uint8 (H, W, 3).
Imports numpy and cv2 only.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels

# Change detection compares grey thumbnails, never upscaled: a region at this height (a line of
# text: a glyph keeps ~12 px, so one changed digit moves a block by 14-25 grey levels), a whole
# frame within this many pixels (small text at 1080p keeps 2-3 px). Measured on drawn readings
# whose last digit changes, against two noisy JPEGs of one frame (sigma 4, quality 70): regions
# 14.0-17.0 against noise at most 2.6; frames 4.1-121 against at most 3.1 (1080p down to 640x480).
# The 64 px wide thumbnails before missed such a change below change_threshold's default 3.0
# (0.8 on 720p and 1080p frames, 1.2 on a 700x40 region): the old reading stood for good.
REGION_THUMB_HEIGHT = 12
FRAME_THUMB_PIXELS = 49_152
BLOCK = 4  # px of the thumbnail: the difference is the largest mean over BLOCK×BLOCK cells
CANVAS_GAP = 8  # px between crops on the canvas
EMPTY_CROP = (32, 96)  # (h, w) of the blank crop standing in for a box outside the frame


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """Any camera frame (grey H×W, BGR, BGRA/XBGR H×W×4) as contiguous BGR uint8 H×W×3."""
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.shape[2] == 1:
        return cv2.cvtColor(frame[:, :, 0], cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(frame)


def clip_box(box: Box, shape: tuple[int, ...]) -> Box | None:
    """``box`` clipped to a frame of ``shape`` (H, W, ...); None if nothing of it is inside."""
    x, y, w, h = box
    height, width = shape[0], shape[1]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def crop(frame: np.ndarray, box: Box) -> np.ndarray:
    """The pixels of ``box`` (a view), or a blank white crop when the box is outside the frame."""
    clipped = clip_box(box, frame.shape)
    if clipped is None:
        return np.full(EMPTY_CROP + frame.shape[2:], 255, dtype=frame.dtype)
    x, y, w, h = clipped
    return frame[y:y + h, x:x + w]


def prepare(image: np.ndarray, grey: bool = False, clahe: bool = False, invert: bool = False,
            rotate: int = 0) -> np.ndarray:
    """Light preprocessing of one BGR crop, in this order: grey, CLAHE contrast, invert, rotate.

    ``rotate`` is 0/90/180/270 degrees clockwise. Returns a new contiguous BGR uint8 array
    (H×W×3, or W×H×3 after 90/270); the input is not modified.
    """
    out = image
    if grey or clahe:
        g = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
        if clahe:
            g = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(g)
        out = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
    if invert:
        out = 255 - out
    if rotate == 90:
        out = cv2.rotate(out, cv2.ROTATE_90_CLOCKWISE)
    elif rotate == 180:
        out = cv2.rotate(out, cv2.ROTATE_180)
    elif rotate == 270:
        out = cv2.rotate(out, cv2.ROTATE_90_COUNTERCLOCKWISE)
    elif rotate != 0:
        raise ValueError("rotate: expected 0, 90, 180 or 270, got %r" % rotate)
    return np.ascontiguousarray(out) if out is not image else out.copy()


def canvas(crops: Sequence[np.ndarray], gap: int = CANVAS_GAP) -> tuple[np.ndarray, tuple[Box, ...]]:
    """Stack BGR crops top to bottom on one black canvas; returns it and each crop's box on it.

    The engine then reads every region of a frame in one call while the queue holds only
    these pixels, not the whole frame.
    """
    if not crops:
        raise ValueError("canvas: no crops")
    width = max(c.shape[1] for c in crops)
    height = sum(c.shape[0] for c in crops) + gap * (len(crops) - 1)
    out = np.zeros((height, width, 3), dtype=np.uint8)
    boxes = []
    y = 0
    for c in crops:
        h, w = c.shape[:2]
        out[y:y + h, :w] = c
        boxes.append((0, y, w, h))
        y += h + gap
    return out, tuple(boxes)


def thumbnail(image: np.ndarray, height: int = 0, pixels: int = FRAME_THUMB_PIXELS) -> np.ndarray:
    """A grey uint8 copy at most ``height`` px high (0: at most ``pixels`` px in all), aspect kept,
    area interpolation, never enlarged."""
    h, w = image.shape[:2]
    scale = height / h if height else (pixels / max(h * w, 1)) ** 0.5
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image.copy()


def thumbnails(frame: np.ndarray, boxes: Sequence[Box] = ()) -> tuple[np.ndarray, ...]:
    """What change detection compares: one thumbnail per box (a line of text), or of the whole
    frame without boxes."""
    if not boxes:
        return (thumbnail(frame),)
    return tuple(thumbnail(crop(frame, box), height=REGION_THUMB_HEIGHT) for box in boxes)


def difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray], block: int = BLOCK) -> float:
    """How much two sets of thumbnails differ, in grey levels (0..255).

    The largest mean absolute difference over ``block``×``block`` cells of any thumbnail
    pair: a digit changing in a corner counts fully, sensor noise averages out. Different
    shapes or counts (the camera changed mode) give ``inf``.
    """
    if len(a) != len(b):
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return float("inf")
        d = cv2.absdiff(x, y).astype(np.float32)
        h, w = d.shape
        hb, wb = -(-h // block), -(-w // block)
        padded = np.zeros((hb * block, wb * block), dtype=np.float32)
        padded[:h, :w] = d
        counts = np.zeros_like(padded)
        counts[:h, :w] = 1.0
        sums = padded.reshape(hb, block, wb, block).sum(axis=(1, 3))
        n = counts.reshape(hb, block, wb, block).sum(axis=(1, 3))
        worst = max(worst, float((sums / n).max()))
    return worst
