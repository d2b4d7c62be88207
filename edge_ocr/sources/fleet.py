"""The fleet worker of SPEC "Fleet": this daemon takes OCR jobs from a shared MQTT 5
subscription, ``$share/<group>/<jobs_topic>``, and answers each on its Response Topic.

The broker is the scheduler: each job goes to one worker of the group. The worker asks for at
most ``max_inflight`` jobs at a time (MQTT 5 Receive Maximum) and, since Mosquitto 2.0.11 sends
more once jobs are acknowledged (README "Fleet"), also hands at most ``max_inflight`` to the
pipeline at a time, from the time it takes one until the job is acknowledged; the rest wait in
its inbox, unacknowledged. A job is acknowledged only after its answer was published (PUBACK
received), so the jobs of a worker that dies are delivered again: to its session when it comes
back within ``session_expiry``, or by a cluster broker to another worker. A clean stop leaves the
group and hands back the jobs it has not answered (re-published as they came, each acknowledged
once the broker has its copy): Mosquitto 2.0.11 would otherwise keep them in the stopped
worker's session. Consumers dedup by ``job_id``.

Threads: paho's network loop (``on_message`` only queues; ``on_publish`` acknowledges the job
whose answer, or handed-back copy, the broker now has), and ``source:fleet``, which hands the
jobs to the pipeline (waiting for a free slot, then while the pipeline is full). Answers are published from the pipeline's thread (``on_done``),
which then goes on with the next job instead of waiting for the PUBACK: that wait was half of
a small job's time (README "Fleet", bench/fleet_overhead.py). Imports paho, config, results,
stats and mqtt_client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_ocr.atomic import write_atomic
from edge_ocr.config import REQUEST_FLAG_WORDS, FleetConfig, MqttConfig, read_regions
from edge_ocr.errors import ConfigError, EdgeOcrError, ImageTooLarge
from edge_ocr.mqtt_client import NO_MATCHING_SUBSCRIBERS, make_client, stop_loop
from edge_ocr.results import Job, Result, Status
from edge_ocr.sources.base import SourceStatus, Submit
from edge_ocr.stats import Stats

log = logging.getLogger(__name__)

NAME = "fleet"
HAND_BACK_S = 2.5  # a clean stop's budget for handing back held jobs (app.JOIN_TIMEOUT_S is 5 s)
LEAVE_STOP_S = 0.5  # ... and for paho's thread to end after that (it may be in a connect that hangs)
QUIET_S = 0.3  # ... and how long it waits for the broker to send no more of its session's jobs
SUBSCRIBED_FILE = "fleet-subscription.json"  # in mqtt.spool_dir: what the broker's session of ours subscribes to
TOPIC_SEPARATORS_MAX = 200  # Mosquitto 2 takes 201 levels and drops the client at 202 (measured)
QUEUED, ANSWERING, RETURNING, KEPT = "queued", "answering", "returning", "kept"


@dataclass(slots=True, eq=False)
class Ticket:
    """One job taken from the broker until it is acknowledged: where its answer goes, with what
    correlation, which message to ack, and its state (guarded by ``FleetWorker._lock``):
    ``queued`` (in the pipeline), ``answering`` (answer published, awaiting its PUBACK),
    ``returning`` (handed back at a clean stop, awaiting the copy's PUBACK), ``kept`` (the copy
    was refused: the job stays unacknowledged in the session)."""

    msg: paho.MQTTMessage
    job_id: str
    response_topic: str
    correlation: bytes | None
    session: int  # FleetWorker._session when taken: a mid is only the broker's within its session
    taken_at: float = field(default_factory=time.monotonic)  # a copy handed back expires as the job would
    state: str = QUEUED
    failed: bool = False  # the answer is an error result

    @property
    def mid(self) -> int:
        return int(self.msg.mid)


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
        self._topic = "$share/%s/%s" % (cfg.group, cfg.jobs_topic)
        # What the broker's session of ours subscribes to, kept beside the spool (MQTT state): after
        # a crash (no clean leave) with another group or jobs_topic, the session still held the old
        # subscription, and every job came twice, for as long as the session lived.
        self._subscribed_file = mqtt.spool_dir / SUBSCRIBED_FILE
        self._recorded: str | None = None  # the file's topic, once read (paho's thread only)
        self._recorded_read = False
        self._session_present: bool | None = None  # as the last CONNACK said, for the log
        self.ready = threading.Event()
        self._status = SourceStatus.OFFLINE
        # jobs not yet taken: paho's thread must not wait. Bounded by the broker: Receive Maximum,
        # which Mosquitto 2.0.11 exceeds once jobs are acknowledged (51 held, README "Fleet")
        self._inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client: paho.Client | None = None
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)  # a job was acknowledged or let go: a slot is free
        self._session = 0  # +1 when the broker has no session of ours (its mids start again)
        self._held: dict[int, Ticket] = {}  # taken (a slot each) and not acknowledged: job mid -> ticket
        # answers and handed-back copies published and not yet acknowledged: their mid -> the job's ticket
        self._answering: dict[int, Ticket] = {}
        self._early: dict[int, Any] = {}  # PUBACKs (their reason codes) that came before publish() returned

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
        client.on_subscribe = self._on_subscribe
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
                try:
                    self._take(msg, stop)
                except Exception:  # one job's failure must not end the worker (it would come back at every start)
                    log.exception("fleet job failed, dropped mid=%s", msg.mid)
                    self.stats.inc("fleet_jobs_failed_total")
                    self._drop(msg)
        finally:
            self._leave(client)

    def _leave(self, client: paho.Client) -> None:
        """A clean stop leaves the group first: Mosquitto keeps routing a shared subscription's
        jobs to a persistent session while it is offline, so a worker stopped for good would
        otherwise swallow its share of new jobs until its session expired. Then it hands back
        the jobs it holds and has not answered; any it could not hand back stay unacknowledged
        in its session and come back when it restarts."""
        if self._status is SourceStatus.ONLINE:
            left = threading.Event()
            client.on_unsubscribe = lambda *args: left.set()
            client.unsubscribe(self._topic)
            if left.wait(2.0):
                self._hand_back()
            else:
                log.warning("fleet worker left the group without confirmation worker=%s", self.worker_id)
        client.disconnect()
        if not stop_loop(client, LEAVE_STOP_S):
            log.warning("fleet worker stop left a connect attempt behind worker=%s", self.worker_id)

    def _hand_back(self) -> None:
        """Re-publish every job held and not answered, and each job the broker still sends from
        this session (those in the inbox, those it queued for us before we left), unchanged, to
        ``jobs_topic``, for the rest of the group; each is acknowledged when the broker has its
        copy. Mosquitto 2.0.11 gives neither to another worker by itself: they would wait in this
        session until the worker came back (measured: README "Fleet"). A copy the broker refuses
        (an ACL) or gives to nobody (no worker left) leaves its job in the session."""
        deadline = time.monotonic() + HAND_BACK_S
        with self._lock:
            held = [t for t in self._held.values() if t.state == QUEUED]
            for ticket in held:
                ticket.state = RETURNING
        for ticket in held:
            self._return(ticket)
        while time.monotonic() < deadline:
            try:
                msg = self._inbox.get(timeout=min(QUIET_S, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
            with self._lock:
                if msg.mid in self._held:  # sent again (a reconnect) while we hold it
                    continue
                ticket = self._ticket(msg)
                ticket.state = RETURNING
                self._held[ticket.mid] = ticket
            self._return(ticket)
        with self._freed:
            self._freed.wait_for(lambda: not any(t.state in (RETURNING, ANSWERING) for t in self._held.values()),
                                 max(0.0, deadline - time.monotonic()))
            kept = len(self._held)
        if held or kept or self.stats.get("fleet_jobs_returned_total"):
            log.info("fleet worker handed back jobs=%d kept_in_session=%d", self.stats.get("fleet_jobs_returned_total"),
                     kept)

    def _return(self, ticket: Ticket) -> None:
        assert self.client is not None
        self._publish(ticket, ticket.msg.topic, bytes(ticket.msg.payload),
                      handed_back_properties(ticket.msg.properties, ticket.job_id,
                                             time.monotonic() - ticket.taken_at))

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("fleet connect refused reason=%s", reason)
            return
        if not getattr(flags, "session_present", False):
            with self._freed:  # the broker forgot the jobs we held: their mids mean nothing now
                self._session += 1
                self._held.clear()
                self._freed.notify_all()
        self._session_present = getattr(flags, "session_present", None)
        stale = self._subscribed() if self._session_present else None
        if stale is not None and stale != self._topic:
            client.unsubscribe(stale)
            log.info("fleet left the group of its previous config topic=%s worker=%s", stale, self.worker_id)
        client.subscribe(self._topic, options=SubscribeOptions(qos=1))

    def _subscribed(self) -> str | None:
        """The filter the last run subscribed to, as ``_remember_subscription`` kept it (read once)."""
        if not self._recorded_read:
            self._recorded, self._recorded_read = self._read_subscribed(), True
        return self._recorded

    def _read_subscribed(self) -> str | None:
        try:
            topic = json.loads(self._subscribed_file.read_text(encoding="utf-8")).get("topic")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("fleet subscription record unreadable file=%s error=%s", self._subscribed_file, exc)
            return None
        return topic if isinstance(topic, str) else None

    def _remember_subscription(self) -> None:
        if self._subscribed() == self._topic:
            return  # no SD card write at every reconnect
        try:
            write_atomic(self._subscribed_file, json.dumps({"topic": self._topic}).encode("utf-8"))
            self._recorded = self._topic
        except OSError as exc:
            log.warning("fleet subscription not recorded file=%s error=%s", self._subscribed_file, exc.strerror)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        # Online only once the broker granted the shared subscription: jobs published before
        # that reach no worker of the group, and a broker's ACL may refuse it.
        refused = [r for r in reasons if r.is_failure]
        if refused:
            log.warning("fleet subscription refused topic=%s reason=%s", self._topic, refused[0])
            return
        self._remember_subscription()
        self._set_status(SourceStatus.ONLINE)
        log.info("fleet worker connected topic=%s worker=%s session_present=%s", self._topic, self.worker_id,
                 self._session_present)

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

    def _ticket(self, msg: paho.MQTTMessage) -> Ticket:
        props = msg.properties
        user = dict(getattr(props, "UserProperty", None) or [])
        job_id = user.get("job_id") or hashlib.sha256(msg.payload).hexdigest()
        return Ticket(msg, job_id, getattr(props, "ResponseTopic", None) or "", getattr(props, "CorrelationData", None),
                      self._session)

    def _take(self, msg: paho.MQTTMessage, stop: threading.Event) -> None:
        """Take one job: answer or drop a bad one at once; hand a good one to the pipeline once
        fewer than ``max_inflight`` jobs are held (a job is held until acknowledged)."""
        with self._lock:
            if msg.mid in self._held:  # the broker sent it again after a reconnect; we are on it
                self.stats.inc("fleet_jobs_redelivered_total")
                return
            ticket = self._ticket(msg)
        self.stats.inc("fleet_jobs_taken_total")
        if msg.dup:
            self.stats.inc("fleet_jobs_redelivered_total")
        if not answerable(ticket.response_topic) or not answers_to(ticket.response_topic, self.cfg.answers_root):
            # Answers go out with this device's login: a job naming e.g. <prefix>/meter/state would
            # have it publish a forged reading that Home Assistant shows (the broker's ACL lets us).
            log.warning("fleet job dropped: response topic not usable or not under fleet.answers_topic job_id=%s "
                        "response_topic=%r answers_topic=%s", ticket.job_id, ticket.response_topic[:200],
                        self.cfg.answers_root)
            self.stats.inc("fleet_jobs_failed_total")
            self._ack(ticket)
            return
        try:
            if len(msg.payload) > self.cfg.max_job_mb * 1024 * 1024:  # the bytes alone: ~2x them held while read
                raise ImageTooLarge("job over the %g MB limit (fleet.max_job_mb)" % self.cfg.max_job_mb)
            det, rois = _options(dict(getattr(msg.properties, "UserProperty", None) or []))
        except (_OptionError, ImageTooLarge) as exc:
            self._answer(ticket, Result(NAME, Status.ERROR, None, ("", ""), error=exc, changed=False))
            return
        with self._freed:
            while len(self._held) >= self.cfg.max_inflight:
                if stop.is_set():
                    self._inbox.put(msg)  # not taken: handed back with the rest of the inbox
                    return
                self._freed.wait(0.5)
            self._held[ticket.mid] = ticket
        job = Job(NAME, bytes(msg.payload), det=det, rois=rois, on_done=partial(self._answer, ticket), to_sinks=False,
                  compared=False)
        if not self.submit(job):
            log.info("fleet job not taken (stopping): handed back job_id=%s", ticket.job_id)

    def _answer(self, ticket: Ticket, result: Result) -> None:
        """Publish the answer; the job is acknowledged when the broker has it (``_on_publish``).
        Published while disconnected, paho keeps the answer and sends it after the reconnect."""
        with self._lock:
            if ticket.state != QUEUED:  # handed back at a clean stop: another worker answers it
                return
            ticket.state = ANSWERING
            ticket.failed = result.status is Status.ERROR
        data = result.to_dict()
        data.update(job_id=ticket.job_id, worker=self.worker_id)
        props = Properties(PacketTypes.PUBLISH)
        if ticket.correlation is not None:
            props.CorrelationData = ticket.correlation
        self._publish(ticket, ticket.response_topic, json.dumps(data).encode(), props)

    def _publish(self, ticket: Ticket, topic: str, payload: bytes, props: Properties) -> None:
        """Publish an answer or a handed-back copy (QoS 1); ``_answered`` follows its PUBACK."""
        assert self.client is not None
        try:
            info = self.client.publish(topic, payload, qos=1, properties=props)
        except ValueError as exc:  # a topic paho refuses (checked in _take; a payload too large)
            log.warning("fleet job dropped: publish refused job_id=%s error=%s", ticket.job_id, exc)
            self.stats.inc("fleet_jobs_failed_total")
            self._ack(ticket)
            return
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            log.warning("fleet message not queued by paho, job left for redelivery job_id=%s", ticket.job_id)
            self._let_go(ticket)
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
        the response topic) is acknowledged too: sent again, it would be refused again.
        For a handed-back copy: acknowledge the job only if the broker took the copy and gave it
        to a worker; else the job stays in the session."""
        refused = reason is not None and getattr(reason, "is_failure", False)
        if ticket.state == RETURNING:
            if refused or getattr(reason, "value", None) == NO_MATCHING_SUBSCRIBERS:
                log.warning("fleet job not handed back, kept in the session job_id=%s reason=%s", ticket.job_id,
                            reason)
                with self._freed:
                    ticket.state = KEPT
                    self._freed.notify_all()
                return
            self._ack(ticket)
            self.stats.inc("fleet_jobs_returned_total")
            return
        if refused:
            log.warning("fleet answer refused by the broker job_id=%s topic=%s reason=%s", ticket.job_id,
                        ticket.response_topic, reason)
        self._ack(ticket)
        self.stats.inc("fleet_jobs_failed_total" if ticket.failed or refused else "fleet_jobs_done_total")

    def _ack(self, ticket: Ticket) -> None:
        """Acknowledge the job (once; only in the session it came in) and free its slot."""
        with self._freed:
            current = ticket.session == self._session
            if self._held.get(ticket.mid) is ticket:
                del self._held[ticket.mid]
                self._freed.notify_all()
        if current and self.client is not None:
            self.client.ack(ticket.mid, 1)

    def _drop(self, msg: paho.MQTTMessage) -> None:
        """Acknowledge a job that failed outside the pipeline, held or not."""
        with self._lock:
            ticket = self._held.get(msg.mid)
        if ticket is None or ticket.msg is not msg:
            ticket = self._ticket(msg)
        self._ack(ticket)

    def _let_go(self, ticket: Ticket) -> None:
        """Free the job's slot without acknowledging it: the broker sends it again."""
        with self._freed:
            if self._held.get(ticket.mid) is ticket:
                del self._held[ticket.mid]
                self._freed.notify_all()


