"""edge_ocr.sources.camera: picamera2 through a fake module in sys.modules (tests/fake_picamera2.py),
OpenCV through real MJPG video files, regions through the real engine on eval-dev crops."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from edge_ocr.config import CameraSourceConfig
from edge_ocr.engine.types import Region
from edge_ocr.pipeline import Pipeline
from edge_ocr.results import Job, Result, Status
from edge_ocr.sources.base import SourceStatus
from edge_ocr.sources.camera import CameraSource, device_kind, probe, redact, why_not_open
from edge_ocr.stats import Stats
from tests.broker import wait_until
from tests.fake_picamera2 import CameraBus
from tests.frames import BOX, paste, text_frame, write_video
from tests.helpers import line_samples

DIGITS = "0123456789."


class Running:
    """A CameraSource on its own thread, jobs collected (or handed to ``submit``)."""

    def __init__(self, cfg: CameraSourceConfig, submit=None) -> None:
        self.jobs: list[Job] = []
        self.statuses: list[SourceStatus] = []
        self.stats = Stats()
        self.stop = threading.Event()
        self.source = CameraSource(cfg, submit or self._collect, self.stats, lambda n, s: self.statuses.append(s))
        self.thread = threading.Thread(target=self.source.run, args=(self.stop,), name="source:%s" % cfg.name)
        self.thread.start()
        assert self.source.ready.wait(10)

    def _collect(self, job: Job) -> bool:
        self.jobs.append(job)
        return True

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def run_camera():
    running: list[Running] = []

    def start(cfg: CameraSourceConfig, submit=None) -> Running:
        r = Running(cfg, submit)
        running.append(r)
        return r

    yield start
    for r in running:
        r.close()


@pytest.fixture
def bus(monkeypatch):
    bus = CameraBus("missing")
    monkeypatch.setitem(sys.modules, "picamera2", bus.module())
    return bus


def pi_config(**kw) -> CameraSourceConfig:
    base = {"backend": "picamera2", "device": "0", "interval": 0.01, "size": (640, 480), "retry_min_delay": 0.01,
            "retry_max_delay": 0.05}
    return CameraSourceConfig("pi", **{**base, **kw})


def test_picamera2_missing_then_busy_then_present_goes_online_without_restart(bus, run_camera):
    cam = run_camera(pi_config())
    assert cam.source.status is SourceStatus.OFFLINE and "no camera 0" in cam.source.reason
    assert wait_until(lambda: bus.attempts >= 3)
    bus.state = "busy"
    seen = bus.attempts
    assert wait_until(lambda: bus.attempts >= seen + 2)
    assert cam.source.status is SourceStatus.OFFLINE and "busy" in cam.source.reason
    answer = cam.source.capture_now()  # what POST /api/capture/pi and the MQTT ack say
    assert answer.startswith("offline (") and "busy" in answer and answer.endswith("; capture when back"), answer
    bus.state = "present"
    assert wait_until(lambda: cam.source.status is SourceStatus.ONLINE)
    # A frame is counted before it is offered (skipped or queued): wait for both.
    assert wait_until(lambda: cam.stats.get("frames_total") >= 5 and cam.stats.get("frames_skipped_total") >= 4)
    assert bus.created == 1 and cam.statuses == [SourceStatus.ONLINE]
    assert bus.configs[0]["main"] == {"format": "RGB888", "size": (640, 480)}
    assert bus.controls == [{"AfMode": 2}]  # continuous autofocus: the fake sensor advertises AfMode
    assert cam.stats.get("camera_errors_total") >= 5
    # An unchanged scene costs no OCR: one job, the other frames skipped.
    assert len(cam.jobs) == 1 and cam.stats.get("frames_skipped_total") >= 4
    assert cam.jobs[0].droppable and isinstance(cam.jobs[0].image, np.ndarray) and cam.jobs[0].image.shape == (480, 640, 3)
    # Unplugged while running: offline, then back on the same Picamera2 object (no create/close loop).
    bus.unplugged = True
    assert wait_until(lambda: cam.source.status is SourceStatus.OFFLINE)
    bus.unplugged = False
    assert wait_until(lambda: cam.source.status is SourceStatus.ONLINE)
    assert bus.created == 1 and bus.closed == 0 and len(bus.configs) >= 2
    bus.set_frame(text_frame("42", (640, 480)))
    assert wait_until(lambda: len(cam.jobs) == 2)
    cam.close()
    assert bus.closed == 1


def test_a_picamera2_capture_that_never_completes_makes_the_source_offline_then_restarts_it(bus, run_camera,
                                                                                           monkeypatch):
    monkeypatch.setattr("edge_ocr.sources.camera.CAPTURE_TIMEOUT_S", 0.2, raising=False)
    bus.state = "present"
    cam = run_camera(pi_config())
    assert wait_until(lambda: cam.source.status is SourceStatus.ONLINE)
    bus.stalled = True  # the sensor's frontend stops delivering frames
    assert wait_until(lambda: cam.source.status is SourceStatus.OFFLINE, 5)
    assert cam.source.reason == "no frame from the camera within 0.2 s"
    captured = bus.captures
    bus.stalled = False
    assert wait_until(lambda: cam.source.status is SourceStatus.ONLINE and bus.captures > captured, 5)
    assert bus.created == 1 and len(bus.configs) >= 2  # restarted on the same Picamera2 object


def test_picamera2_without_autofocus_gets_no_af_control_and_missing_module_is_offline(bus, run_camera, monkeypatch):
    bus.state, bus.autofocus = "present", False
    cam = run_camera(pi_config(autofocus="continuous"))
    assert wait_until(lambda: cam.stats.get("frames_total") >= 1)
    assert bus.controls == []
    assert probe(pi_config()) is None
    bus.state = "missing"
    assert probe(pi_config()) == "no camera 0 found (0 attached)"
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 → ImportError
    other = run_camera(pi_config())
    assert other.source.status is SourceStatus.OFFLINE and "python3-picamera2" in other.source.reason


class Published:
    """A real pipeline and engine whose results are kept in a list (the sinks' view)."""

    def __init__(self, engine) -> None:
        self.results: list[Result] = []
        self.stop = threading.Event()
        self.pipe = Pipeline(engine, ("default", "test"), [self], Stats(), self.stop, queue_size=8)
        self.pipe.start()

    name = "list"

    def publish(self, result: Result) -> None:
        self.results.append(result)

    def submit(self, job: Job) -> bool:
        return self.pipe.submit(job, block=False)  # as the daemon submits camera frames

    def close(self) -> None:
        self.stop.set()
        self.pipe.join(5)


def test_video_file_changes_give_each_value_once_after_stable_reads(tmp_path, run_camera, engines):
    texts = ["12.3"] * 6 + ["45.6"] * 6 + ["78.9"] * 6
    video = write_video(tmp_path / "meter.avi", [text_frame(t) for t in texts], fps=20)
    published = Published(engines())
    results = published.results
    roi = Region("reading", BOX, DIGITS, r"\d+\.\d")
    cfg = CameraSourceConfig("meter", device=str(video), interval=0.05, rois=(roi,), stable_reads=2)
    cam = run_camera(cfg, published.submit)
    cam.thread.join(30)  # the file ends (loop = false): the source goes offline and its thread returns
    assert not cam.thread.is_alive() and cam.source.status is SourceStatus.OFFLINE
    assert cam.source.capture_now() == "video file ended"
    assert cam.stats.get("frames_total") == 18
    assert cam.stats.get("frames_skipped_total") == 12  # 2 reads per value, 4 unchanged frames skipped each
    assert wait_until(lambda: len(results) == 6)
    published.close()
    assert [r.regions[0].read for r in results] == ["12.3", "12.3", "45.6", "45.6", "78.9", "78.9"]
    assert [r.changed for r in results] == [False, True, False, True, False, True]
    assert [r.text for r in results] == ["", "12.3", "12.3", "45.6", "45.6", "78.9"]
    last = results[-1].to_dict()
    assert last["regions"]["reading"]["text"] == "78.9" and last["regions"]["reading"]["status"] == "ok"
    assert last["regions"]["reading"]["previous_text"] == "45.6" and last["previous_text"] == "45.6"
    assert last["lines"][0]["box"] == [[20, 60], [280, 60], [280, 160], [20, 160]]  # camera pixels
    assert "capture" in last["timing_ms"] and results[-1].status is Status.OK


def test_video_file_loops_when_asked_and_a_missing_file_is_retried(tmp_path, run_camera):
    frames = [text_frame(str(i)) for i in range(3)]
    looped = run_camera(CameraSourceConfig("loop", device=str(write_video(tmp_path / "a.avi", frames, 100)),
                                           interval=0.01, loop=True))
    assert wait_until(lambda: looped.stats.get("frames_total") >= 8 and len(looped.jobs) >= 8)
    assert looped.source.status is SourceStatus.ONLINE and looped.thread.is_alive()
    assert len(looped.jobs) >= 8  # every frame differs from the one before
    late = tmp_path / "late.avi"
    cam = run_camera(CameraSourceConfig("late", device=str(late), interval=0.01, retry_min_delay=0.01,
                                        retry_max_delay=0.05))
    assert cam.source.status is SourceStatus.OFFLINE and "not found" in cam.source.reason
    write_video(tmp_path / "tmp.avi", frames, 100).rename(late)
    cam.thread.join(20)  # online, its 3 frames, then the end of the file
    assert not cam.thread.is_alive()
    assert [isinstance(j.image, np.ndarray) and j.droppable for j in cam.jobs] == [True] * 3
    assert cam.statuses == [SourceStatus.ONLINE, SourceStatus.OFFLINE]


def test_on_command_a_scene_that_keeps_changing_gives_at_most_stable_reads_frames_per_command(tmp_path, run_camera):
    video = write_video(tmp_path / "flicker.avi", [text_frame(str(i)) for i in range(40)], fps=20)
    roi = Region("reading", BOX, DIGITS)
    given = [0]  # commands given so far
    after: list[int] = []  # for each frame handed on, the commands given before it

    def submit(job: Job) -> bool:
        after.append(given[0])
        return True

    cam = run_camera(CameraSourceConfig("meter", device=str(video), interval=0, loop=True, rois=(roi,),
                                        stable_reads=3), submit)
    for n in (1, 2):
        given[0] = n
        cam.source.capture_now()
        assert wait_until(lambda n=n: len(after) >= 3 * n)
    # Each command's frame and 2 to confirm it: the second command's frames, later, show no 4th followed the first.
    assert after[:6] == [1, 1, 1, 2, 2, 2]


def test_a_video_file_sampled_on_command_then_periodically_goes_on_from_where_the_commands_left_it(tmp_path,
                                                                                                   run_camera):
    video = write_video(tmp_path / "count.avi", [text_frame(str(i)) for i in range(60)], fps=20)
    cfg = CameraSourceConfig("meter", device=str(video), interval=0)
    cam = run_camera(cfg)
    for n in range(1, 31):  # 30 commands: frames 0..29, 1.5 s of the video's time
        cam.source.capture_now()
        assert wait_until(lambda n=n: cam.stats.get("frames_total") == n)
    cam.source.update(dataclasses.replace(cfg, interval=0.1))  # a reload: every 0.1 s of its time from here
    assert wait_until(lambda: len(cam.jobs) >= 35, timeout_s=10)  # new frames at once, not after 1.5 s of repeats
    assert cam.stats.get("frames_skipped_total") <= 1


def test_a_video_file_sampled_faster_than_its_frame_rate_plays_in_its_own_time(tmp_path, run_camera):
    # 6 different frames at 2 fps: 3 s of video. Sampled every 0.25 s, each frame is on show for
    # two samples, as a camera would show it, not the next frame each time (2x the speed).
    video = write_video(tmp_path / "slow.avi", [text_frame(str(i)) for i in range(6)], fps=2)
    cam = run_camera(CameraSourceConfig("meter", device=str(video), interval=0.25))
    cam.thread.join(30)
    assert not cam.thread.is_alive()
    assert cam.stats.get("frames_total") == 12  # the samples at 0, 0.25, ..., 2.75 s of its time
    assert len(cam.jobs) == 6 and cam.stats.get("frames_skipped_total") == 6  # each frame once, then unchanged


def test_interval_zero_captures_on_command_even_when_unchanged(tmp_path, run_camera):
    video = write_video(tmp_path / "still.avi", [text_frame("7")] * 5, 10)
    cam = run_camera(CameraSourceConfig("cmd", device=str(video), interval=0, loop=True))
    assert cam.source.status is SourceStatus.ONLINE and cam.stats.get("frames_total") == 0
    assert cam.source.capture_now() == "capture requested"
    assert wait_until(lambda: len(cam.jobs) == 1)
    cam.source.capture_now()
    assert wait_until(lambda: len(cam.jobs) == 2)
    assert cam.stats.get("frames_total") == 2 and cam.stats.get("frames_skipped_total") == 0


def test_on_command_a_changed_region_is_confirmed_by_the_frames_right_after_the_commanded_one(tmp_path, run_camera,
                                                                                               engines):
    video = write_video(tmp_path / "meter.avi", [text_frame("12.3")] * 10, fps=10)
    published = Published(engines())
    results = published.results
    roi = Region("reading", BOX, DIGITS, r"\d+\.\d")
    cam = run_camera(CameraSourceConfig("meter", device=str(video), interval=0, rois=(roi,), stable_reads=3),
                     published.submit)
    assert cam.source.capture_now() == "capture requested"  # one command: its value, confirmed, at once
    assert wait_until(lambda: len(results) == 3)
    assert cam.source.capture_now() == "capture requested"  # the next command: its frame must be the 4th taken
    assert wait_until(lambda: len(results) >= 4)
    published.close()
    assert [r.text for r in results[:3]] == ["", "", "12.3"] and results[2].changed
    assert cam.stats.get("frames_total") == 4  # nothing taken between the commands


def test_a_reloaded_interval_takes_effect_at_once_from_on_command_to_periodic_and_back(tmp_path, run_camera):
    # A video of 60 different frames at 20 fps: sampled every interval of its own time.
    video = write_video(tmp_path / "count.avi", [text_frame(str(i)) for i in range(60)], 20)
    cfg = CameraSourceConfig("meter", device=str(video), interval=0, loop=True)
    cam = run_camera(cfg)
    cam.source.capture_now()
    assert wait_until(lambda: len(cam.jobs) >= 1)
    assert cam.stats.get("frames_total") == 1  # on command only: the command's frame is the first taken
    cam.source.update(dataclasses.replace(cfg, interval=0.05))  # as a SIGHUP reload hands it over
    assert wait_until(lambda: cam.stats.get("frames_total") >= 5, timeout_s=5)
    # one frame per interval of the video's time: 0.05 s at 20 fps is every frame, none skipped
    first = [job.image for job in cam.jobs[:3]]
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(first))
    cam.source.update(dataclasses.replace(cfg, interval=3600.0))  # an hour: not the 0.05 s tick's pace
    assert wait_until(lambda: not cam.source._retimed.is_set())  # taken: one capture now, the next in an hour
    # Fixed windows: the capture after a retime and an hour's tick not coming have no event to wait on.
    time.sleep(0.3)
    frames = cam.stats.get("frames_total")
    time.sleep(0.5)
    assert cam.stats.get("frames_total") == frames
    cam.source.update(dataclasses.replace(cfg, interval=0))  # back to on command: a command still captures
    cam.source.capture_now()
    assert wait_until(lambda: cam.stats.get("frames_total") == frames + 1)


