"""Reading order of a page's detected lines: columns first, then rows, then left to right.

Pure geometry on the lines' corners; numpy only, no I/O, no model.

The page's skew is undone first (the median slope of its lines: a photo a few degrees off square has
no straight gutter, and its rows slope into each other). Then it is cut recursively, as an XY-cut
does (Nagy and Seth, 1984): a region whose lines leave a vertical gutter between two columns of
text is read left column, then right column, also when a few lines cross the gutter (a heading or
a caption from edge to edge of both, or centred on the gutter: read in place, between the parts
above and below it); otherwise it is cut across at its widest horizontal gaps, and a region with
neither is read in rows, left to right.
Only a gutter with text columns on both sides counts: each at least ``COLUMN_MIN_LINES`` lines,
``COLUMN_MIN_LONG`` of them ``COLUMN_MIN_WIDTH`` line heights wide. So a book spread or a two-column
report is read column by column, while a receipt's prices (a narrow column of numbers), a form's
short fields and a photo's scattered words keep their rows (chosen on half a of eval-dev, confirmed
on half b: ``bench/reading_order.py``). A form whose labels and values are both long, or a table of
wide columns, is read column by column too: geometry alone cannot tell them from text columns
(``EngineOptions.reading_order = "rows"`` reads such pages in rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_ocr.engine.types import Quad

# A text column: at least this many lines...
COLUMN_MIN_LINES = 3
# ...of which at least this many are long lines of text...
COLUMN_MIN_LONG = 2
# ...at least this many line heights wide (about 8 CJK or 14 Latin characters; a price is 3-5).
COLUMN_MIN_WIDTH = 7.5
# A gutter: at least this many line heights of white between the columns (a word space is ~0.3).
GUTTER_MIN_WIDTH = 0.8
# The skew: the median slope of the page's lines at least this many times as long as high...
SKEW_MIN_ASPECT = 1.25
# ...if it has this many.
SKEW_MIN_LINES = 3
# At most this many lines may cross a gutter, as headings or captions across both columns
# (and at most a quarter of the region's lines).
SPAN_MAX_LINES = 3
# ...each from within this many line heights of both columns' outer edges...
SPAN_EDGE = 2.0
# ...or centred on the gutter within this many.
SPAN_CENTRE = 1.0
# Horizontal gaps within this share of the widest are cut at once: evenly spaced rows make one
# level of the recursion, not one level per row.
CUT_SHARE = 0.8
# Deeper than this, a region is read in rows (a bound on the recursion for pathological layouts).
MAX_DEPTH = 24

_LEFT, _RIGHT, _TOP, _BOTTOM, _CENTRE, _HEIGHT = range(6)


def reading_order(quads: Sequence[Quad], columns: bool = True) -> list[int]:
    """Indices of ``quads`` (each 4 corners, x and y in pixels, clockwise from the top left) in
    reading order.

    With ``columns`` (the default), the page's skew is undone (the median slope of its long lines:
    a photo a few degrees off has no straight gutter and no straight rows) and text columns are read
    one after the other (module doc); without, the page is read in rows as it lies, as before
    2026-12-05.
    """
    if not len(quads):
        return []
    points = np.stack([np.asarray(q, dtype=np.float64).reshape(4, 2) for q in quads])
    everything = list(range(len(quads)))
    if not columns:
        return _rows(everything, _bounds(points))
    bounds = _bounds(_upright(points))
    # The unit of every threshold: a line's height, as the shorter side of its box (so a
    # vertical line's too), the page's median.
    unit = max(float(np.median(np.minimum(bounds[:, _RIGHT] - bounds[:, _LEFT], bounds[:, _HEIGHT]))), 1.0)
    return _cut(everything, bounds, unit, 0)


def _bounds(points: np.ndarray) -> np.ndarray:
    """Per line: left, right, top, bottom, vertical centre, height (at least 1 px)."""
    xs, ys = points[:, :, 0], points[:, :, 1]
    return np.stack([xs.min(axis=1), xs.max(axis=1), ys.min(axis=1), ys.max(axis=1), ys.mean(axis=1),
                     np.maximum(ys.max(axis=1) - ys.min(axis=1), 1.0)], axis=1)


def _upright(points: np.ndarray) -> np.ndarray:
    """``points`` turned by the page's skew: the slope of its lines' top edges, the median weighted
    by their length, over lines ``SKEW_MIN_ASPECT`` times as long as high and within 45 degrees of
    level (a vertical line's slope says nothing of the page's), if there are ``SKEW_MIN_LINES``.
    Weighted, because the detector gives short boxes (a number, a character) level whatever the
    page's slope."""
    top = points[:, 1] - points[:, 0]
    length = np.linalg.norm(top, axis=1)
    slope = np.arctan2(top[:, 1], top[:, 0])
    voting = (length >= SKEW_MIN_ASPECT * np.linalg.norm(points[:, 3] - points[:, 0], axis=1)) & \
        (np.abs(slope) < np.pi / 4)
    if np.count_nonzero(voting) < SKEW_MIN_LINES:
        return points
    slopes, weights = slope[voting], length[voting]
    by_slope = np.argsort(slopes)
    middle = np.searchsorted(np.cumsum(weights[by_slope]), 0.5 * weights.sum())
    angle = float(slopes[by_slope][middle])
    cos, sin = np.cos(angle), np.sin(angle)
    return points @ np.array([[cos, -sin], [sin, cos]])  # each row (x, y) turned by -angle


