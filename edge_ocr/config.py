"""The daemon's configuration: one frozen dataclass per TOML table, ``load_config()``, ``Secret``.

Each key is declared once, as a dataclass field: its type, default, bounds, doc and whether
SIGHUP applies it live (``setting()``). One walker (``_read``) parses every table from those
declarations; the few keys with their own syntax (``threads``, ``device``, ``size``, ``rois``,
secrets) are parsed by hand and handed to it. Cross-key rules live on the dataclass
(``__post_init__``), so a bad combination is refused however the object is built.

Unknown keys and bad values raise ConfigError naming the dotted key path and the reason
(``mqtt.port: expected 1..65535, got 70000``). Secrets are read from files (``password_file``,
``$CREDENTIALS_DIRECTORY``) into ``Secret``, whose repr is ``'***'``. ``reference_markdown()``
renders the declarations as the README's config reference (a test keeps the two equal).
Imports stdlib, errors and the engine's value types.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import math
import os
import re
import socket
import tomllib
import typing
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edge_ocr.engine.types import MAX_THREADS, READING_ORDERS, EngineOptions, Region
from edge_ocr.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/edge-ocr/config.toml")
SYSTEM_STATE = Path("/var/lib/edge-ocr")
CREDENTIAL_PASSWORD = "mqtt_password"  # systemd LoadCredential= name looked up when password_file is unset
CREDENTIAL_TOKEN = "http_token"  # ... and when http.token_file is unset
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Secret:
    """A string that never shows itself: ``repr``/``str`` are ``'***'``; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Invalid(ConfigError):
    """A cross-key rule broken on one dataclass: ``key`` is relative to its table; the walker
    prefixes the table's path (``guard.rss_hard_mb: ...``)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__("%s: %s" % (key, reason))
        self.key = key
        self.reason = reason


def parse_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); port 0 = any free port. Raises Invalid."""
    host, sep, port = bind.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise Invalid("bind", "expected HOST:PORT, got %r" % bind)
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_token_off_loopback(host: str, has_token: bool) -> None:
    """SPEC: "Binding elsewhere requires a token". Raises Invalid for http.bind."""
    if not has_token and not is_loopback(host):
        raise Invalid("bind", "%s is reachable from other machines; set http.token_file or bind 127.0.0.1" % host)


def _check_declared(obj: Any) -> None:
    """The declared bounds and choices of every key of ``obj``, however it was built. Raises Invalid."""
    for f in keys(type(obj)):
        value, meta = getattr(obj, f.name), f.metadata
        if meta["choices"] and value not in meta["choices"]:
            raise Invalid(f.name, "expected one of %s, got %r" % (" | ".join(map(str, meta["choices"])), value))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = meta["lo"], meta["hi"]
            if isinstance(value, float) and not math.isfinite(value):  # nan passes every comparison
                raise Invalid(f.name, "expected a finite number, got %s" % value)
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise Invalid(f.name, "expected %s, got %s" % (_range_text(lo, hi), value))


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return "%s..%s" % (lo, hi)
    return ">= %s" % lo if lo is not None else "<= %s" % hi


def _not_below(key: str, value: float, floor_key: str, floor: float) -> None:
    """A maximum below its minimum (``retry_max_delay < retry_min_delay``) names both keys."""
    if value < floor:
        raise Invalid(key, "expected >= %s (%s), got %s" % (floor_key, floor, value))


def setting(default: Any = MISSING, doc: str = "", *, lo: float | None = None, hi: float | None = None,
            choices: tuple[Any, ...] = (), live: bool = False, shown: str | None = None,
            option: str | None = None, match: re.Pattern[str] | None = None, max_len: int | None = None) -> Any:
    """Declare one config key as a dataclass field: its default, doc and bounds.

    ``shown`` is the default as documented when it is computed at load time (``<state>/spool``);
    ``live`` means SIGHUP applies a change without a restart; ``option`` names the
    ``EngineOptions`` field an ``[engine]`` key sets. A field without a doc is not a key.
    """
    meta = {"doc": doc, "lo": lo, "hi": hi, "choices": choices, "live": live, "shown": shown, "option": option,
            "match": match, "max_len": max_len}
    return field(default=default, metadata=meta)


def keys(cls: type) -> list[Any]:
    """The fields of a config dataclass that are keys (declared with a doc), in order."""
    return [f for f in fields(cls) if f.metadata.get("doc") is not None]


def _option(name: str, doc: str, **kw: Any) -> Any:
    """An ``[engine]`` key whose default is the engine's own (``EngineOptions.<name>``)."""
    default = next(f.default for f in fields(EngineOptions) if f.name == name)
    return setting(default, doc, option=name, **kw)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    pack: str = _option("pack", "a pack from `edge-ocr models list`; `default` = the recommended one")
    threads: int | str = _option("threads", "ONNX Runtime threads: `auto` (the big cores this process may use) "
                                 "or an integer >= 1", lo=1)
    precision: str = _option("precision", "`auto` (the fastest variant that passed its accuracy gate), `fp32`, "
                             "`int8`", choices=("auto", "fp32", "int8"))
    cls: bool = _option("use_cls", "angle classifier for upside-down lines")
    fast_reader: bool = _option("use_rec_fast", "draft single lines and regions wider than `draft_min_width`, and the "
                                "lines of Chinese pages, with the pack's fast reader and re-read the unsure ones")
    recheck_below: float = _option("recheck_below", "drafts with a lower mean confidence are re-read by the "
                                   "accurate recogniser", lo=0.0, hi=1.0)
    draft_min_width: int = _option("draft_min_width", "single lines and regions up to this wide (px at 48 px high) "
                                   "skip the draft", lo=0, hi=100_000)
    det_limit_side: int = _option("det_limit_side", "detection input: longer side at most this many pixels",
                                  lo=32, hi=8192)
    det_small_text: float = _option("det_small_text", "a shrunk image whose lines are on median fewer pixels "
                                    "high than this is detected again at twice the scale, in strips (0 = never)",
                                    lo=0.0, hi=1000.0)
    reading_order: str = _option("reading_order", "`columns`: a page's text columns one after the other (a "
                                 "spread, a two-column report), then rows; `rows`: rows across the whole page (a "
                                 "form whose labels and values are both long)", choices=READING_ORDERS)
    max_megapixels: float = _option("max_megapixels", "larger images are refused before decoding", lo=0.1,
                                    hi=1000.0)
    low_confidence: float = setting(0.6, 'status "low_confidence" when a line scores below this', lo=0.0, hi=1.0,
                                    live=True)
    spinning: bool = _option("allow_spinning", "ONNX Runtime's threads busy-wait for work while a model runs "
                             "(never between runs); off with pipeline.workers > 1, where runs overlap")
    memory: str = setting("default", "`low`: freed image buffers go back to the kernel at once (lower, flat RSS; "
                          "costs page faults, see Memory)", choices=("default", "low"))

    def __post_init__(self) -> None:
        threads = self.threads  # its own syntax, checked first: the declared bound says only ">= 1"
        if threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int)
                                  or not 1 <= threads <= MAX_THREADS):
            raise Invalid("threads", 'expected "auto" or an integer from 1 to %d, got %r' % (MAX_THREADS, threads))
        _check_declared(self)

    def to_options(self) -> EngineOptions:
        """The engine's own options for this table."""
        return EngineOptions(**{f.metadata["option"]: getattr(self, f.name) for f in keys(type(self))
                                if f.metadata["option"]})


