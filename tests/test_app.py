"""The daemon end to end: ``python -m edge_ocr run -c CONFIG`` in a subprocess, the real engine
and default pack, a real drop folder and a real Mosquitto."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_ocr import allocator
from tests.broker import PASSWORD, Collector, wait_until
from tests.helpers import PREFIX, Daemon, drop, line_samples, write_config


def originals(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.png")) if directory.exists() else []


@pytest.mark.broker
def test_dropped_file_gives_retained_state_text_one_event_and_done_json(eval_dev, tmp_path, mosquitto):
    (word, label), = line_samples(eval_dev, "IIIT5K-test", 1)
    sub = Collector(mosquitto, ["%s/#" % PREFIX])
    unit_env = allocator.with_hugepages({k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"})
    daemon = Daemon(write_config(tmp_path, mosquitto), env=unit_env).start()
    sub.wait_topic(PREFIX + "/availability")
    drop(word, tmp_path / "inbox", "word.png")
    state = json.loads(sub.wait_topic(PREFIX + "/inbox/state")[-1].payload)
    text = sub.wait_topic(PREFIX + "/inbox/text")[-1].payload.decode()
    sub.wait_topic(PREFIX + "/inbox/event")
    assert state["status"] == "ok" and state["file"] == "word.png"
    assert text.casefold() == label.casefold() == state["text"].casefold()
    # The JSON is written first, then the original moved beside it: wait for both.
    assert wait_until(lambda: (tmp_path / "done" / "word.json").exists() and (tmp_path / "done" / "word.png").exists())
    stored = json.loads((tmp_path / "done" / "word.json").read_text())
    assert stored["id"] == state["id"]
    assert not list((tmp_path / "inbox").glob("*.png")) and not list((tmp_path / "inbox" / ".processing").iterdir())
    # started as the unit starts it (tests.helpers.Daemon): on glibc's huge pages where they exist
    thp_mode = allocator.read_thp_mode()
    if thp_mode in ("madvise", "always") and (allocator.glibc_version() or (0, 0)) >= (2, 35):
        assert "huge_pages=on thp=%s" % thp_mode in daemon.text()
    assert daemon.terminate() == 0
    assert sub.wait_topic(PREFIX + "/availability", 2)[-1].payload == b"offline"
    assert sub.on(PREFIX + "/inbox/status")[-1].payload == b"offline"  # a stopped daemon's source too
    assert len(sub.on(PREFIX + "/inbox/event")) == 1
    late = Collector(mosquitto, [PREFIX + "/inbox/state", PREFIX + "/inbox/text"])
    assert all(m.retain for m in late.wait(lambda ms: len(ms) >= 2))
    late.close()
    sub.close()


@pytest.mark.broker
def test_after_a_restart_the_same_reading_is_no_change_and_sends_no_event(eval_dev, tmp_path, mosquitto):
    """The retained state says what the device read last: a restarted daemon that reads it again
    (a meter that has not moved) publishes it as unchanged, with that text as previous_text."""
    (word, _), = line_samples(eval_dev, "IIIT5K-test", 1)
    config = write_config(tmp_path, mosquitto)
    sub = Collector(mosquitto, ["%s/inbox/#" % PREFIX])
    first = Daemon(config).start()
    drop(word, tmp_path / "inbox", "before.png")
    state = json.loads(sub.wait_topic(PREFIX + "/inbox/state")[-1].payload)
    assert state["changed"] and state["previous_text"] is None and state["text"]
    assert first.terminate() == 0
    events = len(sub.on(PREFIX + "/inbox/event"))
    assert events == 1
    second = Daemon(config).start()
    drop(word, tmp_path / "inbox", "after.png")
    assert wait_until(lambda: (tmp_path / "done" / "after.json").exists())
    again = json.loads(sub.wait_topic(PREFIX + "/inbox/state", 2)[-1].payload)
    assert again["file"] == "after.png" and again["text"] == state["text"]
    assert again["changed"] is False and again["previous_text"] == state["text"]
    assert second.terminate() == 0
    assert len(sub.on(PREFIX + "/inbox/event")) == events  # no event for a reading that did not change
    sub.close()


@pytest.mark.slow
@pytest.mark.broker
def test_broker_down_during_200_file_burst_then_all_results_in_order(eval_dev, tmp_path, mosquitto):
    samples = [p for p, _ in line_samples(eval_dev, "SROIE2019-task1", 200)]
    assert len(samples) == 200
    sub = Collector(mosquitto, [PREFIX + "/inbox/event"], client_id="burst-sub", persistent=True)
    daemon = Daemon(write_config(tmp_path, mosquitto, "publish_every = true\n")).start()
    mosquitto.stop()
    names = ["f%03d.png" % i for i in range(200)]
    for src, name in zip(samples, names):
        drop(src, tmp_path / "inbox", name)
    assert wait_until(lambda: len(list((tmp_path / "done").glob("*.json"))) + len(
        list((tmp_path / "failed").glob("*.error.json"))) == 200, 300)
    mosquitto.start()
    events = [json.loads(m.payload) for m in sub.wait_topic(PREFIX + "/inbox/event", 200, 120)]
    assert [e["file"] for e in events] == names
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    stored = {p.stem: json.loads(p.read_text())["ts"] for p in (tmp_path / "done").glob("*.json")}
    assert all(stored[e["file"][:-4]] == e["ts"] for e in events if e["file"][:-4] in stored)  # original ts
    assert wait_until(lambda: not list((tmp_path / "spool").glob("*.msg")))
    assert daemon.terminate() == 0
    sub.close()


@pytest.mark.slow
@pytest.mark.broker
def test_kill_9_mid_burst_then_restart_leaves_each_file_once(eval_dev, tmp_path, mosquitto):
    samples = [p for p, _ in line_samples(eval_dev, "SROIE2019-task1", 60)]
    sub = Collector(mosquitto, [PREFIX + "/availability"])
    config = write_config(tmp_path, mosquitto)
    daemon = Daemon(config).start()
    sub.wait(lambda ms: any(m.payload == b"online" for m in ms))
    names = ["k%03d.png" % i for i in range(len(samples))]
    for src, name in zip(samples, names):
        drop(src, tmp_path / "inbox", name)
    (tmp_path / "inbox" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really IEND\xaeB`\x82")
    assert wait_until(lambda: len(originals(tmp_path / "done")) >= 10, 120)
    daemon.kill()
    # The LWT: the broker announces the daemon offline when its connection dies uncleanly.
    assert sub.wait(lambda ms: ms[-1].payload == b"offline")[-1].retain is False
    second = Daemon(config).start()
    expected = sorted(names + ["broken.png"])
    assert wait_until(lambda: sorted(originals(tmp_path / "done") + originals(tmp_path / "failed")) == expected, 120)
    done, failed = originals(tmp_path / "done"), originals(tmp_path / "failed")
    assert failed == ["broken.png"] and (tmp_path / "failed" / "broken.error.json").exists()
    assert all((tmp_path / "done" / (n[:-4] + ".json")).exists() for n in done)
    assert not list((tmp_path / "inbox" / ".processing").iterdir())
    assert originals(tmp_path / "inbox") == []
    assert second.terminate() == 0
    sub.close()


def test_config_typo_exits_2_naming_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[mqtt]\nhots = "broker"\n')
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "run", "-c", str(config)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert "mqtt.hots: unknown key (did you mean 'host'?)" in run.stderr
    config.write_text("[mqtt]\nport = 70000\n")
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "check", "-c", str(config)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and "mqtt.port: expected 1..65535, got 70000" in run.stderr
    # A problem in each of three sections and a source: one run names all four, one line each.
    config.write_text('[engine]\nthreads = "many"\n[mqtt]\nhots = "x"\n[guard]\nrss_soft_mb = 5\n'
                      '[[sources]]\nname = "inbox"\ntype = "folder"\npath = "in"\npoll_intervall = 2\n')
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "check", "-c", str(config)], capture_output=True,
                         text=True, timeout=60)
    named = [key for key in ("engine.threads", "mqtt.hots", "guard.rss_soft_mb", "sources[0].poll_intervall")
             if sum(key in line for line in run.stderr.splitlines()) == 1]
    assert run.returncode == 2 and len(named) == 4, run.stderr


def test_a_hard_limit_below_the_daemons_own_memory_exits_2_instead_of_a_restart_loop(tmp_path):
    """rss_hard_mb under what the daemon holds once its models are loaded: it went READY, hit the
    hard level at the guard's first look, exited 3 and was started again by systemd for ever."""
    config = write_config(tmp_path, None)
    config.write_text(config.read_text() + "\n[guard]\nrss_soft_mb = 40\nrss_hard_mb = 50\n")
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "run", "-c", str(config)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 2, run.stderr  # the unit's RestartPreventExitStatus=2: no restart
    assert re.search(r"guard\.rss_hard_mb: 50 MB is below what the daemon holds with its models loaded, \d+ MB",
                     run.stderr), run.stderr
    assert "daemon ready" not in run.stderr


