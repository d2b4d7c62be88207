"""The narrow page reader (the pack's ``rec_page_narrow``): the page reader with its classifier cut.

Light enough to run under qemu-aarch64 too (tests/test_aarch64.py): Arm's int8 kernels must give
the kept classes the very scores x86's do.
"""

from __future__ import annotations

import cv2
import numpy as np

from tests.helpers import line_samples


def test_the_narrow_page_reader_scores_its_classes_as_the_whole_page_reader(eval_dev):
    from edge_ocr.engine.ocr import EngineOptions, OcrEngine
    from edge_ocr.engine.preprocess import resize_for_recognition

    engine = OcrEngine(EngineOptions(threads=1, lazy_sessions=True))  # no detector: only these two sessions
    whole, narrow = engine.rec_page, engine.rec_page_narrow
    index = {char: k for k, char in enumerate(whole.stage.charset.chars, start=1)}
    keep = np.array([0] + [index[char] for char in narrow.stage.charset.chars])
    lines = line_samples(eval_dev, "SROIE2019-task1", 4) + line_samples(eval_dev, "omnidocbench:book", 4, "zh/lines")
    for path, _ in lines:
        batch = resize_for_recognition(cv2.imread(str(path)), 48, 320)[None]
        probs, cut = whole.run(batch), narrow.run(batch)
        kept = probs[..., keep] / probs[..., keep].sum(axis=2, keepdims=True)
        # The same logits; only float32 sums of the two softmaxes differ (by ~3e-5 of a probability).
        assert cut.shape == kept.shape and np.allclose(cut, kept, rtol=1e-4, atol=1e-7)
        assert (cut.argmax(axis=2) == kept.argmax(axis=2)).all()
