"""Peak memory of real processes on real images (issue #12): bounds that fail on a regression.

Each bound is the peak RSS less the file-backed RSS (VmHWM - RssFile of the child) measured when it
was set, plus a margin;
2 threads, the default pack, x86_64, and ``memory = "low"``: with glibc's default mmap threshold
the peak depends on how much freed heap glibc happens to keep, which moved the same run by 40-90 MB
between a quiet machine and a CI run (12 MP photo 246 -> 292 MB, the daemon 202 -> 294 MB), so
the default allocator cannot be gated; with the threshold fixed, big buffers go back at once and
the peak is what the engine really holds. They are no targets: issue #12 wants 150 MB on
pages, 120 MB on crops and 160 MB for a daemon after 1,000 files (docs/memory.md). Wall-clock time
is never asserted (the machine is shared).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest

from tests.broker import wait_until
from tests.helpers import Daemon, line_samples, write_config

pytestmark = pytest.mark.slow

MB = 1024 * 1024
# Measured peak RSS less file-backed RSS in MB (2 threads, memory = "low", x86_64; the higher of two
# runs, in this checkout and in a fresh clone) and the margin allowed above it.
PHOTO_12MP_MB = 159.5  # a receipt upscaled to 3000x4000 (36 MB decoded), 27 lines
# The Chinese pages: the book page (2756x1969, 64 lines found) and the report page with the highest
# peak of eval-dev (1654x2339, 59 lines; 146 lines on the densest page peak at 305 MB).
ZH_PAGES_MB = {"zhpage_8c1a908c02f6.jpg": 175.0, "zhpage_8da5496bf574.jpg": 186.4}
# The dense page class (#12's several hundred lines): the two-column report page 2x2 (3310x4680,
# 583 lines read), which takes the second detection pass for small text, in strips.
DENSE_PAGE_MB = 191.3
CROPS_MB = 126.3  # 250 crops: 50 of each English source and 50 Chinese book lines
MARGIN = 0.10  # 10 %: two runs moved 0-12 %
# The daemon: 300 files in two rounds; RSS after the second may exceed RSS after the first by this.
DAEMON_GROWTH_MB = 15.0
# 94.7 before a Chinese page's lines were drafted; the drafter's own 1-thread session (PP-OCRv6 tiny,
# ~4 MB) and its buffers: 101.4 and 101.7 MB in this checkout, 104.2 MB in a CI run (2026-12-03).
DAEMON_END_MB = 104.2

# Runs edge-ocr in this child and, at its exit, reports its peak RSS (VmHWM) and the file-backed part of
# its RSS (RssFile: shared libraries, mapped files). The bound is on their difference, the peak of the
# memory the process allocated: how many library pages are resident depends on the page cache (a fresh
# checkout's libraries measured 36 MB more file-backed RSS than the same files long on disk).
_MEASURE = ("import atexit, runpy, sys\n"
            "def report():\n"
            "    status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
            "    kb = lambda key: int(status[key].split()[0])\n"
            "    sys.stderr.write('memory hwm_kb %d file_kb %d\\n' % (kb('VmHWM'), kb('RssFile')))\n"
            "atexit.register(report)\n"
            "sys.argv = ['edge-ocr'] + sys.argv[1:]\n"
            "runpy.run_module('edge_ocr', run_name='__main__')\n")


def _ocr_peak_mb(*args: str) -> tuple[float, list[dict]]:
    """Peak RSS less file-backed RSS, in MB, of ``edge-ocr ocr --json --threads 2 --memory low ARGS``
    and its results."""
    run = subprocess.run([sys.executable, "-c", _MEASURE, "ocr", "--json", "--threads", "2", "--memory", "low", *args],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    _, _, hwm_kb, _, file_kb = run.stderr.strip().splitlines()[-1].split()
    return (int(hwm_kb) - int(file_kb)) / 1024, [json.loads(line) for line in run.stdout.splitlines()]


def _bound(measured_mb: float) -> float:
    return measured_mb * (1 + MARGIN)


def test_a_12_megapixel_photo_stays_under_its_measured_peak(eval_dev, tmp_path):
    page = cv2.imread(str(eval_dev / "pages" / "sroie_062.jpg"))
    photo = tmp_path / "photo-12mp.jpg"
    cv2.imwrite(str(photo), cv2.resize(page, (3000, 4000), interpolation=cv2.INTER_CUBIC),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    peak_mb, results = _ocr_peak_mb(str(photo))
    print("12 MP photo: peak %.1f MB, %d lines" % (peak_mb, len(results[0]["lines"])))
    assert len(results[0]["lines"]) > 20
    assert peak_mb <= _bound(PHOTO_12MP_MB), peak_mb


@pytest.mark.parametrize("page", sorted(ZH_PAGES_MB))
def test_a_chinese_page_stays_under_its_measured_peak(eval_dev, page):
    peak_mb, results = _ocr_peak_mb(str(eval_dev / "zh" / "pages" / page))
    print("zh page %s: peak %.1f MB, %d lines" % (page, peak_mb, len(results[0]["lines"])))
    assert len(results[0]["lines"]) > 40
    assert peak_mb <= _bound(ZH_PAGES_MB[page]), peak_mb


def test_a_dense_page_of_several_hundred_lines_stays_under_its_measured_peak(eval_dev, tmp_path):
    report = cv2.imread(str(eval_dev / "zh" / "pages" / "zhpage_c600fccdb4e4.jpg"))
    page = tmp_path / "dense.jpg"
    cv2.imwrite(str(page), np.vstack([np.hstack([report, report])] * 2), [cv2.IMWRITE_JPEG_QUALITY, 90])
    peak_mb, results = _ocr_peak_mb(str(page))
    print("dense page: peak %.1f MB, %d lines" % (peak_mb, len(results[0]["lines"])))
    assert len(results[0]["lines"]) > 450
    assert "detect_small_text" in results[0]["timing_ms"]  # many lines, each a crop, and twice the detection
    assert peak_mb <= _bound(DENSE_PAGE_MB), peak_mb


def test_single_crops_stay_under_their_measured_peak(eval_dev):
    crops = [path for source in ("IIIT5K-test", "ICDAR2015-word-test", "SROIE2019-task1",
                                 "LPRNet_Pytorch-test-plates") for path, _ in line_samples(eval_dev, source, 50)]
    crops += [path for path, _ in line_samples(eval_dev, "omnidocbench:book", 50, "zh/lines")]
    peak_mb, results = _ocr_peak_mb("--no-det", *map(str, crops))
    print("%d crops: peak %.1f MB" % (len(crops), peak_mb))
    assert len(results) == len(crops) == 250
    assert peak_mb <= _bound(CROPS_MB), peak_mb


def _mixed_files(eval_dev: Path) -> tuple[list[Path], list[Path]]:
    """300 distinct eval-dev files in two rounds, a page then four crops: the warm-up round (100)
    has the biggest pages (every zh page, the first receipts and photos), the second (200) the rest.
    Distinct bytes: a file dropped again would reuse its stored result (``reuse_results``)."""
    zh = sorted((eval_dev / "zh" / "pages").glob("*.jpg"))
    sroie, ic15 = sorted((eval_dev / "pages").glob("sroie_*.jpg")), sorted((eval_dev / "pages").glob("ic15_*.jpg"))
    lines = sorted((eval_dev / "lines").glob("*.png")) + sorted((eval_dev / "lines").glob("*.jpg"))
    lines = lines[::len(lines) // 240][:240]
    first_pages, second_pages = zh + sroie[:8] + ic15[:7], sroie[8:30] + ic15[7:25]

    def interleave(pages: list[Path], crops: list[Path]) -> list[Path]:
        return [f for i, page in enumerate(pages) for f in [page, *crops[4 * i : 4 * i + 4]]]

    return interleave(first_pages, lines[:80]), interleave(second_pages, lines[80:])


def test_a_long_drop_folder_run_does_not_grow(eval_dev, tmp_path):
    config = write_config(tmp_path, None)
    config.write_text(config.read_text().replace("[engine]\n", '[engine]\nmemory = "low"\n', 1))
    daemon = Daemon(config).start()
    process = psutil.Process(daemon.proc.pid)
    inbox, done = tmp_path / "inbox", tmp_path / "done"

    def run_round(files: list[Path], start: int) -> float:
        for i, path in enumerate(files, start):
            shutil.copyfile(path, inbox / (".%05d%s.part" % (i, path.suffix)))
            os.rename(inbox / (".%05d%s.part" % (i, path.suffix)), inbox / ("%05d%s" % (i, path.suffix)))
        total = start + len(files)
        assert wait_until(lambda: _count(done) >= total, 600, 0.5), (_count(done), total, daemon.text()[-2000:])
        memory = process.memory_info()
        return (memory.rss - memory.shared) / MB  # less file-backed pages, as _MEASURE does

    first, second = _mixed_files(eval_dev)
    assert (len(first), len(second)) == (100, 200)
    warm_mb = run_round(first, 0)
    end_mb = run_round(second, len(first))
    assert daemon.terminate() == 0
    print("daemon: RSS after 100 files %.1f MB, after 300 files %.1f MB" % (warm_mb, end_mb))
    assert not any((tmp_path / "failed").iterdir())
    assert end_mb <= warm_mb + DAEMON_GROWTH_MB, (warm_mb, end_mb)
    assert end_mb <= _bound(DAEMON_END_MB), end_mb


def _count(directory: Path) -> int:
    return sum(1 for p in directory.iterdir() if p.suffix in (".png", ".jpg")) if directory.is_dir() else 0