def test_offer_skips_unchanged_settles_for_stable_reads_and_counts_drops():
    accept = [False]
    jobs: list[Job] = []

    def submit(job: Job) -> bool:
        if accept[0]:
            jobs.append(job)
        return accept[0]

    stats = Stats()
    roi = Region("reading", BOX, DIGITS)
    source = CameraSource(CameraSourceConfig("c", rois=(roi,), stable_reads=3), submit, stats)
    a, b = text_frame("12.3"), text_frame("12.8")
    assert source.offer(a) == "dropped" and stats.get("frames_dropped_total") == 1
    accept[0] = True
    assert [source.offer(a) for _ in range(4)] == ["queued", "queued", "queued", "unchanged"]
    assert source.offer(a, forced=True) == "queued"
    assert [source.offer(b) for _ in range(4)] == ["queued", "queued", "queued", "unchanged"]
    assert stats.get("frames_skipped_total") == 2
    job = jobs[0]
    assert job.det is False and job.regions[0].box == BOX and job.stable_reads == 3
    assert isinstance(job.image, np.ndarray) and job.image.shape == (100, 260, 3)  # only the region's pixels are queued
    assert job.rois[0].box == (0, 0, 260, 100) and job.rois[0].allowed_chars == DIGITS


def test_regions_on_eval_dev_crops_allowed_chars_pattern_and_preprocessing(eval_dev, engines):
    plates = line_samples(eval_dev, "LPRNet_Pytorch-test-plates", 2)
    prices = [s for s in line_samples(eval_dev, "SROIE2019-task1", 200) if re.fullmatch(r"\d+\.\d\d", s[1])][:2]
    pipe = Pipeline(engines(), ("default", "test"), [], Stats(), threading.Event())
    results: list[Result] = []
    plate_pattern = r"[A-Z]{2}\d{4}"
    for i, ((plate, plate_label), (price, price_label)) in enumerate(zip(plates, prices)):
        frame = np.full((480, 640, 3), 200, dtype=np.uint8)
        plate_box = paste(frame, cv2.imread(str(plate)), (30, 20))
        price_box = paste(frame, cv2.imread(str(price)), (100, 200))
        # A light-on-dark display, read through invert: white digits on black.
        display_box = paste(frame, 255 - text_frame("45.6")[60:160, 20:280], (300, 300))
        # A label mounted sideways (its text runs top to bottom), read through rotate = 90.
        side_box = paste(frame, cv2.rotate(text_frame("78.9")[60:160, 20:280], cv2.ROTATE_90_COUNTERCLOCKWISE),
                         (520, 20))
        rois = (Region("plate", plate_box, "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", plate_pattern),
                Region("price", price_box, DIGITS, r"\d+\.\d\d"),
                Region("display", display_box, DIGITS, grey=True, invert=True),
                Region("side", side_box, DIGITS, rotate=90))
        source = CameraSource(CameraSourceConfig("shop%d" % i, rois=rois, stable_reads=1), lambda job: results.append(
            pipe.process(job)) is None, Stats())
        assert source.offer(frame) == "queued"
        regions = {r.name: r for r in results[-1].regions}
        assert regions["plate"].read == plate_label[1:]  # the province character is not allowed
        assert regions["price"].read == price_label and regions["price"].status is Status.OK
        assert regions["display"].read == "45.6" and regions["side"].read == "78.9"
        plate_ok = re.fullmatch(plate_pattern, plate_label[1:]) is not None
        assert regions["plate"].status is (Status.OK if plate_ok else Status.REJECTED)
        assert regions["plate"].text == (plate_label[1:] if plate_ok else "")  # rejected reads are never published
        assert results[-1].status is (Status.OK if plate_ok else Status.REJECTED)
    assert {r.status for r in results} == {Status.OK, Status.REJECTED}  # the two plates: one of each


