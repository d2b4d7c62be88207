"""Frames and video files for camera tests: text drawn big and clean, eval-dev crops pasted in,
MJPG .avi files written with cv2.VideoWriter."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

SIZE = (320, 240)  # (w, h) of test frames
BOX = (20, 60, 260, 100)  # the ROI around the text drawn by text_frame


def text_frame(text: str, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A white BGR frame with ``text`` in black inside BOX."""
    frame = np.full((size[1], size[0], 3), 255, dtype=np.uint8)
    cv2.putText(frame, text, (40, 130), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (0, 0, 0), 5, cv2.LINE_AA)
    return frame


def paste(frame: np.ndarray, crop: np.ndarray, at: tuple[int, int]) -> tuple[int, int, int, int]:
    """Paste ``crop`` at (x, y) into ``frame`` in place; returns its box (x, y, w, h)."""
    x, y = at
    h, w = crop.shape[:2]
    frame[y:y + h, x:x + w] = crop
    return (x, y, w, h)


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """An MJPG .avi of ``frames`` (all the same size)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), "cv2.VideoWriter cannot write MJPG"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path
