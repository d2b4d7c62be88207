"""MQTT sink: results → on-disk spool → broker (paho-mqtt 2.x), availability, stats, commands,
Home Assistant discovery. Topics are those of SPEC (``<p>`` = ``mqtt.topic_prefix``).

Every result message is first appended to the spool (fsynced); the ``mqtt`` thread publishes
the spool in order while connected, at most ``max_inflight`` unacknowledged, and removes an
entry only when its QoS 1 PUBACK arrives (``on_publish``). After a reconnect paho re-sends
what was in flight; new entries wait until those are acknowledged, so order holds.
Commands are handed to an injected callback. Imports config, results, stats, errors.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import re
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho

from edge_ocr import __version__
from edge_ocr.config import MqttConfig
from edge_ocr.errors import EdgeOcrError, SinkError
from edge_ocr.mqtt_client import make_client, stop_loop
from edge_ocr.results import Result, Status
from edge_ocr.sinks.spool import Message, Spool
from edge_ocr.stats import Stats

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"
UTF8_BOM = b"\xef\xbb\xbf"  # some Windows and .NET publishers start a JSON payload with it

# on_capture(source or None for all) -> (ok, message); called on paho's thread, must not block.
CaptureCallback = Callable[[str | None], tuple[bool, str]]
PreviousCallback = Callable[[str, str, Mapping[str, str]], None]  # (source, text, {region: text})



# Bounds of a retained or spooled state a restart takes its previous readings from (``_seed``): the
# largest result JSON of eval-dev's pages is ~200 KB, a dense page's text ~20 KB.
COMMAND_LOG_LINES, COMMAND_LOG_WINDOW_S = 20, 60.0  # commands logged one a line, at most, per window
SEED_MAX_BYTES = 2 * 1024 * 1024
SEED_MAX_TEXT = 256 * 1024

def result_topic(topic: str) -> str:
    """``<source>/<state|text|event>``: a result's topic below the prefix (the last two levels; a
    source's name holds no ``/``), whatever prefix it was spooled under."""
    return "/".join(topic.rsplit("/", 2)[-2:])

