"""edge_ocr.engine.layout: the reading order of a page's lines, on drawn boxes and on eval-dev's
labelled pages (their boxes, shuffled: the order must come from the geometry alone)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ocr.engine.detect import order_quad
from edge_ocr.engine.layout import reading_order


def _turn(degrees):
    """Multiplies row vectors (x, y): turned by ``degrees`` about the origin."""
    angle = np.radians(degrees)
    return np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]], np.float32)


def _box(x, y, w=40, h=10):
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)


def _column(x, rows, width=300, top=0, pitch=30):
    return [_box(x, top + pitch * r, width, 20) for r in range(rows)]


def test_rows_then_left_to_right():
    quads = [_box(100, 51), _box(0, 0), _box(0, 50), _box(100, 2)]
    assert reading_order(quads) == [1, 3, 2, 0]


def test_nothing():
    assert reading_order([]) == []


def test_two_text_columns_are_read_one_after_the_other():
    """A book spread or a two-column article: rows at the same heights on both sides."""
    left, right = _column(0, 10), _column(340, 10)
    quads = [q for pair in zip(left, right) for q in pair]  # detected in any order
    order = reading_order(quads)
    assert [quads[i][0, 0] for i in order] == [0.0] * 10 + [340.0] * 10
    assert reading_order(quads, columns=False) == list(range(20))  # rows, as before


def test_a_receipts_prices_keep_their_rows():
    """Labels at the left, a narrow column of prices at the right: one row is one item."""
    labels = _column(0, 12, width=260)
    prices = [_box(400, 30 * r, 80, 20) for r in range(12)]  # 4 line heights wide
    quads = [q for pair in zip(labels, prices) for q in pair]
    assert reading_order(quads) == list(range(24))


def test_short_fields_beside_text_keep_their_rows():
    """Two columns need two long lines each: a form's short values do not make a column."""
    fields = [_box(0, 30 * r, 100, 20) for r in range(6)] + [_box(150, 30 * r, 300, 20) for r in range(6)]
    assert reading_order(fields) == [i for r in range(6) for i in (r, r + 6)]


def test_a_heading_across_both_columns_comes_first_and_a_footer_last():
    heading, footer = _box(0, 0, 640, 30), _box(0, 400, 640, 20)
    left, right = _column(0, 8, top=60), _column(340, 8, top=60)
    quads = [footer, *right, heading, *left]
    order = reading_order(quads)
    assert order[0] == 9 and order[-1] == 0  # the heading is quads[9], the footer quads[0]
    assert [quads[i][0, 0] for i in order[1:-1]] == [0.0] * 8 + [340.0] * 8


def test_a_caption_across_both_columns_at_the_rows_own_spacing_is_read_in_place():
    """No gap around the caption is wider than the rows' own: the gutter is found beneath it."""
    above_left, above_right = _column(0, 10), _column(340, 10)
    caption = _box(0, 300, 640, 20)  # 10 px from the rows above and below, as they are from each other
    below_left, below_right = _column(0, 10, top=330), _column(340, 10, top=330)
    quads = [*above_right, caption, *below_left, *above_left, *below_right]
    order = [id(quads[i]) for i in reading_order(quads)]
    assert order == [id(q) for q in (*above_left, *above_right, caption, *below_left, *below_right)]


def test_a_short_heading_centred_over_the_gutter_is_read_between_the_parts():
    heading = _box(260, 150, 120, 20)  # "Chapter 3", over the gutter at 300-340
    quads = _column(0, 5) + _column(340, 5) + [heading] + _column(0, 5, top=180) + _column(340, 5, top=180)
    assert reading_order(quads) == [*range(5), *range(5, 10), 10, *range(11, 16), *range(16, 21)]


def test_a_columns_own_long_line_running_into_the_gutter_is_no_heading():
    """Only lines reaching into both columns are read as crossing: one that merely runs into the
    gutter (a URL) stays in its column."""
    left, right = _column(0, 8), _column(340, 8)
    left[3] = _box(0, 90, 330, 20)  # 30 px into a 40 px gutter
    assert reading_order(left + right) == list(range(16))


def test_a_receipts_long_item_line_across_its_amounts_leaves_no_gutter():
    """Items at the left, long amount texts at the right (wide enough to pass for a column) and item
    lines that run from the labels into the amounts: no heading, so the receipt keeps its rows."""
    quads = []
    for r in range(12):
        if r in (3, 7, 10):
            quads.append(_box(0, 30 * r, 480, 20))  # an item's long description, into the amounts
        else:
            quads += [_box(0, 30 * r, 200, 20), _box(400, 30 * r, 240, 20)]
    assert reading_order(quads) == list(range(len(quads)))


def test_a_line_ending_half_way_into_the_gutter_leaves_one_gutter():
    """Ending 15 px into a 30 px gutter, it left two stretches each narrower than a gutter."""
    left, right = _column(0, 8), _column(330, 8)
    left[3] = _box(0, 90, 315, 20)
    assert reading_order(left + right) == list(range(16))


