"""edge_ocr.engine.decode: greedy CTC and allowed_chars masking on hand-made probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from edge_ocr.engine.decode import Charset, ctc_greedy, load_charset

CHARSET = Charset(("1", "7", "I", "a"))  # classes: 0 blank, 1 '1', 2 '7', 3 'I', 4 'a'


def steps(*rows: list[float]) -> np.ndarray:
    return np.asarray([rows], dtype=np.float32)


def test_repeats_collapse_and_blanks_separate():
    # a a _ a 7 7  ->  "aa7"
    probs = steps(
        [0, 0, 0, 0, 1],
        [0, 0, 0, 0, 1],
        [1, 0, 0, 0, 0],
        [0, 0, 0, 0, 1],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
    )
    (result,) = ctc_greedy(probs, CHARSET)
    assert result.text == "aa7"
    assert result.score == pytest.approx(1.0)


def test_confidence_is_the_mean_of_emitted_characters():
    probs = steps([0.1, 0.9, 0, 0, 0], [0.7, 0.3, 0, 0, 0], [0.2, 0, 0.0, 0.0, 0.8])
    (result,) = ctc_greedy(probs, CHARSET)
    assert result.text == "1a"
    assert result.score == pytest.approx((0.9 + 0.8) / 2)


def test_allowed_chars_mask_picks_the_best_allowed_class_not_a_filtered_string():
    # The model prefers "I" (0.6) over "1" (0.3): a digits-only region must read "1",
    # which filtering "I" out of the string afterwards would have lost.
    probs = steps([0.05, 0.3, 0.05, 0.6, 0.0])
    assert ctc_greedy(probs, CHARSET)[0].text == "I"
    (masked,) = ctc_greedy(probs, CHARSET, CHARSET.allowed_mask("0123456789"))
    assert masked.text == "1"
    assert masked.score == pytest.approx(0.3 / 0.4)  # renormalised over blank + digits


def test_full_width_allowed_digits_allow_the_digits_the_reader_writes():
    """allowed_chars typed by a Chinese input method in full-width mode ("０１２…９"): the reader
    writes 0-9, so the region read nothing; each character counts in its NFKC form too."""
    probs = steps([0.05, 0.3, 0.05, 0.6, 0.0])
    assert ctc_greedy(probs, CHARSET, CHARSET.allowed_mask("０１２３４５６７８９"))[0].text == "1"
    assert not CHARSET.allowed_mask("０１２３４５６７８９")[3]  # "I" stays out


def test_empty_allowed_chars_allows_everything():
    assert CHARSET.allowed_mask("").all()


def test_empty_output_scores_zero():
    (result,) = ctc_greedy(steps([1, 0, 0, 0, 0]), CHARSET)
    assert result.text == "" and result.score == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="expected"):
        ctc_greedy(np.zeros((1, 3, 9), np.float32), CHARSET)


def test_charset_files_with_crlf_and_a_space_class():
    charset = load_charset("a\r\nb\r\n", space_appended=True)
    assert charset.chars == ("a", "b", " ") and charset.num_classes == 4


def test_chinese_mass_counts_cjk_probability_even_where_a_latin_class_wins():
    charset = Charset(("A", "皖", "1"))  # classes: 0 blank, 1 'A', 2 '皖', 3 '1'
    probs = np.array([[[0.1, 0.5, 0.4, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]], np.float32)
    (decoded,) = ctc_greedy(probs, charset)
    assert decoded.text == "A1" and abs(decoded.cjk_mass - 0.4) < 1e-6
    (latin_only,) = ctc_greedy(probs[:, :, [0, 1, 3]], Charset(("A", "1")))
    assert latin_only.cjk_mass == 0.0


def test_class_runs_are_the_true_stretches_in_order():
    from edge_ocr.engine.decode import class_runs

    assert class_runs(np.array([True, True, False, True, False, False, True])) == ((0, 2), (3, 4), (6, 7))
    assert class_runs(np.array([False, False])) == ()
    assert class_runs(np.array([True])) == ((0, 1),)