@dataclass(frozen=True, slots=True)
class FolderSourceConfig:
    name: str = setting(doc="unique; ASCII letters, digits, '_' or '-'; appears in MQTT topics", match=NAME_RE)
    path: Path = setting(doc="the drop folder")
    done_dir: Path = setting(doc="results NAME.json (+ the original unless delete_original)",
                             shown="beside path: done")
    failed_dir: Path = setting(doc="originals + NAME.error.json", shown="beside path: failed")
    type: str = setting("folder", "`folder` or `camera`", choices=("folder", "camera"))
    watch: str = setting("auto", "`auto` (inotify, else polling), `inotify`, `poll` (NFS/SMB)",
                         choices=("auto", "inotify", "poll"))
    poll_interval: float = setting(2.0, "seconds between directory listings in poll mode", lo=0.05, hi=3600.0,
                                   live=True)
    stability_delay: float = setting(1.0, "seconds a file's size and mtime must stay unchanged before it is taken",
                                     lo=0.0, hi=3600.0, live=True)
    incomplete_timeout: float = setting(60.0, "seconds after which a stable file that looks truncated is taken "
                                        "anyway", lo=0.0, live=True)
    rescan_interval: float = setting(60.0, "seconds between safety-net rescans in inotify mode", lo=0.5, live=True)
    delete_original: bool = setting(False, "keep only NAME.json in done_dir", live=True)
    reuse_results: bool = setting(True, "identical bytes dropped again reuse the stored result (no OCR run)",
                                  live=True)
    reuse_max_entries: int = setting(1000, "stored results kept for reuse; the least recently used go first",
                                     lo=1, hi=10_000_000, live=True)
    max_file_mb: float = setting(50.0, "larger files go straight to failed_dir", lo=0.001, live=True)

    def __post_init__(self) -> None:
        _check_declared(self)
        for key in ("path", "done_dir", "failed_dir"):
            if "\0" in str(getattr(self, key)):  # no file name holds one (realpath raised ValueError)
                raise Invalid(key, "contains a NUL character")
        for key in ("done_dir", "failed_dir"):  # compared as the kernel resolves them: x/../in, a symlink
            if os.path.realpath(getattr(self, key)) == os.path.realpath(self.path):
                raise Invalid(key, "must differ from path")


@dataclass(frozen=True, slots=True)
class CameraSourceConfig:
    name: str = setting(doc="unique; ASCII letters, digits, '_' or '-'; appears in MQTT topics", match=NAME_RE)
    type: str = setting("camera", "`folder` or `camera`", choices=("folder", "camera"))
    backend: str = setting("opencv", "`picamera2` (Raspberry Pi OS's python3-picamera2) or `opencv`",
                           choices=("picamera2", "opencv"))
    device: str = setting("/dev/video0", "opencv: /dev/videoN, an index, rtsp://, http://, a video file (relative "
                          "to the config file); "
                          "picamera2: the camera number (default 0)")
    interval: float = setting(1.0, "seconds between captures; 0 = only on command", lo=0.0, hi=86400.0, live=True)
    rois: tuple[Region, ...] = setting((), "regions read without detection: name, box, allowed_chars, pattern, "
                                       "grey, clahe, invert, rotate")
    size: tuple[int, int] = setting((0, 0), "[width, height] to capture; [0, 0] = the camera's default", lo=0,
                                    hi=16384)
    autofocus: str = setting("continuous", "picamera2 with an autofocus lens: `continuous`, `auto` (one cycle at "
                             "start), `off`", choices=("continuous", "auto", "off"))
    loop: bool = setting(False, "a video file starts again at its end (false: the source goes offline)")
    change_threshold: float = setting(3.0, "grey levels; frames closer than this to the last OCR'd one are skipped",
                                      lo=0.0, hi=255.0, live=True)
    stable_reads: int = setting(2, "consecutive agreeing reads before a region's value is published", lo=1, hi=100,
                                live=True)
    publish_every: bool | None = setting(None, "an event for every OCR'd frame", shown="mqtt.publish_every",
                                         live=True)
    retry_min_delay: float = setting(1.0, "seconds; doubles up to retry_max_delay while the camera is missing or "
                                     "busy", lo=0.01, hi=3600.0)
    retry_max_delay: float = setting(60.0, "seconds", lo=0.01, hi=86400.0)

    def __post_init__(self) -> None:
        _check_declared(self)
        _not_below("retry_max_delay", self.retry_max_delay, "retry_min_delay", self.retry_min_delay)
        if self.backend == "picamera2" and not self.device.isdigit():
            raise Invalid("device", "picamera2 expects a camera number (0, 1, ...), got %r"
                          % redact_url(self.device, whole=True))
        seen: set[str] = set()
        for i, roi in enumerate(self.rois):
            if roi.name in seen:
                raise Invalid("rois[%d].name" % i, "duplicate region name %r" % roi.name)
            seen.add(roi.name)


SourceConfig = FolderSourceConfig | CameraSourceConfig


