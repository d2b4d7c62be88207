"""Soak: one daemon reads 10,000 camera frames (a looping video whose meter reading changes
every 25 frames) while 2,000 real eval-dev line crops go through its drop folder. After a
warm-up, its RSS grows by under 5 % and it holds no more threads or file descriptors at the
end than at the warm-up mark, all read from /proc.

glibc's default allocator keeps freed large blocks in the heap and moves its mmap threshold up
as they are freed, so the default daemon's RSS wanders between 165 and 205 MB on this load,
with no trend: a 5 % bound on it would test the allocator. The soak therefore runs the daemon
with ``MALLOC_MMAP_THRESHOLD_=262144`` (blocks of 256 KB and more are mapped and unmapped),
where the same load holds at 154-156 MB: growth there is memory the daemon really keeps
(``engine.memory = "low"`` sets the same at 1 MB, a cheaper point of the same trade). Each
mark is the floor of a window of samples (one per 100 files), so a spike in flight is not
counted."""

from __future__ import annotations

import json
import os
import random
import re
import time
import urllib.request
from pathlib import Path

from tests.frames import BOX, text_frame, write_video
from tests.helpers import EVAL_DEV, Daemon, drop, wait_until

FRAMES = 10_000
FILES = 2_000
BATCH = 100
WARMUP_FILES = 500  # every kind of crop seen (shuffled): the engine's buffers and the heap settle by then
WINDOW = 5  # batches per mark


def _proc_once(pid: int) -> dict[str, int]:
    status = Path("/proc/%d/status" % pid).read_text()
    rss_kb = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))
    return {"rss_kb": rss_kb, "threads": len(os.listdir("/proc/%d/task" % pid)),
            "fds": len(os.listdir("/proc/%d/fd" % pid))}


def _proc(pid: int) -> dict[str, int]:
    """The least of 10 samples over 1 s: a frame being read holds an fd and a buffer for a moment."""
    samples = []
    for _ in range(10):
        samples.append(_proc_once(pid))
        time.sleep(0.1)
    return {key: min(s[key] for s in samples) for key in samples[0]}


def _stats(base: str) -> dict[str, float]:
    with urllib.request.urlopen(base + "/api/stats", timeout=30) as response:
        return json.loads(response.read())


def _crops() -> list[Path]:
    """The eval-dev line crops, Latin and Chinese (2,163 distinct images)."""
    crops = []
    for folder in (EVAL_DEV / "lines", EVAL_DEV / "zh" / "lines"):
        rows = (folder / "labels.tsv").read_text(encoding="utf-8").splitlines()
        crops += [folder / row.split("\t")[0] for row in rows if row]
    random.Random(7).shuffle(crops)  # sources interleaved: warm-up sees every kind of crop
    return crops[:FILES]


def test_10000_frames_and_2000_files_hold_memory_threads_and_fds_flat(eval_dev, tmp_path, report):
    crops = _crops()
    assert len(crops) == FILES
    readings = ["%d.%d" % (i, i) for i in range(1, 5)]
    video = write_video(tmp_path / "meter.avi", [text_frame(r) for r in readings for _ in range(25)], fps=1000)
    config = tmp_path / "edge-ocr.toml"
    config.write_text(
        '[engine]\nthreads = 2\n\n[http]\nbind = "127.0.0.1:0"\n\n[mqtt]\nenabled = false\n\n'
        '[[sources]]\nname = "inbox"\npath = "inbox"\ndone_dir = "done"\nfailed_dir = "failed"\n'
        "stability_delay = 0.05\ndelete_original = true\n\n"
        '[[sources]]\nname = "meter"\ntype = "camera"\ndevice = "%s"\ninterval = 0.001\nloop = true\n'
        'rois = [ { name = "reading", box = [%d, %d, %d, %d], allowed_chars = "0123456789." } ]\n' % (video, *BOX))
    daemon = Daemon(config, env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="262144")).start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    base = re.search(r"http listening url=(http://127\.0\.0\.1:\d+)", daemon.text()).group(1)
    done = tmp_path / "done"
    series: list[dict[str, int]] = []
    for start in range(0, FILES, BATCH):
        for i, crop in enumerate(crops[start:start + BATCH], start):
            drop(crop, tmp_path / "inbox", "s%04d%s" % (i, crop.suffix))
        assert wait_until(lambda s=start: len(list(done.glob("*.json"))) >= s + BATCH, 300)
        series.append(_proc(pid))
    assert wait_until(lambda: _stats(base)["frames_total"] >= FRAMES, 600), _stats(base)
    assert wait_until(lambda: _stats(base)["files_done_total"] == FILES, 60), _stats(base)  # counted after the JSON
    stats = _stats(base)
    series.append(_proc(pid))
    first = WARMUP_FILES // BATCH
    warm = {key: min(s[key] for s in series[first:first + WINDOW]) for key in series[0]}
    end = {key: min(s[key] for s in series[-WINDOW:]) for key in series[0]}
    growth = (end["rss_kb"] - warm["rss_kb"]) / warm["rss_kb"]
    (tmp_path / "proc-series.json").write_text(json.dumps(series))  # for a failure's post-mortem
    assert len(list(done.glob("*.json"))) == FILES and not list((tmp_path / "failed").glob("*"))
    assert stats["files_done_total"] == FILES and stats["results_error_total"] == 0
    assert growth < 0.05, (warm, end, "RSS MB per 100 files:", [s["rss_kb"] // 1024 for s in series])
    # A leak grows past anything seen after warm-up; a thread that comes and goes (one was there
    # in 19 of 21 marks of a CI run, 1 s each) does not.
    seen = {key: max(s[key] for s in series[first:first + WINDOW]) for key in ("threads", "fds")}
    assert end["threads"] <= seen["threads"], (warm, end, [s["threads"] for s in series])
    assert end["fds"] <= seen["fds"], (warm, end, [s["fds"] for s in series])
    assert daemon.terminate(30) == 0
    report("soak: %d camera frames (%d unchanged, skipped; %d dropped at a full queue) and %d folder files" % (
        stats["frames_total"], stats["frames_skipped_total"], stats["frames_dropped_total"], FILES), runs=1,
        inputs=int(stats["frames_total"]) + FILES, lost=0, duplicated=0,
        errors="RSS %+.1f %% after warm-up (%d -> %d MB), threads %d -> %d, fds %d -> %d" % (
            growth * 100, warm["rss_kb"] // 1024, end["rss_kb"] // 1024, warm["threads"], end["threads"],
            warm["fds"], end["fds"]))
