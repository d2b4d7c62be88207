"""edge_ocr.engine.detect: DB post-processing on synthetic probability maps, strip stitching."""

from __future__ import annotations

import numpy as np
import pytest

from edge_ocr.engine import detect, preprocess
from edge_ocr.engine.detect import DbParams, boxes_from_map, order_quad


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


@pytest.mark.parametrize("size", [(960, 544), (544, 960), (300 // 32 * 32, 224), (1024, 1024)])
def test_stitched_strips_give_back_the_whole_map(size):
    """Each tile's map is the whole map's window (plus junk in the padding): stitching them
    must give back the whole map exactly, rows (columns) taken from their owners."""
    rng = np.random.default_rng(0)
    whole = rng.random(size, dtype=np.float32)
    plan = preprocess.plan_strips(size, 384, 96, 160)
    maps = []
    for start in plan.starts:
        tile = rng.random(plan.tile, dtype=np.float32) + 5.0  # padding: never copied
        window = whole[start : start + plan.length] if plan.axis == 0 else whole[:, start : start + plan.length]
        tile[: window.shape[0], : window.shape[1]] = window
        maps.append(tile)
    np.testing.assert_array_equal(detect.stitch_strips(maps, plan), whole)


def test_stitching_takes_each_row_from_the_tile_where_it_is_furthest_from_a_cut():
    plan = preprocess.plan_strips((960, 320), 512, 64, 160)
    assert plan.starts == (0, 448)
    maps = [np.full(plan.tile, float(i), dtype=np.float32) for i in range(len(plan.starts))]
    stitched = detect.stitch_strips(maps, plan)
    # the overlap is rows 448..511: its first half from tile 0, its second from tile 1
    assert (stitched[:480] == 0).all() and (stitched[480:] == 1).all()


def test_median_height_is_the_median_of_the_quads_shorter_sides():
    def rect(w: float, h: float) -> np.ndarray:
        return np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)

    assert detect.median_height([]) == 0.0
    assert detect.median_height([rect(100, 8), rect(60, 10), rect(9, 200)]) == 9.0  # a tall line counts its width


def test_past_max_candidates_the_largest_regions_are_kept_not_the_first_found():
    # 10 lines at the top of a page and 1,200 specks below: with room for 1,000 candidates the
    # lines must survive (OpenCV lists contours from the bottom of the map up).
    prob = np.zeros((800, 800), dtype=np.float32)
    for row in range(10):
        prob[20 + row * 30 : 32 + row * 30, 50:750] = 0.9
    for i in range(1200):
        y, x = 400 + (i // 40) * 12, 10 + (i % 40) * 19
        prob[y : y + 4, x : x + 4] = 0.9
    params = DbParams(max_candidates=1000)
    quads, _ = boxes_from_map(prob, params)
    tops = [q for q in quads if q[:, 1].max() < 400]
    assert len(tops) == 10
