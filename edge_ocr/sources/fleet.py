"""The fleet worker of SPEC "Fleet": this daemon takes OCR jobs from a shared MQTT 5
subscription, ``$share/<group>/<jobs_topic>``, and answers each on its Response Topic.

The broker is the scheduler: each job goes to one worker of the group, at most
``max_inflight`` at a time (MQTT 5 Receive Maximum). A job is acknowledged only after its
answer was published (PUBACK received), so the jobs of a worker that dies are delivered again:
to its session when it comes back within ``session_expiry``, or by a cluster broker to another
worker. Consumers dedup by ``job_id``.

Threads: paho's network loop (``on_message`` only queues; ``on_publish`` acknowledges the job
whose answer the broker now has), and ``source:fleet``, which hands the jobs to the pipeline
(waiting while it is full). Answers are published from the pipeline's thread (``on_done``),
which then goes on with the next job instead of waiting for the PUBACK: that wait was half of
a small job's time (README "Fleet", bench/fleet_overhead.py). Imports paho, config, results,
stats and mqtt_client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_ocr.config import FleetConfig, MqttConfig, read_regions
from edge_ocr.errors import ConfigError, EdgeOcrError
from edge_ocr.mqtt_client import make_client
from edge_ocr.results import Job, Result, Status
from edge_ocr.sources.base import SourceStatus, Submit
from edge_ocr.stats import Stats

log = logging.getLogger(__name__)

NAME = "fleet"
MAX_ROIS = 64


@dataclass(frozen=True, slots=True)
class Ticket:
    """What answering one job needs: where, with what correlation, and which message to ack."""

    mid: int
    job_id: str
    response_topic: str
    correlation: bytes | None
    failed: bool = False  # the answer is an error result


class FleetWorker:
    """A source whose jobs come from the broker and whose answers go back to it."""

    name = NAME

    def __init__(self, cfg: FleetConfig, mqtt: MqttConfig, submit: Submit, stats: Stats,
                 on_status: Callable[[str, SourceStatus], None] | None = None) -> None:
        self.cfg = cfg
        self.mqtt = mqtt
        self.submit = submit
        self.stats = stats
        self.on_status = on_status
        self.worker_id = mqtt.client_id + "-fleet"
        self.ready = threading.Event()
        self._status = SourceStatus.OFFLINE
        self._inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()  # bounded by Receive Maximum
        self.client: paho.Client | None = None
        # answers published and not yet acknowledged: the mid of the answer -> its job's ticket
        self._answering: dict[int, Ticket] = {}
        self._early: dict[int, Any] = {}  # PUBACKs (their reason codes) that came before publish() returned
        self._lock = threading.Lock()

    @property
    def status(self) -> SourceStatus:
        return self._status

    def update(self, cfg: Any) -> None:
        """Nothing of [fleet] applies live: a change needs a restart (config.is_live)."""

    def capture_now(self) -> str:
        return "fleet jobs come from the broker"

    # -- thread body ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        client = make_client(self.mqtt, self.worker_id, mqtt5=True, will=False, manual_ack=True)
        client.reconnect_delay_set(self.mqtt.reconnect_min_delay, self.mqtt.reconnect_max_delay)  # type: ignore[arg-type]  # paho annotates int, takes float
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        connect = Properties(PacketTypes.CONNECT)
        connect.SessionExpiryInterval = self.cfg.session_expiry
        connect.ReceiveMaximum = self.cfg.max_inflight
        self.client = client
        client.connect_async(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive, clean_start=False,
                             properties=connect)
        client.loop_start()
        self.ready.set()
        try:
            while not stop.is_set():
                try:
                    msg = self._inbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                self._take(msg)
        finally:
            self._leave(client)

    def _leave(self, client: paho.Client) -> None:
        """A clean stop leaves the group first: Mosquitto keeps routing a shared subscription's
        jobs to a persistent session while it is offline, so a worker stopped for good would
        otherwise swallow its share of new jobs until its session expired. Jobs it still holds
        unacknowledged stay in its session and come back when it restarts."""
        if self._status is SourceStatus.ONLINE:
            left = threading.Event()
            client.on_unsubscribe = lambda *args: left.set()
            client.unsubscribe("$share/%s/%s" % (self.cfg.group, self.cfg.jobs_topic))
            if not left.wait(2.0):
                log.warning("fleet worker left the group without confirmation worker=%s", self.worker_id)
        client.disconnect()
        client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("fleet connect refused reason=%s", reason)
            return
        topic = "$share/%s/%s" % (self.cfg.group, self.cfg.jobs_topic)
        client.subscribe(topic, options=SubscribeOptions(qos=1))
        self._set_status(SourceStatus.ONLINE)
        log.info("fleet worker connected topic=%s worker=%s session_present=%s", topic, self.worker_id,
                 getattr(flags, "session_present", None))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._set_status(SourceStatus.OFFLINE)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._inbox.put(msg)  # paho's thread must not wait on the pipeline

    def _set_status(self, status: SourceStatus) -> None:
        if status is not self._status:
            self._status = status
            if self.on_status is not None:
                self.on_status(self.name, status)

    # -- one job ---------------------------------------------------------------------------------

    def _take(self, msg: paho.MQTTMessage) -> None:
        self.stats.inc("fleet_jobs_taken_total")
        if msg.dup:
            self.stats.inc("fleet_jobs_redelivered_total")
        props = msg.properties
        user = dict(getattr(props, "UserProperty", None) or [])
        job_id = user.get("job_id") or hashlib.sha256(msg.payload).hexdigest()
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        if not response_topic:
            log.warning("fleet job without a response topic dropped job_id=%s", job_id)
            self.stats.inc("fleet_jobs_failed_total")
            self._ack(msg.mid)
            return
        ticket = Ticket(msg.mid, job_id, response_topic, correlation)
        try:
            det, rois = _options(user)
        except _OptionError as exc:
            self._answer(ticket, Result(NAME, Status.ERROR, None, ("", ""), error=exc))
            return
        job = Job(NAME, bytes(msg.payload), det=det, rois=rois, on_done=partial(self._answer, ticket), to_sinks=False)
        if not self.submit(job):
            log.info("fleet job not taken (stopping): left for redelivery job_id=%s", job_id)

    def _answer(self, ticket: Ticket, result: Result) -> None:
        """Publish the answer; the job is acknowledged when the broker has it (``_on_publish``).
        Published while disconnected, paho keeps the answer and sends it after the reconnect."""
        assert self.client is not None
        data = result.to_dict()
        data.update(job_id=ticket.job_id, worker=self.worker_id)
        props = Properties(PacketTypes.PUBLISH)
        if ticket.correlation is not None:
            props.CorrelationData = ticket.correlation
        ticket = replace(ticket, failed=result.status is Status.ERROR)
        try:
            info = self.client.publish(ticket.response_topic, json.dumps(data), qos=1, properties=props)
        except ValueError as exc:  # a response topic no answer can go to (a wildcard): never answerable
            log.warning("fleet job dropped: response topic unusable job_id=%s error=%s", ticket.job_id, exc)
            self.stats.inc("fleet_jobs_failed_total")
            self._ack(ticket.mid)
            return
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            log.warning("fleet answer not queued by paho, job left for redelivery job_id=%s", ticket.job_id)
            return
        with self._lock:
            early = info.mid in self._early
            reason = self._early.pop(info.mid, None)
            if not early:
                self._answering[info.mid] = ticket
        if early:
            self._answered(ticket, reason)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            ticket = self._answering.pop(mid, None)
            if ticket is None:
                self._early[mid] = reason
                return
        self._answered(ticket, reason)

    def _answered(self, ticket: Ticket, reason: Any) -> None:
        """The broker has the answer (PUBACK): acknowledge the job. A refused answer (an ACL on
        the response topic) is acknowledged too: sent again, it would be refused again."""
        refused = reason is not None and getattr(reason, "is_failure", False)
        if refused:
            log.warning("fleet answer refused by the broker job_id=%s topic=%s reason=%s", ticket.job_id,
                        ticket.response_topic, reason)
        self._ack(ticket.mid)
        self.stats.inc("fleet_jobs_failed_total" if ticket.failed or refused else "fleet_jobs_done_total")

    def _ack(self, mid: int) -> None:
        if self.client is not None:
            self.client.ack(mid, 1)


class _OptionError(EdgeOcrError):
    """A job's ``det`` or ``rois`` property is unusable: codes as POST /api/ocr's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _options(user: dict[str, str]) -> tuple[bool, tuple[Any, ...]]:
    """``det`` and ``rois`` of a job's user properties, by the rules of POST /api/ocr."""
    det_text = user.get("det", "true").strip().lower()
    if det_text not in ("true", "false", "1", "0"):
        raise _OptionError("invalid_option", "det: expected true or false, got %r" % det_text[:20])
    rois: tuple[Any, ...] = ()
    if user.get("rois"):
        try:
            rois = read_regions(json.loads(user["rois"]), "rois", ("name", "box", "allowed_chars"), MAX_ROIS)
        except ValueError as exc:
            raise _OptionError("invalid_rois", "rois: not valid JSON: %s" % exc) from exc
        except ConfigError as exc:
            raise _OptionError("invalid_rois", exc.message) from exc
    return det_text in ("true", "1"), rois
