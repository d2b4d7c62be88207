"""edge_ocr.scoring: metrics checked against definitions small enough to do by hand."""

from __future__ import annotations

import random

import numpy as np
import pytest

from edge_ocr import scoring


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
    assert scoring.fold("  Tax   INVOICE\n") == "tax invoice"


def test_quad_iou():
    a = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    b = a + np.array([5, 0], np.float32)
    assert scoring.quad_iou(a, a) == pytest.approx(1.0)
    assert scoring.quad_iou(a, b) == pytest.approx(50 / 150)


def test_match_page_ignores_dont_care_boxes_both_ways():
    box = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    far = box + 100
    match = scoring.match_page(
        truth_boxes=[box, far],
        truth_texts=["HELLO", "###"],
        ignored=[False, True],
        pred_boxes=[box, far],
        pred_texts=["hello", "x"],
    )
    assert match == scoring.PageMatch(true_positives=1, detections=1, truths=1, e2e_hits=1)
    assert scoring.f1(1, 1, 1) == (1.0, 1.0, 1.0)
