"""The pipeline: a bounded job queue, engine worker thread(s), change detection per source,
fan-out of each Result to the sinks. Declares the Sink Protocol sinks match structurally.

Folder jobs block the submitting source while the queue is full (rechecking the stop event),
so a burst of files never grows memory. On stop a worker finishes its current job; jobs
still queued are released (a folder file stays in ``.processing/`` and is resumed on start).
Camera jobs are submitted with ``block=False`` and dropped by their source when the queue is full.

Regions (jobs with ``regions``): each region's read gets a status (``no_text``, ``rejected`` when
it does not fullmatch the pattern, ``low_confidence`` below ``engine.low_confidence``, else
``ok``); its published value changes only after ``stable_reads`` consecutive agreeing ``ok``
reads, and that change is what makes the result ``changed`` (and an MQTT event).
Imports engine types, results, config, stats, errors.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Protocol

import numpy as np

from edge_ocr.engine.types import EngineOutput, Region
from edge_ocr.errors import EdgeOcrError, ImageError, SinkError
from edge_ocr.results import Job, RegionResult, Result, Status, log_name, status_for
from edge_ocr.stats import Stats

log = logging.getLogger(__name__)


class Engine(Protocol):
    """What the pipeline needs of ``OcrEngine``: thread-safe, raises ImageError on bad input."""

    def __call__(self, image: bytes | np.ndarray, rois: Sequence[Region] | None = None,
                 det: bool = True, limit_side: int | None = None) -> EngineOutput: ...

    def close(self) -> None: ...

    def release_idle(self) -> tuple[str, ...]: ...

    @property
    def reading_id(self) -> str:
        """Changes whenever the same image could be read otherwise (OcrEngine.reading_id)."""
        ...


class Sink(Protocol):
    """Takes results. ``publish`` must return quickly (spool, not network) and raise SinkError on failure."""

    name: str

    def publish(self, result: Result) -> None: ...


@dataclass(slots=True)
class _RegionState:
    """One region's reads so far (pipeline-private, guarded by Pipeline._lock)."""

    published: str | None = None  # the value last confirmed by stable_reads agreeing reads
    candidate: str | None = None  # the value of the current run of agreeing ok reads
    count: int = 0


