"""Recognition: crops → width-sorted batches → recogniser → CTC decode.

Batching by aspect ratio keeps padding small: lines of similar width share a batch, and
each batch is only as wide as its widest line. The model is passed in as a callable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from edge_ocr.engine.decode import Charset, Decoded, ctc_greedy, is_cjk
from edge_ocr.engine.preprocess import plate_colour_share, resize_for_recognition

RunModel = Callable[[np.ndarray], np.ndarray]
# map(function, items) → results in order: the builtin map, or a thread pool's map to read lines in parallel.
MapFn = Callable[[Callable[[list[int]], list[Decoded]], Iterable[list[int]]], Iterator[list[Decoded]]]


def plan_batches(widths: Sequence[int], batch_size: int, max_columns: int) -> list[list[int]]:
    """Indices grouped into batches, narrowest lines first.

    widths: each line's pixel width at the model's height (after min/max clamping). A batch
    holds at most ``batch_size`` lines and, padded to its widest line, at most
    ``max_columns`` pixel columns in all, so memory stays bounded when lines are long
    (a receipt line can be 60x wider than tall); a single line always gets a batch.
    """
    order = sorted(range(len(widths)), key=lambda i: widths[i])
    batches: list[list[int]] = []
    for index in order:
        current = batches[-1] if batches else None
        if current is not None and len(current) < batch_size and (len(current) + 1) * widths[index] <= max_columns:
            current.append(index)
        else:
            batches.append([index])
    return batches


def batch_width(ratios: Sequence[float], height: int, min_width: int, max_width: int, multiple: int = 1) -> int:
    """Pixel width for a batch: the widest line at ``height``, within [min_width, max_width]."""
    widest = max(math.ceil(height * max(ratios)), min_width)
    return min(max_width, int(math.ceil(widest / multiple) * multiple))


def line_width(crop: np.ndarray, height: int) -> int:
    """A crop's width in pixels once scaled to the recogniser's ``height``."""
    return math.ceil(height * crop.shape[1] / max(crop.shape[0], 1))


def recognize(
    crops: Sequence[np.ndarray],
    run: RunModel,
    charset: Charset,
    height: int,
    min_width: int,
    max_width: int,
    batch_size: int,
    max_columns: int = 4096,
    masks: Sequence[np.ndarray | None] | None = None,
    map_fn: MapFn = map,
) -> list[Decoded]:
    """Recognise BGR crops; returns one Decoded per crop, in the input order.

    max_columns: bound on batch size × padded width (see ``plan_batches``).
    masks: optional per-crop boolean class masks (see ``decode.ctc_greedy``).
    map_fn: how batches are spread over threads (each batch is resized, run and decoded on one).
    """
    ratios = [c.shape[1] / max(c.shape[0], 1) for c in crops]
    widths = [batch_width([r], height, min_width, max_width) for r in ratios]

    def read(indices: list[int]) -> list[Decoded]:
        width = max(widths[i] for i in indices)
        batch = np.stack([resize_for_recognition(crops[i], height, width) for i in indices])
        probs = run(batch)
        return [
            ctc_greedy(probs[position : position + 1], charset, masks[index] if masks is not None else None)[0]
            for position, index in enumerate(indices)
        ]

    results: list[Decoded] = [Decoded("", 0.0)] * len(crops)
    # Costliest first (padded columns; one line per batch by default, so the widest line): on a pool
    # of threads the long lines start at once and the short ones fill in around them, so a long line
    # never runs last and alone (0.990 [0.976, 1.000] of the time per page at 2 threads, README).
    batches = sorted(plan_batches(widths, batch_size, max_columns),
                     key=lambda batch: -len(batch) * max(widths[i] for i in batch))
    for indices, decoded in zip(batches, map_fn(read, batches)):
        for index, result in zip(indices, decoded):
            results[index] = result
    return results


def classify_angles(
    crops: Sequence[np.ndarray], run: RunModel, height: int, width: int, batch_size: int, threshold: float
) -> list[bool]:
    """For each crop, True when the angle classifier says it is upside down (180°) with
    probability ≥ ``threshold``."""
    flips = [False] * len(crops)
    for start in range(0, len(crops), batch_size):
        chunk = crops[start : start + batch_size]
        batch = np.stack([resize_for_recognition(c, height, width) for c in chunk])
        probs = run(batch)
        for offset, row in enumerate(probs):
            flips[start + offset] = bool(row.argmax() == 1 and row[1] >= threshold)
    return flips


def needs_recheck(drafts: Sequence[Decoded], below: float) -> list[int]:
    """Indices of the lines a fast draft reader was unsure of: mean character confidence
    under ``below``, or no text at all. Measured on eval-dev pages: PP-OCRv6 tiny's drafts at
    ≥ 0.95 agree with PP-OCRv6 small almost always, and re-reading only the other ~30 % keeps
    small's end-to-end F1 within a point at about a third of its cost."""
    return [i for i, d in enumerate(drafts) if not d.text.strip() or d.score < below]