def test_check_and_the_daemon_name_guard_limits_the_machine_cannot_give(tmp_path):
    config = tmp_path / "big.toml"
    # A hard limit of 100 TB is more than any machine here has, as 600 MB is for a 512 MB Pi.
    config.write_text('[guard]\nrss_soft_mb = 90000000\nrss_hard_mb = 100000000\n[mqtt]\nenabled = false\n'
                      '[http]\nenabled = false\n[[sources]]\nname = "inbox"\ntype = "folder"\npath = "%s"\n'
                      % (tmp_path / "inbox"))
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "check", "-c", str(config)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    (guard,) = [line for line in run.stdout.splitlines() if line.startswith("guard")]
    assert guard.startswith("guard: guard.rss_hard_mb 100000000 is over 80 % of this machine's memory")
    assert guard.endswith("(a board with 1 GB or less: config/pi-zero-2w.toml)")
    daemon = Daemon(config).start()  # the warning comes before the models load, so before "daemon ready"
    assert re.search(r"memory guard cannot act in time rss_hard_mb=100000000 limit_mb=\d+ limit=machine "
                     r"profile=config/pi-zero-2w.toml", daemon.text()), daemon.text()
    assert daemon.terminate() == 0


@pytest.mark.broker
def test_check_reports_wrong_password_and_bad_ca_one_line_each(tmp_path, mosquitto):
    config = write_config(tmp_path, mosquitto)
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "check", "-c", str(config)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    (tmp_path / "secret").write_text("not-the-password\n")
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "check", "-c", str(config)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    assert [line for line in run.stdout.splitlines() if line.startswith("mqtt")] == [
        "mqtt: connection refused: Not authorized"]
    assert "not-the-password" not in run.stdout + run.stderr
    tls = 'tls = true\nca_file = "%s"\n' % mosquitto.certs["server.crt"]  # not the CA: verification fails
    config.write_text(config.read_text().replace("port = %d" % mosquitto.port, "port = %d\n%s" % (mosquitto.tls_port, tls)))
    (tmp_path / "secret").write_text(PASSWORD + "\n")
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "check", "-c", str(config)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1 and "mqtt: TLS error" in run.stdout, run.stdout + run.stderr


