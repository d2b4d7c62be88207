"""``edge-ocr submit IMAGE... [--wait]``: the fleet's client side, for scripts and tests.

Each image is one MQTT 5 job on ``fleet.jobs_topic`` (QoS 1): the bytes as payload, a Response
Topic of its own (``<jobs_topic>/results/<random>``), Correlation Data, and the user properties
``job_id`` (the sha256 of the bytes), ``det`` and, when given, ``rois``. With ``wait`` the
answers are collected, deduplicated by ``job_id`` (delivery is at least once), and returned in
arrival order.

The session outlives a lost connection (Session Expiry = the timeout): while this client is
away, after a network drop or a broker restart, the broker keeps its subscription and queues
the answers for it (with Mosquitto's persistence, across the restart too); without it, the
answers workers sent before this client had re-subscribed were acknowledged and lost. The
session is dropped on the way out (expiry 0 at DISCONNECT). Imports paho, config and mqtt_client.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_ocr.config import Config
from edge_ocr.errors import SinkError
from edge_ocr.mqtt_client import NO_MATCHING_SUBSCRIBERS, make_client

SESSION_MARGIN_S = 60  # the session outlives the wait a little: answers still in flight at the deadline
PUBLISH_WINDOW = 8  # jobs published and not yet acknowledged: 2 MB scans held 91 MB for 20, 244 MB for 200


def submit(config: Config, images: Sequence[Path], *, wait: bool, timeout_s: float, det: bool = True,
           rois: str = "", on_answer: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Publish one job per distinct image; with ``wait``, the answers, one per file (files of the
    same bytes share their job's), until all came or the timeout passed. Without ``wait``, one
    ``{"job_id", "file"}`` per file. Raises SinkError when the broker cannot be reached."""
    # One job per distinct content (its sha256 is the job id), answered for every file that holds it:
    # a scanner's duplicate page is read once and both files get their line.
    jobs: dict[str, list[Path]] = {}
    for path in {p.resolve(): p for p in images}.values():  # a file named twice is one file
        jobs.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(path)
    reply_to = "%s/%s" % (config.fleet.answers_root, uuid.uuid4().hex)  # where the workers answer (answers_topic)
    answered: set[str] = set()
    answers: list[dict[str, Any]] = []  # one per file, in arrival order
    acked: set[int] = set()  # mids of jobs the broker has
    dropped: dict[int, str] = {}  # mids of jobs the broker did not pass on, and why (their PUBACK)
    lock = threading.Condition()
    subscribed = threading.Event()
    refusal: list[str] = []  # the broker's CONNACK refusal: retrying would only be refused again
    client = make_client(config.mqtt, "%s-submit-%s" % (config.mqtt.client_id, uuid.uuid4().hex[:8]), mqtt5=True,
                         will=False)

    def on_connect(c: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            refusal.append(str(reason))
            subscribed.set()  # wakes the wait below, which reports it
            return
        c.subscribe(reply_to, options=SubscribeOptions(qos=1))

    def on_subscribe(c: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        subscribed.set()

    def on_publish(c: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with lock:
            acked.add(mid)
            if getattr(reason, "value", 0) == NO_MATCHING_SUBSCRIBERS:
                dropped[mid] = "no worker is subscribed to %s" % config.fleet.jobs_topic
            elif getattr(reason, "is_failure", False):
                dropped[mid] = "refused: %s" % reason  # an ACL without write on the jobs topic
            lock.notify_all()

    def on_message(c: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            answer = json.loads(msg.payload)
        except ValueError:
            return
        with lock:
            job_id = answer.get("job_id")
            if job_id in jobs and job_id not in answered:
                answered.add(job_id)
                for path in jobs[job_id]:
                    answers.append({**answer, "file": str(path)})
                    if on_answer is not None:
                        on_answer(answers[-1])
                lock.notify_all()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_publish = on_publish
    client.reconnect_delay_set(config.mqtt.reconnect_min_delay, config.mqtt.reconnect_max_delay)  # type: ignore[arg-type]  # paho annotates int, takes float
    connect = Properties(PacketTypes.CONNECT)
    connect.SessionExpiryInterval = math.ceil(timeout_s) + SESSION_MARGIN_S
    try:
        # paho's default clean start is "first connect only": reconnects resume the session
        client.connect(config.mqtt.host, config.mqtt.port, keepalive=config.mqtt.keepalive, properties=connect)
    except OSError as exc:
        raise SinkError("cannot reach the broker %s:%d: %s" % (config.mqtt.host, config.mqtt.port, exc)) from exc
    client.loop_start()
    try:
        if not subscribed.wait(min(timeout_s, 30.0)):
            raise SinkError("the broker did not confirm the subscription to %s" % reply_to)
        if refusal:
            raise SinkError("the broker %s:%d refused the connection: %s"
                            % (config.mqtt.host, config.mqtt.port, refusal[0]))
        deadline = time.monotonic() + timeout_s
        mids: set[int] = set()
        for index, (job_id, paths) in enumerate(jobs.items()):
            with lock:  # paho holds each job's bytes until its PUBACK: a few at a time, not every file at once
                lock.wait_for(lambda: len(mids - acked) < PUBLISH_WINDOW or bool(dropped),
                              max(0.0, deadline - time.monotonic()))
                if dropped or len(mids - acked) >= PUBLISH_WINDOW:
                    break
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = reply_to
            props.CorrelationData = str(index).encode()
            props.UserProperty = [("job_id", job_id), ("det", "true" if det else "false")] + (
                [("rois", rois)] if rois else [])
            info = client.publish(config.fleet.jobs_topic, paths[0].read_bytes(), qos=1, properties=props)
            with lock:
                mids.add(info.mid)
        with lock:  # PUBACKs, also of jobs paho re-sent after a reconnect (wait_for_publish raises then)
            lock.wait_for(lambda: mids <= acked, max(0.0, deadline - time.monotonic()))
            unconfirmed, why = len(jobs) - len(mids & acked), sorted(set(dropped.values()))
        if dropped:  # at once: no answer can come for these, and the rest were not sent
            unsent = len(jobs) - len(mids)
            raise SinkError("%d of %d job(s) not passed on by the broker: %s%s" % (
                len(dropped), len(jobs), "; ".join(why), "; %d not sent" % unsent if unsent else ""))
        if unconfirmed:
            raise SinkError("%d of %d job(s) not acknowledged by the broker within %.0f s"
                            % (unconfirmed, len(jobs), timeout_s))
        if not wait:
            return [{"job_id": job_id, "file": str(path)} for job_id, paths in jobs.items() for path in paths]
        with lock:
            lock.wait_for(lambda: len(answered) == len(jobs), max(0.0, deadline - time.monotonic()))
            return list(answers)
    finally:
        leave = Properties(PacketTypes.DISCONNECT)
        leave.SessionExpiryInterval = 0  # nothing more to wait for: the broker may forget us
        client.disconnect(properties=leave)
        client.loop_stop()
