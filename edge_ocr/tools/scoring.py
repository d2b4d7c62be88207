"""Pure accuracy metrics for `edge-ocr eval`: text normalisation, CER, quad IoU, matching.

numpy and OpenCV only; no I/O.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np


def strict(text: str) -> str:
    """Exact comparison: the text with runs of white space collapsed to one space."""
    return " ".join(text.split())


def relaxed(text: str) -> str:
    """The yardstick's relaxed form: Unicode NFKC (full- and half-width agree), case-folded,
    all white space removed (Chinese labels space their characters inconsistently)."""
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def alnum(text: str) -> str:
    """The published IIIT5K/IC15 comparison: after NFKC, letters and digits only,
    case-folded (CJK characters count as letters, so plates keep their province character)."""
    return "".join(c for c in unicodedata.normalize("NFKC", text).casefold() if c.isalnum())


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
    """Intersection over union of two quads (4, 2), each taken as its convex hull."""
    inter, area_a, area_b = _overlap(a, b)
    if area_a <= 0 or area_b <= 0:
        return 0.0
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _overlap(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(shared area, area of a, area of b), each polygon taken as its convex hull (hulled once)."""
    hull_a = cv2.convexHull(np.asarray(a, dtype=np.float32).reshape(-1, 1, 2))
    hull_b = cv2.convexHull(np.asarray(b, dtype=np.float32).reshape(-1, 1, 2))
    inter, _ = cv2.intersectConvexConvex(hull_a, hull_b)
    return float(inter), float(cv2.contourArea(hull_a)), float(cv2.contourArea(hull_b))


@dataclass(frozen=True, slots=True)
class PageMatch:
    """Counts for one page, by the yardstick's protocol (shared/yardstick/bench.py)."""

    true_positives: int  # detections matched one-to-one to a counted box at IoU >= threshold
    detections: int  # detections that count: all but unmatched ones lying on a don't-care box
    truths: int  # ground-truth boxes that count (not don't-care)
    e2e_hits: int  # matched pairs whose relaxed texts are equal
    page_edits: int = 0  # edit distance of the relaxed page texts, each joined in reading order
    page_length: int = 0  # length of the relaxed ground-truth page text


def match_page(
    truth_boxes: Sequence[np.ndarray],
    truth_texts: Sequence[str],
    ignored: Sequence[bool],
    pred_boxes: Sequence[np.ndarray],
    pred_texts: Sequence[str],
    iou_threshold: float = 0.5,
    normalize: Callable[[str], str] = relaxed,
) -> PageMatch:
    """Greedy one-to-one matching of detections to counted boxes, best IoU first.

    As in the yardstick and the IC15 protocol: don't-care boxes take no part in matching;
    an unmatched detection lying on one (IoU >= threshold, or more than half its own area
    inside it) counts neither as hit nor as false alarm, and its text is left out of the
    page text too.
    """
    counted = [i for i, skip in enumerate(ignored) if not skip]
    dont_care = [truth_boxes[i] for i, skip in enumerate(ignored) if skip]
    pairs = []
    for t in counted:
        for p, pb in enumerate(pred_boxes):
            iou = quad_iou(truth_boxes[t], pb)
            if iou >= iou_threshold:
                pairs.append((iou, t, p))
    pairs.sort(key=lambda pair: -pair[0])
    used_t: set[int] = set()
    used_p: set[int] = set()
    hits = 0
    for _, t, p in pairs:
        if t in used_t or p in used_p:
            continue
        used_t.add(t)
        used_p.add(p)
        hits += normalize(truth_texts[t]) == normalize(pred_texts[p])
    on_dont_care = {
        p
        for p, pb in enumerate(pred_boxes)
        if p not in used_p and any(_covers(box, pb, iou_threshold) for box in dont_care)
    }
    kept = [p for p in range(len(pred_boxes)) if p not in on_dont_care]
    truth_text = relaxed("".join(truth_texts[counted[i]] for i in scoring_order([truth_boxes[t] for t in counted])))
    pred_text = relaxed("".join(pred_texts[kept[i]] for i in scoring_order([pred_boxes[p] for p in kept])))
    return PageMatch(
        true_positives=len(used_p),
        detections=len(kept),
        truths=len(counted),
        e2e_hits=hits,
        page_edits=edit_distance(truth_text, pred_text),
        page_length=len(truth_text),
    )


def _covers(dont_care: np.ndarray, box: np.ndarray, iou_threshold: float) -> bool:
    """``box`` lies on ``dont_care``: IoU at the threshold, or more than half of ``box`` inside it."""
    inter, area_care, area_box = _overlap(dont_care, box)
    if area_care <= 0 or area_box <= 0:
        return False
    union = area_care + area_box - inter
    return (union > 0 and inter / union >= iou_threshold) or inter / area_box > 0.5


def scoring_order(boxes: Sequence[np.ndarray]) -> list[int]:
    """Reading order used to join a page's text for page CER, as the yardstick does it:
    rows of boxes whose vertical centres lie within half the median box height of the
    row's mean centre, top to bottom, each row left to right."""
    if not boxes:
        return []
    tops = [float(np.min(b[:, 1])) for b in boxes]
    bottoms = [float(np.max(b[:, 1])) for b in boxes]
    centres = [(t + b) / 2 for t, b in zip(tops, bottoms)]
    heights = sorted(max(1.0, b - t) for t, b in zip(tops, bottoms))
    tolerance = 0.5 * heights[len(heights) // 2]
    lefts = [float(np.min(b[:, 0])) for b in boxes]
    rows: list[list[int]] = []
    row_centre = 0.0
    for index in sorted(range(len(boxes)), key=lambda i: centres[i]):
        if rows and abs(centres[index] - row_centre) <= tolerance:
            rows[-1].append(index)
        else:
            rows.append([index])
        row_centre = sum(centres[i] for i in rows[-1]) / len(rows[-1])
    return [i for row in rows for i in sorted(row, key=lambda i: lefts[i])]


def f1(tp: int, detections: int, truths: int) -> tuple[float, float, float]:
    """(precision, recall, F1) from counts; 0 where undefined."""
    precision = tp / detections if detections else 0.0
    recall = tp / truths if truths else 0.0
    score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, score


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0
