"""Process faults: 50 runs of the daemon killed with SIGKILL at seeded random moments, most of
them exactly mid-write (crash_run.py): a result JSON or an original renamed into done/ or
failed/, a spool message, a claim into .processing/. Then one clean run. Every input ends
exactly once in done/ or failed/, no JSON anywhere is truncated, no temp file is left, and
the spool drains. Also: SIGSTOP/SIGCONT mid-burst."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from edge_ocr.sinks.spool import Spool
from tests.broker import Collector
from tests.helpers import PREFIX, Daemon, drop, line_samples, wait_until, write_config

RUNS = 50
PER_RUN = 4  # new files dropped before each run
SEED = 20261201
CRASH_RUN = Path(__file__).with_name("crash_run.py")
SITES = [  # (audit event, path fragment): where the kill lands
    ("os.rename", "/done/"),  # a result JSON or an original, just before its rename into done/
    ("os.rename", "/failed/"),
    ("os.rename", "/.processing/"),  # just before a claim
    ("os.rename", "/spool/"),  # a spool message written, not yet renamed
    ("open", "/done/."),  # a result's temp file about to be created
    ("open", "/spool/."),
    ("none", ""),  # from outside, at a random moment
]


def originals(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file() and p.suffix != ".json"
                  and not p.name.startswith("."))


def _bad(path: Path, index: int) -> None:
    """Every tenth input is broken, so failed/ is exercised too."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n broken %d IEND\xaeB`\x82" % index)