def needs_page_recheck(drafts: Sequence[Decoded], below: float) -> list[int]:
    """Indices of a Chinese page's drafts (PP-OCRv6 tiny) to read again with the page reader: all
    but the sure ones (``needs_recheck``) of Chinese text with no Latin letter and no white space.

    Tiny reads Chinese prose as the page reader does, but not the Latin in it ("Fine Art" as
    "℉ine Art", "23Q1)，" as "23Q1)."), and it puts spaces between digits and hanzi ("较1 季度")
    that the page reader does not. Chosen on half a of eval-dev's Chinese lines (the same exact
    match and CER as the page reader alone, and the same text with its spaces, for 0.59 of its
    cost), confirmed on half b (0.48): docs/accuracy.md."""
    unsure = set(needs_recheck(drafts, below))
    return [i for i, d in enumerate(drafts)
            if i in unsure or not has_cjk(d.text) or any(c.isspace() or (c.isascii() and c.isalpha()) for c in d.text)]


def needs_confirmation(readings: Sequence[Decoded], below: float, chinese_mass: float) -> list[int]:
    """Indices of the single lines the static int8 page reader should not answer alone: it
    sensed Chinese (``maybe_chinese`` at ``chinese_mass``: it lost short Chinese crops, "。" read
    "o", where the dynamic int8 variant reads them) or its mean confidence is under ``below``.

    On eval-dev's single lines this reads Latin words at 0.7x the dynamic variant's cost with
    alnum accuracy unchanged within a word per half (chosen on half a, confirmed on half b:
    bench/rules.py, docs/accuracy.md)."""
    return [i for i, r in enumerate(readings) if maybe_chinese(r, chinese_mass) or r.score < below]


def confirmed(first: Decoded, second: Decoded, chinese_mass: float) -> Decoded:
    """The page reader's ``first`` reading or the dynamic variant's ``second``: the second where
    the first sensed Chinese, else the more confident of the two (the two int8 variants err on
    different words: neither one's disagreements are the right ones more often)."""
    if maybe_chinese(first, chinese_mass) or second.score >= first.score:
        return second
    return first


def has_cjk(text: str) -> bool:
    """True when ``text`` holds a CJK unified ideograph (basic block or extension A)."""
    return any(is_cjk(c) for c in text)


def maybe_chinese(line: Decoded, min_mass: float) -> bool:
    """True when a reading has Chinese in it, or its reader put at least ``min_mass``
    probability on Chinese at some step (PP-OCRv6 often reads a plate's province character
    as a Latin letter or drops it, while still giving Chinese classes real mass there)."""
    return has_cjk(line.text) or line.cjk_mass >= min_mass


PLATE_MIN_LATIN = 4  # Latin letters and digits in a plate-shaped reading (Chinese plates have 5 or 6)


def plate_shaped(text: str) -> bool:
    """At most one Chinese character among at least ``PLATE_MIN_LATIN`` Latin letters or
    digits: a Chinese licence plate, with or without its province glyph."""
    return sum(is_cjk(c) for c in text) <= 1 and sum(c.isascii() and c.isalnum() for c in text) >= PLATE_MIN_LATIN


def needs_specialist(readings: Sequence[Decoded], sensed: Sequence[bool]) -> list[int]:
    """Indices of the lines to show the Chinese specialist (PP-OCRv4): Chinese was sensed
    (see ``maybe_chinese``) and the reading is plate-shaped.

    PP-OCRv6 drops a plate's province glyph, turns it into a Latin letter or misreads it,
    while PP-OCRv4 reads it. Other lines stay with PP-OCRv6, which reads Chinese documents,
    signs and handwriting better (chosen on one half of eval-dev, confirmed on the other:
    bench/rules.py, docs/accuracy.md).
    """
    return [i for i, (reading, chinese) in enumerate(zip(readings, sensed)) if chinese and plate_shaped(reading.text)]