def test_a_pack_name_that_names_no_pack_exits_2_listing_the_packs(tmp_path):
    # A typo in engine.pack is fixed in the file, not by systemd restarting every 5 s (exit 1 did).
    config = tmp_path / "pack.toml"
    config.write_text('[engine]\npack = "ppocrv6-smal"\n[mqtt]\nenabled = false\n[http]\nenabled = false\n'
                      '[[sources]]\nname = "inbox"\ntype = "folder"\npath = "%s"\n' % (tmp_path / "inbox"))
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "run", "-c", str(config)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "model pack 'ppocrv6-smal' not found" in run.stderr and "ppocrv6-small" in run.stderr.split("available:")[1]


@pytest.mark.parametrize("workers, spinning", [(1, True), (2, False)])
def test_the_engine_spins_only_when_one_worker_runs_it(tmp_path, workers, spinning):
    from edge_ocr.app import engine_config
    from edge_ocr.config import load_config

    path = tmp_path / "edge-ocr.toml"
    path.write_text('[pipeline]\nworkers = %d\n\n[mqtt]\nenabled = false\n' % workers)
    cfg = load_config(path, environ={})
    assert cfg.engine.spinning and engine_config(cfg).spinning is spinning
    assert engine_config(cfg).to_options().allow_spinning is spinning