def handed_back_properties(props: Properties | None, job_id: str, held_s: float = 0.0) -> Properties:
    """The properties of a job's copy handed back at a clean stop: what its sender gave it, with
    its ``job_id`` (consumers dedup by it) and what is left of its expiry after the ``held_s``
    this worker held it (a stale job must not live on in other workers' sessions, nor gain the
    time it was held at each hand-back)."""
    user = list(getattr(props, "UserProperty", None) or [])
    if not any(key == "job_id" for key, _ in user):
        user.append(("job_id", job_id))
    copy = Properties(PacketTypes.PUBLISH)
    copy.UserProperty = user
    for name in ("ResponseTopic", "CorrelationData", "ContentType", "PayloadFormatIndicator",
                 "MessageExpiryInterval"):
        if getattr(props, name, None) is not None:
            setattr(copy, name, getattr(props, name))
    expiry = getattr(copy, "MessageExpiryInterval", None)
    if expiry is not None:
        copy.MessageExpiryInterval = max(1, expiry - math.ceil(held_s))
    return copy


def answers_to(topic: str, root: str) -> bool:
    """Whether ``topic`` is ``root`` or lies under it (a whole level: ``a/results2`` is not under ``a/results``)."""
    return topic == root or topic.startswith(root + "/")


def answerable(topic: str) -> bool:
    """Whether an answer can be published to ``topic``, a job's Response Topic. MQTT 5 forbids
    wildcards there, though Mosquitto passes them on; and a topic the broker refuses (a control
    or non-character, over 201 levels: Mosquitto's limit) drops the worker's connection at each
    resend of the answer, and paho resends it first after every reconnect: no job is answered."""
    if not topic or len(topic.encode("utf-8", "surrogatepass")) > 65535 or topic.count("/") > TOPIC_SEPARATORS_MAX:
        return False
    for char in topic:
        code = ord(char)
        if (char in "+#" or code <= 0x1F or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF
                or 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE):
            return False
    return True


class _OptionError(EdgeOcrError):
    """A job's ``det`` or ``rois`` property is unusable: codes as POST /api/ocr's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _options(user: dict[str, str]) -> tuple[bool, tuple[Any, ...]]:
    """``det`` and ``rois`` of a job's user properties, by the rules of POST /api/ocr."""
    det_text = user.get("det", "true").strip().lower()
    if det_text not in REQUEST_FLAG_WORDS:
        raise _OptionError("invalid_option", "det: expected true or false (1/0, yes/no, on/off), got %r" % det_text[:20])
    rois: tuple[Any, ...] = ()
    if user.get("rois"):
        try:
            rois = read_regions(json.loads(user["rois"]), "rois")
        except ValueError as exc:
            raise _OptionError("invalid_rois", "rois: not valid JSON: %s" % exc) from exc
        except RecursionError as exc:
            raise _OptionError("invalid_rois", "rois: nested too deep") from exc
        except ConfigError as exc:
            raise _OptionError("invalid_rois", exc.message) from exc
    return REQUEST_FLAG_WORDS[det_text], rois
