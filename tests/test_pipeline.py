"""edge_ocr.pipeline: change detection, bad images, backpressure, fan-out to a real spool sink."""

from __future__ import annotations

import threading
import time

from edge_ocr.pipeline import Pipeline, WorkMeter
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
    assert pipe.submit(Job("s", b"TEXT:2"))
    assert not pipe.submit(Job("s", b"TEXT:3"), block=False)  # full for files: the last place is a frame's
    assert pipe.submit(Job("cam", b"TEXT:f", droppable=True))
    assert not pipe.submit(Job("cam", b"TEXT:g", droppable=True))  # full: a camera frame is not waited for
    result: list[bool] = []
    blocked = threading.Thread(target=lambda: result.append(pipe.submit(Job("s", b"TEXT:5"))), name="test-submit")
    blocked.start()
    stop.set()
    blocked.join(5)
    assert result == [False]
    gate.set()
    assert pipe.join(5)


def test_a_worker_stuck_in_the_engine_stops_the_watchdogs_progress_however_many_idle():
    """``progress`` feeds systemd's watchdog. With two workers the idle one used to refresh it
    every 0.5 s while the other hung in the engine for good, so the watchdog never fired."""

    gate, stop = threading.Event(), threading.Event()
    pipe = Pipeline(FakeEngine(gate), ("fake", "1"), [], Stats(), stop, workers=2)
    pipe.start()
    idle_since = pipe.progress
    assert wait_until(lambda: pipe.progress > idle_since)  # idle workers show progress
    submitted = time.monotonic()
    assert pipe.submit(Job("s", b"TEXT:stuck"))
    assert wait_until(lambda: pipe.busy == 1)
    beats = pipe.beats  # each worker's last sign of life: the idle one renews its own at each wait

    def idle_waits_again() -> bool:
        latest = max(beats.values())
        return wait_until(lambda: max(beats.values()) > latest)

    assert wait_until(lambda: min(beats.values()) >= submitted)  # the job began; the other worker waited
    assert idle_waits_again()  # now the idle worker's beat is later than the job's start
    stuck_since = pipe.progress
    assert idle_waits_again()
    assert pipe.progress == stuck_since >= submitted  # the stuck job's start: idle beats do not hide it
    gate.set()
    assert wait_until(lambda: pipe.busy == 0 and pipe.progress > stuck_since)
    stop.set()
    assert pipe.join(5)


def test_resumed_reading_hooks_run_around_the_engine_even_when_it_fails():
    seen: list[str] = []
    pipe = Pipeline(FakeEngine(), ("fake", "1"), [ListSink()], Stats(), threading.Event())
    for data in (b"TEXT:a", b"garbage"):
        pipe.process(Job("s", data, on_read_start=lambda: seen.append("start"), on_read_end=lambda: seen.append("end"),
                         on_done=lambda result: seen.append("done")))
    assert seen == ["start", "end", "done"] * 2


class PacedEngine(FakeEngine):
    """Takes ``seconds`` per image, so the queue fills as it does on a real device."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __call__(self, image, rois=None, det=True, limit_side=None):
        time.sleep(self.seconds)
        return super().__call__(image, rois, det, limit_side)


def _folder_and_camera(queue_size: int, files: int, frame_every_s: float) -> list[bytes]:
    """A backlog of ``files`` submitted as the folder does (waiting for room) while a camera offers
    a frame every ``frame_every_s`` (0: as fast as it can) without waiting: the engine's calls."""
    stop, engine = threading.Event(), PacedEngine(0.01)
    pipe = Pipeline(engine, ("fake", "1"), [], Stats(), stop, queue_size=queue_size)

    def camera() -> None:
        while not stop.wait(frame_every_s):
            pipe.submit(Job("cam", b"TEXT:frame", droppable=True))

    pipe.start()
    runners = [threading.Thread(target=camera, name="test-camera"),
               threading.Thread(target=lambda: [pipe.submit(Job("inbox", b"TEXT:file%d" % n)) for n in range(files)],
                                name="test-folder")]
    for runner in runners:
        runner.start()
    try:
        assert wait_until(lambda: b"TEXT:file%d" % (files - 1) in engine.calls, 30), engine.calls[-5:]
    finally:
        stop.set()
        for runner in runners:
            runner.join(5)
        assert pipe.join(5)
    return engine.calls


