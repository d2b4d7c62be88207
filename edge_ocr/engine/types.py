"""Value types passed between engine stages and out of the engine. numpy only."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

# A quadrilateral as 4 (x, y) points, clockwise from top-left, float32, shape (4, 2).
Quad = np.ndarray

MAX_THREADS = 256  # engine.threads above this is a typo: ONNX Runtime would start that many threads


@dataclass(frozen=True, slots=True)
class Transform:
    """Maps source pixel coordinates to a working image: ``work = src * scale + offset``.

    Every resize/crop in preprocessing returns one, so detected quads can be mapped back
    to the pixels of the image the user gave us.
    """

    scale_x: float = 1.0
    scale_y: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) working-image points back to source coordinates (float32)."""
        pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        out = np.empty_like(pts)
        out[:, 0] = (pts[:, 0] - self.offset_x) / self.scale_x
        out[:, 1] = (pts[:, 1] - self.offset_y) / self.scale_y
        return out

    def then(self, other: Transform) -> Transform:
        """The transform that applies ``self`` first, then ``other``."""
        return Transform(
            scale_x=self.scale_x * other.scale_x,
            scale_y=self.scale_y * other.scale_y,
            offset_x=self.offset_x * other.scale_x + other.offset_x,
            offset_y=self.offset_y * other.scale_y + other.offset_y,
        )


@dataclass(frozen=True, slots=True)
class StripPlan:
    """How a detection input is cut into tiles of one fixed shape along its longer side.

    ``axis`` 0 cuts bands of rows (the image is at least as tall as wide), 1 bands of columns.
    ``starts`` are each tile's first row (or column) in the image; ``tile`` is the (height,
    width) every tile is padded to; ``size`` the (height, width) of the whole image. A tile's
    content is the image from its start on, ``length`` long and as wide as the image; the rest
    of the tile is padding.
    """

    axis: int
    starts: tuple[int, ...]
    length: int
    tile: tuple[int, int]
    size: tuple[int, int]

    def owned(self) -> tuple[tuple[int, int], ...]:
        """The range along ``axis`` each tile's map is kept for: from the middle of its overlap
        with the previous tile to the middle of its overlap with the next, so every row (or
        column) comes from the tile where it lies furthest from a cut edge."""
        total = self.size[self.axis]
        bounds = [0] + [(nxt + cur + self.length) // 2 for cur, nxt in itertools.pairwise(self.starts)] + [total]
        return tuple((bounds[i], bounds[i + 1]) for i in range(len(self.starts)))


@dataclass(frozen=True, slots=True)
class Region:
    """A named region of interest, read directly without detection: what a camera's ``rois``
    entry declares, what ``POST /api/ocr`` asks for, and what the engine reads.

    ``box`` is ``(x, y, width, height)`` in source pixels. ``allowed_chars`` restricts the
    decoder (empty = every character of the pack). The rest are camera-only: the text must
    fullmatch ``pattern`` (else the region's status is "rejected"), and the crop gets light
    preprocessing before recognition, in this order: grey, contrast (CLAHE), invert, rotate.
    The metadata are the config keys' docs and bounds (config.py reads them).
    """

    name: str = field(metadata={"doc": "unique in the source; ASCII letters, digits, '_' or '-'"})
    box: tuple[int, int, int, int] = field(metadata={"doc": "[x, y, width, height] in frame pixels"})
    allowed_chars: str = field(default="", metadata={"doc": "only these characters are read (\"\" = all; a full-width one, ０-９, also as its ASCII form)",
                                                     "max_len": 4096})
    pattern: str = field(default="", metadata={"doc": "a regular expression the text must fullmatch"})
    grey: bool = field(default=False, metadata={"doc": "read the crop in grey"})
    clahe: bool = field(default=False, metadata={"doc": "contrast-limited histogram equalisation"})
    invert: bool = field(default=False, metadata={"doc": "light-on-dark displays"})
    rotate: int = field(default=0, metadata={"doc": "degrees clockwise", "choices": (0, 90, 180, 270)})


@dataclass(frozen=True, slots=True)
class TextLine:
    """One recognised line: text, confidence in [0, 1], quad in source pixels."""

    text: str
    score: float
    box: Quad
    det_score: float = 1.0
    roi: str | None = None

    def box_list(self) -> list[list[int]]:
        return [[int(round(x)), int(round(y))] for x, y in np.asarray(self.box).reshape(4, 2)]


@dataclass(frozen=True, slots=True)
class EngineOutput:
    """What one engine call returns. ``timing_ms`` keys: decode, preprocess, detect,
    classify, recognize, total (stages that did not run are absent)."""

    lines: tuple[TextLine, ...]
    image_size: tuple[int, int]  # (width, height) of the decoded source image
    timing_ms: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines if line.text)