def test_device_kinds_and_credentials_never_shown():
    assert [device_kind(d) for d in ("0", "/dev/video2", "rtsp://cam/stream", "clip.mp4")] == [
        "index", "device", "stream", "file"]
    assert redact("rtsp://admin:hunter2@10.0.0.5:554/live") == "rtsp://***@10.0.0.5:554/live"
    assert probe(CameraSourceConfig("x", device="/nonexistent/clip.avi")) == "video file not found: /nonexistent/clip.avi"


def test_why_a_camera_did_not_open_is_said_without_its_password(closed_port):
    if not os.path.exists("/dev/video9"):
        assert why_not_open("9") == why_not_open("/dev/video9") == "no such device /dev/video9 (is the camera plugged in?)"
    assert why_not_open("/dev/null") == "/dev/null is busy or not a video capture device"
    closed = closed_port
    assert why_not_open("rtsp://admin:hunter2@127.0.0.1:%d/live" % closed) == (
        "connection refused by 127.0.0.1:%d (nothing listens there)" % closed)
    unknown = why_not_open("rtsp://admin:hunter2@camera.invalid/live")
    assert unknown.startswith("cannot resolve camera.invalid (") and "hunter2" not in unknown
    with socket.create_server(("127.0.0.1", 0)) as listening:  # a port that accepts, but speaks no RTSP
        port = listening.getsockname()[1]
        assert why_not_open("rtsp://127.0.0.1:%d/live" % port) == (
            "127.0.0.1:%d answers, but no stream opened there (check the path, the user and the password)" % port)
    assert why_not_open("http://127.0.0.1:port/x.mjpg") == "the URL's port is not a number"