@dataclass(frozen=True, slots=True)
class MqttConfig:
    spool_dir: Path = setting(doc="results kept on disk until the broker acknowledges them (published under the "
                                  "`topic_prefix` of the day: one spooled before a change, a host renamed say, goes "
                                  "out under the new one, logged once)", shown="<state>/spool")
    topic_prefix: str = setting(doc="`<hostname>` is replaced by the host's name", shown="edge-ocr/<hostname>")
    client_id: str = setting(doc="unique per device", shown="edge-ocr-<hostname>-<hash of /etc/machine-id>")
    enabled: bool = setting(True, "the daemon runs (and spools) when no broker is reachable")
    host: str = setting("localhost", "the broker")
    port: int = setting(1883, "the broker's port", lo=1, hi=65535, shown="1883, or 8883 with tls")
    username: str = setting("", "the broker account; with password_file")
    password_file: str = setting("", "a file holding the password (see Secrets)")
    password: Secret | None = field(default=None, compare=True)  # read from password_file: not a key
    keepalive: int = setting(60, "seconds", lo=5, hi=3600)
    qos: int = setting(1, "for results: 0 or 1 (the spool keeps a message until its QoS 1 ack)", lo=0, hi=1)
    publish_every: bool = setting(False, "`<p>/<source>/event` for every result, not only when the text changed",
                                  live=True)
    tls: bool = setting(False, "TLS to the broker", shown="true when ca_file or cert_file is set")
    ca_file: str = setting("", "CA bundle to verify the broker (\"\" = system CAs)")
    cert_file: str = setting("", "client certificate (with key_file)")
    key_file: str = setting("", "the client certificate's key")
    tls_insecure: bool = setting(False, "skip the broker hostname check (testing only)")
    spool_max_messages: int = setting(10000, "on-disk bound; at it a state or text a newer one replaces goes "
                                             "first (as a broker keeps only the last), then the oldest (counted in "
                                             "`<p>/stats`)", lo=10)
    max_inflight: int = setting(20, "unacknowledged messages at a time", lo=1, hi=1000)
    reconnect_min_delay: float = setting(1.0, "seconds; doubles up to reconnect_max_delay", lo=0.1)
    reconnect_max_delay: float = setting(60.0, "seconds", lo=0.1)
    stats_interval: float = setting(60.0, "seconds between retained `<p>/stats` messages", lo=1.0, live=True)
    discovery: bool = setting(True, "Home Assistant MQTT discovery")
    discovery_prefix: str = setting("homeassistant", "Home Assistant's discovery topic prefix")

    def __post_init__(self) -> None:
        _check_declared(self)
        # The value is shown with any user:password@ in it hidden: a broker written as Node-RED spells
        # it (mqtt://user:password@host) must not put the password in the journal.
        shown = (URL_USERINFO_WHOLE_RE.sub("//***@", self.host) if "//" in self.host
                 else re.sub(r"^[^@]*@", "***@", self.host))
        if not self.host or any(c.isspace() for c in self.host) or "/" in self.host or "@" in self.host:
            raise Invalid("host", "expected a host name or address (no scheme, no user, no path), got %r" % shown)
        if self.host.count(":") == 1:  # one colon: a port (an IPv6 address has two or more)
            raise Invalid("host", "expected a host name or address without a port (that is mqtt.port), got %r"
                          % shown)
        if self.host.startswith("["):
            raise Invalid("host", "expected an IPv6 address without brackets (the port is mqtt.port), got %r" % shown)
        if not self.host.isprintable():
            raise Invalid("host", "expected a host name or address, got %r (a control character)" % shown)
        if ":" not in self.host:  # a name: each label as the resolver will encode it (IDNA), or refused here
            try:
                self.host.encode("idna")  # one trailing dot (a rooted name) passes; "." and "a..b" do not
            except UnicodeError as exc:  # empty or over-long labels ("broker..lan"): getaddrinfo's UnicodeError
                raise Invalid("host", "expected a host name (labels of 1 to 63 characters), got %r" % shown) from exc
        for key in ("topic_prefix", "discovery_prefix"):  # both start topics this device publishes on
            value = getattr(self, key)
            if not value or any(c in value for c in "#+\0") or value.startswith("/") or value.endswith("/"):
                raise Invalid(key, "expected a topic without wildcards or leading/trailing '/', got %r" % value)
        if bool(self.cert_file) != bool(self.key_file):
            raise Invalid("cert_file", "cert_file and key_file go together")
        if self.password is not None and not self.username:
            raise Invalid("password_file", "a password needs mqtt.username")
        _not_below("reconnect_max_delay", self.reconnect_max_delay, "reconnect_min_delay", self.reconnect_min_delay)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    enabled: bool = setting(True, "the local HTTP API and the try-it page")
    bind: str = setting("127.0.0.1:8080", "HOST:PORT (a name, like localhost, on each of its addresses); "
                        "port 0 = any free port; a non-loopback HOST needs a token")
    token_file: str = setting("", "a file holding the Bearer token; then every endpoint but /healthz and the page (/) "
                              "needs it (see Secrets)")
    token: Secret | None = None  # read from token_file (or the http_token credential): not a key
    max_upload_mb: float = setting(20.0, "larger uploads get 413", lo=0.1, hi=1024.0)
    cache_entries: int = setting(32, "the same image and options again is answered from memory; 0 = off", lo=0,
                                 hi=100_000)

    def __post_init__(self) -> None:
        _check_declared(self)
        host, _port = parse_bind(self.bind)
        if self.token is not None and not self.token.reveal():
            raise Invalid("token_file", "the token file is empty")
        if self.enabled:
            require_token_off_loopback(host, self.token is not None)