def take_specialist(reading: Decoded, specialist: Decoded) -> Decoded:
    """The specialist's reading when it holds Chinese, else the reading: a Latin word
    whose reader merely hesitated over a Chinese class keeps its PP-OCRv6 text."""
    return specialist if has_cjk(specialist.text) else reading


# A Chinese plate (GA 36): province, issuing-office letter, the separator dot, 5 letters or digits
# (6 on new-energy plates), or 4 and a class character (trailers, coaches, police, Hong Kong and
# Macau), 5 with one on some.
PLATE_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
PLATE_SEPARATORS = "·•・‧."


def _plate_serial(chars: str) -> str:
    """The serial's pattern, its letters and digits from the character class ``chars``."""
    return "[%s]{5,6}[挂学警港澳]?|[%s]{4}[挂学警港澳]" % (chars, chars)


_PLATE_WITH_SEPARATOR = re.compile(
    "^([%s][A-Z])[%s](%s)$" % (PLATE_PROVINCES, re.escape(PLATE_SEPARATORS), _plate_serial("A-Z0-9")))
# A whole number as is_plate_number takes it: the serial never holds I or O (GA 36: they would be
# read as 1 and 0), so a reading with them is a misreading, left to the usual readers.
_PLATE = re.compile("[%s][A-Z][%s]?(%s)" % (PLATE_PROVINCES, re.escape(PLATE_SEPARATORS), _plate_serial("A-HJ-NP-Z0-9")))
# A plate's outline: 440 x 140 mm (3.1:1), new-energy plates 480 x 140 (3.4:1); a crop of the
# plate with some margin, or of its characters alone, stays within this.
PLATE_ASPECT = (2.5, 5.5)
PLATE_MAX_PIXELS = 1_000_000  # a plate's region, even in a 4K frame, is a fraction of this


def plate_number(text: str) -> str:
    """A Chinese plate's reading as its registration number, without the separator dot the
    readers see between the office letter and the serial ("皖A·C4933" -> "皖AC4933"), as it is
    written in registers and matched by gate lists; any other text unchanged."""
    return _PLATE_WITH_SEPARATOR.sub(r"\1\2", text)


def is_plate_number(text: str) -> bool:
    """A whole Chinese registration number, province to serial, with or without the separator."""
    return _PLATE.fullmatch(text) is not None


def plate_in_sight(crop: np.ndarray, min_share: float) -> bool:
    """A crop shaped like a licence plate (``PLATE_ASPECT``) with at least ``min_share`` of its
    pixels in a plate's background colour (``preprocess.plate_colour_share``): shown to the plate
    specialist first, before any other reader (0 = never). The share was chosen on half a of
    eval-dev's lines, confirmed on half b (bench/plate_sight.py, docs/accuracy.md)."""
    height, width = crop.shape[:2]
    if min_share <= 0 or height == 0 or not PLATE_ASPECT[0] <= width / height <= PLATE_ASPECT[1]:
        return False
    if height * width > PLATE_MAX_PIXELS:  # a banner, not a plate: never worth a reading more
        return False
    return plate_colour_share(crop) >= min_share


def spread(count: int, size: int) -> list[int]:
    """``size`` indices spread evenly over ``range(count)`` from first to last (all when
    ``count <= size``): the lines of a page in reading order that stand for the whole page."""
    if count <= size:
        return list(range(count))
    if size <= 1:
        return [0][:size]
    return sorted({round(i * (count - 1) / (size - 1)) for i in range(size)})


def shows_chinese(readings: Sequence[Decoded], min_mass: float) -> bool:
    """True when any reading holds a Chinese character or put ``min_mass`` probability on
    Chinese at some step: the sample that keeps a page off the narrow page reader."""
    return any(maybe_chinese(r, min_mass) for r in readings)


def looks_chinese(text: str) -> bool:
    """A narrow page reader's reading that hints at a Chinese line after all, so it is read
    again whole: empty, or holding a CJK ideograph (one of its sentinel hanzi), CJK
    punctuation, kana or bopomofo, hangul, full-width forms, compatibility ideographs or a
    supplementary-plane character."""
    if not text.strip():
        return True
    return any(is_cjk(c) or "\u3000" <= c <= "\u31ff" or "\uac00" <= c <= "\ud7af" or "\uf900" <= c <= "\ufaff"
               or "\uff00" <= c <= "\uffef" or ord(c) >= 0x20000 for c in text)