def test_opencv_and_ffmpeg_say_nothing_of_their_own_at_each_retry_or_damaged_frame(tmp_path, closed_port):
    """Each of these wrote its own stderr line (the journal's) at every retry or frame, beside the
    source's: FFmpeg's "[tcp @ 0x...] Connection ... refused", OpenCV's "[ WARN:0@...] can't open camera
    by index", FFmpeg's "[mjpeg @ 0x...] overread 8" for each damaged frame of a lossy stream."""
    frame = cv2.imencode(".jpg", text_frame("12.3"))[1].tobytes()
    damaged = frame[: len(frame) // 2] + bytes(200) + frame[-50:]
    closed = closed_port
    with MjpegServer([], frames_per_connection=12, jpegs=[damaged]) as server:
        config = tmp_path / "cameras.toml"
        config.write_text('[mqtt]\nenabled = false\n'
                          '[[sources]]\nname = "gate"\ntype = "camera"\ndevice = "rtsp://admin:hunter2@127.0.0.1:%d/live"\n'
                          '[[sources]]\nname = "usb"\ntype = "camera"\ndevice = "9"\n'
                          '[[sources]]\nname = "lossy"\ntype = "camera"\ndevice = "%s"\n' % (closed, server.url))
        env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL")}
        run = subprocess.run([sys.executable, "-m", "edge_ocr", "check", "-c", str(config)], capture_output=True,
                             text=True, timeout=120, env=env)
    assert "sources[0] gate: cannot open rtsp://***@127.0.0.1:%d/live: connection refused by 127.0.0.1:%d" % (
        closed, closed) in run.stdout
    if not os.path.exists("/dev/video9"):
        assert "sources[1] usb: cannot open 9: no such device /dev/video9" in run.stdout
    assert server.connections >= 1  # the damaged stream was read
    assert not re.search(r"\[(tcp|rtsp|http|mjpeg) @ 0x|\[ WARN:", run.stderr), run.stderr


class MjpegServer:
    """A camera-like MJPEG stream over HTTP (multipart/x-mixed-replace) on a free loopback port.
    Each connection sends ``frames_per_connection`` frames, then drops, like a flaky IP camera."""

    def __init__(self, frames: list[np.ndarray], frames_per_connection: int, jpegs: list[bytes] = ()) -> None:
        import http.server

        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames] + list(jpegs)
        self.connections = 0
        self.sent = 0  # frames written, all connections
        self.opened: list[float] = []  # time.monotonic() of each connection
        self.stop = threading.Event()
        server_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server_self.connections += 1
                server_self.opened.append(time.monotonic())
                start = (server_self.connections - 1) * frames_per_connection
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for i in range(start, start + frames_per_connection):
                    if server_self.stop.wait(0.05):
                        return
                    jpeg = server_self.jpegs[i % len(server_self.jpegs)]
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg))
                        self.wfile.write(jpeg + b"\r\n")
                        self.wfile.flush()
                    except OSError:  # the camera side closed the connection
                        return
                    server_self.sent += 1
                # then the connection drops

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="test-mjpeg", daemon=True)

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d/stream.mjpg" % self.httpd.server_address[1]

    def __enter__(self) -> MjpegServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_http_stream_that_drops_is_reopened(run_camera):
    frames = [text_frame("12.3")] * 5 + [text_frame("45.6")] * 5
    with MjpegServer(frames, frames_per_connection=8) as server:
        cfg = CameraSourceConfig("ipcam", backend="opencv", device=server.url, interval=0.05,
                                 retry_min_delay=0.05, retry_max_delay=0.2, change_threshold=3.0)
        cam = run_camera(cfg)
        # One connection carries 8 frames: more than 8 captured means the source reopened the
        # stream after it dropped, without a restart.
        assert wait_until(lambda: server.connections >= 2 and cam.stats.snapshot()["frames_total"] > 8, 60), (
            server.connections, cam.stats.snapshot(), cam.source.reason)
        assert cam.jobs, "no frame was handed on"


