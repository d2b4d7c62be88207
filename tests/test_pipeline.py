"""edge_ocr.pipeline: change detection, bad images, backpressure, fan-out to a real spool sink."""

from __future__ import annotations

import threading

from edge_ocr.pipeline import Pipeline
from edge_ocr.results import Job, Result, Status
from edge_ocr.stats import Stats
from tests.broker import wait_until
from tests.fakes import FakeEngine


class ListSink:
    name = "list"

    def __init__(self):
        self.results: list[Result] = []

    def publish(self, result: Result) -> None:
        self.results.append(result)


def test_change_detection_and_bad_image_does_not_stop_it():
    sink = ListSink()
    pipe = Pipeline(FakeEngine(), ("fake", "1"), [sink], Stats(), threading.Event())
    texts = [b"TEXT:a", b"TEXT:a", b"garbage", b"TEXT:b"]
    out = [pipe.process(Job("cam", data)) for data in texts]
    assert [r.status for r in out] == [Status.OK, Status.OK, Status.ERROR, Status.OK]
    assert [r.changed for r in out] == [True, False, False, True]
    assert [r.previous_text for r in out] == [None, "a", "a", "a"]
    assert out[2].error is not None and out[2].error.code == "unsupported_image"
    assert sink.results == out


def test_full_queue_holds_the_source_back_and_stop_releases_it():
    gate, stop = threading.Event(), threading.Event()
    pipe = Pipeline(FakeEngine(gate), ("fake", "1"), [], Stats(), stop, queue_size=2)
    pipe.start()
    assert pipe.submit(Job("s", b"TEXT:1"))
    assert wait_until(lambda: pipe.busy == 1)  # the worker holds job 1
    assert pipe.submit(Job("s", b"TEXT:2")) and pipe.submit(Job("s", b"TEXT:3"))
    assert not pipe.submit(Job("s", b"TEXT:4"), block=False)  # bounded: full
    result: list[bool] = []
    blocked = threading.Thread(target=lambda: result.append(pipe.submit(Job("s", b"TEXT:5"))), name="test-submit")
    blocked.start()
    stop.set()
    blocked.join(5)
    assert result == [False]
    gate.set()
    assert pipe.join(5)
