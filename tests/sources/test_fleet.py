"""edge_ocr.sources.fleet and ``edge-ocr submit``: worker daemons sharing jobs through a real
Mosquitto 2 (MQTT 5 shared subscription, manual acknowledgement), with real eval-dev crops."""

from __future__ import annotations

import json
import logging
import queue
import re
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_ocr.config import load_config
from edge_ocr.results import Job, Result, Status
from edge_ocr.sources.fleet import FleetWorker, _OptionError, _options
from edge_ocr.stats import Stats
from edge_ocr.submit import submit
from tests.broker import PASSWORD, USER, Collector, Mosquitto, free_port
from tests.helpers import PREFIX, Daemon, line_samples, wait_until, write_config

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


@pytest.mark.broker
def test_files_of_the_same_bytes_are_one_job_answered_for_each_file_and_no_answer_shows_another_jobs_text(
        eval_dev, tmp_path, mosquitto):
    (word, _), (other, _) = line_samples(eval_dev, "IIIT5K-test", 2)
    copies = [tmp_path / "scan-1.png", tmp_path / "scan-2.png"]  # a scanner's duplicate page
    for copy in copies:
        copy.write_bytes(word.read_bytes())
    configs, (worker,) = _start_workers(tmp_path, mosquitto, 1)
    run = _submit(configs[0], [other, *copies, copies[0]], timeout_s=60)  # scan-1 named twice: one file
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    answers = _answers(stdout)
    assert sorted(a["file"] for a in answers) == sorted(map(str, [other, *copies]))
    assert len({a["job_id"] for a in answers}) == 2  # the copies were read once
    assert all(a["previous_text"] is None and a["changed"] for a in answers)  # jobs are never compared
    notes = tmp_path / "notes.png"  # answered, as an error: exit 1, as `ocr` exits on such a file
    notes.write_bytes(b"just some text\n")
    errored = _submit(configs[0], [notes], timeout_s=60)
    stdout, stderr = errored.communicate(timeout=120)
    assert errored.returncode == 1, stderr
    assert [a["status"] for a in _answers(stdout)] == ["error"]
    bad = subprocess.run([sys.executable, "-m", "edge_ocr", "submit", "-c", str(configs[0]), "--wait", "--timeout",
                          "-3", str(word)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--timeout: expected seconds > 0" in bad.stderr
    assert worker.terminate() == 0
    # No worker left in the group: the broker drops the job (PUBACK "no matching subscribers"), and
    # submit says so at once instead of printing the job as sent (or waiting out --timeout).
    unheard = subprocess.run([sys.executable, "-m", "edge_ocr", "submit", "-c", str(configs[0]), str(word)],
                             capture_output=True, text=True, timeout=60)
    assert unheard.returncode == 1, unheard.stdout + unheard.stderr
    assert "1 of 1 job(s) not passed on by the broker: no worker is subscribed to %s" % JOBS_TOPIC in unheard.stderr
    assert unheard.stdout == ""
    # Several: publishing stops at the first refusal; every job is either refused or not sent.
    others = [tmp_path / ("other%d.png" % n) for n in range(20)]
    for n, path in enumerate(others):
        path.write_bytes(word.read_bytes() + bytes([n]))
    several = subprocess.run([sys.executable, "-m", "edge_ocr", "submit", "-c", str(configs[0]), *map(str, others)],
                             capture_output=True, text=True, timeout=60)
    told = re.search(r"(\d+) of 20 job\(s\) not passed on by the broker: no worker is subscribed to %s(?:; (\d+) not "
                     r"sent)?" % JOBS_TOPIC, several.stderr)
    assert several.returncode == 1 and told, several.stderr
    assert int(told.group(1)) + int(told.group(2) or 0) == 20
    # A password the broker refuses: said at once, as `fleet status` says it
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    config = configs[0].read_text()
    bad_login = tmp_path / "bad-login.toml"
    bad_login.write_text(re.sub(r'password_file = "[^"]*"', 'password_file = "%s"' % wrong, config))
    refused = subprocess.run([sys.executable, "-m", "edge_ocr", "submit", "-c", str(bad_login), "--wait",
                              "--timeout", "120", str(word)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "refused the connection" in refused.stderr, refused.stderr


@pytest.mark.slow
@pytest.mark.broker
def test_a_worker_killed_mid_burst_and_restarted_loses_no_job(eval_dev, tmp_path, mosquitto):
    images = [p for p, _ in line_samples(eval_dev, "IIIT5K-test", 120)]
    configs, workers = _start_workers(tmp_path, mosquitto, 2)
    restarted: list[Daemon] = []

    def kill_and_restart() -> None:
        workers[1].kill()  # holds up to max_inflight unacknowledged jobs
        restarted.append(Daemon(configs[1]).start())  # same client id: the broker hands back its session

    _, answers = _burst(configs[0], images, kill_and_restart, after=30, timeout_s=240)  # the restart reloads models
    assert {a["file"] for a in answers} == {str(p) for p in images}
    assert len(answers) == len({a["job_id"] for a in answers})
    assert workers[0].terminate() == 0 and restarted[0].terminate() == 0


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


def _burst(config: Path, images: list[Path], midway: Callable[[], object], after: int = 20,
           timeout_s: float = 120.0) -> tuple[int, list[dict]]:
    """Submit ``images`` and wait for every answer, calling ``midway`` once ``after`` are in;
    returns how many had come before it and all the answers."""
    run = _submit(config, images, timeout_s=timeout_s)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(run.stdout), name="test-submit-out")  # type: ignore[arg-type]
    reader.start()
    try:
        assert wait_until(lambda: len(lines) >= after, 120)
        midway()
    except BaseException:
        run.kill()  # no submitter left behind when the test fails here
        raise
    answered_before = len(lines)
    reader.join(300)
    with run:
        assert run.wait(60) == 0, run.stderr.read() if run.stderr else ""
    return answered_before, _answers("".join(lines))


@pytest.mark.slow
@pytest.mark.broker
def test_a_broker_restart_mid_burst_loses_no_job(eval_dev, tmp_path, mosquitto):
    """Mosquitto with persistence, stopped by SIGTERM (it saves its sessions and queued messages)
    while jobs are queued, held and answered, then started again on the same port."""
    images = [p for p, _ in line_samples(eval_dev, "IIIT5K-test", 100)]
    configs, workers = _start_workers(tmp_path, mosquitto, 2)
    answered_before, answers = _burst(configs[0], images, mosquitto.restart)
    assert answered_before < len(images) - 20  # the restart came mid-burst
    assert len(answers) == len({a["job_id"] for a in answers})
    assert {a["file"] for a in answers} == {str(p) for p in images}
    # the workers' sessions (subscription, held and queued jobs) came back from the broker's disk
    assert all("session_present=True" in w.text() for w in workers)
    assert all(w.terminate() == 0 for w in workers)


class _SlowPipeline:
    """The Submit seam of a pipeline with one engine thread: each job takes a moment, then its
    on_done. Records the most jobs handed over and not yet done at once."""

    def __init__(self, stop: threading.Event) -> None:
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.lock = threading.Lock()
        self.open = 0
        self.most_open = 0
        self.stop = stop
        self.thread = threading.Thread(target=self._run, name="test-pipeline", daemon=True)

    def __call__(self, job: Job) -> bool:
        with self.lock:
            self.open += 1
            self.most_open = max(self.most_open, self.open)
        self.jobs.put(job)
        return True

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                job = self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            self.stop.wait(0.005)  # the engine
            with self.lock:
                self.open -= 1
            assert job.on_done is not None
            job.on_done(Result("fleet", Status.NO_TEXT))


@pytest.mark.broker
def test_a_worker_hands_the_pipeline_at_most_max_inflight_jobs_whatever_the_broker_sends(tmp_path, mosquitto):
    """Mosquitto 2.0.11 sends more than Receive Maximum once jobs are acknowledged; the extra
    jobs wait in the worker's inbox, not in the pipeline."""
    config = load_config(_worker_config(tmp_path, mosquitto, 0))
    stop = threading.Event()
    pipeline = _SlowPipeline(stop)
    worker = FleetWorker(config.fleet, config.mqtt, pipeline, Stats())
    most_waiting = 0

    def watch(job: Job) -> bool:
        nonlocal most_waiting
        most_waiting = max(most_waiting, worker._inbox.qsize())  # what the broker sent beyond the hand-off
        return pipeline(job)

    worker.submit = watch
    thread = threading.Thread(target=worker.run, args=(stop,), name="source:fleet")
    thread.start()
    pipeline.thread.start()
    try:
        assert wait_until(lambda: worker.status.value == "online", 10)
        images = []
        for i in range(60):
            images.append(tmp_path / ("job%d.bin" % i))
            images[-1].write_bytes(b"job %d" % i)
        answers = submit(config, images, wait=True, timeout_s=60)
        assert len(answers) == 60 and all(a["worker"] == "worker0-fleet" for a in answers)
        assert pipeline.most_open <= config.fleet.max_inflight == 2
        assert most_waiting > 0  # the broker did send more than the worker handed on
        # counted at the broker's PUBACK for the answer, which may come after the answer itself
        assert wait_until(lambda: worker.stats.get("fleet_jobs_done_total") == 60, 10), worker.stats.get(
            "fleet_jobs_done_total")
    finally:
        stop.set()
        thread.join(10)
        pipeline.thread.join(10)


def _publish_job(broker: Mosquitto, topic: str, payload: bytes, response_topic: str, job_id: str,
                 **user: str) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="raw-%d" % free_port(), protocol=paho.MQTTv5)
    client.username_pw_set(USER, PASSWORD)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic
        props.UserProperty = [("job_id", job_id), *user.items()]
        client.publish(topic, payload, qos=1, properties=props).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.broker
def test_a_job_whose_response_topic_has_a_wildcard_or_lies_outside_the_answers_topic_is_dropped_counted_and_logged_once(
        eval_dev, tmp_path, mosquitto):
    """Mosquitto passes a wildcard on (MQTT 5 forbids it, no broker checks): no answer can go there.
    A topic outside fleet.answers_topic, such as the worker's own retained state (which Home
    Assistant shows), would be written with the worker's login: a forged reading. Each is dropped
    before any OCR, acknowledged, counted failed, logged in one line."""
    config = _worker_config(tmp_path, mosquitto, 0)
    config.write_text(config.read_text().replace("[mqtt]\n", "[mqtt]\nstats_interval = 1\n"))
    worker = Daemon(config).start()
    assert wait_until(lambda: "fleet worker connected" in worker.text(), 30)
    (image, _), = line_samples(eval_dev, "IIIT5K-test", 1)
    dropped = ("test/jobs/results/+", "test/#", PREFIX + "/inbox/state", "test/jobs/results2/x")
    states = Collector(mosquitto, [PREFIX + "/inbox/state"])
    for n, topic in enumerate(dropped):
        _publish_job(mosquitto, JOBS_TOPIC, image.read_bytes(), topic, "wild%d" % n)
    run = _submit(config, [image], timeout_s=60)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    watcher = Collector(mosquitto, [PREFIX + "/stats"])
    stats = next(s for s in map(json.loads, (m.payload for m in watcher.wait(lambda ms: any(
        json.loads(m.payload).get("fleet_jobs_done_total") == 1 for m in ms)))) if s["fleet_jobs_done_total"] == 1)
    watcher.close()
    assert (stats["fleet_jobs_taken_total"], stats["fleet_jobs_failed_total"]) == (5, 4)
    assert stats["jobs_total"] == 1  # no OCR for a job nobody can be answered about
    assert all(json.loads(m.payload)["source"] != "fleet" for m in states.messages)  # no answer as a state
    states.close()
    for n in range(len(dropped)):
        lines = [line for line in worker.text().splitlines() if "job_id=wild%d" % n in line]
        assert len(lines) == 1 and "dropped" in lines[0], lines
    assert worker.terminate() == 0


@pytest.mark.broker
def test_a_job_that_cannot_be_read_or_answered_never_stops_the_worker(eval_dev, tmp_path, mosquitto):
    """Two jobs that used to end the fleet for good, as each came back from the session at every
    start: rois nested 60,000 deep (a RecursionError ended the worker's thread), and a Response
    Topic of 250 levels (Mosquitto dropped the worker at each resend of the answer)."""
    config = _worker_config(tmp_path, mosquitto, 0)
    worker = Daemon(config).start()
    assert wait_until(lambda: "fleet worker connected" in worker.text(), 30)
    (image, _), = line_samples(eval_dev, "IIIT5K-test", 1)
    answers = Collector(mosquitto, ["test/jobs/results/#"])
    _publish_job(mosquitto, JOBS_TOPIC, image.read_bytes(), "test/jobs/results/deep", "nested", rois="[" * 60000)
    _publish_job(mosquitto, JOBS_TOPIC, image.read_bytes(), "x/" * 250, "levels")
    refused = json.loads(answers.wait_topic("test/jobs/results/deep")[0].payload)
    assert refused["job_id"] == "nested" and refused["error"]["code"] == "invalid_rois"
    run = _submit(config, [image], timeout_s=60)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert _answers(stdout)[0]["status"] == "ok"
    assert "fleet job dropped: response topic not usable or not under fleet.answers_topic job_id=levels" in worker.text()
    answers.close()
    assert worker.terminate() == 0


SUBMIT_PEAK = """
import resource, sys
from pathlib import Path
from edge_ocr.config import load_config
from edge_ocr.submit import submit
submit(load_config(Path(sys.argv[1])), sorted(Path(sys.argv[2]).iterdir()), wait=False, timeout_s=60)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.broker
def test_submit_holds_a_few_files_at_a_time_whatever_their_number(tmp_path, mosquitto):
    """paho keeps each job's bytes until the broker acknowledges it: published all at once, 200
    scans of 2 MB held 244 MB in `edge-ocr submit`. A few at a time now: 48 files of 2 MB peak
    within 24 MB of 2 files (measured: 10 MB more; all at once, 45 MB more)."""
    config = write_config(tmp_path, mosquitto)
    config.write_text(config.read_text() + '\n[fleet]\njobs_topic = "%s"\n' % JOBS_TOPIC)
    taker = Collector(mosquitto, [JOBS_TOPIC])  # a subscriber, so the broker passes the jobs on
    taker.client.on_message = lambda client, userdata, message: None  # their bytes dropped
    peaks = {}
    for count in (2, 48):
        folder = tmp_path / ("files%d" % count)
        folder.mkdir()
        for n in range(count):
            (folder / ("scan%02d.bin" % n)).write_bytes(n.to_bytes(2, "big") + bytes(2 * 1024 * 1024))
        run = subprocess.run([sys.executable, "-c", SUBMIT_PEAK, str(config), str(folder)], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        peaks[count] = int(run.stdout)
    taker.close()
    assert peaks[48] - peaks[2] < 24, peaks


@pytest.mark.slow
@pytest.mark.broker
def test_a_worker_stopped_mid_burst_hands_back_the_jobs_it_held_and_every_job_is_answered(eval_dev, tmp_path,
                                                                                        mosquitto):
    """Mosquitto 2.0.11 keeps the jobs a stopped worker held, and those it queued for its session,
    in that session: without the hand-back they waited for the worker to come back."""
    images = [p for p, _ in line_samples(eval_dev, "IIIT5K-test", 120)]
    configs, workers = _start_workers(tmp_path, mosquitto, 2)
    stopped: list[int] = []  # stopped for good (SIGTERM: systemctl stop)
    answered_before, answers = _burst(configs[0], images, lambda: stopped.append(workers[1].terminate()))
    # The stop came mid-burst: the worker held jobs when it stopped (its hand-back, below). How many
    # answers came before depends on the machine's speed, so no margin is asserted on it.
    assert stopped == [0] and answered_before < len(images)
    assert {a["file"] for a in answers} == {str(p) for p in images}
    handed = [line for line in workers[1].text().splitlines() if "fleet worker handed back" in line]
    assert len(handed) == 1 and "kept_in_session=0" in handed[0], handed
    assert int(handed[0].split("jobs=")[1].split()[0]) > 0  # it held jobs (inbox, pipeline) when stopped
    assert workers[0].terminate() == 0


README_BROKER = Path(__file__).resolve().parents[2] / "config" / "mosquitto"


def _device_config(directory: Path, broker: Mosquitto, user: str, fleet: bool) -> Path:
    """A daemon logged in as ``user`` (its topic_prefix edge-ocr/<user>) over the broker's TLS."""
    directory.mkdir()
    config = write_config(directory, broker, extra_mqtt='ca_file = "%s"\nstats_interval = 1\n' % broker.certs["ca.crt"])
    config.write_text(config.read_text().replace('username = "%s"' % USER, 'username = "%s"' % user)
                      .replace('topic_prefix = "%s"' % PREFIX, 'topic_prefix = "edge-ocr/%s"' % user)
                      + "\n[fleet]\nenabled = %s\n" % ("true" if fleet else "false"))
    return config


@pytest.mark.broker
def test_the_readme_broker_config_serves_a_fleet_and_an_answer_it_refuses_is_counted_failed_and_acknowledged(
        eval_dev, tmp_path, tmp_path_factory):
    """config/mosquitto/ (shown in the README as it is) run by Mosquitto 2.0.11: the ACL lets a
    worker take jobs and answer on edge-ocr/jobs/results/#, and nowhere else: an answer to
    another device's topic gets PUBACK 0x87; the job is counted failed and acknowledged, so the
    worker's session does not hand it back after a crash."""
    from edge_ocr.fleet_status import collect, read_devices
    from edge_ocr.mqtt_client import make_client
    from tests.broker import require_mosquitto

    require_mosquitto()
    conf, acl = (README_BROKER / "fleet.conf").read_text(), (README_BROKER / "acl").read_text()
    readme = (README_BROKER.parents[1] / "README.md").read_text()
    assert conf in readme and acl in readme  # the README shows both files as they are
    directory = tmp_path_factory.mktemp("mosquitto")
    (directory / "acl").write_text(acl)
    broker = Mosquitto(directory, conf.replace("listener 8883", "listener {port} 127.0.0.1")
                       .replace("/etc/mosquitto/", "{dir}/"), users=("gate-pi", "submitter"))
    broker.start()
    try:
        worker_config = _device_config(tmp_path / "gate-pi", broker, "gate-pi", fleet=True)
        # answers_topic wider than the ACL lets the worker write: the broker's refusal is under test
        # (by default the worker itself drops a job answered outside <jobs_topic>/results)
        worker_config.write_text(worker_config.read_text() + 'answers_topic = "edge-ocr"\n')
        submitter = load_config(_device_config(tmp_path / "submitter", broker, "submitter", fleet=False))
        worker = Daemon(worker_config).start()
        assert wait_until(lambda: "fleet worker connected" in worker.text(), 30)
        images = [p for p, _ in line_samples(eval_dev, "IIIT5K-test", 3)]

        def device() -> dict:  # as edge-ocr fleet status sees it, logged in as the submitter
            return next(asdict(d) for d in read_devices(collect(submitter.mqtt, "edge-ocr", 0.3), "edge-ocr")
                        if d.device == "gate-pi")

        assert submit(submitter, images[:1], wait=True, timeout_s=60)[0]["worker"] == "edge-ocr-e2e-fleet"
        raw = make_client(submitter.mqtt, "raw-submitter", mqtt5=True, will=False)
        raw.connect("127.0.0.1", broker.port)
        raw.loop_start()
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "edge-ocr/submitter/answers"  # the submitter's, not a worker's to write
        props.UserProperty = [("job_id", "refused")]
        raw.publish("edge-ocr/jobs", images[0].read_bytes(), qos=1, properties=props).wait_for_publish(10)
        raw.disconnect()
        raw.loop_stop()
        assert len(submit(submitter, images[1:2], wait=True, timeout_s=60)) == 1
        assert wait_until(lambda: device()["done"] == 2, 30)
        assert (device()["taken"], device()["failed"]) == (3, 1)
        refused = [line for line in worker.text().splitlines() if "answer refused" in line]
        assert len(refused) == 1 and "job_id=refused" in refused[0] and "Not authorized" in refused[0]

        worker.kill()  # had the refused job not been acknowledged, its session would hand it back now
        worker = Daemon(worker_config).start()
        assert len(submit(submitter, images[2:3], wait=True, timeout_s=60)) == 1
        assert wait_until(lambda: device()["done"] == 1, 30)  # the new process's stats
        assert (device()["taken"], device()["failed"], device()["redelivered"]) == (1, 0, 0)
        assert worker.terminate() == 0
    finally:
        broker.stop()



@pytest.mark.broker
def test_a_worker_is_online_once_the_broker_granted_its_subscription_never_when_refused(tmp_path, mosquitto, caplog):
    from paho.mqtt.reasoncodes import ReasonCode

    from edge_ocr.sources.base import SourceStatus

    caplog.set_level(logging.INFO, logger="edge_ocr.sources.fleet")
    config = load_config(_worker_config(tmp_path, mosquitto, 0))
    worker = FleetWorker(config.fleet, config.mqtt, lambda job: True, Stats())
    # A broker whose ACL refuses the shared subscription answers SUBACK 0x87 (Mosquitto 2.0.11
    # grants it and filters at delivery instead, so the refusal is handed in as paho would).
    worker._on_subscribe(None, None, 1, [ReasonCode(PacketTypes.SUBACK, "Not authorized")], None)
    assert worker.status is SourceStatus.OFFLINE
    assert "fleet subscription refused topic=$share/edge-ocr/test/jobs reason=Not authorized" in caplog.text
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="source:fleet")
    thread.start()
    try:
        assert wait_until(lambda: "fleet worker connected topic=$share/edge-ocr/test/jobs" in caplog.text, 30)
        assert worker.status is SourceStatus.ONLINE  # set before the line is logged
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()


@pytest.mark.parametrize("det, expected", [("true", True), ("0", False), ("Off", False), (" yes ", True)])
def test_a_jobs_det_property_takes_the_words_post_api_ocr_takes(det, expected):
    assert _options({"det": det}) == (expected, ())


def test_a_jobs_bad_options_are_refused_with_the_codes_of_post_api_ocr():
    with pytest.raises(_OptionError) as bad_det:
        _options({"det": "maybe"})
    with pytest.raises(_OptionError) as bad_rois:
        _options({"rois": json.dumps([{"name": "a", "box": [0, 0, 10, 10], "rotate": 90}])})
    assert (bad_det.value.code, bad_rois.value.code) == ("invalid_option", "invalid_rois")
    with pytest.raises(_OptionError) as nested:
        _options({"rois": "[" * 60000})
    assert nested.value.code == "invalid_rois"
    det, rois = _options({"rois": json.dumps([{"name": "meter", "box": [1, 2, 30, 40]}])})
    assert det and [(r.name, r.box) for r in rois] == [("meter", (1, 2, 30, 40))]


def test_a_job_handed_back_keeps_what_its_sender_gave_it_and_what_is_left_of_its_expiry():
    from edge_ocr.sources.fleet import handed_back_properties

    sent = Properties(PacketTypes.PUBLISH)
    sent.ResponseTopic, sent.CorrelationData, sent.MessageExpiryInterval = "answers/7", b"7", 17
    sent.UserProperty = [("det", "false")]
    copy = handed_back_properties(sent, "abc", held_s=4.2)  # held 4.2 s by the worker: 5 s less to live
    assert (copy.ResponseTopic, copy.CorrelationData, copy.MessageExpiryInterval) == ("answers/7", b"7", 12)
    assert handed_back_properties(sent, "abc", held_s=60).MessageExpiryInterval == 1  # due: the broker drops it soon
    assert copy.UserProperty == [("det", "false"), ("job_id", "abc")]
    assert not hasattr(handed_back_properties(None, "abc"), "MessageExpiryInterval")


@pytest.mark.parametrize("topic, usable", [
    ("edge-ocr/answers/1", True), ("回答/1", True), ("a/" * 200 + "b", True),  # 201 levels: Mosquitto's most
    ("", False), ("answers/+", False), ("answers/#", False), ("a/" * 201 + "b", False),
    ("answers/\x00", False), ("answers/\x1b", False), ("answers/\x85", False), ("answers/\ufdd0", False),
    ("answers/\uffff", False), ("answers/\U0001fffe", False), ("x" * 65536, False),
])
def test_an_answer_goes_only_to_a_topic_the_broker_takes(topic, usable):
    from edge_ocr.sources.fleet import answerable

    assert answerable(topic) is usable


@pytest.mark.slow
def test_a_worker_that_crashed_and_came_back_in_another_group_takes_each_job_once(eval_dev, tmp_path, mosquitto):
    """Killed (no clean leave), then started with another fleet.group: its broker session still held
    the old group's subscription, so every job came to it twice, for as long as the session lived."""
    config = _worker_config(tmp_path, mosquitto, 0)
    worker = Daemon(config).start()
    assert wait_until(lambda: "fleet worker connected topic=$share/edge-ocr/" in worker.text(), 30)
    worker.kill()
    config.write_text(config.read_text().replace("[fleet]\n", '[fleet]\ngroup = "night-shift"\n'))
    worker = Daemon(config).start()
    try:
        assert wait_until(lambda: "fleet worker connected topic=$share/night-shift/" in worker.text(), 30)
        assert "fleet left the group of its previous config topic=$share/edge-ocr/%s" % JOBS_TOPIC in worker.text()
        images = [p for p, _ in line_samples(eval_dev, "IIIT5K-test", 4)]
        answers = submit(load_config(config), images[:3], wait=True, timeout_s=60)
        assert len(answers) == 3
        base = re.search(r"http listening url=(http://127\.0\.0\.1:\d+)", worker.text()).group(1)

        def done() -> list[str]:
            with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
                return re.findall(r"^edge_ocr_fleet_jobs_done_total (\S+)$", response.read().decode(), re.M)

        assert wait_until(lambda: done() == ["3"], 20), done()
        # A later job comes after any second copy of the first three (the session's queue keeps its
        # order, one pipeline worker reads in order): once it is answered, they would have been read.
        assert len(submit(load_config(config), images[3:], wait=True, timeout_s=60)) == 1
        assert worker.metric("jobs_total") == 4
        assert wait_until(lambda: done() == ["4"], 20), done()
        assert worker.terminate() == 0
    finally:
        worker.kill()


@pytest.mark.broker
def test_submit_asks_for_its_answers_under_the_configured_answers_topic(eval_dev, tmp_path, mosquitto):
    """With fleet.answers_topic set (a Node-RED flow's own results tree), submit asks there: a job
    asking under <jobs_topic>/results would be dropped by the workers of that config."""
    config = _worker_config(tmp_path, mosquitto, 0)
    config.write_text(config.read_text() + 'answers_topic = "test/answers"\n')
    worker = Daemon(config).start()
    assert wait_until(lambda: "fleet worker connected" in worker.text(), 30)
    (image, _), = line_samples(eval_dev, "IIIT5K-test", 1)
    watcher = Collector(mosquitto, ["test/answers/#"])
    run = _submit(config, [image], timeout_s=60)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert _answers(stdout)[0]["status"] == "ok" and watcher.wait(lambda ms: len(ms) == 1)
    assert "fleet job dropped" not in worker.text()
    watcher.close()
    assert worker.terminate() == 0


def test_answers_go_to_the_answers_topic_or_under_it_whole_levels_only():
    from edge_ocr.config import FleetConfig
    from edge_ocr.sources.fleet import answers_to

    root = FleetConfig(jobs_topic="site/jobs").answers_root
    assert root == "site/jobs/results"
    assert answers_to("site/jobs/results/5f2c", root) and answers_to("site/jobs/results", root)
    assert not answers_to("site/jobs/results2/x", root) and not answers_to("site/meter/state", root)
    assert FleetConfig(answers_topic="nodered/ocr/").answers_root == "nodered/ocr"
    for bad in ("nodered/#", "/", "a//b", "$SYS/ocr"):
        with pytest.raises(Exception, match="answers_topic"):
            FleetConfig(answers_topic=bad)