class SnapshotServer:
    """A camera's snapshot URL (http://cam/snapshot.jpg): one JPEG per request, counted."""

    def __init__(self, frame: np.ndarray) -> None:
        import http.server

        jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
        self.requests = 0
        server_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server_self.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(jpeg)))
                self.end_headers()
                self.wfile.write(jpeg)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d/snapshot.jpg" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, name="test-snapshot", daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_snapshot_url_is_asked_once_per_capture_and_stays_online(run_camera):
    """A snapshot URL ends after its one picture: it was taken for a stream that dropped, so it
    was asked for again every second whatever the interval, offline and online at each."""
    server = SnapshotServer(text_frame("12.3"))
    try:
        periodic = run_camera(CameraSourceConfig("snap", backend="opencv", device=server.url, interval=0.5))
        assert wait_until(lambda: periodic.stats.get("frames_total") >= 4, 30), periodic.source.reason
        periodic.close()
        assert periodic.statuses == [SourceStatus.ONLINE] and periodic.stats.get("camera_errors_total") == 0
        assert server.requests <= periodic.stats.get("frames_total") + 1  # its probe at open, then one per capture
        asked = run_camera(CameraSourceConfig("snap0", backend="opencv", device=server.url, interval=0))
        for n in (1, 2):
            assert asked.source.capture_now() == "capture requested"
            assert wait_until(lambda n=n: asked.stats.get("frames_total") == n, 30), asked.source.reason
        assert len(asked.jobs) == 2 and asked.statuses == [SourceStatus.ONLINE]
    finally:
        server.close()


