"""The daemon's configuration: one frozen dataclass per TOML table, ``load_config()``, ``Secret``.

TOML is parsed once here; unknown keys and bad values raise ConfigError naming the dotted key
path and the reason (``mqtt.port: expected 1..65535, got 70000``). Secrets are read from files
(``password_file``, ``$CREDENTIALS_DIRECTORY``) into ``Secret``, whose repr is ``'***'``.
Imports stdlib and errors only (``EngineConfig.to_options`` imports the engine lazily).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_ocr.errors import ConfigError

if TYPE_CHECKING:
    from edge_ocr.engine.ocr import EngineOptions

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


@dataclass(frozen=True, slots=True)
class EngineConfig:
    pack: str = "default"
    threads: int | str = "auto"
    precision: str = "auto"
    cls: bool = False
    fast_reader: bool = True
    recheck_below: float = 0.95
    draft_min_width: int = 320
    det_limit_side: int = 960
    max_megapixels: float = 50.0
    low_confidence: float = 0.6

    def to_options(self) -> EngineOptions:
        """The engine's own options for this table (imports the engine, hence lazily)."""
        from edge_ocr.engine.ocr import EngineOptions

        return EngineOptions(
            pack=self.pack,
            threads=self.threads,
            precision=self.precision,
            use_cls=self.cls,
            use_rec_fast=self.fast_reader,
            recheck_below=self.recheck_below,
            draft_min_width=self.draft_min_width,
            det_limit_side=self.det_limit_side,
            max_megapixels=self.max_megapixels,
        )


@dataclass(frozen=True, slots=True)
class RoiConfig:
    name: str
    box: tuple[int, int, int, int]  # x, y, width, height in frame pixels
    allowed_chars: str = ""
    pattern: str = ""  # the text must fullmatch it, else the region's status is "rejected"
    grey: bool = False  # light preprocessing of the region before recognition, in this order:
    clahe: bool = False  # grey, contrast (CLAHE), invert (light-on-dark displays), rotate
    invert: bool = False
    rotate: int = 0  # degrees clockwise: 0 | 90 | 180 | 270


@dataclass(frozen=True, slots=True)
class FolderSourceConfig:
    name: str
    path: Path
    done_dir: Path
    failed_dir: Path
    type: str = "folder"
    watch: str = "auto"  # auto (inotify, else polling) | inotify | poll (NFS/SMB)
    poll_interval: float = 2.0  # s, poll mode
    stability_delay: float = 1.0  # s a file's size and mtime must stay unchanged
    incomplete_timeout: float = 60.0  # s after which a stable file that looks truncated is taken anyway
    rescan_interval: float = 60.0  # s, safety-net directory scan in inotify mode
    delete_original: bool = False
    reuse_results: bool = True
    reuse_max_entries: int = 1000  # stored results kept for reuse; the least recently used go first
    max_file_mb: float = 50.0


@dataclass(frozen=True, slots=True)
class CameraSourceConfig:
    name: str
    type: str = "camera"
    backend: str = "opencv"
    device: str = "/dev/video0"  # opencv: /dev/videoN, an index, rtsp://, http://, a video file; picamera2: 0, 1
    interval: float = 1.0  # s between captures; 0 = only on command
    rois: tuple[RoiConfig, ...] = ()
    size: tuple[int, int] = (0, 0)  # requested frame size; (0, 0) = the backend's default
    autofocus: str = "continuous"  # picamera2 with an AF lens: continuous | auto (one cycle on open) | off
    loop: bool = False  # video file: start again at its end (false: the source goes offline and stays so)
    change_threshold: float = 3.0  # grey levels; frames closer than this to the last processed are skipped
    stable_reads: int = 2  # consecutive agreeing reads before a region's value is published
    publish_every: bool | None = None  # None = mqtt.publish_every
    retry_min_delay: float = 1.0  # s; doubles up to retry_max_delay while the camera is missing or busy
    retry_max_delay: float = 60.0


SourceConfig = FolderSourceConfig | CameraSourceConfig


@dataclass(frozen=True, slots=True)
class MqttConfig:
    spool_dir: Path
    topic_prefix: str
    client_id: str
    enabled: bool = True
    host: str = "localhost"
    port: int = 1883
    username: str = ""
    password_file: str = ""
    password: Secret | None = field(default=None, compare=True)
    keepalive: int = 60
    qos: int = 1
    publish_every: bool = False
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    tls_insecure: bool = False
    spool_max_messages: int = 10000
    max_inflight: int = 20
    reconnect_min_delay: float = 1.0
    reconnect_max_delay: float = 60.0
    stats_interval: float = 60.0
    discovery: bool = True
    discovery_prefix: str = "homeassistant"


