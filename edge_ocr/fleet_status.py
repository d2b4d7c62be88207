"""``edge-ocr fleet status``: one line per device, from what each daemon keeps retained on the
broker: ``<root>/<device>/availability`` (online/offline, the LWT) and ``<root>/<device>/stats``.

``collect`` is the MQTT side (subscribe, gather for a short window: retained messages come at
once, but nothing tells a subscriber that the last one came). ``read_devices``,
``format_table`` and ``to_json_line`` are pure. Imports paho, config, errors and mqtt_client.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import paho.mqtt.client as paho

from edge_ocr.config import MqttConfig
from edge_ocr.errors import ConfigError, SinkError
from edge_ocr.mqtt_client import make_client

# stats.py's guard_level gauge: 0 ok, 1 soft, 2 hard
GUARD_LEVELS = ("ok", "soft", "hard")
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One device as its retained messages describe it; None where its stats do not say."""

    device: str
    availability: str  # online | offline | unknown (no retained availability)
    queue_depth: int | None = None
    jobs_per_s: float | None = None  # over the interval before its last stats message
    rss_mb: float | None = None
    guard: str | None = None  # ok | soft | hard
    taken: int | None = None  # fleet jobs taken, answered (done or failed), delivered again
    done: int | None = None
    failed: int | None = None
    redelivered: int | None = None
    stats_ts: str | None = None  # when its last stats message was made (ISO-8601 UTC)


def default_root(topic_prefix: str) -> str:
    """The topic level above the devices: ``edge-ocr`` for ``edge-ocr/<hostname>``."""
    return topic_prefix.rpartition("/")[0]


def check_root(root: str) -> None:
    """Raises ConfigError unless ``root`` is a topic a filter can extend (or "" for the top level)."""
    if any(c in root for c in "#+\0") or root.startswith("/") or root.endswith("/"):
        raise ConfigError("--root: expected a topic without wildcards or leading/trailing '/', got %r" % root)


def topic_filters(root: str) -> tuple[str, str]:
    base = root + "/" if root else ""
    return base + "+/stats", base + "+/availability"


def collect(cfg: MqttConfig, root: str, wait_s: float) -> dict[str, bytes]:
    """The retained (and live) availability and stats messages under ``root``, gathered for
    ``wait_s`` seconds after the broker confirmed the subscription: topic -> payload, the newest
    kept. Raises SinkError when the broker cannot be reached or refuses us."""
    messages: dict[str, bytes] = {}
    lock = threading.Lock()
    answered = threading.Event()  # CONNACK refused or SUBACK: either way, waiting is over
    refusal: list[str] = []
    client = make_client(cfg, "%s-status-%s" % (cfg.client_id, uuid.uuid4().hex[:8]), will=False)
    client.connect_timeout = CONNECT_TIMEOUT_S

    def on_connect(c: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            refusal.append(str(reason))
            answered.set()
        else:
            c.subscribe([(f, 1) for f in topic_filters(root)])

    def on_subscribe(c: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        answered.set()

    def on_message(c: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with lock:
            if msg.payload:
                messages[msg.topic] = bytes(msg.payload)
            else:  # an empty retained message clears the topic
                messages.pop(msg.topic, None)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive)
    except OSError as exc:
        raise SinkError("cannot reach the broker %s:%d: %s" % (cfg.host, cfg.port, exc)) from exc
    client.loop_start()
    try:
        if not answered.wait(CONNECT_TIMEOUT_S):
            raise SinkError("the broker %s:%d did not answer in %.0f s" % (cfg.host, cfg.port, CONNECT_TIMEOUT_S))
        if refusal:
            raise SinkError("the broker %s:%d refused the connection: %s" % (cfg.host, cfg.port, refusal[0]))
        threading.Event().wait(wait_s)  # the window for retained messages; no event marks their end
        with lock:
            return dict(messages)
    finally:
        client.disconnect()
        client.loop_stop()


def read_devices(messages: Mapping[str, bytes], root: str) -> list[DeviceStatus]:
    """The devices that ``messages`` (topic -> payload, as ``collect`` gives) describe, by name."""
    base = root + "/" if root else ""
    availability: dict[str, str] = {}
    stats: dict[str, dict[str, Any]] = {}
    for topic, payload in messages.items():
        if not topic.startswith(base):
            continue
        device, _, kind = topic[len(base):].partition("/")
        if kind == "availability":
            text = payload.decode("utf-8", "replace").strip()
            availability[device] = text if text in ("online", "offline") else "unknown"
        elif kind == "stats":
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            if isinstance(data, dict):
                stats[device] = data
    return [_device(name, availability.get(name, "unknown"), stats.get(name, {}))
            for name in sorted(set(availability) | set(stats))]


def _device(name: str, availability: str, data: Mapping[str, Any]) -> DeviceStatus:
    def number(key: str) -> float | None:
        value = data.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def count(key: str) -> int | None:
        value = number(key)
        return None if value is None else int(value)

    level = count("guard_level")
    rss_mb = number("rss_mb")
    ts = data.get("ts")
    return DeviceStatus(
        device=name,
        availability=availability,
        queue_depth=count("queue_depth"),
        jobs_per_s=number("jobs_per_s"),
        rss_mb=None if not rss_mb else round(rss_mb, 1),  # 0: the guard has not sampled yet
        guard=GUARD_LEVELS[level] if level is not None and 0 <= level < len(GUARD_LEVELS) else None,
        taken=count("fleet_jobs_taken_total"),
        done=count("fleet_jobs_done_total"),
        failed=count("fleet_jobs_failed_total"),
        redelivered=count("fleet_jobs_redelivered_total"),
        stats_ts=ts if isinstance(ts, str) else None,
    )


COLUMNS = ("device", "state", "queue", "jobs/s", "rss MB", "guard", "taken", "done", "failed", "redelivered",
           "stats at")


def format_table(devices: list[DeviceStatus]) -> str:
    """A plain-text table, one row per device; ``-`` where the device's stats do not say."""
    rows = [COLUMNS] + [_row(d) for d in devices]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    # names and words left-aligned, numbers right-aligned
    left = {0, 1, 5, 10}
    return "\n".join(
        "  ".join(cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        .rstrip() for row in rows)


def _row(d: DeviceStatus) -> tuple[str, ...]:
    def show(value: object, fmt: str = "%s") -> str:
        return "-" if value is None else fmt % value

    # A device that is not online has no queue, rate, RSS or guard level now: its last stats (kept
    # retained) told them while it ran. Its counters stand, as of "stats at".
    live = d.availability == "online"
    return (d.device, d.availability, show(d.queue_depth if live else None),
            show(d.jobs_per_s if live else None, "%.2f"), show(d.rss_mb if live else None, "%.1f"),
            show(d.guard if live else None), show(d.taken), show(d.done), show(d.failed), show(d.redelivered),
            show(d.stats_ts))


def to_json_line(device: DeviceStatus) -> str:
    return json.dumps(asdict(device), ensure_ascii=False)