@dataclass(frozen=True, slots=True)
class DbParams:
    """DB post-processing knobs (the defaults follow PaddleOCR's published settings).

    thresh: pixel probability that counts as text; box_thresh: minimum mean probability
    inside a candidate; unclip_ratio: how far a shrunk text kernel is grown back
    (offset = area × ratio / perimeter); min_size: shortest side in map pixels.
    """

    thresh: float = 0.3
    box_thresh: float = 0.6
    unclip_ratio: float = 1.5
    min_size: float = 3.0
    max_candidates: int = 1000
    dilate: bool = False

    @classmethod
    def from_published(cls, thresholds: dict[str, float]) -> DbParams:
        """The thresholds a detector was published with (``thresh``, ``box_thresh``,
        ``unclip_ratio`` from its inference.yml); the rest at their defaults."""
        defaults = cls()
        return cls(
            thresh=float(thresholds.get("thresh", defaults.thresh)),
            box_thresh=float(thresholds.get("box_thresh", defaults.box_thresh)),
            unclip_ratio=float(thresholds.get("unclip_ratio", defaults.unclip_ratio)),
        )


READING_ORDERS = ("columns", "rows")  # EngineOptions.reading_order

# EngineOptions that change how fast the engine reads or what it holds, never what it reads: left out
# of OcrEngine.reading_id (everything else counts, so an option added later does unless named here).
NOT_READING_OPTIONS = frozenset({"threads", "precision", "allow_spinning", "verify_checksums", "lazy_sessions",
                                 "parallel_lines", "page_line_threads", "specialist_threads", "max_megapixels"})


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine runs; config.EngineConfig maps the ``[engine]`` table onto this."""

    pack: str = "default"
    threads: int | str = "auto"
    precision: str = "auto"
    max_megapixels: float = 50.0  # refuse larger images before decoding them
    det_limit_side: int = 960  # detection input: longer side at most this many pixels
    det: DbParams | None = None  # None = the thresholds the pack's detector was published with
    # Small text on a big image (a dense page scanned at 300 dpi, a two-page spread): when the
    # image was shrunk for detection (by 1.25x or more: ocr.SMALL_TEXT_GAIN) and the median
    # height of the boxes found (at least det_small_text_min_boxes) is under this many
    # pixels of detection input, it is detected
    # again at twice the scale (at most its own size, on the detector's 32 px grid), in
    # overlapping strips no larger than the first input, so the detector's memory stays where
    # it was (detect.median_height; 0 = never). Box medians come in steps (7.1, 9.5, 11.8, 14 px:
    # the post-processing keeps no box under ~7). 12 was chosen on half a of eval-dev (its pages
    # and 2x2 mosaics of them: four receipts on one scan 65.5 -> 81.3 e2e F1, the book page one
    # line less; 14 cost IC15 1.5) and confirmed on half b (mosaics 60.4 -> 79.8 and 75.1 -> 80.1,
    # pages unchanged): bench/small_text.py, docs/accuracy.md "Dense pages".
    det_small_text: float = 12.0
    # ... and only with at least this many boxes found: the pass is for dense pages (the mosaics of
    # bench/dense_pages.py give 135-586 boxes at 960 px). A camera frame with a few specks of texture
    # (small boxes, small median) would otherwise pay ~4x the detection on every frame; 70-130 spared
    # the real eval-dev pages the pass but is no rule (docs/accuracy.md "Dense pages").
    det_small_text_min_boxes: int = 20
    # "columns": a page's text columns one after the other, then rows (layout.reading_order);
    # "rows": rows across the whole page, as before 2026-12-05 (READING_ORDERS).
    reading_order: str = "columns"
    use_cls: bool = False  # angle classifier for upside-down lines
    use_rec_zh: bool = True  # a pack's Chinese specialist recogniser, where it has one
    # A pack's fast draft reader, for long single lines and regions (recognize.needs_recheck) and
    # for the lines of a page whose sample shows Chinese (recognize.needs_page_recheck; see
    # ``narrow_sample``); False reads every line with the accurate recogniser.
    use_rec_fast: bool = True
    recheck_below: float = 0.95  # drafts with a lower mean confidence are re-read by the accurate recogniser
    # Single lines and regions at most this wide at the recogniser's height (48 px) skip the draft
    # and are read by the accurate recogniser: on eval-dev crops this matched reading every line
    # accurately on both halves, at a third of its p95 cost (docs/accuracy.md). A page's lines: ``use_rec_fast``.
    draft_min_width: int = 320
    chinese_mass: float = 0.05  # this much probability on Chinese at any step of a draft counts as Chinese sensed
    # ... and this much in a reading of the accurate recogniser: PP-OCRv6 small rarely puts any
    # mass on Chinese for a Latin glyph, so 0.5 % at one step marks a province glyph it could not
    # read (plates 92 -> 96 % on both halves of eval-dev, Latin sources unchanged: bench/rules.py).
    specialist_mass: float = 0.005
    # A single line or region the static int8 page reader sensed this much Chinese in, or read
    # with a mean confidence under ``confirm_below``, is re-read by the dynamic int8 recogniser
    # (recognize.needs_confirmation; chosen on half a of eval-dev's lines, confirmed on half b).
    confirm_below: float = 0.9
    confirm_chinese_mass: float = 0.01
    cls_threshold: float = 0.9
    # Exact int8 sums in the detector on x86 CPUs without VNNI (models.make_session ``exact_sums``),
    # where ONNX Runtime adds u8 x s8 products in pairs into int16. Not needed by the shipped
    # detector: its 29 convolutions whose pairs saturated have 7-bit weights (models/build.py), so it
    # agrees with fp32 on such a CPU as on a VNNI one (binary IoU 0.956 either way) at full speed; with
    # exact sums it took 1.2-1.3x the time there. No effect on VNNI or ARM CPUs.
    exact_detector_sums: bool = False
    rec_batch_size: int = 1  # measured: batching only pads; 1 was fastest and smallest on 1-2 threads
    rec_batch_columns: int = 4096  # batch lines × padded width: bounds recogniser memory
    rec_min_width: int = 0  # 0 = the pack's min_width (PP-OCRv5/6 read best padded to 320)
    # A page's lines, read by the page reader, are padded only to this width, never beyond the
    # pack's (0 = as single lines, ``rec_min_width`` or the pack's): the pack's 160 px helps a
    # single short word, but on eval-dev pages 96 px read as well (e2e F1 within 0.1 on half a,
    # as good or better on half b: bench/page_rules.py) for ~8 % fewer columns on receipts, 19 % on photos.
    page_min_width: int = 96
    rec_max_width: int = 0  # 0 = the pack's max_width, else the model's height × 64
    min_line_score: float = 0.5  # lines below this recognition confidence are dropped
    # With threads > 1, a page's lines are read in parallel, one per thread (a 48-px line is too
    # small to split well: bench/tricks.py), by a session of the page reader with
    # ``page_line_threads`` intra-op threads (0 = all): with one each, English pages took 0.95-0.97x
    # the time of every line on all threads, which contend for one pool (bench/paired.py, paired,
    # two runs; same texts). Single lines and regions keep all threads inside the model (one thread
    # was p50 +8 % per crop), so they get a session of their own, made at the first one.
    parallel_lines: bool = True
    page_line_threads: int = 1
    # Intra-op threads of the plate specialist (0 = all; never more than ``threads``). Its int8
    # file used to gain nothing from a second thread (0.994 of the time per plate): paddle2onnx's
    # element-wise chains, run one op at a time, were half its time. With them fused and folded
    # into its convolutions (models/rewrites.py), two threads take 0.871 [0.867, 0.877] of one's
    # time per plate on half a of eval-dev's plates and 0.848 [0.835, 0.859] on half b, the same
    # texts (bench/paired.py, 2 threads, 2-core x86).
    specialist_threads: int = 0
    # A single line or region shaped like a licence plate and this much of it in a plate's
    # background colour (recognize.plate_in_sight) is read by the plate specialist first, and its
    # reading kept when it is a whole registration number (recognize.is_plate_number): a plate
    # then costs one reading, not the page reader's and then the specialist's. Any other reading
    # goes the usual way. 0 = never. Chosen on half a of eval-dev's lines, confirmed on half b
    # (bench/plate_sight.py, docs/accuracy.md).
    plate_sight_share: float = 0.25
    # A page with more lines than this has that many of them, spread over it, read first by the
    # page reader; if none shows Chinese (mass ``narrow_chinese_mass``: recognize.shows_chinese),
    # the rest are read by the pack's narrow page reader (``rec_page_narrow``: its classifier cut
    # to the classes that are not CJK ideographs, GB2312's level-1 hanzi kept as sentinels), and
    # a reading that looks Chinese after all is read again whole (recognize.looks_chinese). Every
    # kept class scores as in the whole classifier, so a line reads the same unless its best
    # class was cut. On eval-dev pages: the same e2e F1 and page CER on every source and half,
    # receipts in 0.93x the time at 1 thread, 0.94x at 2 (bench/narrow_head.py, docs/benchmarks.md).
    # Where the sample does show Chinese and at least ``draft_page_chinese_lines`` of its lines hold
    # hanzi, the rest are drafted by the fast reader (``use_rec_fast``; recognize.needs_page_recheck).
    # 0 = never: every line by the page reader.
    narrow_sample: int = 8
    narrow_chinese_mass: float = 0.5
    # English receipts and photos with a hanzi or two among their sample lines (1-2 of 8 on eval-dev)
    # would be drafted for nothing (their drafts hold no hanzi, so all are read again); a report page
    # of tables and figures had 4, where tiny's drafts and the re-reads cost as much as reading every
    # line; the pages of prose 7. 5 was the least work at the same scores on half a of eval-dev's
    # pages (3 and 4: 1 % more on its Chinese pages), confirmed on half b (bench/page_rules.py).
    draft_page_chinese_lines: int = 5
    # The first drafts of a page (``narrow_sample`` of its other lines, spread over them) are its
    # probe: where tiny keeps fewer than this many of them (``recognize.needs_page_recheck``), it is
    # unsure of this page's lines (hand-like writing, say), and drafting the rest would cost more
    # than reading them (a draft is ~0.37 of a page reader's line, so 3 in 8 kept is the break-even)
    # and keep more of its sure but wrong readings: the rest are read by the page reader. On pages
    # drawn from half a of the rendered lines (bench/chinese_drafts.py) 3 cost at most 0.02 CER
    # points on any style (4: 0.11) and stopped 86-98 % of the pages tiny reads worst, where drafting
    # cost 1.2x reading; confirmed on half b. eval-dev's Chinese pages keep 7 of 8 (docs/accuracy.md). 0 = never stop.
    draft_probe_kept: int = 3
    # ONNX Runtime's worker threads busy-wait for the next operator while a run lasts, and stop
    # when it returns (``session.force_spinning_stop``): without the stop each model's pool spun on
    # against the next model's (single crops p50 10.9 -> 15.2 ms) and ~46 ms past every run. With
    # it, at 2 threads, single crops take 0.855 of the time for 1.016 of the CPU and pages 0.96-0.98
    # (bench/paired.py, docs/benchmarks.md); no change at 1 thread (no workers). Two calls at once
    # on 2 cores spin against each other (1.24-1.4x the time), so the daemon turns it off with
    # more than one pipeline worker.
    allow_spinning: bool = True
    verify_checksums: bool = True
    # Make every session at its first use, the detector and page reader too: a one-shot run
    # (`edge-ocr ocr --no-det` on crops) then holds only the recognisers its images need. A
    # daemon keeps the default and loads those two up front, so its first page waits for no load.
    lazy_sessions: bool = False