@dataclass(frozen=True, slots=True)
class HttpConfig:
    enabled: bool = True
    bind: str = "127.0.0.1:8080"
    token_file: str = ""
    token: Secret | None = None  # read from token_file (or the http_token credential) when the config loads
    max_upload_mb: float = 20.0
    cache_entries: int = 32  # results of recent identical requests answered without OCR; 0 = off


@dataclass(frozen=True, slots=True)
class GuardConfig:
    rss_soft_mb: int = 400
    rss_hard_mb: int = 550
    min_available_soft_mb: int = 0  # floors on the system's available memory; 0 = not checked
    min_available_hard_mb: int = 0


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    queue_size: int = 8
    workers: int = 1


@dataclass(frozen=True, slots=True)
class Config:
    engine: EngineConfig
    sources: tuple[SourceConfig, ...]
    mqtt: MqttConfig
    http: HttpConfig = HttpConfig()
    guard: GuardConfig = GuardConfig()
    pipeline: PipelineConfig = PipelineConfig()
    path: Path | None = None  # the file it came from; None = built-in defaults


# Keys SIGHUP applies without a restart (``*`` = any source name); everything else needs one.
LIVE_KEYS = frozenset(
    {
        "engine.low_confidence",
        "mqtt.publish_every",
        "mqtt.stats_interval",
        "sources.*.stability_delay",
        "sources.*.poll_interval",
        "sources.*.rescan_interval",
        "sources.*.incomplete_timeout",
        "sources.*.delete_original",
        "sources.*.reuse_results",
        "sources.*.reuse_max_entries",
        "sources.*.max_file_mb",
        "sources.*.interval",
        "sources.*.change_threshold",
        "sources.*.stable_reads",
        "sources.*.publish_every",
    }
)