class WorkMeter:
    """Counts work as it starts and ends, on any thread (the pipeline's workers, the HTTP API's):
    what the daemon's idle trim watches (``guard.IdleTrim``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = 0
        self._active = 0

    @contextmanager
    def working(self) -> Iterator[None]:
        with self._lock:
            self._started += 1
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1

    def snapshot(self) -> tuple[int, bool]:
        """(work started so far, whether any is in progress)."""
        with self._lock:
            return self._started, self._active > 0


class Pipeline:
    """Job → engine → Result → sinks → ``job.on_done``. ``start()`` runs the workers."""

    def __init__(
        self,
        engine: Engine,
        model: tuple[str, str],
        sinks: Sequence[Sink],
        stats: Stats,
        stop: threading.Event,
        queue_size: int = 8,
        workers: int = 1,
        low_confidence: float = 0.6,
        on_result: Callable[[Result], None] | None = None,
        meter: WorkMeter | None = None,
    ) -> None:
        self.engine = engine
        self.model = model
        self.sinks = list(sinks)
        self.stats = stats
        self.stop_event = stop
        self._low_confidence = low_confidence
        self.workers = workers
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        # Per worker: when its current job started, or its last idle wait or finished job. The
        # oldest feeds the watchdog: one worker stuck in the engine stops it, however many idle.
        self._beats: dict[int, float] = {}
        self.busy = 0
        self.meter = meter or WorkMeter()
        self._last_text: dict[str, str] = {}
        self._regions: dict[tuple[str, str], _RegionState] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._limit_side: int | None = None  # degrade(): a smaller detection input under memory pressure
        self._on_result = on_result  # e.g. /api/latest; called after the sinks

    def set_low_confidence(self, value: float) -> None:
        """SIGHUP: engine.low_confidence is a live key."""
        self._low_confidence = value

    @property
    def beats(self) -> Mapping[int, float]:
        """Per worker, its last sign of life (``time.monotonic()``): when its current job started,
        else its last idle wait or finished job. A live read-only view; ``progress`` is its oldest."""
        return MappingProxyType(self._beats)

    @property
    def progress(self) -> float:
        """When the pipeline last showed progress, for the watchdog: the start of the job running
        longest, else the oldest worker's last idle wait (a worker whose thread ended stops it too)."""
        return min(self.beats.values(), default=time.monotonic())

    def start(self) -> None:
        for i in range(self.workers):
            name = "pipeline" if self.workers == 1 else "pipeline-%d" % i
            self._beats[i] = time.monotonic()
            thread = threading.Thread(target=self._run, args=(i,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, job: Job, block: bool | None = None) -> bool:
        """Queue ``job``; with ``block`` (default: unless the job is droppable) wait while full,
        rechecking stop. False = not queued (stopping, or full and not waiting)."""
        if block is None:
            block = not job.droppable
        q = self.queue
        with q.not_full:
            while not self._fits(job):
                if not block or self.stop_event.is_set():
                    return False
                q.not_full.wait(0.2)
            if self.stop_event.is_set():
                return False
            q._put(job)
            q.unfinished_tasks += 1
            q.not_empty.notify()
        self.stats.set("queue_depth", q.qsize())
        return True

    def _fits(self, job: Job) -> bool:
        """Whether ``job`` may be queued now (under the queue's lock). Files and camera frames
        share the queue, and neither may take all of it: a drop folder's backlog waiting in
        submit() took every place the engine freed, and a meter's frames (commanded ones too)
        waited for the whole backlog; a camera at full speed would as well take every place
        from the folder. So files keep the last place free, and frames use at most a quarter."""
        q = self.queue
        queued = q._qsize()
        if queued >= q.maxsize:
            return False
        if q.maxsize == 1:
            return True
        frames = sum(1 for waiting in q.queue if waiting.droppable)
        if job.droppable:
            return frames < max(1, q.maxsize // 4)
        return queued - frames < q.maxsize - 1

    def join(self, timeout_s: float) -> bool:
        """Wait for the workers after stop was set; False if one is still reading an image."""
        deadline = time.monotonic() + timeout_s
        ok = True
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.debug("thread still reading thread=%s", thread.name)
                ok = False
        released = self.queue.qsize()
        if released:
            log.info("pipeline stopped released_jobs=%d", released)
        return ok

    def _run(self, worker: int) -> None:
        while not self.stop_event.is_set():
            try:
                job = self.queue.get(timeout=0.5)
            except queue.Empty:
                self._beats[worker] = time.monotonic()
                continue
            self._beats[worker] = time.monotonic()
            self.busy += 1
            try:
                with self.meter.working():
                    self.process(job)
            except Exception:  # thread boundary: a bug in one job's result must not stop the worker
                log.exception("job failed source=%s file=%s", job.source, job.file)
            finally:
                self.busy -= 1
                self._beats[worker] = time.monotonic()
                self.stats.set("queue_depth", self.queue.qsize())

    def degrade(self, det_limit_side: int) -> int:
        """The memory guard's soft level: drop queued camera frames and detect on inputs of at
        most ``det_limit_side`` px until ``recover()``. Returns the frames dropped."""
        self._limit_side = det_limit_side
        return self.drop_frames()

    def recover(self) -> None:
        """Back to the configured detection input size."""
        self._limit_side = None

    @property
    def limit_side(self) -> int | None:
        """The detection input cap while degraded (the memory guard's soft level), else None."""
        return self._limit_side

    def drop_frames(self) -> int:
        """Drop queued camera frames (never folder files); the memory guard's first step.
        Returns how many were dropped (counted in ``frames_dropped_total``)."""
        with self.queue.mutex:
            kept = [job for job in self.queue.queue if not job.droppable]
            dropped = len(self.queue.queue) - len(kept)
            self.queue.queue.clear()
            self.queue.queue.extend(kept)
            self.queue.not_full.notify_all()
        if dropped:
            self.stats.inc("frames_dropped_total", dropped)
        return dropped

    def process(self, job: Job) -> Result:
        """Run one job through engine, sinks and ``on_done``; never raises (one bad image never stops us)."""
        if job.refused is None:  # an OCR job (jobs/s): a file refused unread is only announced
            self.stats.inc("jobs_total")
        if job.on_read_start is not None:
            job.on_read_start()
        try:
            result = self._recognise(job)
        finally:
            if job.on_read_end is not None:
                job.on_read_end()
        for sink in self.sinks if job.to_sinks else ():
            try:
                sink.publish(result)
            except SinkError as exc:  # the disk under the spool: keep the input, try again later
                log.error("sink cannot take the result sink=%s source=%s error=%s", sink.name, job.source,
                          exc.message)
                self.stats.inc("sink_errors_total")
                if job.on_stalled is not None:
                    job.on_stalled(exc.message)
                    return result
            except Exception:  # a sink failing must not lose the job's own outcome
                log.exception("sink failed sink=%s source=%s", sink.name, job.source)
        if job.on_done is not None:
            try:
                job.on_done(result)
            except Exception:
                log.exception("job completion failed source=%s file=%s", job.source, job.file)
        if self._on_result is not None:
            self._on_result(result)
        return result

    def _recognise(self, job: Job) -> Result:
        start = time.perf_counter()
        limit_side = self._limit_side  # read once: the guard may change it meanwhile
        tb: str | None = None
        output: EngineOutput | None = None
        error: EdgeOcrError | None = None
        try:
            if job.refused is not None:
                error = job.refused
            elif job.cached is not None:
                output = job.cached
                self.stats.inc("results_reused_total")
            else:
                image = job.image
                output = self.engine(image, rois=job.rois or None, det=job.det, limit_side=limit_side)
                count_engine_call(self.stats, output, (time.perf_counter() - start) * 1000.0)
        except ImageError as exc:
            error = exc
            tb = "".join(traceback.format_exception_only(exc)).strip()
            log.warning("image rejected source=%s file=%s error=%s %s", job.source, log_name(job.file or ""), exc.code,
                        exc.message)
        except Exception as exc:  # job boundary: an engine bug becomes status error, logged with traceback
            error = EdgeOcrError("internal error: %s: %s" % (type(exc).__name__, exc))
            tb = _traceback_summary(exc)
            log.exception("engine failed source=%s file=%s", job.source, job.file)
        timing = {"total": round((time.perf_counter() - start) * 1000.0, 2)}
        if job.capture_ms is not None:
            timing["capture"] = job.capture_ms
        if error is not None:
            self.stats.inc_labelled("errors_total", error.code)
        if job.regions:
            return self._region_result(job, output, error, tb, timing)
        if output is None:
            self.stats.inc("results_error_total")
            return Result(job.source, Status.ERROR, None, self.model, error=error, file=job.file, ts=job.ts,
                          changed=False, previous_text=self._previous(job.source) if job.compared else None,
                          timing_ms=timing,
                          sha256=job.sha256, traceback=tb, publish_every=job.publish_every)
        if job.cached is not None:
            output = replace(output, timing_ms={})
        degraded = job.cached is None and job.det and limit_side is not None
        self.stats.inc("results_ok_total")
        previous = None
        if job.compared:
            with self._lock:
                previous = self._last_text.get(job.source)
                self._last_text[job.source] = output.text
        return Result(job.source, status_for(output, self._low_confidence), output, self.model, file=job.file,
                      ts=job.ts, changed=previous != output.text, previous_text=previous, timing_ms=timing,
                      sha256=job.sha256, publish_every=job.publish_every, degraded=degraded)

    def _region_result(self, job: Job, output: EngineOutput | None, error: EdgeOcrError | None, tb: str | None,
                       timing: dict[str, float]) -> Result:
        """A result for a job with regions: per-region status and stable value, boxes in camera pixels."""
        lines = {line.roi: line for line in output.lines if line.roi} if output else {}
        out: list[RegionResult] = []
        with self._lock:
            for rule in job.regions:
                line = lines.get(rule.name)
                read, score = (line.text, line.score) if line else ("", 0.0)
                status = Status.ERROR if output is None else region_status(read, score, rule.pattern,
                                                                           self._low_confidence)
                state = self._regions.setdefault((job.source, rule.name), _RegionState())
                previous = state.published
                if status is Status.OK:
                    if read == state.candidate:
                        state.count += 1
                    else:
                        state.candidate, state.count = read, 1
                    if state.count >= job.stable_reads:
                        state.published = read
                else:
                    state.candidate, state.count = None, 0
                out.append(RegionResult(rule.name, state.published or "", score, status, read,
                                        state.published != previous, previous))
        result = Result(job.source, Status.OK, None, self.model, ts=job.ts, timing_ms=timing,
                        regions=tuple(out), publish_every=job.publish_every)
        previous_text = "\n".join(r.previous_text for r in out if r.previous_text) or None
        changed = any(r.changed for r in out)
        if output is None:
            self.stats.inc("results_error_total")
            return replace(result, status=Status.ERROR, error=error, traceback=tb, changed=False,
                           previous_text=previous_text)
        self.stats.inc("results_ok_total")
        by_rule = {rule.name: rule for rule in job.regions}
        mapped = tuple(replace(line, box=_quad(by_rule[line.roi].box)) if line.roi in by_rule else line
                       for line in output.lines)
        statuses = {r.status for r in out}
        if Status.REJECTED in statuses:
            status = Status.REJECTED
        elif Status.LOW_CONFIDENCE in statuses:
            status = Status.LOW_CONFIDENCE
        elif statuses == {Status.NO_TEXT}:
            status = Status.NO_TEXT
        else:
            status = Status.OK
        return replace(result, status=status, output=replace(output, lines=mapped), changed=changed,
                       previous_text=previous_text)

    def seed_previous(self, source: str, text: str, regions: Mapping[str, str]) -> None:
        """What ``source`` last read before this process started (the retained MQTT state): the
        first result compares with it, so the same reading after a restart is no change. A source
        or region that already has a result here keeps it."""
        with self._lock:
            self._last_text.setdefault(source, text)
            for name, published in regions.items():
                state = self._regions.setdefault((source, name), _RegionState())
                if state.published is None:
                    state.published = published

    def _previous(self, source: str) -> str | None:
        with self._lock:
            return self._last_text.get(source)


def region_status(text: str, score: float, pattern: str, low_confidence: float) -> Status:
    """no_text (empty), rejected (does not fullmatch ``pattern``), low_confidence (score below), else ok."""
    if not text.strip():
        return Status.NO_TEXT
    if pattern and re.fullmatch(pattern, text) is None:
        return Status.REJECTED
    if score < low_confidence:
        return Status.LOW_CONFIDENCE
    return Status.OK


def _quad(box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float32)


def count_engine_call(stats: Stats, output: EngineOutput, elapsed_ms: float) -> None:
    """An engine call's figures in ``stats`` (the pipeline's jobs and POST /api/ocr alike)."""
    stats.set("engine_last_ms", round(elapsed_ms, 1))
    stats.inc("lines_total", len(output.lines))
    for stage, stage_ms in output.timing_ms.items():
        stats.observe("stage_ms", stage_ms, stage)


def _traceback_summary(exc: BaseException, limit: int = 5) -> str:
    """The last frames and the exception line: enough for failed/NAME.error.json, never image data."""
    frames = traceback.extract_tb(exc.__traceback__)[-limit:]
    lines = ["%s:%d in %s" % (f.filename.rsplit("/", 1)[-1], f.lineno or 0, f.name) for f in frames]
    return "\n".join(lines + ["".join(traceback.format_exception_only(exc)).strip()])