@pytest.mark.broker
def test_fifty_kill_9_runs_leave_every_input_exactly_once_and_no_torn_file(eval_dev, tmp_path, mosquitto, report):
    rng = random.Random(SEED)
    samples = [p for p, _ in line_samples(eval_dev, "IIIT5K-test", RUNS * PER_RUN)]
    config = write_config(tmp_path, mosquitto, "publish_every = true\n")
    sub = Collector(mosquitto, [PREFIX + "/inbox/event"], client_id="kill-sub", persistent=True)
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    names: list[str] = []
    hits: Counter[str] = Counter()
    for run in range(RUNS):
        for k in range(PER_RUN):
            index = run * PER_RUN + k
            name = "k%03d.png" % index
            if index % 10 == 9:
                _bad(inbox / name, index)
            else:
                drop(samples[index], inbox, name)
            names.append(name)
        event, needle = SITES[rng.randrange(len(SITES))]
        log = (tmp_path / ("crash-%02d.log" % run)).open("wb")
        proc = subprocess.Popen([sys.executable, str(CRASH_RUN), event, needle, str(rng.randint(1, 4)), str(config)],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            proc.wait(rng.uniform(2.0, 6.0))  # start-up is ~1.5 s; most hooks fire soon after
            hit = "%s %s" % (event, needle) if proc.returncode == -signal.SIGKILL else "outside, random time"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            hit = "outside, random time"
        log.close()
        hits[hit] += 1
    final = Daemon(config).start()
    expected = sorted(names)

    def accounted() -> list[str]:
        return sorted(originals(tmp_path / "done") + originals(tmp_path / "failed"))

    assert wait_until(lambda: accounted() == expected, 300), (len(accounted()), len(expected))
    done, failed = originals(tmp_path / "done"), originals(tmp_path / "failed")
    assert not set(done) & set(failed)  # exactly once
    assert failed == sorted(n for i, n in enumerate(names) if i % 10 == 9)
    for name in done:
        assert json.loads((tmp_path / "done" / (name[:-4] + ".json")).read_text())["file"] == name
    for name in failed:
        assert json.loads((tmp_path / "failed" / (name[:-4] + ".error.json")).read_text())["error"]["code"]
    torn = []
    for path in tmp_path.rglob("*.json"):
        if "mosquitto" in path.parts:
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            torn.append(str(path))
    assert torn == []
    assert not list((inbox / ".processing").iterdir()) and originals(inbox) == []
    for directory in (tmp_path / "done", tmp_path / "failed", tmp_path / "spool", inbox / ".cache"):
        # Interrupted writes are cleaned up on start; a live one (the last result's reuse entry) goes at once.
        assert wait_until(lambda d=directory: not list(d.glob(".*.tmp")), 10), directory
    assert wait_until(lambda: len(Spool(tmp_path / "spool", 10_000)) == 0, 60)  # intact, and drained
    topic = PREFIX + "/inbox/event"
    # Results go to the spool before the file moves to done/: every input's event got out.
    sub.wait(lambda ms: {json.loads(m.payload)["file"] for m in ms if m.topic == topic} >= set(names), 120)
    events = [json.loads(m.payload) for m in sub.on(topic)]
    assert final.terminate() == 0
    sub.close()
    # A kill between the spool append and the move into done/ re-runs the file on restart: a
    # second result (a new id) for the same file is at-least-once delivery, as documented.
    repeats = sum(c - 1 for c in Counter(e["file"] for e in events).values())
    report("kill -9 at seeded moments (%s), then a clean run" % ", ".join(
        "%s: %d" % kv for kv in sorted(hits.items())), runs=RUNS, inputs=len(names), lost=len(set(names) - set(
            done) - set(failed)), duplicated="0 in done/; %d re-sent events" % repeats,
        errors="%d bad files in failed/ with their reason" % len(failed))


def test_a_file_whose_reading_ends_the_daemon_twice_goes_to_failed_not_round_again(eval_dev, tmp_path, report):
    """A photo whose reading ends the daemon (the guard's hard limit, the kernel's MemoryMax: a kill)
    was resumed from .processing/ at every start, for ever. Here it was being read at a kill (as
    if), is resumed and killed while read at two starts: the third puts it in failed/ with why."""
    import cv2

    config = write_config(tmp_path, None)
    processing = tmp_path / "inbox" / ".processing"
    processing.mkdir(parents=True)
    receipt = cv2.imread(str(eval_dev / "pages" / "sroie_621.jpg"))
    big = cv2.resize(receipt, None, fx=3000 / receipt.shape[0], fy=3000 / receipt.shape[0])  # a long read
    cv2.imwrite(str(processing / "huge.jpg"), big)
    ledger = processing / ".resumed.json"

    def counted() -> int:
        return json.loads(ledger.read_text())["huge.jpg"][0] if ledger.exists() else 0

    for count in (1, 2):
        killed = Daemon(config).start(ready=False)
        assert wait_until(lambda c=count: counted() == c, 60, step_s=0.005), killed.text()  # its reading began
        killed.kill()
        assert (processing / "huge.jpg").exists() and counted() == count
    second = Daemon(config).start()
    assert wait_until(lambda: originals(tmp_path / "failed") == ["huge.jpg"], 60), second.text()
    error = json.loads((tmp_path / "failed" / "huge.error.json").read_text())
    assert "read again after 2 restarts, its reading was cut short each time" in error["reason"]
    assert error["error"]["code"] == "source"
    assert second.metric("jobs_total") == 0  # not read a third time
    assert not ledger.exists()
    drop(eval_dev / "pages" / "sroie_621.jpg", tmp_path / "inbox", "next.jpg")  # and the folder goes on
    assert wait_until(lambda: originals(tmp_path / "done") == ["next.jpg"], 60)
    assert second.terminate() == 0
    report("kill -9 while a resumed file is read, at two starts (as the guard's hard limit or MemoryMax would)",
           runs=3, inputs=2, lost=0, duplicated=0, errors="1 in failed/ with its reason, not read a third time")


def test_sigstop_then_sigcont_mid_burst_loses_nothing(eval_dev, tmp_path, report):
    samples = [p for p, _ in line_samples(eval_dev, "SROIE2019-task1", 60)]
    daemon = Daemon(write_config(tmp_path, None)).start()
    names = ["s%03d.png" % i for i in range(len(samples))]
    for src, name in zip(samples, names):
        drop(src, tmp_path / "inbox", name)
    assert wait_until(lambda: len(originals(tmp_path / "done")) >= 5, 60)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGSTOP)
    time.sleep(3.0)  # frozen: timers and the folder keep their state
    daemon.proc.send_signal(signal.SIGCONT)
    assert wait_until(lambda: originals(tmp_path / "done") == sorted(names), 120)
    assert daemon.terminate() == 0
    report("SIGSTOP for 3 s, then SIGCONT, mid-burst", runs=1, inputs=len(names), lost=0, duplicated=0, errors=0)
