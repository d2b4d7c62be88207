"""edge_ocr.engine.budget.PixelBudget, and the engine holding each image's megapixels while it reads
it: two big images sent at once (two HTTP requests) are read one after the other, not together."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from edge_ocr.engine.budget import PixelBudget
from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.errors import ImageTooLarge
from tests.broker import wait_until


def test_holds_that_fit_together_run_together_and_one_that_does_not_waits():
    budget = PixelBudget(50.0)
    with budget.hold(48.0):
        assert budget.free == 2.0
        with budget.hold(2.0):  # a small page beside the big photo
            assert budget.free == 0.0
        entered = threading.Event()

        def second_big() -> None:
            with budget.hold(44.0):
                entered.set()

        waiter = threading.Thread(target=second_big)
        waiter.start()
        assert wait_until(lambda: budget.waiting == 1)
        assert not entered.is_set()  # queued while the first big one is held
    assert entered.wait(5)  # ... and goes once it is released
    waiter.join(5)
    assert budget.free == 50.0 and budget.waiting == 0


def test_holds_go_in_arrival_order_so_a_big_one_is_not_passed_over():
    budget = PixelBudget(50.0)
    order: list[str] = []

    def hold(name: str, megapixels: float) -> None:
        with budget.hold(megapixels):
            order.append(name)

    with budget.hold(30.0):  # a page being read
        big = threading.Thread(target=hold, args=("big", 44.0))
        big.start()
        assert wait_until(lambda: budget.waiting == 1)
        small = threading.Thread(target=hold, args=("small", 10.0))  # would fit now, but came later
        small.start()
        assert wait_until(lambda: budget.waiting == 2)
        assert order == []
    big.join(5)
    small.join(5)
    assert order == ["big", "small"]


def test_a_hold_larger_than_the_whole_budget_takes_all_of_it_and_never_waits_forever():
    budget = PixelBudget(12.0)
    with budget.hold(100.0):
        assert budget.free == 0.0
    assert budget.free == 12.0


def test_the_engine_reads_two_images_over_its_budget_one_after_the_other(eval_dev, monkeypatch):
    engine = OcrEngine(EngineOptions(threads=2, max_megapixels=1.0))
    page = cv2.imread(str(eval_dev / "pages" / sorted(p.name for p in (eval_dev / "pages").glob("sroie*"))[0]))
    scale = (0.8e6 / (page.shape[0] * page.shape[1])) ** 0.5  # 0.8 MP each: two do not fit in 1 MP
    data = cv2.imencode(".jpg", cv2.resize(page, None, fx=scale, fy=scale))[1].tobytes()
    spans: list[tuple[float, float]] = []
    inner = engine._ocr

    def timed(*args, **kwargs):
        began = time.monotonic()
        try:
            return inner(*args, **kwargs)
        finally:
            spans.append((began, time.monotonic()))

    monkeypatch.setattr(engine, "_ocr", timed)
    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(engine, [data, data]))
    assert outputs[0].lines and [line.text for line in outputs[0].lines] == [line.text for line in outputs[1].lines]
    (_, first_end), (second_start, _) = sorted(spans)
    assert second_start >= first_end  # never both at once


def test_an_image_over_max_megapixels_is_refused_at_once_even_while_the_budget_is_held():
    engine = OcrEngine(EngineOptions(threads=1, max_megapixels=1.0))
    big = cv2.imencode(".png", np.zeros((1200, 1000, 3), np.uint8))[1].tobytes()  # 1.2 MP
    raised: list[BaseException] = []

    def read() -> None:
        try:
            engine(big)
        except ImageTooLarge as exc:
            raised.append(exc)

    with engine._pixels.hold(1.0):  # another call reading a 1 MP image
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(10)  # never queued behind the hold: it is refused at once
        assert not reader.is_alive() and len(raised) == 1
