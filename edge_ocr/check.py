"""``edge-ocr check``: what would stop the daemon from working, found before it starts: the
model pack's files, the folders it writes and the files it reads (as the service's user when run
as root: ``edge_ocr.access``), the cameras, the broker, and memory limits the machine cannot
give. One line per problem.
(A bad config raises ConfigError before any of this.)"""

from __future__ import annotations

import errno
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from edge_ocr import sandbox
from edge_ocr.access import Wanted, problems, problems_as
from edge_ocr.config import CameraSourceConfig, Config, parse_bind
from edge_ocr.errors import ConfigError, EdgeOcrError, UnknownPack
from edge_ocr.fit import check_fit
from edge_ocr.listen import listen_sockets, resolve
from edge_ocr.sinks.mqtt import probe
from edge_ocr.sources.camera import device_kind
from edge_ocr.sources.camera import probe as probe_camera

if TYPE_CHECKING:
    from edge_ocr.engine.models import Pack


def check(config: Config, broker_timeout_s: float = 5.0, user: str | None = None,
          unit: sandbox.Sandbox | None = None) -> list[str]:
    """Problems with models, folders, files, the broker and the guard's limits, one line each
    (config errors raise before this). ``user``: check the folders and files as that user
    (needs root), not as this process. ``unit``: the installed unit's sandbox
    (``sandbox.installed_unit()``), whose hidden and read-only paths are problems too."""
    from edge_ocr.engine.models import load_pack, unlisted_files, verify_pack

    found: list[str] = []
    wanted: list[Wanted] = []
    if config.path is not None:
        wanted.append(Wanted("config", Path(config.path), write=False))
    try:
        pack = load_pack(config.engine.pack)
        found += ["model: %s" % p for p in verify_pack(pack) + unlisted_files(pack)]
        files = [pack.directory / "manifest.json", *sorted(pack.directory.glob("*.txt"))]
        files += sorted({variant.path for _, variant in pack.files()})
        wanted += [Wanted("model", path, write=False) for path in files]
        found += unreadable_chars(config, pack)
    except UnknownPack as exc:  # a config error like any other typo: exit 2, the key named
        raise ConfigError("engine.pack: %s" % exc.message) from exc
    except EdgeOcrError as exc:
        found.append("model: %s" % exc.message)
    for i, src in enumerate(config.sources):
        if isinstance(src, CameraSourceConfig):
            problem = probe_camera(src)
            if problem:
                found.append("sources[%d] %s: %s" % (i, src.name, problem))
            if src.backend == "opencv" and device_kind(src.device) == "file":  # read as the service's user
                wanted.append(Wanted("sources[%d].device" % i, Path(src.device), write=False))
            continue
        wanted += [Wanted("sources[%d].%s" % (i, key), getattr(src, key), write=True)
                   for key in ("path", "done_dir", "failed_dir")]
    for label, secret_file in (("mqtt.password_file", config.mqtt.password_file),
                               ("http.token_file", config.http.token_file)):
        # A relative name may be a systemd credential (LoadCredential=), which only the unit gives.
        if secret_file and Path(secret_file).expanduser().is_absolute():
            wanted.append(Wanted(label, Path(secret_file).expanduser(), write=False))
    if config.mqtt.enabled:
        wanted.append(Wanted("mqtt.spool_dir", config.mqtt.spool_dir, write=True))
        # TLS files are read at every start: a key only root may read stops the service at once
        wanted += [Wanted("mqtt.%s" % key, Path(getattr(config.mqtt, key)), write=False)
                   for key in ("ca_file", "cert_file", "key_file") if getattr(config.mqtt, key)]
    try:
        found += problems_as(user, wanted) if user else problems(wanted)
    except OSError as exc:
        found.append("access: %s" % exc)
    if unit is not None:
        for item in wanted:
            problem = sandbox.problem(item.path, item.write, unit)
            if problem:
                found.append("%s: %s" % (item.label, problem))
    if config.mqtt.enabled:
        try:
            problem = probe(config.mqtt, broker_timeout_s)
        except EdgeOcrError as exc:
            problem = exc.message
        if problem:
            found.append("mqtt: %s" % problem)
    if config.http.enabled:
        problem = http_problem(config.http.bind)
        if problem:
            found.append("http: %s" % problem)
    unfit = check_fit(config.guard)
    if unfit:
        found.append("guard: %s" % unfit.message())
    return found


def unreadable_chars(config: Config, pack: Pack) -> list[str]:
    """Regions whose ``allowed_chars`` name characters no reader of ``pack`` can give: the decoder
    keeps only allowed characters, so a region allowing none of the pack's reads nothing, ever
    (a status no_text at each frame, no error anywhere)."""
    readable = set().union(*(stage.charset.chars for stage in pack.stages.values() if stage.charset is not None))
    found = []
    for i, src in enumerate(config.sources):
        for j, roi in enumerate(src.rois if isinstance(src, CameraSourceConfig) else ()):
            missing = "".join(dict.fromkeys(c for c in roi.allowed_chars if c not in readable))
            if missing and len(missing) == len(set(roi.allowed_chars)):
                found.append("sources[%d].rois[%d].allowed_chars: pack %s reads none of these characters, so the "
                             "region would never read anything: %r" % (i, j, pack.name, missing))
            elif missing:
                found.append("sources[%d].rois[%d].allowed_chars: pack %s cannot read these characters: %r"
                             % (i, j, pack.name, missing))
    return found


def http_problem(bind: str, timeout_s: float = 2.0) -> str | None:
    """Why the daemon could not listen on ``bind``, tried as it listens (every address the host
    resolves to, address reuse on), or None. A port held by an edge-ocr that answers there
    (the running service, while its config is checked before a restart) is no problem."""
    host, port = parse_bind(bind)
    try:
        addresses = resolve(host, port)
    except OSError as exc:
        return "cannot resolve %s: %s" % (host, exc.strerror or exc)
    try:
        for sock in listen_sockets(addresses):
            sock.close()
        return None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and _edge_ocr_answers(host, port, timeout_s):
            return None
        return "cannot listen on %s: %s" % (bind, exc.strerror or exc)


def _edge_ocr_answers(host: str, port: int, timeout_s: float) -> bool:
    url = "http://%s:%d/healthz" % ("[%s]" % host if ":" in host else host, port)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via http_proxy
    try:
        with direct.open(url, timeout=timeout_s) as response:
            return bool(response.headers.get("Server") == "edge-ocr")
    except urllib.error.HTTPError as exc:
        return bool(exc.headers.get("Server") == "edge-ocr")
    except (OSError, ValueError):
        return False
