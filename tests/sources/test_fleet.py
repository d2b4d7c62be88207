"""edge_ocr.sources.fleet and ``edge-ocr submit``: worker daemons sharing jobs through a real
Mosquitto 2 (MQTT 5 shared subscription, manual acknowledgement), with real eval-dev crops."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.broker import Mosquitto
from tests.helpers import Daemon, line_samples, wait_until, write_config

JOBS_TOPIC = "test/jobs"


def _worker_config(root: Path, broker: Mosquitto, index: int) -> Path:
    directory = root / ("worker%d" % index)
    directory.mkdir()
    config = write_config(directory, broker)
    config.write_text(config.read_text().replace('client_id = "edge-ocr-e2e"', 'client_id = "worker%d"' % index)
                      + '\n[fleet]\nenabled = true\njobs_topic = "%s"\nmax_inflight = 2\n' % JOBS_TOPIC)
    return config


def _start_workers(root: Path, broker: Mosquitto, count: int) -> tuple[list[Path], list[Daemon]]:
    """``count`` worker daemons, each subscribed to the jobs topic."""
    configs = [_worker_config(root, broker, i) for i in range(count)]
    workers = [Daemon(c).start() for c in configs]
    assert all(wait_until(lambda w=w: "fleet worker connected" in w.text(), 30) for w in workers)
    return configs, workers


def _submit(config: Path, images: list[Path], timeout_s: float = 240.0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge_ocr", "submit", "-c", str(config), "--wait", "--timeout",
                             str(timeout_s), *map(str, images)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _answers(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.broker
def test_three_workers_answer_300_jobs_each_once(eval_dev, tmp_path, mosquitto):
    images = [p for p, _ in line_samples(eval_dev, "SROIE2019-task1", 300)]
    configs, workers = _start_workers(tmp_path, mosquitto, 3)
    run = _submit(configs[0], images)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    answers = _answers(stdout)
    assert len(answers) == len({a["job_id"] for a in answers}) == len({str(p) for p in images})
    assert {a["file"] for a in answers} == {str(p) for p in images}
    assert all(a["source"] == "fleet" and a["status"] in ("ok", "low_confidence", "no_text") for a in answers)
    shares = Counter(a["worker"] for a in answers)
    assert set(shares) == {"worker%d-fleet" % i for i in range(3)}, shares  # the broker spread the work
    for worker in workers:
        assert worker.terminate() == 0


@pytest.mark.slow
@pytest.mark.broker
def test_a_worker_killed_mid_burst_and_restarted_loses_no_job(eval_dev, tmp_path, mosquitto):
    images = [p for p, _ in line_samples(eval_dev, "IIIT5K-test", 120)]
    configs, workers = _start_workers(tmp_path, mosquitto, 2)
    run = _submit(configs[0], images)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(run.stdout), name="test-submit-out")  # type: ignore[arg-type]
    reader.start()
    assert wait_until(lambda: len(lines) >= 30, 120)
    workers[1].kill()  # holds up to max_inflight unacknowledged jobs
    restarted = Daemon(configs[1]).start()  # same client id: the broker hands back its session
    reader.join(300)
    with run:  # closes its pipes
        assert run.wait(60) == 0, run.stderr.read() if run.stderr else ""
    answers = _answers("".join(lines))
    assert {a["file"] for a in answers} == {str(p) for p in images}
    assert len(answers) == len({a["job_id"] for a in answers})
    assert workers[0].terminate() == 0 and restarted.terminate() == 0


@pytest.mark.slow
@pytest.mark.broker
def test_a_worker_stopped_for_good_leaves_the_group_so_no_job_waits_for_it(eval_dev, tmp_path, mosquitto):
    """Mosquitto routes a shared subscription's messages to offline persistent sessions too: a
    worker that stopped without leaving would hold its share of new jobs until it came back."""
    images = [p for p, _ in line_samples(eval_dev, "SROIE2019-task1", 40)]
    configs, workers = _start_workers(tmp_path, mosquitto, 2)
    assert workers[1].terminate() == 0  # stopped for good (SIGTERM: systemctl stop)
    run = _submit(configs[0], images, timeout_s=60)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    answers = _answers(stdout)
    assert {a["file"] for a in answers} == {str(p) for p in images}
    assert {a["worker"] for a in answers} == {"worker0-fleet"}
    assert workers[0].terminate() == 0


@pytest.mark.slow
@pytest.mark.broker
def test_a_broker_restart_mid_burst_loses_no_job(eval_dev, tmp_path, mosquitto):
    """Mosquitto with persistence, stopped by SIGTERM (it saves its sessions and queued messages)
    while jobs are queued, held and answered, then started again on the same port."""
    images = [p for p, _ in line_samples(eval_dev, "IIIT5K-test", 100)]
    configs, workers = _start_workers(tmp_path, mosquitto, 2)
    run = _submit(configs[0], images, timeout_s=120)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(run.stdout), name="test-submit-out")  # type: ignore[arg-type]
    reader.start()
    assert wait_until(lambda: len(lines) >= 20, 120)
    mosquitto.restart()
    answered_before = len(lines)
    reader.join(300)
    with run:
        assert run.wait(60) == 0, run.stderr.read() if run.stderr else ""
    assert answered_before < len(images) - 20  # the restart came mid-burst
    answers = _answers("".join(lines))
    assert len(answers) == len({a["job_id"] for a in answers})
    assert {a["file"] for a in answers} == {str(p) for p in images}
    # the workers' sessions (subscription, held and queued jobs) came back from the broker's disk
    assert all("session_present=True" in w.text() for w in workers)
    assert all(w.terminate() == 0 for w in workers)
