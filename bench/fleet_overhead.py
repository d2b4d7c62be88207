"""Where a fleet job's time goes, against a local OCR of the same image.

    .venv/bin/python bench/fleet_overhead.py --jobs 200

One worker (`[fleet]`, 1 engine thread, max_inflight 2) runs in this process with timestamps
around each step of a job: paho's receive (``on_message``), the hand-over to the pipeline, the
engine call, the answer (result JSON, ``publish``, the wait for its PUBACK) and the ack. The jobs
come from an ``edge-ocr submit --wait`` child process through a local Mosquitto. The same images
are then read by the same engine in a plain loop (what ``edge-ocr ocr`` does once loaded).

The pipeline thread is the worker's bottleneck, so the breakdown is of its time per job: each
step's mean, plus the time it waited for the next job; and, wherever it is waited for, the time
from an answer's publish to its PUBACK. Timings on a shared machine are noisy:
compare the shares, not the milliseconds. Dev-only: never imported by the daemon.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from fleet_scaling import EVAL_DEV, config_text, local_mosquitto, wait_for

from edge_ocr.app import App, build_engine
from edge_ocr.config import EngineConfig, load_config
from edge_ocr.sources import fleet

Marks = dict[str, dict[str, float]]  # job_id -> step -> perf_counter


def instrument(marks: Marks, lock: threading.Lock) -> None:
    """Wrap FleetWorker's steps (class attributes: this process's worker only)."""
    worker = fleet.FleetWorker
    on_message, take, answer, ack = worker._on_message, worker._take, worker._answer, worker._ack
    mid_job: dict[int, str] = {}

    def mark(job_id: str, step: str) -> None:
        with lock:
            marks[job_id].setdefault(step, time.perf_counter())

    def job_of(msg: Any) -> str:
        return dict(msg.properties.UserProperty)["job_id"]

    def timed_on_message(self: Any, client: Any, userdata: Any, msg: Any) -> None:
        mark(job_of(msg), "received")
        mid_job[msg.mid] = job_of(msg)
        on_message(self, client, userdata, msg)

    def timed_take(self: Any, msg: Any) -> None:
        mark(job_of(msg), "taken")
        take(self, msg)
        mark(job_of(msg), "queued")

    def timed_answer(self: Any, ticket: Any, result: Any) -> None:
        mark(ticket.job_id, "engine_done")
        answer(self, ticket, result)
        mark(ticket.job_id, "answered")

    def timed_ack(self: Any, mid: int) -> None:
        job_id = mid_job.get(mid, "")
        mark(job_id, "puback")
        ack(self, mid)
        mark(job_id, "acked")

    worker._on_message = timed_on_message  # type: ignore[method-assign]
    worker._take = timed_take  # type: ignore[method-assign]
    worker._answer = timed_answer  # type: ignore[method-assign]
    worker._ack = timed_ack  # type: ignore[method-assign]


def timed_engine_factory(calls: list[tuple[float, float]]):
    """The real engine, with the start and end of each call marked (jobs run in arrival order)."""

    def factory(cfg: EngineConfig):
        engine, model = build_engine(cfg)

        class Timed:
            def __call__(self, image: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                output = engine(image, **kwargs)
                ended = time.perf_counter()
                calls.append((started, ended))  # one pipeline thread: in the order jobs run
                return output

            def close(self) -> None:
                engine.close()

        return Timed(), model

    return factory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    rows = (EVAL_DEV / "lines" / "labels.tsv").read_text(encoding="utf-8").splitlines()
    images = [EVAL_DEV / "lines" / r.split("\t")[0] for r in rows if "\tSROIE" in r][: args.jobs]
    marks: Marks = defaultdict(dict)
    lock = threading.Lock()
    engine_calls: list[tuple[float, float]] = []
    instrument(marks, lock)
    with tempfile.TemporaryDirectory(prefix="edge-ocr-overhead.") as tmp:
        root = Path(tmp)
        app = None
        with local_mosquitto(root) as port:
            try:
                for name in ("worker", "client"):
                    (root / name).mkdir()
                    (root / name / "c.toml").write_text(config_text(port, "overhead-" + name, root / name))
                app = App(load_config(root / "worker" / "c.toml"), engine_factory=timed_engine_factory(engine_calls))
                app.start()
                assert wait_for(lambda: app.sources["fleet"].status.value == "online", 30)
                start = time.perf_counter()
                run = subprocess.run([sys.executable, "-m", "edge_ocr", "submit", "--wait", "-c",
                                      str(root / "client" / "c.toml"), *map(str, images)],
                                     capture_output=True, text=True, timeout=600)
                submit_s = time.perf_counter() - start
                assert run.returncode == 0, run.stderr
                local = local_loop(app, images)
            finally:
                if app is not None:
                    app.stop_event.set()
                    app.shutdown()
    report(marks, engine_calls, local, submit_s, len(images))
    return 0


def local_loop(app: App, images: list[Path]) -> list[float]:
    """The same engine on the same images, one after the other: ms per image (file read included)."""
    assert app.engine is not None
    times = []
    for path in images:
        started = time.perf_counter()
        app.engine(path.read_bytes())
        times.append((time.perf_counter() - started) * 1000)
    return times


def report(marks: Marks, spans: list[tuple[float, float]], local: list[float], submit_s: float, n: int) -> None:
    jobs = sorted((m for m in marks.values() if "acked" in m and "engine_done" in m), key=lambda m: m["engine_done"])
    # engine calls and answers pair up in order: one pipeline thread, jobs finish in the order they run
    for m, (started, ended) in zip(jobs, spans):
        m["engine_start"], m["engine_end"] = started, ended
    first, last = jobs[0]["received"], jobs[-1]["acked"]
    per_job = (last - first) * 1000 / len(jobs)

    def mean(a: str, b: str, among: list[dict[str, float]] = jobs) -> float:
        return statistics.fmean((m[b] - m[a]) * 1000 for m in among)

    waits = [(b["engine_start"] - a["answered"]) * 1000 for a, b in itertools.pairwise(jobs)]
    steps = [
        ("engine call (decode, detect, recognise)", mean("engine_start", "engine_end")),
        ("result to answer (Result, pipeline bookkeeping)", mean("engine_end", "engine_done")),
        ("answer (to_dict, json, publish; before the fix: and the wait for its PUBACK)",
         mean("engine_done", "answered")),
        ("idle: waiting for the next job", statistics.fmean(waits)),
    ]
    print("fleet overhead · %d jobs (eval-dev SROIE line crops) · 1 worker, 1 engine thread, max_inflight 2 · "
          "%s, %d CPUs" % (n, os.uname().machine, os.cpu_count() or 0))
    print("\nworker, first receive to last ack: %.1f ms per job; submit child process wall: %.1f ms per job "
          "(with its start-up)" % (per_job, submit_s * 1000 / n))
    print("same engine, same images, a plain loop: %.1f ms per image (median %.1f); worker / loop: %.2fx\n" % (
        statistics.fmean(local), statistics.median(local), per_job / statistics.fmean(local)))
    print("| step on the pipeline thread | mean ms per job | share of the job |\n|---|---|---|")
    for name, ms in steps:
        print("| %s | %.2f | %.0f %% |" % (name, ms, 100 * ms / per_job))
    print("\nanswer published → its PUBACK: mean %.2f ms, median %.2f ms. Off the pipeline thread: receive → "
          "queued for the engine %.1f ms, queued → engine start %.1f ms (jobs wait there while the engine is busy)" % (
              mean("engine_done", "puback"), statistics.median((m["puback"] - m["engine_done"]) * 1000 for m in jobs),
              mean("received", "queued"), mean("queued", "engine_start")))


if __name__ == "__main__":
    sys.exit(main())
