"""edge_ocr.engine.recognize: batch planning and script routing (pure parts)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_ocr.engine.decode import Charset, Decoded
from edge_ocr.engine.recognize import (
    batch_width,
    confirmed,
    is_plate_number,
    line_width,
    looks_chinese,
    maybe_chinese,
    needs_confirmation,
    needs_page_recheck,
    needs_recheck,
    needs_specialist,
    plan_batches,
    plate_in_sight,
    plate_number,
    plate_shaped,
    recognize,
    shows_chinese,
    spread,
    take_specialist,
)


def test_batches_group_similar_widths():
    widths = [480, 48, 456, 58, 240]
    assert plan_batches(widths, batch_size=2, max_columns=10_000) == [[1, 3], [4, 2], [0]]


def test_batches_of_long_lines_stay_within_the_column_budget():
    widths = [320] * 6 + [1500, 1600, 3000]
    batches = plan_batches(widths, batch_size=8, max_columns=3200)
    assert batches == [[0, 1, 2, 3, 4, 5], [6, 7], [8]]
    assert all(len(b) * max(widths[i] for i in b) <= 3200 for b in batches)


def test_line_width_is_measured_at_the_recogniser_height():
    assert line_width(np.zeros((24, 94, 3), np.uint8), height=48) == 188  # a plate: short
    assert line_width(np.zeros((30, 600, 3), np.uint8), height=48) == 960  # a document line: long


def test_batch_width_is_the_widest_line_within_bounds():
    assert batch_width([2.0, 3.0], height=48, min_width=0, max_width=3072) == 144
    assert batch_width([2.0], height=48, min_width=320, max_width=3072) == 320
    assert batch_width([200.0], height=48, min_width=0, max_width=3072) == 3072


def test_results_come_back_in_input_order():
    charset = Charset(tuple("abc"))
    crops = [np.full((10, w, 3), 200, np.uint8) for w in (50, 10, 30)]

    def fake_model(batch: np.ndarray) -> np.ndarray:
        """Reads one "a" per 16 unpadded columns (padding is exactly 0 after normalising)."""
        out = np.zeros((batch.shape[0], batch.shape[3] // 4, 4), np.float32)
        out[:, :, 0] = 1.0
        for i, image in enumerate(batch):
            count = int((image[0, 0] != 0).sum()) // 16
            out[i, 0 : 2 * count : 2] = [0.0, 1.0, 0.0, 0.0]
        return out

    texts = [d.text for d in recognize(crops, fake_model, charset, 16, 0, 1000, batch_size=2, max_columns=1000)]
    assert texts == ["aaaaa", "a", "aaa"]  # 80, 16 and 48 px wide at height 16


def test_only_plate_shaped_lines_where_chinese_was_sensed_go_to_the_specialist():
    readings = [
        Decoded("A·C4933", 0.97),  # province glyph dropped
        Decoded("皖A·C4933", 0.9),  # one Chinese character among Latin and digits
        Decoded("TOTAL 12.50", 0.99),  # plate-shaped, but nothing Chinese was sensed (below)
        Decoded("比较文学成为一个有缺陷的词", 0.93),  # Chinese text stays with PP-OCRv6
        Decoded("鸭", 0.9),  # a one-character sign is no plate
        Decoded("QI", 0.6),  # nor are two Latin letters
    ]
    sensed = [True, True, False, True, True, True]
    assert needs_specialist(readings, sensed) == [0, 1]
    assert plate_shaped("皖AC4933") and plate_shaped("AC4933") and not plate_shaped("京A")


def test_chinese_is_sensed_by_text_or_by_mass():
    assert maybe_chinese(Decoded("皖AC4933", 0.9), min_mass=0.05)
    assert maybe_chinese(Decoded("AC4933", 0.99, cjk_mass=0.4), min_mass=0.05)  # province glyph read as nothing
    assert not maybe_chinese(Decoded("TOTAL", 0.99, cjk_mass=0.01), min_mass=0.05)
    assert maybe_chinese(Decoded("TOTAL", 0.99, cjk_mass=0.01), min_mass=0.005)


def test_the_specialist_reading_is_kept_only_when_it_holds_chinese():
    reading = Decoded("WA·C4933", 0.9)
    assert take_specialist(reading, Decoded("皖A·C4933", 0.95)).text == "皖A·C4933"
    # A Latin word whose reader only hesitated over a Chinese class keeps its PP-OCRv6 text.
    assert take_specialist(Decoded("Hotel", 0.9), Decoded("H0tel", 0.97)).text == "Hotel"


@pytest.mark.parametrize("reading, number", [
    ("皖A·C4933", "皖AC4933"),  # PP-OCRv4 reads the separator off nearly every plate (510 of 527 on eval-dev)
    ("京B•12345", "京B12345"),
    ("粤B·D12345", "粤BD12345"),  # new-energy: six after the dot
    ("粤Z·1234港", "粤Z1234港"),  # a class character at the end
    ("皖AC4933", "皖AC4933"),  # already without it
    ("A·C4933", "A·C4933"),  # no province glyph: not known to be a plate
    ("Tel.12345", "Tel.12345"),
    ("价格·12345", "价格·12345"),
    ("皖A·C4933元", "皖A·C4933元"),  # more text than a plate holds
])
def test_a_plate_reading_becomes_its_registration_number(reading, number):
    assert plate_number(reading) == number


@pytest.mark.parametrize("reading, whole", [
    ("皖A·C4933", True), ("皖AC4933", True), ("粤B·D12345", True), ("粤Z·1234港", True),
    ("A·C4933", False),  # no province: PP-OCRv4 missed a glyph, so the usual readers decide
    ("皖A·C49", False), ("皖·C4933", False), ("价格·12345", False), ("皖A·C4933元", False), ("", False),
    ("皖AO1234", False), ("皖A1234I", False),  # a serial never holds I or O: a misread 0 or 1
    ("皖AC4933\n", False),
])
def test_only_a_whole_registration_number_is_a_plate_number(reading, whole):
    assert is_plate_number(reading) is whole


def test_a_plate_is_in_sight_by_its_outline_and_its_colour():
    blue = np.zeros((24, 94, 3), np.uint8)
    blue[:] = (180, 70, 10)
    assert plate_in_sight(blue, 0.25)
    assert not plate_in_sight(blue, 0.0)  # the rule off
    assert not plate_in_sight(blue[:, :40], 0.25)  # a square word on a blue sign
    assert not plate_in_sight(np.concatenate([blue, blue, blue], axis=1), 0.25)  # a long blue banner
    grey = np.full((24, 94, 3), 128, np.uint8)
    assert not plate_in_sight(grey, 0.25)
    blue[:, 30:] = 128  # a third of it blue: a word on a sign with a blue logo
    assert not plate_in_sight(blue, 0.5) and plate_in_sight(blue, 0.25)
    banner = np.zeros((400, 2000, 3), np.uint8)
    banner[:] = (180, 70, 10)
    assert plate_in_sight(banner, 0.25)  # 0.8 MP: a plate seen close by a 4K camera
    assert not plate_in_sight(np.zeros((600, 3000, 3), np.uint8) + banner[0, 0], 0.25)  # 1.8 MP: a banner


def test_only_unsure_or_empty_drafts_are_rechecked():
    drafts = [Decoded("TOTAL", 0.99), Decoded("T0TAI", 0.80), Decoded("", 0.0), Decoded("12.50", 0.951)]
    assert needs_recheck(drafts, below=0.95) == [1, 2]
    assert needs_recheck(drafts, below=1.01) == [0, 1, 2, 3]  # everything goes to the accurate recogniser
    assert needs_recheck(drafts, below=0.0) == [2]


def test_a_chinese_pages_drafts_are_kept_only_when_sure_chinese_with_no_latin_and_no_spaces():
    drafts = [
        Decoded("比较文学不是方法，因", 0.99),  # kept: sure Chinese prose
        Decoded("同比增长20.8%；年化", 0.97),  # kept: digits and punctuation are no Latin letters
        Decoded("比较文学不是方法", 0.94),  # unsure
        Decoded("", 0.0),  # nothing read
        Decoded("12.50", 0.99),  # no Chinese: tiny drops decimal points and colons with full confidence
        Decoded("来自于英文“℉ine Art”", 0.98),  # Latin letters
        Decoded("增速较1 季度下滑", 0.99),  # a space tiny puts between a digit and a hanzi
        Decoded("年化ROE12.40%", 0.99),  # Latin letters
    ]
    assert needs_page_recheck(drafts, below=0.95) == [2, 3, 4, 5, 6, 7]
    assert needs_page_recheck(drafts, below=1.01) == list(range(8))


def test_the_page_reader_is_confirmed_where_it_sensed_chinese_or_was_unsure():
    readings = [
        Decoded("TOTAL", 0.99),  # sure and Latin: answered alone
        Decoded("o", 0.61),  # unsure (a "。" the static variant misread)
        Decoded("TAX", 0.97, cjk_mass=0.02),  # Chinese sensed
        Decoded("12.50", 0.9),  # at the threshold: answered alone
        Decoded("", 0.0),  # nothing read
    ]
    assert needs_confirmation(readings, below=0.9, chinese_mass=0.01) == [1, 2, 4]
    assert needs_confirmation(readings, below=0.0, chinese_mass=1.01) == []


def test_a_confirmed_line_keeps_the_more_confident_reading_unless_chinese_was_sensed():
    static, dynamic = Decoded("Roud", 0.62), Decoded("Road", 0.54)
    assert confirmed(static, dynamic, chinese_mass=0.01).text == "Roud"  # neither variant is right more often
    assert confirmed(Decoded("o", 0.61), Decoded("。", 0.75), chinese_mass=0.01).text == "。"
    # Where the page reader sensed Chinese, the dynamic variant answers even when less confident.
    assert confirmed(Decoded("AC4933", 0.99, cjk_mass=0.3), Decoded("皖AC4933", 0.8), chinese_mass=0.01).text == "皖AC4933"


def test_lines_read_on_a_thread_pool_come_back_in_input_order():
    from concurrent.futures import ThreadPoolExecutor

    charset = Charset(tuple("abc"))
    crops = [np.full((16, 16 * n, 3), 200, np.uint8) for n in (5, 1, 3, 2, 4)]

    def count_columns(batch: np.ndarray) -> np.ndarray:
        out = np.zeros((batch.shape[0], batch.shape[3] // 4, 4), np.float32)
        out[:, :, 0] = 1.0
        for i, image in enumerate(batch):
            out[i, 0 : 2 * (int((image[0, 0] != 0).sum()) // 16) : 2] = [0.0, 1.0, 0.0, 0.0]
        return out

    with ThreadPoolExecutor(3, thread_name_prefix="test-lines") as pool:
        texts = [d.text for d in recognize(crops, count_columns, charset, 16, 0, 1000, 1, map_fn=pool.map)]
    assert texts == ["aaaaa", "a", "aaa", "aa", "aaaa"]


def test_the_widest_lines_are_handed_to_the_threads_first():
    # Longest first: on two threads a long line never starts last and runs alone.
    charset = Charset(tuple("abc"))
    crops = [np.full((16, 16 * n, 3), 200, np.uint8) for n in (2, 9, 1, 4)]
    started: list[int] = []

    def first_come(read, batches):
        for batch in batches:  # what a pool's map submits, in this order
            started.append(crops[batch[0]].shape[1] // 16)
            yield read(batch)

    def blank(batch: np.ndarray) -> np.ndarray:
        return np.zeros((batch.shape[0], batch.shape[3] // 4, 4), np.float32)

    recognize(crops, blank, charset, 16, 0, 1000, 1, map_fn=first_come)
    assert started == [9, 4, 2, 1]


def test_the_sample_of_a_page_spreads_from_its_first_line_to_its_last():
    assert spread(20, 8) == [0, 3, 5, 8, 11, 14, 16, 19]
    assert spread(9, 8) == [0, 1, 2, 3, 5, 6, 7, 8]
    assert spread(8, 8) == list(range(8)) and spread(5, 8) == list(range(5))  # few lines: all of them
    assert spread(3, 1) == [0] and spread(3, 0) == []


def test_a_sample_shows_chinese_by_a_character_or_by_mass():
    latin = [Decoded("TOTAL 12.00", 0.99, 0.01), Decoded("CASH", 0.98, 0.2)]
    assert not shows_chinese(latin, 0.5)
    assert shows_chinese(latin + [Decoded("合计 12.00", 0.9, 0.99)], 0.5)
    assert shows_chinese(latin + [Decoded("12.00", 0.9, 0.6)], 0.5)  # a glyph it nearly read as Chinese
    assert not shows_chinese([], 0.5)


def test_a_narrow_reading_that_looks_chinese_is_read_again():
    for text in ("", "  ", "9174市", "（注）", "ア", "한", "ＡＢ", "\uf900", "\U00020000"):
        assert looks_chinese(text), text
    for text in ("TOTAL 12.00", "RM 3.50", "café", "Straße", "½ kg", "№ 5", "€ 9,99"):
        assert not looks_chinese(text), text