def test_a_files_backlog_leaves_the_camera_a_place_in_the_queue():
    """A drop folder's backlog waits in submit() for each place the engine frees; it took every
    one, and a meter's frames (commanded ones too) were dropped until the backlog was read."""
    calls = _folder_and_camera(queue_size=2, files=30, frame_every_s=0.005)
    last_file = max(i for i, call in enumerate(calls) if call.startswith(b"TEXT:file"))
    assert calls[:last_file].count(b"TEXT:frame") >= 5  # read while the backlog lasted


def test_a_camera_at_full_speed_leaves_the_folder_its_places():
    """The other way round: a camera offering frames as fast as it can (the soak's meter at 1,000
    frames a second) must not take every place a file waits for: frames use at most a quarter of
    the queue, files the rest."""
    calls = _folder_and_camera(queue_size=8, files=30, frame_every_s=0.0)
    assert sum(call.startswith(b"TEXT:file") for call in calls) == 30
    assert calls.count(b"TEXT:frame") <= 2 * 30 + 2  # at most 2 of 8 places: ~2 frames per file


def test_regions_stable_reads_pattern_and_low_confidence():
    from edge_ocr.engine.types import Region
    from tests.fakes import ScriptedRegionEngine

    script = [
        {"r": ("12.3", 0.99)},  # 1st read: not yet published
        {"r": ("12.3", 0.99)},  # 2nd agreeing read: published
        {"r": ("12.8", 0.99)},
        {"r": ("12.8", 0.30)},  # low confidence breaks the run
        {"r": ("12.8", 0.99)},
        {"r": ("1x.8", 0.99)},  # does not fullmatch: rejected, also breaks the run
        {"r": ("12.8", 0.99)},
        {"r": ("12.8", 0.99)},  # published
        {},                     # nothing read
    ]
    pipe = Pipeline(ScriptedRegionEngine(script), ("fake", "1"), [], Stats(), threading.Event(), low_confidence=0.6)
    job = Job("meter", b"", rois=(Region("r", (0, 0, 10, 5), "0123456789."),), det=False,
              regions=(Region("r", (100, 40, 220, 60), pattern=r"\d+\.\d"),), stable_reads=2, publish_every=True)
    out = [pipe.process(job) for _ in script]
    reg = [r.regions[0] for r in out]
    assert [r.status for r in reg] == [Status.OK, Status.OK, Status.OK, Status.LOW_CONFIDENCE, Status.OK,
                                       Status.REJECTED, Status.OK, Status.OK, Status.NO_TEXT]
    assert [r.text for r in reg] == ["", "12.3", "12.3", "12.3", "12.3", "12.3", "12.3", "12.8", "12.8"]
    assert [r.changed for r in out] == [False, True, False, False, False, False, False, True, False]
    assert [r.status for r in out][3:6] == [Status.LOW_CONFIDENCE, Status.OK, Status.REJECTED]
    assert out[7].previous_text == "12.3" and out[7].text == "12.8" and reg[7].previous_text == "12.3"
    assert out[0].publish_every is True
    data = out[7].to_dict()
    assert data["regions"] == {"r": {"text": "12.8", "score": 0.99, "status": "ok", "read": "12.8",
                                     "changed": True, "previous_text": "12.3"}}
    assert data["lines"][0]["box"] == [[100, 40], [320, 40], [320, 100], [100, 100]]
    # An engine failure keeps the published value and reports the region as error.
    broken = pipe.process(Job("meter", b"", rois=job.rois, det=False, regions=job.regions))
    assert broken.status is Status.ERROR and broken.regions[0].text == "12.8"
    assert broken.regions[0].status is Status.ERROR and not broken.changed


