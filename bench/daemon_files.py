"""Dev only: the RSS of a real drop-folder daemon over many mixed eval-dev files (issue #12).

Pages (eval-dev and zh, in turn) are each followed by 8 line crops, copied into the folder one
by one (written as a dot-file, then renamed, as a camera or scanner would); every 100 files the
script waits for their results and samples the daemon's RSS. At the end it samples once more after
``--idle`` seconds without work (past ``guard.idle_trim_s``, ``--idle-trim``), then prints the peak
RSS (VmHWM) and how many files failed.

    .venv/bin/python bench/daemon_files.py --memory low --files 1000 [--idle-trim 10 --idle 15] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.broker import wait_until  # noqa: E402  (the tests' real-daemon helpers)
from tests.helpers import Daemon, write_config  # noqa: E402

EVAL_DEV = REPO.parent / "shared" / "eval-dev"
CROPS_PER_PAGE = 8


def mixed_files(count: int) -> list[Path]:
    """Each page followed by the next ``CROPS_PER_PAGE`` crops, cut at ``count`` files."""
    pages = sorted((EVAL_DEV / "zh" / "pages").glob("*.jpg")) + sorted((EVAL_DEV / "pages").glob("*.jpg"))
    crops = [p for folder in ("lines", "zh/lines") for p in sorted((EVAL_DEV / folder).iterdir())
             if p.suffix in (".png", ".jpg")]
    files: list[Path] = []
    for index, page in enumerate(pages):
        files += [page, *crops[index * CROPS_PER_PAGE:(index + 1) * CROPS_PER_PAGE]]
    return files[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--memory", choices=("default", "low"), default="low")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--idle-trim", type=float, default=10.0, help="guard.idle_trim_s (0 = never)")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds to wait idle before the last sample")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="daemon-files-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir, None)
    text = config.read_text().replace("[engine]\n", '[engine]\nmemory = "%s"\n' % args.memory, 1)
    config.write_text(text + "\n[guard]\nidle_trim_s = %g\n" % args.idle_trim)
    files = mixed_files(args.files)
    print("%d files (%s), memory = %s, idle_trim_s = %g" % (len(files), workdir, args.memory, args.idle_trim),
          flush=True)
    daemon = Daemon(config).start()
    process = psutil.Process(daemon.proc.pid)
    inbox, done = workdir / "inbox", workdir / "done"

    def finished() -> int:
        return sum(1 for p in done.iterdir() if p.suffix == ".json") if done.is_dir() else 0

    highest = 0.0
    for index, source in enumerate(files):
        partial = inbox / (".%05d%s.part" % (index, source.suffix))
        shutil.copyfile(source, partial)
        os.rename(partial, inbox / ("%05d%s" % (index, source.suffix)))
        if (index + 1) % 100 == 0 or index + 1 == len(files):
            wait_until(lambda n=index + 1: finished() >= n, 900, 0.2)
            rss = process.memory_info().rss / 2**20
            highest = max(highest, rss)
            trims = int(daemon.metric("heap_trims_total"))
            print("after %d files: RSS %.1f MB, idle trims %d" % (index + 1, rss, trims), flush=True)
    time.sleep(args.idle)
    rss, trims = process.memory_info().rss / 2**20, int(daemon.metric("heap_trims_total"))
    print("after %g s idle: RSS %.1f MB, idle trims %d" % (args.idle, rss, trims), flush=True)
    with open("/proc/%d/status" % daemon.proc.pid) as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    failed = workdir / "failed"
    print("highest sample %.1f MB, peak RSS (VmHWM) %.1f MB, failed %d" % (
        highest, peak_kb / 1024, sum(1 for p in failed.iterdir() if p.suffix != ".json") if failed.is_dir() else 0))
    return 0 if daemon.terminate() == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
