"""Idle CPU of the daemon watching an unchanged scene: a camera source (OpenCV, a looping video file
of one static frame, interval = 1 s, one ROI) in the real App with the real engine, MQTT off.

    .venv/bin/python bench/idle_cpu.py [--seconds 30] [--interval 1.0] [--size 1280x720]
    .venv/bin/python bench/idle_cpu.py --stream 25 --interval 30 --seconds 60 [--keep-connected]

``--stream FPS`` reads an MJPEG stream over HTTP instead (a server in a child process, whose CPU is
not counted, sending the same frame FPS times a second, as an IP camera does); ``--keep-connected``
keeps it connected and decoded between captures whatever the interval (as before STREAM_RELEASE_S).

Prints the process's CPU time over the window as % of one core (all threads: camera, pipeline,
main loop), after a warm-up in which the first frame is OCR'd; every later frame is skipped as
unchanged, so this is the cost of capturing + comparing + idling.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_ocr.app import App
from edge_ocr.config import load_config

# An IP camera in small: the same JPEG as multipart/x-mixed-replace, FPS times a second, to each client.
STREAM_SERVER = r"""
import http.server, sys, time
jpeg, fps = open(sys.argv[1], "rb").read(), float(sys.argv[2])
class Camera(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg))
                self.wfile.write(jpeg + b"\r\n")
                time.sleep(1.0 / fps)
        except OSError:
            pass
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Camera)
print("http://127.0.0.1:%d/stream.mjpg" % server.server_address[1], flush=True)
server.serve_forever()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--size", default="1280x720", help="frame size WxH of the static video")
    parser.add_argument("--stream", type=float, default=0.0, help="read an MJPEG stream of this many fps instead")
    parser.add_argument("--keep-connected", action="store_true", help="never connect per capture")
    args = parser.parse_args()
    if args.keep_connected:
        import edge_ocr.sources.camera as camera

        camera.STREAM_RELEASE_S = float("inf")
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        frame = np.full((h, w, 3), 235, dtype=np.uint8)
        cv2.putText(frame, "1234.5", (w // 8, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 3.0, (20, 20, 20), 8, cv2.LINE_AA)
        video = Path(tmp) / "static.avi"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
        for _ in range(100):  # 10 s at 10 fps, looped
            writer.write(frame)
        writer.release()
        server, device = None, str(video)
        if args.stream:
            jpeg = Path(tmp) / "frame.jpg"
            cv2.imwrite(str(jpeg), frame)
            server = subprocess.Popen([sys.executable, "-c", STREAM_SERVER, str(jpeg), str(args.stream)],
                                      stdout=subprocess.PIPE, text=True)
            assert server.stdout is not None
            device = server.stdout.readline().strip()  # the stream's URL
        config = Path(tmp) / "edge-ocr.toml"
        box = [w // 8 - 10, h // 2 - 90, w // 2, 120]
        config.write_text(
            '[engine]\nthreads = 1\n\n[[sources]]\nname = "meter"\ntype = "camera"\ndevice = "%s"\ninterval = %s\n'
            "loop = true\nrois = [ { name = \"reading\", box = %s, allowed_chars = \"0123456789.\" } ]\n"
            "\n[mqtt]\nenabled = false\n" % (device, args.interval, box))
        app = App(load_config(config))
        app.start()
        try:
            ready = threading.Event()
            while app.stats.get("jobs_total") < 1 and not ready.wait(0.1):
                pass
            ready.wait(2 * args.interval)  # settle: the extra stable read after the first change
            cpu0, t0 = time.process_time(), time.monotonic()
            frames0, skipped0, jobs0 = (app.stats.get(k) for k in ("frames_total", "frames_skipped_total", "jobs_total"))
            ready.wait(args.seconds)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
            frames = app.stats.get("frames_total") - frames0
            skipped = app.stats.get("frames_skipped_total") - skipped0
            jobs = app.stats.get("jobs_total") - jobs0
        finally:
            app.shutdown()
            if server is not None:
                server.kill()
    print("idle_cpu_percent_of_one_core=%.2f seconds=%.1f cpu_s=%.3f frames=%d skipped=%d ocr_jobs=%d size=%dx%d "
          "interval_s=%s stream_fps=%g keep_connected=%s" % (100.0 * cpu / wall, wall, cpu, frames, skipped, jobs, w, h,
                                                    args.interval, args.stream, args.keep_connected))
    return 0


if __name__ == "__main__":
    sys.exit(main())
