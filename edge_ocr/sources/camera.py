"""Camera source: picamera2 and OpenCV backends, retry with backoff, frame-difference skip, ROIs
(SPEC "Sources: Camera", "ROIs").

One thread ``source:<name>`` owns the camera. Every ``interval`` seconds (or on
``capture_now()`` when ``interval = 0``) it takes a frame, compares a grey thumbnail of each
region (or of the whole frame: regions.thumbnails) with the last frame it handed on, and skips it when the
difference is at most ``change_threshold``; after a change it hands on ``stable_reads - 1``
more frames so the pipeline can confirm the new value (at the next ticks, or at once after a
command when ``interval = 0``). Frames are droppable: they are
submitted without blocking and a full queue drops them (counted in stats).

Backends:
- ``picamera2`` (Raspberry Pi OS's python3-picamera2, imported lazily): one ``Picamera2``
  object for the life of the source — opening and closing it in a loop leaks — configured
  once per (re)start for a still capture of ``size`` in BGR. No camera (IndexError) or a busy
  one (RuntimeError): ``offline``, retried with capped exponential backoff.
- ``opencv``: ``/dev/videoN`` or an index (V4L2), ``rtsp://``/``http://`` streams and video
  files. Live devices and streams are grabbed continuously (so a capture is the current
  frame, not a stale buffered one) and reopened with backoff when they drop; a network stream
  sampled STREAM_RELEASE_S or more apart is connected for each capture instead. A video file is
  played in real time at its own frame rate, sampled every ``interval`` (one frame per
  command when ``interval = 0``); at its end it starts again when ``loop = true``, else the
  source goes ``offline`` and stays so (restart the service to play it again).

Imports results, config, errors, stats, engine types and sources.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import logging
import math
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge_ocr.config import CameraSourceConfig, SourceConfig, redact_url
from edge_ocr.engine.types import Region
from edge_ocr.errors import SourceError
from edge_ocr.results import Job
from edge_ocr.sources import regions
from edge_ocr.sources.base import SourceStatus, Submit
from edge_ocr.stats import Stats

log = logging.getLogger(__name__)

AF_MODES = {"auto": 1, "continuous": 2}  # libcamera controls.AfModeEnum values
STREAM_TIMEOUT_MS = 10000  # open/read timeout of network streams, so a dead camera cannot hang the thread
IDLE_WAIT_S = 0.25  # longest wait between checks of the stop event while waiting for a capture
COMMAND_RETRY_S = 0.2  # a commanded frame the full queue dropped is taken again this often
# A network stream sampled this far apart or more is connected for each capture instead of decoded
# all along: OpenCV's FFmpeg backend decodes every frame it grabs, so a 25 fps camera read once a
# minute cost 1,500 decodes a capture (README, Cameras); a capture then waits for the connection
# and its first whole frame (an H.264 stream's next keyframe), which such an interval can spare.
STREAM_RELEASE_S = 10.0
CAPTURE_TIMEOUT_S = 10.0  # a picamera2 still capture that takes longer has stalled: the camera is restarted
PROBE_TIMEOUT_S = 3.0  # the TCP connect that says why a stream did not open
STREAM_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935, "rtmps": 443}
# FFmpeg's own level while OpenCV reads a stream (AV_LOG_FATAL): its errors are one stderr line per
# retry ("Connection refused") or per damaged frame on a lossy link ("error while decoding MB"),
# dozens a second in the journal; the source's own line says why a camera is offline.
FFMPEG_LOG_LEVEL = "8"
STABLE_CONNECTION_S = 30.0  # a camera open this long is back: its retry delay starts again from the least


def redact(device: str) -> str:
    """``device`` fit for logs: credentials in a URL (``rtsp://user:pass@host``) become ``***``."""
    return redact_url(device, whole=True)


def device_kind(device: str) -> str:
    """``index`` (a number), ``device`` (/dev/...), ``stream`` (a URL) or ``file`` (a video file)."""
    if device.isdigit():
        return "index"
    if "://" in device:
        return "stream"
    if device.startswith("/dev/"):
        return "device"
    return "file"


def quiet_video_libraries() -> None:
    """Keep OpenCV's and FFmpeg's own warnings out of the journal unless the environment asks for
    them (``OPENCV_LOG_LEVEL``, ``OPENCV_FFMPEG_LOGLEVEL``): each would repeat at every retry of a
    camera that is away, where the source logs one line with the reason (``why_not_open``).
    FFmpeg's level is read once, at its first use in the process."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", FFMPEG_LOG_LEVEL)
    logging_module = getattr(getattr(cv2, "utils", None), "logging", None)
    if "OPENCV_LOG_LEVEL" not in os.environ and logging_module is not None:
        logging_module.setLogLevel(logging_module.LOG_LEVEL_ERROR)


def why_not_open(device: str) -> str:
    """Why OpenCV could not open ``device``, as far as the system can tell (OpenCV says nothing):
    a device node missing or not ours; a stream's host unknown, refusing, silent or unreachable
    (one TCP connect, at most ``PROBE_TIMEOUT_S``); else what is left to check."""
    kind = device_kind(device)
    if kind in ("index", "device"):
        path = "/dev/video%s" % device if kind == "index" else device
        if not os.path.exists(path):
            return "no such device %s (is the camera plugged in?)" % path
        if not os.access(path, os.R_OK | os.W_OK):
            return "no permission on %s (the service user needs the video group)" % path
        return "%s is busy or not a video capture device" % path
    if kind != "stream":
        return "not a video OpenCV can read"
    parts = urllib.parse.urlsplit(device)
    try:
        host, port = parts.hostname, parts.port or STREAM_PORTS.get(parts.scheme.lower())
    except ValueError:
        return "the URL's port is not a number"
    if not host or port is None:
        return "not a stream URL OpenCV can open (%s://)" % parts.scheme
    where = ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
        return "cannot resolve %s (%s)" % (host, getattr(exc, "strerror", None) or exc)
    family, kind_, proto, _, address = addresses[0]
    try:  # any OSError is a reason, never the source thread's end (a socket refused: EMFILE, no IPv6)
        with socket.socket(family, kind_, proto) as probe_socket:
            probe_socket.settimeout(PROBE_TIMEOUT_S)
            probe_socket.connect(address)
    except ConnectionRefusedError:
        return "connection refused by %s (nothing listens there)" % where
    except TimeoutError:
        return "no answer from %s within %.0f s" % (where, PROBE_TIMEOUT_S)
    except OSError as exc:
        return "%s unreachable (%s)" % (where, exc.strerror or errno.errorcode.get(exc.errno or 0) or exc)
    return "%s answers, but no stream opened there (check the path, the user and the password)" % where


class VideoEnded(Exception):
    """A video file reached its end and ``loop`` is off (control flow, not an error)."""


class Reader(Protocol):
    """One open camera. ``read`` and ``idle`` raise SourceError when it fails (it is then closed)."""

    def idle(self, until: float, stop: threading.Event, wake: threading.Event) -> None:
        """Wait until ``time.monotonic() >= until``, ``wake`` or ``stop`` is set."""

    def read(self) -> np.ndarray:
        """The current frame (any of grey, BGR, BGRA uint8)."""

    def close(self) -> None: ...


def _wait(until: float, stop: threading.Event, wake: threading.Event) -> None:
    while not stop.is_set() and not wake.is_set():
        remaining = until - time.monotonic()
        if remaining <= 0:
            return
        wake.wait(min(remaining, IDLE_WAIT_S))


class Picamera2Reader:
    """A started Picamera2 (the object outlives the reader: ``close`` only stops it)."""

    def __init__(self, camera: Any, cfg: CameraSourceConfig) -> None:
        self.camera = camera
        main: dict[str, Any] = {"format": "RGB888"}  # libcamera's RGB888 is B, G, R in memory: OpenCV's BGR
        if cfg.size != (0, 0):
            main["size"] = cfg.size
        try:
            camera.configure(camera.create_still_configuration(main=main))
            af = AF_MODES.get(cfg.autofocus)
            has_af = af is not None and "AfMode" in camera.camera_controls
            if has_af:
                camera.set_controls({"AfMode": af})
            camera.start()
            if has_af and cfg.autofocus == "auto":
                camera.autofocus_cycle()
        except (RuntimeError, OSError, ValueError, TimeoutError) as exc:
            self.close()
            raise SourceError("camera start failed: %s" % exc) from exc

    def idle(self, until: float, stop: threading.Event, wake: threading.Event) -> None:
        _wait(until, stop, wake)

    def read(self) -> np.ndarray:
        try:
            # Asked without waiting, then waited for at most CAPTURE_TIMEOUT_S: a sensor whose
            # frontend stalls (a loose ribbon cable, undervoltage) never completes the capture,
            # which would hold this thread, and the source "online", for good.
            job = self.camera.capture_array("main", wait=False)
            return self.camera.wait(job, timeout=CAPTURE_TIMEOUT_S)
        except TimeoutError as exc:
            self.close()
            raise SourceError("no frame from the camera within %g s" % CAPTURE_TIMEOUT_S) from exc
        except (RuntimeError, OSError, ValueError) as exc:
            self.close()
            raise SourceError("capture failed: %s" % exc) from exc

    def close(self) -> None:
        try:
            self.camera.stop()
        except Exception as exc:  # stopping a failed camera may fail too; the object is kept for a retry
            log.debug("picamera2 stop failed error=%s", exc)


class OpenCvReader:
    """cv2.VideoCapture over a device, stream or video file (see the module docstring)."""

    def __init__(self, cfg: CameraSourceConfig) -> None:
        self.cfg = cfg
        self.kind = device_kind(cfg.device)
        self.live = self.kind != "file"
        self.cap = self._open()
        fps = self.cap.get(cv2.CAP_PROP_FPS) if not self.live else 0.0
        self.fps = fps if fps > 0 and math.isfinite(fps) else 0.0  # 0: unknown, one frame per sample
        self.interval = cfg.interval
        self.clock = 0.0  # a video file's own time at the next sample, in seconds
        self.next_index = 0  # the frame cap.read() gives next
        self.last: np.ndarray | None = None
        self.grabbed = False
        self.frames = 0  # frames this connection gave
        # An http(s) URL that gives one picture per request (a camera's snapshot.jpg): asked again
        # at each capture, rather than taken for a stream that dropped (reconnected every second,
        # offline and online at each, whatever the interval).
        self.snapshot = False

    def retime(self, interval: float) -> None:
        """A video file is sampled every ``interval`` of its own time (one frame per command at 0)."""
        self.interval = interval
        if self.fps > 0:
            self.clock = self.next_index / self.fps  # from where commands left it, not from its start

    def _open(self) -> cv2.VideoCapture:
        cfg = self.cfg
        if self.kind == "file" and not Path(cfg.device).is_file():
            raise SourceError("video file not found: %s" % cfg.device)
        if self.kind == "index":
            cap = cv2.VideoCapture(int(cfg.device))
        elif self.kind == "stream":
            cap = cv2.VideoCapture(cfg.device, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                                                                cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS])
        else:
            cap = cv2.VideoCapture(cfg.device)
        if not cap.isOpened():
            cap.release()
            raise SourceError("cannot open %s: %s" % (redact(cfg.device), why_not_open(cfg.device)))
        if self.live:
            if cfg.size != (0, 0):
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.size[1])
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    @property
    def per_capture(self) -> bool:
        """Connected for each capture (closed between): a snapshot URL, or a stream sampled at
        STREAM_RELEASE_S or more (the interval a reload gives too, through ``retime``)."""
        return self.snapshot or (self.kind == "stream" and self.interval >= STREAM_RELEASE_S)

    def idle(self, until: float, stop: threading.Event, wake: threading.Event) -> None:
        if not self.live or self.per_capture:
            if self.live and self.cap.isOpened():
                self.cap.release()  # nothing decoded until the next capture connects again
            _wait(until, stop, wake)
            return
        if not self.cap.isOpened():  # was connected per capture, now sampled often: stays connected
            self.cap = self._open()
            self.grabbed = False
        # Keep grabbing (each grab waits for the next frame) so a capture gets the current frame.
        while not stop.is_set() and not wake.is_set() and time.monotonic() < until:
            if not self.cap.grab():
                if self.frames <= 1 and self.cfg.device.lower().startswith(("http://", "https://")):
                    self.snapshot = True
                    self.cap.release()
                    log.info("camera gives one picture per request, asked at each capture source=%s device=%s",
                             self.cfg.name, redact(self.cfg.device))
                    _wait(until, stop, wake)
                    return
                self.close()
                raise SourceError("stream ended")
            self.grabbed = True
            self.frames += 1

    def read(self) -> np.ndarray:
        if self.live and self.per_capture:  # one connection (a snapshot: one request) per capture
            if not self.cap.isOpened():
                self.cap = self._open()
            ok, frame = self.cap.read()
            self.cap.release()
            self.grabbed = False
            if not ok or frame is None:
                raise SourceError("no %s from %s" % ("picture" if self.snapshot else "frame", redact(self.cfg.device)))
            return frame
        if self.live:
            ok, frame = self.cap.retrieve() if self.grabbed else self.cap.read()
            if not self.grabbed:
                self.frames += 1
            self.grabbed = False
            if not ok or frame is None:
                self.close()
                raise SourceError("no frame from %s" % redact(self.cfg.device))
            return frame
        # In real time: the frame on show at the video's own time of this sample, so sampling
        # faster than the frame rate shows a frame again (as a camera would) instead of playing
        # the file faster; slower skips the frames between.
        timed = self.interval > 0 and self.fps > 0
        wanted = int(self.clock * self.fps + 1e-6) if timed else self.next_index
        if self.last is not None and wanted < self.next_index:
            self.clock += self.interval
            return self.last
        while self.next_index < wanted and self.cap.grab():
            self.next_index += 1
        ok, frame = self.cap.read()
        if not ok or frame is None:
            if not self.cfg.loop:
                self.close()
                raise VideoEnded()
            length = self.next_index / self.fps if self.fps > 0 else 0.0  # it played every frame: its length
            # Back to its start by a seek: opening it again waits on OpenCV's FFmpeg lock, which
            # a network camera that does not answer holds for its whole open timeout (10 s).
            if not (self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0) and self.cap.get(cv2.CAP_PROP_POS_FRAMES) == 0):
                self.cap.release()
                self.cap = self._open()
            # Played on in its own time: the sample after the end is as far into the next round
            # (a 2 s clip sampled every 0.7 s gives 0, 0.7, 1.4, then 0.1, not 0 again).
            self.clock = self.clock % length if timed and length > 0 else 0.0
            self.next_index = 0
            for _ in range(int(self.clock * self.fps + 1e-6) if timed else 0):
                if not self.cap.grab():
                    break
                self.next_index += 1
            ok, frame = self.cap.read()
            if not ok or frame is None:
                self.close()
                raise SourceError("video file has no frames: %s" % self.cfg.device)
        self.next_index += 1
        if timed:
            self.clock += self.interval
        self.last = frame
        return frame

    def close(self) -> None:
        self.cap.release()


class CameraSource:
    """Source Protocol over one camera; ``run(stop)`` is the thread ``source:<name>``."""

    def __init__(
        self,
        cfg: CameraSourceConfig,
        submit: Submit,
        stats: Stats,
        on_status: Callable[[str, SourceStatus], None] | None = None,
    ) -> None:
        # Before any thread opens a capture: setting the environment while other threads read it is
        # unsafe in C (OpenCV's and ONNX Runtime's threads call getenv).
        quiet_video_libraries()
        self.cfg = cfg
        self.name = cfg.name
        self.submit = submit  # must not block: camera frames are dropped when the queue is full
        self.stats = stats
        self.on_status = on_status
        self.ready = threading.Event()  # set after the first open attempt (READY=1 does not wait for a camera)
        self.reason = "not started"
        self._status = SourceStatus.OFFLINE
        self._wake = threading.Event()  # interrupts the wait between captures: a command or a new interval
        self._asked = threading.Event()  # capture_now(): a capture is wanted at once
        self._retimed = threading.Event()  # update() changed the interval: the schedule starts again from now
        self._ended = False
        self._camera: Any = None  # the one Picamera2 object, created on the first successful open
        self._reader: Reader | None = None
        self._ref: tuple[np.ndarray, ...] | None = None  # thumbnails of the last frame handed on
        self._settle = 0  # frames still to hand on after a change, so stable_reads can confirm it
        self._follow = 0  # on command (interval = 0): frames still to take at once after a command
        self._outside: set[str] = set()  # regions already warned about as outside the frame
        self._rules = cfg.rois

    @property
    def status(self) -> SourceStatus:
        return self._status

    def update(self, cfg: SourceConfig) -> None:
        """Apply the live keys of a reloaded config (interval, change_threshold, stable_reads, publish_every)."""
        if not isinstance(cfg, CameraSourceConfig):
            raise TypeError("%s: a %s cannot update a %s" % (self.name, type(cfg).__name__, type(self).__name__))
        retimed = cfg.interval != self.cfg.interval
        self.cfg = cfg
        if retimed:  # not at the old interval's next tick, which may be an hour away (or never, from 0)
            self._retimed.set()
            self._wake.set()

    def capture_now(self) -> str:
        if self._ended:
            return "video file ended"
        self._asked.set()
        self._wake.set()
        if self._status is SourceStatus.OFFLINE:
            return "offline (%s); capture when back" % self.reason
        return "capture requested"

    # -- the source thread ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        backoff = self.cfg.retry_min_delay
        next_at = opened_at = 0.0
        try:
            while not stop.is_set():
                cfg = self.cfg
                if self._reader is None:
                    try:
                        self._reader = self._open()
                    except Exception as exc:  # a camera library failing otherwise: retried too, never the thread's end
                        if not isinstance(exc, SourceError):
                            exc = SourceError("camera failed to open: %s: %s" % (type(exc).__name__, exc))
                        self._failed(exc, backoff)
                        self.ready.set()
                        stop.wait(backoff)
                        backoff = min(backoff * 2, cfg.retry_max_delay)
                        continue
                    self._set_status(SourceStatus.ONLINE, "")
                    self.ready.set()
                    next_at = opened_at = time.monotonic()
                until = next_at if cfg.interval > 0 else math.inf
                if cfg.interval <= 0 and self._follow > 0:
                    # On command, the frames that confirm a changed region (stable_reads) follow the
                    # commanded one at once: no later tick would take them, and the command's value
                    # would stay unconfirmed until the next command.
                    until = time.monotonic()
                try:
                    self._reader.idle(until, stop, self._wake)
                    if stop.is_set():
                        break
                    self._wake.clear()
                    forced = self._asked.is_set()
                    self._asked.clear()
                    if self._retimed.is_set():
                        self._retimed.clear()
                        cfg = self.cfg
                        if isinstance(self._reader, OpenCvReader):
                            self._reader.retime(cfg.interval)
                        next_at = time.monotonic()  # the new interval starts with a capture now (none at 0)
                        if not forced and cfg.interval <= 0:
                            continue
                    elif not forced and time.monotonic() < until:
                        continue  # woken for nothing left to do (a command already served)
                    start = time.perf_counter()
                    frame = self._reader.read()
                except VideoEnded:
                    self._reader = None
                    self._ended = True
                    self._set_status(SourceStatus.OFFLINE, "video file ended")
                    return
                except Exception as exc:  # a camera library failing mid-capture (a reconnect per capture
                    # opens from here too): retried like a failed open, never the thread's end
                    if not isinstance(exc, SourceError):
                        log.debug("camera failed source=%s", self.name, exc_info=True)
                        exc = SourceError("camera failed: %s: %s" % (type(exc).__name__, exc))
                        with contextlib.suppress(Exception):
                            self._reader.close()
                    self._reader = None
                    self._failed(exc, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, cfg.retry_max_delay)
                    continue
                capture_ms = round((time.perf_counter() - start) * 1000.0, 2)
                if time.monotonic() - opened_at >= STABLE_CONNECTION_S:
                    # Not at the first frame: a stream that drops after a frame or two would be
                    # reopened every retry_min_delay, three journal lines each, for ever.
                    backoff = cfg.retry_min_delay
                self.stats.inc("frames_total")
                if cfg.interval > 0 and not forced:
                    now = time.monotonic()
                    next_at += cfg.interval
                    if next_at < now:  # fell behind (slow camera): no burst to catch up
                        next_at = now + cfg.interval
                outcome = self.offer(frame, forced, capture_ms)
                if forced and outcome == "dropped":
                    # A command was answered "capture requested": its frame is taken again once the
                    # queue has room (drop-folder files fill it for a while), not lost.
                    self._asked.set()
                    self._wake.set()
                    stop.wait(COMMAND_RETRY_S)
                    continue
                if cfg.interval <= 0:
                    # At most stable_reads - 1 frames follow a command, and none after a drop (a full
                    # queue) or once the command's frame was no change: a scene that keeps changing
                    # must not keep an on-command camera capturing.
                    if forced:
                        changed = outcome == "queued" and self._settle > 0
                        self._follow = cfg.stable_reads - 1 if changed and cfg.rois else 0
                    else:
                        self._follow = 0 if outcome == "dropped" else max(0, self._follow - 1)
        finally:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._camera is not None:
                try:
                    self._camera.close()
                except Exception as exc:
                    log.warning("camera close failed source=%s error=%s", self.name, exc)
                self._camera = None

    def _open(self) -> Reader:
        if self.cfg.backend == "picamera2":
            return Picamera2Reader(self._picamera2(), self.cfg)
        return OpenCvReader(self.cfg)

    def _picamera2(self) -> Any:
        """The source's one Picamera2 object, created on first success and kept (SPEC: no create/close loops)."""
        if self._camera is not None:
            return self._camera
        module = _import_picamera2()
        try:
            self._camera = module.Picamera2(int(self.cfg.device))
        except IndexError as exc:
            raise SourceError("no camera %s found" % self.cfg.device) from exc
        except Exception as exc:  # RuntimeError when busy; anything libcamera raises: retried
            raise SourceError("camera %s busy or failing: %s: %s" % (self.cfg.device, type(exc).__name__, exc)) from exc
        return self._camera

    def _failed(self, exc: SourceError, backoff: float) -> None:
        self.stats.inc("camera_errors_total")
        if self._status is SourceStatus.OFFLINE and self.reason == exc.message:
            log.debug("camera retry failed source=%s retry_s=%.2f error=%s", self.name, backoff, exc.message)
            return
        self._set_status(SourceStatus.OFFLINE, exc.message, backoff)

    def _set_status(self, status: SourceStatus, why: str, retry_s: float | None = None) -> None:
        self.reason = why
        if status is self._status and status is SourceStatus.ONLINE:
            return
        changed = status is not self._status
        self._status = status
        if status is SourceStatus.ONLINE:
            log.info("source online source=%s backend=%s device=%s", self.name, self.cfg.backend,
                     redact(self.cfg.device))
        elif retry_s is None:
            log.warning("source offline source=%s device=%s reason=%s", self.name, redact(self.cfg.device), why)
        else:
            log.warning("source offline source=%s device=%s reason=%s retry_s=%.2f", self.name,
                        redact(self.cfg.device), why, retry_s)
        if changed and self.on_status is not None:
            self.on_status(self.name, status)

    # -- frames → jobs -------------------------------------------------------------------------

    def offer(self, frame: np.ndarray, forced: bool = False, capture_ms: float | None = None) -> str:
        """Hand ``frame`` on unless it is unchanged; returns ``queued``, ``unchanged`` or ``dropped``."""
        cfg = self.cfg
        frame = regions.to_bgr(frame)
        thumbs = regions.thumbnails(frame, [r.box for r in cfg.rois])
        changed = self._ref is None or regions.difference(self._ref, thumbs) > cfg.change_threshold
        if not (changed or forced or self._settle > 0):
            self.stats.inc("frames_skipped_total")
            return "unchanged"
        if not self.submit(self._job(frame, capture_ms)):
            self.stats.inc("frames_dropped_total")  # the reference stays: the next frame is tried again
            log.debug("frame dropped, queue full source=%s", self.name)
            return "dropped"
        self._ref = thumbs
        self._settle = cfg.stable_reads - 1 if changed and cfg.rois else max(0, self._settle - 1)
        return "queued"

    def _job(self, frame: np.ndarray, capture_ms: float | None) -> Job:
        cfg = self.cfg
        job = Job(self.name, frame, droppable=True, stable_reads=cfg.stable_reads, publish_every=cfg.publish_every,
                  capture_ms=capture_ms)
        if not cfg.rois:
            return job
        crops = []
        for roi in cfg.rois:
            problem = None if roi.name in self._outside else off_frame(roi, frame.shape)
            if problem:
                self._outside.add(roi.name)
                log.warning("%s source=%s", problem, self.name)
            crops.append(regions.prepare(regions.crop(frame, roi.box), roi.grey, roi.clahe, roi.invert, roi.rotate))
        image, boxes = regions.canvas(crops)
        rois = tuple(dataclasses.replace(roi, box=box) for roi, box in zip(cfg.rois, boxes))  # boxes on the canvas
        return dataclasses.replace(job, rois=rois, det=False, image=image, regions=self._rules)


def _import_picamera2() -> Any:
    """Raspberry Pi OS's picamera2, or SourceError: not installed, or failing to import (its
    numpy ABI against a venv's numpy 2: "numpy.dtype size changed", a ValueError)."""
    try:
        return importlib.import_module("picamera2")
    except ImportError as exc:
        raise SourceError("picamera2 is not installed (apt install python3-picamera2; the venv needs "
                          "--system-site-packages)") from exc
    except Exception as exc:
        raise SourceError("picamera2 failed to import: %s: %s" % (type(exc).__name__, exc)) from exc


def probe(cfg: CameraSourceConfig) -> str | None:
    """For ``edge-ocr check``: None if the camera looks usable, else a one-line reason.

    picamera2 is asked for its camera list (without taking the camera from a running daemon);
    OpenCV opens the device and reads one frame.
    """
    if cfg.backend == "picamera2":
        try:
            module = _import_picamera2()
            cameras = module.Picamera2.global_camera_info()
        except SourceError as exc:
            return exc.message
        except Exception as exc:  # libcamera failing: check names it, never a traceback
            return "picamera2 cannot list the cameras: %s: %s" % (type(exc).__name__, exc)
        if int(cfg.device) >= len(cameras):
            return "no camera %s found (%d attached)" % (cfg.device, len(cameras))
        return None
    quiet_video_libraries()
    try:
        reader = OpenCvReader(cfg)
    except SourceError as exc:
        return exc.message
    try:
        frame = reader.read()
    except (SourceError, VideoEnded) as exc:
        return exc.message if isinstance(exc, SourceError) else "video file has no frames"
    finally:
        reader.close()
    return "; ".join(filter(None, (off_frame(roi, frame.shape) for roi in cfg.rois))) or None


def off_frame(roi: Region, shape: tuple[int, ...]) -> str | None:
    """Why ``roi`` does not fit a frame of ``shape``, else None: a region wholly outside is read as
    blank for good, one partly outside only up to the frame's edge (``check`` and the journal)."""
    clipped = regions.clip_box(roi.box, shape)
    if clipped == roi.box:
        return None
    return "region %r box %s %s the %dx%d frame" % (
        roi.name, list(roi.box), "lies outside" if clipped is None else "runs past", shape[1], shape[0])