class _PahoNoise(logging.Filter):
    """paho 2.x logs "Client is not connected" at ERROR when its loop races a refused or closing
    connection; that is routine here (we reconnect), so it becomes DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and str(record.msg).startswith("Client is not connected"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


# A message is taken as refused by the broker when the connection was lost this many times in a
# row within REFUSED_WITHIN_S of connecting, while paho was resending it first.
REFUSED_AFTER = 3
# A connection dropped this many times within FLAP_WINDOW_S, each time soon after it was made, is
# flapping (two devices with one client_id take the session from each other every second): one
# summary line a window instead of two lines a drop, and a hint at the likely cause.
FLAP_DROPS = 3
FLAP_WINDOW_S = 60.0
REFUSED_WITHIN_S = 2.0


class MqttSink:
    """Publishes results through the spool; ``start()`` connects in the background."""

    name = "mqtt"

    def __init__(
        self,
        cfg: MqttConfig,
        sources: tuple[str, ...],
        stats: Stats,
        on_capture: CaptureCallback,
        source_status: Callable[[str], str] = lambda name: ONLINE,
        regions: Mapping[str, tuple[str, ...]] | None = None,
        on_previous: PreviousCallback | None = None,
    ) -> None:
        self.cfg = cfg
        # Given the last text this device published per source (and per region) before it started:
        # the retained <p>/<source>/state, read once at the first connect, so a restart does not
        # announce the same reading as a change (pipeline.Pipeline.seed_previous).
        self.on_previous = on_previous
        self._state_mid: int | None = None
        self._unsubscribe_mid: int | None = None
        # Set once the retained states were read (their UNSUBACK comes after them), or at once
        # without on_previous: the daemon starts its sources after it, for at most a moment.
        self.previous_read = threading.Event()
        if on_previous is None:
            self.previous_read.set()
        self.sources = sources
        self.regions = dict(regions or {})  # source -> its ROI names: one HA sensor each
        self.stats = stats
        self.on_capture = on_capture
        self.source_status = source_status
        self.prefix = cfg.topic_prefix
        self.node = discovery_node(cfg.client_id)
        self.spool: Spool | None = None
        self.client: paho.Client | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._statused: dict[str, str] = {}  # source -> its last status reported: set offline on close
        self._wake = threading.Event()
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._inflight: dict[int, tuple[int, int]] = {}  # mid -> (spool seq, its payload's bytes)
        self._hold: set[int] = set()  # mids paho re-sends after a reconnect; new ones wait for them
        self._status_due: set[str] = set()  # sources whose status the mqtt thread publishes next
        # A message the broker will not take (over its packet size limit) drops the connection at
        # each resend; paho resends it first after every reconnect, and the rest wait behind it.
        self._held_drops: tuple[int, int] = (0, 0)  # (suspect held seq, connections lost resending it)
        self._connected_at = 0.0
        self._drops: collections.deque[float] = collections.deque()  # monotonic times of recent short-lived links
        self._flap_told = 0.0  # when the last flapping summary was logged
        self._largest_taken = 0  # bytes of the largest payload the broker acknowledged
        self._refused_seq: int | None = None  # set aside by the mqtt thread
        self._acked: deque[int] = deque()
        self._last_seq = 0
        self._fail_logged = False
        self._refusal: str | None = None
        self._was_connected = False
        self.last_error = ""
        self._rate_from = (time.monotonic(), 0.0)  # (when, jobs_total) of the last <p>/stats message
        self._rerooted = False  # logged once: spooled results published under a new topic_prefix
        self._command_window = (-math.inf, 0, 0)  # (start, lines logged, commands not logged): paho's thread
        self._announced = threading.Event()  # the daemon is ready: online may be said (announce)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Open the spool, connect asynchronously (retrying with backoff), start the ``mqtt`` thread."""
        self.spool = Spool(self.cfg.spool_dir, self.cfg.spool_max_messages)
        self.stats.set("spool_depth", len(self.spool))
        if self.on_previous is not None and len(self.spool):
            # Results the last run could not send are newer than the broker's retained state:
            # they seed first, and the retained state only fills in the sources they lack.
            spooled = self.spool.newest({"%s/state" % source for source in self.sources}, key=result_topic)
            for topic, message in spooled.items():
                self._seed(topic.rpartition("/")[0], message.payload, "%s/%s" % (self.prefix, topic))
        self.client = self._connect_client()
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._thread.start()

    def announce(self) -> None:
        """The daemon is ready: ``<p>/availability`` says ``online`` now and at each reconnect.

        Not at the first connect: the sources start after it, and an automation that sends a
        capture at ``online`` found its source not yet online (the journal's ``daemon ready``)."""
        self._announced.set()
        client = self.client
        if self._connected.is_set() and client is not None:  # else _connect_done publishes it
            self._say_online(client)

    def _say_online(self, client: paho.Client) -> None:
        client.publish("%s/availability" % self.prefix, ONLINE, qos=1, retain=True)

    def _connect_client(self) -> paho.Client:
        """A paho client with our callbacks, connecting in the background (retrying with backoff)."""
        client = make_client(self.cfg)
        paho_log = logging.getLogger(__name__ + ".paho")
        if not any(isinstance(f, _PahoNoise) for f in paho_log.filters):
            paho_log.addFilter(_PahoNoise())
        client.enable_logger(paho_log)
        # paho annotates the delays as int, but its backoff does float arithmetic and accepts floats
        client.reconnect_delay_set(self.cfg.reconnect_min_delay, self.cfg.reconnect_max_delay)  # type: ignore[arg-type]
        client.max_inflight_messages_set(self.cfg.max_inflight + 50)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        self.client = client
        client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        client.loop_start()
        return client

    def close(self, timeout_s: float = 3.0) -> None:
        """Publish ``offline`` (clean stop), disconnect, stop the threads, all within ``timeout_s``
        (the daemon's stop fits systemd's TimeoutStopSec). Unacked entries stay spooled."""
        deadline = time.monotonic() + timeout_s
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("thread did not stop thread=%s", self._thread.name)
        client = self.client
        if client is None:
            return
        while self._connected.is_set() and self._inflight and time.monotonic() < deadline:
            self._wake.wait(0.1)  # let PUBACKs of what is in flight arrive, so they leave the spool
            self._wake.clear()
            self._drain_acks()
        self._drain_acks()
        if self._connected.is_set():
            try:
                # The last counters (`fleet status` showed a stopped worker's count of up to a
                # stats_interval before), and every source's retained status too: a stopped daemon's
                # sources read no longer online to whoever watches them (a Node-RED flow on
                # <p>/<source>/status).
                self._publish_stats()
                for source in sorted(set(self.sources) | set(self._statused)):
                    client.publish("%s/%s/status" % (self.prefix, source), OFFLINE, qos=1, retain=True)
                info = client.publish("%s/availability" % self.prefix, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(max(0.5, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt offline not published error=%s", exc)
            client.disconnect()
        if not stop_loop(client, max(0.1, deadline - time.monotonic())):
            log.warning("mqtt stop left a connect attempt behind host=%s port=%d", self.cfg.host, self.cfg.port)
        log.info("mqtt stopped spooled=%d", len(self.spool) if self.spool else 0)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def update(self, cfg: MqttConfig) -> None:
        """Apply the live keys of a reloaded config (publish_every, stats_interval)."""
        self.cfg = cfg

    # -- Sink ------------------------------------------------------------------------------

    def publish(self, result: Result) -> None:
        """Spool the result's messages (state, text, event); raises SinkError if the disk fails."""
        assert self.spool is not None, "start() first"
        qos = self.cfg.qos
        base = "%s/%s" % (self.prefix, result.source)
        payload = result.to_json().encode("utf-8")
        self.spool.append(Message(base + "/state", payload, qos, True))
        if result.status is not Status.ERROR:
            self.spool.append(Message(base + "/text", result.text.encode("utf-8"), qos, True))
        every = self.cfg.publish_every if result.publish_every is None else result.publish_every
        if result.changed or every:
            self.spool.append(Message(base + "/event", payload, qos, False))
        self.stats.set("spool_depth", len(self.spool))
        self.stats.set("spool_dropped_total", self.spool.dropped)  # while the broker is away too
        self._wake.set()

    def set_source_status(self, source: str, status: str) -> None:
        """Publish ``source``'s status (retained), from the ``mqtt`` thread as every status is: it
        reads the status when it publishes, so a change during a reconnect is never overtaken by
        the value read before it."""
        with self._lock:
            self._statused[source] = status  # the fleet's source is not among ``sources``
            self._status_due.add(source)
        self._wake.set()

    # -- the mqtt thread: spool → broker ----------------------------------------------------

    def _run(self) -> None:
        last_stats = -math.inf
        while not self._closing.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._drain_acks()
                if self._refused_seq is not None:
                    self._set_aside(self._refused_seq)
                if self._connected.is_set():
                    self._publish_statuses()
                    self._publish_spooled()
                    # Against the current stats_interval: a reload takes effect from the last message.
                    if time.monotonic() >= last_stats + self.cfg.stats_interval:
                        last_stats = time.monotonic()
                        self._publish_stats()
            except Exception:  # thread boundary: keep publishing whatever happens
                log.exception("mqtt thread error")

    def _drain_acks(self) -> None:
        assert self.spool is not None
        removed = 0
        while self._acked:
            mid = self._acked.popleft()
            with self._lock:
                seq, size = self._inflight.pop(mid, (None, 0))
                self._hold.discard(mid)
            if seq is not None:
                self.spool.remove(seq)
                self._largest_taken = max(self._largest_taken, size)
                removed += 1
        if removed:
            self.stats.inc("mqtt_published_total", removed)
            self.stats.set("spool_depth", len(self.spool))
            self.stats.set("spool_dropped_total", self.spool.dropped)

    def _set_aside(self, seq: int) -> None:
        """Move spool entry ``seq``, which the broker refused at every resend (the connection lost
        each time right after it, though the broker had answered on it), to the spool's
        ``set-aside/``, and start afresh with a new client: paho keeps its own copy to resend
        first, and a new client holds none. What was in flight is published again from the spool
        (at least once)."""
        assert self.spool is not None
        message = next((m for s, m in self.spool.after(seq - 1, 1) if s == seq), None)
        old = self.client
        self._connected.clear()
        if old is not None:
            for callback in ("on_connect", "on_connect_fail", "on_disconnect", "on_publish", "on_message",
                             "on_subscribe", "on_unsubscribe"):
                setattr(old, callback, None)  # nothing of the old client's reaches us any more
            old.disconnect()
            stop_loop(old, 2.0)
        try:
            kept = self.spool.set_aside(seq)
        except SinkError as exc:
            log.error("%s; removed instead", exc.message)
            self.spool.remove(seq)
            kept = None
        log.error("mqtt message set aside, the broker dropped the connection each time it was sent (over its "
                  "maximum packet size?) topic=%s bytes=%d kept=%s", message.topic if message else "?",
                  len(message.payload) if message else 0, kept or "no")
        self.stats.inc("mqtt_refused_total")
        with self._lock:
            self._inflight.clear()
            self._hold = set()
            self._acked.clear()
        self._last_seq = 0
        self._held_drops, self._refused_seq = (0, 0), None
        self.client = self._connect_client()

    def _publish_statuses(self) -> None:
        assert self.client is not None
        with self._lock:
            due, self._status_due = self._status_due, set()
            reported = {source: self._statused.get(source) for source in due}
        for source in sorted(due):  # a status reported from here on is due again: published after this
            status = reported[source] or self.source_status(source)
            self.client.publish("%s/%s/status" % (self.prefix, source), status, qos=1, retain=True)

    def _publish_spooled(self) -> None:
        assert self.spool is not None and self.client is not None
        with self._lock:
            if self._hold:
                return
            room = self.cfg.max_inflight - len(self._inflight)
        if room <= 0:
            return
        for seq, message in self.spool.after(self._last_seq, room):
            if not self._connected.is_set():
                return
            # Under today's prefix: a result spooled before topic_prefix changed (the default names the
            # host: a Pi renamed) would otherwise go where no subscriber (Home Assistant) listens now.
            topic = "%s/%s" % (self.prefix, result_topic(message.topic))
            if topic != message.topic and not self._rerooted:
                self._rerooted = True
                log.warning("mqtt spooled results made under another topic prefix are published under this one "
                            "spooled=%s now=%s", message.topic, topic)
            info = self.client.publish(topic, message.payload, qos=message.qos, retain=message.retain)
            self._last_seq = seq
            if message.qos == 0:
                self.spool.remove(seq)  # QoS 0 has no acknowledgement to wait for
                continue
            with self._lock:
                self._inflight[info.mid] = (seq, len(message.payload))
        self.stats.set("spool_dropped_total", self.spool.dropped)

    def _publish_stats(self) -> None:
        """The counters, plus ``jobs_per_s`` since the previous message (since start for the first):
        one retained message cannot give a reader a rate, and a lifetime average hides a stall."""
        assert self.client is not None
        data: dict[str, Any] = self.stats.view()
        now, jobs = time.monotonic(), data["jobs_total"]
        since, before = self._rate_from
        data["jobs_per_s"] = round((jobs - before) / max(now - since, 0.001), 2)
        self._rate_from = (now, jobs)
        data["ts"] = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self.client.publish("%s/stats" % self.prefix, json.dumps(data), qos=0, retain=True)

    # -- paho callbacks (paho's thread) -----------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        try:
            self._connect_done(client, reason_code)
        except Exception:  # paho thread boundary: an exception here would end paho's thread for good
            log.exception("mqtt connect handling failed")

    def _connect_done(self, client: paho.Client, reason_code: Any) -> None:
        if reason_code.is_failure:
            reason = str(reason_code)
            self.last_error = "refused: %s" % reason
            if self._refusal != reason:
                self._refusal = reason
                log.error("mqtt connection refused host=%s port=%d reason=%s (check mqtt.username/password_file)",
                          self.cfg.host, self.cfg.port, reason)
            return
        self._refusal = None
        self._fail_logged = False
        self.last_error = ""
        log.log(logging.DEBUG if self._flapping() else logging.INFO, "mqtt connected host=%s port=%d client_id=%s",
                self.cfg.host, self.cfg.port, self.cfg.client_id)
        subs = [("%s/cmd/+" % self.prefix, 1), ("%s/+/capture" % self.prefix, 1)]  # cmd/+: unknown ones answered
        # Our retained discovery configs come back: those of removed sources/ROIs are cleared, and
        # with discovery turned off all of them (Home Assistant keeps an entity while its config is).
        subs.append(("%s/sensor/%s/+/config" % (self.cfg.discovery_prefix, self.node), 1))
        if self.cfg.discovery:
            subs.append(("%s/status" % self.cfg.discovery_prefix, 1))
            self._publish_discovery(client)
        client.subscribe(subs)
        if self.on_previous is not None and not self._was_connected:
            # Retained messages come right after the SUBACK; then the subscription goes
            # (_on_subscribe), so this device's own results do not come back to it.
            self._state_mid = client.subscribe("%s/+/state" % self.prefix, qos=1)[1]
        with self._lock:
            self._hold = set(self._inflight)  # paho re-sends these first, in order
            self._status_due |= set(self.sources) | set(self._statused)  # the fleet's too (set_source_status)
        self._was_connected = True
        self._connected_at = time.monotonic()
        self._connected.set()
        if self._announced.is_set():  # after _connected is set: announce() checks them the other way round
            self._say_online(client)
        self.stats.set("mqtt_connected", 1)
        self._wake.set()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        if not self._fail_logged:
            self.last_error = "unreachable"
            self._fail_logged = True
            # paho says only that it failed: one probe (as `edge-ocr check` makes) finds why, off
            # paho's thread so the retries go on meanwhile. Once per outage.
            threading.Thread(target=self._log_unreachable, name="mqtt-why", daemon=True).start()
        else:
            log.debug("mqtt connect failed host=%s port=%d", self.cfg.host, self.cfg.port)

    def _log_unreachable(self) -> None:
        try:
            why = probe(self.cfg, timeout_s=5.0) or "it answers now"
        except EdgeOcrError as exc:  # a TLS or password file gone since the start
            why = exc.message
        if self._connected.is_set():  # back while the probe ran: nothing to report any more
            return
        self.last_error = "unreachable: %s" % why
        log.warning("mqtt broker unreachable host=%s port=%d reason=%s; results are spooled, retrying with backoff",
                    self.cfg.host, self.cfg.port, why)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        with self._lock:
            held = [self._inflight[mid] for mid in self._hold if mid in self._inflight]
            # Only a message larger than any the broker took can be over its size limit: a link
            # that drops everything is a bad link, not a refused message.
            too_large = [seq for seq, size in held if size > self._largest_taken > 0]
        if was and too_large and time.monotonic() - self._connected_at < REFUSED_WITHIN_S:
            suspect = min(too_large)  # the first of them paho resends
            drops = self._held_drops[1] + 1 if self._held_drops[0] == suspect else 1
            self._held_drops = (suspect, drops)
            if drops >= REFUSED_AFTER and self._refused_seq is None:
                self._refused_seq = suspect
                self._wake.set()
        self.stats.set("mqtt_connected", 0)
        if was and not self._closing.is_set():
            self._log_drop(reason_code)

    def _flapping(self) -> bool:
        now = time.monotonic()
        while self._drops and now - self._drops[0] > FLAP_WINDOW_S:
            self._drops.popleft()
        return len(self._drops) >= FLAP_DROPS

    def _log_drop(self, reason: Any) -> None:
        """One line a drop; while the link keeps dropping soon after it is made, one line a window."""
        now = time.monotonic()
        if now - self._connected_at < FLAP_WINDOW_S:
            self._drops.append(now)
        else:  # it held for a while: a drop of its own, not a flap
            self._drops.clear()
        if not self._flapping():
            log.warning("mqtt disconnected host=%s reason=%s; results are spooled", self.cfg.host, reason)
        elif now - self._flap_told >= FLAP_WINDOW_S:
            self._flap_told = now
            log.warning("mqtt connection keeps dropping host=%s drops=%d in the last %.0f s reason=%s; is another "
                        "client using client_id=%s? (each device needs its own mqtt.client_id); results are spooled",
                        self.cfg.host, len(self._drops), FLAP_WINDOW_S, reason, self.cfg.client_id)
        else:
            log.debug("mqtt disconnected host=%s reason=%s", self.cfg.host, reason)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._acked.append(mid)
        self._wake.set()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if mid == self._state_mid:
            self._state_mid = None
            self._unsubscribe_mid = client.unsubscribe("%s/+/state" % self.prefix)[1]

    def _on_unsubscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any,
                        properties: Any) -> None:
        if mid == self._unsubscribe_mid:  # the broker sent the retained states before this
            self.previous_read.set()

    def _take_previous(self, msg: paho.MQTTMessage) -> bool:
        """A retained ``<p>/<source>/state`` of one of our sources: hand its texts to ``on_previous``."""
        source, _, leaf = msg.topic[len(self.prefix) + 1:].partition("/")
        if not (msg.retain and leaf == "state" and source in self.sources and self.on_previous is not None):
            return False
        self._seed(source, msg.payload, msg.topic)
        return True

    def _seed(self, source: str, payload: bytes | bytearray, topic: str) -> None:
        """``on_previous`` with the texts of a result JSON (a retained or spooled ``state``)."""
        assert self.on_previous is not None
        if len(payload) > SEED_MAX_BYTES:
            # Not one of ours (a dense page's result is a few hundred KB): a 42 MB state another tool
            # retained became the first result's previous_text, in done/, /api/latest and the spool.
            log.warning("previous state ignored, too large topic=%s bytes=%d", topic, len(payload))
            return
        try:
            state = json.loads(payload)
            # An error result's text is empty: the reading before it is its previous_text.
            text = state.get("previous_text") if state.get("status") == "error" else state.get("text")
            regions = {name: r.get("text") for name, r in (state.get("regions") or {}).items()}
        except (ValueError, TypeError, AttributeError):
            log.warning("previous state not readable topic=%s", topic)
            return
        # Only text: a retained state another tool wrote may hold anything.
        if isinstance(text, str) and len(text) <= SEED_MAX_TEXT:
            self.on_previous(source, text, {n: t for n, t in regions.items()
                                            if isinstance(t, str) and t and len(t) <= SEED_MAX_TEXT})

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            if msg.topic.startswith(self.prefix + "/") and msg.topic.endswith("/state"):
                self._take_previous(msg)
                return
            if msg.topic == "%s/status" % self.cfg.discovery_prefix:
                if msg.payload.decode("utf-8", "replace").strip().lower() == ONLINE:
                    log.info("home assistant online, discovery re-sent")
                    self._publish_discovery(client)
                return
            if msg.topic.startswith("%s/sensor/%s/" % (self.cfg.discovery_prefix, self.node)):
                if msg.payload and msg.topic not in self._discovery_topics():
                    log.info("stale home assistant discovery cleared topic=%s", msg.topic)
                    client.publish(msg.topic, b"", qos=1, retain=True)
                return
            rest = msg.topic[len(self.prefix) + 1:] if msg.topic.startswith(self.prefix + "/") else ""
            target, _, command = rest.rpartition("/")
            if not target or (target == "cmd" and command == "result") or (target != "cmd" and command != "capture"):
                return  # our own acks, and other devices' or tools' topics under the prefix
            source: str | None = None if target == "cmd" else target
            if msg.retain:
                # A command published retained would run again at every reconnect and restart.
                ok, message = False, "retained command ignored: publish commands without the retain flag"
            elif command != "capture":
                ok, message = False, "unknown command %r (expected capture)" % command
            else:
                try:
                    if source is None:
                        source = _named_source(msg.payload)  # {"source": "meter"} on cmd/capture, as Node-RED sends it
                    ok, message = self.on_capture(source)
                except ValueError as exc:
                    ok, message = False, str(exc)
            self._log_command(command, source, ok, message)
            ack = {
                "command": command,
                "source": source,
                "ok": ok,
                "message": message,
                "request": msg.payload[:200].decode("utf-8", "replace"),
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
            client.publish("%s/cmd/result" % self.prefix, json.dumps(ack), qos=1, retain=False)
        except Exception:  # paho thread boundary: a bad command never stops the client
            log.exception("mqtt command failed topic=%s", msg.topic)

    def _log_command(self, command: str, source: str | None, ok: bool, message: str) -> None:
        """One journal line a command, at most COMMAND_LOG_LINES a COMMAND_LOG_WINDOW_S, then one line
        counting the rest (a flood of 50,000 commands in a second was 50,000 lines: past journald's
        rate limit, which then drops everyone's lines). Each command is still answered on cmd/result."""
        now = time.monotonic()
        start, logged, quiet = self._command_window
        if now - start >= COMMAND_LOG_WINDOW_S:
            if quiet:
                log.warning("commands not logged: %d more in %.0f s", quiet, now - start)
            start, logged, quiet = now, 0, 0
        if logged < COMMAND_LOG_LINES:
            logged += 1
            log.info("command %s source=%s ok=%s%s", command, source or "*", ok, "" if ok else " why=%s" % message)
        else:
            quiet += 1
        self._command_window = (start, logged, quiet)

    def _publish_discovery(self, client: paho.Client) -> None:
        for source in self.sources:
            client.publish(discovery_topic(self.cfg, self.node, source),
                           json.dumps(discovery_config(self.cfg, self.node, source)), qos=1, retain=True)
            for roi in self.regions.get(source, ()):
                client.publish(discovery_topic(self.cfg, self.node, source, roi),
                               json.dumps(discovery_config(self.cfg, self.node, source, roi)), qos=1, retain=True)

    def _discovery_topics(self) -> set[str]:
        topics: set[str] = set()
        if not self.cfg.discovery:
            return topics
        for source in self.sources:
            topics.add(discovery_topic(self.cfg, self.node, source))
            topics.update(discovery_topic(self.cfg, self.node, source, roi) for roi in self.regions.get(source, ()))
        return topics


def discovery_topic(cfg: MqttConfig, node: str, source: str, roi: str | None = None) -> str:
    """``<discovery_prefix>/sensor/<node>/<source>[_<roi>]/config``."""
    return "%s/sensor/%s/%s/config" % (cfg.discovery_prefix, node, source if roi is None else "%s_%s" % (source, roi))


def discovery_node(client_id: str) -> str:
    """The device's name in discovery topics and ids: ``client_id`` with anything but ASCII letters,
    digits, ``_`` and ``-`` made ``_``; and, when it holds other scripts (客厅扫描仪 and 书房扫描仪
    were both ``_____``, each daemon clearing the other's sensors), 8 hex digits of its sha256."""
    node = re.sub(r"[^A-Za-z0-9_-]", "_", client_id)
    if not client_id.isascii():
        node += "-" + hashlib.sha256(client_id.encode("utf-8")).hexdigest()[:8]
    return node


def discovery_config(cfg: MqttConfig, node: str, source: str, roi: str | None = None) -> dict[str, Any]:
    """Home Assistant MQTT discovery payload of one source's text sensor, or of one of its ROIs
    (reading ``regions.<roi>.text`` from the same retained state JSON)."""
    host = socket.gethostname().split(".")[0]
    if roi is None:
        ident, name = source, "%s text" % source
        # An error result (a corrupt file) has no text: the sensor keeps the last text read, as
        # <p>/<source>/text does: the result's previous_text, else (a source never compared, or
        # nothing read yet) what the sensor shows (``this``, the entity's own state in Home
        # Assistant's MQTT templates; "unknown" right after Home Assistant starts). The attributes
        # say what failed.
        value = ("{{ (value_json.previous_text if value_json.previous_text is not none else this.state)[:255]"
                 " if value_json.status == 'error' else value_json.text[:255] }}")
        attributes = ("{{ {'confidence': value_json.confidence, 'status': value_json.status,"
                      " 'error': value_json.error, 'ts': value_json.ts} | tojson }}")
    else:
        ident, name = "%s_%s" % (source, roi), "%s %s" % (source, roi)
        # A result lists every region of its source; one without this region (an error result, or
        # the retained state of before the region was added or renamed) keeps what the sensor shows.
        region = "((value_json.regions or {}).get(%s) or {})" % json.dumps(roi)
        value = "{{ %s.get('text', this.state)[:255] }}" % region
        attributes = ("{%% set region = %s %%}{{ {'score': region.get('score'), 'status': region.get('status'),"
                      " 'read': region.get('read'), 'ts': value_json.ts} | tojson }}" % region)
    return {
        "name": name,
        "unique_id": "%s_%s" % (node, ident),
        # HA 2025.10+ (object_id, deprecated then, stopped working in 2026.4): the entity id asked for.
        "default_entity_id": "sensor.%s" % re.sub(r"[^a-z0-9_]+", "_", ("edge_ocr_%s_%s" % (host, ident)).lower()),
        "state_topic": "%s/%s/state" % (cfg.topic_prefix, source),
        "value_template": value,
        "json_attributes_topic": "%s/%s/state" % (cfg.topic_prefix, source),
        "json_attributes_template": attributes,
        # Unavailable when the daemon is (its last will after a kill) or when the source is offline
        # (a camera gone, a folder whose results cannot be written): its text is not current then.
        "availability": [{"topic": topic, "payload_available": ONLINE, "payload_not_available": OFFLINE}
                         for topic in ("%s/availability" % cfg.topic_prefix,
                                       "%s/%s/status" % (cfg.topic_prefix, source))],
        "availability_mode": "all",
        "icon": "mdi:text-recognition",
        "device": {
            "identifiers": [node],
            "name": "edge-ocr %s" % host,
            "manufacturer": "edge-ocr",
            "model": "edge-ocr",
            "sw_version": __version__,
        },
    }


def probe(cfg: MqttConfig, timeout_s: float = 5.0) -> str | None:
    """Connect once and disconnect: None if the broker accepts us, else a one-line reason."""
    client = make_client(cfg, client_id=cfg.client_id + "-check")
    client.will_clear()  # a check must never make the broker announce the daemon offline
    outcome: dict[str, str | None] = {}
    done = threading.Event()

    def on_connect(c: paho.Client, u: Any, f: Any, reason_code: Any, p: Any) -> None:
        outcome["error"] = "connection refused: %s" % reason_code if reason_code.is_failure else None
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(cfg.host, cfg.port, keepalive=max(5, int(timeout_s)))
    except ssl.SSLError as exc:
        return "TLS error: %s" % (exc.reason or exc)
    except OSError as exc:
        return "cannot connect to %s:%d: %s" % (cfg.host, cfg.port, exc.strerror or exc)
    except ValueError as exc:  # paho's "Invalid host.", the resolver's UnicodeError: one line, not a traceback
        return "cannot connect to %s:%d: %s" % (cfg.host, cfg.port, exc)
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return "no answer from %s:%d within %.0f s" % (cfg.host, cfg.port, timeout_s)
        return outcome.get("error")
    finally:
        client.disconnect()
        client.loop_stop()


def _named_source(payload: bytes | bytearray) -> str | None:
    """The source a ``cmd/capture`` payload names (a JSON object's ``"source"`` string), or None:
    every source, for a payload that is no JSON object (empty, or a Home Assistant button's
    ``PRESS``), which is only echoed back as the ack's ``request``. ValueError for an object that
    names no source properly: a typo there must not capture every camera."""
    if not payload.removeprefix(UTF8_BOM).lstrip().startswith(b"{"):
        return None
    if len(payload) > 4096:
        raise ValueError("command payload over 4096 bytes")
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise ValueError("command payload is not valid JSON: %s" % exc) from None
    named = data.get("source") if isinstance(data, dict) else None
    if named is None and isinstance(data, dict) and "source" not in data:
        return None  # {} : every source
    if not isinstance(named, str) or not named:
        raise ValueError("\"source\" must name a source, got %s" % json.dumps(named))
    return named