def test_a_region_that_read_nothing_leaves_the_results_confidence_to_the_regions_that_read():
    from edge_ocr.engine.types import Region
    from tests.fakes import ScriptedRegionEngine

    # The real engine keeps a line for every region, an empty one scoring 0 for a region that read nothing.
    script = [{"a": ("12.3", 0.97), "off": ("", 0.0)}, {"a": ("", 0.0), "off": ("", 0.0)}]
    pipe = Pipeline(ScriptedRegionEngine(script), ("fake", "1"), [], Stats(), threading.Event())
    rois = (Region("a", (0, 0, 10, 5)), Region("off", (20, 0, 10, 5)))  # "off": outside the frame, say
    job = Job("meter", b"", rois=rois, det=False, regions=rois)
    read = pipe.process(job)
    assert [r.status for r in read.regions] == [Status.OK, Status.NO_TEXT]
    assert read.confidence == 0.97  # was 0.0: the empty region's line scored 0
    assert pipe.process(job).confidence == 0.0  # nothing read at all


def test_a_seeded_previous_reading_is_no_change_and_a_result_here_outranks_the_seed():
    from edge_ocr.engine.types import Region
    from tests.fakes import ScriptedRegionEngine

    pipe = Pipeline(FakeEngine(), ("fake", "1"), [], Stats(), threading.Event())
    pipe.seed_previous("cam", "a", {})  # what the retained state said before the restart
    first = pipe.process(Job("cam", b"TEXT:a"))
    assert (first.changed, first.previous_text) == (False, "a")
    pipe.seed_previous("cam", "stale", {})  # a late retained message: the result here wins
    assert pipe.process(Job("cam", b"TEXT:b")).previous_text == "a"
    meter = Pipeline(ScriptedRegionEngine([{"r": ("12.3", 0.99)}]), ("fake", "1"), [], Stats(), threading.Event())
    meter.seed_previous("meter", "12.3", {"r": "12.3"})
    job = Job("meter", b"", rois=(Region("r", (0, 0, 10, 5)),), det=False, regions=(Region("r", (0, 0, 10, 5)),),
              stable_reads=2)
    read = meter.process(job)  # one read of a value already published before the restart
    assert read.regions[0].text == "12.3" and not read.changed


def test_jobs_not_compared_never_show_another_jobs_text():
    # Fleet jobs come from many clients: each is a first reading, and none is remembered.
    pipe = Pipeline(FakeEngine(), ("fake", "1"), [], Stats(), threading.Event())
    jobs = [pipe.process(Job("fleet", b"TEXT:%s" % t, compared=False)) for t in (b"secret", b"other", b"other")]
    assert [(r.previous_text, r.changed) for r in jobs] == [(None, True)] * 3
    failed = pipe.process(Job("fleet", b"not an image", compared=False))
    assert failed.status is Status.ERROR and failed.previous_text is None
    assert pipe.process(Job("fleet", b"TEXT:x")).previous_text is None  # nothing of theirs was kept


def test_memory_pressure_drops_queued_camera_frames_never_folder_files():
    import numpy as np

    stats = Stats()
    pipe = Pipeline(FakeEngine(), ("fake", "1"), [], stats, threading.Event(), queue_size=8)  # not started
    frame = np.zeros((4, 4, 3), np.uint8)
    jobs = [Job("inbox", b"TEXT:a", file="a.png"), Job("cam", frame, droppable=True), Job("cam", frame, droppable=True),
            Job("inbox", b"TEXT:b", file="b.png")]
    for job in jobs:
        assert pipe.submit(job, block=False)
    assert pipe.drop_frames() == 2
    assert [j.file for j in list(pipe.queue.queue)] == ["a.png", "b.png"]
    assert stats.snapshot()["frames_dropped_total"] == 2


def test_the_work_meter_counts_work_from_many_threads_and_knows_when_some_is_in_progress():
    meter = WorkMeter()
    inside, release = threading.Event(), threading.Event()

    def long_job() -> None:
        with meter.working():
            inside.set()
            release.wait(10)

    def short_jobs() -> None:
        for _ in range(2000):
            with meter.working():
                pass

    holder = threading.Thread(target=long_job)
    holder.start()
    assert inside.wait(10) and meter.snapshot() == (1, True)
    workers = [threading.Thread(target=short_jobs) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert meter.snapshot() == (8001, True)  # the long job is still in progress
    release.set()
    holder.join()
    assert meter.snapshot() == (8001, False)