def test_a_stream_sampled_seldom_is_connected_for_each_capture_and_decoded_only_then(run_camera, monkeypatch):
    """OpenCV decodes every frame it grabs: kept connected, a 20 fps camera read every 10 s was
    decoded 200 times a capture. At STREAM_RELEASE_S or more apart each capture connects, reads
    one frame and closes; below it (and after a reload to a shorter interval) it stays connected."""
    monkeypatch.setattr("edge_ocr.sources.camera.STREAM_RELEASE_S", 0.5, raising=False)
    with MjpegServer([text_frame("12.3")], frames_per_connection=10_000) as server:
        seldom = run_camera(CameraSourceConfig("seldom", backend="opencv", device=server.url, interval=0.6))
        assert wait_until(lambda: seldom.stats.get("frames_total") >= 4, 30), seldom.source.reason
        seldom.close()
        captures = seldom.stats.get("frames_total")
        assert captures + 1 >= server.connections >= captures  # at open, then one per capture
        # Each connection sent what the capture read, and a frame or two in flight while it closed; kept
        # connected for the ~2 s of these captures it would have sent ~40.
        assert server.sent <= 3 * server.connections, (server.sent, server.connections)
        assert seldom.statuses == [SourceStatus.ONLINE] and seldom.stats.get("camera_errors_total") == 0
        connections, sent = server.connections, server.sent
        often = run_camera(CameraSourceConfig("often", backend="opencv", device=server.url, interval=0.1))
        assert wait_until(lambda: often.stats.get("frames_total") >= 10, 30), often.source.reason
        assert server.connections == connections + 1 and server.sent - sent >= often.stats.get("frames_total")
        often.source.update(dataclasses.replace(often.source.cfg, interval=0.6))  # a reload: per capture from now
        assert wait_until(lambda: server.connections >= connections + 3, 30)
        often.source.update(dataclasses.replace(often.source.cfg, interval=0.1))  # and connected again
        held = server.connections
        frames = often.stats.get("frames_total")
        assert wait_until(lambda: often.stats.get("frames_total") >= frames + 10, 30)
        assert server.connections <= held + 1


