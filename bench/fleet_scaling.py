"""Fleet throughput with 1, 2 and 4 worker processes on this machine, in one run, and the
per-job overhead of going through the broker against a local `edge-ocr ocr` of the same images.

    .venv/bin/python bench/fleet_scaling.py --jobs 200 --workers 1,2,4

Starts its own Mosquitto (no auth, a free loopback port) and worker daemons (`edge-ocr run`
with [fleet] enabled, 1 engine thread each); submits the same eval-dev line crops through
edge_ocr.submit and times the wall clock from the first publish to the last answer.
Dev-only: never imported by the daemon.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from edge_ocr.config import load_config
from edge_ocr.submit import submit

REPO = Path(__file__).resolve().parents[1]
EVAL_DEV = Path(os.environ.get("EDGE_OCR_EVAL_DEV", REPO.parent / "shared" / "eval-dev"))


@contextlib.contextmanager
def local_mosquitto(root: Path) -> Iterator[int]:
    """A Mosquitto on a free loopback port (anonymous, no persistence) for the bench; yields the port."""
    port = free_port()
    conf = root / "mosquitto.conf"
    conf.write_text("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n" % port)
    broker = subprocess.Popen([shutil.which("mosquitto") or "mosquitto", "-c", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # its listener
    try:
        yield port
    finally:
        broker.terminate()
        broker.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(pred, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def config_text(port: int, name: str, root: Path, inflight: int = 2) -> str:
    return ('[engine]\nthreads = 1\n\n[http]\nenabled = false\n\n[[sources]]\nname = "inbox"\npath = "%s/inbox"\n\n'
            '[mqtt]\nhost = "127.0.0.1"\nport = %d\nclient_id = "%s"\nspool_dir = "%s/spool"\ndiscovery = false\n\n'
            '[fleet]\nenabled = true\njobs_topic = "bench/jobs"\nmax_inflight = %d\n' % (root, port, name, root, inflight))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--inflight", type=int, default=2, help="fleet.max_inflight of each worker")
    args = parser.parse_args()
    rows = (EVAL_DEV / "lines" / "labels.tsv").read_text(encoding="utf-8").splitlines()
    images = [EVAL_DEV / "lines" / r.split("\t")[0] for r in rows if "\tSROIE" in r][: args.jobs]
    with tempfile.TemporaryDirectory(prefix="edge-ocr-fleet.") as tmp:
        root = Path(tmp)
        with local_mosquitto(root) as port:
            client_config = root / "client.toml"
            client_config.write_text(config_text(port, "bench-client", root / "client"))
            config = load_config(client_config)
            results = []
            for count in [int(n) for n in args.workers.split(",")]:
                procs, logs = [], []
                for i in range(count):
                    wroot = root / ("n%d-w%d" % (count, i))
                    wroot.mkdir()
                    (wroot / "c.toml").write_text(config_text(port, "bench-%d-%d" % (count, i), wroot, args.inflight))
                    log = wroot / "log"
                    logs.append(log)
                    with open(log, "wb") as fh:
                        procs.append(subprocess.Popen([sys.executable, "-m", "edge_ocr", "run", "-c",
                                                       str(wroot / "c.toml")], stdout=fh, stderr=subprocess.STDOUT))
                assert all(wait_for(lambda lg=lg: "fleet worker connected" in lg.read_text(), 60) for lg in logs)
                start = time.perf_counter()
                answers = submit(config, images, wait=True, timeout_s=600)
                elapsed = time.perf_counter() - start
                assert len(answers) == len(images), (len(answers), len(images))
                results.append((count, elapsed))
                for proc in procs:
                    proc.terminate()
                    proc.wait(30)
            start = time.perf_counter()
            local = subprocess.run([sys.executable, "-m", "edge_ocr", "ocr", "--threads", "1", *map(str, images)],
                                   capture_output=True, text=True, check=True)
            local_s = time.perf_counter() - start
            assert local.stdout
    base = results[0][1]
    print("fleet scaling · %d jobs (eval-dev SROIE line crops) · %s, %d CPUs" % (
        len(images), os.uname().machine, os.cpu_count() or 0))
    print("\n| workers | wall s | jobs/s | throughput vs 1 worker |\n|---|---|---|---|")
    for count, elapsed in results:
        print("| %d | %.1f | %.1f | %.2fx |" % (count, elapsed, len(images) / elapsed, base / elapsed))
    print("\nlocal `edge-ocr ocr --threads 1` of the same images: %.1f s in one process, engine load included"
          " (%.1f ms per image); per-job overhead of the fleet at 1 worker: %+.1f ms" % (
              local_s, local_s * 1000 / len(images), (base - local_s) * 1000 / len(images)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