@dataclass(frozen=True, slots=True)
class GuardConfig:
    # From measured peaks (docs/memory.md; tests/test_memory_peaks.py), 2 threads, memory = "default":
    # `edge-ocr ocr` peaks at 397 MB on the 5 zh pages in one process (374 MB on the worst one
    # alone, 315 MB over 111 pages, 255 MB on a 12 MP photo); the daemon's own imports add 12 MB.
    # soft = 397 + 12 = 409, plus ~10 % -> 450: an ordinary dense page never degrades the daemon.
    # hard = soft + a 12 MP photo over the steady state (255 - 121 = 134) = 584 -> 600.
    rss_soft_mb: int = setting(450, "over this RSS: drop queued camera frames, release caches", lo=16)
    rss_hard_mb: int = setting(600, "over this RSS: stop taking work, finish the current image, exit 3", lo=16)
    min_available_soft_mb: int = setting(0, "the same on the system's available memory (0 = not checked)", lo=0)
    min_available_hard_mb: int = setting(0, "the same on the system's available memory (0 = not checked)", lo=0)
    # 10 s, as jemalloc's default decay of dirty pages: the next image pays the page faults, a
    # page 1.03-1.09x its time and a crop +3 ms (paired, x86, docs/memory.md), and a camera that
    # sends a frame every 30 s gives its heap back between frames (123-148 MB, not 176-198 MB).
    idle_trim_s: float = setting(10.0, "seconds without work after which the free heap goes back to the kernel "
                                 "(malloc_trim; the next image pays the page faults); 0 = never", lo=0.0, hi=86400.0)

    def __post_init__(self) -> None:
        _check_declared(self)
        if self.rss_hard_mb <= self.rss_soft_mb:
            raise Invalid("rss_hard_mb", "expected more than rss_soft_mb (%d), got %d"
                          % (self.rss_soft_mb, self.rss_hard_mb))
        if self.min_available_hard_mb and self.min_available_soft_mb <= self.min_available_hard_mb:
            raise Invalid("min_available_soft_mb", "expected more than min_available_hard_mb (%d), got %d"
                          % (self.min_available_hard_mb, self.min_available_soft_mb))


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    queue_size: int = setting(8, "jobs waiting for the engine; a full queue holds sources back", lo=1, hi=1024)
    workers: int = setting(1, "engine threads over the queue (>1 may reorder results)", lo=1, hi=16)

    def __post_init__(self) -> None:
        _check_declared(self)


def _plain_topic(topic: str) -> bool:
    """A topic one can publish to, not a filter or a broker's own ($SYS, $share)."""
    return bool(topic) and not any(ch in topic for ch in "#+\0") and not topic.startswith("$")


@dataclass(frozen=True, slots=True)
class FleetConfig:
    enabled: bool = setting(False, "be a worker of the fleet: take jobs from `$share/<group>/<jobs_topic>` "
                            "(MQTT 5, the [mqtt] broker)")
    jobs_topic: str = setting("edge-ocr/jobs", "where jobs are published")
    answers_topic: str = setting("", "a job's Response Topic must be this topic or one under it, else the job is "
                                 "dropped unread (answers go out with this device's login); edge-ocr submit asks "
                                 "for its answers under it",
                                 shown="<jobs_topic>/results")
    group: str = setting("edge-ocr", "the shared subscription's group: each job goes to one of its workers",
                         match=NAME_RE)
    max_inflight: int = setting(2, "jobs this worker holds at once (MQTT 5 Receive Maximum)", lo=1, hi=64)
    session_expiry: int = setting(3600, "seconds the broker keeps this worker's session and the jobs it held",
                                  lo=0, hi=7 * 86400)
    max_job_mb: float = setting(20.0, "a larger job is answered image_too_large, unread (as http.max_upload_mb)",
                                lo=0.001, hi=256.0)

    def __post_init__(self) -> None:
        _check_declared(self)
        if not _plain_topic(self.jobs_topic):
            raise Invalid("jobs_topic", "expected a topic without wildcards, got %r" % self.jobs_topic)
        answers = self.answers_topic.rstrip("/")
        if self.answers_topic and (not _plain_topic(answers) or "" in answers.split("/")):
            raise Invalid("answers_topic", "expected a topic without wildcards, empty levels or a leading $, got %r"
                          % self.answers_topic)

    @property
    def answers_root(self) -> str:
        """The topic every job's Response Topic must be, or lie under."""
        return (self.answers_topic or "%s/results" % self.jobs_topic).rstrip("/")


@dataclass(frozen=True, slots=True)
class Config:
    engine: EngineConfig
    sources: tuple[SourceConfig, ...]
    mqtt: MqttConfig
    http: HttpConfig = HttpConfig()
    guard: GuardConfig = GuardConfig()
    pipeline: PipelineConfig = PipelineConfig()
    fleet: FleetConfig = FleetConfig()
    path: Path | None = None  # the file it came from; None = built-in defaults


SECTIONS: tuple[tuple[str, type], ...] = (
    ("engine", EngineConfig), ("pipeline", PipelineConfig), ("sources", FolderSourceConfig),
    ("sources", CameraSourceConfig), ("sources.rois", Region), ("mqtt", MqttConfig), ("http", HttpConfig),
    ("guard", GuardConfig), ("fleet", FleetConfig),
)


def _live_keys() -> frozenset[str]:
    out: set[str] = set()
    for section, cls in SECTIONS:
        prefix = "sources.*" if section == "sources" else section
        out.update("%s.%s" % (prefix, f.name) for f in keys(cls) if f.metadata.get("live"))
    return frozenset(out)


# Keys SIGHUP applies without a restart (``*`` = any source name); everything else needs one.
LIVE_KEYS = _live_keys()


