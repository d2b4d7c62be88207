"""Idle CPU of the daemon watching an unchanged scene: a camera source (OpenCV, a looping video file
of one static frame, interval = 1 s, one ROI) in the real App with the real engine, MQTT off.

    .venv/bin/python bench/idle_cpu.py [--seconds 30] [--interval 1.0] [--size 1280x720]

Prints the process's CPU time over the window as % of one core (all threads: camera, pipeline,
main loop), after a warm-up in which the first frame is OCR'd; every later frame is skipped as
unchanged, so this is the cost of capturing + comparing + idling.
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--size", default="1280x720", help="frame size WxH of the static video")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        frame = np.full((h, w, 3), 235, dtype=np.uint8)
        cv2.putText(frame, "1234.5", (w // 8, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 3.0, (20, 20, 20), 8, cv2.LINE_AA)
        video = Path(tmp) / "static.avi"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
        for _ in range(100):  # 10 s at 10 fps, looped
            writer.write(frame)
        writer.release()
        config = Path(tmp) / "edge-ocr.toml"
        box = [w // 8 - 10, h // 2 - 90, w // 2, 120]
        config.write_text(
            '[engine]\nthreads = 1\n\n[[sources]]\nname = "meter"\ntype = "camera"\ndevice = "%s"\ninterval = %s\n'
            "loop = true\nrois = [ { name = \"reading\", box = %s, allowed_chars = \"0123456789.\" } ]\n"
            "\n[mqtt]\nenabled = false\n" % (video, args.interval, box))
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
    print("idle_cpu_percent_of_one_core=%.2f seconds=%.1f cpu_s=%.3f frames=%d skipped=%d ocr_jobs=%d size=%dx%d "
          "interval_s=%s" % (100.0 * cpu / wall, wall, cpu, frames, skipped, jobs, w, h, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
