"""Dev only: a meter or gate camera daemon's memory (docs/memory.md: "A camera that reads only its regions").

A looping MJPG video of a changing reading, one digits region read every 0.2 s, for 40 s, in a
daemon child (``edge-ocr run``); RSS sampled each second. ``--eager`` loads the detector and the
page reader up front, as every daemon did before 2026-12-04; ``--profile pizero`` uses
config/pi-zero-2w.toml's engine settings. ``--gate``: eval-dev's licence plates instead, one
region around them without allowed characters; ``--no-sight`` reads them as before plates in
sight went to the plate specialist first (EngineOptions.plate_sight_share).

    .venv/bin/python bench/meter_rss.py [--eager] [--profile default|pizero] [--seconds 40] [--gate [--no-sight]]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
REGION = (20, 60, 260, 100)  # x, y, w, h around the drawn reading
GATE_REGION = (60, 90, 200, 60)  # around the plate, drawn at (66, 96) in 188 x 48 px
EVAL_DEV = REPO.parent / "shared" / "eval-dev"
ENGINES = {"default": "", "pizero": '[engine]\nthreads = 1\nmemory = "low"\ndet_limit_side = 640\n'}


def meter_video(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, (320, 240))
    for value in range(100, 400, 3):
        frame = np.full((240, 320, 3), 255, np.uint8)
        cv2.putText(frame, "%04.1f" % (value / 10), (40, 130), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (0, 0, 0), 5, cv2.LINE_AA)
        for _ in range(3):
            writer.write(frame)
    writer.release()
    return path


def gate_video(path: Path) -> Path:
    """eval-dev's plates, each for 3 frames, at twice their size on a grey wall."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, (320, 240))
    for plate in sorted((EVAL_DEV / "lines").glob("plate_*"))[:100]:
        frame = np.full((240, 320, 3), 128, np.uint8)
        frame[96:144, 66:254] = cv2.resize(cv2.imread(str(plate)), (188, 48))
        for _ in range(3):
            writer.write(frame)
    writer.release()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--eager", action="store_true", help="load the detector and page reader up front")
    parser.add_argument("--profile", choices=sorted(ENGINES), default="default")
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--gate", action="store_true", help="plates, one region without allowed characters")
    parser.add_argument("--no-sight", action="store_true", help="plates read by the page reader first (before)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edge-ocr-meter-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = work / "edge-ocr.toml"
    video, region, allowed = ((gate_video(work / "gate.avi"), GATE_REGION, "") if args.gate
                              else (meter_video(work / "meter.avi"), REGION, "0123456789."))
    config.write_text(ENGINES[args.profile] + '[[sources]]\nname = "meter"\ntype = "camera"\ndevice = "%s"\n'
                      'interval = 0.2\nloop = true\nrois = [ { name = "reading", box = [%d, %d, %d, %d], '
                      'allowed_chars = "%s" } ]\n[mqtt]\nenabled = false\n[http]\nbind = "127.0.0.1:%d"\n'
                      % (video, *region, allowed, port))
    patch = "import edge_ocr.app as app; app.reads_pages = lambda config: True; " if args.eager else ""
    if args.no_sight:
        patch += "import edge_ocr.engine.recognize as r; r.plate_in_sight = lambda crop, share: False; "
    env = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.hugetlb=1", STATE_DIRECTORY=str(work))
    child = subprocess.Popen([sys.executable, "-c", patch + "import sys; from edge_ocr.cli import main; "
                              "sys.exit(main(['run', '-c', %r]))" % str(config)], cwd=REPO, env=env,
                             stderr=(work / "daemon.log").open("w"))
    rss = []
    try:
        process = psutil.Process(child.pid)
        for _ in range(args.seconds):
            time.sleep(1)
            rss.append(process.memory_info().rss / 2**20)
        with urllib.request.urlopen("http://127.0.0.1:%d/api/latest/meter" % port, timeout=10) as answer:
            latest = json.load(answer)
        reading = latest["regions"]["reading"]["read"]  # a reading that changes each frame is never stable
        peak = int(next(line for line in open("/proc/%d/status" % child.pid) if line.startswith("VmHWM")).split()[1])
    finally:
        child.terminate()
        child.wait(30)
    print("%s camera, %s, sessions %s: RSS %.1f MB at 10 s, %.1f MB at %d s, peak %.1f MB; last reading %s"
          % ("gate" + (" (no plates in sight)" if args.no_sight else "") if args.gate else "meter", args.profile,
             "up front" if args.eager else "at first use", rss[min(9, len(rss) - 1)], rss[-1],
             args.seconds, peak / 1024, reading))
    return 0


if __name__ == "__main__":
    sys.exit(main())
