"""Pure accuracy metrics for `edge-ocr eval`: text normalisation, CER, quad IoU, matching.

numpy and OpenCV only; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


def alnum(text: str) -> str:
    """The published IIIT5K/IC15 comparison: letters and digits only, case-folded
    (CJK characters count as letters, so plates keep their province character)."""
    return "".join(c for c in text.casefold() if c.isalnum())


def fold(text: str) -> str:
    """Case-insensitive comparison with runs of white space collapsed."""
    return " ".join(text.casefold().split())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, one numpy row at a time (pages run to thousands of chars)."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    b_codes = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    index = np.arange(len(b) + 1)
    previous = index.copy()
    for i, char in enumerate(a, start=1):
        substitute = previous[:-1] + (b_codes != ord(char))
        delete = previous[1:] + 1
        current = np.empty_like(previous)
        current[0] = i
        current[1:] = np.minimum(substitute, delete)
        # insertions chain left to right: current[j] = min_k (current[k] + j - k)
        current = np.minimum.accumulate(current - index) + index
        previous = current
    return int(previous[-1])


def cer(truth: str, predicted: str) -> float:
    """Character error rate: edits / len(truth) (1.0 for empty truth with any output)."""
    if not truth:
        return 0.0 if not predicted else 1.0
    return edit_distance(truth, predicted) / len(truth)


def quad_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two convex quads (4, 2)."""
    pa = np.asarray(a, dtype=np.float32).reshape(-1, 1, 2)
    pb = np.asarray(b, dtype=np.float32).reshape(-1, 1, 2)
    area_a = abs(cv2.contourArea(pa))
    area_b = abs(cv2.contourArea(pb))
    if area_a <= 0 or area_b <= 0:
        return 0.0
    inter, _ = cv2.intersectConvexConvex(cv2.convexHull(pa), cv2.convexHull(pb))
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PageMatch:
    """Counts for one page: detections matched (IoU ≥ threshold) and end-to-end hits."""

    true_positives: int
    detections: int  # detections that count (not matched to an ignored box)
    truths: int  # ground-truth boxes that count (not ignored)
    e2e_hits: int  # matched pairs whose texts agree


def match_page(
    truth_boxes: Sequence[np.ndarray],
    truth_texts: Sequence[str],
    ignored: Sequence[bool],
    pred_boxes: Sequence[np.ndarray],
    pred_texts: Sequence[str],
    iou_threshold: float = 0.5,
    normalize=alnum,
) -> PageMatch:
    """Greedy one-to-one matching by IoU, best pairs first (the IC15 protocol).

    A detection matched to an ignored ("###") box counts neither as hit nor false alarm;
    ignored boxes count toward nothing.
    """
    pairs = []
    for t, tb in enumerate(truth_boxes):
        for p, pb in enumerate(pred_boxes):
            iou = quad_iou(tb, pb)
            if iou >= iou_threshold:
                pairs.append((iou, t, p))
    pairs.sort(reverse=True)
    used_t: set[int] = set()
    used_p: set[int] = set()
    tp = hits = 0
    ignored_preds = 0
    for _, t, p in pairs:
        if t in used_t or p in used_p:
            continue
        used_t.add(t)
        used_p.add(p)
        if ignored[t]:
            ignored_preds += 1
            continue
        tp += 1
        if normalize(truth_texts[t]) == normalize(pred_texts[p]):
            hits += 1
    truths = sum(1 for i in ignored if not i)
    return PageMatch(tp, len(pred_boxes) - ignored_preds, truths, hits)


def f1(tp: int, detections: int, truths: int) -> tuple[float, float, float]:
    """(precision, recall, F1) from counts; 0 where undefined."""
    precision = tp / detections if detections else 0.0
    recall = tp / truths if truths else 0.0
    score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, score


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0
