"""The memory guard in the running daemon: real images push a real process past its limits.

Limits are set relative to the RSS the daemon reports once its models are loaded, so the test
does not depend on this machine's numbers."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import psutil
import pytest

from tests.broker import wait_until
from tests.helpers import Daemon, drop, line_samples


def _config(tmp_path: Path, soft_mb: int, hard_mb: int) -> Path:
    config = tmp_path / "edge-ocr.toml"
    config.write_text(
        '[engine]\nthreads = 2\n\n[http]\nbind = "127.0.0.1:0"\n\n[mqtt]\nenabled = false\n\n'
        '[guard]\nrss_soft_mb = %d\nrss_hard_mb = %d\n\n[[sources]]\nname = "inbox"\ntype = "folder"\n'
        'path = "inbox"\ndone_dir = "done"\nfailed_dir = "failed"\nstability_delay = 0.1\n' % (soft_mb, hard_mb)
    )
    return config


def _guard(daemon: Daemon) -> dict:
    url = re.search(r"http listening url=(\S+)", daemon.text()).group(1)
    with urllib.request.urlopen(url + "/readyz", timeout=30) as response:
        return json.loads(response.read())["guard"]


def _watch_readyz(url: str, daemon: Daemon, seen: list[tuple[int, str]]) -> None:
    while daemon.proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
                seen.append((response.status, json.loads(response.read())["guard"]["level"]))
        except urllib.error.HTTPError as exc:
            seen.append((exc.code, json.loads(exc.read())["guard"]["level"]))
        except OSError:
            pass  # the port closed as the daemon stopped
        time.sleep(0.05)


@pytest.mark.slow
def test_soft_then_hard_limit_restart_loses_no_folder_file(eval_dev, tmp_path):
    # 1. The daemon's own RSS with its models loaded and nothing to do.
    daemon = Daemon(_config(tmp_path, 100_000, 200_000)).start()
    assert wait_until(lambda: _guard(daemon)["rss_mb"] > 0, 10)
    loaded_mb = _guard(daemon)["rss_mb"]
    assert daemon.terminate() == 0

    # 2. Soft below that: the guard degrades at once and the daemon keeps working.
    daemon = Daemon(_config(tmp_path, int(loaded_mb * 0.5), int(loaded_mb + 60))).start()
    assert wait_until(lambda: "memory guard soft limit" in daemon.text(), 15), daemon.text()
    assert _guard(daemon)["level"] == "soft"
    assert "det_limit_side=640" in daemon.text()  # the degraded step: smaller detection inputs
    assert "heap_trimmed=" in daemon.text() and "released_sessions=none" in daemon.text()  # none made yet
    (word, _), = line_samples(eval_dev, "IIIT5K-test", 1)
    drop(word, tmp_path / "inbox", "small.png")
    assert wait_until(lambda: (tmp_path / "done" / "small.json").exists(), 60), daemon.text()
    # A page over HTTP is detected at the same smaller size as one from the folder, not at 960 px.
    # One after the other, and a scene photo: two pages at once could reach the hard limit already.
    photo = sorted((eval_dev / "pages").glob("ic15_*.jpg"))[2]
    url = re.search(r"http listening url=(\S+)", daemon.text()).group(1)
    request = urllib.request.Request(url + "/api/ocr", data=photo.read_bytes(), headers={"Content-Type": "image/jpeg"})
    with urllib.request.urlopen(request, timeout=120) as response:
        over_http = json.loads(response.read())
    drop(photo, tmp_path / "inbox", "photo.jpg")
    assert wait_until(lambda: (tmp_path / "done" / "photo.json").exists(), 120), daemon.text()
    from_folder = json.loads((tmp_path / "done" / "photo.json").read_text())
    assert over_http["lines"]
    assert [(line["box"], line["text"]) for line in over_http["lines"]] == [
        (line["box"], line["text"]) for line in from_folder["lines"]]

    # 3. A 7000x5000 photo (35 MP, under the 50 MP cap) holds ~100 MB of pixels while it is
    #    read: past the hard limit the daemon stops taking work and exits 3 for systemd.
    page = cv2.imread(str(next((eval_dev / "pages").glob("sroie_*.jpg"))))
    big = tmp_path / "big.jpg"
    cv2.imwrite(str(big), cv2.resize(page, (5000, 7000)), [cv2.IMWRITE_JPEG_QUALITY, 80])
    seen: list[tuple[int, str]] = []  # /readyz while the daemon reaches its hard level and stops
    watcher = threading.Thread(target=_watch_readyz, args=(url, daemon, seen), name="test-readyz")
    watcher.start()
    drop(big, tmp_path / "inbox", "big.jpg")
    for i in range(3):
        drop(word, tmp_path / "inbox", "after-%d.png" % i)
    assert daemon.proc.wait(120) == 3, daemon.text()
    watcher.join(30)
    assert "memory guard hard limit" in daemon.text()
    # Clients were told, not cut off: 503 with the hard level until the port closed.
    assert (503, "hard") in seen, seen

    # 4. Restarted (as systemd would) with room to work: every file ends in done/ exactly once.
    daemon = Daemon(_config(tmp_path, 100_000, 200_000)).start()
    names = ["small", "photo", "big", "after-0", "after-1", "after-2"]
    assert wait_until(lambda: all((tmp_path / "done" / (n + ".json")).exists() for n in names), 180), daemon.text()
    assert daemon.terminate() == 0
    done = sorted(p.name for p in (tmp_path / "done").iterdir())
    assert done == sorted([n + ".json" for n in names] + ["small.png", "photo.jpg", "big.jpg"]
                          + ["after-%d.png" % i for i in range(3)])
    assert not list((tmp_path / "inbox" / ".processing").iterdir())
    assert not (tmp_path / "failed").exists() or not list((tmp_path / "failed").iterdir())



@pytest.mark.slow
def test_an_idle_daemon_hands_the_free_heap_back(eval_dev, tmp_path):
    config = _config(tmp_path, 100_000, 200_000)
    config.write_text(config.read_text().replace("rss_hard_mb = 200000\n", "rss_hard_mb = 200000\nidle_trim_s = 3\n"))
    assert "idle_trim_s = 3" in config.read_text()
    daemon = Daemon(config).start()
    process = psutil.Process(daemon.proc.pid)
    assert wait_until(lambda: daemon.metric("heap_trims_total") == 1, 30), daemon.text()  # after loading
    pages = sorted((eval_dev / "pages").glob("sroie_*.jpg"))[:6]
    for page in pages:
        drop(page, tmp_path / "inbox", page.name)
    assert wait_until(lambda: all((tmp_path / "done" / (p.stem + ".json")).exists() for p in pages), 120), daemon.text()
    busy_mb = process.memory_info().rss / 2**20
    assert daemon.metric("heap_trims_total") == 1  # not while the pages were read
    # Receipts leave 60-130 MB of freed image buffers in glibc's heap (docs/memory.md).
    assert wait_until(lambda: daemon.metric("heap_trims_total") == 2, 30), daemon.text()
    idle_mb = process.memory_info().rss / 2**20
    assert idle_mb < busy_mb - 20, (busy_mb, idle_mb)
    assert daemon.terminate() == 0