def test_short_boxes_left_level_do_not_hide_the_pages_skew(eval_dev):
    """The detector gives a short box (a number, a character) level whatever the page's slope: a
    receipt turned 4 degrees with more such boxes than lines under it still reads as it does square."""
    receipt, _ = _pages(eval_dev / "pages" / "labels.jsonl", "SROIE")[0]
    bottom = max(q[:, 1].max() for q in receipt)
    numbers = [_box(40 + 60 * (k % 8), bottom + 40 + 30 * (k // 8), 40, 20) for k in range(2 * len(receipt))]
    upright = reading_order(receipt)
    assert reading_order(_turned(receipt, 4) + numbers)[: len(receipt)] == upright


def test_tilted_vertical_lines_do_not_turn_the_page():
    """Vertical lines' slopes (~87 degrees on a page 3 degrees off) say nothing of the page's skew:
    12 columns of vertical text and 5 horizontal lines under them keep the order they have square."""
    def line(cx, cy, w, h, degrees):
        return order_quad(cv2.boxPoints(((cx, cy), (w, h), 0)) @ _turn(degrees))

    def page(degrees):
        return ([line(1000 - 50 * i, 400, 30, 600, degrees) for i in range(12)]
                + [line(300, 800 + 40 * r, 500, 25, degrees) for r in range(5)])

    assert reading_order(page(3)) == reading_order(page(-3)) == reading_order(page(0))


def test_three_columns_left_to_right():
    quads = _column(700, 6) + _column(0, 6) + _column(350, 6)
    assert reading_order(quads) == list(range(6, 12)) + list(range(12, 18)) + list(range(6))


def test_a_pathological_page_is_ordered_without_deep_recursion():
    """1,500 columns of 3 lines each, the first gutter the widest: each column would be a level of
    the recursion (Python's limit is 1,000). Past ``MAX_DEPTH`` the rest is read in rows."""
    quads = [q for c in range(1500) for q in _column(400 * c + 10 * (1500 - c), 3, width=350)]
    order = reading_order(quads)
    assert sorted(order) == list(range(len(quads)))
    assert order[:9] == list(range(9))  # the first columns still one after the other


def _pages(labels: Path, source: str) -> list[tuple[list[np.ndarray], list[str]]]:
    pages = []
    for line in labels.read_text(encoding="utf-8").splitlines():
        page = json.loads(line)
        if page["source"].startswith(source):
            kept = [x for x in page["lines"] if not x.get("ignore")]
            pages.append(([np.array(x["box"], np.float32) for x in kept], [x["text"] for x in kept]))
    return pages


def _shuffled(quads, texts, seed=0):
    order = list(range(len(quads)))
    random.Random(seed).shuffle(order)
    return [quads[i] for i in order], [texts[i] for i in order]


def test_a_real_book_spread_is_read_page_by_page(eval_dev):
    """eval-dev's Chinese book spread (two pages in one photo), its labelled boxes shuffled:
    every line of the left page comes before any of the right page's."""
    (quads, texts), = _pages(eval_dev / "zh" / "pages" / "labels.jsonl", "omnidocbench:book")
    quads, texts = _shuffled(quads, texts)
    middle = 0.5 * (min(q[:, 0].min() for q in quads) + max(q[:, 0].max() for q in quads))
    sides = ["left" if quads[i][:, 0].max() < middle else "right" for i in reading_order(quads)]
    assert sides == sorted(sides) and {"left", "right"} <= set(sides)
    by_rows = ["left" if quads[i][:, 0].max() < middle else "right" for i in reading_order(quads, columns=False)]
    assert by_rows != sorted(by_rows)  # the rows alone interleave the two pages


def test_receipts_keep_their_rows(eval_dev):
    """None of the 60 eval-dev receipts has text columns (bench/reading_order.py): their labelled
    boxes, shuffled, come back in the rows' order."""
    pages = _pages(eval_dev / "pages" / "labels.jsonl", "SROIE")
    assert len(pages) == 60
    for quads, texts in pages:
        quads, texts = _shuffled(quads, texts)
        assert reading_order(quads) == reading_order(quads, columns=False)


def _turned(quads, degrees):
    return [(q @ _turn(degrees)).astype(np.float32) for q in quads]


@pytest.mark.parametrize("degrees", [-4, 4])
def test_a_page_photographed_a_few_degrees_off_is_read_as_if_square(eval_dev, degrees):
    """Turned, the spread has no straight gutter and a receipt's rows slope into each other: the
    skew is undone first, so each reads as it does upright (rows alone would not)."""
    (spread, _), = _pages(eval_dev / "zh" / "pages" / "labels.jsonl", "omnidocbench:book")
    receipt, _ = _pages(eval_dev / "pages" / "labels.jsonl", "SROIE")[0]
    for quads in (spread, receipt):
        upright = reading_order(quads)
        assert reading_order(_turned(quads, degrees)) == upright
        assert reading_order(_turned(quads, degrees), columns=False) != upright