def find_config(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read: ``-c``, ``$EDGE_OCR_CONFIG``, ``/etc/edge-ocr/config.toml``, else None."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get("EDGE_OCR_CONFIG"):
        return Path(env["EDGE_OCR_CONFIG"])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


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
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError("%s: config file not found" % file) from exc
        except OSError as exc:
            raise ConfigError("%s: cannot read config: %s" % (file, exc.strerror)) from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("%s: invalid TOML: %s" % (file, exc)) from exc
        base = file.resolve().parent
    state = default_state_dir(env)
    top = _Table(data, "", base)
    engine = _engine(top.table("engine"))
    mqtt = _mqtt(top.table("mqtt"), state, env)
    http = _http(top.table("http"), env)
    guard = _guard(top.table("guard"))
    pipeline = _pipeline(top.table("pipeline"))
    raw_sources = top.take("sources", None)
    top.done()
    if raw_sources is None:
        sources: tuple[SourceConfig, ...] = (
            FolderSourceConfig("inbox", state / "inbox", state / "done", state / "failed"),
        )
    else:
        if not isinstance(raw_sources, list) or not all(isinstance(s, dict) for s in raw_sources):
            raise ConfigError("sources: expected an array of tables ([[sources]])")
        sources = tuple(_source(_Table(s, "sources[%d]" % i, base)) for i, s in enumerate(raw_sources))
        seen: set[str] = set()
        for i, src in enumerate(sources):
            if src.name in seen:
                raise ConfigError("sources[%d].name: duplicate source name %r" % (i, src.name))
            seen.add(src.name)
    return Config(engine, sources, mqtt, http, guard, pipeline, file)


def config_diff(old: Config, new: Config) -> list[str]:
    """Dotted key paths whose values differ (sources by name, ``sources.<name>.<key>``)."""
    changed: list[str] = []
    for section in ("engine", "mqtt", "http", "guard", "pipeline"):
        changed += _diff(getattr(old, section), getattr(new, section), section)
    old_src = {s.name: s for s in old.sources}
    new_src = {s.name: s for s in new.sources}
    for name in sorted(old_src.keys() | new_src.keys()):
        if name not in old_src or name not in new_src or type(old_src[name]) is not type(new_src[name]):
            changed.append("sources.%s" % name)
        else:
            changed += _diff(old_src[name], new_src[name], "sources.%s" % name)
    return changed


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

    def text(self, name: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        value = self.take(name, default)
        if value is None:
            raise ConfigError("%s: required key missing" % self.key(name))
        if not isinstance(value, str):
            raise ConfigError("%s: expected a string, got %s" % (self.key(name), _show(value)))
        if choices and value not in choices:
            raise ConfigError("%s: expected one of %s, got %r" % (self.key(name), " | ".join(choices), value))
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.take(name, default)
        if not isinstance(value, bool):
            raise ConfigError("%s: expected true or false, got %s" % (self.key(name), _show(value)))
        return value

    def integer(self, name: str, default: int, lo: int, hi: int | None = None) -> int:
        value = self.take(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("%s: expected an integer, got %s" % (self.key(name), _show(value)))
        _check_range(self.key(name), value, lo, hi)
        return value

    def number(self, name: str, default: float, lo: float, hi: float | None = None) -> float:
        value = self.take(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError("%s: expected a number, got %s" % (self.key(name), _show(value)))
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
        return self.base / Path(value).expanduser()

    def done(self) -> None:
        for extra in self.data:
            close = difflib.get_close_matches(extra, self.known, n=1)
            hint = " (did you mean %r?)" % close[0] if close else ""
            raise ConfigError("%s: unknown key%s" % (self.key(extra), hint))


def _check_not_below(t: _Table, key: str, value: float, floor_key: str, floor: float) -> None:
    """A maximum below its minimum (``retry_max_delay < retry_min_delay``) names both keys."""
    if value < floor:
        raise ConfigError("%s: expected >= %s (%s), got %s" % (t.key(key), floor_key, floor, value))


def _check_range(key: str, value: float, lo: float, hi: float | None) -> None:
    if value < lo or (hi is not None and value > hi):
        expected = "%s..%s" % (lo, hi) if hi is not None else ">= %s" % lo
        raise ConfigError("%s: expected %s, got %s" % (key, expected, value))


def _show(value: Any) -> str:
    return "%s %r" % (type(value).__name__, value) if not isinstance(value, dict) else "a table"


def _engine(t: _Table) -> EngineConfig:
    pack = t.text("pack", "default")
    threads_raw = t.take("threads", "auto")
    if threads_raw != "auto" and (isinstance(threads_raw, bool) or not isinstance(threads_raw, int) or threads_raw < 1):
        raise ConfigError('%s: expected "auto" or an integer >= 1, got %r' % (t.key("threads"), threads_raw))
    cfg = EngineConfig(
        pack=pack,
        threads=threads_raw,
        precision=t.text("precision", "auto", ("auto", "fp32", "int8")),
        cls=t.flag("cls", False),
        fast_reader=t.flag("fast_reader", True),
        recheck_below=t.number("recheck_below", 0.95, 0.0, 1.0),
        draft_min_width=t.integer("draft_min_width", 320, 0, 100_000),
        det_limit_side=t.integer("det_limit_side", 960, 32, 8192),
        max_megapixels=t.number("max_megapixels", 50.0, 0.1, 1000.0),
        low_confidence=t.number("low_confidence", 0.6, 0.0, 1.0),
    )
    t.done()
    return cfg


def _read_secret(t: _Table, key: str, env: Mapping[str, str], credential: str) -> tuple[str, Secret | None]:
    raw = t.text(key, "")
    creds = env.get("CREDENTIALS_DIRECTORY")
    candidates: list[Path] = []
    if raw:
        p = Path(raw).expanduser()
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
    prefix = t.text("topic_prefix", "edge-ocr/<hostname>").replace("<hostname>", _hostname())
    if not prefix or any(c in prefix for c in "#+\0") or prefix.startswith("/") or prefix.endswith("/"):
        raise ConfigError("%s: expected a topic without wildcards or leading/trailing '/', got %r"
                          % (t.key("topic_prefix"), prefix))
    client_id = t.text("client_id", "") or default_client_id()
    username = t.text("username", "")
    password_file, password = _read_secret(t, "password_file", env, CREDENTIAL_PASSWORD)
    files = {}
    for key in ("ca_file", "cert_file", "key_file"):
        value = t.text(key, "")
        if value and not (t.base / Path(value).expanduser()).is_file():
            raise ConfigError("%s: file not found: %s" % (t.key(key), value))
        files[key] = str(t.base / Path(value).expanduser()) if value else ""
    if bool(files["cert_file"]) != bool(files["key_file"]):
        raise ConfigError("%s: cert_file and key_file go together" % t.key("cert_file"))
    tls = t.flag("tls", bool(files["ca_file"] or files["cert_file"]))
    cfg = MqttConfig(
        spool_dir=t.dir("spool_dir", state / "spool"),
        topic_prefix=prefix,
        client_id=client_id,
        enabled=t.flag("enabled", True),
        host=t.text("host", "localhost"),
        port=t.integer("port", 8883 if tls else 1883, 1, 65535),
        username=username,
        password_file=password_file,
        password=password,
        keepalive=t.integer("keepalive", 60, 5, 3600),
        qos=t.integer("qos", 1, 0, 1),
        publish_every=t.flag("publish_every", False),
        tls=tls,
        ca_file=files["ca_file"],
        cert_file=files["cert_file"],
        key_file=files["key_file"],
        tls_insecure=t.flag("tls_insecure", False),
        spool_max_messages=t.integer("spool_max_messages", 10000, 10),
        max_inflight=t.integer("max_inflight", 20, 1, 1000),
        reconnect_min_delay=t.number("reconnect_min_delay", 1.0, 0.1),
        reconnect_max_delay=t.number("reconnect_max_delay", 60.0, 0.1),
        stats_interval=t.number("stats_interval", 60.0, 1.0),
        discovery=t.flag("discovery", True),
        discovery_prefix=t.text("discovery_prefix", "homeassistant"),
    )
    if password is not None and not username:
        raise ConfigError("%s: a password needs mqtt.username" % t.key("password_file"))
    _check_not_below(t, "reconnect_max_delay", cfg.reconnect_max_delay, "reconnect_min_delay", cfg.reconnect_min_delay)
    t.done()
    return cfg


def _http(t: _Table, env: Mapping[str, str]) -> HttpConfig:
    enabled = t.flag("enabled", True)
    bind = t.text("bind", "127.0.0.1:8080")
    host, sep, port = bind.rpartition(":")
    # Port 0 asks the kernel for a free port (tests, several instances on one box).
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError("%s: expected HOST:PORT, got %r" % (t.key("bind"), bind))
    # Resolved like mqtt.password_file: under $CREDENTIALS_DIRECTORY, then beside the config file.
    token_file, token = _read_secret(t, "token_file", env, CREDENTIAL_TOKEN)
    if token is not None:
        token = Secret(token.reveal().strip())
        if not token.reveal():
            raise ConfigError("%s: the token file is empty" % t.key("token_file"))
    cfg = HttpConfig(enabled=enabled, bind=bind, token_file=token_file, token=token,
                     max_upload_mb=t.number("max_upload_mb", 20.0, 0.1, 1024.0),
                     cache_entries=t.integer("cache_entries", 32, 0, 100_000))
    t.done()
    return cfg


def _guard(t: _Table) -> GuardConfig:
    # The default pack peaks near 330 MB on a dense receipt page: soft must sit above that.
    cfg = GuardConfig(rss_soft_mb=t.integer("rss_soft_mb", 400, 16), rss_hard_mb=t.integer("rss_hard_mb", 550, 16),
                      min_available_soft_mb=t.integer("min_available_soft_mb", 0, 0),
                      min_available_hard_mb=t.integer("min_available_hard_mb", 0, 0))
    if cfg.rss_hard_mb <= cfg.rss_soft_mb:
        raise ConfigError("%s: expected more than rss_soft_mb (%d), got %d"
                          % (t.key("rss_hard_mb"), cfg.rss_soft_mb, cfg.rss_hard_mb))
    t.done()
    return cfg


def _pipeline(t: _Table) -> PipelineConfig:
    cfg = PipelineConfig(queue_size=t.integer("queue_size", 8, 1, 1024), workers=t.integer("workers", 1, 1, 16))
    t.done()
    return cfg


def _source(t: _Table) -> SourceConfig:
    name = t.text("name")
    if not NAME_RE.match(name):
        raise ConfigError("%s: expected letters, digits, '_' or '-' (1-64), got %r" % (t.key("name"), name))
    kind = t.text("type", "folder", ("folder", "camera"))
    if kind == "camera":
        return _camera(t, name)
    path = t.dir("path", None)
    cfg = FolderSourceConfig(
        name=name,
        path=path,
        done_dir=t.dir("done_dir", path.parent / "done"),
        failed_dir=t.dir("failed_dir", path.parent / "failed"),
        watch=t.text("watch", "auto", ("auto", "inotify", "poll")),
        poll_interval=t.number("poll_interval", 2.0, 0.05, 3600.0),
        stability_delay=t.number("stability_delay", 1.0, 0.0, 3600.0),
        incomplete_timeout=t.number("incomplete_timeout", 60.0, 0.0),
        rescan_interval=t.number("rescan_interval", 60.0, 0.5),
        delete_original=t.flag("delete_original", False),
        reuse_results=t.flag("reuse_results", True),
        reuse_max_entries=t.integer("reuse_max_entries", 1000, 1, 10_000_000),
        max_file_mb=t.number("max_file_mb", 50.0, 0.001),
    )
    for key in ("done_dir", "failed_dir"):
        if getattr(cfg, key) == cfg.path:
            raise ConfigError("%s: must differ from path" % t.key(key))
    t.done()
    return cfg


def _camera(t: _Table, name: str) -> CameraSourceConfig:
    backend = t.text("backend", "opencv", ("picamera2", "opencv"))
    rois = []
    raw = t.take("rois", [])
    if not isinstance(raw, list):
        raise ConfigError("%s: expected an array of tables" % t.key("rois"))
    seen: set[str] = set()
    for i, r in enumerate(raw):
        rt = _Table(r, "%s[%d]" % (t.key("rois"), i), t.base)
        roi_name = rt.text("name")
        if not NAME_RE.match(roi_name):
            raise ConfigError("%s: expected letters, digits, '_' or '-' (1-64), got %r" % (rt.key("name"), roi_name))
        if roi_name in seen:
            raise ConfigError("%s: duplicate region name %r" % (rt.key("name"), roi_name))
        seen.add(roi_name)
        box = rt.take("box", None)
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                 and v >= 0 for v in box)) or box[2] < 1 or box[3] < 1:
            raise ConfigError("%s: expected [x, y, width, height] of integers >= 0 (width, height >= 1), got %r"
                              % (rt.key("box"), box))
        roi = RoiConfig(roi_name, (box[0], box[1], box[2], box[3]), rt.text("allowed_chars", ""),
                        rt.text("pattern", ""), rt.flag("grey", False), rt.flag("clahe", False),
                        rt.flag("invert", False), rt.integer("rotate", 0, 0, 270))
        if roi.rotate not in (0, 90, 180, 270):
            raise ConfigError("%s: expected 0, 90, 180 or 270, got %d" % (rt.key("rotate"), roi.rotate))
        try:
            re.compile(roi.pattern)
        except re.error as exc:
            raise ConfigError("%s: invalid regular expression: %s" % (rt.key("pattern"), exc)) from exc
        rt.done()
        rois.append(roi)
    device = t.take("device", "0" if backend == "picamera2" else "/dev/video0")
    if isinstance(device, bool) or not isinstance(device, (str, int)) or device == "":
        raise ConfigError("%s: expected a path, URL or index, got %s" % (t.key("device"), _show(device)))
    if backend == "picamera2" and not str(device).isdigit():
        raise ConfigError("%s: picamera2 expects a camera number (0, 1, ...), got %r" % (t.key("device"), device))
    size = t.take("size", [0, 0])
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                               and 0 <= v <= 16384 for v in size)
            and (size[0] == 0) == (size[1] == 0)):
        raise ConfigError("%s: expected [width, height] in pixels ([0, 0] = the camera's default), got %r"
                          % (t.key("size"), size))
    publish_every = t.take("publish_every", None)
    if publish_every is not None and not isinstance(publish_every, bool):
        raise ConfigError("%s: expected true or false, got %s" % (t.key("publish_every"), _show(publish_every)))
    cam = CameraSourceConfig(
        name=name,
        backend=backend,
        device=str(device),
        interval=t.number("interval", 1.0, 0.0, 86400.0),
        rois=tuple(rois),
        size=(size[0], size[1]),
        autofocus=t.text("autofocus", "continuous", ("continuous", "auto", "off")),
        loop=t.flag("loop", False),
        change_threshold=t.number("change_threshold", 3.0, 0.0, 255.0),
        stable_reads=t.integer("stable_reads", 2, 1, 100),
        publish_every=publish_every,
        retry_min_delay=t.number("retry_min_delay", 1.0, 0.01, 3600.0),
        retry_max_delay=t.number("retry_max_delay", 60.0, 0.01, 86400.0),
    )
    _check_not_below(t, "retry_max_delay", cam.retry_max_delay, "retry_min_delay", cam.retry_min_delay)
    t.done()
    return cam


def config_to_json(config: Any) -> Any:
    """A JSON-ready copy of a Config (or any part of it) for GET /api/config: secrets become
    ``"***"``, paths strings, tuples lists."""
    if isinstance(config, Secret):
        return "***"
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