def test_a_failure_of_an_unexpected_kind_mid_capture_is_retried_not_the_threads_end(run_camera, monkeypatch):
    """A stream connected per capture opens from inside the capture: an OSError there (the reason's
    probe socket refused, EMFILE; no IPv6 for an IPv6 camera) ended the camera thread for good."""
    import edge_ocr.sources.camera as camera

    def no_sockets(device: str) -> str:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(camera, "STREAM_RELEASE_S", 0.5)
    with MjpegServer([text_frame("12.3")], frames_per_connection=10_000) as server:
        cam = run_camera(CameraSourceConfig("seldom", backend="opencv", device=server.url, interval=0.6,
                                            retry_min_delay=0.1, retry_max_delay=0.2))
        assert wait_until(lambda: cam.stats.get("frames_total") >= 1, 30)
        monkeypatch.setattr(camera, "why_not_open", no_sockets)
    assert wait_until(lambda: cam.source.status is SourceStatus.OFFLINE, 30)  # the camera went away
    assert "camera failed: OSError: [Errno 24] Too many open files" in cam.source.reason
    errors = cam.stats.get("camera_errors_total")
    assert wait_until(lambda: cam.stats.get("camera_errors_total") > errors, 10) and cam.thread.is_alive()  # retried


def test_a_looping_video_plays_on_in_its_own_time_past_its_end(tmp_path, run_camera):
    """A 2 s clip sampled every 0.7 s: 0, 0.7, 1.4, then 0.1 s into the next round (it went back to
    0 s, so an interval the clip's length does not divide kept showing the same frames)."""
    frames = [np.full((120, 160, 3), 10 * i, np.uint8) for i in range(20)]
    video = write_video(tmp_path / "clip.avi", frames, fps=10)
    cam = run_camera(CameraSourceConfig("clip", device=str(video), interval=0.7, loop=True, change_threshold=1.0))
    assert wait_until(lambda: len(cam.jobs) >= 6, 30)
    shown = [int(round(float(job.image.mean()) / 10)) for job in cam.jobs[:6]]
    assert shown == [0, 7, 14, 1, 8, 15]