def _cut(region: list[int], bounds: np.ndarray, unit: float, depth: int) -> list[int]:
    if len(region) < 2 * COLUMN_MIN_LINES or depth > MAX_DEPTH:
        return _rows(region, bounds)
    # A clear gutter first; else one that a few headings or captions cross.
    pieces = (_columns(region, bounds, unit, 0)
              or _columns(region, bounds, unit, min(SPAN_MAX_LINES, len(region) // 4)))
    if pieces is not None:
        return [i for piece in pieces for i in _cut(piece, bounds, unit, depth + 1)]
    bands = _bands(region, bounds)
    if len(bands) == 1:
        return _rows(region, bounds)
    return [i for band in bands for i in _cut(band, bounds, unit, depth + 1)]


def _columns(region: list[int], bounds: np.ndarray, unit: float, crossing_at_most: int) -> list[list[int]] | None:
    """Two text columns, if any, as the pieces to read in turn: the widest gutter that at most
    ``crossing_at_most`` lines cross.

    A line across both columns (a heading or caption from the left column's edge to the right
    column's, or one centred on the gutter) is read in place: the region is cut above and below it,
    top to bottom. One reaching into a single column (a long URL running into the gutter) is that
    column's. A line reaching into both otherwise (a receipt's long item line, running from the
    labels into the amounts) leaves no gutter. Without crossing lines, a heading at the rows' own
    spacing left no gap wider than theirs, and the page was read row by row across both columns.
    """
    indices = np.asarray(region)
    lefts, rights = bounds[indices, _LEFT], bounds[indices, _RIGHT]
    for start, end in _thin_runs(lefts, rights, crossing_at_most):
        if end - start < GUTTER_MIN_WIDTH * unit:
            break
        left, right = indices[rights <= start], indices[lefts >= end]
        if not (_is_text_column(left.tolist(), bounds, unit) and _is_text_column(right.tolist(), bounds, unit)):
            continue
        crossing = indices[(lefts < end) & (rights > start)]
        into_left = bounds[crossing, _LEFT] < bounds[left, _RIGHT].max()
        into_right = bounds[crossing, _RIGHT] > bounds[right, _LEFT].min()
        spanning = crossing[into_left == into_right]  # into both, or within the gutter alone
        edge_to_edge = (bounds[spanning, _LEFT] <= bounds[left, _LEFT].min() + SPAN_EDGE * unit) & \
            (bounds[spanning, _RIGHT] >= bounds[right, _RIGHT].max() - SPAN_EDGE * unit)
        centred = np.abs(bounds[spanning, _LEFT] + bounds[spanning, _RIGHT] - start - end) <= 2 * SPAN_CENTRE * unit
        if not (edge_to_edge | centred).all():
            continue
        if not len(spanning):
            return [left.tolist() + crossing[into_left].tolist(), right.tolist() + crossing[into_right].tolist()]
        return _pieces(region, spanning.tolist(), bounds)
    return None


def _thin_runs(starts: np.ndarray, ends: np.ndarray, most: int) -> list[tuple[float, float]]:
    """The stretches of the axis, between the first and the last line, that at most ``most`` of the
    lines cover (``starts`` to ``ends``), widest first. Maximal: a line ending half way into a gutter
    leaves one stretch, not two each too narrow."""
    edges = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
    order = np.lexsort((steps, edges))  # at one x, a line's end before another's start
    xs, cover = edges[order].tolist(), np.cumsum(steps[order])[:-1].tolist()
    runs, opened = [], None
    for k, count in enumerate(cover):
        if count <= most and opened is None:
            opened = xs[k]
        elif count > most and opened is not None:
            runs.append((opened, xs[k]))
            opened = None
    return sorted(runs, key=lambda run: run[0] - run[1])


def _pieces(region: list[int], crossing: list[int], bounds: np.ndarray) -> list[list[int]]:
    """``region`` cut at the vertical centres of the ``crossing`` lines, each of those a piece of its
    own, top to bottom."""
    crossing = sorted(crossing, key=lambda i: bounds[i, _CENTRE])
    cuts = [bounds[i, _CENTRE] for i in crossing]
    rest = sorted(set(region) - set(crossing))
    between: list[list[int]] = [[] for _ in range(len(crossing) + 1)]
    for index, piece in zip(rest, np.searchsorted(cuts, bounds[rest, _CENTRE]).tolist(), strict=True):
        between[piece].append(index)
    pieces = [between[0]]
    for line, after in zip(crossing, between[1:], strict=True):
        pieces += [[line], after]
    return [piece for piece in pieces if piece]


def _is_text_column(lines: list[int], bounds: np.ndarray, unit: float) -> bool:
    if len(lines) < COLUMN_MIN_LINES:
        return False
    widths = bounds[lines, _RIGHT] - bounds[lines, _LEFT]
    return int(np.count_nonzero(widths >= COLUMN_MIN_WIDTH * unit)) >= COLUMN_MIN_LONG


def _bands(region: list[int], bounds: np.ndarray) -> list[list[int]]:
    """The region cut across at its widest horizontal gaps (those within ``CUT_SHARE`` of the
    widest), top to bottom; the region whole if no gap crosses it."""
    gaps = _gaps(region, bounds[:, _TOP], bounds[:, _BOTTOM])
    if not gaps:
        return [region]
    widest = max(end - start for start, end in gaps)
    cuts = [end for start, end in gaps if end - start >= CUT_SHARE * widest]
    bands: list[list[int]] = [[] for _ in range(len(cuts) + 1)]
    for index, band in zip(region, np.searchsorted(cuts, bounds[region, _BOTTOM]).tolist()):
        bands[band].append(index)
    return [band for band in bands if band]


def _gaps(region: list[int], starts: np.ndarray, ends: np.ndarray) -> list[tuple[float, float]]:
    """The open intervals between the region's lines along one axis that no line covers."""
    indices = np.asarray(region)
    by_start = np.argsort(starts[indices], kind="stable")
    gaps = []
    reach = -np.inf
    for start, end in zip(starts[indices][by_start].tolist(), ends[indices][by_start].tolist()):
        if start > reach > -np.inf:
            gaps.append((reach, start))
        reach = max(reach, end)
    return gaps


def _rows(region: list[int], bounds: np.ndarray) -> list[int]:
    """Rows top to bottom, left to right within a row. Lines join the row above while their
    vertical centre is within half a line height of the row's mean centre (the smaller of the
    line's height and the row's mean height)."""
    own = bounds[region]
    centres, heights, lefts = own[:, _CENTRE].tolist(), own[:, _HEIGHT].tolist(), own[:, _LEFT].tolist()
    rows: list[list[int]] = []
    centre_sum = height_sum = 0.0
    for k in sorted(range(len(region)), key=lambda k: (centres[k], lefts[k])):
        if rows:
            count = len(rows[-1])
            if abs(centres[k] - centre_sum / count) <= 0.5 * min(heights[k], height_sum / count):
                rows[-1].append(k)
                centre_sum += centres[k]
                height_sum += heights[k]
                continue
        rows.append([k])
        centre_sum, height_sum = centres[k], heights[k]
    return [region[k] for row in rows for k in sorted(row, key=lambda k: lefts[k])]