def find_config(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read: ``-c``, ``$EDGE_OCR_CONFIG``, ``/etc/edge-ocr/config.toml``, else None."""
    env = os.environ if environ is None else environ
    if explicit is not None and not str(explicit):  # `-c "$UNSET"`: not the defaults, silently
        raise ConfigError("-c: an empty path")
    if explicit:
        return Path(explicit)
    if env.get("EDGE_OCR_CONFIG"):
        return Path(env["EDGE_OCR_CONFIG"])
    try:
        return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None
    except OSError as exc:  # /etc/edge-ocr not readable by this user: Path.is_file raises for EACCES
        raise ConfigError("%s: cannot read config: %s (as root, or -c another file)" % (SYSTEM_CONFIG, exc.strerror)
                          ) from exc


def default_state_dir(environ: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """``$STATE_DIRECTORY`` (systemd), /var/lib/edge-ocr as root, else $XDG_STATE_HOME or ~/.local/state."""
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if (os.geteuid() if uid is None else uid) == 0:
        return SYSTEM_STATE
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "edge-ocr"


def default_client_id(hostname: str | None = None, machine_id: Path = Path("/etc/machine-id")) -> str:
    """edge-ocr-<hostname>-<8 hex of sha256(machine-id)>: unique per device, stable across restarts."""
    host = _hostname() if hostname is None else hostname
    try:
        seed = machine_id.read_text(encoding="ascii").strip()
    except OSError:
        seed = ""
    seed = seed or host
    return "edge-ocr-%s-%s" % (host, hashlib.sha256(seed.encode()).hexdigest()[:8])


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate ``path`` (None = built-in defaults). Raises ConfigError with the key path."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    base = Path.cwd()
    file = Path(path) if path is not None else None
    if file is not None:
        try:
            raw = file.read_bytes()
            data = tomllib.loads(raw.decode("utf-8-sig"))  # a BOM, as Windows editors write
        except FileNotFoundError as exc:
            raise ConfigError("%s: config file not found" % file) from exc
        except OSError as exc:
            raise ConfigError("%s: cannot read config: %s" % (file, exc.strerror)) from exc
        except UnicodeDecodeError as exc:  # a Latin-1 editor's "é": where, not a byte offset
            raise ConfigError("%s: not UTF-8 at line %d (byte 0x%02x): save the file as UTF-8"
                              % (file, raw[: exc.start].count(b"\n") + 1, raw[exc.start])) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("%s: invalid TOML: %s%s" % (file, exc, _unlike_ascii(raw, str(exc)))) from exc
        base = file.resolve().parent
    state = default_state_dir(env)
    top = _Table(data, "", base)
    # Each section and each source is read on its own, so one run names a problem in each
    # (`edge-ocr check`: one line per problem), not only the first.
    problems: list[str] = []

    def section(read: Callable[[], Any]) -> Any:
        try:
            return read()
        except ConfigError as exc:
            problems.append(exc.message)
            return None

    engine = section(lambda: _engine(top.table("engine")))
    mqtt = section(lambda: _mqtt(top.table("mqtt"), state, env))
    http = section(lambda: _http(top.table("http"), env))
    guard = section(lambda: _read(GuardConfig, top.table("guard")))
    pipeline = section(lambda: _read(PipelineConfig, top.table("pipeline")))
    fleet = section(lambda: _read(FleetConfig, top.table("fleet")))
    raw_sources = top.take("sources", None)
    section(top.done)
    if raw_sources is None:
        sources: tuple[SourceConfig, ...] = (
            FolderSourceConfig("inbox", state / "inbox", state / "done", state / "failed"),
        )
    elif not isinstance(raw_sources, list) or not all(isinstance(s, dict) for s in raw_sources):
        problems.append("sources: expected an array of tables ([[sources]])")
        sources = ()
    else:
        read_sources = [section(partial(_source, _Table(s, "sources[%d]" % i, base)))
                        for i, s in enumerate(raw_sources)]
        sources = tuple(s for s in read_sources if s is not None)
        seen: set[str] = set()
        for i, src in enumerate(read_sources):  # i as in the file, past a source that did not read
            if src is not None and src.name in seen:
                problems.append("sources[%d].name: duplicate source name %r" % (i, src.name))
            if src is not None and src.name == "cmd":  # <p>/cmd/capture is the every-source command
                problems.append("sources[%d].name: 'cmd' is reserved for the MQTT commands (<p>/cmd/...)" % i)
            if src is not None:
                seen.add(src.name)
        problems += _shared_folders(read_sources)
        if mqtt is None or (mqtt.enabled and mqtt.discovery):
            problems += _discovery_clashes(read_sources)
    if fleet is not None and fleet.enabled:  # checks across sections, where those were read
        if mqtt is not None and not mqtt.enabled:
            problems.append("fleet.enabled: the fleet needs the broker of [mqtt] (mqtt.enabled = false)")
        if any(s.name == "fleet" for s in sources):
            problems.append("sources: the name 'fleet' is the fleet worker's while fleet.enabled = true")
    if problems:
        # A value quoted back may be a URL with credentials (a camera's device given as a list): hidden as
        # everywhere else, since these lines go to the journal and `check`'s output.
        problems = [redact_url(QUOTED_RE.sub(lambda m: redact_url(m.group(), whole=True), problem))
                    for problem in problems]
        raise ConfigError(problems[0] if len(problems) == 1 else "; ".join(problems), tuple(problems))
    return Config(engine, sources, mqtt, http, guard, pipeline, fleet, file)


def _shared_folders(sources: Sequence[SourceConfig | None]) -> list[str]:
    """A folder source's inbox that is another's inbox, done_dir or failed_dir: two sources would
    split its files at random, or one would take the other's results (and their .json) as input.
    Folders are compared as the kernel resolves them (x/../in, a symlink)."""
    claims: dict[str, list[str]] = {}
    for i, src in enumerate(sources):
        if isinstance(src, FolderSourceConfig):
            for key in ("path", "done_dir", "failed_dir"):
                claims.setdefault(os.path.realpath(getattr(src, key)), []).append("sources[%d].%s" % (i, key))
    problems = []
    for owners in claims.values():
        inboxes = [owner for owner in owners if owner.endswith(".path")]
        for inbox in inboxes:
            others = [owner for owner in owners if owner.split(".")[0] != inbox.split(".")[0]]
            # two inboxes in one: named once, at the second
            others = [owner for owner in others if not owner.endswith(".path") or owners.index(owner) < owners.index(inbox)]
            if others:
                problems.append("%s: the same folder as %s" % (inbox, others[0]))
    return problems


def _discovery_clashes(sources: Sequence[SourceConfig | None]) -> list[str]:
    """Home Assistant sensor ids (a source's name, ``<source>_<region>`` for each of its regions,
    as sinks.mqtt names them) given twice: one retained discovery config would overwrite the other
    (a region "gas_total" of source "meter" and a region "total" of source "meter_gas")."""
    owners: dict[str, str] = {src.name: "source %r" % src.name for src in sources if src is not None}
    problems = []
    for i, src in enumerate(sources):
        if not isinstance(src, CameraSourceConfig):
            continue
        for j, roi in enumerate(src.rois):
            ident = "%s_%s" % (src.name, roi.name)
            if ident in owners:
                problems.append("sources[%d].rois[%d].name: %r of source %r is named %r in Home Assistant, as %s; "
                                "rename one" % (i, j, roi.name, src.name, ident, owners[ident]))
            else:
                owners[ident] = "region %r of source %r" % (roi.name, src.name)
    return problems


def config_diff(old: Config, new: Config) -> list[str]:
    """Dotted key paths whose values differ (sources by name, ``sources.<name>.<key>``)."""
    changed: list[str] = []
    for section in ("engine", "mqtt", "http", "guard", "pipeline", "fleet"):
        changed += _diff(getattr(old, section), getattr(new, section), section)
    old_src = {s.name: s for s in old.sources}
    new_src = {s.name: s for s in new.sources}
    for name in sorted(old_src.keys() | new_src.keys()):
        if name not in old_src or name not in new_src or type(old_src[name]) is not type(new_src[name]):
            changed.append("sources.%s" % name)
        else:
            changed += _diff(old_src[name], new_src[name], "sources.%s" % name)
    return changed


def with_live(running: Config, new: Config) -> Config:
    """``running`` with the live keys of ``new`` applied (what SIGHUP does); ``config_diff(result,
    new)`` then lists the keys that still need a restart. A source whose type changed keeps its
    running config."""
    def take(old: Any, fresh: Any, section: str) -> Any:
        live = {f.name: getattr(fresh, f.name) for f in fields(old) if is_live("%s.%s" % (section, f.name))}
        return replace(old, **live)

    fresh_sources = {s.name: s for s in new.sources}
    sources = tuple(
        take(s, fresh_sources[s.name], "sources.%s" % s.name)
        if type(fresh_sources.get(s.name)) is type(s) else s
        for s in running.sources
    )
    return replace(running, engine=take(running.engine, new.engine, "engine"),
                   mqtt=take(running.mqtt, new.mqtt, "mqtt"), sources=sources)


def is_live(key: str) -> bool:
    """True if SIGHUP can apply a change of ``key`` (a path from ``config_diff``) without a restart."""
    parts = key.split(".")
    if parts[0] == "sources" and len(parts) == 3:
        return "sources.*.%s" % parts[2] in LIVE_KEYS
    return key in LIVE_KEYS


def _diff(old: Any, new: Any, prefix: str) -> list[str]:
    out = []
    for f in fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if is_dataclass(a) and is_dataclass(b):
            out += _diff(a, b, "%s.%s" % (prefix, f.name))
        elif a != b:
            out.append("%s.%s" % (prefix, f.name))
    return out


def _unlike_ascii(raw: bytes, message: str) -> str:
    """A word on the character a TOML error points at when it is not ASCII: a Chinese input
    method's “ ” ＝ ［ ］ or full-width digits look like TOML's own and are not."""
    where = re.search(r"at line (\d+), column (\d+)", message)
    if where is None:
        return ""
    lines = raw.decode("utf-8-sig", "replace").splitlines()
    row, column = int(where.group(1)) - 1, int(where.group(2)) - 1
    char = lines[row][column] if row < len(lines) and column < len(lines[row]) else ""
    if not char or char.isascii():
        return ""
    return ": %s is U+%04X %s, not TOML's: type it in half-width (ASCII) as quotes, =, [ ], digits" % (
        char, ord(char), unicodedata.name(char, "?"))


def _hostname() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


class _Table:
    """One TOML table being read: typed getters that name the key path, then ``done()`` rejects leftovers."""

    def __init__(self, data: Any, path: str, base: Path) -> None:
        if not isinstance(data, dict):
            raise ConfigError("%s: expected a table, got %s" % (path, _show(data)))
        self.data = dict(data)
        self.known: list[str] = []
        self.path = path
        self.base = base

    def key(self, name: str) -> str:
        return "%s.%s" % (self.path, name) if self.path else name

    def take(self, name: str, default: Any) -> Any:
        self.known.append(name)
        return self.data.pop(name, default)

    def table(self, name: str) -> _Table:
        return _Table(self.take(name, {}), self.key(name), self.base)

    def text(self, name: str, default: str | None = None, choices: tuple[str, ...] = (),
             match: re.Pattern[str] | None = None, max_len: int | None = None) -> str:
        value = self.take(name, default)
        if value is None:
            raise ConfigError("%s: required key missing" % self.key(name))
        if not isinstance(value, str):
            raise ConfigError("%s: expected a string, got %s" % (self.key(name), _show(value)))
        if choices and value not in choices:
            raise ConfigError("%s: expected one of %s, got %r" % (self.key(name), " | ".join(choices), value))
        if match is not None and not match.match(value):
            raise ConfigError("%s: expected ASCII letters (a-z, A-Z), digits, '_' or '-' (1-64), got %r" % (self.key(name), value))
        if max_len is not None and len(value) > max_len:
            raise ConfigError("%s: expected at most %d characters, got %d" % (self.key(name), max_len, len(value)))
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.take(name, default)
        if not isinstance(value, bool):
            raise ConfigError("%s: expected true or false, got %s" % (self.key(name), _show(value)))
        return value

    def integer(self, name: str, default: int, lo: float | None = None, hi: float | None = None,
                choices: tuple[int, ...] = ()) -> int:
        value = self.take(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("%s: expected an integer, got %s" % (self.key(name), _show(value)))
        if choices and value not in choices:
            raise ConfigError("%s: expected one of %s, got %d" % (self.key(name), ", ".join(map(str, choices)), value))
        _check_range(self.key(name), value, lo, hi)
        return value

    def number(self, name: str, default: float, lo: float | None = None, hi: float | None = None) -> float:
        value = self.take(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError("%s: expected a number, got %s" % (self.key(name), _show(value)))
        if not math.isfinite(value):  # TOML's nan passes every comparison, inf every upper-bound-free one
            raise ConfigError("%s: expected a finite number, got %s" % (self.key(name), value))
        _check_range(self.key(name), value, lo, hi)
        return float(value)

    def dir(self, name: str, default: Path | None) -> Path:
        value = self.take(name, None)
        if value is None:
            if default is None:
                raise ConfigError("%s: required key missing" % self.key(name))
            return default
        if not isinstance(value, str) or not value:
            raise ConfigError("%s: expected a path, got %s" % (self.key(name), _show(value)))
        return self.base / expand_user(self.key(name), value)

    def done(self) -> None:
        for extra in self.data:
            close = difflib.get_close_matches(extra, self.known, n=1)
            hint = " (did you mean %r?)" % close[0] if close else ""
            raise ConfigError("%s: unknown key%s" % (self.key(extra), hint))


def _show(value: Any) -> str:
    return "%s %r" % (type(value).__name__, value) if not isinstance(value, dict) else "a table"


def _check_range(key: str, value: float, lo: float | None, hi: float | None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError("%s: expected %s, got %s" % (key, _range_text(lo, hi), value))


_HAND_PARSED = object()  # the type of a key the section reader parses itself


def _read(cls: type, t: _Table, given: Mapping[str, Any] | None = None,
          defaults: Mapping[str, Any] | None = None) -> Any:
    """Build ``cls`` from table ``t`` by its key declarations, then reject leftover keys.

    ``given`` holds values the caller parsed itself (their keys already taken from ``t``);
    ``defaults`` replaces declared defaults that depend on other keys or the machine.
    """
    given = dict(given or {})
    defaults = defaults or {}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in keys(cls):
        if f.name in given:
            values[f.name] = given.pop(f.name)
            continue
        meta = f.metadata
        declared: Any = defaults.get(f.name, f.default)
        default: Any = None if declared is MISSING else declared
        kind = hints[f.name]
        if kind is bool:
            values[f.name] = t.flag(f.name, default)
        elif kind is int:
            values[f.name] = t.integer(f.name, default, meta.get("lo"), meta.get("hi"), meta.get("choices", ()))
        elif kind is float:
            values[f.name] = t.number(f.name, default, meta.get("lo"), meta.get("hi"))
        elif kind is str:
            values[f.name] = t.text(f.name, default, meta.get("choices", ()), meta.get("match"), meta.get("max_len"))
        elif kind is Path:
            values[f.name] = t.dir(f.name, default)
        else:
            raise TypeError("%s.%s: a %s key is parsed by its section reader" % (cls.__name__, f.name, kind))
    values.update(given)  # values that are not keys (secrets read from their files)
    try:
        obj = cls(**values)
    except Invalid as exc:
        raise ConfigError("%s: %s" % (t.key(exc.key), exc.reason)) from exc
    t.done()
    return obj


def _engine(t: _Table) -> EngineConfig:
    return _read(EngineConfig, t, {"threads": t.take("threads", "auto")})  # checked by EngineConfig


def expand_user(key: str, value: str) -> Path:
    """``value`` as a path with a leading ``~`` or ``~user`` expanded. Raises ConfigError for a user
    this machine does not have (``~pi`` on a Raspberry Pi OS without the ``pi`` account)."""
    try:
        return Path(value).expanduser()
    except RuntimeError as exc:
        raise ConfigError("%s: cannot expand %r: no such user's home here" % (key, value)) from exc


def _read_secret(t: _Table, key: str, env: Mapping[str, str], credential: str) -> tuple[str, Secret | None]:
    raw = t.text(key, "")
    if "\0" in raw:  # no file name holds one (reading it raised ValueError)
        raise ConfigError("%s: contains a NUL character" % t.key(key))
    creds = env.get("CREDENTIALS_DIRECTORY")
    candidates: list[Path] = []
    if raw:
        p = expand_user(t.key(key), raw)
        if not p.is_absolute() and creds:
            candidates.append(Path(creds) / p)
        candidates.append(p if p.is_absolute() else t.base / p)
    elif creds and (Path(creds) / credential).is_file():
        candidates.append(Path(creds) / credential)
    if not candidates:
        return raw, None
    for path in candidates:
        try:
            return raw, Secret(path.read_text(encoding="utf-8").rstrip("\r\n"))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError("%s: cannot read %s: %s" % (t.key(key), path, exc.strerror)) from exc
    raise ConfigError("%s: file not found: %s" % (t.key(key), candidates[-1]))


def _mqtt(t: _Table, state: Path, env: Mapping[str, str]) -> MqttConfig:
    if "password" in t.data:
        raise ConfigError("%s: secrets are not read from the config; put it in a file and set password_file"
                          % t.key("password"))
    given: dict[str, Any] = {
        "topic_prefix": t.text("topic_prefix", "edge-ocr/<hostname>").replace("<hostname>", _hostname()),
        "client_id": t.text("client_id", "") or default_client_id(),
    }
    given["password_file"], given["password"] = _read_secret(t, "password_file", env, CREDENTIAL_PASSWORD)
    for key in ("ca_file", "cert_file", "key_file"):
        value = t.text(key, "")
        path = t.base / expand_user(t.key(key), value) if value else None
        if path is not None and not path.is_file():
            raise ConfigError("%s: file not found: %s" % (t.key(key), value))
        given[key] = str(path) if path is not None else ""
    given["tls"] = t.flag("tls", bool(given["ca_file"] or given["cert_file"]))
    return _read(MqttConfig, t, given, {"spool_dir": state / "spool", "port": 8883 if given["tls"] else 1883})


def _http(t: _Table, env: Mapping[str, str]) -> HttpConfig:
    # Resolved like mqtt.password_file: under $CREDENTIALS_DIRECTORY, then beside the config file.
    token_file, token = _read_secret(t, "token_file", env, CREDENTIAL_TOKEN)
    if token is not None:
        token = Secret(token.reveal().strip())
    return _read(HttpConfig, t, {"token_file": token_file, "token": token})


def _source(t: _Table) -> SourceConfig:
    kind = t.text("type", "folder", ("folder", "camera"))
    if kind == "camera":
        return _camera(t)
    path = t.dir("path", None)
    return _read(FolderSourceConfig, t, {"type": kind, "path": path},
                 {"done_dir": path.parent / "done", "failed_dir": path.parent / "failed"})


def _camera(t: _Table) -> CameraSourceConfig:
    backend = t.text("backend", "opencv", ("picamera2", "opencv"))
    raw_rois = t.take("rois", [])
    if not isinstance(raw_rois, list):
        raise ConfigError("%s: expected an array of tables" % t.key("rois"))
    rois = tuple(_region(_Table(r, "%s[%d]" % (t.key("rois"), i), t.base)) for i, r in enumerate(raw_rois))
    device = t.take("device", "0" if backend == "picamera2" else "/dev/video0")
    if isinstance(device, bool) or not isinstance(device, (str, int)) or device == "":
        raise ConfigError("%s: expected a path, URL or index, got %s" % (t.key("device"), _show(device)))
    device = str(device)
    if backend == "opencv" and not device.isdigit() and "://" not in device:
        device = str(t.base / expand_user(t.key("device"), device))  # a video file, relative to the config as paths are
    size = t.take("size", [0, 0])
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                               and 0 <= v <= 16384 for v in size)
            and (size[0] == 0) == (size[1] == 0)):
        raise ConfigError("%s: expected [width, height] in pixels ([0, 0] = the camera's default), got %r"
                          % (t.key("size"), size))
    publish_every = t.take("publish_every", None)
    if publish_every is not None and not isinstance(publish_every, bool):
        raise ConfigError("%s: expected true or false, got %s" % (t.key("publish_every"), _show(publish_every)))
    return _read(CameraSourceConfig, t, {"type": "camera", "backend": backend, "rois": rois, "device": device,
                                         "size": (size[0], size[1]), "publish_every": publish_every})


def _region(t: _Table, allowed: tuple[str, ...] | None = None) -> Region:
    if allowed is not None:
        for extra in sorted(set(t.data) - set(allowed)):
            raise ConfigError("%s: unknown key (expected %s)" % (t.key(extra), ", ".join(allowed)))
    name = t.text("name", None, match=NAME_RE)
    box = t.take("box", None)
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) and not isinstance(v, bool)
                                                             and v >= 0 for v in box)) or box[2] < 1 or box[3] < 1:
        raise ConfigError("%s: expected [x, y, width, height] of integers >= 0 (width, height >= 1), got %r"
                          % (t.key("box"), box))
    pattern = t.text("pattern", "")
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:  # a{99999999999}: OverflowError
        raise ConfigError("%s: invalid regular expression: %s" % (t.key("pattern"), exc)) from exc
    return _read(Region, t, {"name": name, "box": (box[0], box[1], box[2], box[3]), "pattern": pattern})


# The options of one request (``POST /api/ocr``, a fleet job), read alike wherever they come from:
# at most this many regions, and ``det`` as one of these words (case-insensitive).
REQUEST_MAX_ROIS = 64
REQUEST_FLAG_WORDS: Mapping[str, bool] = MappingProxyType(
    {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False})


def read_regions(value: Any, where: str, allowed: tuple[str, ...] = ("name", "box", "allowed_chars"),
                 limit: int = REQUEST_MAX_ROIS) -> tuple[Region, ...]:
    """Regions given outside the config file (``rois`` of ``POST /api/ocr`` or of a fleet job): the
    same rules as a camera's ``rois``, limited to the ``allowed`` keys and ``limit`` entries.
    Raises ConfigError."""
    if not isinstance(value, list):
        raise ConfigError("%s: expected a list of {%s}" % (where, ", ".join(allowed)))
    if len(value) > limit:
        raise ConfigError("%s: at most %d regions, got %d" % (where, limit, len(value)))
    for i, region in enumerate(value):  # JSON's word for it, not TOML's "table"
        if not isinstance(region, dict):
            raise ConfigError("%s[%d]: expected an object {%s}, got %s" % (where, i, ", ".join(allowed), _show(region)))
    regions = tuple(_region(_Table(r, "%s[%d]" % (where, i), Path.cwd()), allowed) for i, r in enumerate(value))
    seen: set[str] = set()
    for i, region in enumerate(regions):
        if region.name in seen:
            raise ConfigError("%s[%d].name: duplicate region name %r" % (where, i, region.name))
        seen.add(region.name)
    return regions


def _default_doc(f: Any) -> str:
    if f.metadata.get("shown") is not None:
        return "`%s`" % f.metadata["shown"]
    if f.default is MISSING:
        return "required"
    value = list(f.default) if isinstance(f.default, tuple) else f.default
    return "`%s`" % json.dumps(value, ensure_ascii=False)


def reference_markdown() -> str:
    """The README's config reference: one row per key, from the declarations above."""
    rows = ["| key | default | live | meaning |", "|---|---|---|---|"]
    names = {"sources": "sources[].%s", "sources.rois": "sources[].rois[].%s"}
    for section, cls in SECTIONS:
        for f in keys(cls):
            if cls is CameraSourceConfig and f.name in ("name", "type"):
                continue  # as for folders
            doc = f.metadata["doc"]
            if cls is FolderSourceConfig and f.name not in ("name", "type"):
                doc = "folder: " + doc
            elif cls is CameraSourceConfig:
                doc = "camera: " + doc
            if f.metadata.get("choices") and "`" not in doc:
                doc += " (%s)" % ", ".join(json.dumps(v) for v in f.metadata["choices"])
            key = names.get(section, section + ".%s") % f.name
            rows.append("| `%s` | %s | %s | %s |" % (key, _default_doc(f), "yes" if f.metadata.get("live") else "",
                                                    doc.replace("|", "\\|")))
    return "\n".join(rows) + "\n"


# The user:password@ of a URL (a camera's rtsp://admin:pw@host), up to the last @ before the path:
# FFmpeg splits there, so a password may hold an @ (rtsp://admin:p@ss@host), a # or a ? of its own.
# In a line of text (a log line, an error quoting a value) it never runs across white space, so a share
# and an address further on ("//nas/share failed; mail bob@x") are left alone.
URL_USERINFO_RE = re.compile(r"//[^/\s]*@")
URL_USERINFO_WHOLE_RE = re.compile(r"//[^/]*@")  # in a value that is one URL: white space included
QUOTED_RE = re.compile(r"'[^']*'")  # a value a config error quotes (%r): one URL at most, redacted whole
# ... and credentials in its query, as many IP cameras' snapshot URLs take them (Foscam's usr= and
# pwd=, loginuse= and loginpas=, token=)
_URL_SECRET_KEY = (r"([?&;](?:user|usr|username|login|loginuse|pass|password|passwd|pwd|loginpas|token|access_token|"
                   r"key|apikey|api_key|auth|secret|sig|signature)=)")
URL_QUERY_SECRET_RE = re.compile(_URL_SECRET_KEY + r"[^&#;\s]*", re.IGNORECASE)
URL_QUERY_SECRET_WHOLE_RE = re.compile(_URL_SECRET_KEY + r"[^&#;]*", re.IGNORECASE)  # white space included


def redact_url(text: str, whole: bool = False) -> str:
    """``text`` fit for logs and GET /api/config: credentials in a URL become ``***``. ``whole``: the
    text is one URL (a config value), whose password may hold white space too."""
    userinfo, query = (URL_USERINFO_WHOLE_RE, URL_QUERY_SECRET_WHOLE_RE) if whole else (URL_USERINFO_RE,
                                                                                         URL_QUERY_SECRET_RE)
    return query.sub(r"\1***", userinfo.sub("//***@", text))


def config_to_json(config: Any) -> Any:
    """A JSON-ready copy of a Config (or any part of it) for GET /api/config: secrets and URL
    credentials become ``"***"``, paths strings, tuples lists."""
    if isinstance(config, Secret):
        return "***"
    if isinstance(config, str):
        return redact_url(config, whole=True)
    if hasattr(config, "__dataclass_fields__"):
        return {name: config_to_json(getattr(config, name)) for name in config.__dataclass_fields__}
    if isinstance(config, (list, tuple)):
        return [config_to_json(item) for item in config]
    if isinstance(config, dict):
        return {str(k): config_to_json(v) for k, v in config.items()}
    if isinstance(config, Path):
        return str(config)
    if config is None or isinstance(config, (str, int, float, bool)):
        return config
    return str(config)
