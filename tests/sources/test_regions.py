"""edge_ocr.sources.regions: crops, preprocessing, the canvas and the frame difference (pure)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_ocr.config import CameraSourceConfig
from edge_ocr.sources import regions
from tests.frames import BOX, text_frame


def test_difference_ignores_noise_and_sees_a_small_change():
    a = text_frame("12.3")
    rng = np.random.default_rng(0)
    noisy = np.clip(a.astype(np.int16) + rng.normal(0, 4, a.shape), 0, 255).astype(np.uint8)
    changed = text_frame("12.8")
    ref = regions.thumbnails(a, [BOX])
    assert regions.difference(ref, regions.thumbnails(a, [BOX])) == 0.0
    # Sensor noise (sigma 4, clipped at white) stays under the default change_threshold.
    assert regions.difference(ref, regions.thumbnails(noisy, [BOX])) < CameraSourceConfig("c").change_threshold
    assert regions.difference(ref, regions.thumbnails(changed, [BOX])) > 10.0
    # Whole frame: a change in a corner of a big frame still counts (block maximum, not a global mean).
    big = np.full((1080, 1920, 3), 255, dtype=np.uint8)
    corner = big.copy()
    corner[1000:1040, 1800:1900] = 0
    assert regions.difference(regions.thumbnails(big), regions.thumbnails(corner)) > 10.0
    assert regions.difference(ref, regions.thumbnails(a)) == float("inf")  # shape changed


def _reading(size: tuple[int, int], text: str, scale: float) -> np.ndarray:
    frame = np.full((size[1], size[0], 3), 235, dtype=np.uint8)
    cv2.putText(frame, text, (100, 380), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), max(1, int(scale * 2.5)),
                cv2.LINE_AA)
    return frame


def _camera_jpeg(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The frame as a cheap camera sends it: sensor noise (sigma 4), then JPEG at quality 70."""
    noisy = np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8)
    return cv2.imdecode(cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], cv2.IMREAD_COLOR)


@pytest.mark.parametrize(("size", "scale", "box"), [
    ((1280, 720), 1.0, None), ((1920, 1080), 0.6, None), ((640, 480), 0.6, None),  # whole frames, small text
    ((1280, 720), 0.8, (90, 355, 700, 40)), ((1280, 720), 0.6, (95, 360, 200, 30)),  # meter regions
])
def test_one_changed_digit_counts_and_camera_noise_does_not_at_any_frame_size(size, scale, box):
    """The last digit of a reading moves by one on an HD camera: a change over the default
    change_threshold (64 px wide thumbnails made it 0.8, so the old reading stood for good), while
    two noisy JPEGs of one frame stay under it."""
    rng = np.random.default_rng(1)
    threshold = CameraSourceConfig("c").change_threshold
    boxes = [box] if box else []
    before, after = _reading(size, "Total 001234.5", scale), _reading(size, "Total 001234.6", scale)
    seen = regions.thumbnails(_camera_jpeg(before, rng), boxes)
    assert regions.difference(seen, regions.thumbnails(_camera_jpeg(after, rng), boxes)) > threshold
    assert max(regions.difference(seen, regions.thumbnails(_camera_jpeg(before, rng), boxes))
               for _ in range(4)) < threshold


def test_prepare_grey_clahe_invert_rotate():
    crop = np.zeros((10, 30, 3), dtype=np.uint8)
    crop[:, :5] = (0, 0, 255)
    out = regions.prepare(crop, invert=True)
    assert out.shape == (10, 30, 3) and out[0, 0].tolist() == [255, 255, 0] and crop[0, 0].tolist() == [0, 0, 255]
    grey = regions.prepare(crop, grey=True)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert regions.prepare(crop, rotate=90).shape == (30, 10, 3)
    assert regions.prepare(crop, rotate=90)[0, -1].tolist() == [0, 0, 255]  # left column went to the top
    assert regions.prepare(crop, rotate=270)[-1, 0].tolist() == [0, 0, 255]
    assert regions.prepare(crop, rotate=180)[0, -1].tolist() == [0, 0, 255]
    assert regions.prepare(crop, clahe=True).shape == (10, 30, 3)
    with pytest.raises(ValueError):
        regions.prepare(crop, rotate=45)


def test_canvas_stacks_crops_and_boxes_point_at_them():
    a = np.full((10, 40, 3), 1, dtype=np.uint8)
    b = np.full((20, 15, 3), 2, dtype=np.uint8)
    image, boxes = regions.canvas([a, b], gap=4)
    assert image.shape == (34, 40, 3) and boxes == ((0, 0, 40, 10), (0, 14, 15, 20))
    for crop, (x, y, w, h) in zip((a, b), boxes):
        assert (image[y:y + h, x:x + w] == crop).all()


def test_boxes_outside_the_frame_are_clipped_or_blank():
    frame = np.zeros((100, 200, 3), dtype=np.uint8)
    assert regions.clip_box((150, 50, 100, 100), frame.shape) == (150, 50, 50, 50)
    assert regions.clip_box((300, 0, 10, 10), frame.shape) is None
    assert regions.crop(frame, (300, 0, 10, 10)).shape == regions.EMPTY_CROP + (3,)
    assert regions.to_bgr(np.zeros((5, 6), dtype=np.uint8)).shape == (5, 6, 3)
    assert regions.to_bgr(np.zeros((5, 6, 4), dtype=np.uint8)).shape == (5, 6, 3)
