"""Disk full: done/, failed/ and the MQTT spool on a 4 MB tmpfs made by the test (root), filled
to the last byte while files keep arriving. The daemon keeps running and says why, every file
waits, in .processing/ once claimed or in the folder itself (claims stop at the first stalled result),
and when space returns every result is written and published."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.broker import Collector
from tests.helpers import PREFIX, Daemon, drop, line_samples, wait_until, write_config

GOOD, BAD = 10, 2


def _mount_tmpfs(path: Path, size: str) -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the disk-full test mounts a tmpfs: run as root")
        pytest.skip("the disk-full test mounts a tmpfs: run as root")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", str(path)], check=True,
                   timeout=30)


def _fill(disk: Path) -> Path:
    """Write a filler file until the filesystem refuses another byte."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def _originals(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_file() and p.suffix != ".json"
                  and not p.name.startswith("."))


@pytest.mark.broker
@pytest.mark.parametrize("on_disk", ["done/, failed/ and the spool", "done/ and failed/ (spool elsewhere)"])
def test_a_full_disk_keeps_every_file_and_recovers_when_space_returns(eval_dev, tmp_path, mosquitto, report, on_disk):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "4m")
    try:
        config = write_config(tmp_path, mosquitto, "publish_every = true\n")
        text = config.read_text().replace('done_dir = "done"', 'done_dir = "disk/done"').replace(
            'failed_dir = "failed"', 'failed_dir = "disk/failed"')
        if "spool" in on_disk.split("(")[0]:
            text = text.replace('spool_dir = "spool"', 'spool_dir = "disk/spool"')
        config.write_text(text)
        sub = Collector(mosquitto, [PREFIX + "/inbox/event"], client_id="disk-sub", persistent=True)
        daemon = Daemon(config).start()
        base = re.search(r"http listening url=(http://127\.0\.0\.1:\d+)", daemon.text()).group(1)
        filler = _fill(disk)
        names = ["g%02d.png" % i for i in range(GOOD)] + ["bad%d.png" % i for i in range(BAD)]
        for src, name in zip([p for p, _ in line_samples(eval_dev, "SROIE2019-task1", GOOD)], names):
            drop(src, tmp_path / "inbox", name)
        for name in names[GOOD:]:
            (tmp_path / "inbox" / name).write_bytes(b"\x89PNG\r\n\x1a\n not an image IEND\xaeB`\x82")
        processing = tmp_path / "inbox" / ".processing"
        assert wait_until(lambda: "cannot write result, file kept for retry" in daemon.text(), 60), daemon.text()
        # Each file is either claimed (and its result stalled) or still waiting in the folder: claims
        # stop at the first stall, even within the batch the folder listed at once.
        waiting = lambda: sorted(p.name for p in (tmp_path / "inbox").iterdir() if p.is_file())  # noqa: E731
        assert wait_until(lambda: sorted(_originals(processing) + waiting()) == sorted(names), 60), (
            _originals(processing), waiting())
        claimed = _originals(processing)
        def stalled() -> float:
            with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
                metrics = response.read().decode()
            return float(re.search(r"^edge_ocr_files_stalled_total (\S+)$", metrics, re.M).group(1))

        def ready() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=30) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        kept = lambda name: "kept for retry source=inbox file=%s error=" % name in daemon.text()  # noqa: E731
        assert wait_until(lambda: all(kept(name) for name in claimed), 60), daemon.text()[-4000:]  # each tried, kept
        # Files dropped while results cannot be written wait in the folder: neither claimed nor read.
        late = ["late%d.png" % i for i in range(2)]
        for src, name in zip([p for p, _ in line_samples(eval_dev, "IIIT5K-test", len(late))], late):
            drop(src, tmp_path / "inbox", name)
        assert wait_until(lambda: "new files wait in the folder until results can be written source=inbox" in
                          daemon.text(), 60), daemon.text()[-4000:]
        tries = stalled()
        assert wait_until(lambda: stalled() >= tries + len(claimed), 60)  # ... and tried again
        assert _originals(processing) == claimed and waiting() == sorted([*set(names) - set(claimed), *late])
        assert not any(name in daemon.text() for name in late)
        # one journal line a file, then one a retry round: it was two a file a round, for as long as it lasted
        assert daemon.text().count("cannot write result, file kept for retry") == len(claimed), daemon.text()[-4000:]
        assert "retrying stalled files source=inbox files=" in daemon.text()
        assert daemon.proc is not None and daemon.proc.poll() is None  # still running
        # not ready while results cannot be written: a monitor sees it, not only the journal
        status, body = ready()
        assert status == 503 and "source inbox offline" in body, body
        assert _originals(disk / "done") == [] and _originals(disk / "failed") == []
        filler.unlink()  # space returns
        accounted = lambda: sorted(_originals(disk / "done") + _originals(disk / "failed"))  # noqa: E731
        assert wait_until(lambda: accounted() == sorted(names + late), 180), accounted()
        assert "taking new files again source=inbox" in daemon.text()
        assert _originals(disk / "failed") == sorted(names[GOOD:])
        assert wait_until(lambda: ready()[0] == 200, 60), ready()
        for path in list((disk / "done").glob("*.json")) + list((disk / "failed").glob("*.json")):
            json.loads(path.read_text(encoding="utf-8"))  # none torn
        tries = int(stalled())
        topic = PREFIX + "/inbox/event"
        sub.wait(lambda ms: {json.loads(m.payload)["file"] for m in ms if m.topic == topic} >= set(names + late), 120)
        assert wait_until(lambda: not _originals(processing), 10), _originals(processing)  # deleted after the copy lands
        files = [json.loads(m.payload)["file"] for m in sub.on(topic)]
        resent = len(files) - len(set(files))  # a retried file is published again: at least once
        code = daemon.terminate()
        assert code == 0, daemon.text()[-6000:]  # the journal's last lines say why
        sub.close()
        report("disk full: %s on a full 4 MB tmpfs, then space returns" % on_disk, runs=1, inputs=len(names) + len(late),
               lost=0, duplicated="0 in done/; %d re-sent events" % resent,
               errors="%d tries kept for retry; %d refused to failed/" % (tries, BAD))
    finally:
        subprocess.run(["umount", "-l", str(disk)], timeout=30)