def test_the_sources_are_online_when_the_broker_hears_the_daemon_is(tmp_path, mosquitto, monkeypatch):
    """An automation that sends a capture at <p>/availability = online got "unknown source" (the
    sink connected before the sources were made), then ``ok: false`` (before they were up): the
    daemon says online once its sources are up, as systemd hears READY=1. A folder slow to open
    (a network share) shows the order."""
    import threading
    import time

    from edge_ocr.app import App
    from edge_ocr.config import load_config
    from edge_ocr.sources.folder import FolderSource
    from tests.fakes import FakeEngine

    config = write_config(tmp_path, mosquitto)
    config.write_text(config.read_text().replace('[http]\nbind = "127.0.0.1:0"', '[http]\nenabled = false')
                      + "\n[guard]\nrss_soft_mb = 100000\nrss_hard_mb = 200000\n")  # the guard would watch pytest
    app = App(load_config(config), engine_factory=lambda cfg, pages: (FakeEngine(), ("fake", "0")))
    run = FolderSource.run
    monkeypatch.setattr(FolderSource, "run", lambda source, stop: (time.sleep(1.0), run(source, stop)))
    sub = Collector(mosquitto, [PREFIX + "/availability"])
    runner = threading.Thread(target=app.run, name="test-app", daemon=True)
    runner.start()
    try:
        sub.wait(lambda ms: any(m.payload == b"online" for m in ms))
        ok, message = app.capture("inbox")
        assert ok, message
    finally:
        app.stop_event.set()
        runner.join(20)
        sub.close()


def test_the_folder_reuses_a_stored_result_only_under_the_engine_that_read_it(tmp_path):
    """App hands the engine's reading_id to the folder's reuse store: the same bytes are answered
    from the store while the engine reads alike, and read again after an upgrade (or a setting
    that reads otherwise). Without it a result stayed reused across upgrades."""
    import threading

    from edge_ocr.app import App
    from edge_ocr.config import load_config
    from tests.fakes import FakeEngine

    config = write_config(tmp_path, None)
    config.write_text(config.read_text().replace('[http]\nbind = "127.0.0.1:0"', '[http]\nenabled = false')
                      + "\n[guard]\nrss_soft_mb = 100000\nrss_hard_mb = 200000\n")  # the guard would watch pytest

    def drop_under(reading_id: str, name: str) -> list[bytes]:
        engine = FakeEngine()
        engine.reading_id = reading_id
        app = App(load_config(config), engine_factory=lambda cfg, pages: (engine, ("fake", reading_id)))
        runner = threading.Thread(target=app.run, name="test-app", daemon=True)
        runner.start()
        try:
            assert wait_until(lambda: app.sources.get("inbox") is not None and app.sources["inbox"].ready.is_set(), 30)
            (tmp_path / "inbox" / name).write_bytes(b"TEXT:same")
            assert wait_until(lambda: (tmp_path / "done" / name.replace(".txt", ".json")).exists(), 30)
        finally:
            app.stop_event.set()
            runner.join(20)
        return engine.calls

    assert drop_under("pack 1", "a.txt") == [b"TEXT:same"]
    assert drop_under("pack 1", "b.txt") == []  # answered from the store
    assert drop_under("pack 2", "c.txt") == [b"TEXT:same"]  # another reading: read again
