"""OcrEngine: composes decode → detect → crop → classify → recognise for one image.

The engine is built once (the sessions a page needs are loaded in the constructor; recognisers
that only some lines need are loaded at their first use) and is safe to call from several
threads: every per-call option is an argument and no stage keeps per-call state.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace

import numpy as np

from edge_ocr import __version__
from edge_ocr.engine import detect, layout, preprocess, recognize
from edge_ocr.engine.budget import PixelBudget
from edge_ocr.engine.decode import Decoded
from edge_ocr.engine.models import Model, Pack, auto_threads, choose_variant, load_pack, verify_pack
from edge_ocr.engine.types import (
    MAX_THREADS,
    NOT_READING_OPTIONS,
    READING_ORDERS,
    DbParams,
    EngineOptions,
    EngineOutput,
    Region,
    TextLine,
)
from edge_ocr.errors import ConfigError, ModelError, RegionOutsideImage, UnknownPack

# The second detection pass for small text (EngineOptions.det_small_text) only for an image at
# least this much larger than the first pass's input: less would redo the same work.
SMALL_TEXT_GAIN = 1.25
# Its strips overlap by this many pixels: the detector's edge effects fade within 16-32 px of a
# cut (measured with the strips of commit 66ee299), so every kept row is at least 32 px from one.
STRIP_OVERLAP = 64
# An image whose longer side is at least this many times its shorter one (a phone's scrolling
# screenshot, 753 x 10,440) is detected fitted by its shorter side, in strips: fitted by its longer
# one, its text came out 1-3 px high and nothing was read. The longest eval-dev page (a receipt) is
# 3.4 times as long as wide, so no page of the sets the engine is measured on takes this path.
ELONGATED = 4.0
ELONGATED_PAGES = 8


def _threads(value: int | str) -> int:
    if value == "auto":
        return auto_threads()
    if isinstance(value, int) and 1 <= value <= MAX_THREADS:
        return value
    raise ConfigError("engine.threads: expected \"auto\" or an integer from 1 to %d, got %r" % (MAX_THREADS, value))


class OcrEngine:
    """Image in, text lines with boxes, scores and stage timings out.

    Raises ModelError on a missing or corrupt pack, ImageError on a bad image.
    """

    def __init__(self, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        self.pack: Pack = load_pack(self.options.pack)
        if self.options.verify_checksums:
            problems = verify_pack(self.pack)
            if problems:
                raise ModelError("; ".join(problems))
        self.threads = _threads(self.options.threads)
        if self.options.reading_order not in READING_ORDERS:
            raise ConfigError("engine.reading_order: expected one of %s, got %r" % (", ".join(READING_ORDERS),
                                                                                  self.options.reading_order))
        # The megapixels read at once by concurrent calls (engine/budget.py).
        self._pixels = PixelBudget(self.options.max_megapixels)
        self._line_pool: ThreadPoolExecutor | None = None
        if self.options.parallel_lines and self.threads > 1:
            self._line_pool = ThreadPoolExecutor(self.threads, thread_name_prefix="edge-ocr-line")
        stages = self.pack.stages
        if "rec" not in stages:
            # a choice, not a broken install (`common` holds files the packs share): exit 2, no restart loop
            raise UnknownPack("pack %s has no recogniser: it is no pack to read with (edge-ocr models list)"
                              % self.pack.name)
        eager = not self.options.lazy_sessions
        self.det = self._load("det", not eager) if "det" in stages else None
        self.db_params = self.options.det or DbParams.from_published(stages["det"].postprocess if "det" in stages else {})
        self.cls = self._load("cls", not eager) if self.options.use_cls and "cls" in stages else None
        # The page reader, where the pack has one: `rec`'s model in a faster int8 variant. It reads
        # every line of a page and, first, every single line. A page's lines run `threads` at a time
        # on the line pool, each on a session with fewer intra-op threads (`page_lines`:
        # EngineOptions.page_line_threads); single lines keep all threads on `rec_page`, then its
        # own session of the same file, made at the first single line.
        has_page_reader = self.det is not None and "rec_page" in stages
        line_threads = self.options.page_line_threads
        own_session = has_page_reader and self._line_pool is not None and 0 < line_threads < self.threads
        self.page_lines = self._load("rec_page", not eager, threads=line_threads) if own_session else None
        self.rec_page = self._load("rec_page", own_session or not eager) if has_page_reader else None
        if self.page_lines is None:
            self.page_lines = self.rec_page
        # The narrow page reader (EngineOptions.narrow_sample): made at the first page without
        # Chinese, with the page lines' threads; only beside the static int8 page reader it was cut from.
        narrow = (has_page_reader and "rec_page_narrow" in stages and self.options.narrow_sample > 0
                  and self.rec_page is not None and self.rec_page.variant.precision == "int8")
        self._narrow = (self._load("rec_page_narrow", lazy=True, threads=line_threads if own_session else 0)
                        if narrow else None)
        # With a page reader, `rec` and `rec_fast` read only single lines, regions and the rechecks
        # of drafts, so their sessions are made at the first line that needs one: a daemon that
        # reads only pages never loads them (docs/memory.md). Without one, `rec` reads every page.
        lazy = self.rec_page is not None or self.options.lazy_sessions
        self._rec = self._load("rec", lazy)
        if self.rec_page is not None and self.rec_page.variant.path == self._rec.variant.path:
            self._rec = self.rec_page  # both in fp32: one file, one session, nothing to confirm against
        # Only the static int8 page reader's single lines are confirmed by `rec` (an fp32 page
        # reader, where its int8 variant is missing, reads at least as well as `rec`).
        self._confirms = self.rec_page is not None and self.rec_page.variant.precision == "int8"
        self._rec_fast = self._load("rec_fast", lazy) if self.options.use_rec_fast and "rec_fast" in stages else None
        # The draft reader of a Chinese page's lines (``_read_page``): made at the first page whose
        # sample holds enough hanzi (``draft_page_chinese_lines``), with the page lines' threads.
        self._page_drafts = self._rec_fast if has_page_reader else None
        if own_session and self._rec_fast is not None:
            self._page_drafts = self._load("rec_fast", lazy=True, threads=line_threads)
        # The Chinese plate specialist is always loaded at the first line that needs it (3-6 MB not
        # spent by the many deployments that never read a plate with a province character).
        self._rec_zh_stage = stages.get("rec_zh") if self.options.use_rec_zh else None
        self._rec_zh = (self._load("rec_zh", lazy=True, threads=self.options.specialist_threads)
                        if self._rec_zh_stage is not None else None)
        for model in (self._rec, self._rec_zh, self._rec_fast, self.rec_page, self._narrow):
            if model is not None and model.stage.charset is None:
                raise ModelError("pack %s: recogniser %s has no charset" % (self.pack.name, model.stage.name))

    def _load(self, stage: str, lazy: bool = False, threads: int = 0) -> Model:
        """The stage's model; with ``lazy`` its session is made at its first run (``Model``);
        ``threads`` intra-op threads, never more than the engine's (0 or less = the engine's)."""
        spec = self.pack.stages[stage]
        threads = min(threads, self.threads) if threads > 0 else self.threads
        return Model(spec, choose_variant(spec, self.options.precision), threads,
                     self.options.allow_spinning, lazy=lazy, exact_sums=stage == "det" and self.options.exact_detector_sums)

    @property
    def rec(self) -> Model:
        """The accurate recogniser (its session made at first run when the pack has a page reader)."""
        return self._rec

    @property
    def rec_fast(self) -> Model | None:
        """The draft reader, if used (lazy like ``rec``)."""
        return self._rec_fast

    @property
    def rec_zh(self) -> Model | None:
        """The specialist if it was loaded (see ``_specialist``)."""
        return self._rec_zh if self._rec_zh is not None and self._rec_zh.loaded else None

    def _specialist(self) -> Model:
        assert self._rec_zh is not None  # _read asks only when the pack has one
        return self._rec_zh

    @property
    def rec_page_narrow(self) -> Model | None:
        """The narrow page reader, if used (its session made at the first page without Chinese)."""
        return self._narrow

    def models(self) -> dict[str, Model]:
        """Every stage the engine may run, by role, loaded or to be loaded at first need (one
        ``Model`` may fill two roles: in fp32 ``rec`` and ``rec_page``, with one thread
        ``rec_page`` and ``page_lines``)."""
        models = {"det": self.det, "cls": self.cls, "rec_fast": self._rec_fast, "page_drafts": self._page_drafts,
                  "rec": self._rec, "rec_page": self.rec_page, "page_lines": self.page_lines,
                  "rec_page_narrow": self._narrow, "rec_zh": self._rec_zh}
        return {name: m for name, m in models.items() if m is not None}

    @property
    def loaded(self) -> tuple[str, ...]:
        """The stages whose sessions exist now, e.g. ``("det", "rec_page")`` after pages only
        (``rec_page`` whichever of its sessions, page lines' or single lines', exists)."""
        return tuple(dict.fromkeys(m.stage.name for m in self.models().values() if m.loaded))

    def release_idle(self, idle_s: float = 30.0) -> tuple[str, ...]:
        """Drop the sessions made at first need (single-line recognisers, the page reader's
        single-line session, the drafter of Chinese pages, the plate specialist; with
        ``lazy_sessions`` all of them) that no
        line used for ``idle_s`` seconds: the memory guard's soft level (one in use would only be
        made again at once). They are made again when a line needs them. Returns the sessions
        released by role, e.g. ``("rec", "rec_page", "rec_zh")`` (``page_lines``: a page's)."""
        return tuple(name for name, m in self.models().items() if m.release(idle_s))

    def close(self) -> None:
        """Stop the line threads (idempotent). Later calls still work, reading lines one by one."""
        pool, self._line_pool = self._line_pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    @property
    def reading_id(self) -> str:
        """16 hex digits that change whenever the same image could be read otherwise: edge-ocr's
        version, the pack's content (``Pack.version``), each stage's precision as chosen, and every
        option but NOT_READING_OPTIONS. The drop folder reuses a stored result only under the same id."""
        options = {f.name: getattr(self.options, f.name) for f in fields(self.options)
                   if f.name not in NOT_READING_OPTIONS}
        identity = {"edge_ocr": __version__, "pack": [self.pack.name, self.pack.version],
                    "precisions": self.precisions, "options": options}
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=repr).encode()).hexdigest()[:16]

    @property
    def precisions(self) -> dict[str, str]:
        """The precision of each stage, loaded or to be loaded at first need, e.g.
        ``{"det": "int8", "rec": "fp32"}``."""
        # page_lines is rec_page's file, page_drafts rec_fast's
        return {name: m.variant.precision for name, m in self.models().items()
                if name not in ("page_lines", "page_drafts")}

    def __call__(
        self,
        image: bytes | np.ndarray,
        rois: Sequence[Region] | None = None,
        det: bool = True,
        limit_side: int | None = None,
    ) -> EngineOutput:
        """OCR one image (encoded bytes or a BGR uint8 array).

        With ``rois``, detection is skipped and each region is recognised with its own
        ``allowed_chars``. With ``det=False`` the whole image is read as one line.
        ``limit_side`` lowers the detection input cap for this call (the memory guard's
        soft level); it never raises it above ``options.det_limit_side``.
        """
        start = time.perf_counter()
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            _, width, height = preprocess.probe_image(data)  # raises UnsupportedImage, nothing decoded yet
            megapixels = width * height / 1e6
            if megapixels > self.options.max_megapixels:  # refused at once, never queued for the budget
                preprocess.decode_image(data, self.options.max_megapixels)
            with self._pixels.hold(megapixels):
                decoding = time.perf_counter()
                decoded = preprocess.decode_image(data, self.options.max_megapixels)
                return self._ocr(decoded, rois, det, limit_side, start, {"decode": _ms(decoding)})
        with self._pixels.hold(image.shape[0] * image.shape[1] / 1e6):
            return self._ocr(image, rois, det, limit_side, start, {})

    def _ocr(self, image: np.ndarray, rois: Sequence[Region] | None, det: bool, limit_side: int | None,
             start: float, timing: dict[str, float]) -> EngineOutput:
        """The rest of ``__call__`` on a decoded image, its megapixels held."""
        height, width = image.shape[:2]
        if rois:
            _inside(rois, width, height)
            quads = [preprocess.box_quad(r.box, (width, height)) for r in rois]
            det_scores = [1.0] * len(quads)
            names: list[str | None] = [r.name for r in rois]
            allowed: list[str] = [r.allowed_chars for r in rois]
        elif det and self.det is not None:
            side = min(limit_side or self.options.det_limit_side, self.options.det_limit_side)
            quads, det_scores = self._detect(image, timing, side, second_pass=limit_side is None)
            names, allowed = [None] * len(quads), []
        else:
            quads = [preprocess.box_quad((0, 0, width, height), (width, height))]
            det_scores, names, allowed = [1.0], [None], []

        t0 = time.perf_counter()
        if rois or not det or self.det is None:
            # Regions are upright by definition: slice them, never rotate a tall one.
            crops = [preprocess.crop_box(image, q) for q in quads]
        else:
            crops = [preprocess.crop_quad(image, q) for q in quads]
        if self.cls is not None and crops:
            stage = self.cls.stage
            flips = recognize.classify_angles(
                crops, self.cls.run, stage.height, stage.width, self.options.rec_batch_size, self.options.cls_threshold
            )
            crops = [np.ascontiguousarray(c[::-1, ::-1]) if f else c for c, f in zip(crops, flips)]
            timing["classify"] = _ms(t0)
        t1 = time.perf_counter()
        keep_all = bool(rois) or not det or self.det is None
        decoded = self._read(crops, allowed, detected=not keep_all)
        timing["recognize"] = _ms(t1)

        lines = []
        for quad, det_score, name, result in zip(quads, det_scores, names, decoded):
            if not keep_all and (not result.text.strip() or result.score < self.options.min_line_score):
                continue
            lines.append(TextLine(result.text, result.score, quad, det_score, name))
        timing["total"] = _ms(start)
        return EngineOutput(tuple(lines), (width, height), timing)

    def _read(self, crops: list[np.ndarray], allowed: list[str], detected: bool) -> list[Decoded]:
        """Every crop read (``_read_lines``); but a single line or region without allowed characters
        that looks like a licence plate (``recognize.plate_in_sight``) is read by the plate
        specialist first, and its reading kept when it is a whole registration number."""
        if detected or self._rec_zh_stage is None or self.options.plate_sight_share <= 0:
            return self._read_lines(crops, allowed, detected)
        share = self.options.plate_sight_share
        sighted = [i for i, crop in enumerate(crops)
                   if not (allowed and allowed[i]) and recognize.plate_in_sight(crop, share)]
        readings: dict[int, Decoded] = {}
        seen: dict[int, Decoded] = {}  # the specialist's other readings: the usual way may ask for them again
        if sighted:
            for index, result in zip(sighted, self._recognize(self._specialist(), [crops[i] for i in sighted], [])):
                if recognize.is_plate_number(result.text):
                    readings[index] = replace(result, text=recognize.plate_number(result.text))
                else:
                    seen[index] = result
        rest = [i for i in range(len(crops)) if i not in readings]
        if rest:
            known = {position: seen[i] for position, i in enumerate(rest) if i in seen}
            readings.update(zip(rest, self._read_lines([crops[i] for i in rest], _pick(allowed, rest), detected, known)))
        return [readings[i] for i in range(len(crops))]

    def _read_lines(self, crops: list[np.ndarray], allowed: list[str], detected: bool,
                    specialist_readings: dict[int, Decoded] | None = None) -> list[Decoded]:
        """Accurate reading, drafts for long single lines, then the Chinese specialist
        (``specialist_readings``: its readings of some crops already made, by index, not made again).

        Every line of a page (``detected``) is read once by the page reader (``page_lines``: the
        accurate model in its static int8 variant, as fast as drafting and re-reading the unsure
        drafts was, and drafts cost 2 points of end-to-end F1 on receipts: docs/accuracy.md),
        padded to ``page_min_width`` only; on a page without Chinese most of them by its narrow
        variant (``_read_page``). Of single lines and regions, the short ones are read by the
        page reader too (drafts err most on short words) and only the long ones are drafted by
        the fast reader, the unsure drafts re-read. Plate-shaped lines go to the Chinese
        specialist (``recognize.needs_specialist``); any other single line the page reader
        sensed Chinese in or was unsure of, a plate whose specialist reading was not taken
        included, is confirmed by the dynamic int8 variant (``rec``:
        ``recognize.needs_confirmation``). Regions with allowed characters are never read by the
        page reader: ``rec`` reads them (or re-reads their unsure drafts).
        """
        # After close() there is no line pool: a page's lines then run one by one, on all threads.
        on_pool = detected and self._line_pool is not None
        page_reader = (self.page_lines if on_pool else self.rec_page) or self.rec
        # A page's lines need less padding than a single word (EngineOptions.page_min_width), never more.
        pack_min_width = page_reader.stage.min_width or 0
        min_width = min(self.options.page_min_width, pack_min_width) if detected and self.rec_page is not None else 0
        # A region with allowed characters is read by `rec` alone: its mask hides the Chinese mass
        # the confirmation rule relies on, and the page reader read a masked plate confidently
        # wrong ("AT1L05" as "ATL05").
        masked = set() if detected else {i for i, chars in enumerate(allowed) if chars}
        limit = -1 if self.rec_fast is None or detected else self.options.draft_min_width
        direct = [i for i, c in enumerate(crops) if limit < 0 or recognize.line_width(c, self.rec.stage.height) <= limit]
        drafted = sorted(set(range(len(crops))) - set(direct))

        def read_accurately(readings: list[Decoded], indices: list[int]) -> None:
            self._read_into(readings, page_reader, crops, allowed, [i for i in indices if i not in masked], min_width)
            self._read_into(readings, self.rec, crops, allowed, [i for i in indices if i in masked])

        drafts = [Decoded("", 0.0)] * len(crops)
        if detected:
            self._read_page(drafts, page_reader, crops, min_width)
        else:
            read_accurately(drafts, direct)
        if drafted:
            assert self.rec_fast is not None
            self._read_into(drafts, self.rec_fast, crops, allowed, drafted)
        decoded = list(drafts)
        unsure = [drafted[i] for i in recognize.needs_recheck([drafts[i] for i in drafted], self.options.recheck_below)]
        read_accurately(decoded, unsure)
        accurate = set(direct) | set(unsure)
        plates = self._plates(drafts, decoded, accurate, range(len(crops)))
        known = specialist_readings or {}
        taken = self._specialise(decoded, crops, allowed, plates, known)
        if self._confirms and not detected:
            # A plate whose specialist reading held no Chinese keeps the page reader's reading,
            # so it may need confirming too.
            confirmed = self._confirm(decoded, crops, allowed, sorted(accurate - taken - masked))
            self._specialise(decoded, crops, allowed,
                             [i for i in self._plates(drafts, decoded, accurate, confirmed) if i not in plates], known)
        # A plate's registration number: without the separator dot read off the plate (recognize.plate_number).
        return [replace(d, text=number) if (number := recognize.plate_number(d.text)) != d.text else d for d in decoded]

    def _read_page(self, readings: list[Decoded], reader: Model, crops: list[np.ndarray], min_width: int) -> None:
        """Every line of a page into ``readings``: by ``reader``, except on a page of more lines
        than the sample (EngineOptions.narrow_sample), which is read first, before the rest start
        (a few lines' wait on a page of many):
        - where the sample shows no Chinese, most lines by the narrow page reader. A narrow
          reading's Chinese mass (``Decoded.cjk_mass``, which the plate rule reads) is that on its
          sentinel hanzi;
        - where it does, every line by ``reader``; but where ``draft_page_chinese_lines`` of the
          sample hold hanzi, the rest drafted by the fast reader (``use_rec_fast``), and only the
          drafts ``recognize.needs_page_recheck`` flags read again by ``reader``: tiny reads
          Chinese prose as the page reader does at ~0.3x its cost (docs/accuracy.md); unless it
          is unsure of its first drafts (``_draft_page``)."""
        lines = list(range(len(crops)))
        sample = recognize.spread(len(crops), self.options.narrow_sample)
        if (self._narrow is None and self._page_drafts is None) or len(sample) == len(crops):
            self._read_into(readings, reader, crops, [], lines, min_width)
            return
        self._read_into(readings, reader, crops, [], sample, min_width)
        rest = sorted(set(lines) - set(sample))
        if recognize.shows_chinese([readings[i] for i in sample], self.options.narrow_chinese_mass):
            chinese_lines = sum(recognize.has_cjk(readings[i].text) for i in sample)
            if self._page_drafts is None or chinese_lines < self.options.draft_page_chinese_lines:
                self._read_into(readings, reader, crops, [], rest, min_width)
                return
            self._draft_page(readings, reader, crops, rest, min_width)
            return
        if self._narrow is None:
            self._read_into(readings, reader, crops, [], rest, min_width)
            return
        self._read_into(readings, self._narrow, crops, [], rest, min_width)
        again = [i for i in rest if recognize.looks_chinese(readings[i].text)]
        self._read_into(readings, reader, crops, [], again, min_width)

    def _draft_page(self, readings: list[Decoded], reader: Model, crops: list[np.ndarray], rest: list[int],
                    min_width: int) -> None:
        """The ``rest`` of a Chinese page's lines drafted by the fast reader and the drafts
        ``recognize.needs_page_recheck`` flags read again by ``reader``; but where it keeps fewer
        than ``draft_probe_kept`` of its first drafts (the probe), every line it has not drafted
        is read by ``reader`` instead."""
        below = self.options.recheck_below
        probe = [rest[i] for i in recognize.spread(len(rest), self.options.narrow_sample)]
        assert self._page_drafts is not None  # _read_page drafts only with a drafter
        self._read_into(readings, self._page_drafts, crops, [], probe)
        again = {probe[i] for i in recognize.needs_page_recheck([readings[i] for i in probe], below)}
        others = sorted(set(rest) - set(probe))
        if len(probe) - len(again) >= self.options.draft_probe_kept:
            self._read_into(readings, self._page_drafts, crops, [], others)
            again |= {others[i] for i in recognize.needs_page_recheck([readings[i] for i in others], below)}
        else:
            again |= set(others)
        self._read_into(readings, reader, crops, [], sorted(again), min_width)

    def _specialise(self, decoded: list[Decoded], crops: list[np.ndarray], allowed: list[str], plates: list[int],
                    known: dict[int, Decoded]) -> set[int]:
        """Show ``plates`` to the Chinese specialist, but those it has read already (``known``);
        returns those whose reading it replaced."""
        if not plates:
            return set()
        taken = set()
        unread = [i for i in plates if i not in known]
        specialist = dict(known)
        if unread:
            specialist.update(zip(unread, self._recognize(self._specialist(), [crops[i] for i in unread],
                                                          _pick(allowed, unread))))
        for index in plates:
            result = specialist[index]
            decoded[index] = recognize.take_specialist(decoded[index], result)
            if decoded[index] is result:
                taken.add(index)
        return taken

    def _plates(self, drafts: list[Decoded], decoded: list[Decoded], accurate: set[int], among: Iterable[int]
                ) -> list[int]:
        """The lines of ``among`` to show the Chinese specialist, if the pack has one."""
        if self._rec_zh_stage is None:
            return []
        draft_mass, accurate_mass = self.options.chinese_mass, self.options.specialist_mass
        among = list(among)
        sensed = [recognize.maybe_chinese(drafts[i], draft_mass)
                  or recognize.maybe_chinese(decoded[i], accurate_mass if i in accurate else draft_mass) for i in among]
        return [among[i] for i in recognize.needs_specialist([decoded[i] for i in among], sensed)]

    def _confirm(self, decoded: list[Decoded], crops: list[np.ndarray], allowed: list[str], read: list[int]
                 ) -> list[int]:
        """Re-read with ``rec`` the lines of ``read`` the page reader should not answer alone; returns them."""
        mass = self.options.confirm_chinese_mass
        doubtful = [read[i] for i in recognize.needs_confirmation([decoded[i] for i in read],
                                                                  self.options.confirm_below, mass)]
        second = [Decoded("", 0.0)] * len(crops)
        self._read_into(second, self.rec, crops, allowed, doubtful)
        for index in doubtful:
            decoded[index] = recognize.confirmed(decoded[index], second[index], mass)
        return doubtful

    def _read_into(
        self, readings: list[Decoded], model: Model, crops: list[np.ndarray], allowed: list[str], indices: list[int],
        min_width: int = 0,
    ) -> None:
        """Read ``crops[i]`` for each i in ``indices`` with ``model``, into ``readings[i]``."""
        picked = [crops[i] for i in indices]
        for index, result in zip(indices, self._recognize(model, picked, _pick(allowed, indices), min_width)):
            readings[index] = result

    def _recognize(self, model: Model, crops: list[np.ndarray], allowed: list[str], min_width: int = 0
                   ) -> list[Decoded]:
        """``min_width``: pad narrower lines to this many pixels (0 = ``rec_min_width`` or the pack's)."""
        stage = model.stage
        assert stage.charset is not None
        masks = [stage.charset.allowed_mask(chars) if chars else None for chars in allowed] if allowed else None
        pool = self._line_pool  # read once: close() may clear it
        return recognize.recognize(
            crops,
            model.run,
            stage.charset,
            height=stage.height,
            min_width=min_width or self.options.rec_min_width or stage.min_width,
            max_width=self.options.rec_max_width or stage.width or stage.height * 64,
            batch_size=self.options.rec_batch_size,
            max_columns=self.options.rec_batch_columns,
            masks=masks,
            map_fn=pool.map if pool is not None else map,
        )

    def _detect(self, image: np.ndarray, timing: dict[str, float], limit_side: int, second_pass: bool = True
                ) -> tuple[list[np.ndarray], list[float]]:
        """Quads (source pixels, reading order) and their scores. ``second_pass``: small text on a
        big image may be detected again (EngineOptions.det_small_text); off when the caller gave
        ``limit_side`` (the memory guard's soft level): under memory pressure a page gets the smaller
        input, never a larger one."""
        assert self.det is not None
        t0 = time.perf_counter()
        stage = self.det.stage
        height, width = image.shape[:2]
        # Only when the image is larger than the detection input: a smaller one (a cropped line, a plate)
        # comes out the same either way, and the strips' padding cost it a page's detection.
        if (second_pass and max(height, width) > limit_side
                and max(height, width) >= ELONGATED * max(min(height, width), 1)):
            # A scrolling screenshot or a long strip: fitted by its longer side its text would be a
            # pixel or two high. Fitted by its shorter side instead, as a page is, in strips of a
            # page's area each, so the detector's memory stays a page's.
            # At most ELONGATED_PAGES pages' worth of input: the stitched map and the image's own size
            # bound the memory (a 753 x 26,100 screenshot at full size peaked at 461 MB).
            scale = min(1.0, limit_side / max(min(height, width), 1),
                        math.sqrt(ELONGATED_PAGES * limit_side * limit_side / (height * width)))
            resized, transform = preprocess.resize_for_detection(image, int(scale * max(height, width)),
                                                                 stage.multiple)
            timing["preprocess"] = _ms(t0)
            t1 = time.perf_counter()
            quads, scores = detect.boxes_from_map(self._detect_in_strips(resized, limit_side * limit_side),
                                                  self.db_params)
            return self._in_reading_order([transform.to_source(q) for q in quads], scores, timing, t1)
        resized, transform = preprocess.resize_for_detection(image, limit_side, stage.multiple)
        tensor = preprocess.normalize(resized, stage.mean, stage.std)[None]
        timing["preprocess"] = _ms(t0)
        t1 = time.perf_counter()
        prob = self.det.run(tensor)[0, 0]
        del tensor
        quads, scores = detect.boxes_from_map(prob, self.db_params)
        small, longer, area = self.options.det_small_text, max(resized.shape[:2]), prob.size
        if (second_pass and small and max(image.shape[:2]) >= SMALL_TEXT_GAIN * longer
                and len(quads) >= self.options.det_small_text_min_boxes and detect.median_height(quads) < small):
            t2 = time.perf_counter()
            del prob
            resized, transform = preprocess.resize_for_detection(image, 2 * longer, stage.multiple)
            prob = self._detect_in_strips(resized, area)
            quads, scores = detect.boxes_from_map(prob, self.db_params)
            timing["detect_small_text"] = _ms(t2)
        return self._in_reading_order([transform.to_source(q) for q in quads], scores, timing, t1)

    def _in_reading_order(self, quads: list[np.ndarray], scores: list[float], timing: dict[str, float], since: float
                          ) -> tuple[list[np.ndarray], list[float]]:
        order = layout.reading_order(quads, columns=self.options.reading_order == "columns")
        timing["detect"] = _ms(since)
        return [quads[i] for i in order], [scores[i] for i in order]

    def _detect_in_strips(self, image: np.ndarray, area: int) -> np.ndarray:
        """The probability map of a detection input run in overlapping strips of at most ``area``
        pixels each (``preprocess.plan_strips``, ``detect.stitch_strips``)."""
        assert self.det is not None
        stage = self.det.stage
        short = min(image.shape[:2])
        strip = max(4 * stage.multiple, area // max(short, 1) // stage.multiple * stage.multiple)
        # no longer than the image, nor shorter than the least plan_strips takes (a det_limit_side of 32)
        strip = min(strip, max(4 * stage.multiple, -(-max(image.shape[:2]) // stage.multiple) * stage.multiple))
        plan = preprocess.plan_strips(image.shape[:2], strip, STRIP_OVERLAP, stage.multiple, stage.multiple)
        # One strip's map at a time: stitched as it comes, never all at once.
        maps = (self.det.run(preprocess.strip_tensor(image, plan, i, stage.mean, stage.std))[0, 0]
                for i in range(len(plan.starts)))
        return detect.stitch_strips(maps, plan)


def _inside(rois: Sequence[Region], width: int, height: int) -> None:
    """Refuse a region with no pixel in the image: reading a blank sliver of its edge instead
    would answer ``no_text`` for what is the caller's mistake. One partly outside is clipped."""
    for roi in rois:
        x, y, w, h = roi.box
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            raise RegionOutsideImage("roi %r box %s lies outside the %dx%d image"
                                     % (roi.name, list(roi.box), width, height))


def _pick(allowed: list[str], indices: list[int]) -> list[str]:
    return [allowed[i] for i in indices] if allowed else []


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 2)
