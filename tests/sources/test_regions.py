"""edge_ocr.sources.regions: crops, preprocessing, the canvas and the frame difference (pure)."""

from __future__ import annotations

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
