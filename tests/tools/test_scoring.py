"""edge_ocr.tools.scoring: metrics checked against definitions small enough to do by hand."""

from __future__ import annotations

import random

import numpy as np
import pytest

from edge_ocr.tools import scoring


def _naive_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def test_edit_distance_matches_the_textbook_dp():
    rng = random.Random(1)
    for _ in range(200):
        a = "".join(rng.choice("ab皖1 ") for _ in range(rng.randint(0, 12)))
        b = "".join(rng.choice("ab皖1 ") for _ in range(rng.randint(0, 12)))
        assert scoring.edit_distance(a, b) == _naive_distance(a, b), (a, b)


def test_cer_and_normalisers():
    assert scoring.cer("kitten", "sitting") == pytest.approx(3 / 6)
    assert scoring.alnum("皖A·C4933") == "皖ac4933"
    assert scoring.alnum("ＴＯＴＡＬ：１２") == "total12"  # NFKC: full-width letters and digits
    assert scoring.relaxed("比较 文学，Tax\tINVOICE") == "比较文学,taxinvoice"
    assert scoring.strict("  Tax   INVOICE\n") == "Tax INVOICE"


def test_quad_iou():
    a = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    b = a + np.array([5, 0], np.float32)
    assert scoring.quad_iou(a, a) == pytest.approx(1.0)
    assert scoring.quad_iou(a, b) == pytest.approx(50 / 150)


def _box(x: float, y: float, w: float = 10, h: float = 10) -> np.ndarray:
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)


def test_match_page_leaves_detections_on_dont_care_boxes_out():
    match = scoring.match_page(
        truth_boxes=[_box(0, 0), _box(100, 100, 40, 10)],
        truth_texts=["HELLO", "###"],
        ignored=[False, True],
        pred_boxes=[_box(0, 0), _box(100, 100, 15, 10), _box(300, 300)],  # the second lies inside the don't-care box
        pred_texts=["hello", "x", "noise"],
    )
    assert (match.true_positives, match.detections, match.truths, match.e2e_hits) == (1, 2, 1, 1)
    # page CER: "hello" against "hellonoise" (the text on the don't-care box is left out too)
    assert (match.page_edits, match.page_length) == (5, 5)
    assert scoring.f1(1, 1, 1) == (1.0, 1.0, 1.0)


def test_end_to_end_hits_compare_relaxed_texts():
    match = scoring.match_page([_box(0, 0)], ["比较文学，ＡＢ"], [False], [_box(1, 0)], ["比较 文学,ab"])
    assert match.e2e_hits == 1
    assert scoring.match_page([_box(0, 0)], ["TOTAL:"], [False], [_box(1, 0)], ["TOTAL"]).e2e_hits == 0


def test_scoring_order_is_rows_then_left_to_right():
    boxes = [_box(50, 0), _box(0, 2), _box(0, 30), _box(30, 31)]
    assert scoring.scoring_order(boxes) == [1, 0, 2, 3]
