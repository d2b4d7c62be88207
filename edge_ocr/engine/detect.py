"""Pure DB (differentiable binarisation) post-processing: probability map → text quads.

numpy and OpenCV only; no I/O, no model. The quads' reading order is ``layout``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from edge_ocr.engine.types import DbParams, Quad, StripPlan


def order_quad(points: np.ndarray) -> Quad:
    """Order 4 points clockwise from top-left (float32, shape (4, 2))."""
    pts = np.asarray(points, dtype=np.float32).reshape(4, 2)
    by_x = pts[np.argsort(pts[:, 0], kind="stable")]
    left, right = by_x[:2], by_x[2:]
    top_left, bottom_left = left[np.argsort(left[:, 1], kind="stable")]
    top_right, bottom_right = right[np.argsort(right[:, 1], kind="stable")]
    return np.array([top_left, top_right, bottom_right, bottom_left], dtype=np.float32)


def _box_score(prob: np.ndarray, contour: np.ndarray) -> float:
    """Mean probability inside ``contour`` (N, 2), computed on its bounding window."""
    height, width = prob.shape
    x0, y0 = np.clip(np.floor(contour.min(axis=0)).astype(int), 0, [width - 1, height - 1])
    x1, y1 = np.clip(np.ceil(contour.max(axis=0)).astype(int), 0, [width - 1, height - 1])
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    shifted = (contour - np.array([x0, y0], dtype=np.float32)).round().astype(np.int32)
    cv2.fillPoly(mask, [shifted.reshape(-1, 1, 2)], 1)
    return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def _unclip(rect: tuple, ratio: float) -> tuple:
    """Grow a rotated rectangle by the DB offset distance on every side.

    Offsetting a rectangle's polygon by d and taking the minimum-area rectangle again
    gives exactly (w + 2d, h + 2d), so no polygon-clipping library is needed.
    """
    (cx, cy), (w, h), angle = rect
    distance = (w * h) * ratio / max(2.0 * (w + h), 1e-6)
    return (cx, cy), (w + 2 * distance, h + 2 * distance), angle


def boxes_from_map(prob: np.ndarray, params: DbParams) -> tuple[list[Quad], list[float]]:
    """Quads and scores from a DB probability map.

    prob: float32 (H, W) in [0, 1]. Returns quads in map pixel coordinates (clockwise from
    top-left) and each one's mean probability.
    """
    binary: np.ndarray = (prob > params.thresh).astype(np.uint8)
    if params.dilate:
        binary = cv2.dilate(binary, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) > params.max_candidates:
        # Keep the largest: OpenCV lists contours from the bottom of the map up, so cutting its
        # list would drop the top of a dense page and keep the specks below it.
        contours = sorted(contours, key=cv2.contourArea, reverse=True)[: params.max_candidates]
    height, width = prob.shape
    quads: list[Quad] = []
    scores: list[float] = []
    for contour in contours:
        rect = cv2.minAreaRect(contour)
        if min(rect[1]) < params.min_size:
            continue
        score = _box_score(prob, contour.reshape(-1, 2).astype(np.float32))
        if score < params.box_thresh:
            continue
        grown = _unclip(rect, params.unclip_ratio)
        if min(grown[1]) < params.min_size + 2:
            continue
        quad = order_quad(cv2.boxPoints(grown))
        quad[:, 0] = np.clip(quad[:, 0], 0, width)
        quad[:, 1] = np.clip(quad[:, 1], 0, height)
        quads.append(quad)
        scores.append(score)
    return quads, scores


def median_height(quads: Sequence[Quad]) -> float:
    """The median of the quads' shorter sides (0.0 for none): how tall the text lines are."""
    if not quads:
        return 0.0
    sides = [min(np.linalg.norm(q[0] - q[1]), np.linalg.norm(q[0] - q[3])) for q in quads]
    return float(np.median(sides))


def stitch_strips(maps: Iterable[np.ndarray], plan: StripPlan) -> np.ndarray:
    """One probability map of the whole image from the maps of ``plan``'s tiles.

    maps: one float32 (*plan.tile) map per tile, in order (an iterator is consumed one map at a
    time). Each row (or column, for
    ``plan.axis`` 1) is taken from the tile that owns it (``StripPlan.owned``: the one where it
    lies furthest from a cut edge); the tiles' padding is dropped. Returns float32 ``plan.size``.
    """
    height, width = plan.size
    out = np.empty((height, width), dtype=np.float32)
    for prob, start, (lo, hi) in zip(maps, plan.starts, plan.owned(), strict=True):
        if plan.axis == 0:
            out[lo:hi] = prob[lo - start : hi - start, :width]
        else:
            out[:, lo:hi] = prob[:height, lo - start : hi - start]
    return out
