"""edge_ocr.engine.detect: DB post-processing on synthetic probability maps, reading order."""

from __future__ import annotations

import numpy as np

from edge_ocr.engine.detect import DbParams, boxes_from_map, order_quad, reading_order


def test_one_text_kernel_becomes_one_grown_box():
    prob = np.zeros((100, 200), np.float32)
    prob[40:50, 20:120] = 0.9
    quads, scores = boxes_from_map(prob, DbParams())
    assert len(quads) == 1 and scores[0] > 0.85
    quad = quads[0]
    # The kernel is 100x10 px; unclip grows each side by area*1.5/perimeter ≈ 6.8 px.
    assert 110 < quad[1, 0] - quad[0, 0] < 118
    assert 20 < quad[3, 1] - quad[0, 1] < 28


def test_faint_and_tiny_blobs_are_dropped():
    prob = np.zeros((100, 200), np.float32)
    prob[10:20, 10:100] = 0.45  # above thresh, below box_thresh
    prob[60:62, 150:152] = 0.99  # smaller than min_size
    assert boxes_from_map(prob, DbParams()) == ([], [])


def test_order_quad_is_clockwise_from_top_left():
    shuffled = np.array([[10, 5], [0, 5], [0, 0], [10, 0]], np.float32)
    assert order_quad(shuffled).tolist() == [[0, 0], [10, 0], [10, 5], [0, 5]]


def _box(x, y, w=40, h=10):
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)


def test_reading_order_is_rows_then_left_to_right():
    quads = [_box(100, 51), _box(0, 0), _box(0, 50), _box(100, 2)]
    assert reading_order(quads) == [1, 3, 2, 0]


def test_reading_order_of_nothing():
    assert reading_order([]) == []