def test_a_commanded_frame_the_full_queue_dropped_is_taken_again(tmp_path, run_camera):
    """interval = 0: a command answered "capture requested" while the drop folder fills the queue
    used to be dropped for good, and no result ever came."""
    video = write_video(tmp_path / "still.avi", [text_frame("7")] * 5, 10)
    refusals = [False, False, False]  # the queue is full three times, then has room
    taken: list[Job] = []

    def submit(job: Job) -> bool:
        if refusals:
            return refusals.pop()
        taken.append(job)
        return True

    cam = run_camera(CameraSourceConfig("cmd", device=str(video), interval=0, loop=True), submit=submit)
    assert cam.source.capture_now() == "capture requested"
    assert wait_until(lambda: len(taken) == 1, 20)
    assert cam.stats.get("frames_dropped_total") == 3


def test_a_picamera2_that_fails_to_import_is_a_reason_not_the_threads_end(tmp_path, run_camera, monkeypatch):
    """Raspberry Pi OS's picamera2 against numpy 2 raises ValueError ("numpy.dtype size changed")
    at import: the camera thread ended with a traceback, never retried, and check crashed."""
    (tmp_path / "picamera2.py").write_text('raise ValueError("numpy.dtype size changed, may indicate binary '
                                           'incompatibility")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    cam = run_camera(pi_config())
    assert cam.source.status is SourceStatus.OFFLINE and cam.thread.is_alive()
    assert cam.source.reason.startswith("picamera2 failed to import: ValueError: numpy.dtype size changed")
    assert wait_until(lambda: cam.stats.get("camera_errors_total") >= 2)  # retried
    assert probe(pi_config()).startswith("picamera2 failed to import: ValueError")


def test_a_stream_that_keeps_dropping_is_reopened_less_and_less_often(run_camera):
    """A stream that drops after a frame or two was reopened every retry_min_delay for ever (its
    delay started again at each good frame): three journal lines a second. The delay now starts
    again only after a connection that lasted (STABLE_CONNECTION_S)."""
    frames = [text_frame("12.3")] * 4
    with MjpegServer(frames, frames_per_connection=2) as server:
        cfg = CameraSourceConfig("flaky", backend="opencv", device=server.url, interval=0.01,
                                 retry_min_delay=0.05, retry_max_delay=0.8)
        cam = run_camera(cfg)
        assert wait_until(lambda: server.connections >= 7, 60), (server.connections, cam.source.reason)
        gaps = [b - a for a, b in zip(server.opened, server.opened[1:])]
        # 2 frames take ~0.1 s; then 0.05, 0.1, 0.2, 0.4, 0.8 s of delay: the last gaps are the cap's
        assert min(gaps[-2:]) > 0.7, gaps
        assert cam.jobs, "no frame was handed on"


def test_a_camera_url_in_the_journal_hides_a_password_with_white_space_or_an_at():
    from edge_ocr.sources.camera import redact

    assert redact("rtsp://admin:my p@ss#1@10.0.0.9:554/s?pwd=a b") == "rtsp://***@10.0.0.9:554/s?pwd=***"
