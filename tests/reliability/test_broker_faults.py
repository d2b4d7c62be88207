"""Broker faults: the broker stops and starts 5 times during a 500-file burst. Every result
reaches a subscriber, in order, and a duplicate (QoS 1 may redeliver) carries the same id."""

from __future__ import annotations

import json
import threading

import pytest

from tests.broker import Collector
from tests.helpers import PREFIX, Daemon, drop, line_samples, wait_until, write_config

FILES = 500
OUTAGES = 5


@pytest.mark.broker
def test_five_broker_outages_during_a_500_file_burst_lose_nothing(eval_dev, tmp_path, mosquitto, report):
    sources = [p for p, _ in line_samples(eval_dev, "SROIE2019-task1", FILES)]
    assert len(sources) == FILES
    sub = Collector(mosquitto, [PREFIX + "/inbox/event"], client_id="outage-sub", persistent=True)
    daemon = Daemon(write_config(tmp_path, mosquitto, "publish_every = true\n")).start()
    names = ["b%03d.png" % i for i in range(FILES)]
    done = tmp_path / "done"

    def finished() -> int:
        return len(list(done.glob("*.json"))) + len(list((tmp_path / "failed").glob("*.error.json")))

    dropping = threading.Thread(target=lambda: [drop(s, tmp_path / "inbox", n) for s, n in zip(sources, names)],
                                name="test-drop")
    dropping.start()
    for outage in range(OUTAGES):  # spread over the burst: down while files keep finishing
        assert wait_until(lambda o=outage: finished() >= (o + 1) * FILES // (OUTAGES + 2), 300)
        mosquitto.stop()
        assert wait_until(lambda o=outage: finished() >= (o + 1) * FILES // (OUTAGES + 2) + 20, 120)
        mosquitto.start()
    dropping.join(60)
    assert wait_until(lambda: finished() == FILES, 300)
    topic = PREFIX + "/inbox/event"
    sub.wait(lambda ms: len({json.loads(m.payload)["file"] for m in ms if m.topic == topic}) >= FILES, 180)
    assert wait_until(lambda: not list((tmp_path / "spool").glob("*.msg")), 60)
    events = [json.loads(m.payload) for m in sub.on(topic)]
    first_seen: dict[str, str] = {}
    duplicates = 0
    for event in events:
        if event["file"] in first_seen:
            duplicates += 1
            assert first_seen[event["file"]] == event["id"], "a redelivery must be the same message"
        else:
            first_seen[event["file"]] = event["id"]
    assert sorted(first_seen) == names  # nothing lost
    assert list(first_seen) == names  # in order: files are read in arrival order, results kept in it
    assert daemon.terminate() == 0
    sub.close()
    report("broker stopped and started 5 times during a burst", runs=1, inputs=FILES,
           lost=FILES - len(first_seen), duplicated="%d (same id)" % duplicates, errors=0)
